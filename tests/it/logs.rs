//! Logs and request ids: JSON lines from the real binary, parsed one by one; refusal lines
//! that say what to change; the request id in every line of a request, equal to the one the
//! client got; ids generated, taken from a trusted proxy only, sent upstream, and returned on
//! errors too; a stream cut by shutdown logged as `shutdown`.

use bytes::Bytes;
use http::Response;
use serde_json::Value;

use crate::cli::Running;
use crate::support::*;

const TOKEN: &str = "LOGS-SECRET-TOKEN-44c1";
const QUERY: &str = "LOGS-QUERY-SECRET-0b7e";

fn is_generated_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Starts the binary on `config` (written to a file in `dir`), with `RUST_LOG` unset so the
/// file's `[log]` applies.
fn start(dir: &TempDir, config: &str) -> (Running, std::net::SocketAddr) {
    let path = dir.join("gate.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cookiegate"));
    cmd.arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("COOKIEGATE_CONFIG")
        .env_remove("BACKEND_URL");
    Running::start(cmd)
}

#[tokio::test]
async fn json_lines_parse_and_carry_the_request_id_of_the_answer() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("json-logs");
    let (running, addr) = start(
        &dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
             [csrf]\nallowed_origins = [\"https://ok.example.com\"]\n\
             [[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
    );
    let base = format!("http://{addr}");
    let ok = get(&format!("{base}/api/proxy/items?q={QUERY}"), Some(TOKEN)).await;
    assert_eq!(ok.status, 200);
    let ok_id = ok.header("x-request-id").unwrap().to_string();
    let refused = send(
        &client(),
        request("POST", &format!("{base}/api/proxy/items"), Some(TOKEN))
            .header("origin", "https://app.example.com")
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    refused.assert_error(403, "cross-site request refused");
    let refused_id = refused.header("x-request-id").unwrap().to_string();
    assert!(is_generated_id(&ok_id) && is_generated_id(&refused_id));
    assert_eq!(get(&format!("{base}/healthz"), None).await.status, 200);

    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
        assert!(
            line.get("fields").is_none() && line.get("span").is_none(),
            "{line}"
        );
        assert_ne!(
            line["path"], "/healthz",
            "a health probe was logged: {line}"
        );
    }
    assert!(!log.contains(TOKEN) && !log.contains(QUERY), "{log}");

    let access = lines
        .iter()
        .find(|l| l["target"] == "cookiegate::access" && l["request_id"] == ok_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {ok_id}: {log}"));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["route"], "/api/proxy");
    assert_eq!(access["path"], "/api/proxy/items");
    assert_eq!(access["status"], 200);
    assert_eq!(access["bytes"], 11);
    assert_eq!(access["outcome"], "complete");
    assert!(access["elapsed_ms"].is_number(), "{access}");

    let refusal = lines
        .iter()
        .find(|l| l["message"] == "request refused")
        .unwrap_or_else(|| panic!("no refusal line: {log}"));
    assert_eq!(refusal["level"], "INFO");
    assert_eq!(refusal["request_id"], refused_id.as_str());
    assert_eq!(refusal["status"], 403);
    assert_eq!(refusal["guard"], "csrf");
    assert_eq!(refusal["route"], "/api/proxy");
    assert_eq!(refusal["path"], "/api/proxy/items");
    assert_eq!(
        refusal["reason"],
        "origin https://app.example.com is not allowed: add it to [csrf] allowed_origins"
    );
    // The refused request's access line carries the same id.
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "cookiegate::access" && l["request_id"] == refused_id.as_str()),
        "{log}"
    );
    upstream.stop().await;
}

#[tokio::test]
async fn access_false_writes_no_access_line_but_still_the_refusals() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("no-access");
    let (running, addr) = start(
        &dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n[log]\naccess = false\n\
             [[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
    );
    let base = format!("http://{addr}");
    assert_eq!(
        get(&format!("{base}/api/proxy/x"), Some(TOKEN))
            .await
            .status,
        200
    );
    let missing = get(&format!("{base}/api/proxy/x"), None).await;
    assert_eq!(missing.status, 401);
    let id = missing.header("x-request-id").unwrap().to_string();
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0));
    assert!(!log.contains("cookiegate::access"), "{log}");
    let refusal = log
        .lines()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal line: {log}"));
    assert!(refusal.contains(" INFO "), "{refusal}");
    assert!(refusal.contains(&format!("request_id={id}")), "{refusal}");
    assert!(refusal.contains("no cookie auth_token"), "{refusal}");
    upstream.stop().await;
}

#[tokio::test]
async fn a_stream_cut_by_shutdown_is_logged_as_shutdown() {
    let upstream = TestUpstream::builder()
        .handle(|_req, tasks| async move {
            let (mut tx, body) = channel_body(1);
            tasks.spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"data: first\n\n")).await;
                // Never ends: only the shutdown cuts it.
                std::future::pending::<()>().await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        })
        .start()
        .await;
    let dir = TempDir::new("shutdown-outcome");
    let (running, addr) = start(
        &dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n[server]\nshutdown_grace = \"200ms\"\n\
             [[routes]]\nprefix = \"/events\"\nupstream = \"{}\"\nauth = \"none\"\n",
            upstream.url()
        ),
    );
    let req = request("GET", &format!("http://{addr}/events"), None)
        .body(empty())
        .unwrap();
    let res = within("the stream's head", client().request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = within("the first event", next_data(&mut body)).await;
    assert_eq!(
        first.unwrap().unwrap(),
        Bytes::from_static(b"data: first\n\n")
    );
    let (code, log) = running.terminate_async().await;
    drop(body);
    assert_eq!(code, Some(0));
    let access = log
        .lines()
        .find(|l| l.contains("cookiegate::access") && l.contains("/events"))
        .unwrap_or_else(|| panic!("no access line: {log}"));
    assert!(
        access.contains("outcome=\"shutdown\"") || access.contains("outcome=shutdown"),
        "{access}"
    );
    upstream.stop().await;
}

#[tokio::test]
async fn request_ids_are_generated_returned_and_sent_upstream() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let url = gateway.url("/api/proxy/x");
    let first = get(&url, Some(TOKEN)).await;
    // A client's own id, from a peer that is no trusted proxy, is replaced.
    let spoofed = send(
        &client(),
        request("GET", &url, Some(TOKEN))
            .header("x-request-id", "spoofed-id")
            .body(empty())
            .unwrap(),
    )
    .await;
    let ids: Vec<String> = [&first, &spoofed]
        .iter()
        .map(|a| a.header("x-request-id").unwrap().to_string())
        .collect();
    assert!(ids.iter().all(|id| is_generated_id(id)), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.header_all("x-request-id").join(","))
        .collect();
    assert_eq!(seen, ids, "the upstream got each request's id, alone");
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_trusted_proxys_request_id_is_kept_when_sane() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;
    let url = gateway.url("/api/proxy/x");
    let with_id = |id: &str| {
        request("GET", &url, Some(TOKEN))
            .header("x-request-id", id)
            .body(empty())
            .unwrap()
    };
    let kept = send(&client(), with_id("edge-7f3e-0001")).await;
    assert_eq!(kept.header("x-request-id"), Some("edge-7f3e-0001"));
    let too_long = "x".repeat(129);
    let replaced = [
        send(&client(), with_id(&too_long)).await,
        send(&client(), with_id("has space")).await,
    ];
    for answer in &replaced {
        assert!(is_generated_id(answer.header("x-request-id").unwrap()));
    }
    let seen = upstream.seen();
    assert_eq!(seen[0].header("x-request-id"), Some("edge-7f3e-0001"));
    assert_eq!(
        seen[1].header("x-request-id"),
        replaced[0].header("x-request-id")
    );
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn errors_carry_a_request_id_too() {
    let gateway = Gateway::start(&format!(
        "[server]\nupstream_timeout = \"2s\"\n\
         [[routes]]\nprefix = \"/dead\"\nupstream = \"{}\"\nauth = \"none\"\n",
        dead_upstream_url().await
    ))
    .await;
    let not_found = get(&gateway.url("/nowhere"), None).await;
    not_found.assert_error(404, "no route for this path");
    let unreachable = get(&gateway.url("/dead/x"), None).await;
    unreachable.assert_error(502, "upstream unreachable");
    for answer in [&not_found, &unreachable] {
        assert!(is_generated_id(answer.header("x-request-id").unwrap()));
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_504_names_its_cause_the_route_and_the_upstream() {
    // Takes the request, never answers.
    let upstream = TestUpstream::builder()
        .raw(|mut wire| async move {
            if wire.head().await.is_some() {
                std::future::pending::<()>().await;
            }
        })
        .start()
        .await;
    let authority = upstream.url().trim_start_matches("http://").to_string();
    let dir = TempDir::new("timeout-cause");
    let (running, addr) = start(
        &dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n[server]\nupstream_timeout = \"300ms\"\n\
             [[routes]]\nprefix = \"/slow\"\nupstream = \"{}\"\nauth = \"none\"\n",
            upstream.url()
        ),
    );
    let answer = get(&format!("http://{addr}/slow/x?q={QUERY}"), None).await;
    answer.assert_error(504, "upstream timed out");
    let id = answer.header("x-request-id").unwrap().to_string();
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0));
    let line = log
        .lines()
        .find(|l| l.contains("upstream failed"))
        .unwrap_or_else(|| panic!("no upstream failure line: {log}"));
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains(&format!("request_id={id}")), "{line}");
    assert!(line.contains("route=\"/slow\""), "{line}");
    assert!(
        line.contains(&format!("upstream=\"{authority}\"")),
        "{line}"
    );
    assert!(line.contains("kind=\"timeout\""), "{line}");
    assert!(line.contains("response head timeout"), "{line}");
    assert!(!log.contains(QUERY), "{log}");
    upstream.stop().await;
}
