//! `[metrics]`: values move as real requests pass through a real gateway, labels stay within
//! their bounded sets (no path remainder, address, cookie or token), the listener serves
//! `GET /metrics` only, and a real `promtool` accepts the scrape.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const TOKEN: &str = "METRICS-SECRET-TOKEN-5d1e";
const REMAINDER: &str = "remainder-7c2b";
const QUERY: &str = "QUERY-SECRET-93aa";

/// The samples of a scrape: `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(gateway: &Gateway) -> String {
    let answer = get(&gateway.metrics_url("/metrics"), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    String::from_utf8(answer.body.to_vec()).unwrap()
}

fn value(text: &str, key: &str) -> f64 {
    samples(text).get(key).copied().unwrap_or(0.0)
}

/// Scrapes until `key` has `want` (the gauges of a connection closing or a pooled connection
/// coming back move just after the client sees its answer end).
async fn eventually(gateway: &Gateway, key: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let text = scrape(gateway).await;
        if value(&text, key) == want {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config(upstream: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n\
         [[routes]]\nprefix = \"/dead\"\nupstream = \"{dead}\"\nauth = \"none\"\n",
        dead = DEAD
    )
}

/// Port 1 (tcpmux), outside the ephemeral range: nothing listens there (`dead_upstream_url`).
const DEAD: &str = "http://127.0.0.1:1";

#[tokio::test]
async fn metric_values_move_as_requests_pass() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start_with_metrics(&config(&upstream.url())).await;
    let base = gateway.url("/api/proxy");

    let ok = get(&format!("{base}/{REMAINDER}/x?token={QUERY}"), Some(TOKEN)).await;
    assert_eq!(ok.status, 200);
    let upload = send(
        &client(),
        request("POST", &format!("{base}/upload"), Some(TOKEN))
            .body(full("hello"))
            .unwrap(),
    )
    .await;
    assert_eq!(upload.status, 200);
    let csrf = send(
        &client(),
        request("POST", &format!("{base}/x"), Some(TOKEN))
            .header("origin", "https://evil.example")
            .body(full("no"))
            .unwrap(),
    )
    .await;
    assert_eq!(csrf.status, 403);
    assert_eq!(get(&format!("{base}/x"), None).await.status, 401);
    assert_eq!(get(&gateway.url("/nowhere"), None).await.status, 404);
    assert_eq!(get(&gateway.url("/dead/x"), None).await.status, 502);
    // Health probes are not counted.
    assert_eq!(get(&gateway.url("/healthz"), None).await.status, 200);

    let text = scrape(&gateway).await;
    let expect = [
        (
            "cookiegate_requests_total{route=\"/api/proxy\",method=\"GET\",status=\"2xx\"}",
            1.0,
        ),
        (
            "cookiegate_requests_total{route=\"/api/proxy\",method=\"POST\",status=\"2xx\"}",
            1.0,
        ),
        (
            "cookiegate_requests_total{route=\"/api/proxy\",method=\"POST\",status=\"4xx\"}",
            1.0,
        ),
        (
            "cookiegate_requests_total{route=\"/api/proxy\",method=\"GET\",status=\"4xx\"}",
            1.0,
        ),
        (
            "cookiegate_requests_total{route=\"none\",method=\"GET\",status=\"4xx\"}",
            1.0,
        ),
        (
            "cookiegate_requests_total{route=\"/dead\",method=\"GET\",status=\"5xx\"}",
            1.0,
        ),
        ("cookiegate_refusals_total{guard=\"csrf\"}", 1.0),
        ("cookiegate_refusals_total{guard=\"session\"}", 1.0),
        ("cookiegate_refusals_total{guard=\"route\"}", 1.0),
        ("cookiegate_refusals_total{guard=\"rate_limit\"}", 0.0),
        (
            "cookiegate_upstream_errors_total{route=\"/dead\",kind=\"connect\"}",
            1.0,
        ),
        (
            "cookiegate_upstream_errors_total{route=\"/api/proxy\",kind=\"connect\"}",
            0.0,
        ),
        // Two answers of `{"ok":true}` (11 bytes), and the two error bodies:
        // `{"error":"cross-site request refused"}` (38), `{"error":"not authenticated"}` (29).
        ("cookiegate_sent_bytes_total{route=\"/api/proxy\"}", 89.0),
        ("cookiegate_received_bytes_total{route=\"/api/proxy\"}", 5.0),
        (
            "cookiegate_request_duration_seconds_count{route=\"/api/proxy\"}",
            4.0,
        ),
        (
            "cookiegate_response_head_seconds_count{route=\"/api/proxy\"}",
            4.0,
        ),
    ];
    let all = samples(&text);
    for (key, want) in expect {
        assert_eq!(all.get(key).copied().unwrap_or(0.0), want, "{key}\n{text}");
    }
    assert!(value(&text, "cookiegate_process_start_time_seconds") > 1.7e9);
    assert!(
        !all.keys().any(|k| k.contains("/healthz")),
        "health probes are not counted: {text}"
    );

    // The pooled upstream connection is back in the pool once its answer ended.
    let upstream_label = upstream.url().trim_start_matches("http://").to_string();
    eventually(
        &gateway,
        &format!(
            "cookiegate_upstream_pool_connections{{upstream=\"{upstream_label}\",state=\"idle\"}}"
        ),
        1.0,
    )
    .await;

    // Open connections: one more while a raw client holds its connection, back after.
    let open = "cookiegate_open_connections";
    let before = value(&scrape(&gateway).await, open);
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_answer(&mut stream, &mut buf).await;
    eventually(&gateway, open, before + 1.0).await;
    drop(stream);
    eventually(&gateway, open, before).await;

    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn labels_stay_within_their_bounded_sets() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start_with_metrics(&config(&upstream.url())).await;
    let base = gateway.url("/api/proxy");
    for method in ["GET", "PROPFIND", "DELETE"] {
        let req = request(
            method,
            &format!("{base}/{REMAINDER}?q={QUERY}"),
            Some(TOKEN),
        )
        .header("x-forwarded-for", "203.0.113.77")
        .body(empty())
        .unwrap();
        send(&client(), req).await;
    }
    get(&gateway.url(&format!("/{REMAINDER}")), Some(TOKEN)).await;
    get(&gateway.url("/dead/x"), None).await;
    let text = scrape(&gateway).await;
    for secret in [TOKEN, REMAINDER, QUERY, "203.0.113.77", "PROPFIND"] {
        assert!(!text.contains(secret), "{secret} in the scrape:\n{text}");
    }
    let upstream_label = upstream.url().trim_start_matches("http://").to_string();
    let allowed: HashMap<&str, Vec<&str>> = HashMap::from([
        ("route", vec!["/api/proxy", "/dead", "auth", "none"]),
        (
            "method",
            vec![
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
            ],
        ),
        ("status", vec!["1xx", "2xx", "3xx", "4xx", "5xx"]),
        (
            "kind",
            vec![
                "connect",
                "timeout",
                "reset",
                "protocol",
                "sse",
                "websocket",
            ],
        ),
        (
            "guard",
            vec![
                "method",
                "route",
                "path",
                "framing",
                "csrf",
                "websocket",
                "rate_limit",
                "limits",
                "session",
                "login",
            ],
        ),
        ("state", vec!["idle", "active"]),
        ("outcome", vec!["unavailable", "fallback"]),
        ("upstream", vec![upstream_label.as_str(), "127.0.0.1:1"]),
        ("le", vec![]),
    ]);
    for key in samples(&text).keys() {
        let Some((_, labels)) = key.split_once('{') else {
            continue;
        };
        for pair in labels.trim_end_matches('}').split(',') {
            let (name, value) = pair.split_once('=').unwrap();
            let value = value.trim_matches('"');
            let values = allowed
                .get(name)
                .unwrap_or_else(|| panic!("unexpected label {name} in {key}"));
            assert!(
                name == "le" || values.contains(&value),
                "label {name}={value} in {key}"
            );
        }
    }
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn the_metrics_listener_serves_get_metrics_only() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start_with_metrics(&config(&upstream.url())).await;
    get(&gateway.metrics_url("/other"), None)
        .await
        .assert_error(404, "no route for this path");
    let post = send(
        &client(),
        request("POST", &gateway.metrics_url("/metrics"), None)
            .body(empty())
            .unwrap(),
    )
    .await;
    post.assert_error(405, "method not allowed");
    assert_eq!(post.header("allow"), Some("GET"));
    // And the public listener does not serve metrics.
    assert_eq!(get(&gateway.url("/metrics"), None).await.status, 404);
    gateway.stop().await;
    upstream.stop().await;
}

/// A real `promtool check metrics` (Debian's `prometheus` package; CI installs it) accepts the
/// scrape taken after real traffic.
#[tokio::test]
async fn promtool_accepts_the_scrape() {
    let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let found = std::process::Command::new(&promtool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found: install it with `apt-get install -y prometheus` (Debian), or set \
         PROMTOOL to its path"
    );
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start_with_metrics(&config(&upstream.url())).await;
    get(&gateway.url("/api/proxy/x"), Some(TOKEN)).await;
    get(&gateway.url("/api/proxy/x"), None).await;
    get(&gateway.url("/dead/x"), None).await;
    let text = scrape(&gateway).await;
    let checked = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success(), "promtool: {said}");
    assert!(said.trim().is_empty(), "promtool found problems: {said}");
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn an_sse_answer_counts_as_an_open_stream_while_it_lasts() {
    let upstream = TestUpstream::builder()
        .handle(|_req, tasks| async move {
            let (mut tx, body) = channel_body(1);
            tasks.spawn(async move {
                let _ = tx
                    .send_data(bytes::Bytes::from_static(b"data: one\n\n"))
                    .await;
                // Held open until the client goes away (or the upstream is stopped).
                std::future::pending::<()>().await;
            });
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        })
        .start()
        .await;
    let gateway = Gateway::start_with_metrics(&format!(
        "[[routes]]\nprefix = \"/events\"\nupstream = \"{}\"\nauth = \"none\"\n",
        upstream.url()
    ))
    .await;
    let sse = "cookiegate_open_streams{kind=\"sse\"}";
    assert_eq!(value(&scrape(&gateway).await, sse), 0.0);
    let req = request("GET", &gateway.url("/events"), None)
        .body(empty())
        .unwrap();
    let res = within("the stream's head", client().request(req))
        .await
        .unwrap();
    let mut body = res.into_body();
    within("the first event", next_data(&mut body))
        .await
        .unwrap()
        .unwrap();
    eventually(&gateway, sse, 1.0).await;
    drop(body);
    eventually(&gateway, sse, 0.0).await;
    gateway.stop().await;
    upstream.stop().await;
}

/// Stops a child process (a Prometheus server) when dropped, panicking test or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus server (Debian's `prometheus` package, as for `promtool`) scrapes the
/// endpoint and can query what it scraped.
#[tokio::test]
async fn a_prometheus_server_scrapes_the_endpoint() {
    let prometheus = std::env::var_os("PROMETHEUS").unwrap_or_else(|| "prometheus".into());
    let found = std::process::Command::new(&prometheus)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "prometheus not found: install it with `apt-get install -y prometheus` (Debian), or set \
         PROMETHEUS to its path"
    );
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::start_with_metrics(&config(&upstream.url())).await;
    assert_eq!(
        get(&gateway.url("/api/proxy/x"), Some(TOKEN)).await.status,
        200
    );

    let dir = TempDir::new("prometheus");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: cookiegate\n    static_configs:\n      \
             - targets: [\"{}\"]\n",
            gateway.metrics_addr.unwrap()
        ),
    )
    .unwrap();
    // Prometheus cannot report a port it picked itself: take a free one for its web API.
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _server = Child(
        std::process::Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let query = format!(
        "http://{web}/api/v1/query?query=cookiegate_requests_total%7Broute%3D%22%2Fapi%2Fproxy%22%7D"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let result = loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            client().request(request("GET", &query, None).body(empty()).unwrap()),
        )
        .await;
        if let Ok(Ok(res)) = answer {
            use http_body_util::BodyExt as _;
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if json["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break json;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never scraped the endpoint; its log: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sample = &result["data"]["result"][0];
    assert_eq!(sample["metric"]["method"], "GET", "{result}");
    assert_eq!(sample["metric"]["status"], "2xx", "{result}");
    assert_eq!(sample["value"][1], "1", "{result}");
    gateway.stop().await;
    upstream.stop().await;
}
