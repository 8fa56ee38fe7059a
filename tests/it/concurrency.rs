//! Many requests at once never mix up their tokens, over HTTP/1.1 connections and over one
//! multiplexed HTTP/2 connection; sequential requests reuse pooled upstream connections.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Response;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::{JoinHandle, JoinSet};

use crate::support::*;

const N: usize = 200;

/// An upstream that holds every request until all `n` have arrived, so they are all in flight
/// through the proxy at once, then answers each with the `Authorization` it received.
async fn bearer_echo(n: usize) -> TestUpstream {
    let barrier = Arc::new(Barrier::new(n));
    TestUpstream::builder()
        .handle(move |req, _| {
            let barrier = barrier.clone();
            async move {
                let bearer = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default();
                barrier.wait().await;
                Response::new(full(bearer))
            }
        })
        .start()
        .await
}

/// Each upstream request carried the token of the client that sent it: request `i` (path
/// `/whoami/i`) with `tok-i`, 200 distinct bearers in all.
fn assert_each_request_carried_its_own_token(upstream: &TestUpstream) {
    let seen = upstream.seen();
    assert_eq!(seen.len(), N);
    let mut bearers: Vec<String> = Vec::new();
    for s in &seen {
        let i = s.target.strip_prefix("/whoami/").expect("mapped path");
        let bearer = s.header("authorization").expect("a bearer");
        assert_eq!(bearer, format!("Bearer tok-{i}"));
        bearers.push(bearer.to_owned());
    }
    bearers.sort();
    bearers.dedup();
    assert_eq!(bearers.len(), N);
}

async fn join_all(mut tasks: JoinSet<()>) {
    within("every request", async {
        while let Some(done) = tasks.join_next().await {
            done.expect("request task");
        }
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_each_carry_their_own_token_over_http1() {
    let upstream = bearer_echo(N).await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let client = client.clone();
        let url = gateway.url(&format!("/api/proxy/whoami/{i}"));
        tasks.spawn(async move {
            let token = format!("tok-{i}");
            let req = request("GET", &url, Some(&token)).body(empty()).unwrap();
            let answer = send(&client, req).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.body, format!("Bearer {token}"));
        });
    }
    join_all(tasks).await;
    assert_each_request_carried_its_own_token(&upstream);
    drop(client);
    gateway.stop().await;
}

/// One HTTP/2 connection to `addr`: every request sent on it is a stream of that connection.
async fn h2_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<TestBody>,
    JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

#[tokio::test]
async fn concurrent_streams_on_one_http2_connection_each_carry_their_own_token() {
    let upstream = bearer_echo(N).await;
    let gateway = Gateway::single(&upstream.url()).await;
    let (sender, conn) = h2_connection(gateway.addr).await;
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let mut sender = sender.clone();
        let url = gateway.url(&format!("/api/proxy/whoami/{i}"));
        tasks.spawn(async move {
            let token = format!("tok-{i}");
            let req = request("GET", &url, Some(&token)).body(empty()).unwrap();
            sender.ready().await.expect("connection open");
            let res = sender.send_request(req).await.expect("response");
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body, format!("Bearer {token}"));
        });
    }
    join_all(tasks).await;
    assert_each_request_carried_its_own_token(&upstream);
    drop(sender);
    gateway.stop().await;
    within("the HTTP/2 connection to close", conn)
        .await
        .unwrap();
}

/// An upstream that answers every request `ok` (it counts the TCP connections it accepts).
async fn ok_upstream() -> TestUpstream {
    TestUpstream::builder()
        .respond(|_| Response::new(full("ok")))
        .start()
        .await
}

#[tokio::test]
async fn sequential_requests_reuse_pooled_upstream_connections() {
    const REQUESTS: usize = 50;
    let upstream = ok_upstream().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for i in 0..REQUESTS {
        let req = request(
            "GET",
            &gateway.url(&format!("/api/proxy/n/{i}")),
            Some("tok"),
        )
        .body(empty())
        .unwrap();
        let answer = send(&client, req).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok");
    }
    // A connection goes back to the pool a moment after its response ends, so a request may
    // now and then open a new one; without pooling there would be one per request.
    let accepted = upstream.accepted();
    assert!(
        accepted < REQUESTS / 5,
        "{accepted} upstream connections for {REQUESTS} requests"
    );
    drop(client);
    gateway.stop().await;
}
