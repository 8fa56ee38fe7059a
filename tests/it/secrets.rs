//! Secrets stay secret: with every log level on (trace, all crates) and every kind of request,
//! good and bad, over HTTP/1.1 and HTTP/2, the token and the client's credentials appear in no
//! log line and no error body.

use crate::cli::Running;
use crate::support::*;

const TOKEN: &str = "SECRET-TOKEN-7f3a9c";
const CLIENT_AUTH: &str = "Basic CLIENT-CREDENTIAL-41b2";

#[tokio::test]
async fn trace_logs_and_error_bodies_never_hold_the_token() {
    let upstream = TestUpstream::echo_ok().await;
    let dead_url = dead_upstream_url().await;
    let dir = TempDir::new("secrets");
    let config = dir.join("gate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             [[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{up}\"\n\
             [[routes]]\nprefix = \"/dead\"\nupstream = \"{dead_url}\"\n\
             [[routes]]\nprefix = \"/only-post\"\nupstream = \"{up}\"\nmethods = [\"POST\"]\n",
            up = upstream.url()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cookiegate"));
    cmd.arg("--config").arg(&config).env("RUST_LOG", "trace");
    let (running, addr) = Running::start(cmd);
    let base = format!("http://{addr}");

    let mut bodies = Vec::new();
    for client in [client(), h2_client()] {
        for (method, path) in [
            ("GET", "/api/proxy/api/tasks?q=1"),
            ("POST", "/api/proxy/api/tasks"),
            ("GET", "/dead/x"),
            ("GET", "/only-post/x"),
            ("GET", "/api/proxy/..%2Fadmin"),
            ("GET", "/nowhere"),
        ] {
            let req = request(method, &format!("{base}{path}"), Some(TOKEN))
                .header("authorization", CLIENT_AUTH)
                .body(full(format!("{{\"echo\":\"{TOKEN}\"}}")))
                .unwrap();
            bodies.push(send(&client, req).await);
        }
        // A cookie that cannot be a header value, and a duplicated one.
        for cookie in [
            format!("auth_token=\"{TOKEN} x\""),
            format!("auth_token={TOKEN}; auth_token=b"),
        ] {
            let req = request("GET", &format!("{base}/api/proxy/x"), None)
                .header("cookie", cookie)
                .body(empty())
                .unwrap();
            bodies.push(send(&client, req).await);
        }
    }
    let statuses: Vec<u16> = bodies.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(
        statuses[..8],
        [200, 200, 502, 405, 400, 404, 401, 400],
        "each kind of request was exercised"
    );
    assert_eq!(statuses[..8], statuses[8..]);
    // The upstream did get the token: it was in play.
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| s.header("authorization") == Some(&format!("Bearer {TOKEN}")))
    );

    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0));
    for answer in &bodies {
        let body = String::from_utf8_lossy(&answer.body);
        if answer.status != 200 {
            assert!(
                !body.contains(TOKEN) && !body.contains("CLIENT-CREDENTIAL"),
                "{body}"
            );
            assert!(
                !body.contains("127.0.0.1"),
                "error bodies name no upstream: {body}"
            );
        }
    }
    assert!(log.lines().count() > 20, "trace logging was on:\n{log}");
    assert!(!log.contains(TOKEN), "token in log:\n{log}");
    assert!(
        !log.contains("CLIENT-CREDENTIAL"),
        "client credential in log:\n{log}"
    );
    assert!(!log.contains("q=1"), "query strings are not logged:\n{log}");
    let access = log
        .lines()
        .find(|l| l.contains("cookiegate::access") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    for field in [
        "method=GET",
        "route=\"/api/proxy\"",
        "path=\"/api/proxy/api/tasks\"",
        "bytes=11",
        "elapsed_ms=",
    ] {
        assert!(
            access.contains(field) || access.contains(&field.replace('"', "")),
            "{field} in {access}"
        );
    }
}

/// The token handler, at trace level: a login, API calls across a refresh, `/auth/user`, a
/// logout and a few refused requests. No session key, client secret, authorization code,
/// access or ID token, or session cookie value reaches the log.
#[tokio::test]
async fn token_handler_trace_logs_hold_no_secret() {
    const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const CLIENT_SECRET: &str = "client-SECRET-value-93ac";
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let gw = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&[
        ("IDP_REDIRECT_URIS", format!("{gw}/auth/callback")),
        ("IDP_ACCESS_TTL", "2".to_string()),
        ("IDP_CLIENT_SECRET", CLIENT_SECRET.to_string()),
    ])
    .await;
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("secrets-oidc");
    let config = dir.join("gate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [session]\ncookie = \"cg\"\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"cookiegate\"\n\
             redirect_uri = \"{gw}/auth/callback\"\nrefresh_before = \"1s\"\n\
             [[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\nauth = \"session\"\n",
            issuer = idp.issuer,
            up = upstream.url()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cookiegate"));
    cmd.arg("--config")
        .arg(&config)
        .env("RUST_LOG", "trace")
        .env("COOKIEGATE_SESSION_KEYS", KEYS)
        .env("COOKIEGATE_CLIENT_SECRET", CLIENT_SECRET);
    let (running, _) = Running::start(cmd);

    let browser = Browser::new();
    let start = browser.get(&format!("{gw}/auth/login")).await;
    let callback = browser.idp_leg(location(&start, &gw), "ivan").await;
    let code = callback
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_string();
    assert_eq!(browser.get(&callback).await.status, 302);
    let cookie = browser.cookie(&gw, "cg").unwrap();
    assert_eq!(browser.get(&format!("{gw}/api/one")).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    assert_eq!(browser.get(&format!("{gw}/api/two")).await.status, 200);
    assert_eq!(browser.get(&format!("{gw}/auth/user")).await.status, 200);
    // Refused ones too: a replayed callback, a forged logout token.
    assert_eq!(browser.get(&callback).await.status, 400);
    let forged = browser
        .send(
            "POST",
            &format!("{gw}/auth/backchannel"),
            &[],
            Some("logout_token=a.b.c".into()),
        )
        .await;
    assert_eq!(forged.status, 400);
    let out = browser
        .send(
            "POST",
            &format!("{gw}/auth/logout"),
            &[("origin", gw.as_str())],
            None,
        )
        .await;
    let logout_url = out.json()["logout_url"].as_str().unwrap().to_string();
    let id_token = logout_url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("id_token_hint="))
        .unwrap()
        .to_string();
    let bearers: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| {
            s.header("authorization")
                .unwrap()
                .trim_start_matches("Bearer ")
                .to_string()
        })
        .collect();
    assert_eq!(bearers.len(), 2);
    assert_ne!(bearers[0], bearers[1], "a refresh happened");

    let (code_exit, log) = running.terminate_async().await;
    assert_eq!(code_exit, Some(0));
    assert!(
        log.contains(" TRACE ") && log.lines().count() > 10,
        "trace logging was on:\n{log}"
    );
    let mut secrets = vec![
        ("session key", KEYS.to_string()),
        ("client secret", CLIENT_SECRET.to_string()),
        ("authorization code", code),
        ("session cookie", cookie),
        ("ID token", id_token),
    ];
    for (i, bearer) in bearers.into_iter().enumerate() {
        secrets.push((
            if i == 0 {
                "access token"
            } else {
                "refreshed access token"
            },
            bearer,
        ));
    }
    for (what, secret) in secrets {
        assert!(secret.len() > 8, "{what}");
        // The whole value, and its first 24 characters (a prefix is already a leak).
        let prefix: String = secret.chars().take(24).collect();
        assert!(
            !log.contains(&secret) && !log.contains(&prefix),
            "{what} in the log"
        );
    }
    idp.stop().await;
    upstream.stop().await;
}
