//! CSRF through real sockets (the "CSRF" requirements): unsafe methods from another site never reach
//! the upstream with the user's token, whichever route they aim at and whichever HTTP version
//! carries them; requests a browser cannot have been tricked into sending pass. Plus the order
//! of the guards (`guard.rs`, `proxy.rs` module docs), pinned by requests that fail two checks
//! at once.

use http::Method;

use crate::support::*;

const TOKEN: &str = "csrf-session-token";

const UNSAFE: [Method; 4] = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// One route `/api/proxy` -> `upstream` (auth required), after the given top-level tables.
fn config(upstream: &str, tables: &str) -> String {
    format!("{tables}\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n")
}

/// Sends `method` to `url` with the session cookie and `headers` over `client`.
async fn send_with(
    client: &Client,
    method: &Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = request(method.as_str(), url, Some(TOKEN));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(client, req.body(full("{\"a\":1}")).unwrap()).await
}

fn assert_refused(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 403, "{what}");
    answer.assert_error(403, "cross-site request refused");
}

// ---------------------------------------------------------------------------------------------
// mode = "origin" (the default)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cross_site_unsafe_methods_get_403_and_never_reach_the_upstream() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let own_origin = format!("http://{}", gateway.addr);
    for method in &UNSAFE {
        for headers in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "Cross-Site")],
            // Fetch Metadata wins even when Origin looks like our own.
            vec![("sec-fetch-site", "cross-site"), ("origin", &own_origin)],
        ] {
            let answer =
                send_with(&client, method, &gateway.url("/api/proxy/items"), &headers).await;
            assert_refused(&answer, &format!("{method} {headers:?}"));
            assert!(!String::from_utf8_lossy(&answer.body).contains(TOKEN));
        }
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    gateway.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_gets_403() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let other_port = format!("http://127.0.0.1:{}", upstream.addr.port());
    let origins = [
        "http://evil.example",
        "https://evil.example",
        // Same host, another port: another origin.
        other_port.as_str(),
        // Sandboxed frames and some redirects send `null`: it matches nothing.
        "null",
        "not an origin",
    ];
    for method in &UNSAFE {
        for origin in origins {
            let answer = send_with(
                &client,
                method,
                &gateway.url("/api/proxy/items"),
                &[("origin", origin)],
            )
            .await;
            assert_refused(&answer, &format!("{method} Origin: {origin}"));
        }
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    gateway.stop().await;
}

#[tokio::test]
async fn the_request_s_own_origin_passes_whatever_its_scheme() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    let port = gateway.addr.port();
    // The client's Host is `127.0.0.1:PORT` unless set; TLS may end in front of cookiegate, so
    // `https://` is the same origin too.
    let cases: Vec<(Option<String>, String)> = vec![
        (None, format!("http://127.0.0.1:{port}")),
        (None, format!("https://127.0.0.1:{port}")),
        (
            Some(format!("app.localhost:{port}")),
            format!("http://app.localhost:{port}"),
        ),
        (
            Some(format!("APP.localhost:{port}")),
            format!("https://app.LOCALHOST:{port}"),
        ),
        (Some("app.example".into()), "https://app.example".into()),
    ];
    for method in &UNSAFE {
        for (host, origin) in &cases {
            let mut headers = vec![
                ("origin", origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ];
            if let Some(host) = host {
                headers.push(("host", host.as_str()));
            }
            let answer =
                send_with(&client, method, &gateway.url("/api/proxy/items"), &headers).await;
            assert_ok(&answer, &format!("{method} {headers:?}"));
        }
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), UNSAFE.len() * cases.len());
    for s in seen {
        assert_eq!(s.header("authorization"), Some("Bearer csrf-session-token"));
        assert_eq!(s.body, "{\"a\":1}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_origin_matching_another_host_than_the_request_s_is_refused() {
    // The own-origin rule compares with the Host the request carries, not with any name
    // cookiegate might be reached by.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let port = gateway.addr.port();
    let host = format!("app.localhost:{port}");
    let origin = format!("http://127.0.0.1:{port}");
    let answer = send_with(
        &client(),
        &Method::POST,
        &gateway.url("/api/proxy/items"),
        &[("host", &host), ("origin", &origin)],
    )
    .await;
    assert_refused(&answer, "origin of another host");
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn allowed_origins_pass_and_nothing_near_them_does() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "[csrf]\nallowed_origins = [\"https://admin.example.com\", \"http://localhost:5173/\"]",
    ))
    .await;
    let client = client();
    for origin in [
        "https://admin.example.com",
        "https://ADMIN.example.com",
        "http://localhost:5173",
    ] {
        let answer = send_with(
            &client,
            &Method::POST,
            &gateway.url("/api/proxy/items"),
            &[("origin", origin), ("sec-fetch-site", "same-site")],
        )
        .await;
        assert_ok(&answer, origin);
    }
    assert_eq!(upstream.seen().len(), 3);
    for origin in [
        "http://admin.example.com",
        "https://admin.example.com:8443",
        "https://evil.admin.example.com",
        "https://admin.example.com.evil",
        "http://localhost:5174",
    ] {
        let answer = send_with(
            &client,
            &Method::DELETE,
            &gateway.url("/api/proxy/items"),
            &[("origin", origin)],
        )
        .await;
        assert_refused(&answer, origin);
    }
    // An allowed origin does not outweigh `Sec-Fetch-Site: cross-site`.
    let answer = send_with(
        &client,
        &Method::POST,
        &gateway.url("/api/proxy/items"),
        &[
            ("origin", "https://admin.example.com"),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_refused(&answer, "allowed origin, cross-site");
    assert_eq!(upstream.seen().len(), 3);
    gateway.stop().await;
}

#[tokio::test]
async fn requests_without_origin_or_fetch_metadata_pass() {
    // curl and server-to-server clients send neither header and carry no ambient browser
    // cookies an attacker could ride on.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for method in &UNSAFE {
        let answer = send_with(&client, method, &gateway.url("/api/proxy/items"), &[]).await;
        assert_ok(&answer, method.as_str());
        // `same-origin`, `same-site` and `none` (typed in the address bar) are not cross-site.
        for site in ["same-origin", "same-site", "none"] {
            let answer = send_with(
                &client,
                method,
                &gateway.url("/api/proxy/items"),
                &[("sec-fetch-site", site)],
            )
            .await;
            assert_ok(&answer, &format!("{method} {site}"));
        }
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), UNSAFE.len() * 4);
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    for method in &UNSAFE {
        assert_eq!(methods.iter().filter(|m| **m == method.as_str()).count(), 4);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn safe_methods_pass_even_cross_site() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        let mut req = request(
            method.as_str(),
            &gateway.url("/api/proxy/items"),
            Some(TOKEN),
        )
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example");
        if method == Method::OPTIONS {
            req = req.header("access-control-request-method", "POST");
        }
        let answer = send(&client, req.body(empty()).unwrap()).await;
        assert_eq!(answer.status, 200, "{method}");
    }
    let seen: Vec<String> = upstream.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(seen, ["GET", "HEAD", "OPTIONS"]);
    gateway.stop().await;
}

#[tokio::test]
async fn routes_without_auth_are_not_checked_and_optional_ones_are() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        r#"
[[routes]]
prefix = "/public"
upstream = "{0}/public"
auth = "none"

[[routes]]
prefix = "/maybe"
upstream = "{0}/maybe"
auth = "optional"
"#,
        upstream.url()
    ))
    .await;
    let client = client();
    let attack = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ];
    // `auth = "none"` sends no token, so there is nothing to forge.
    for method in &UNSAFE {
        let answer = send_with(&client, method, &gateway.url("/public/form"), &attack).await;
        assert_ok(&answer, &format!("{method} on an auth = none route"));
    }
    assert_eq!(upstream.seen().len(), UNSAFE.len());
    // `auth = "optional"` sends the token when there is one: guarded, with or without cookie.
    for method in &UNSAFE {
        let answer = send_with(&client, method, &gateway.url("/maybe/x"), &attack).await;
        assert_refused(&answer, &format!("{method} on an optional route"));
        let mut req = request(method.as_str(), &gateway.url("/maybe/x"), None);
        for (name, value) in attack {
            req = req.header(name, value);
        }
        let answer = send(&client, req.body(empty()).unwrap()).await;
        assert_refused(
            &answer,
            &format!("{method} on an optional route, no cookie"),
        );
    }
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| s.target.starts_with("/public/")),
        "{:#?}",
        upstream.seen()
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_same_site_sibling_origin_is_refused() {
    // A page on a sibling subdomain is same-site (Sec-Fetch-Site says so, and SameSite cookies
    // go along) but not same-origin: only Origin tells it apart.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let port = gateway.addr.port();
    let host = format!("app.localhost:{port}");
    let evil = format!("http://evil.localhost:{port}");
    let client = client();
    for method in &UNSAFE {
        let answer = send_with(
            &client,
            method,
            &gateway.url("/api/proxy/items"),
            &[
                ("host", &host),
                ("origin", &evil),
                ("sec-fetch-site", "same-site"),
            ],
        )
        .await;
        assert_refused(&answer, &format!("{method} from a sibling"));
    }
    assert!(upstream.seen().is_empty());
    // The app's own page, same request otherwise, passes.
    let own = format!("http://app.localhost:{port}");
    let answer = send_with(
        &client,
        &Method::POST,
        &gateway.url("/api/proxy/items"),
        &[
            ("host", &host),
            ("origin", &own),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_ok(&answer, "own page");
    assert_eq!(upstream.only().target, "/items");
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// mode = "header" and mode = "off"
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn header_mode_requires_the_header_on_unsafe_methods() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "[csrf]\nmode = \"header\"")).await;
    let client = client();
    let url = gateway.url("/api/proxy/items");
    for method in &UNSAFE {
        assert_refused(
            &send_with(&client, method, &url, &[]).await,
            &format!("{method} without x-csrf"),
        );
        // The value does not matter; the header's presence is what a cross-site page
        // cannot produce without a CORS preflight.
        for value in ["1", ""] {
            assert_ok(
                &send_with(&client, method, &url, &[("x-csrf", value)]).await,
                &format!("{method} with x-csrf: {value:?}"),
            );
        }
        // The origin checks still apply on top.
        assert_refused(
            &send_with(
                &client,
                method,
                &url,
                &[("x-csrf", "1"), ("sec-fetch-site", "cross-site")],
            )
            .await,
            &format!("{method} with x-csrf, cross-site"),
        );
        assert_refused(
            &send_with(
                &client,
                method,
                &url,
                &[("X-CSRF", "1"), ("origin", "https://evil.example")],
            )
            .await,
            &format!("{method} with x-csrf, foreign origin"),
        );
    }
    assert_eq!(upstream.seen().len(), UNSAFE.len() * 2);
    // Safe methods need no header.
    let answer = get(&url, Some(TOKEN)).await;
    assert_ok(&answer, "GET without x-csrf");
    assert_eq!(upstream.seen().len(), UNSAFE.len() * 2 + 1);
    gateway.stop().await;
}

#[tokio::test]
async fn header_mode_uses_the_configured_header_name() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "[csrf]\nmode = \"header\"\nheader = \"x-requested-with\"",
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/items");
    assert_refused(
        &send_with(&client, &Method::POST, &url, &[("x-csrf", "1")]).await,
        "the default header name is not the configured one",
    );
    assert!(upstream.seen().is_empty());
    let answer = send_with(
        &client,
        &Method::POST,
        &url,
        &[("X-Requested-With", "XMLHttpRequest")],
    )
    .await;
    assert_ok(&answer, "configured header");
    assert_eq!(
        upstream.only().header("x-requested-with"),
        Some("XMLHttpRequest")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn off_mode_lets_cross_site_requests_through() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "[csrf]\nmode = \"off\"")).await;
    let client = client();
    for method in &UNSAFE {
        let answer = send_with(
            &client,
            method,
            &gateway.url("/api/proxy/items"),
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
        assert_ok(&answer, method.as_str());
    }
    assert_eq!(upstream.seen().len(), UNSAFE.len());
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Every route, whatever its place in the config (Duende BFF's advisories: config-declared
// routes skipped the check)
// ---------------------------------------------------------------------------------------------

/// Routes of several prefix lengths, in `order`; each upstream base path names its route.
fn many_routes(upstream: &str, order: &[&str]) -> String {
    let mut text = String::new();
    for prefix in order {
        let base = prefix.trim_start_matches('/').replace('/', "-");
        let base = if base.is_empty() { "root".into() } else { base };
        text.push_str(&format!(
            "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}/{base}\"\n\n"
        ));
    }
    text
}

const PREFIXES: [&str; 6] = [
    "/api",
    "/api/proxy",
    "/api/proxy/deep/er",
    "/chat",
    "/z",
    "/",
];

/// Paths that land on each route of [`PREFIXES`], with the upstream target each maps to.
const PATHS: [(&str, &str); 7] = [
    ("/api/x", "/api/x"),
    ("/api/proxy/x", "/api-proxy/x"),
    ("/api/proxy/deep/er/x", "/api-proxy-deep-er/x"),
    ("/api/proxy/deep/x", "/api-proxy/deep/x"),
    ("/chat", "/chat"),
    ("/z/last", "/z/last"),
    ("/other", "/root/other"),
];

/// Sends a cross-site POST, then the same POST as a same-origin request, to every path.
async fn statuses_for(gateway: &Gateway) -> Vec<(String, u16, u16)> {
    let client = client();
    let mut out = Vec::new();
    for (path, _) in PATHS {
        let url = gateway.url(path);
        let attack = send_with(
            &client,
            &Method::POST,
            &url,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
        if attack.status == 403 {
            assert_refused(&attack, path);
        }
        let own = format!("http://{}", gateway.addr);
        let fine = send_with(&client, &Method::POST, &url, &[("origin", &own)]).await;
        out.push((
            path.to_string(),
            attack.status.as_u16(),
            fine.status.as_u16(),
        ));
    }
    out
}

#[tokio::test]
async fn every_route_is_guarded_like_the_first_whatever_its_place_in_the_config() {
    let upstream = TestUpstream::echo_ok().await;
    let mut reversed = PREFIXES;
    reversed.reverse();
    let mut shuffled = PREFIXES;
    shuffled.rotate_left(2);
    let expected: Vec<(String, u16, u16)> = PATHS
        .iter()
        .map(|(p, _)| (p.to_string(), 403, 200))
        .collect();
    for order in [PREFIXES, reversed, shuffled] {
        let before = upstream.seen().len();
        let gateway = Gateway::start(&many_routes(&upstream.url(), &order)).await;
        assert_eq!(
            statuses_for(&gateway).await,
            expected,
            "route order {order:?}"
        );
        // Only the same-origin requests arrived, each at its own route's upstream path.
        let targets: Vec<String> = upstream.seen()[before..]
            .iter()
            .map(|s| s.target.clone())
            .collect();
        let want: Vec<&str> = PATHS.iter().map(|(_, t)| *t).collect();
        assert_eq!(targets, want, "route order {order:?}");
        gateway.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2: the host is `:authority`
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http2_requests_are_guarded_by_their_authority() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = h2_client();
    let url = gateway.url("/api/proxy/items");
    let own = format!("http://{}", gateway.addr);
    for method in &UNSAFE {
        let answer = send_with(&client, method, &url, &[("sec-fetch-site", "cross-site")]).await;
        assert_eq!(answer.headers.get("connection"), None);
        assert_refused(&answer, &format!("h2 {method} cross-site"));
        let answer = send_with(&client, method, &url, &[("origin", "https://evil.example")]).await;
        assert_refused(&answer, &format!("h2 {method} foreign origin"));
        let answer = send_with(
            &client,
            method,
            &url,
            &[("origin", &own), ("sec-fetch-site", "same-origin")],
        )
        .await;
        assert_ok(&answer, &format!("h2 {method} own origin (:authority)"));
    }
    let answer = send(
        &client,
        request("GET", &url, Some(TOKEN))
            .header("sec-fetch-site", "cross-site")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_ok(&answer, "h2 GET cross-site");
    let seen = upstream.seen();
    assert_eq!(seen.len(), UNSAFE.len() + 1);
    for s in &seen {
        assert_eq!(s.header("authorization"), Some("Bearer csrf-session-token"));
    }
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Guard order: a request failing two checks gets the first one's answer. The order is written
// out in `proxy.rs` and `guard.rs`: routing 404, methods 405, path mapping 400, smuggling
// shapes 400, CSRF 403, rate limit 429, declared body size 413, session cookie 400/401.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cross_site_without_a_cookie_is_403_not_401() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for cookie in [
        None,
        Some("auth_token=a; auth_token=b"),
        Some("auth_token=caf\u{e9}"),
    ] {
        let mut req = request("POST", &gateway.url("/api/proxy/x"), None)
            .header("sec-fetch-site", "cross-site");
        if let Some(cookie) = cookie {
            req = req.header(
                "cookie",
                http::HeaderValue::from_bytes(cookie.as_bytes()).unwrap(),
            );
        }
        let answer = send(&client, req.body(full("x")).unwrap()).await;
        assert_refused(&answer, &format!("cookie {cookie:?}"));
    }
    // Without the cross-site header, the cookie's problem is what is reported.
    let req = request("POST", &gateway.url("/api/proxy/x"), None)
        .body(full("x"))
        .unwrap();
    send(&client, req)
        .await
        .assert_error(401, "not authenticated");
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn cross_site_over_the_rate_limit_is_403_not_429_and_takes_no_token() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "[rate_limit]\nper_second = 1\nburst = 2",
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    let cross = [("sec-fetch-site", "cross-site")];
    // Refused by CSRF before the limiter is asked: these use up nothing.
    for _ in 0..5 {
        assert_refused(
            &send_with(&client, &Method::POST, &url, &cross).await,
            "before",
        );
    }
    assert_ok(&send_with(&client, &Method::POST, &url, &[]).await, "1st");
    assert_ok(&send_with(&client, &Method::POST, &url, &[]).await, "2nd");
    send_with(&client, &Method::POST, &url, &[])
        .await
        .assert_error(429, "too many requests");
    // Over the limit and cross-site: CSRF answers first.
    let answer = send_with(&client, &Method::POST, &url, &cross).await;
    assert_refused(&answer, "over the limit and cross-site");
    assert!(answer.headers.get("retry-after").is_none());
    assert_eq!(upstream.seen().len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_before_the_body_limit_and_the_cookie() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[rate_limit]\nper_second = 1\nburst = 1\n\n[[routes]]\nprefix = \"/api/proxy\"\n\
         upstream = \"{}\"\nmax_body = \"4\"\n",
        upstream.url()
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    assert_ok(&get(&url, Some(TOKEN)).await, "the one request allowed");
    let too_big = send_with(&client, &Method::POST, &url, &[]).await;
    too_big.assert_error(429, "too many requests");
    let no_cookie = send(&client, request("GET", &url, None).body(empty()).unwrap()).await;
    no_cookie.assert_error(429, "too many requests");
    let ambiguous = send(
        &client,
        request("GET", &url, None)
            .header("cookie", "auth_token=a; auth_token=b")
            .body(empty())
            .unwrap(),
    )
    .await;
    ambiguous.assert_error(429, "too many requests");
    assert_eq!(upstream.seen().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn csrf_is_403_before_the_body_limit_and_the_ambiguous_cookie() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\nmax_body = \"4\"\n",
        upstream.url()
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    let too_big = send_with(
        &client,
        &Method::POST,
        &url,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_refused(&too_big, "body over max_body, foreign origin");
    let too_big = send_with(&client, &Method::POST, &url, &[]).await;
    too_big.assert_error(413, "request body too large");
    let ambiguous = send(
        &client,
        request("DELETE", &url, None)
            .header("cookie", "auth_token=a; auth_token=b")
            .header("sec-fetch-site", "cross-site")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_refused(&ambiguous, "ambiguous cookie, cross-site");
    assert!(upstream.seen().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn routing_methods_and_path_refusals_come_before_csrf() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        r#"
[[routes]]
prefix = "/api/proxy"
upstream = "{0}"

[[routes]]
prefix = "/api/read"
upstream = "{0}"
methods = ["GET"]
"#,
        upstream.url()
    ))
    .await;
    let cookie = format!("auth_token={TOKEN}");
    let cases: [(&str, u16, &str); 5] = [
        ("/nowhere", 404, "no route for this path"),
        ("/api/read/x", 405, "method not allowed"),
        ("/api/proxy/../admin", 400, "request path refused"),
        ("/api/proxy/%2e%2e/admin", 400, "request path refused"),
        ("/api/proxy/a%00b", 400, "request path refused"),
    ];
    for (path, status, message) in cases {
        // Raw bytes: HTTP clients would normalise the dot segments.
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nCookie: {cookie}\r\nSec-Fetch-Site: cross-site\r\n\
             Origin: https://evil.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let answer = raw_answer(gateway.addr, req.as_bytes()).await;
        answer.assert_error(status, message);
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    gateway.stop().await;
}

#[tokio::test]
async fn a_smuggling_shape_that_is_also_cross_site_is_400() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let req = format!(
            "POST /api/proxy/x HTTP/1.1\r\nHost: gw\r\nCookie: auth_token={TOKEN}\r\n\
             Sec-Fetch-Site: cross-site\r\n{framing}\r\n0\r\n\r\n"
        );
        let answer = raw_answer(gateway.addr, req.as_bytes()).await;
        answer.assert_error(400, "malformed request");
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
    gateway.stop().await;
}
