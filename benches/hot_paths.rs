//! Micro-benchmarks for the pure functions every proxied request goes through, so a regression
//! shows here before it shows in the whole-process benchmark (`bench/run.sh`).
//!
//! `cargo bench --bench hot_paths` (add `-- --quick` for a short run, or a name filter such as
//! `headers`). Inputs are what a browser sends through the seed's generic proxy route.

#![expect(
    clippy::expect_used,
    reason = "benchmark setup: fixed inputs known to be valid"
)]

use std::hint::black_box;

use bytes::BytesMut;
use cookiegate::Config;
use cookiegate::auth::extract_session;
use cookiegate::proxy::headers::{UpstreamHeaders, ip_header_value, to_client, upstream_fields};
use cookiegate::routing::map_path;
use cookiegate::upstream::h1::{RequestFraming, encode_request_head, parse_response_head};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Five routes, as a real deployment might have them; the request matches the second longest.
const CONFIG: &str = r#"
listen = "127.0.0.1:4000"

[[routes]]
prefix = "/api/proxy"
upstream = "http://127.0.0.1:8000"

[[routes]]
prefix = "/api/chatkit"
upstream = "http://127.0.0.1:8000/chatkit"
cookie = "taskflow_id_token"
methods = ["POST"]

[[routes]]
prefix = "/api/proxy/v2/admin"
upstream = "http://127.0.0.1:8001/admin"

[[routes]]
prefix = "/static"
upstream = "http://127.0.0.1:3000/static"
auth = "none"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:3000"
auth = "none"
"#;

const PATH: &str = "/api/proxy/api/tasks/42/comments";
const QUERY: &str = "tag=a&tag=b&sort=-created&page=2";

fn config() -> Config {
    Config::from_toml_str(CONFIG).expect("the benchmark config is valid")
}

/// The request head of a browser `fetch` with credentials, as hyper hands it over.
fn browser_request() -> HeaderMap {
    let fields = [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
        ),
        ("accept", "application/json"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://app.example.com/tasks"),
        ("content-type", "application/json"),
        ("origin", "https://app.example.com"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-origin"),
        ("x-request-id", "4f1c2a9e-0d6b-4c1e-9a57-3f1f0b6c2d11"),
        (
            "cookie",
            "theme=dark; _ga=GA1.1.123456789.1700000000; auth_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl; locale=en",
        ),
    ];
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// An upstream's answer head (uvicorn-like), as the client side of hyper hands it over.
fn upstream_response() -> HeaderMap {
    let fields = [
        ("date", "Sat, 28 Nov 2026 14:00:00 GMT"),
        ("server", "uvicorn"),
        ("content-type", "application/json"),
        ("content-length", "1234"),
        ("etag", "\"5d41402abc4b2a76\""),
        ("cache-control", "private, max-age=0"),
        ("set-cookie", "csrftoken=abc; Path=/; SameSite=Lax"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
    ];
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn routing(c: &mut Criterion) {
    let config = config();
    let routes = &config.routes;
    c.bench_function("routing/find", |b| b.iter(|| routes.find(black_box(PATH))));
    let (route, rest) = routes.find(PATH).expect("the path has a route");
    c.bench_function("routing/map_path", |b| {
        b.iter(|| map_path(black_box("/v1"), black_box(rest), black_box(Some(QUERY))))
    });
    c.bench_function("routing/upstream_uri", |b| {
        b.iter(|| route.upstream.uri(black_box(rest), black_box(Some(QUERY))))
    });
}

/// The policy of a token-carrying route for a browser request.
fn policy<'a>(
    bearer: &HeaderValue,
    client_ip: &'a HeaderValue,
    host: &'a HeaderValue,
) -> UpstreamHeaders<'a> {
    UpstreamHeaders {
        bearer: Some(bearer.clone()),
        keep_client_authorization: false,
        forward_cookies: false,
        client_ip,
        host: Some(host),
        proto: "http",
        websocket: false,
    }
}

fn headers(c: &mut Criterion) {
    let request = browser_request();
    let response = upstream_response();
    let client_ip = ip_header_value("203.0.113.7".parse().expect("a valid IP"));
    let host = HeaderValue::from_static("app.example.com");
    let bearer = HeaderValue::from_static("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln");
    // Each iteration clones the head it works on (hyper hands over a fresh one per request);
    // `headers/clone_*` measure that share alone.
    c.bench_function("headers/clone_request", |b| {
        b.iter(|| black_box(&request).clone())
    });
    // The policy as it ships: decided, then written into the upstream head.
    let upstream_host = HeaderValue::from_static("127.0.0.1:8000");
    c.bench_function("headers/upstream_head", |b| {
        let mut head = BytesMut::with_capacity(1024);
        b.iter(|| {
            let mut headers = black_box(&request).clone();
            let fields = upstream_fields(&mut headers, policy(&bearer, &client_ip, &host));
            head.clear();
            encode_request_head(
                &mut head,
                &Method::GET,
                "/v1/items",
                &upstream_host,
                fields.iter(&headers),
                RequestFraming::Empty,
            );
            head.len()
        })
    });
    c.bench_function("headers/clone_response", |b| {
        b.iter(|| black_box(&response).clone())
    });
    c.bench_function("headers/to_client", |b| {
        b.iter(|| {
            let mut headers = black_box(&response).clone();
            to_client(&mut headers);
            headers
        })
    });
}

/// The upstream request head as it goes on the wire, and the upstream's answer head as it comes
/// back (the same fields as [`upstream_response`]).
fn wire(c: &mut Criterion) {
    let request = browser_request();
    let client_ip = ip_header_value("203.0.113.7".parse().expect("a valid IP"));
    let host = HeaderValue::from_static("app.example.com");
    let upstream_host = HeaderValue::from_static("127.0.0.1:8000");
    let bearer = HeaderValue::from_static("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln");
    let target = format!("/api/tasks/42/comments?{QUERY}");
    c.bench_function("wire/request_head", |b| {
        b.iter(|| {
            let mut headers = black_box(&request).clone();
            let fields = upstream_fields(&mut headers, policy(&bearer, &client_ip, &host));
            let mut head = BytesMut::new();
            encode_request_head(
                &mut head,
                &Method::GET,
                &target,
                &upstream_host,
                fields.iter(&headers),
                RequestFraming::Empty,
            );
            head
        })
    });
    let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
    for (name, value) in &upstream_response() {
        answer.extend_from_slice(name.as_str().as_bytes());
        answer.extend_from_slice(b": ");
        answer.extend_from_slice(value.as_bytes());
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"\r\n{\"id\":42}");
    c.bench_function("wire/response_head", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(&answer[..]));
            parse_response_head(&mut buf, &Method::GET, false)
        })
    });
}

fn cookies(c: &mut Criterion) {
    let config = config();
    let (route, _) = config.routes.find(PATH).expect("the path has a route");
    let request = browser_request();
    c.bench_function("auth/extract_session", |b| {
        b.iter(|| extract_session(black_box(&request), &route.cookie))
    });
}

criterion_group!(hot_paths, routing, headers, wire, cookies);
criterion_main!(hot_paths);
