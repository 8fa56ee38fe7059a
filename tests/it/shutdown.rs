//! Stopping and timing out connections: graceful shutdown lets in-flight requests finish while
//! refusing new connections, the grace period bounds it, and clients slow to send their request
//! head are dropped.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::*;

/// Whether a new connection to `addr` still gets an answer from the health endpoint.
async fn answers_new_connection(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let probe = b"GET /healthz HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n";
    if stream.write_all(probe).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out.starts_with(b"HTTP/1.1 200")
}

/// Reads until the server closes the connection (EOF or an error); fails the test if it stays
/// open past the guard.
async fn assert_closed_by_server(mut stream: TcpStream, what: &str) {
    let mut out = Vec::new();
    let _ = within(what, stream.read_to_end(&mut out)).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let handoff = TakeOnce::new((arrived_tx, release_rx));
    let upstream = TestUpstream::builder()
        .handle(move |_, _| {
            let (arrived, release) = handoff.take();
            async move {
                let _ = arrived.send(());
                let _ = release.await;
                Response::new(full("done"))
            }
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let addr = gateway.addr;
    assert!(
        answers_new_connection(addr).await,
        "gateway serves before shutdown"
    );

    let req = request("GET", &gateway.url("/api/proxy/slow"), Some("tok"))
        .body(empty())
        .unwrap();
    let in_flight = tokio::spawn(async move { send(&client(), req).await });
    within("the request to reach the upstream", arrived_rx)
        .await
        .unwrap();

    let stopping = tokio::spawn(gateway.stop());
    // Probe until a new connection goes unanswered: probes that raced the shutdown signal may
    // still be served, none after it.
    within("new connections to be refused", async {
        while answers_new_connection(addr).await {}
    })
    .await;
    assert!(!in_flight.is_finished(), "in-flight request ended early");
    assert!(
        !stopping.is_finished(),
        "stop returned before the in-flight request ended"
    );

    release_tx.send(()).unwrap();
    let answer = within("the in-flight request", in_flight).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "done");
    within("stop to return", stopping).await.unwrap();
    assert!(
        !answers_new_connection(addr).await,
        "gateway serves after stop"
    );
}

#[tokio::test]
async fn shutdown_grace_bounds_a_request_that_never_finishes() {
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (guard, dropped_rx) = drop_signal();
    let handoff = TakeOnce::new((arrived_tx, guard));
    let upstream = TestUpstream::builder()
        .handle(move |_, _| {
            let (arrived, guard) = handoff.take();
            async move {
                let _guard = guard;
                let _ = arrived.send(());
                std::future::pending::<Response<TestBody>>().await
            }
        })
        .start()
        .await;
    let gateway = Gateway::start(&format!(
        "[server]\nshutdown_grace = \"300ms\"\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;

    let req = request("GET", &gateway.url("/api/proxy/stuck"), Some("tok"))
        .body(empty())
        .unwrap();
    let client = client();
    let in_flight = tokio::spawn(async move { client.request(req).await.map(|_| ()) });
    within("the request to reach the upstream", arrived_rx)
        .await
        .unwrap();

    within("stop to return despite the stuck request", gateway.stop()).await;
    let cut = within("the stuck request to be cut off", in_flight)
        .await
        .unwrap();
    assert!(
        cut.is_err(),
        "a request cut off at shutdown looked answered"
    );
    within("the upstream request to be closed", dropped_rx)
        .await
        .unwrap();
}

#[tokio::test]
async fn clients_slow_to_send_their_request_head_are_dropped() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[server]\nheader_timeout = \"300ms\"\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;

    let silent = TcpStream::connect(gateway.addr).await.unwrap();
    let mut half = TcpStream::connect(gateway.addr).await.unwrap();
    half.write_all(b"GET /api/proxy/x HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    assert_closed_by_server(silent, "a silent connection to be closed").await;
    assert_closed_by_server(half, "a half-sent head to be closed").await;

    assert_eq!(get(&gateway.url("/healthz"), None).await.status, 200);
    assert_eq!(
        get(&gateway.url("/api/proxy/x"), Some("tok")).await.status,
        200
    );
    assert!(
        upstream.seen().len() == 1,
        "the half-sent request never went upstream"
    );
    gateway.stop().await;
}

/// A gateway with a short `header_timeout` in front of `upstream`.
async fn quick_header_timeout(upstream: &str) -> Gateway {
    Gateway::start(&format!(
        "[server]\nheader_timeout = \"300ms\"\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n",
    ))
    .await
}

const KEEP_ALIVE_GET: &[u8] =
    b"GET /api/proxy/x HTTP/1.1\r\nhost: gw\r\ncookie: auth_token=tok\r\n\r\n";

/// A keep-alive connection to `gateway` that has had one request answered.
async fn after_one_answer(gateway: &Gateway) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(KEEP_ALIVE_GET).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_answer(&mut stream, &mut buf).await.status, 200);
    assert!(buf.is_empty(), "nothing after the answer");
    stream
}

#[tokio::test]
async fn a_keep_alive_connection_idle_past_header_timeout_is_closed() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = quick_header_timeout(&upstream.url()).await;
    let stream = after_one_answer(&gateway).await;
    // Nothing more is sent: the wait for the next head is bounded too.
    let started = std::time::Instant::now();
    assert_closed_by_server(stream, "an idle keep-alive connection to be closed").await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before header_timeout: {:?}",
        started.elapsed()
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_second_head_sent_too_slowly_on_a_keep_alive_connection_is_dropped() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = quick_header_timeout(&upstream.url()).await;
    let mut stream = after_one_answer(&gateway).await;
    // Half a head, then a byte every 100 ms: never complete within 300 ms.
    stream
        .write_all(b"GET /api/proxy/y HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    let dribble = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    within("the dribbling client to be cut off", dribble).await;
    assert_closed_by_server(stream, "a slow second head to be dropped").await;
    assert_eq!(
        upstream.seen().len(),
        1,
        "the slow request never went upstream"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_answer_and_an_upload_slower_than_header_timeout_are_not_cut() {
    // The upstream reads the whole (slow) body, then answers slowly, in pieces.
    let upstream = TestUpstream::builder()
        .handle(|req, tasks| async move {
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            let (mut tx, answer) = channel_body(4);
            tasks.spawn(async move {
                for part in 0..6 {
                    tokio::time::sleep(Duration::from_millis(120)).await;
                    let text = format!("part {part} of a {body}-byte upload;");
                    if tx.send_data(Bytes::from(text)).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(answer)
        })
        .start()
        .await;
    let gateway = quick_header_timeout(&upstream.url()).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"POST /api/proxy/x HTTP/1.1\r\nhost: gw\r\ncookie: auth_token=tok\r\norigin: http://gw\r\ncontent-length: 6\r\n\r\n")
        .await
        .unwrap();
    for byte in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        (0..6)
            .map(|part| format!("part {part} of a 6-byte upload;"))
            .collect::<String>()
    );
    // And the connection still serves the next request.
    stream.write_all(KEEP_ALIVE_GET).await.unwrap();
    assert_eq!(read_answer(&mut stream, &mut buf).await.status, 200);
    gateway.stop().await;
}
