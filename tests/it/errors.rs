//! Every way cookiegate refuses a request itself: the status, the fixed JSON body, and that the
//! upstream received nothing it should not have. Plus the health endpoint.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use tokio::sync::mpsc;

use crate::support::*;

const TOKEN: &str = "s3cret-session-token";

/// Asserts that an error body repeats none of `secrets` (token, addresses, header values).
fn assert_no_leak(answer: &Answer, secrets: &[&str]) {
    let body = String::from_utf8_lossy(&answer.body);
    for secret in secrets {
        assert!(
            !body.contains(secret),
            "error body {body:?} leaks {secret:?}"
        );
    }
}

fn raw_get(path: &str, cookie: &[u8]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n").into_bytes();
    if !cookie.is_empty() {
        req.extend_from_slice(b"Cookie: ");
        req.extend_from_slice(cookie);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req
}

#[tokio::test]
async fn missing_cookie_gives_401_and_the_upstream_is_not_called() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    get(&gateway.url("/api/proxy/me"), None)
        .await
        .assert_error(401, "not authenticated");
    // Other cookies, an empty session cookie, or a forged Authorization are no session either.
    for cookie in ["theme=dark", "auth_token=", "x_auth_token=abc"] {
        let req = request("GET", &gateway.url("/api/proxy/me"), None)
            .header("cookie", cookie)
            .body(empty())
            .unwrap();
        send(&client, req)
            .await
            .assert_error(401, "not authenticated");
    }
    let req = request("POST", &gateway.url("/api/proxy/me"), None)
        .header("authorization", "Bearer forged")
        .body(full("payload"))
        .unwrap();
    send(&client, req)
        .await
        .assert_error(401, "not authenticated");
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn unusable_session_cookie_gives_401() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let cookies: [&[u8]; 7] = [
        b"auth_token=a b",
        b"auth_token=a\"b",
        b"auth_token=a\\b",
        b"auth_token=caf\xc3\xa9",
        b"auth_token=\xff",
        b"auth_token=a\tb",
        b"theme=dark; auth_token=a,b",
    ];
    for cookie in cookies {
        let answer = raw_answer(gateway.addr, &raw_get("/api/proxy/me", cookie)).await;
        answer.assert_error(401, "unusable session cookie");
        assert_no_leak(&answer, &["auth_token", "a b", "caf"]);
    }
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn two_session_cookies_are_ambiguous() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let one_field = request("GET", &gateway.url("/api/proxy/me"), None)
        .header("cookie", "auth_token=mine; theme=dark; auth_token=tossed")
        .body(empty())
        .unwrap();
    send(&client, one_field)
        .await
        .assert_error(400, "ambiguous session cookie");
    let two_fields = request("GET", &gateway.url("/api/proxy/me"), None)
        .header("cookie", "auth_token=mine")
        .header("cookie", "auth_token=mine")
        .body(empty())
        .unwrap();
    let answer = send(&client, two_fields).await;
    answer.assert_error(400, "ambiguous session cookie");
    assert_no_leak(&answer, &["mine", "tossed"]);
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn unknown_paths_give_404() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    for path in ["/", "/nowhere", "/api", "/api/proxyx", "/API/proxy/x"] {
        get(&gateway.url(path), Some(TOKEN))
            .await
            .assert_error(404, "no route for this path");
    }
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn methods_outside_the_route_give_405_with_allow() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        r#"
[[routes]]
prefix = "/api/chatkit"
upstream = "{0}/chatkit"
methods = ["POST"]

[[routes]]
prefix = "/api/read"
upstream = "{0}"
methods = ["get"]
"#,
        upstream.url()
    ))
    .await;
    let client = client();
    for method in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"] {
        let req = request(method, &gateway.url("/api/chatkit"), Some(TOKEN))
            .body(empty())
            .unwrap();
        let answer = send(&client, req).await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow"), Some("POST"), "{method}");
        if method != "HEAD" {
            answer.assert_error(405, "method not allowed");
        }
    }
    let req = request("POST", &gateway.url("/api/read/x"), Some(TOKEN))
        .body(full("{}"))
        .unwrap();
    let answer = send(&client, req).await;
    answer.assert_error(405, "method not allowed");
    assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    assert!(upstream.seen().is_empty());

    // The allowed methods do go through.
    let req = request("POST", &gateway.url("/api/chatkit"), Some(TOKEN))
        .body(full("{}"))
        .unwrap();
    assert_eq!(send(&client, req).await.status, 200);
    assert_eq!(upstream.only().target, "/chatkit");
    gateway.stop().await;
}

#[tokio::test]
async fn trace_and_connect_give_405_anywhere() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nauth = \"none\"\n",
        upstream.url()
    ))
    .await;
    let all = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
    for path in ["/api/proxy/x", "/", "/healthz"] {
        let req = request("TRACE", &gateway.url(path), Some(TOKEN))
            .body(empty())
            .unwrap();
        let answer = send(&client(), req).await;
        answer.assert_error(405, "method not allowed");
        assert_eq!(answer.header("allow"), Some(all));
    }
    for target in ["evil.example:443", "127.0.0.1:22", "/api/proxy/x"] {
        let req = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nCookie: auth_token={TOKEN}\r\n\
             Connection: close\r\n\r\n"
        );
        let answer = raw_answer(gateway.addr, req.as_bytes()).await;
        answer.assert_error(405, "method not allowed");
        assert_eq!(answer.header("allow"), Some(all));
    }
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

fn limited_gateway_config(upstream: &str, max_body: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\nmax_body = \"{max_body}\"\n"
    )
}

#[tokio::test]
async fn declared_length_over_max_body_gives_413_before_the_upstream() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&limited_gateway_config(&upstream.url(), "64")).await;
    let req = request("POST", &gateway.url("/api/proxy/upload"), Some(TOKEN))
        .header("content-type", "application/octet-stream")
        .body(full(vec![b'x'; 65]))
        .unwrap();
    let answer = send(&client(), req).await;
    answer.assert_error(413, "request body too large");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(upstream.seen().is_empty());

    // Exactly at the limit is fine.
    let req = request("POST", &gateway.url("/api/proxy/upload"), Some(TOKEN))
        .body(full(vec![b'x'; 64]))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    assert_eq!(upstream.only().body.len(), 64);
    gateway.stop().await;
}

/// What a streaming upstream observed of a request body.
#[derive(Debug)]
enum BodyEvent {
    Data(usize),
    Failed,
    Complete(usize),
}

#[tokio::test]
async fn chunked_body_crossing_max_body_gives_413_and_never_a_complete_upstream_body() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let upstream = TestUpstream::builder()
        .handle(move |req, _| {
            let events = events_tx.clone();
            async move {
                let mut body = req.into_body();
                let mut total = 0;
                loop {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                total += data.len();
                                let _ = events.send(BodyEvent::Data(data.len()));
                            }
                        }
                        Some(Err(_)) => {
                            let _ = events.send(BodyEvent::Failed);
                            break;
                        }
                        None => {
                            let _ = events.send(BodyEvent::Complete(total));
                            break;
                        }
                    }
                }
                json_response(http::StatusCode::OK, r#"{"ok":true}"#)
            }
        })
        .start()
        .await;
    let gateway = Gateway::start(&limited_gateway_config(&upstream.url(), "1KiB")).await;

    let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
    let req = request("POST", &gateway.url("/api/proxy/upload"), Some(TOKEN))
        .header("content-type", "application/octet-stream")
        .body(body.boxed())
        .unwrap();
    let client = client();
    let pending = tokio::spawn(async move { send(&client, req).await });

    // The first 600 bytes are within the limit and reach the upstream.
    tx.send_data(Bytes::from(vec![b'a'; 600])).await.unwrap();
    let mut received = 0;
    while received < 600 {
        match events.recv().await.unwrap() {
            BodyEvent::Data(n) => received += n,
            other => panic!("upstream body ended early: {other:?}"),
        }
    }
    // The next 600 cross the 1 KiB limit mid-stream.
    tx.send_data(Bytes::from(vec![b'b'; 600])).await.unwrap();
    drop(tx);

    pending
        .await
        .unwrap()
        .assert_error(413, "request body too large");
    loop {
        match events.recv().await.unwrap() {
            BodyEvent::Data(n) => received += n,
            BodyEvent::Failed => break,
            BodyEvent::Complete(total) => {
                panic!("the upstream received a complete body of {total} bytes")
            }
        }
    }
    assert!(
        received <= 1024,
        "the upstream got {received} bytes past the limit"
    );
    assert_eq!(upstream.seen().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_gives_502() {
    let dead = dead_upstream_url().await;
    let gateway = Gateway::single(&dead).await;
    let answer = get(&gateway.url("/api/proxy/x"), Some(TOKEN)).await;
    answer.assert_error(502, "upstream unreachable");
    let port = dead.rsplit(':').next().unwrap();
    assert_no_leak(&answer, &[TOKEN, &dead, port, "127.0.0.1", "refused"]);
    gateway.stop().await;
}

/// A TCP server that reads a request head and answers with `reply` (possibly nothing) before
/// hanging up: an upstream that is up but broken.
async fn broken_upstream(reply: &'static [u8]) -> TestUpstream {
    TestUpstream::builder()
        .raw(move |mut wire| async move {
            if wire.head().await.is_some() {
                wire.send(reply).await;
            }
        })
        .start()
        .await
}

#[tokio::test]
async fn upstream_breaking_before_its_answer_gives_502() {
    for reply in [
        &b""[..],
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10",
    ] {
        let upstream = broken_upstream(reply).await;
        let url = upstream.url();
        let gateway = Gateway::single(&url).await;
        let answer = get(&gateway.url("/api/proxy/x"), Some(TOKEN)).await;
        answer.assert_error(502, "upstream unreachable");
        assert_no_leak(&answer, &[TOKEN, &url, "not http"]);
        gateway.stop().await;
        upstream.stop().await;
    }
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let upstream = TestUpstream::builder()
        // Never answers: the gateway gives up after upstream_timeout.
        .handle(|_, _| std::future::pending())
        .start()
        .await;
    let gateway = Gateway::start(&format!(
        "[server]\nupstream_timeout = \"200ms\"\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;
    let answer = get(&gateway.url("/api/proxy/slow"), Some(TOKEN)).await;
    answer.assert_error(504, "upstream timed out");
    assert_no_leak(&answer, &[TOKEN, &upstream.addr.to_string()]);
    assert_eq!(upstream.only().target, "/slow");
    gateway.stop().await;
}

#[tokio::test]
async fn paths_that_climb_out_are_refused_and_the_token_is_never_sent() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    // Raw bytes: HTTP clients would normalise some of these before sending.
    let paths = [
        "/api/proxy/../admin",
        "/api/proxy/x/../../admin",
        "/api/proxy/./admin",
        "/api/proxy/..",
        "/api/proxy/%2e%2e/admin",
        "/api/proxy/%2E%2E/admin",
        "/api/proxy/.%2E/admin",
        "/api/proxy/%2e./admin",
        "/api/proxy/..%2Fadmin",
        "/api/proxy/..%2fadmin",
        "/api/proxy/..%5Cadmin",
        "/api/proxy/x/..%5c..%5cadmin",
        "/api/proxy/..;x/admin",
        "/api/proxy/a%00b",
        "/api/proxy/..?q=1",
    ];
    for path in paths {
        let cookie = format!("auth_token={TOKEN}");
        let answer = raw_answer(gateway.addr, &raw_get(path, cookie.as_bytes())).await;
        assert_eq!(answer.status, 400, "{path}");
        answer.assert_error(400, "request path refused");
        assert_no_leak(&answer, &[TOKEN, "admin"]);
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    gateway.stop().await;
}

#[tokio::test]
async fn error_bodies_never_carry_the_token_the_upstream_address_or_a_header_value() {
    let slow = TestUpstream::builder()
        // Never answers: the gateway gives up after upstream_timeout.
        .handle(|_, _| std::future::pending())
        .start()
        .await;
    let dead = dead_upstream_url().await;
    let live = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        r#"
[server]
upstream_timeout = "200ms"

[[routes]]
prefix = "/api/proxy"
upstream = "{live}"
max_body = "16"

[[routes]]
prefix = "/api/dead"
upstream = "{dead}"

[[routes]]
prefix = "/api/slow"
upstream = "{slow}"

[[routes]]
prefix = "/api/post-only"
upstream = "{live}"
methods = ["POST"]
"#,
        live = live.url(),
        slow = slow.url(),
    ))
    .await;
    let header_value = "header-value-marker";
    let secrets = [
        TOKEN,
        header_value,
        &live.addr.to_string(),
        &slow.addr.to_string(),
        &dead,
        "127.0.0.1",
        "Bearer",
    ];
    let client = client();
    let cookie = format!("auth_token={TOKEN}");
    let twice = format!("{cookie}; {cookie}");
    // (method, path, cookie, body length, status)
    let cases: [(&str, &str, Option<&str>, usize, u16); 9] = [
        ("GET", "/api/proxy/x", None, 0, 401),
        ("GET", "/api/proxy/x", Some(&twice), 0, 400),
        ("GET", "/api/proxy/%2e%2e/x", Some(&cookie), 0, 400),
        ("GET", "/nowhere", Some(&cookie), 0, 404),
        ("GET", "/api/post-only", Some(&cookie), 0, 405),
        ("TRACE", "/api/proxy/x", Some(&cookie), 0, 405),
        ("POST", "/api/proxy/x", Some(&cookie), 17, 413),
        ("GET", "/api/dead/x", Some(&cookie), 0, 502),
        ("GET", "/api/slow/x", Some(&cookie), 0, 504),
    ];
    for (method, path, cookie, body_len, status) in cases {
        let mut req = request(method, &gateway.url(path), None)
            .header("x-marker", header_value)
            .header("user-agent", header_value);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        let answer = send(&client, req.body(full(vec![0u8; body_len])).unwrap()).await;
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(answer.json()["error"].is_string(), "{method} {path}");
        assert_no_leak(&answer, &secrets);
    }
    // Cookie-value problems, in raw bytes.
    let answer = raw_answer(
        gateway.addr,
        &raw_get(
            "/api/proxy/x",
            format!("auth_token={TOKEN} {header_value}").as_bytes(),
        ),
    )
    .await;
    answer.assert_error(401, "unusable session cookie");
    assert_no_leak(&answer, &secrets);
    gateway.stop().await;
}

#[tokio::test]
async fn gateway_keeps_serving_after_each_bad_request() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&limited_gateway_config(&upstream.url(), "16")).await;
    let cookie = format!("auth_token={TOKEN}");
    let bad_requests: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET /api/proxy/x HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n".to_vec(),
        b"GET /api/proxy/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(),
        b"GET /api/proxy/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_vec(),
        b"GET /api/proxy/x HTTP/1.1\r\nHost: x\r\n".to_vec(),
        raw_get("/api/proxy/../x", cookie.as_bytes()),
        raw_get("/api/proxy/a%00b", cookie.as_bytes()),
        raw_get("/api/proxy/x", b"auth_token=caf\xc3\xa9"),
        raw_get("/api/proxy/x", b"auth_token=a; auth_token=b"),
        format!("POST /api/proxy/x HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 100000\r\n\r\nabc")
            .into_bytes(),
        format!("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nCookie: {cookie}\r\n\r\n")
            .into_bytes(),
        format!("TRACE /api/proxy/x HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    ];
    for (n, bad) in bad_requests.iter().enumerate() {
        // Write the bad request and hang up without waiting for an answer.
        {
            let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stream, bad)
                .await
                .unwrap();
        }
        // And once more, reading whatever answer comes. The wait only bounds the read for a
        // request the gateway keeps waiting on (an unfinished head); nothing depends on it.
        let _ = raw(gateway.addr, bad, Duration::from_millis(500)).await;
        let good = get(&gateway.url(&format!("/api/proxy/after/{n}")), Some(TOKEN)).await;
        assert_eq!(
            good.status,
            200,
            "after bad request {n}: {:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let good_targets = upstream
        .seen()
        .into_iter()
        .filter(|s| s.target.starts_with("/after/"))
        .count();
    assert_eq!(good_targets, bad_requests.len());
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

fn root_route(upstream: &str) -> String {
    format!("[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nauth = \"none\"\n")
}

#[tokio::test]
async fn healthz_is_answered_by_cookiegate_even_with_a_root_route() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&root_route(&upstream.url())).await;
    let health = get(&gateway.url("/healthz"), None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(health.body, r#"{"status":"ok"}"#);
    let head = send(
        &client(),
        request("HEAD", &gateway.url("/healthz"), None)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(upstream.seen().is_empty());

    // Everything else under `/` still goes upstream.
    assert_eq!(get(&gateway.url("/healthzz"), None).await.status, 200);
    assert_eq!(upstream.only().target, "/healthzz");
    gateway.stop().await;
}

#[tokio::test]
async fn health_path_setting_moves_the_endpoint() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[server]\nhealth_path = \"/ready\"\n\n{}",
        root_route(&upstream.url())
    ))
    .await;
    let ready = get(&gateway.url("/ready"), None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, r#"{"status":"ok"}"#);
    assert!(upstream.seen().is_empty());

    let moved = get(&gateway.url("/healthz"), None).await;
    assert_eq!(moved.json(), serde_json::json!({"ok": true}));
    assert_eq!(upstream.only().target, "/healthz");
    gateway.stop().await;
}

#[tokio::test]
async fn healthz_needs_no_route_and_no_cookie() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let health = get(&gateway.url("/healthz"), None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, r#"{"status":"ok"}"#);
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}
