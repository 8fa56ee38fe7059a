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
