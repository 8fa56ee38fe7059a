//! Unit and property tests of the HTTP/1.1 upstream codec.

use super::*;
use proptest::prelude::*;

// --- helpers ---

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn encode(method: &Method, target: &str, headers: &HeaderMap, framing: RequestFraming) -> String {
    let mut dst = BytesMut::new();
    let host = HeaderValue::from_static("up.example:8080");
    encode_request_head(&mut dst, method, target, &host, headers, framing);
    String::from_utf8(dst.to_vec()).unwrap()
}

/// The lines of an encoded head whose field name is `name` (case-insensitive).
fn lines_named<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// Parses `bytes` as the answer to `method`; returns the outcome and what is left.
fn parse_for(method: &Method, bytes: &[u8]) -> (Result<Option<ResponseHead>, H1Error>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let parsed = parse_response_head(&mut buf, method, false);
    (parsed, buf)
}

/// Parses a complete head (answer to GET), failing the test otherwise.
fn head_of(bytes: &[u8]) -> ResponseHead {
    match parse_for(&Method::GET, bytes).0 {
        Ok(Some(head)) => head,
        other => panic!(
            "expected a head from {:?}, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// The error parsing `bytes` (answer to GET) gives, failing the test otherwise.
fn error_of(bytes: &[u8]) -> H1Error {
    match parse_for(&Method::GET, bytes).0 {
        Err(err) => err,
        other => panic!(
            "expected an error from {:?}, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// Decodes everything in `buf` until the decoder needs more bytes (or fails).
fn drain(decoder: &mut ChunkedDecoder, buf: &mut BytesMut) -> Result<Vec<Decoded>, H1Error> {
    let mut out = Vec::new();
    while let Some(item) = decoder.decode(buf)? {
        let end = item == Decoded::End;
        out.push(item);
        if end {
            break;
        }
    }
    Ok(out)
}

fn decode_all(bytes: &[u8]) -> (Result<Vec<Decoded>, H1Error>, BytesMut) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::from(bytes);
    let out = drain(&mut decoder, &mut buf);
    (out, buf)
}

fn data(bytes: &'static [u8]) -> Decoded {
    Decoded::Data(Bytes::from_static(bytes))
}

// --- encode_request_head ---

#[test]
fn a_get_head_is_written_byte_for_byte() {
    let headers = map(&[
        ("accept", "application/json"),
        ("authorization", "Bearer tok"),
        ("x-multi", "a"),
        ("x-multi", "b"),
    ]);
    let head = encode(
        &Method::GET,
        "/p/q?x=1&y=%20",
        &headers,
        RequestFraming::Empty,
    );
    assert_eq!(
        head,
        "GET /p/q?x=1&y=%20 HTTP/1.1\r\n\
         host: up.example:8080\r\n\
         accept: application/json\r\n\
         authorization: Bearer tok\r\n\
         x-multi: a\r\n\
         x-multi: b\r\n\
         \r\n"
    );
}

#[test]
fn the_head_is_appended_after_what_the_buffer_already_holds() {
    let mut dst = BytesMut::from(&b"previous"[..]);
    let host = HeaderValue::from_static("h");
    encode_request_head(
        &mut dst,
        &Method::DELETE,
        "/",
        &host,
        &HeaderMap::new(),
        RequestFraming::Empty,
    );
    assert_eq!(&dst[..], b"previousDELETE / HTTP/1.1\r\nhost: h\r\n\r\n");
}

#[test]
fn host_and_framing_fields_from_the_map_are_never_written() {
    let headers = map(&[
        ("host", "client.example"),
        ("content-length", "999"),
        ("transfer-encoding", "gzip, chunked"),
        ("x-kept", "yes"),
        ("host", "second.example"),
    ]);
    for framing in [
        RequestFraming::Empty,
        RequestFraming::Length(5),
        RequestFraming::Chunked,
    ] {
        let head = encode(&Method::POST, "/up", &headers, framing);
        assert_eq!(
            lines_named(&head, "host"),
            ["host: up.example:8080"],
            "{framing:?}"
        );
        assert_eq!(lines_named(&head, "x-kept"), ["x-kept: yes"], "{framing:?}");
        assert!(!head.contains("999"), "{head:?}");
        assert!(!head.contains("client.example"), "{head:?}");
        assert!(!head.contains("gzip"), "{head:?}");
        let lengths = lines_named(&head, "content-length");
        let codings = lines_named(&head, "transfer-encoding");
        match framing {
            RequestFraming::Empty => {
                assert!(lengths.is_empty() && codings.is_empty(), "{head:?}");
            }
            RequestFraming::Length(_) => {
                assert_eq!(lengths, ["content-length: 5"]);
                assert!(codings.is_empty(), "{head:?}");
            }
            RequestFraming::Chunked => {
                assert!(lengths.is_empty(), "{head:?}");
                assert_eq!(codings, ["transfer-encoding: chunked"]);
            }
        }
        assert!(head.ends_with("\r\n\r\n") && !head.ends_with("\r\n\r\n\r\n"));
    }
}

#[test]
fn framing_fields_are_written_from_the_framing() {
    let none = HeaderMap::new();
    assert_eq!(
        encode(&Method::PUT, "/a", &none, RequestFraming::Length(0)),
        "PUT /a HTTP/1.1\r\nhost: up.example:8080\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(
        encode(&Method::POST, "/a", &none, RequestFraming::Length(1234567)),
        "POST /a HTTP/1.1\r\nhost: up.example:8080\r\ncontent-length: 1234567\r\n\r\n"
    );
    assert_eq!(
        encode(&Method::POST, "/a", &none, RequestFraming::Length(u64::MAX)),
        "POST /a HTTP/1.1\r\nhost: up.example:8080\r\ncontent-length: 18446744073709551615\r\n\r\n"
    );
    assert_eq!(
        encode(&Method::PATCH, "/a", &none, RequestFraming::Chunked),
        "PATCH /a HTTP/1.1\r\nhost: up.example:8080\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        encode(&Method::GET, "/a", &none, RequestFraming::Empty),
        "GET /a HTTP/1.1\r\nhost: up.example:8080\r\n\r\n"
    );
}

#[test]
fn request_framing_follows_what_is_known_of_the_body() {
    use RequestFraming::{Chunked, Empty, Length};
    // (ended, exact, declared) -> framing
    let table = [
        ((true, None, false), Empty),
        ((true, Some(0), false), Empty),
        ((true, None, true), Length(0)),
        ((true, Some(0), true), Length(0)),
        ((false, Some(5), true), Length(5)),
        ((false, Some(5), false), Length(5)),
        ((false, Some(0), false), Length(0)),
        ((false, None, false), Chunked),
        ((false, None, true), Chunked),
    ];
    for ((ended, exact, declared), want) in table {
        assert_eq!(
            RequestFraming::of(ended, exact, declared),
            want,
            "ended={ended} exact={exact:?} declared={declared}"
        );
    }
}

// --- encode_chunk_size ---

#[test]
fn chunk_sizes_are_lowercase_hex_lines() {
    let cases: [(usize, &str); 7] = [
        (1, "1\r\n"),
        (15, "f\r\n"),
        (16, "10\r\n"),
        (255, "ff\r\n"),
        (256, "100\r\n"),
        (4096, "1000\r\n"),
        (0xdead_beef, "deadbeef\r\n"),
    ];
    for (len, want) in cases {
        let mut dst = BytesMut::new();
        encode_chunk_size(&mut dst, len);
        assert_eq!(&dst[..], want.as_bytes(), "{len}");
    }
    let mut dst = BytesMut::new();
    encode_chunk_size(&mut dst, usize::MAX);
    let want = if usize::BITS == 64 {
        "ffffffffffffffff\r\n"
    } else {
        "ffffffff\r\n"
    };
    assert_eq!(&dst[..], want.as_bytes());
    let mut dst = BytesMut::new();
    encode_chunk_size(&mut dst, usize::MAX / 2 + 1);
    assert_eq!(
        &dst[..],
        format!("8{}\r\n", "0".repeat(usize::BITS as usize / 4 - 1)).as_bytes()
    );
}

// --- parse_response_head ---

const SIMPLE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n";

#[test]
fn a_partial_head_gives_none_and_leaves_the_buffer_untouched() {
    for end in 0..SIMPLE.len() {
        let (parsed, rest) = parse_for(&Method::GET, &SIMPLE[..end]);
        assert!(matches!(parsed, Ok(None)), "{end}: {parsed:?}");
        assert_eq!(&rest[..], &SIMPLE[..end], "{end}");
    }
}

#[test]
fn a_complete_head_takes_exactly_its_own_bytes() {
    let bytes = [SIMPLE, b"helloHTTP/1.1 200 OK\r\n"].concat();
    let (parsed, rest) = parse_for(&Method::GET, &bytes);
    let head = parsed.unwrap().unwrap();
    assert_eq!(&rest[..], b"helloHTTP/1.1 200 OK\r\n");
    assert_eq!(head.parts.status, StatusCode::OK);
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.framing, ResponseFraming::Length(5));
    assert!(head.reusable);
    assert_eq!(head.parts.headers.len(), 2);
    assert_eq!(head.parts.headers["content-length"], "5");
    assert_eq!(head.parts.headers["x-a"], "b");
    assert!(
        head.parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .is_none()
    );
}

#[test]
fn repeated_fields_keep_their_order_and_values() {
    let head = head_of(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\nset-cookie: b=2\r\n\
          X-Empty:\r\n\r\n",
    );
    let cookies: Vec<_> = head.parts.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(head.parts.headers["x-empty"], "");
    assert_eq!(head.framing, ResponseFraming::Length(0));
}

#[test]
fn interim_responses_are_skipped() {
    let bytes = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (parsed, rest) = parse_for(&Method::POST, bytes);
    let head = parsed.unwrap().unwrap();
    assert_eq!(head.parts.status, StatusCode::OK);
    assert!(head.parts.headers.get("link").is_none());
    assert_eq!(head.framing, ResponseFraming::Length(2));
    assert_eq!(&rest[..], b"ok");
}

#[test]
fn an_interim_response_alone_waits_for_the_real_one() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
    assert!(matches!(
        parse_response_head(&mut buf, &Method::POST, false),
        Ok(None)
    ));
    buf.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    let head = parse_response_head(&mut buf, &Method::POST, false)
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.status, StatusCode::NO_CONTENT);
    assert!(buf.is_empty());
}

#[test]
fn switching_protocols_is_refused_unless_asked_for() {
    let upgrade =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert_eq!(error_of(upgrade), H1Error::Upgrade);
    // Also after an interim response.
    let after = [&b"HTTP/1.1 100 Continue\r\n\r\n"[..], upgrade].concat();
    assert_eq!(error_of(&after), H1Error::Upgrade);
}

#[test]
fn an_asked_for_switch_is_handed_over_with_the_bytes_after_it() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
           Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"[..],
    );
    let head = parse_response_head(&mut buf, &Method::GET, true)
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(head.framing, ResponseFraming::Switched);
    assert!(!head.reusable);
    assert_eq!(head.parts.headers["upgrade"], "websocket");
    assert_eq!(
        head.parts.headers["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert!(head.parts.headers.get("connection").is_none());
    // The new protocol's first bytes stay in the buffer for whoever takes the connection.
    assert_eq!(&buf[..], b"\x81\x02hi");
}

#[test]
fn a_switch_without_upgrade_or_connection_upgrade_is_refused() {
    for bytes in [
        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"[..],
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            parse_response_head(&mut buf, &Method::GET, true).unwrap_err(),
            H1Error::Upgrade,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Regression: `Content-Length: 30, 30` was relayed as the list.
#[test]
fn a_repeated_content_length_goes_on_as_one_value() {
    for bytes in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3,3 , 3\r\n\r\nabc",
    ] {
        let head = head_of(bytes);
        assert_eq!(head.framing, ResponseFraming::Length(3));
        let values: Vec<_> = head
            .parts
            .headers
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(values, ["3"], "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn no_content_not_modified_and_head_answers_have_no_body() {
    for (method, bytes) in [
        (
            Method::GET,
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
        ),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        ),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        ),
        (
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (Method::HEAD, b"HTTP/1.1 404 Not Found\r\n\r\n"),
    ] {
        let with_next = [bytes, b"HTTP/1.1 200 OK\r\n"].concat();
        let (parsed, rest) = parse_for(&method, &with_next);
        let head = parsed.unwrap().unwrap();
        assert_eq!(head.framing, ResponseFraming::Empty, "{method} {bytes:?}");
        assert!(head.reusable, "{method} {bytes:?}");
        assert_eq!(&rest[..], b"HTTP/1.1 200 OK\r\n");
    }
    // The same 200 to a GET does have its body.
    let head = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(head.framing, ResponseFraming::Length(5));
}

#[test]
fn content_length_lists_must_agree() {
    for (field, want) in [
        ("5", 5),
        ("5, 5", 5),
        ("5,5,5", 5),
        ("0", 0),
        ("007", 7),
        ("9999999999999999999", 9_999_999_999_999_999_999),
    ] {
        let head =
            head_of(format!("HTTP/1.1 200 OK\r\nContent-Length: {field}\r\n\r\n").as_bytes());
        assert_eq!(head.framing, ResponseFraming::Length(want), "{field:?}");
        assert!(head.reusable, "{field:?}");
    }
    let same_twice = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(same_twice.framing, ResponseFraming::Length(5));
}

#[test]
fn invalid_or_conflicting_content_lengths_are_refused() {
    for field in [
        "5, 6",
        "+5",
        "-1",
        "",
        "5,",
        ",5",
        "0x5",
        "5 5",
        "1e3",
        "five",
        // Over 19 digits (beyond what this parser accepts).
        "18446744073709551616",
        "00000000000000000000",
    ] {
        let bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {field}\r\n\r\nhello");
        assert_eq!(
            error_of(bytes.as_bytes()),
            H1Error::ContentLength,
            "{field:?}"
        );
    }
    for fields in [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5\r\nX-Between: 1\r\ncontent-length: 5, 6",
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\nContent-Length: 5",
    ] {
        let bytes = format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
        assert_eq!(
            error_of(bytes.as_bytes()),
            H1Error::ContentLength,
            "{fields:?}"
        );
    }
}

#[test]
fn transfer_encoding_decides_chunked_or_close() {
    for (field, framing, reusable) in [
        ("chunked", ResponseFraming::Chunked, true),
        ("Chunked", ResponseFraming::Chunked, true),
        ("gzip, chunked", ResponseFraming::Chunked, true),
        ("gzip", ResponseFraming::Close, false),
        ("chunked, gzip", ResponseFraming::Close, false),
    ] {
        let head =
            head_of(format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {field}\r\n\r\n").as_bytes());
        assert_eq!(head.framing, framing, "{field:?}");
        assert_eq!(head.reusable, reusable, "{field:?}");
    }
    // Only the last field counts.
    let two = head_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(two.framing, ResponseFraming::Close);
    let two = head_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(two.framing, ResponseFraming::Chunked);
}

#[test]
fn transfer_encoding_with_content_length_is_chunked_but_not_reusable() {
    for fields in [
        "Content-Length: 3\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 3",
    ] {
        let head = head_of(format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\n").as_bytes());
        assert_eq!(head.framing, ResponseFraming::Chunked, "{fields:?}");
        assert!(!head.reusable, "{fields:?}");
        // Neither is passed on: the length does not describe the body that follows.
        assert!(
            head.parts.headers.get("content-length").is_none(),
            "{fields:?}"
        );
        assert!(
            head.parts.headers.get("transfer-encoding").is_none(),
            "{fields:?}"
        );
    }
}

#[test]
fn hop_by_hop_fields_are_read_then_left_out_of_the_head() {
    let head = head_of(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
          X-Private: 1\r\nTrailer: x-sum\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n\
          Proxy-Authenticate: Basic\r\nTE: trailers\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\n\
          Set-Cookie: a=1\r\n\r\n",
    );
    let mut names: Vec<_> = head.parts.headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["set-cookie", "x-kept"]);
    assert_eq!(head.framing, ResponseFraming::Chunked);
    assert!(head.reusable);

    // Fields a `Connection` names are still read for the framing.
    let head =
        head_of(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(head.framing, ResponseFraming::Length(2));
    assert!(head.parts.headers.is_empty());

    let closing = head_of(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n");
    assert!(!closing.reusable);
    assert!(closing.parts.headers.get("connection").is_none());
    assert_eq!(closing.parts.headers["content-length"], "2");
}

#[test]
fn a_response_with_no_length_runs_to_the_close() {
    let head = head_of(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    assert_eq!(head.framing, ResponseFraming::Close);
    assert!(!head.reusable);
}

#[test]
fn http_1_0_answers_are_reused_only_with_keep_alive() {
    let plain = head_of(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(plain.framing, ResponseFraming::Length(2));
    assert!(!plain.reusable);
    assert_eq!(plain.parts.version, Version::HTTP_11);

    let kept = head_of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(kept.framing, ResponseFraming::Length(2));
    assert!(kept.reusable);
    let kept = head_of(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n");
    assert!(kept.reusable);

    // Keep-alive without a length is still close-delimited.
    let no_length = head_of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(no_length.framing, ResponseFraming::Close);
    assert!(!no_length.reusable);

    let closing =
        head_of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n");
    assert!(!closing.reusable);
}

#[test]
fn transfer_encoding_in_an_http_1_0_answer_is_refused() {
    assert_eq!(
        error_of(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        H1Error::TransferEncoding
    );
    assert_eq!(
        error_of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        H1Error::TransferEncoding
    );
}

#[test]
fn connection_close_makes_the_connection_not_reusable() {
    for fields in [
        "Connection: close",
        "Connection: Close",
        "Connection: keep-alive, close",
        "Connection: close\r\nConnection: keep-alive",
        "Connection: keep-alive\r\nConnection: close",
    ] {
        let head =
            head_of(format!("HTTP/1.1 200 OK\r\n{fields}\r\nContent-Length: 2\r\n\r\n").as_bytes());
        assert_eq!(head.framing, ResponseFraming::Length(2), "{fields:?}");
        assert!(!head.reusable, "{fields:?}");
    }
    let kept = head_of(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n");
    assert!(kept.reusable);
    let other =
        head_of(b"HTTP/1.1 200 OK\r\nConnection: closed, x-close\r\nContent-Length: 2\r\n\r\n");
    assert!(other.reusable, "only the `close` token counts");
}

fn head_with_fields(count: usize) -> Vec<u8> {
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..count {
        bytes.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}

#[test]
fn more_than_the_header_limit_is_too_large() {
    let at_limit = head_of(&head_with_fields(MAX_RESPONSE_HEADERS));
    assert_eq!(at_limit.parts.headers.len(), MAX_RESPONSE_HEADERS);
    assert_eq!(
        error_of(&head_with_fields(MAX_RESPONSE_HEADERS + 1)),
        H1Error::HeadTooLarge
    );
}

#[test]
fn a_head_over_64_kib_is_too_large() {
    let head_of_size = |size: usize| {
        let mut bytes = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        let fill = size - bytes.len() - 4;
        bytes.resize(bytes.len() + fill, b'a');
        bytes.extend_from_slice(b"\r\n\r\n");
        assert_eq!(bytes.len(), size);
        bytes
    };
    let fits = head_of(&head_of_size(MAX_RESPONSE_HEAD));
    assert_eq!(fits.parts.headers["x-big"].len(), MAX_RESPONSE_HEAD - 28);
    assert_eq!(
        error_of(&head_of_size(MAX_RESPONSE_HEAD + 1)),
        H1Error::HeadTooLarge
    );
    // Still incomplete past the limit: no point waiting for more.
    let endless = head_of_size(MAX_RESPONSE_HEAD + 100);
    assert_eq!(
        error_of(&endless[..MAX_RESPONSE_HEAD + 10]),
        H1Error::HeadTooLarge
    );
    // Incomplete below the limit: wait.
    assert!(matches!(
        parse_for(&Method::GET, &endless[..MAX_RESPONSE_HEAD - 10]).0,
        Ok(None)
    ));
}

#[test]
fn an_unusual_reason_phrase_is_kept_and_the_canonical_one_is_not() {
    let head = head_of(b"HTTP/1.1 200 Fine By Me\r\nContent-Length: 0\r\n\r\n");
    let reason = head
        .parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .unwrap();
    assert_eq!(reason.as_bytes(), b"Fine By Me");

    let head = head_of(b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.parts.status, StatusCode::NOT_FOUND);
    assert_eq!(
        head.parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap()
            .as_bytes(),
        b"Nope"
    );

    for canonical in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
    ] {
        let head = head_of(canonical);
        assert!(
            head.parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .is_none(),
            "{:?}",
            String::from_utf8_lossy(canonical)
        );
    }
}

#[test]
fn garbage_is_a_malformed_head() {
    for bytes in [
        &b"not http at all\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: no name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert_eq!(
            error_of(bytes),
            H1Error::Head,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

// --- ChunkedDecoder ---

#[test]
fn a_chunked_body_with_extensions_and_trailers_decodes() {
    let bytes = b"5;name=value\r\nhello\r\n\
        7 ; quoted=\"a b\"\r\n, world\r\n\
        A\r\n0123456789\r\n\
        0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n\
        HTTP/1.1 200 OK\r\n";
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::from(&bytes[..]);
    let out = drain(&mut decoder, &mut buf).unwrap();
    let trailers = map(&[("x-checksum", "abc"), ("x-other", "1")]);
    assert_eq!(
        out,
        [
            data(b"hello"),
            data(b", world"),
            data(b"0123456789"),
            Decoded::Trailers(trailers),
            Decoded::End,
        ]
    );
    assert!(decoder.is_ended());
    // What follows the body stays where it is, however often the decoder is asked.
    assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Decoded::End)));
    assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
}

#[test]
fn a_chunked_body_without_trailers_ends_without_a_trailers_item() {
    let (out, rest) = decode_all(b"3\r\nabc\r\n0\r\n\r\nnext");
    assert_eq!(out.unwrap(), [data(b"abc"), Decoded::End]);
    assert_eq!(&rest[..], b"next");
    let (out, rest) = decode_all(b"0\r\n\r\n");
    assert_eq!(out.unwrap(), [Decoded::End]);
    assert!(rest.is_empty());
    let (out, _) = decode_all(b"000\r\n\r\n");
    assert_eq!(out.unwrap(), [Decoded::End]);
}

#[test]
fn a_chunk_split_across_reads_comes_out_as_it_arrives() {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::from(&b"6\r\nab"[..]);
    assert_eq!(drain(&mut decoder, &mut buf).unwrap(), [data(b"ab")]);
    assert!(buf.is_empty());
    buf.extend_from_slice(b"cdef\r");
    assert_eq!(drain(&mut decoder, &mut buf).unwrap(), [data(b"cdef")]);
    assert_eq!(&buf[..], b"\r", "a half delimiter waits");
    buf.extend_from_slice(b"\n0\r\n\r");
    assert_eq!(drain(&mut decoder, &mut buf).unwrap(), []);
    assert!(!decoder.is_ended());
    buf.extend_from_slice(b"\n");
    assert_eq!(drain(&mut decoder, &mut buf).unwrap(), [Decoded::End]);
    assert!(decoder.is_ended());
    assert!(buf.is_empty());
}

#[test]
fn chunk_data_must_be_followed_by_crlf() {
    for bytes in [
        &b"3\r\nabcX\r\n0\r\n\r\n"[..],
        b"3\r\nabc\n0\r\n\r\n",
        b"3\r\nabc\r0\r\n\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",
    ] {
        let (out, _) = decode_all(bytes);
        assert_eq!(
            out,
            Err(H1Error::Chunked),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn malformed_size_lines_are_refused() {
    for bytes in [
        &b"\r\n"[..],
        b"\r\nabc\r\n0\r\n\r\n",
        b";ext\r\n",
        b" 3\r\nabc\r\n",
        b"g\r\n",
        b"3x\r\nabc\r\n",
        b"-1\r\n",
        b"+1\r\nx\r\n",
        b"0x3\r\nabc\r\n",
        // More than 64 bits.
        b"10000000000000000\r\n",
        b"3\r\nabc\r\n\r\n",
    ] {
        let (out, _) = decode_all(bytes);
        assert_eq!(
            out.err(),
            Some(H1Error::Chunked),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn a_size_line_over_the_extension_limit_is_refused_while_it_arrives() {
    let mut line = b"1;".to_vec();
    line.resize(MAX_SIZE_LINE + 100, b'x');
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut result = Ok(None);
    for piece in line.chunks(1000) {
        buf.extend_from_slice(piece);
        result = decoder.decode(&mut buf);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(H1Error::Chunked));
    // A long size line that is still under the limit is waited for.
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::from(&line[..MAX_EXTENSIONS]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
}

#[test]
fn a_size_line_over_the_extension_limit_is_refused_even_when_it_arrives_whole() {
    let mut bytes = b"1;".to_vec();
    bytes.resize(MAX_SIZE_LINE + 1, b'x');
    bytes.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
    let (out, _) = decode_all(&bytes);
    assert_eq!(out, Err(H1Error::Chunked));
}

/// Regression: a valid 2 KiB chunk extension was refused by a 1 KiB size-line limit,
/// losing a response hyper's own client accepts.
#[test]
fn a_two_kib_chunk_extension_is_accepted_as_hyper_accepts_it() {
    let mut bytes = b"3;ext=".to_vec();
    bytes.resize(2048, b'e');
    bytes.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
    let (out, rest) = decode_all(&bytes);
    assert_eq!(
        out.unwrap(),
        vec![Decoded::Data(Bytes::from_static(b"abc")), Decoded::End]
    );
    assert!(rest.is_empty());
}

#[test]
fn extensions_are_limited_over_the_whole_body_like_hyper() {
    // 20 chunks with 1 KiB of extensions each: 20 KiB in all, over hyper's 16 KiB.
    let mut bytes = Vec::new();
    for _ in 0..20 {
        bytes.extend_from_slice(b"1;e=");
        bytes.resize(bytes.len() + 1020, b'x');
        bytes.extend_from_slice(b"\r\nz\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let (out, _) = decode_all(&bytes);
    assert_eq!(out, Err(H1Error::Chunked));
    // 15 of them (15 KiB) fit.
    let cut = bytes.len() / 20 * 15;
    let mut fits = bytes[..cut].to_vec();
    fits.extend_from_slice(b"0\r\n\r\n");
    let (out, _) = decode_all(&fits);
    assert_eq!(out.unwrap().last(), Some(&Decoded::End));
}

/// Regression: a valid trailer section of 40 fields was lost to a fixed array of 32.
#[test]
fn forty_trailer_fields_are_kept() {
    let mut bytes = b"0\r\n".to_vec();
    for i in 0..40 {
        bytes.extend_from_slice(format!("x-t{i}: {i}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    let (out, rest) = decode_all(&bytes);
    let out = out.unwrap();
    assert!(matches!(&out[0], Decoded::Trailers(t) if t.len() == 40 && t["x-t39"] == "39"));
    assert!(rest.is_empty());
    // Past hyper's 100 fields the section is refused, not silently cut.
    let mut many = b"0\r\n".to_vec();
    for i in 0..=MAX_RESPONSE_HEADERS {
        many.extend_from_slice(format!("x-t{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(decode_all(&many).0, Err(H1Error::Trailers));
}

#[test]
fn trailers_over_16_kib_are_refused() {
    let mut bytes = b"0\r\nX-Big: ".to_vec();
    bytes.resize(17 * 1024, b'a');
    // Not finished yet, but already over the limit.
    let (out, _) = decode_all(&bytes);
    assert_eq!(out, Err(H1Error::Trailers));
    // Finished, and over the limit.
    bytes.extend_from_slice(b"\r\n\r\n");
    let (out, _) = decode_all(&bytes);
    assert_eq!(out, Err(H1Error::Trailers));
    // Under the limit, fine.
    let mut fits = b"0\r\nX-Big: ".to_vec();
    fits.resize(15 * 1024, b'a');
    fits.extend_from_slice(b"\r\n\r\n");
    let (out, rest) = decode_all(&fits);
    let out = out.unwrap();
    assert!(matches!(&out[0], Decoded::Trailers(t) if t["x-big"].len() == 15 * 1024 - 10));
    assert_eq!(out[1], Decoded::End);
    assert!(rest.is_empty());
}

#[test]
fn malformed_trailers_are_refused() {
    for bytes in [
        &b"0\r\nnot a field\r\n\r\n"[..],
        b"0\r\n: empty name\r\n\r\n",
        b"0\r\nX-A b\r\n\r\n",
    ] {
        let (out, _) = decode_all(bytes);
        assert_eq!(
            out,
            Err(H1Error::Trailers),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Encodes `data` cut at `cuts` as a chunked body, the way the exchange sends one.
fn chunked(data: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut at = 0;
    for cut in cuts.iter().copied().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + cut).min(data.len());
        encode_chunk_size(&mut out, end - at);
        out.extend_from_slice(&data[at..end]);
        out.extend_from_slice(b"\r\n");
        at = end;
    }
    out.extend_from_slice(LAST_CHUNK);
    out.to_vec()
}

proptest! {
    #[test]
    fn chunked_bodies_decode_to_their_data_however_they_are_split(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(1usize..700, 1..12),
        pieces in proptest::collection::vec(1usize..300, 1..12),
        next in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let stream = chunked(&data, &cuts);
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut ends = 0;
        let mut fed = 0;
        let mut ended_at = None;
        for piece in pieces.iter().copied().cycle() {
            if fed >= stream.len() {
                break;
            }
            let end = (fed + piece).min(stream.len());
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            if ends > 0 {
                continue;
            }
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                match item {
                    Decoded::Data(bytes) => {
                        prop_assert!(!bytes.is_empty());
                        got.extend_from_slice(&bytes);
                    }
                    Decoded::Trailers(t) => prop_assert!(false, "no trailers were sent: {:?}", t),
                    Decoded::End => {
                        ends += 1;
                        ended_at = Some(fed);
                        break;
                    }
                }
            }
        }
        prop_assert_eq!(ends, 1);
        prop_assert_eq!(ended_at, Some(stream.len()), "End only once every byte is in");
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, data);
        prop_assert!(decoder.is_ended());
        // The next message's bytes are not the body's.
        buf.extend_from_slice(&next);
        prop_assert_eq!(decoder.decode(&mut buf), Ok(Some(Decoded::End)));
        prop_assert_eq!(&buf[..], &next[..]);
    }

    #[test]
    fn chunk_size_lines_read_back_as_their_size(len in 1usize..=usize::MAX) {
        let mut dst = BytesMut::new();
        encode_chunk_size(&mut dst, len);
        let want = format!("{len:x}\r\n");
        prop_assert_eq!(&dst[..], want.as_bytes());
        prop_assert_eq!(
            httparse::parse_chunk_size(&dst),
            Ok(httparse::Status::Complete((dst.len(), len as u64)))
        );
    }

    #[test]
    fn content_length_writes_and_reads_back(len in any::<u64>()) {
        let head = encode(&Method::POST, "/", &HeaderMap::new(), RequestFraming::Length(len));
        prop_assert_eq!(lines_named(&head, "content-length"), [format!("content-length: {len}")]);
    }

    #[test]
    fn response_heads_parse_the_same_however_they_arrive(
        pieces in proptest::collection::vec(1usize..40, 1..10),
        interims in 0usize..3,
    ) {
        let mut stream = Vec::new();
        for _ in 0..interims {
            stream.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        }
        stream.extend_from_slice(b"HTTP/1.1 201 Made\r\nContent-Length: 4\r\nX-A: b\r\n\r\nbody");
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut found = None;
        for piece in pieces.iter().copied().cycle() {
            if fed >= stream.len() || found.is_some() {
                break;
            }
            let end = (fed + piece).min(stream.len());
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            found = parse_response_head(&mut buf, &Method::POST, false).unwrap();
        }
        let head = found.unwrap();
        buf.extend_from_slice(&stream[fed..]);
        prop_assert_eq!(head.parts.status, StatusCode::CREATED);
        prop_assert_eq!(head.framing, ResponseFraming::Length(4));
        prop_assert!(head.reusable);
        prop_assert!(head.parts.headers.get("link").is_none());
        prop_assert_eq!(&head.parts.headers["x-a"], "b");
        prop_assert_eq!(
            head.parts.extensions.get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes().to_vec()),
            Some(b"Made".to_vec())
        );
        prop_assert_eq!(&buf[..], b"body");
    }

    #[test]
    fn no_response_bytes_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        head in prop_oneof![Just(&b""[..]), Just(&b"HTTP/1.1 200 OK\r\n"[..])],
    ) {
        let mut buf = BytesMut::from(&[head, &bytes[..]].concat()[..]);
        let before = buf.clone();
        if let Ok(None) = parse_response_head(&mut buf, &Method::GET, false) {
            // A partial head is left alone (interim responses aside).
            prop_assert!(buf.len() <= before.len());
        }
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = drain(&mut decoder, &mut buf);
    }
}
