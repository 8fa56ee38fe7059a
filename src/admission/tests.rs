//! The refusal order as a table: each case fails two checks at once and must get the earlier
//! one's answer. No socket, no runtime.

use super::*;

const CONFIG: &str = r#"
[server]
trusted_proxies = ["10.0.0.0/8"]

[rate_limit]
per_second = 1
burst = 1

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:9/base"
cookie = "sid"
auth = "required"
methods = ["GET", "POST"]
max_body = "1KiB"

[[routes]]
prefix = "/open"
upstream = "http://127.0.0.1:9"
auth = "none"
"#;

/// One request, described the way a table row reads.
#[derive(Clone)]
struct Req {
    method: Method,
    target: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body_length: Option<u64>,
    raw_both: bool,
    peer: &'static str,
    /// Spend the client's one-request bucket first.
    spent: bool,
}

fn req(method: &str, target: &'static str) -> Req {
    Req {
        method: method.parse().unwrap(),
        target,
        headers: vec![("host", "app.example")],
        body_length: None,
        raw_both: false,
        peer: "192.0.2.1",
        spent: false,
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn cookie(self) -> Self {
        self.header("cookie", "sid=tok")
    }
    fn body(mut self, len: u64) -> Self {
        self.body_length = Some(len);
        self
    }
    fn raw_both(mut self) -> Self {
        self.raw_both = true;
        self
    }
    fn spent(mut self) -> Self {
        self.spent = true;
        self
    }
    fn peer(mut self, peer: &'static str) -> Self {
        self.peer = peer;
        self
    }
}

fn run(config: &Config, guards: &Guards, r: &Req) -> Result<String, ProxyError> {
    let uri: Uri = r.target.parse().unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in &r.headers {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
    }
    let facts = Facts {
        method: &r.method,
        uri: &uri,
        headers: &headers,
        body_length: r.body_length,
        raw_both_framings: r.raw_both,
        peer: r.peer.parse().unwrap(),
        proto: Proto::Http,
        now: 1_000,
    };
    if r.spent {
        let spend = Facts {
            method: &Method::GET,
            uri: &"/open/x".parse().unwrap(),
            headers: &HeaderMap::new(),
            ..facts
        };
        let _ = admit(config, guards, &spend);
    }
    admit(config, guards, &facts).map(|admitted| match admitted {
        Admitted::Health => "health".to_string(),
        Admitted::Ready => "ready".to_string(),
        Admitted::Auth(auth) => format!("auth {:?}", auth.endpoint),
        Admitted::Forward(f) => format!(
            "{} {} bearer={} client={}",
            f.route.prefix.as_str(),
            f.uri,
            f.bearer.is_some(),
            f.client.ip
        ),
    })
}

/// The status and public message of a refusal, or the admitted summary.
fn outcome(config: &Config, r: &Req) -> String {
    let guards = Guards::new(config);
    match run(config, &guards, r) {
        Ok(summary) => summary,
        Err(err) => format!("{} {}", err.status().as_u16(), err),
    }
}

#[test]
fn the_refusal_order_holds_when_two_checks_fail_at_once() {
    let config = Config::from_toml_str(CONFIG).unwrap();
    let cases: Vec<(&str, Req, &str)> = vec![
        (
            "readiness before the method list and the routes",
            req("GET", "/readyz").header("origin", "https://evil.example"),
            "ready",
        ),
        (
            "health before the method list",
            req("GET", "/healthz").header("origin", "https://evil.example"),
            "health",
        ),
        (
            "CONNECT/TRACE before routing",
            req("TRACE", "/nowhere"),
            "405 method not allowed",
        ),
        (
            "origin-form before routing",
            req("OPTIONS", "*"),
            "400 malformed request",
        ),
        (
            "route before methods",
            req("DELETE", "/nowhere"),
            "404 no route for this path",
        ),
        (
            "methods before path mapping",
            req("DELETE", "/api/%2e%2e/admin"),
            "405 method not allowed",
        ),
        (
            "path mapping before framing",
            req("POST", "/api/%2e%2e/admin").header("transfer-encoding", "gzip, chunked"),
            "400 request path refused",
        ),
        (
            "framing (raw bytes) before CSRF",
            req("POST", "/api/x")
                .header("origin", "https://evil.example")
                .raw_both(),
            "400 malformed request",
        ),
        (
            "transfer coding before CSRF",
            req("POST", "/api/x")
                .header("origin", "https://evil.example")
                .header("transfer-encoding", "gzip, chunked"),
            "501 transfer coding not supported",
        ),
        (
            "CSRF before the rate limit",
            req("POST", "/api/x")
                .header("sec-fetch-site", "cross-site")
                .spent(),
            "403 cross-site request refused",
        ),
        (
            "rate limit before the declared size",
            req("POST", "/api/x").cookie().body(4096).spent(),
            "429 too many requests",
        ),
        (
            "declared size before the session",
            req("POST", "/api/x").body(4096),
            "413 request body too large",
        ),
        (
            "ambiguous session",
            req("GET", "/api/x").header("cookie", "sid=a; sid=b"),
            "400 ambiguous session cookie",
        ),
        (
            "missing session",
            req("GET", "/api/x"),
            "401 not authenticated",
        ),
        (
            "unusable session",
            req("GET", "/api/x").header("cookie", "sid=a\\b"),
            "401 unusable session cookie",
        ),
        (
            "admitted, with the bearer and the mapped path",
            req("GET", "/api/v1/items?a=1").cookie(),
            "/api http://127.0.0.1:9/base/v1/items?a=1 bearer=true client=192.0.2.1",
        ),
        (
            "no session needed on auth = none, cross-site or not",
            req("POST", "/open/x").header("sec-fetch-site", "cross-site"),
            "/open http://127.0.0.1:9/x bearer=false client=192.0.2.1",
        ),
    ];
    for (why, r, expected) in cases {
        assert_eq!(outcome(&config, &r), expected, "{why}");
    }
}

#[test]
fn a_trusted_proxy_decides_the_client_for_csrf_and_the_rate_limit() {
    let config = Config::from_toml_str(CONFIG).unwrap();
    // Behind a trusted proxy that rewrote Host, the browser's host comes from
    // X-Forwarded-Host: a same-origin POST passes CSRF.
    let behind = req("POST", "/api/x")
        .peer("10.1.2.3")
        .header("host", "internal:8080")
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-for", "198.51.100.7")
        .header("origin", "https://app.example.com")
        .cookie();
    assert_eq!(
        outcome(&config, &behind),
        "/api http://127.0.0.1:9/base/x bearer=true client=198.51.100.7"
    );
    // The same headers from an untrusted peer are not believed.
    let direct = Req {
        peer: "203.0.113.5",
        ..behind.clone()
    };
    assert_eq!(outcome(&config, &direct), "403 cross-site request refused");
    // The rate limit counts the forwarded client, not the proxy: two clients behind the same
    // proxy each get their own bucket.
    let guards = Guards::new(&config);
    let from = |ip: &'static str| {
        req("GET", "/open/x")
            .peer("10.1.2.3")
            .header("x-forwarded-for", ip)
    };
    assert!(run(&config, &guards, &from("198.51.100.1")).is_ok());
    assert!(run(&config, &guards, &from("198.51.100.2")).is_ok());
    assert!(matches!(
        run(&config, &guards, &from("198.51.100.1")),
        Err(ProxyError::RateLimited(_))
    ));
}
