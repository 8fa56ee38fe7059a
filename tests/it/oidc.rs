//! The token handler against a real identity provider (oidc-provider 9, `tests/idp/`, started
//! and stopped by each test): login with PKCE through the IdP's own forms, the session cookie,
//! `/auth/user`, the bearer reaching the upstream (checked with the IdP), refresh on expiry
//! once for many concurrent requests, the pre-refresh cookie within the grace, a forgotten
//! grant, the IdP down, logout, back-channel logout, two tabs, open redirects, replays.
//!
//! Waiting for an access token to expire is the scenario itself (the IdP's TTL is a few
//! seconds), not synchronisation.

use std::time::Duration;

use cookiegate::config::Env;
use tokio::net::TcpListener;

use crate::support::*;

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET: &str = "test-secret";

struct Setup {
    idp: Idp,
    gateway: Gateway,
    upstream: TestUpstream,
    browser: Browser,
    gw: String,
}

/// An IdP whose access tokens live `access_ttl` seconds, and a gateway with one session route
/// `/api` refreshing `refresh_before` ahead.
async fn setup(access_ttl: u64, refresh_before: &str) -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp::start(&[
        ("IDP_REDIRECT_URIS", format!("{gw}/auth/callback")),
        ("IDP_POST_LOGOUT_URIS", format!("{gw}/")),
        ("IDP_BACKCHANNEL_URI", format!("{gw}/auth/backchannel")),
        ("IDP_ACCESS_TTL", access_ttl.to_string()),
        ("IDP_CLIENT_SECRET", SECRET.to_string()),
    ])
    .await;
    let upstream = TestUpstream::echo_ok().await;
    let toml = format!(
        r#"
[session]
cookie = "cg"

[oidc]
issuer = "{issuer}"
client_id = "cookiegate"
redirect_uri = "{gw}/auth/callback"
post_logout_redirect_uri = "{gw}/"
refresh_before = "{refresh_before}"

[[routes]]
prefix = "/api"
upstream = "{upstream}"
auth = "session"
"#,
        issuer = idp.issuer,
        upstream = upstream.url()
    );
    let env = Env::default()
        .with_var("COOKIEGATE_SESSION_KEYS", KEYS)
        .with_var("COOKIEGATE_CLIENT_SECRET", SECRET);
    let config = cookiegate::Config::from_toml_str_with(&toml, &env).unwrap();
    let gateway = Gateway::start_on(listener, config);
    Setup {
        idp,
        gateway,
        upstream,
        browser: Browser::new(),
        gw,
    }
}

impl Setup {
    async fn stop(self) {
        self.gateway.stop().await;
        self.idp.stop().await;
        self.upstream.stop().await;
    }

    /// GET `path` of the gateway with the browser's cookies.
    async fn get(&self, path: &str) -> Answer {
        self.browser.get(&format!("{}{path}", self.gw)).await
    }

    /// The bearer token of the upstream's last request.
    fn last_bearer(&self) -> String {
        let seen = self.upstream.seen();
        let last = seen.last().expect("the upstream saw a request");
        last.header("authorization")
            .expect("a bearer")
            .strip_prefix("Bearer ")
            .unwrap()
            .to_string()
    }
}

fn no_token_in(text: &str, token: &str) {
    assert!(!token.is_empty());
    assert!(!text.contains(token), "a token leaked into {text:?}");
}

#[tokio::test]
async fn a_user_logs_in_calls_the_api_with_a_real_bearer_and_logs_out() {
    let s = setup(60, "5s").await;
    let callback = s
        .browser
        .log_in(&s.gw, "?return_to=/app/page%3Fx%3D1", "alice")
        .await;
    assert_eq!(callback.status, 302, "{:?}", callback.body);
    assert_eq!(callback.header("location"), Some("/app/page?x=1"));
    let session_cookie = s.browser.cookie(&s.gw, "cg").expect("the session cookie");
    assert!(
        s.browser
            .cookies(&s.gw)
            .keys()
            .all(|k| !k.starts_with("cg-login.")),
        "the login-state cookie is cleared"
    );
    let set_cookies: Vec<_> = callback.headers.get_all("set-cookie").iter().collect();
    assert!(
        set_cookies
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("cg=")
                && c.to_str().unwrap().contains("HttpOnly")),
        "{set_cookies:?}"
    );

    let user = s.get("/auth/user").await;
    assert_eq!(user.status, 200, "{:?}", user.body);
    let json = user.json();
    assert_eq!(json["sub"], "alice");
    assert_eq!(json["claims"]["email"], "alice@example.com");
    assert!(json["expires_at"].as_u64().unwrap() > 0);

    let api = s.get("/api/items?page=2").await;
    assert_eq!(api.status, 200, "{:?}", api.body);
    let bearer = s.last_bearer();
    let seen = s.upstream.seen();
    let seen = seen.last().unwrap();
    assert!(seen.header("cookie").is_none(), "no cookie goes upstream");
    let introspected = s.idp.introspect(&bearer).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["sub"], "alice");
    // No token in anything the browser can read.
    no_token_in(&session_cookie, &bearer);
    no_token_in(&String::from_utf8_lossy(&user.body), &bearer);

    // Logout is CSRF-guarded like every unsafe request.
    let forged = s
        .browser
        .send(
            "POST",
            &format!("{}/auth/logout", s.gw),
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    forged.assert_error(403, "cross-site request refused");
    let before_logout = s.browser.cookies(&s.gw);
    let out = s
        .browser
        .send(
            "POST",
            &format!("{}/auth/logout", s.gw),
            &[("origin", s.gw.as_str())],
            None,
        )
        .await;
    assert_eq!(out.status, 200, "{:?}", out.body);
    let logout_url = out.json()["logout_url"].as_str().unwrap().to_string();
    assert!(logout_url.starts_with(&s.idp.issuer), "{logout_url}");
    assert!(logout_url.contains("id_token_hint="), "{logout_url}");
    assert!(
        logout_url.contains("post_logout_redirect_uri="),
        "{logout_url}"
    );
    assert!(
        s.browser.cookie(&s.gw, "cg").is_none(),
        "the cookie is cleared"
    );
    assert_eq!(
        s.idp.stats("alice").await["revocations"],
        1,
        "refresh token revoked"
    );
    // The old cookie, replayed, is refused.
    s.browser.set_cookies(&s.gw, before_logout);
    s.get("/api/items")
        .await
        .assert_error(401, "not authenticated");
    s.get("/auth/user")
        .await
        .assert_error(401, "not authenticated");
    s.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_requests_at_expiry_make_one_refresh_grant() {
    let s = setup(2, "1s").await;
    let callback = s.browser.log_in(&s.gw, "", "bob").await;
    assert_eq!(callback.status, 302);
    assert_eq!(s.get("/api/first").await.status, 200);
    let first = s.last_bearer();
    let before = s.browser.cookies(&s.gw);
    // Past the margin before the token's expiry.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let url = format!("{}/api/burst/{i}", s.gw);
        let cookie = s.browser.cookie_header(&s.gw);
        requests.spawn(async move {
            let req = request("GET", &url, None)
                .header("cookie", cookie)
                .body(empty())
                .unwrap();
            send(&client(), req).await
        });
    }
    while let Some(answer) = requests.join_next().await {
        let answer = answer.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(
            answer.header("set-cookie").is_some(),
            "the new session goes back"
        );
    }
    let bearers: std::collections::BTreeSet<String> = s
        .upstream
        .seen()
        .iter()
        .skip(1)
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(bearers.len(), 1, "all 20 went with the same new token");
    let refreshed = bearers.into_iter().next().unwrap();
    assert_ne!(refreshed, format!("Bearer {first}"));
    assert_eq!(s.idp.stats("bob").await["refresh_grants"], 1);
    // Another tab still holding the pre-refresh cookie, within the grace: the new token, no
    // second grant (which, with rotating refresh tokens, would revoke the grant).
    s.browser.set_cookies(&s.gw, before);
    let late = s.get("/api/late").await;
    assert_eq!(late.status, 200);
    assert_eq!(format!("Bearer {}", s.last_bearer()), refreshed);
    assert!(late.header("set-cookie").is_some());
    let stats = s.idp.stats("bob").await;
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    assert_eq!(stats["grants_revoked"], 0, "{stats}");
    s.stop().await;
}

#[tokio::test]
async fn a_grant_the_idp_forgot_ends_the_session_and_clears_the_cookie() {
    let s = setup(2, "1s").await;
    assert_eq!(s.browser.log_in(&s.gw, "", "carol").await.status, 302);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let forgotten = s.idp.test_post("/test/forget-grants?sub=carol", "").await;
    assert_eq!(forgotten.json()["forgotten"], 1);
    let before = s.browser.cookies(&s.gw);
    let answer = s.get("/api/x").await;
    answer.assert_error(401, "session expired");
    let cleared = answer.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("cg=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // Replayed, it stays refused.
    s.browser.set_cookies(&s.gw, before);
    assert_eq!(s.get("/api/x").await.status, 401);
    assert!(s.upstream.seen().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn an_idp_that_is_down_gives_5xx_and_keeps_the_session() {
    let mut s = setup(2, "1s").await;
    assert_eq!(s.browser.log_in(&s.gw, "", "dave").await.status, 302);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let idp = std::mem::replace(&mut s.idp, Idp::placeholder());
    idp.stop().await;
    let answer = s.get("/api/x").await;
    assert!(
        matches!(answer.status.as_u16(), 502..=504),
        "{} {:?}",
        answer.status,
        answer.body
    );
    assert!(
        answer.header("set-cookie").is_none(),
        "a blip logs nobody out"
    );
    assert!(s.browser.cookie(&s.gw, "cg").is_some());
    // The session itself is still good.
    assert_eq!(s.get("/auth/user").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_back_channel_logout_ends_the_session_here() {
    let s = setup(60, "5s").await;
    assert_eq!(s.browser.log_in(&s.gw, "", "erin").await.status, 302);
    assert_eq!(s.get("/api/x").await.status, 200);
    let sent = s.idp.test_post("/test/backchannel?sub=erin", "").await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    assert_eq!(sent.json()["sent"], 1, "{:?}", sent.body);
    s.get("/api/x").await.assert_error(401, "not authenticated");
    s.get("/auth/user")
        .await
        .assert_error(401, "not authenticated");
    // A forged or replayed logout token is refused.
    let forged = s
        .browser
        .send(
            "POST",
            &format!("{}/auth/backchannel", s.gw),
            &[],
            Some("logout_token=eyJhbGciOiJub25lIn0.e30.".into()),
        )
        .await;
    forged.assert_error(400, "invalid logout token");
    s.stop().await;
}

#[tokio::test]
async fn return_to_is_followed_only_to_local_paths() {
    let s = setup(60, "5s").await;
    for (return_to, expected) in [
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%5C%5Cevil.example", "/"),
        ("%2Fok%2Fhere", "/ok/here"),
    ] {
        let answer = s
            .browser
            .log_in(&s.gw, &format!("?return_to={return_to}"), "frank")
            .await;
        assert_eq!(answer.status, 302, "{return_to}");
        assert_eq!(answer.header("location"), Some(expected), "{return_to}");
    }
    s.stop().await;
}

#[tokio::test]
async fn prompt_none_without_an_idp_session_comes_back_as_a_failed_login() {
    let s = setup(60, "5s").await;
    let start = s
        .browser
        .get(&format!("{}/auth/login?prompt=none", s.gw))
        .await;
    let authorize = location(&start, &s.gw);
    assert!(authorize.contains("prompt=none"), "{authorize}");
    // No IdP session: the IdP answers `error=login_required` at once, without a form.
    let callback = s.browser.idp_leg(authorize, "judy").await;
    assert!(callback.contains("error=login_required"), "{callback}");
    let answer = s.browser.get(&callback).await;
    answer.assert_error(400, "login failed");
    assert!(s.browser.cookie(&s.gw, "cg").is_none());
    s.stop().await;
}

#[tokio::test]
async fn a_callback_is_usable_once_and_only_with_its_own_state() {
    let s = setup(60, "5s").await;
    let start = s.browser.get(&format!("{}/auth/login", s.gw)).await;
    let login_cookies = s.browser.cookies(&s.gw);
    let callback = s.browser.idp_leg(location(&start, &s.gw), "grace").await;
    assert_eq!(s.browser.get(&callback).await.status, 302);
    // Again: the login cookie is gone.
    s.browser
        .get(&callback)
        .await
        .assert_error(400, "login failed");
    // Again with the login cookie put back: the state was used.
    s.browser.set_cookies(&s.gw, login_cookies);
    s.browser
        .get(&callback)
        .await
        .assert_error(400, "login failed");
    // A state that is not this browser's.
    s.browser
        .get(&format!(
            "{}/auth/callback?code=x&state=forged-state-value",
            s.gw
        ))
        .await
        .assert_error(400, "login failed");
    s.stop().await;
}

#[tokio::test]
async fn a_page_cannot_fill_the_cookie_jar_by_starting_logins() {
    let s = setup(60, "5s").await;
    let long = "%2F".to_string() + &"a".repeat(3000);
    for _ in 0..12 {
        let start = s
            .browser
            .get(&format!("{}/auth/login?return_to={long}", s.gw))
            .await;
        assert_eq!(start.status, 302);
        let logins = s
            .browser
            .cookies(&s.gw)
            .keys()
            .filter(|k| k.starts_with("cg-login."))
            .count();
        assert!(logins <= 5, "{logins} login-state cookies");
        let set = start.header("set-cookie").unwrap();
        assert!(
            set.len() < 1000,
            "a long return_to is not carried: {} bytes",
            set.len()
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn two_tabs_can_log_in_at_the_same_time() {
    let s = setup(60, "5s").await;
    let first = s
        .browser
        .get(&format!("{}/auth/login?return_to=/one", s.gw))
        .await;
    let second = s
        .browser
        .get(&format!("{}/auth/login?return_to=/two", s.gw))
        .await;
    let logins = s
        .browser
        .cookies(&s.gw)
        .keys()
        .filter(|k| k.starts_with("cg-login."))
        .count();
    assert_eq!(logins, 2, "one login-state cookie per tab");
    let first = s.browser.idp_leg(location(&first, &s.gw), "heidi").await;
    let second = s.browser.idp_leg(location(&second, &s.gw), "heidi").await;
    // Finished in the other order.
    let two = s.browser.get(&second).await;
    assert_eq!(two.header("location"), Some("/two"), "{:?}", two.body);
    let one = s.browser.get(&first).await;
    assert_eq!(one.header("location"), Some("/one"), "{:?}", one.body);
    assert_eq!(s.get("/auth/user").await.json()["sub"], "heidi");
    s.stop().await;
}
