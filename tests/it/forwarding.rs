//! Forwarding through real sockets: what reaches the upstream (target, method, body, headers)
//! and what comes back to the client (status, body, headers), byte for byte.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Response, StatusCode, Version};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const TOKEN: &str = "tok-123.abc_XYZ";

/// `/api/proxy` (auth required) and `/public` (auth none), both to `upstream`.
async fn gateway_with_public_route(upstream: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[[routes]]
prefix = "/api/proxy"
upstream = "{upstream}"

[[routes]]
prefix = "/public"
upstream = "{upstream}"
auth = "none"
"#
    ))
    .await
}

/// An upstream answering each request with whatever `respond` builds from the request target.
async fn answering<F>(respond: F) -> TestUpstream
where
    F: Fn(&str) -> Response<TestBody> + Send + Sync + 'static,
{
    TestUpstream::builder()
        .respond(move |seen| respond(&seen.target))
        .start()
        .await
}

fn targets(upstream: &TestUpstream) -> Vec<String> {
    upstream.seen().into_iter().map(|s| s.target).collect()
}

// ---------------------------------------------------------------------------------------------
// Paths and queries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn query_string_is_forwarded_byte_for_byte() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let queries = [
        "?tag=a&tag=b",
        "?tag=a&tag=b&tag=a",
        "?q=%2e%2E&x=a+b&y=1;z=2",
        "?",
        "?a=%20&b=%26&c=%3D=&&d",
        "?=v&k=&k",
        "?next=/api/proxy/x?y=1",
    ];
    for query in queries {
        let answer = get(
            &gateway.url(&format!("/api/proxy/items{query}")),
            Some(TOKEN),
        )
        .await;
        assert_eq!(answer.status, 200, "{query}");
    }
    let expected: Vec<String> = queries.iter().map(|q| format!("/items{q}")).collect();
    assert_eq!(targets(&upstream), expected);
    gateway.stop().await;
}

#[tokio::test]
async fn path_remainder_is_appended_exactly_as_sent() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let cases = [
        ("/api/proxy/files/a%2Fb/c", "/files/a%2Fb/c"),
        ("/api/proxy/with%20space/x", "/with%20space/x"),
        ("/api/proxy/trailing/", "/trailing/"),
        ("/api/proxy/%7Euser/%41%62c", "/%7Euser/%41%62c"),
        ("/api/proxy/a;b=c/d", "/a;b=c/d"),
        ("/api/proxy/caf%C3%A9/%e2%82%ac", "/caf%C3%A9/%e2%82%ac"),
        ("/api/proxy/a//b", "/a//b"),
        ("/api/proxy/...", "/..."),
        ("/api/proxy/", "/"),
        ("/api/proxy", "/"),
    ];
    for (path, _) in cases {
        let answer = get(&gateway.url(path), Some(TOKEN)).await;
        assert_eq!(answer.status, 200, "{path}");
    }
    let expected: Vec<String> = cases.iter().map(|(_, up)| (*up).to_string()).collect();
    assert_eq!(targets(&upstream), expected);
    gateway.stop().await;
}

#[tokio::test]
async fn upstream_base_path_is_joined_with_the_remainder() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        r#"
[[routes]]
prefix = "/api/chatkit"
upstream = "{}/chatkit"
cookie = "taskflow_id_token"
"#,
        upstream.url()
    ))
    .await;
    let cases = [
        ("/api/chatkit", "/chatkit"),
        ("/api/chatkit/x", "/chatkit/x"),
        ("/api/chatkit/", "/chatkit/"),
        (
            "/api/chatkit/threads/t1/items?after=5",
            "/chatkit/threads/t1/items?after=5",
        ),
        ("/api/chatkit?stream=1", "/chatkit?stream=1"),
    ];
    for (path, _) in cases {
        let req = request("GET", &gateway.url(path), None)
            .header("cookie", "taskflow_id_token=tf.tok")
            .body(empty())
            .unwrap();
        assert_eq!(send(&client(), req).await.status, 200, "{path}");
    }
    // Half a segment is not under the prefix.
    get(&gateway.url("/api/chatkitx"), Some(TOKEN))
        .await
        .assert_error(404, "no route for this path");

    let seen = upstream.seen();
    let expected: Vec<&str> = cases.iter().map(|(_, up)| *up).collect();
    assert_eq!(
        seen.iter().map(|s| s.target.as_str()).collect::<Vec<_>>(),
        expected
    );
    for s in &seen {
        assert_eq!(s.header_all("authorization"), ["Bearer tf.tok"]);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn longest_prefix_wins() {
    let root = TestUpstream::echo_ok().await;
    let api = TestUpstream::echo_ok().await;
    let proxy = TestUpstream::echo_ok().await;
    // Listed shortest first, so file order cannot be what picks the route.
    let gateway = Gateway::start(&format!(
        r#"
[[routes]]
prefix = "/"
upstream = "{}"
auth = "none"

[[routes]]
prefix = "/api"
upstream = "{}"

[[routes]]
prefix = "/api/proxy"
upstream = "{}"
"#,
        root.url(),
        api.url(),
        proxy.url()
    ))
    .await;
    for path in [
        "/api/proxy/x",
        "/api/proxy",
        "/api/x",
        "/api/proxyx",
        "/api",
        "/apix",
        "/",
        "/other/api/proxy",
    ] {
        assert_eq!(
            get(&gateway.url(path), Some(TOKEN)).await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(targets(&proxy), ["/x", "/"]);
    assert_eq!(targets(&api), ["/x", "/proxyx", "/"]);
    assert_eq!(targets(&root), ["/apix", "/", "/other/api/proxy"]);
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Methods and request bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_method_reaches_the_upstream_unchanged() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    for method in methods {
        let body = match method {
            "GET" | "HEAD" => empty(),
            _ => full(format!("body of {method}")),
        };
        let req = request(method, &gateway.url("/api/proxy/thing"), Some(TOKEN))
            .body(body)
            .unwrap();
        let answer = send(&client, req).await;
        assert_eq!(answer.status, 200, "{method}");
        if method == "HEAD" {
            assert!(answer.body.is_empty());
        } else {
            assert_eq!(answer.json(), serde_json::json!({"ok": true}), "{method}");
        }
    }
    let seen = upstream.seen();
    assert_eq!(
        seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        methods
    );
    for s in &seen {
        assert_eq!(s.target, "/thing");
        assert_eq!(s.header_all("authorization"), [format!("Bearer {TOKEN}")]);
        let expected = match s.method.as_str() {
            "GET" | "HEAD" => String::new(),
            other => format!("body of {other}"),
        };
        assert_eq!(s.body, expected.as_bytes(), "{}", s.method);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn binary_request_bodies_arrive_byte_exact_with_any_content_type() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let payload = all_bytes(4);
    let content_types = [
        "application/octet-stream",
        "image/png",
        "text/plain; charset=iso-8859-1",
        "application/vnd.example+json; version=2",
        "x-unknown/whatever",
    ];
    for content_type in content_types {
        for method in ["POST", "PUT", "PATCH"] {
            let req = request(method, &gateway.url("/api/proxy/upload"), Some(TOKEN))
                .header("content-type", content_type)
                .body(full(payload.clone()))
                .unwrap();
            assert_eq!(send(&client, req).await.status, 200);
        }
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), content_types.len() * 3);
    for (s, content_type) in seen.iter().zip(content_types.iter().flat_map(|ct| [ct; 3])) {
        assert_eq!(s.header_all("content-type"), [*content_type]);
        assert_eq!(s.header("content-length"), Some("1024"));
        assert_eq!(s.body, payload, "{} {content_type}", s.method);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn multipart_content_type_and_body_are_kept_exactly() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let boundary = "----cookiegateBoundary7MA4YWxkTrZu0gW";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Disposition: form-data; name=\"title\"\r\n\r\nQuarterly report\r\n",
    );
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Disposition: form-data; name=\"file\"; filename=\"blob.bin\"\r\n\
          Content-Type: application/octet-stream\r\n\r\n",
    );
    body.extend_from_slice(&all_bytes(2));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let req = request("POST", &gateway.url("/api/proxy/files"), Some(TOKEN))
        .header("content-type", &content_type)
        .body(full(body.clone()))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header_all("content-type"), [content_type]);
    assert_eq!(seen.body, body);
    gateway.stop().await;
}

#[tokio::test]
async fn chunked_request_body_arrives_intact() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let payload = all_bytes(8);
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
    let chunks: Vec<Bytes> = [1usize, 255, 256, 512, 1000]
        .iter()
        .scan(0usize, |at, &len| {
            let chunk = Bytes::copy_from_slice(&payload[*at..*at + len]);
            *at += len;
            Some(chunk)
        })
        .chain(std::iter::once(Bytes::copy_from_slice(&payload[2024..])))
        .collect();
    let feeder = tokio::spawn(async move {
        for chunk in chunks {
            tx.send_data(chunk).await.unwrap();
        }
    });
    let req = request("POST", &gateway.url("/api/proxy/stream-in"), Some(TOKEN))
        .header("content-type", "application/octet-stream")
        .body(body.boxed())
        .unwrap();
    let answer = send(&client(), req).await;
    feeder.await.unwrap();
    assert_eq!(answer.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.body, payload);
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn pdf_bytes() -> Vec<u8> {
    let mut pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    pdf.extend_from_slice(&all_bytes(3));
    pdf.extend_from_slice(b"\n%%EOF\n");
    pdf
}

#[tokio::test]
async fn binary_pdf_and_text_responses_are_untouched() {
    let upstream = answering(|target| {
        let (content_type, body): (&str, Vec<u8>) = match target {
            "/blob" => ("application/octet-stream", all_bytes(16)),
            "/report.pdf" => ("application/pdf", pdf_bytes()),
            _ => (
                "text/plain; charset=utf-8",
                "plain text, not JSON\nw\u{f6}rld\n".into(),
            ),
        };
        Response::builder()
            .header("content-type", content_type)
            .body(full(body))
            .unwrap()
    })
    .await;
    let gateway = Gateway::single(&upstream.url()).await;

    let blob = get(&gateway.url("/api/proxy/blob"), Some(TOKEN)).await;
    assert_eq!(blob.status, 200);
    assert_eq!(
        blob.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(blob.header("content-length"), Some("4096"));
    assert_eq!(blob.body, all_bytes(16));

    let pdf = get(&gateway.url("/api/proxy/report.pdf"), Some(TOKEN)).await;
    assert_eq!(pdf.status, 200);
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert_eq!(pdf.body, pdf_bytes());

    let text = get(&gateway.url("/api/proxy/notes.txt"), Some(TOKEN)).await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(text.body, "plain text, not JSON\nw\u{f6}rld\n".as_bytes());
    gateway.stop().await;
}

#[tokio::test]
async fn no_content_and_not_modified_pass_through_without_a_body() {
    let upstream = answering(|target| {
        let builder = match target {
            "/no-content" => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header("x-deleted", "42"),
            _ => Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"v1\"")
                .header("cache-control", "private, max-age=60"),
        };
        builder.body(empty()).unwrap()
    })
    .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();

    let req = request("DELETE", &gateway.url("/api/proxy/no-content"), Some(TOKEN))
        .body(empty())
        .unwrap();
    let deleted = send(&client, req).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(deleted.header("x-deleted"), Some("42"));
    assert!(deleted.body.is_empty());

    let req = request("GET", &gateway.url("/api/proxy/not-modified"), Some(TOKEN))
        .header("if-none-match", "\"v1\"")
        .body(empty())
        .unwrap();
    let cached = send(&client, req).await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("etag"), Some("\"v1\""));
    assert_eq!(cached.header("cache-control"), Some("private, max-age=60"));
    assert!(cached.body.is_empty());

    // The same connection still works after the bodiless answers.
    assert_eq!(
        get(&gateway.url("/api/proxy/no-content"), Some(TOKEN))
            .await
            .status,
        204
    );
    gateway.stop().await;
}

#[tokio::test]
async fn head_keeps_the_upstream_content_length_and_has_no_body() {
    let upstream = TestUpstream::builder()
        .respond(|seen| {
            assert_eq!(seen.method, "HEAD");
            Response::builder()
                .header("content-type", "application/pdf")
                .header("content-length", "123456")
                .header("etag", "\"big\"")
                .body(empty())
                .unwrap()
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for _ in 0..2 {
        let req = request("HEAD", &gateway.url("/api/proxy/report.pdf"), Some(TOKEN))
            .body(empty())
            .unwrap();
        let answer = send(&client, req).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-length"), Some("123456"));
        assert_eq!(answer.header("content-type"), Some("application/pdf"));
        assert_eq!(answer.header("etag"), Some("\"big\""));
        assert!(answer.body.is_empty());
    }

    // On the wire: the head, and not a single body byte after it.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "HEAD /api/proxy/report.pdf HTTP/1.1\r\nHost: x\r\nCookie: auth_token={TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes),
    )
    .await
    .expect("the gateway closes after the answer")
    .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-length: 123456\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD answer carries a body: {text:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn created_with_location_passes_through() {
    let upstream = TestUpstream::builder()
        .respond(|_| {
            Response::builder()
                .status(StatusCode::CREATED)
                .header("location", "/api/tasks/42")
                .header("content-type", "application/json")
                .body(full(r#"{"id":42}"#))
                .unwrap()
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let req = request("POST", &gateway.url("/api/proxy/api/tasks"), Some(TOKEN))
        .header("content-type", "application/json")
        .body(full(r#"{"title":"x"}"#))
        .unwrap();
    let answer = send(&client(), req).await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.header("location"), Some("/api/tasks/42"));
    assert_eq!(answer.body, r#"{"id":42}"#);
    gateway.stop().await;
}

/// A gzip stream's first bytes and some arbitrary compressed-looking bytes: never decoded.
fn gzip_bytes() -> Vec<u8> {
    let mut gz = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];
    gz.extend_from_slice(&all_bytes(1));
    gz
}

#[tokio::test]
async fn end_to_end_response_headers_pass_through_exactly() {
    let upstream = TestUpstream::builder()
        .respond(|_| {
            Response::builder()
            .header("set-cookie", "session_hint=1; Path=/; HttpOnly")
            .header("set-cookie", "theme=dark; Max-Age=60; Secure; SameSite=Lax")
            .header("set-cookie", "a=b")
            .header("etag", "W/\"abc-123\"")
            .header("cache-control", "private, max-age=0, no-store")
            .header(
                "content-disposition",
                "attachment; filename=\"report 2024.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
            )
            .header("content-encoding", "gzip")
            .header("content-type", "application/json")
            .header("vary", "Accept-Encoding")
            .header("x-custom-response", "kept")
            .body(full(gzip_bytes()))
            .unwrap()
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let req = request("GET", &gateway.url("/api/proxy/export"), Some(TOKEN))
        .header("accept-encoding", "gzip")
        .body(empty())
        .unwrap();
    let answer = send(&client(), req).await;
    assert_eq!(answer.status, 200);
    let set_cookies: Vec<&str> = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        set_cookies,
        [
            "session_hint=1; Path=/; HttpOnly",
            "theme=dark; Max-Age=60; Secure; SameSite=Lax",
            "a=b"
        ]
    );
    assert_eq!(answer.header("etag"), Some("W/\"abc-123\""));
    assert_eq!(
        answer.header("cache-control"),
        Some("private, max-age=0, no-store")
    );
    assert_eq!(
        answer.header("content-disposition"),
        Some("attachment; filename=\"report 2024.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")
    );
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    assert_eq!(answer.header("vary"), Some("Accept-Encoding"));
    assert_eq!(answer.header("x-custom-response"), Some("kept"));
    assert_eq!(
        answer.header("content-length"),
        Some(gzip_bytes().len().to_string().as_str())
    );
    assert_eq!(
        answer.body,
        gzip_bytes(),
        "the gzip body must not be decoded"
    );
    assert_eq!(upstream.only().header("accept-encoding"), Some("gzip"));
    gateway.stop().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let upstream = answering(|target| match target {
        "/invalid" => Response::builder()
            .status(StatusCode::UNPROCESSABLE_ENTITY)
            .header("content-type", "application/json")
            .header("x-request-id", "req-422")
            .body(full(
                r#"{"detail":[{"loc":["body","title"],"msg":"field required"}]}"#,
            ))
            .unwrap(),
        "/missing" => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "application/json")
            .body(full(r#"{"error":"task not found"}"#))
            .unwrap(),
        "/forbidden" => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer error=\"invalid_token\"")
            .body(full("token expired"))
            .unwrap(),
        _ => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("content-type", "text/plain")
            .header("retry-after", "5")
            .body(full("Internal Server Error: boom"))
            .unwrap(),
    })
    .await;
    let gateway = Gateway::single(&upstream.url()).await;

    let invalid = get(&gateway.url("/api/proxy/invalid"), Some(TOKEN)).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.header("content-type"), Some("application/json"));
    // The one exception: the client gets cookiegate's request id, the one the upstream was
    // sent and the log lines carry, in place of an id of the upstream's own.
    assert_eq!(
        invalid.header("x-request-id"),
        upstream.seen()[0].header("x-request-id")
    );
    assert_eq!(
        invalid.body,
        r#"{"detail":[{"loc":["body","title"],"msg":"field required"}]}"#
    );

    let missing = get(&gateway.url("/api/proxy/missing"), Some(TOKEN)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, r#"{"error":"task not found"}"#);

    let forbidden = get(&gateway.url("/api/proxy/forbidden"), Some(TOKEN)).await;
    assert_eq!(forbidden.status, 401);
    assert_eq!(
        forbidden.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(forbidden.body, "token expired");

    let crash = get(&gateway.url("/api/proxy/crash"), Some(TOKEN)).await;
    assert_eq!(crash.status, 500);
    assert_eq!(crash.header("content-type"), Some("text/plain"));
    assert_eq!(crash.header("retry-after"), Some("5"));
    assert_eq!(crash.body, "Internal Server Error: boom");

    assert_eq!(upstream.seen().len(), 4);
    gateway.stop().await;
}

#[tokio::test]
async fn event_streams_carry_x_accel_buffering_no() {
    let upstream = answering(|target| {
        let content_type = if target == "/events" {
            "text/event-stream"
        } else {
            "application/json"
        };
        Response::builder()
            .header("content-type", content_type)
            .header("cache-control", "no-cache")
            .body(full("data: {\"n\":1}\n\n"))
            .unwrap()
    })
    .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let events = get(&gateway.url("/api/proxy/events"), Some(TOKEN)).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_eq!(events.header("x-accel-buffering"), Some("no"));
    assert_eq!(events.body, "data: {\"n\":1}\n\n");

    let json = get(&gateway.url("/api/proxy/json"), Some(TOKEN)).await;
    assert_eq!(json.header("x-accel-buffering"), None);
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Request header policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn end_to_end_request_headers_are_forwarded() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let req = request("GET", &gateway.url("/api/proxy/doc"), Some(TOKEN))
        .header("accept", "application/json, text/plain;q=0.5")
        .header("accept-language", "de-CH, en;q=0.8")
        .header("content-type", "application/merge-patch+json")
        .header("if-none-match", "\"v1\", W/\"v2\"")
        .header("range", "bytes=0-99, 200-")
        .header("user-agent", "Mozilla/5.0 (cookiegate test)")
        .header("x-custom", "one")
        .header("x-custom", "two")
        .header("x-request-id", "abc-123")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    let seen = upstream.only();
    assert_eq!(
        seen.header_all("accept"),
        ["application/json, text/plain;q=0.5"]
    );
    assert_eq!(seen.header_all("accept-language"), ["de-CH, en;q=0.8"]);
    assert_eq!(
        seen.header_all("content-type"),
        ["application/merge-patch+json"]
    );
    assert_eq!(seen.header_all("if-none-match"), ["\"v1\", W/\"v2\""]);
    assert_eq!(seen.header_all("range"), ["bytes=0-99, 200-"]);
    assert_eq!(
        seen.header_all("user-agent"),
        ["Mozilla/5.0 (cookiegate test)"]
    );
    assert_eq!(seen.header_all("x-custom"), ["one", "two"]);
    // A request id from a peer that is no trusted proxy is replaced by cookiegate's own.
    let id = seen.header_all("x-request-id");
    assert_eq!(id.len(), 1);
    assert_ne!(id[0], "abc-123");
    gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    // Raw bytes: HTTP clients manage these headers themselves.
    let req = format!(
        "GET /api/proxy/hop HTTP/1.1\r\n\
         Host: app.example\r\n\
         Connection: close, x-hop\r\n\
         Keep-Alive: timeout=5, max=100\r\n\
         TE: trailers\r\n\
         Upgrade: websocket\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\n\
         x-hop: 1\r\n\
         x-end-to-end: kept\r\n\
         Cookie: auth_token={TOKEN}\r\n\
         \r\n"
    );
    let answer = raw_answer(gateway.addr, req.as_bytes()).await;
    assert_eq!(answer.status, 200);
    let seen = upstream.only();
    for gone in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-hop",
    ] {
        assert_eq!(
            seen.header_all(gone),
            Vec::<String>::new(),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(seen.header_all("x-end-to-end"), ["kept"]);
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn client_authorization_is_replaced_by_the_cookie_token() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let req = request("GET", &gateway.url("/api/proxy/me"), Some(TOKEN))
        .header("authorization", "Bearer forged-by-the-client")
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    let seen = upstream.only();
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert_eq!(seen.header_all("cookie"), Vec::<String>::new());
    gateway.stop().await;
}

#[tokio::test]
async fn cookies_go_upstream_only_on_auth_none_routes_which_keep_client_authorization() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = gateway_with_public_route(&upstream.url()).await;
    let client = client();
    for path in ["/api/proxy/x", "/public/x"] {
        let req = request("GET", &gateway.url(path), Some(TOKEN))
            .header("authorization", "Basic dXNlcjpwdw==")
            .body(empty())
            .unwrap();
        assert_eq!(send(&client, req).await.status, 200, "{path}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    // auth = "required": the bearer from the cookie, no Cookie header.
    assert_eq!(
        seen[0].header_all("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert_eq!(seen[0].header_all("cookie"), Vec::<String>::new());
    // auth = "none": a plain pass-through, the client's own Authorization and Cookie.
    assert_eq!(seen[1].target, "/x");
    assert_eq!(seen[1].header_all("authorization"), ["Basic dXNlcjpwdw=="]);
    assert_eq!(
        seen[1].header_all("cookie"),
        [format!("theme=dark; auth_token={TOKEN}")]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced_by_cookiegate_values() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let req = request("GET", &gateway.url("/api/proxy/whoami"), Some(TOKEN))
        .header("x-forwarded-for", "6.6.6.6, 10.0.0.1")
        .header("x-forwarded-for", "7.7.7.7")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;host=evil.example;proto=https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    let seen = upstream.only();
    let gateway_host = gateway.addr.to_string();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), [gateway_host.as_str()]);
    assert_eq!(
        seen.header_all("forwarded"),
        [format!("for=127.0.0.1;host=\"{gateway_host}\";proto=http")]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn upstream_sees_its_own_host_not_the_clients() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let req = request("GET", &gateway.url("/api/proxy/host"), Some(TOKEN))
        .header("host", "app.example:4000")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header_all("host"), [upstream.addr.to_string()]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["app.example:4000"]);
    assert_eq!(
        seen.header_all("forwarded"),
        ["for=127.0.0.1;host=\"app.example:4000\";proto=http"]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn optional_auth_sends_the_bearer_only_when_the_cookie_is_there() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\nauth = \"optional\"\n",
        upstream.url()
    ))
    .await;
    let client = client();
    let with = request("GET", &gateway.url("/api/proxy/feed"), Some(TOKEN))
        .body(empty())
        .unwrap();
    assert_eq!(send(&client, with).await.status, 200);
    let without = request("GET", &gateway.url("/api/proxy/feed"), None)
        .header("cookie", "theme=dark")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client, without).await.status, 200);
    // A forged Authorization does not survive on an optional route either.
    let forged = request("GET", &gateway.url("/api/proxy/feed"), None)
        .header("authorization", "Bearer forged")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client, forged).await.status, 200);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].header_all("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert_eq!(seen[1].header_all("authorization"), Vec::<String>::new());
    assert_eq!(seen[2].header_all("authorization"), Vec::<String>::new());
    assert!(seen.iter().all(|s| s.header("cookie").is_none()));
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Client protocols
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http2_clients_get_the_same_results() {
    // Echoes the request body back, so both directions are checked byte for byte.
    let upstream = TestUpstream::builder()
        .respond(|seen| {
            Response::builder()
                .header("content-type", "application/octet-stream")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .body(full(seen.body.clone()))
                .unwrap()
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let h2 = h2_client();
    let payload = all_bytes(64);
    let req = request(
        "POST",
        &gateway.url("/api/proxy/echo?tag=a&tag=b"),
        Some(TOKEN),
    )
    .version(Version::HTTP_2)
    .header("content-type", "application/octet-stream")
    .header("authorization", "Bearer forged")
    .header("x-custom", "h2")
    .body(full(payload.clone()))
    .unwrap();
    let answer = send(&h2, req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, payload);
    assert_eq!(answer.headers.get_all("set-cookie").iter().count(), 2);

    // A second request on the same HTTP/2 connection, without the session cookie.
    let req = request("GET", &gateway.url("/api/proxy/echo"), None)
        .version(Version::HTTP_2)
        .body(empty())
        .unwrap();
    send(&h2, req).await.assert_error(401, "not authenticated");

    let seen = upstream.only();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.target, "/echo?tag=a&tag=b");
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert_eq!(seen.header_all("cookie"), Vec::<String>::new());
    assert_eq!(seen.header_all("host"), [upstream.addr.to_string()]);
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        [gateway.addr.to_string()]
    );
    assert_eq!(seen.header_all("x-custom"), ["h2"]);
    assert_eq!(seen.body, payload);
    gateway.stop().await;
}

fn keep_alive_request(path: &str, last: bool) -> String {
    let connection = if last { "Connection: close\r\n" } else { "" };
    format!(
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nCookie: auth_token={TOKEN}\r\n{connection}\r\n"
    )
}

#[tokio::test]
async fn http1_keep_alive_serves_several_requests_on_one_connection() {
    let upstream = answering(|target| Response::new(full(format!("answer for {target}")))).await;
    let gateway = Gateway::single(&upstream.url()).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut buf = Vec::new();

    // One after the other.
    for n in 1..=3 {
        let req = keep_alive_request(&format!("/api/proxy/seq/{n}"), false);
        stream.write_all(req.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream, &mut buf).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("answer for /seq/{n}"));
    }

    // Pipelined: both requests written before any answer is read.
    let pipelined = keep_alive_request("/api/proxy/pipe/1", false)
        + &keep_alive_request("/api/proxy/pipe/2", true);
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let first = read_answer(&mut stream, &mut buf).await;
    let second = read_answer(&mut stream, &mut buf).await;
    assert_eq!(first.body, "answer for /pipe/1");
    assert_eq!(second.body, "answer for /pipe/2");
    assert_eq!(
        targets(&upstream),
        ["/seq/1", "/seq/2", "/seq/3", "/pipe/1", "/pipe/2"]
    );
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Transparency
// ---------------------------------------------------------------------------------------------

/// Headers that describe one connection or one moment, not the answer itself; and
/// `X-Request-Id`, which cookiegate adds to every answer (the id of its log lines).
const NOT_COMPARED: [&str; 9] = [
    "x-request-id",
    "date",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn end_to_end(answer: &Answer) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in &answer.headers {
        if !NOT_COMPARED.contains(&name.as_str()) {
            out.entry(name.to_string())
                .or_default()
                .push(value.as_bytes().to_vec());
        }
    }
    out
}

#[tokio::test]
async fn answers_are_the_same_straight_and_through_cookiegate() {
    let upstream = answering(|target| {
        let path = target.strip_prefix("/direct").unwrap_or(target);
        match path.split('?').next().unwrap_or_default() {
            "/json" => Response::builder()
                .header("content-type", "application/json; charset=utf-8")
                .header("etag", "\"j1\"")
                .header("set-cookie", "a=1; HttpOnly")
                .header("set-cookie", "b=2")
                .header("x-total-count", "7")
                .body(full(r#"{"items":[1,2,3]}"#))
                .unwrap(),
            "/binary" => Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-disposition", "attachment; filename=\"all.bin\"")
                .body(full(all_bytes(8)))
                .unwrap(),
            "/streamed" => {
                // No length: the body is sent chunked.
                let parts = [&b"first "[..], b"second ", b"third"].map(Bytes::from_static);
                Response::builder()
                    .header("content-type", "text/plain")
                    .body(frames_body(parts))
                    .unwrap()
            }
            "/gone" => Response::builder()
                .status(StatusCode::GONE)
                .header("content-type", "application/problem+json")
                .body(full(r#"{"title":"gone"}"#))
                .unwrap(),
            _ => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header("x-empty", "yes")
                .body(empty())
                .unwrap(),
        }
    })
    .await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for path in ["/json?x=1&x=2", "/binary", "/streamed", "/gone", "/empty"] {
        let straight = send(
            &client,
            request("GET", &format!("{}{path}", upstream.url()), None)
                .body(empty())
                .unwrap(),
        )
        .await;
        let through = get(&gateway.url(&format!("/api/proxy{path}")), Some(TOKEN)).await;
        assert_eq!(through.status, straight.status, "{path}");
        assert_eq!(through.body, straight.body, "{path}");
        assert_eq!(end_to_end(&through), end_to_end(&straight), "{path}");
    }
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The seed's exploits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn encoded_slashes_and_backslashes_cannot_change_the_upstream_host() {
    // regression: seed sent the token to another host (`new URL(path, BACKEND_URL)`
    // read `/%5Cevil.example/x` and `/%2F%2Fevil.example/x` as a host).
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let cases = [
        ("/api/proxy/%5Cevil.example/x", "/%5Cevil.example/x"),
        ("/api/proxy/%5cevil.example/x", "/%5cevil.example/x"),
        ("/api/proxy/%2F%2Fevil.example/x", "/%2F%2Fevil.example/x"),
        ("/api/proxy//evil.example/x", "//evil.example/x"),
        ("/api/proxy/http://evil.example/x", "/http://evil.example/x"),
        ("/api/proxy/@evil.example/x", "/@evil.example/x"),
    ];
    for (path, _) in cases {
        assert_eq!(
            get(&gateway.url(path), Some(TOKEN)).await.status,
            200,
            "{path}"
        );
    }
    let seen = upstream.seen();
    let expected: Vec<&str> = cases.iter().map(|(_, up)| *up).collect();
    assert_eq!(
        seen.iter().map(|s| s.target.as_str()).collect::<Vec<_>>(),
        expected
    );
    for s in &seen {
        assert_eq!(s.header_all("host"), [upstream.addr.to_string()]);
        assert_eq!(s.header_all("authorization"), [format!("Bearer {TOKEN}")]);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn absolute_form_targets_still_go_to_the_configured_upstream() {
    // regression: seed sent the token to another host.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let answer = raw_answer(
        gateway.addr,
        b"GET http://evil.example/api/proxy/x?y=1 HTTP/1.1\r\nHost: evil.example\r\n\
          Cookie: auth_token=t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.target, "/x?y=1");
    assert_eq!(seen.header_all("host"), [upstream.addr.to_string()]);
    assert_eq!(seen.header_all("authorization"), ["Bearer t"]);
    gateway.stop().await;
}

#[tokio::test]
async fn split_http2_cookie_fields_reach_an_http1_upstream_as_one_header() {
    // RFC 9113 §8.2.3: HTTP/2 clients (browsers do) may send each cookie in its own `cookie`
    // field; before going on over HTTP/1.1 they must be joined with "; " (RFC 6265 §5.4 allows
    // one Cookie header).
    let upstream = TestUpstream::echo_ok().await;
    let gateway = gateway_with_public_route(&upstream.url()).await;
    let h2 = h2_client();
    for path in ["/public/page", "/api/proxy/x"] {
        let req = request("GET", &gateway.url(path), None)
            .version(Version::HTTP_2)
            .header("cookie", "theme=dark")
            .header("cookie", format!("auth_token={TOKEN}"))
            .header("cookie", "lang=de")
            .body(empty())
            .unwrap();
        assert_eq!(send(&h2, req).await.status, 200, "{path}");
    }
    let seen = upstream.seen();
    assert_eq!(
        seen[0].header_all("cookie"),
        [format!("theme=dark; auth_token={TOKEN}; lang=de")]
    );
    assert_eq!(seen[1].header_all("cookie"), Vec::<String>::new());
    assert_eq!(
        seen[1].header_all("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    gateway.stop().await;
}
