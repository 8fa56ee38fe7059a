//! Abuse limits through real sockets (the "Abuse limits" requirements): oversized heads, too many
//! headers, too many connections, hostile session cookies, authority-form targets and request
//! smuggling shapes are refused before anything reaches the upstream, and the gateway keeps
//! serving afterwards. Requests are written as raw bytes where an HTTP client would refuse to
//! send them or would normalise them.
//!
//! Covered elsewhere, not repeated here:
//! - body over `max_body` by `Content-Length` -> 413, and a chunked body crossing it mid-stream
//!   -> 413 with the upstream's request aborted, never a complete body: `errors.rs`
//!   (`declared_length_over_max_body_gives_413_before_the_upstream`,
//!   `chunked_body_crossing_max_body_gives_413_and_never_a_complete_upstream_body`);
//! - a request head not complete within `header_timeout` -> closed: `shutdown.rs`
//!   (`clients_slow_to_send_their_request_head_are_dropped`);
//! - an idle stream past `idle_timeout` -> closed: `streaming.rs`
//!   (`silent_response_stream_is_closed_after_the_idle_timeout` and its neighbours).

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const TOKEN: &str = "abuse-session-token";

/// One route `/api/proxy` -> `upstream` (auth required), after these `[server]` lines.
fn config(upstream: &str, server: &str) -> String {
    format!(
        "[server]\n{server}\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n"
    )
}

/// A raw HTTP/1.1 request: `head_lines` are written as given (each with its own line ending),
/// after the request line and `Host`, then the empty line and `body`.
fn raw_request(request_line: &str, head_lines: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{request_line}\r\nHost: gw\r\n").into_bytes();
    for line in head_lines {
        req.extend_from_slice(line);
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

/// The session cookie line for [`TOKEN`].
fn cookie_line() -> Vec<u8> {
    format!("Cookie: auth_token={TOKEN}\r\n").into_bytes()
}

/// Asserts the gateway still answers a normal request, and that it is the only new request
/// the upstream saw (so nothing from before was forwarded late).
async fn assert_still_serves(gateway: &Gateway, upstream: &TestUpstream, what: &str) {
    let before = upstream.seen().len();
    let answer = get(&gateway.url("/api/proxy/after"), Some(TOKEN)).await;
    assert_eq!(answer.status, 200, "after {what}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), before + 1, "after {what}: {seen:#?}");
    assert_eq!(seen[before].target, "/after");
}

/// Asserts that the upstream saw nothing but the normal requests of [`assert_still_serves`].
fn assert_only_checks_arrived(upstream: &TestUpstream, what: &str) {
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.target == "/after"),
        "{what} was forwarded: {seen:#?}"
    );
}

/// Asserts a 400: cookiegate's JSON `malformed request`, or hyper's own (no JSON body) for
/// bytes it refuses while parsing.
fn assert_bad_request(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        400,
        "{what}: {:?}",
        String::from_utf8_lossy(&answer.body)
    );
    if answer.header("content-type") == Some("application/json") {
        answer.assert_error(400, "malformed request");
    } else {
        assert!(answer.body.is_empty(), "{what}: {:?}", answer.body);
    }
}

// ---------------------------------------------------------------------------------------------
// Head size and header count -> 431
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "max_header_bytes = \"8KiB\"")).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let many = (0..40)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(500)))
        .collect::<String>();
    for (what, lines) in [("one 20 KB header", big), ("40 headers of 500 B", many)] {
        let req = raw_request(
            "GET /api/proxy/x HTTP/1.1",
            &[&cookie_line(), lines.as_bytes()],
            b"",
        );
        let answer = raw_answer(gateway.addr, &req).await;
        assert_eq!(
            answer.status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{what}"
        );
        assert_only_checks_arrived(&upstream, what);
        assert_still_serves(&gateway, &upstream, what).await;
    }
    // A head well within the bound passes.
    let fine = format!("X-Fine: {}\r\n", "c".repeat(4 * 1024));
    let req = raw_request(
        "GET /api/proxy/fine HTTP/1.1",
        &[&cookie_line(), fine.as_bytes(), b"Connection: close\r\n"],
        b"",
    );
    assert_eq!(raw_answer(gateway.addr, &req).await.status, 200);
    assert_eq!(upstream.seen().last().unwrap().target, "/fine");
    gateway.stop().await;
}

#[tokio::test]
async fn an_oversized_http2_header_block_gets_431() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "max_header_bytes = \"8KiB\"")).await;
    let client = h2_client();
    let req = request("GET", &gateway.url("/api/proxy/x"), Some(TOKEN))
        .header("x-big", "a".repeat(20 * 1024))
        .body(empty())
        .unwrap();
    let answer = send(&client, req).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    let answer = send(
        &client,
        request("GET", &gateway.url("/api/proxy/after"), Some(TOKEN))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "the HTTP/2 connection goes on");
    assert_eq!(upstream.only().target, "/after");
    gateway.stop().await;
}

#[tokio::test]
async fn more_headers_than_max_headers_gets_431() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "max_headers = 10")).await;
    let pad = |n: usize| {
        (0..n)
            .map(|i| format!("X-Pad-{i}: {i}\r\n"))
            .collect::<String>()
    };
    // Host + Cookie + 14 = 16 fields.
    let req = raw_request(
        "GET /api/proxy/x HTTP/1.1",
        &[&cookie_line(), pad(14).as_bytes()],
        b"",
    );
    let answer = raw_answer(gateway.addr, &req).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    assert_still_serves(&gateway, &upstream, "too many headers").await;
    // Host + Cookie + Connection + 7 = exactly 10 fields: allowed.
    let req = raw_request(
        "GET /api/proxy/ten HTTP/1.1",
        &[&cookie_line(), b"Connection: close\r\n", pad(7).as_bytes()],
        b"",
    );
    assert_eq!(raw_answer(gateway.addr, &req).await.status, 200);
    assert_eq!(upstream.seen().last().unwrap().target, "/ten");
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent connections
// ---------------------------------------------------------------------------------------------

/// Opens a connection and completes one keep-alive request on it; the connection stays open.
async fn held_connection(gateway: &Gateway, n: usize) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let req = raw_request(
        &format!("GET /api/proxy/held/{n} HTTP/1.1"),
        &[&cookie_line()],
        b"",
    );
    stream.write_all(&req).await.unwrap();
    let answer = read_answer(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 200, "held connection {n}");
    assert_eq!(answer.header("connection"), None, "kept alive");
    stream
}

/// Reads until the server closes the connection; fails the test if it stays open past the
/// guard. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    within(what, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test]
async fn connections_over_max_connections_get_503_and_are_closed() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "max_connections = 2")).await;
    let mut first = held_connection(&gateway, 0).await;
    let mut second = held_connection(&gateway, 1).await;

    for n in 0..2 {
        let mut third = TcpStream::connect(gateway.addr).await.unwrap();
        let req = raw_request("GET /api/proxy/third HTTP/1.1", &[&cookie_line()], b"");
        third.write_all(&req).await.unwrap();
        let mut buf = Vec::new();
        let answer = read_answer(&mut third, &mut buf).await;
        answer.assert_error(503, "too many connections");
        assert_eq!(answer.header("connection"), Some("close"), "refusal {n}");
        assert_eq!(answer.header("retry-after"), Some("1"), "refusal {n}");
        let rest = read_until_closed(&mut third, "the refused connection to close").await;
        assert!(buf.is_empty() && rest.is_empty(), "one answer only");
    }
    assert_eq!(
        upstream.seen().len(),
        2,
        "the refused requests never went upstream"
    );

    // The held connections were not disturbed.
    let req = raw_request("GET /api/proxy/again HTTP/1.1", &[&cookie_line()], b"");
    first.write_all(&req).await.unwrap();
    assert_eq!(read_answer(&mut first, &mut Vec::new()).await.status, 200);

    // Once both close, new connections are served again. Half-close and wait for the server's
    // own close: by then its connection task has ended, so the next accept counts it gone.
    for (stream, what) in [(&mut first, "first"), (&mut second, "second")] {
        stream.shutdown().await.unwrap();
        read_until_closed(stream, what).await;
    }
    drop((first, second));
    for n in 0..3 {
        let answer = get(&gateway.url(&format!("/api/proxy/later/{n}")), Some(TOKEN)).await;
        assert_eq!(answer.status, 200, "new connection {n}");
    }
    let targets: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/held/0", "/held/1", "/again", "/later/0", "/later/1", "/later/2"
        ]
    );
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile session cookies
// ---------------------------------------------------------------------------------------------

/// RFC 6265 §4.1.1 `cookie-octet`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[tokio::test]
async fn every_byte_in_a_cookie_value_is_forwarded_verbatim_or_refused() {
    // `auth_token=Qv<byte>Jk` for each of the 256 byte values, sent raw.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let mut forwarded = 0;
    for byte in 0u8..=255 {
        let mut line = b"Cookie: theme=dark; auth_token=Qv".to_vec();
        line.extend_from_slice(&[byte, b'J', b'k']);
        line.extend_from_slice(b"\r\n");
        let req = raw_request(
            "GET /api/proxy/x HTTP/1.1",
            &[&line, b"Connection: close\r\n"],
            b"",
        );
        let answer = raw_answer(gateway.addr, &req).await;
        let what = format!("byte {byte:#04x}");
        let seen_before = forwarded;
        if is_cookie_octet(byte) || byte == b';' {
            // `;` ends the pair: the token is `Qv` and `Jk` a nameless pair, ignored.
            assert_eq!(answer.status, 200, "{what}");
            let seen = upstream.seen();
            forwarded += 1;
            assert_eq!(seen.len(), forwarded, "{what}");
            let want: Vec<u8> = if byte == b';' {
                b"Bearer Qv".to_vec()
            } else {
                [&b"Bearer Qv"[..], &[byte], b"Jk"].concat()
            };
            let last = seen.last().unwrap();
            let got: Vec<&[u8]> = last
                .headers
                .get_all("authorization")
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            assert_eq!(got, [want.as_slice()], "{what}");
            assert!(last.headers.get("cookie").is_none(), "{what}");
        } else if byte < 0x20 && byte != b'\t' || byte == 0x7f {
            // Controls (NUL, CR, LF, ...) and DEL cannot be in a header value: hyper refuses
            // the request while parsing it.
            assert_eq!(answer.status, 400, "{what}");
        } else {
            // Space, tab, `"`, `,`, `\` and non-ASCII parse as a header value but are no
            // cookie-octets: never turned into a header.
            answer.assert_error(401, "unusable session cookie");
            assert!(!String::from_utf8_lossy(&answer.body).contains("Qv"));
        }
        if forwarded == seen_before {
            assert_eq!(upstream.seen().len(), forwarded, "{what} was forwarded");
        }
    }
    // 0x21..=0x7e minus `"`, `,`, `\` (and `;`, counted separately), plus `;`.
    assert_eq!(forwarded, 94 - 4 + 1);
    assert_still_serves(&gateway, &upstream, "the byte sweep").await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_cookie_line_with_crlf_never_becomes_a_header_cookiegate_made() {
    // CR and LF end a header line, so whatever follows them is at most the client's own next
    // header: cookiegate never writes a cookie's bytes anywhere but `Authorization: Bearer`.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let cases: [(&str, &[u8], Option<&str>); 8] = [
        (
            "CRLF then a header",
            b"Cookie: auth_token=clean\r\nX-Injected: 1\r\n",
            Some("Bearer clean"),
        ),
        (
            "CRLF then an Authorization",
            b"Cookie: auth_token=clean\r\nAuthorization: Bearer evil\r\n",
            Some("Bearer clean"),
        ),
        (
            "bare LF then a header",
            b"Cookie: auth_token=clean\nX-Injected: 1\r\n",
            Some("Bearer clean"),
        ),
        (
            "bare CR then a header",
            b"Cookie: auth_token=clean\rX-Injected: 1\r\n",
            None,
        ),
        (
            "CRLF inside quotes",
            b"Cookie: auth_token=\"clean\r\nX-Injected: 1\"\r\n",
            None,
        ),
        (
            "CRLF and a folded continuation",
            b"Cookie: auth_token=clean\r\n X-Injected: 1\r\n",
            None,
        ),
        (
            "percent-encoded CRLF is not decoded",
            b"Cookie: auth_token=clean%0D%0AX-Injected:%201\r\n",
            Some("Bearer clean%0D%0AX-Injected:%201"),
        ),
        (
            "CRLF then a second session cookie",
            b"Cookie: auth_token=clean\r\nCookie: auth_token=evil\r\n",
            None,
        ),
    ];
    for (what, cookie, bearer) in cases {
        let before = upstream.seen().len();
        let req = raw_request(
            "GET /api/proxy/x HTTP/1.1",
            &[cookie, b"Connection: close\r\n"],
            b"",
        );
        let answer = raw_answer(gateway.addr, &req).await;
        let seen = upstream.seen();
        match bearer {
            Some(bearer) => {
                assert_eq!(answer.status, 200, "{what}");
                assert_eq!(seen.len(), before + 1, "{what}");
                let last = seen.last().unwrap();
                assert_eq!(last.header_all("authorization"), [bearer], "{what}");
                assert!(last.headers.get("cookie").is_none(), "{what}");
                // At most the client's own header, exactly as it sent it.
                assert!(
                    last.header_all("x-injected").iter().all(|v| v == "1"),
                    "{what}: {:?}",
                    last.header_all("x-injected")
                );
            }
            None => {
                assert!(answer.status.is_client_error(), "{what}: {}", answer.status);
                assert_eq!(seen.len(), before, "{what} was forwarded: {seen:#?}");
            }
        }
    }
    assert_still_serves(&gateway, &upstream, "the injection attempts").await;
    gateway.stop().await;
}

#[tokio::test]
async fn several_session_cookies_are_ambiguous_in_every_shape() {
    // The hyper-client shapes (one field, two fields) are in `errors.rs`; here the raw and
    // HTTP/2 ones, where cookies arrive split as RFC 9113 §8.2.3 allows.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let raw_cases: [&[&[u8]]; 4] = [
        &[
            b"Cookie: auth_token=mine\r\n",
            b"Cookie: auth_token=tossed\r\n",
        ],
        &[
            b"Cookie: auth_token=mine\r\n",
            b"Cookie: theme=dark; auth_token=mine\r\n",
        ],
        // An empty duplicate is a duplicate too.
        &[b"Cookie: auth_token=mine; auth_token=\r\n"],
        &[b"Cookie: auth_token=mine;auth_token=tossed\r\n"],
    ];
    for lines in raw_cases {
        let mut lines = lines.to_vec();
        lines.push(b"Connection: close\r\n");
        let req = raw_request("GET /api/proxy/x HTTP/1.1", &lines, b"");
        let answer = raw_answer(gateway.addr, &req).await;
        answer.assert_error(400, "ambiguous session cookie");
        let body = String::from_utf8_lossy(&answer.body);
        assert!(!body.contains("mine") && !body.contains("tossed"));
    }
    let client = h2_client();
    for fields in [
        &["auth_token=mine", "auth_token=tossed"][..],
        &[
            "theme=dark",
            "auth_token=mine",
            "lang=en",
            "auth_token=mine",
        ][..],
    ] {
        let mut req = request("POST", &gateway.url("/api/proxy/x"), None);
        for field in fields {
            req = req.header("cookie", *field);
        }
        send(&client, req.body(full("{}")).unwrap())
            .await
            .assert_error(400, "ambiguous session cookie");
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    // One session cookie split from the others over HTTP/2 is fine.
    let req = request("GET", &gateway.url("/api/proxy/split"), None)
        .header("cookie", "theme=dark")
        .header("cookie", "auth_token=mine")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client, req).await.status, 200);
    assert_eq!(upstream.only().header("authorization"), Some("Bearer mine"));
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Targets and request smuggling shapes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_with_an_authority_target_gets_405_and_nothing_is_forwarded() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    for target in ["evil.example:443", "127.0.0.1:22", "[::1]:80"] {
        let req = raw_request(
            &format!("CONNECT {target} HTTP/1.1"),
            &[&cookie_line(), b"Connection: close\r\n"],
            b"",
        );
        let answer = raw_answer(gateway.addr, &req).await;
        answer.assert_error(405, "method not allowed");
        assert_only_checks_arrived(&upstream, &format!("CONNECT {target}"));
        assert_still_serves(&gateway, &upstream, target).await;
    }
    // An absolute-form target never chooses where the request goes: the route's upstream
    // gets it, at the route's path.
    let req = raw_request(
        "GET http://evil.example:443/api/proxy/abs?q=1 HTTP/1.1",
        &[&cookie_line(), b"Connection: close\r\n"],
        b"",
    );
    assert_eq!(raw_answer(gateway.addr, &req).await.status, 200);
    assert_eq!(upstream.seen().last().unwrap().target, "/abs?q=1");
    gateway.stop().await;
}

/// A smuggling shape: what it is, the request line, its framing header lines, its body.
type Shape<'a> = (&'a str, &'a str, &'a [&'a [u8]], &'a [u8]);

#[tokio::test]
async fn request_smuggling_shapes_are_refused_and_never_forwarded() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    // A request hidden in a body, as a front end that trusted the other framing would pass it.
    let hidden = b"0\r\n\r\nGET /api/proxy/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let cases: [Shape; 12] = [
        (
            "CL then TE",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"],
            b"0\r\n\r\n",
        ),
        (
            "TE then CL",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n"],
            b"0\r\n\r\n",
        ),
        (
            "CL.TE with a hidden request",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Content-Length: 51\r\n", b"Transfer-Encoding: chunked\r\n"],
            hidden,
        ),
        (
            "TE.CL with a hidden request",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n"],
            hidden,
        ),
        (
            "CL with a capitalised TE",
            "GET /api/proxy/x HTTP/1.1",
            &[b"content-length: 0\r\n", b"TRANSFER-ENCODING: Chunked\r\n"],
            b"0\r\n\r\n",
        ),
        (
            "two differing Content-Lengths",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Content-Length: 5\r\n", b"Content-Length: 6\r\n"],
            b"hello!",
        ),
        (
            "a Content-Length list that disagrees",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Content-Length: 5, 6\r\n"],
            b"hello!",
        ),
        (
            "obs-fold",
            "GET /api/proxy/x HTTP/1.1",
            &[b"X-Folded: a\r\n", b" b\r\n"],
            b"",
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            "POST /api/proxy/x HTTP/1.1",
            &[
                b"Content-Length: 5\r\n",
                b"X-Folded: a\r\n",
                b" Transfer-Encoding: chunked\r\n",
            ],
            b"0\r\n\r\n",
        ),
        (
            "space before the colon",
            "POST /api/proxy/x HTTP/1.1",
            &[b"Content-Length: 5\r\n", b"Transfer-Encoding : chunked\r\n"],
            b"0\r\n\r\n",
        ),
        (
            "chunked not last",
            "POST /api/proxy/x HTTP/1.1",
            &[
                b"Transfer-Encoding: chunked\r\n",
                b"Transfer-Encoding: identity\r\n",
            ],
            b"0\r\n\r\n",
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST /api/proxy/x HTTP/1.0",
            &[b"Transfer-Encoding: chunked\r\n"],
            b"0\r\n\r\n",
        ),
    ];
    // Every case runs, and the failures are reported together.
    let mut failures = Vec::new();
    for (what, request_line, framing, body) in cases {
        let mut lines = vec![cookie_line()];
        lines.extend(framing.iter().map(|l| l.to_vec()));
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let req = raw_request(request_line, &lines, body);
        let before = upstream.seen().len();
        let answer = raw_answer(gateway.addr, &req).await;
        let forwarded: Vec<String> = upstream.seen()[before..]
            .iter()
            .map(|s| s.target.clone())
            .collect();
        if answer.status != 400 || !forwarded.is_empty() {
            failures.push(format!(
                "{what}: {} {:?}, forwarded {forwarded:?}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        } else {
            assert_bad_request(&answer, what);
        }
        assert_still_serves(&gateway, &upstream, what).await;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    gateway.stop().await;
}

#[tokio::test]
async fn keep_alive_requests_around_a_smuggling_shape_are_judged_one_by_one() {
    // hyper drops `Content-Length` from a request that also has `Transfer-Encoding`, so the
    // gateway finds the shape in the connection's raw bytes, following hyper's framing from
    // request to request. Pipelined in one write: bodies (by length, and chunked with an
    // extension and a trailer) holding text shaped like a smuggling head, a plain GET, the
    // real shape, and a request after it that hyper never reads (it closes after the shape).
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let fake: &[u8] =
        b"POST /api/proxy/fake HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cookie = cookie_line();
    let length = format!("Content-Length: {}\r\n", fake.len());
    let chunked_body = [
        format!("{:x};name=value\r\n", fake.len()).as_bytes(),
        fake,
        b"\r\n0\r\nX-Trailer: t\r\n\r\n",
    ]
    .concat();
    let stream_bytes = [
        raw_request(
            "POST /api/proxy/one HTTP/1.1",
            &[&cookie, length.as_bytes()],
            fake,
        ),
        raw_request(
            "POST /api/proxy/two HTTP/1.1",
            &[&cookie, b"Transfer-Encoding: chunked\r\n"],
            &chunked_body,
        ),
        raw_request("GET /api/proxy/three HTTP/1.1", &[&cookie], b""),
        raw_request(
            "POST /api/proxy/four HTTP/1.1",
            &[
                &cookie,
                b"Content-Length: 5\r\n",
                b"Transfer-Encoding: chunked\r\n",
            ],
            b"0\r\n\r\n",
        ),
        raw_request("GET /api/proxy/five HTTP/1.1", &[&cookie], b""),
    ]
    .concat();
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(&stream_bytes).await.unwrap();
    let mut buf = Vec::new();
    for (n, status) in [200, 200, 200].into_iter().enumerate() {
        let answer = read_answer(&mut stream, &mut buf).await;
        assert_eq!(answer.status, status, "answer {n}");
    }
    read_answer(&mut stream, &mut buf)
        .await
        .assert_error(400, "malformed request");
    let rest = read_until_closed(&mut stream, "the connection to close after the shape").await;
    assert!(
        buf.is_empty() && rest.is_empty(),
        "no answer for the request after the shape"
    );

    let seen = upstream.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/one", "/two", "/three"]);
    assert_eq!(seen[0].body, fake);
    assert_eq!(seen[1].body, fake);
    assert_still_serves(&gateway, &upstream, "the pipelined requests").await;
    gateway.stop().await;
}
