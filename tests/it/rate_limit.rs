//! Rate limits through real sockets (the "Rate limiting" requirements): a client over its burst gets
//! 429 with `Retry-After` and the upstream never sees the excess; the key (IP, session, both)
//! decides who shares a bucket; `X-Forwarded-For` is believed only from trusted proxies.
//!
//! Bursts are small and requests follow each other at loopback speed; `per_second = 1` leaves
//! a whole second before a token comes back, so a refill between two requests would take a
//! stall far beyond anything a test run sees. Memory staying bounded with many distinct keys
//! is proven by the unit tests of `ClientLimiter::sweep` in `src/guard/rate_limit.rs`: the sweep
//! runs every 10 s, which no test should wait for.

use crate::support::*;

/// `[rate_limit]` with these lines, and one route `/api/proxy` -> `upstream`.
/// A config with `rate_limit` as the `[rate_limit]` section; a `trusted_proxies` line in it goes
/// to `[server]`, where that setting lives.
fn config(upstream: &str, rate_limit: &str) -> String {
    let (trusted, rate_limit): (Vec<&str>, Vec<&str>) = rate_limit
        .lines()
        .partition(|line| line.starts_with("trusted_proxies"));
    let (trusted, rate_limit) = (trusted.join("\n"), rate_limit.join("\n"));
    format!(
        "[server]\n{trusted}\n\n[rate_limit]\n{rate_limit}\n\n\
         [[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n\n\
         [[routes]]\nprefix = \"/api/other\"\nupstream = \"{upstream}/other\"\n"
    )
}

/// GET `url` over `client` with an optional session token and extra headers.
async fn get_with(
    client: &Client,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = request("GET", url, token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(client, req.body(empty()).unwrap()).await
}

/// GET `url` with the session token, as a client claiming to be `ip` in `X-Forwarded-For`.
async fn forwarded_for(client: &Client, url: &str, ip: &str) -> Answer {
    get_with(client, url, Some("tok"), &[("x-forwarded-for", ip)]).await
}

/// Asserts a 429 with the JSON error and a `Retry-After` of whole seconds, at least 1.
fn assert_limited(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 429, "{what}");
    answer.assert_error(429, "too many requests");
    let retry_after = answer
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"));
    let secs: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry_after:?} is not whole seconds"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
}

#[tokio::test]
async fn the_request_after_the_burst_gets_429_with_retry_after() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "per_second = 1\nburst = 3")).await;
    let client = client();
    for n in 1..=3 {
        assert_ok(
            &get_with(&client, &gateway.url("/api/proxy/x"), Some("tok"), &[]).await,
            &format!("request {n}"),
        );
    }
    assert_limited(
        &get_with(&client, &gateway.url("/api/proxy/x"), Some("tok"), &[]).await,
        "request 4",
    );
    // One bucket per client across every route, and a new connection changes nothing.
    assert_limited(
        &get_with(&client, &gateway.url("/api/other/y"), Some("tok"), &[]).await,
        "another route",
    );
    assert_limited(
        &get_with(&h2_client(), &gateway.url("/api/proxy/x"), None, &[]).await,
        "another connection, HTTP/2, no cookie",
    );
    assert_eq!(upstream.seen().len(), 3);
    // The health endpoint is answered before any guard.
    assert_ok(&get(&gateway.url("/healthz"), None).await, "healthz");
    assert_eq!(upstream.seen().len(), 3);
    gateway.stop().await;
}

#[tokio::test]
async fn without_a_rate_limit_section_nothing_is_limited() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let client = client();
    for n in 0..60 {
        assert_ok(
            &get_with(&client, &gateway.url("/api/proxy/x"), Some("tok"), &[]).await,
            &format!("request {n}"),
        );
    }
    assert_eq!(upstream.seen().len(), 60);
    gateway.stop().await;
}

#[tokio::test]
async fn session_key_gives_each_session_its_own_burst() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "per_second = 1\nburst = 2\nkey = \"session\"",
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    // All from 127.0.0.1, on one connection.
    for token in ["alice", "bob"] {
        assert_ok(&get_with(&client, &url, Some(token), &[]).await, token);
        assert_ok(&get_with(&client, &url, Some(token), &[]).await, token);
        assert_limited(&get_with(&client, &url, Some(token), &[]).await, token);
    }
    // A third session still has its whole burst; requests without a session share their IP's.
    assert_ok(&get_with(&client, &url, Some("carol"), &[]).await, "carol");
    assert_eq!(upstream.seen().len(), 5);
    let authorizations: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        authorizations,
        [
            "Bearer alice",
            "Bearer alice",
            "Bearer bob",
            "Bearer bob",
            "Bearer carol"
        ]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn session_key_falls_back_to_the_ip_without_a_session() {
    let upstream = TestUpstream::builder()
        .respond(|_| json_response(http::StatusCode::OK, "{}"))
        .start()
        .await;
    let gateway = Gateway::start(&format!(
        "[rate_limit]\nper_second = 1\nburst = 2\nkey = \"session\"\n\n[[routes]]\n\
         prefix = \"/open\"\nupstream = \"{}\"\nauth = \"none\"\n",
        upstream.url()
    ))
    .await;
    let client = client();
    let url = gateway.url("/open/x");
    assert_ok(&get_with(&client, &url, None, &[]).await, "1st");
    assert_ok(&get_with(&client, &url, None, &[]).await, "2nd");
    assert_limited(&get_with(&client, &url, None, &[]).await, "3rd");
    // `auth = "none"` routes have no session, whatever cookie is sent: the IP is the key.
    assert_limited(&get_with(&client, &url, Some("alice"), &[]).await, "cookie");
    assert_eq!(upstream.seen().len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn ip_session_key_separates_both_sessions_and_ips() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "per_second = 1\nburst = 2\nkey = \"ip+session\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let a = "198.51.100.1";
    let b = "198.51.100.2";
    assert_ok(
        &get_with(&client, &url, Some("alice"), &from(a)).await,
        "alice@a",
    );
    assert_ok(
        &get_with(&client, &url, Some("alice"), &from(a)).await,
        "alice@a",
    );
    assert_limited(
        &get_with(&client, &url, Some("alice"), &from(a)).await,
        "alice@a",
    );
    // Same IP, another session; same session, another IP: fresh buckets.
    assert_ok(
        &get_with(&client, &url, Some("bob"), &from(a)).await,
        "bob@a",
    );
    assert_ok(
        &get_with(&client, &url, Some("alice"), &from(b)).await,
        "alice@b",
    );
    assert_ok(
        &get_with(&client, &url, Some("alice"), &from(b)).await,
        "alice@b",
    );
    assert_limited(
        &get_with(&client, &url, Some("alice"), &from(b)).await,
        "alice@b",
    );
    assert_eq!(upstream.seen().len(), 5);
    gateway.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "per_second = 1\nburst = 2\ntrusted_proxies = [\"127.0.0.1/32\"]",
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    for ip in ["203.0.113.5", "203.0.113.6"] {
        let xff = [("x-forwarded-for", ip)];
        assert_ok(&get_with(&client, &url, Some("tok"), &xff).await, ip);
        assert_ok(&get_with(&client, &url, Some("tok"), &xff).await, ip);
        assert_limited(&get_with(&client, &url, Some("tok"), &xff).await, ip);
    }
    // A chain: the right-most hop that is not a trusted proxy is the client; the left-most
    // entry, which the client writes itself, is not believed.
    let chain = [("x-forwarded-for", "203.0.113.6, 203.0.113.7, 127.0.0.1")];
    assert_ok(&get_with(&client, &url, Some("tok"), &chain).await, "chain");
    // The proxy's own requests (no header) are keyed by the proxy's address.
    assert_ok(
        &get_with(&client, &url, Some("tok"), &[]).await,
        "the proxy itself",
    );

    let forwarded: Vec<(String, String, String)> = upstream
        .seen()
        .iter()
        .map(|s| {
            (
                s.header_all("x-forwarded-for").join(" | "),
                s.header("x-real-ip").unwrap_or_default().to_string(),
                s.header("forwarded").unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect = |ip: &str| {
        (
            ip.to_string(),
            ip.to_string(),
            format!("for={ip};host=\"{}\";proto=http", gateway.addr),
        )
    };
    assert_eq!(
        forwarded,
        [
            expect("203.0.113.5"),
            expect("203.0.113.5"),
            expect("203.0.113.6"),
            expect("203.0.113.6"),
            expect("203.0.113.7"),
            expect("127.0.0.1"),
        ]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn without_trusted_proxies_a_spoofed_forwarded_for_gets_no_fresh_bucket() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "per_second = 1\nburst = 2")).await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    assert_ok(&forwarded_for(&client, &url, "203.0.113.5").await, "1st");
    assert_ok(&forwarded_for(&client, &url, "203.0.113.6").await, "2nd");
    for spoofed in ["203.0.113.7", "10.0.0.1, 203.0.113.8", "::1"] {
        let answer = get_with(
            &client,
            &url,
            Some("tok"),
            &[("x-forwarded-for", spoofed), ("x-real-ip", spoofed)],
        )
        .await;
        assert_limited(&answer, spoofed);
    }
    // And the upstream was told the truth: the TCP peer, not the spoofed value.
    for s in upstream.seen() {
        assert_eq!(s.header_all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(s.header("x-real-ip"), Some("127.0.0.1"));
    }
    assert_eq!(upstream.seen().len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_s_forwarded_for_is_ignored_even_with_trusted_proxies_set() {
    // Only 10.0.0.0/8 is trusted; the test client connects from 127.0.0.1.
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(
        &upstream.url(),
        "per_second = 1\nburst = 1\ntrusted_proxies = [\"10.0.0.0/8\"]",
    ))
    .await;
    let client = client();
    let url = gateway.url("/api/proxy/x");
    assert_ok(&forwarded_for(&client, &url, "203.0.113.5").await, "1st");
    assert_limited(&forwarded_for(&client, &url, "203.0.113.6").await, "2nd");
    assert_eq!(upstream.only().header_all("x-forwarded-for"), ["127.0.0.1"]);
    gateway.stop().await;
}
