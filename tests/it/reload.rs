//! Reloading (SIGHUP), readiness (`/readyz`) and the second signal: a valid file applies to new
//! requests while streams started before finish on the old route; an invalid one keeps the
//! running config and logs every problem; a logged-out session stays refused across a reload;
//! settings that need a restart say so; `/readyz` answers 503 while draining and, with
//! sessions, until the IdP's discovery document is loaded; a second SIGTERM ends the drain.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::cli::{Running, cookiegate};
use crate::support::*;
use cookiegate::config::Env;

fn route(prefix: &str, upstream: &str) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n")
}

/// A POST from `origin` with the session cookie (CSRF-guarded).
async fn post_from(url: &str, origin: &str) -> Answer {
    let req = request("POST", url, Some("tok"))
        .header("origin", origin)
        .body(full("x"))
        .unwrap();
    send(&client(), req).await
}

#[tokio::test]
async fn sighup_applies_a_valid_file_to_new_requests_and_says_what_needs_a_restart() {
    let old = TestUpstream::echo_ok().await;
    let new = TestUpstream::echo_ok().await;
    let dir = TempDir::new("reload-valid");
    let file = dir.join("gate.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\n{}{}",
            route("/old", &old.url()),
            route("/kept", &old.url())
        ),
    )
    .unwrap();
    let mut cmd = cookiegate(&dir);
    cmd.args(["--config", "gate.toml"]);
    let (mut running, addr) = Running::start(cmd);
    let gw = format!("http://{addr}");
    assert_eq!(get(&format!("{gw}/old/x"), Some("tok")).await.status, 200);
    post_from(&format!("{gw}/kept/x"), "https://app.example")
        .await
        .assert_error(403, "cross-site request refused");

    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:1\"\n[csrf]\nallowed_origins = [\"https://app.example\"]\n{}{}",
            route("/new", &new.url()),
            route("/kept", &old.url())
        ),
    )
    .unwrap();
    running.signal("HUP");
    running.wait_for("config reloaded");
    let listen = running.wait_for("listen changed from");
    // The running config's `listen` (port 0 asked the kernel for any port).
    assert!(
        listen.contains("listen changed from 127.0.0.1:0 to 127.0.0.1:1: restart to apply"),
        "{listen}"
    );

    // Still listening where it was; the rest applies.
    assert_eq!(get(&format!("{gw}/new/y"), Some("tok")).await.status, 200);
    assert_eq!(new.only().target, "/y");
    get(&format!("{gw}/old/x"), Some("tok"))
        .await
        .assert_error(404, "no route for this path");
    assert_eq!(
        post_from(&format!("{gw}/kept/x"), "https://app.example")
            .await
            .status,
        200,
        "the new allowed origin applies"
    );
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0), "{log}");
    old.stop().await;
    new.stop().await;
}

#[tokio::test]
async fn sighup_with_an_invalid_file_keeps_serving_and_logs_every_problem() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("reload-invalid");
    let file = dir.join("gate.toml");
    let good = format!(
        "listen = \"127.0.0.1:0\"\n{}",
        route("/api", &upstream.url())
    );
    std::fs::write(&file, &good).unwrap();
    let mut cmd = cookiegate(&dir);
    cmd.args(["--config", "gate.toml"]);
    let (mut running, addr) = Running::start(cmd);

    std::fs::write(
        &file,
        format!(
            "{good}[server]\nmax_connections = \"many\"\nidle_timeout = \"forever\"\n\
             [[routes]]\nprefix = \"/b\"\nupstrem = \"http://127.0.0.1:1\"\nupstream = \"ftp://x\"\n"
        ),
    )
    .unwrap();
    running.signal("HUP");
    running.wait_for("config reload refused: still serving");
    for problem in [
        "server.max_connections: expected an integer, found a string",
        "server.idle_timeout: `forever` is not a duration",
        "routes[1].upstrem: unknown key (did you mean upstream?)",
        "routes[1].upstream: scheme must be http or https",
    ] {
        let line = running.wait_for(problem);
        assert!(line.contains("ERROR"), "{line}");
    }
    assert_eq!(
        get(&format!("http://{addr}/api/x"), Some("tok"))
            .await
            .status,
        200,
        "the running config still serves"
    );

    // A syntax error too: one line, the running config kept.
    std::fs::write(&file, "[[routes]\n").unwrap();
    running.signal("HUP");
    let line = running.wait_for("TOML parse error");
    assert!(line.contains("line 1"), "{line}");
    assert_eq!(
        get(&format!("http://{addr}/api/x"), Some("tok"))
            .await
            .status,
        200
    );
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("config reloaded"), "{log}");
    upstream.stop().await;
}

#[tokio::test]
async fn zero_config_sighup_says_there_is_no_file_to_re_read() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("reload-zero");
    let mut cmd = cookiegate(&dir);
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("BACKEND_URL", upstream.url());
    let (mut running, addr) = Running::start(cmd);
    running.signal("HUP");
    running.wait_for("SIGHUP: no config file to re-read");
    assert_eq!(
        get(&format!("http://{addr}/api/proxy/x"), Some("tok"))
            .await
            .status,
        200
    );
    let (code, _) = running.terminate_async().await;
    assert_eq!(code, Some(0));
    upstream.stop().await;
}

const EVENT_1: &[u8] = b"data: first\n\n";
const EVENT_2: &[u8] = b"data: second\n\n";

#[tokio::test]
async fn a_stream_started_before_a_reload_finishes_on_the_old_upstream() {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let go = TakeOnce::new(go_rx);
    let old = TestUpstream::builder()
        .handle(move |_, tasks| {
            let go = go.take();
            async move {
                let (mut tx, body) = channel_body(1);
                tasks.spawn(async move {
                    if tx.send_data(Bytes::from_static(EVENT_1)).await.is_ok() && go.await.is_ok() {
                        let _ = tx.send_data(Bytes::from_static(EVENT_2)).await;
                    }
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap()
            }
        })
        .start()
        .await;
    let new = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&route("/api", &old.url())).await;

    let req = request("GET", &gateway.url("/api/events"), Some("tok"))
        .body(empty())
        .unwrap();
    let res = within("the stream's head", client().request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body: Incoming = res.into_body();
    let first = within("the first event", next_data(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, EVENT_1);

    assert!(gateway.reload(&route("/api", &new.url()), &Env::default()));
    assert_eq!(
        get(&gateway.url("/api/after"), Some("tok")).await.status,
        200
    );
    assert_eq!(
        new.only().target,
        "/after",
        "new requests use the new upstream"
    );

    go_tx.send(()).unwrap();
    let (rest, broke) = within("the rest of the stream", read_to_end_or_break(&mut body)).await;
    assert!(!broke, "the old stream ended cleanly");
    assert_eq!(rest, EVENT_2, "the old stream finished on the old upstream");
    assert_eq!(old.seen().len(), 1);
    drop(body);
    gateway.stop().await;
    old.stop().await;
    new.stop().await;
}

/// Whether `/readyz` of `addr`, asked on a fresh connection, answers `status`; the answer.
async fn readyz(gw: &str) -> Answer {
    get(&format!("{gw}/readyz"), None).await
}

#[tokio::test]
async fn readyz_is_200_when_serving_503_while_draining_and_a_second_signal_exits_at_once() {
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (guard, _dropped) = drop_signal();
    let handoff = TakeOnce::new((arrived_tx, guard));
    let upstream = TestUpstream::builder()
        .handle(move |_, _| {
            let (arrived, guard) = handoff.take();
            async move {
                let _guard = guard;
                let _ = arrived.send(());
                // Never answers: this request holds the drain open.
                std::future::pending::<Response<TestBody>>().await
            }
        })
        .start()
        .await;
    let dir = TempDir::new("readyz-drain");
    let mut cmd = cookiegate(&dir);
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("BACKEND_URL", upstream.url());
    let (mut running, addr) = Running::start(cmd);
    let gw = format!("http://{addr}");
    let ready = readyz(&gw).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), serde_json::json!({ "status": "ready" }));

    let slow = request("GET", &format!("{gw}/api/proxy/slow"), Some("tok"))
        .body(empty())
        .unwrap();
    let in_flight = tokio::spawn(async move { client().request(slow).await.map(|_| ()) });
    within("the slow request to reach the upstream", arrived_rx)
        .await
        .unwrap();
    // A connection already open when the drain starts, its request half sent.
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"GET /readyz HTTP/1.1\r\n").await.unwrap();
    // Let the gateway take the connection (its first byte has arrived) before the signal.
    assert_eq!(readyz(&gw).await.status, 200);

    running.signal("TERM");
    running.wait_for("shutting down: no longer accepting");
    open.write_all(b"host: gw\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let draining = read_answer(&mut open, &mut buf).await;
    assert_eq!(draining.status, 503);
    assert_eq!(draining.json(), serde_json::json!({ "status": "draining" }));
    assert!(
        !in_flight.is_finished(),
        "the slow request still holds the drain open"
    );

    let started = std::time::Instant::now();
    running.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || running.wait())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second signal did not wait for the 30 s grace"
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("second signal: exiting now"), "{log}");
    // Probes stay out of the access log.
    assert!(!log.contains("/readyz"), "{log}");
    let cut = within("the slow request to be cut", in_flight)
        .await
        .unwrap();
    assert!(cut.is_err());
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest).await;
    upstream.stop().await;
}

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET: &str = "test-secret";

fn session_toml(gw: &str, issuer: &str, routes: &str) -> String {
    format!(
        r#"
[session]
cookie = "cg"

[oidc]
issuer = "{issuer}"
client_id = "cookiegate"
redirect_uri = "{gw}/auth/callback"
post_logout_redirect_uri = "{gw}/"

{routes}
"#
    )
}

fn secrets() -> Env {
    Env::default()
        .with_var("COOKIEGATE_SESSION_KEYS", KEYS)
        .with_var("COOKIEGATE_CLIENT_SECRET", SECRET)
}

fn session_route(prefix: &str, upstream: &str) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\nauth = \"session\"\n")
}

#[tokio::test]
async fn readyz_waits_for_the_idps_discovery_document() {
    // The IdP's port is known, but nothing listens there yet.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{port}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("http://{}", listener.local_addr().unwrap());
    let upstream = TestUpstream::echo_ok().await;
    let toml = session_toml(&gw, &issuer, &session_route("/api", &upstream.url()));
    let config = cookiegate::Config::from_toml_str_with(&toml, &secrets()).unwrap();
    let gateway = Gateway::start_on(listener, config);

    let failed = within("the first discovery attempt to fail", async {
        loop {
            let answer = readyz(&gw).await;
            assert_eq!(answer.status, 503);
            if answer.json()["reason"]
                .as_str()
                .is_some_and(|r| r.contains("failed"))
            {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        failed.json(),
        serde_json::json!({
            "status": "starting",
            "reason": "identity provider discovery failed: identity provider unreachable",
        })
    );
    assert!(!String::from_utf8_lossy(&failed.body).contains(&port.to_string()));

    let idp = Idp::start(&[
        ("IDP_PORT", port.to_string()),
        ("IDP_REDIRECT_URIS", format!("{gw}/auth/callback")),
        ("IDP_CLIENT_SECRET", SECRET.to_string()),
    ])
    .await;
    assert_eq!(idp.issuer, issuer);
    // Retried in the background (2 s, then 4 s apart): ready without any login.
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let answer = readyz(&gw).await;
            if answer.status == 200 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("ready once the IdP answers");
    assert_eq!(ready.json(), serde_json::json!({ "status": "ready" }));
    gateway.stop().await;
    idp.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_logged_out_session_stays_refused_across_a_reload() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp::start(&[
        ("IDP_REDIRECT_URIS", format!("{gw}/auth/callback")),
        ("IDP_POST_LOGOUT_URIS", format!("{gw}/")),
        ("IDP_CLIENT_SECRET", SECRET.to_string()),
    ])
    .await;
    let upstream = TestUpstream::echo_ok().await;
    let routes = session_route("/api", &upstream.url());
    let config = cookiegate::Config::from_toml_str_with(
        &session_toml(&gw, &idp.issuer, &routes),
        &secrets(),
    )
    .unwrap();
    let gateway = Gateway::start_on(listener, config);
    let browser = Browser::new();
    let callback = browser.log_in(&gw, "", "alice").await;
    assert_eq!(callback.status, 302, "{:?}", callback.body);
    assert_eq!(browser.get(&format!("{gw}/api/items")).await.status, 200);
    let before_logout = browser.cookies(&gw);
    let out = browser
        .send(
            "POST",
            &format!("{gw}/auth/logout"),
            &[("origin", gw.as_str())],
            None,
        )
        .await;
    assert_eq!(out.status, 200, "{:?}", out.body);

    // A reload that changes the session settings (a new token handler, a new opened-session
    // cache) and the routes: the revocation list is kept all the same.
    let reloaded = session_toml(
        &gw,
        &idp.issuer,
        &format!("{routes}{}", route("/other", &upstream.url())),
    )
    .replace("cookie = \"cg\"", "cookie = \"cg\"\nmax_age = \"7h\"");
    assert!(gateway.reload(&reloaded, &secrets()));
    browser.set_cookies(&gw, before_logout);
    browser
        .get(&format!("{gw}/api/items"))
        .await
        .assert_error(401, "not authenticated");
    gateway.stop().await;
    idp.stop().await;
    upstream.stop().await;
}
