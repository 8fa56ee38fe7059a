//! Client identity behind trusted proxies (`[server] trusted_proxies`), through real sockets:
//! what a TLS load balancer in front says about the client reaches the upstream and the CSRF
//! check, with no `[rate_limit]` section at all (the setting used to live there).

use crate::support::*;

fn config(upstream: &str, trusted: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [{trusted}]\n\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\n"
    )
}

#[tokio::test]
async fn a_trusted_tls_load_balancer_is_believed_for_ip_scheme_and_host() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&config(&upstream.url(), "\"127.0.0.0/8\"")).await;
    let req = request("POST", &gateway.url("/api/x"), Some("tok"))
        .header("host", "internal:8080")
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        // Same-origin as the browser saw it: allowed although Host says otherwise.
        .header("origin", "https://app.example.com")
        .body(full("{}"))
        .unwrap();
    let answer = send(&client(), req).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let seen = upstream.only();
    assert_eq!(seen.header_all("x-forwarded-for"), ["198.51.100.7"]);
    assert_eq!(seen.header("x-real-ip"), Some("198.51.100.7"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.example.com"));
    assert_eq!(
        seen.header("forwarded"),
        Some("for=198.51.100.7;host=\"app.example.com\";proto=https")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_claim_https_or_another_host() {
    let upstream = TestUpstream::echo_ok().await;
    // Only 10.0.0.0/8 is trusted; the test client connects from 127.0.0.1.
    let gateway = Gateway::start(&config(&upstream.url(), "\"10.0.0.0/8\"")).await;
    let forged = |origin: Option<&'static str>| {
        let mut req = request("POST", &gateway.url("/api/x"), Some("tok"))
            .header("host", "internal:8080")
            .header("x-forwarded-for", "198.51.100.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.com");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.body(full("{}")).unwrap()
    };
    // The forged host does not make a foreign origin its own.
    send(&client(), forged(Some("https://app.example.com")))
        .await
        .assert_error(403, "cross-site request refused");
    let answer = send(&client(), forged(None)).await;
    assert_eq!(answer.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("internal:8080"));
    gateway.stop().await;
}
