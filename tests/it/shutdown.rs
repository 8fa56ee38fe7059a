//! Stopping and timing out connections: graceful shutdown lets in-flight requests finish while
//! refusing new connections, the grace period bounds it, and clients slow to send their request
//! head are dropped.

use std::net::SocketAddr;

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
    let upstream = Upstream::streaming(move |req, seen| {
        record_head(&req, &seen);
        let (arrived, release) = handoff.take();
        async move {
            let _ = arrived.send(());
            let _ = release.await;
            Response::new(full("done"))
        }
    })
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
    let upstream = Upstream::streaming(move |req, seen| {
        record_head(&req, &seen);
        let (arrived, guard) = handoff.take();
        async move {
            let _guard = guard;
            let _ = arrived.send(());
            std::future::pending::<Response<TestBody>>().await
        }
    })
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
    let upstream = Upstream::echo_ok().await;
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
