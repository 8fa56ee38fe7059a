//! The `cookiegate` binary itself: `check` output and exit codes, zero-config mode, signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_cookiegate");

/// A command for the binary in `dir`, with the environment it reads cleared.
pub(crate) fn cookiegate(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("COOKIEGATE_CONFIG")
        .env_remove("BACKEND_URL")
        .env_remove("RUST_LOG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

const GOOD: &str = r#"
listen = "127.0.0.1:4000"
[[routes]]
prefix = "/api/proxy"
upstream = "http://127.0.0.1:8000"
max_body = "1GiB"
[[routes]]
prefix = "/api/chatkit"
upstream = "http://127.0.0.1:8000/chatkit"
cookie = "taskflow_id_token"
methods = ["POST"]
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:3000"
auth = "none"
"#;

#[test]
fn check_prints_the_route_table_and_exits_0() {
    let dir = TempDir::new("check-ok");
    std::fs::write(dir.join("gate.toml"), GOOD).unwrap();
    let out = run(cookiegate(&dir).args(["check", "--config", "gate.toml"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("config ok: gate.toml"), "{stdout}");
    assert!(stdout.contains("listen 127.0.0.1:4000"), "{stdout}");
    let row = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(prefix))
            .unwrap_or_else(|| panic!("no row for {prefix} in {stdout}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("/api/proxy"),
        [
            "/api/proxy",
            "http://127.0.0.1:8000",
            "required",
            "auth_token",
            "all",
            "1.0",
            "GiB"
        ]
    );
    assert_eq!(
        row("/api/chatkit")[..5],
        [
            "/api/chatkit",
            "http://127.0.0.1:8000/chatkit",
            "required",
            "taskflow_id_token",
            "POST"
        ]
    );
    assert_eq!(row("/")[..4], ["/", "http://127.0.0.1:3000", "none", "-"]);
    // The flag may also come before the command.
    let out = run(cookiegate(&dir).args(["--config", "gate.toml", "check"]));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_lists_every_problem_and_exits_2() {
    let dir = TempDir::new("check-bad");
    std::fs::write(
        dir.join("cookiegate.toml"),
        r#"
listen = "localhost"
[server]
idle_timeout = "forever"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:8000"
[[routes]]
prefix = "/files"
upstream = "ftp://files.example"
auth = "sometimes"
"#,
    )
    .unwrap();
    // ./cookiegate.toml is found without a flag.
    let out = run(cookiegate(&dir).arg("check"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for want in [
        "4 problems in config",
        "listen: must be an IP address and port",
        "server.idle_timeout: `forever` is not a duration",
        "routes[1].upstream: scheme must be http or https",
        "routes[1].auth: `sometimes` must be one of required, optional, none",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn check_lists_the_token_handlers_problems_without_secrets_and_exits_2() {
    let dir = TempDir::new("check-session");
    std::fs::write(
        dir.join("cookiegate.toml"),
        r#"
[session]
cookie = "__Host-cookiegate"
[oidc]
issuer = "http://idp.example.com"
client_id = "cookiegate"
redirect_uri = "not a url"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:8000"
auth = "session"
"#,
    )
    .unwrap();
    let out = run(cookiegate(&dir)
        .arg("check")
        .env("COOKIEGATE_SESSION_KEYS", "dG9vLXNob3J0LWtleQ==")
        .env_remove("COOKIEGATE_CLIENT_SECRET"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for want in [
        "session.keys_env: COOKIEGATE_SESSION_KEYS: key 1 is 13 bytes, needs 32",
        "oidc.issuer: `http://idp.example.com` must use https",
        "oidc.client_secret_env: environment variable COOKIEGATE_CLIENT_SECRET is not set",
        "oidc.redirect_uri: `not a url`",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("dG9vLXNob3J0"),
        "no key material:\n{stderr}"
    );

    // With good values, the table names the session, the IdP and the endpoints.
    std::fs::write(
        dir.join("cookiegate.toml"),
        r#"
[session]
[oidc]
issuer = "https://idp.example.com"
client_id = "cookiegate"
redirect_uri = "https://app.example.com/auth/callback"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:8000"
auth = "session"
"#,
    )
    .unwrap();
    let out = run(cookiegate(&dir)
        .arg("check")
        .env(
            "COOKIEGATE_SESSION_KEYS",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("COOKIEGATE_CLIENT_SECRET", "s3cret"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for want in [
        "session cookie __Host-cookiegate (1 keys, max_age 8h, SameSite=Lax, Secure), oidc https://idp.example.com as cookiegate",
        "endpoints /auth/login /auth/user /auth/logout /auth/backchannel, callback /auth/callback",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("s3cret") && !stdout.contains("AAECAwQF"));
}

#[test]
fn check_reports_unknown_keys_wrong_types_and_bad_values_in_one_run() {
    let dir = TempDir::new("check-all");
    std::fs::write(
        dir.join("gate.toml"),
        r#"
[server]
max_connections = "many"
idle_timeout = "forever"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:8000"
[[routes]]
prefix = "/files"
upstrem = "http://127.0.0.1:8001"
upstream = "ftp://files.example"
"#,
    )
    .unwrap();
    let out = run(cookiegate(&dir).args(["check", "--config", "gate.toml"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for want in [
        "4 problems in config from gate.toml",
        "routes[1].upstrem: unknown key (did you mean upstream?)",
        "server.max_connections: expected an integer, found a string",
        "server.idle_timeout: `forever` is not a duration",
        "routes[1].upstream: scheme must be http or https",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_keys_and_missing_files_exit_2() {
    let dir = TempDir::new("check-unknown");
    std::fs::write(
        dir.join("typo.toml"),
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\ncokie = \"sid\"\n",
    )
    .unwrap();
    let out = run(cookiegate(&dir).args(["check", "--config", "typo.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("routes[0].cokie: unknown key (did you mean cookie?)"),
        "{}",
        text(&out.stderr)
    );

    let out = run(cookiegate(&dir).args(["check", "--config", "absent.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config absent.toml"));
}

#[test]
fn nothing_configured_explains_the_options_and_exits_2() {
    let dir = TempDir::new("check-none");
    for args in [&["check"][..], &[][..]] {
        let out = run(cookiegate(&dir).args(args));
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--upstream") && stderr.contains("cookiegate demo"),
            "{stderr}"
        );
    }
}

#[test]
fn config_sources_follow_flag_env_and_backend_url() {
    let dir = TempDir::new("sources");
    std::fs::write(dir.join("env.toml"), GOOD).unwrap();
    let out = run(cookiegate(&dir)
        .arg("check")
        .env("COOKIEGATE_CONFIG", "env.toml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("config ok: env.toml"));

    let out = run(cookiegate(&dir)
        .arg("check")
        .env("BACKEND_URL", "http://127.0.0.1:8123/v1"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("/api/proxy  http://127.0.0.1:8123/v1  required  auth_token"),
        "{stdout}"
    );

    let out = run(cookiegate(&dir).args([
        "check",
        "--upstream",
        "http://127.0.0.1:9/",
        "--prefix",
        "/bff",
        "--cookie",
        "sid",
        "--listen",
        "127.0.0.1:4999",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("listen 127.0.0.1:4999"), "{stdout}");
    assert!(
        stdout.contains("/bff    http://127.0.0.1:9  required  sid"),
        "{stdout}"
    );

    let out = run(cookiegate(&dir).args(["check", "--upstream", "gopher://x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--upstream: scheme must be http or https"));
    assert!(text(&out.stderr).contains("in config from command-line flags"));

    // A bad $BACKEND_URL is named as such, not as a key of a file that does not exist.
    let out = run(cookiegate(&dir)
        .arg("check")
        .env("BACKEND_URL", "gopher://x"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("BACKEND_URL: scheme must be http or https")
            && !stderr.contains("routes[0]")
            && stderr.contains("from environment (BACKEND_URL)"),
        "{stderr}"
    );
    let out = run(cookiegate(&dir)
        .arg("check")
        .env("BACKEND_URL", "http://127.0.0.1:8123"));
    assert!(
        text(&out.stdout).contains("config ok: environment (BACKEND_URL)"),
        "{}",
        text(&out.stdout)
    );

    let out =
        run(cookiegate(&dir).args(["check", "--config", "env.toml", "--upstream", "http://x"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_config_is_refused_before_binding() {
    // The listen port is taken; a bad config must still be reported as a config error (2), not
    // as a bind failure (1).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("before-bind");
    let out = run(cookiegate(&dir).args([
        "--upstream",
        "ftp://nope",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = run(cookiegate(&dir).args([
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot listen on"));
}

/// A running binary whose stderr lines are collected.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The thread that reads stderr into `lines`; it ends when the child's stderr closes.
    reader: Option<std::thread::JoinHandle<()>>,
    pub log: Vec<String>,
}

impl Running {
    /// Starts the binary and waits for its "listening" line; returns it and the address.
    pub fn start(mut cmd: Command) -> (Self, std::net::SocketAddr) {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            lines: rx,
            reader: Some(reader),
            log: Vec::new(),
        };
        let addr = loop {
            let line = running
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no listening line; log so far: {:#?}", running.log));
            running.log.push(line.clone());
            // JSON lines (`[log] format = "json"`) carry it as a field.
            if let Some(addr) = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["addr"].as_str().map(str::to_string))
            {
                break addr.parse().unwrap();
            }
            if let Some(at) = line.find("addr=") {
                let addr = line[at + 5..].split_whitespace().next().unwrap();
                break addr.parse().unwrap();
            }
        };
        (running, addr)
    }

    /// Waits (up to 30 s) for a log line containing `needle`, keeping every line read, and
    /// returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line with {needle:?}; log: {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Sends a signal (`HUP`, `TERM`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit on its own; returns its exit code and the whole log.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stderr reader did not panic");
        }
        (status.code(), self.log.join("\n"))
    }

    /// [`Running::terminate`] off the async runtime, so the test's own clients (whose
    /// connection tasks run on that runtime) can still answer the server while it shuts down.
    pub async fn terminate_async(self) -> (Option<i32>, String) {
        tokio::task::spawn_blocking(move || self.terminate())
            .await
            .unwrap()
    }

    /// Sends SIGTERM, waits for exit, and returns the exit code and the whole log.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stderr reader did not panic");
        }
        (status.code(), self.log.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn zero_config_mode_proxies_and_stops_cleanly_on_sigterm() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("zero-config");
    let mut cmd = cookiegate(&dir);
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("BACKEND_URL", upstream.url());
    let (running, addr) = Running::start(cmd);
    let answer = get(
        &format!("http://{addr}/api/proxy/api/tasks?x=1"),
        Some("zc-token"),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.target, "/api/tasks?x=1");
    assert_eq!(seen.header("authorization"), Some("Bearer zc-token"));
    let answer = get(&format!("http://{addr}/healthz"), None).await;
    assert_eq!(answer.status, 200);
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("shutdown signal received"), "{log}");
}

#[tokio::test]
async fn zero_config_flags_pick_prefix_and_cookie() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("zero-config-flags");
    let mut cmd = cookiegate(&dir);
    cmd.args([
        "--upstream",
        &format!("{}/v2", upstream.url()),
        "--listen",
        "127.0.0.1:0",
        "--prefix",
        "/bff",
        "--cookie",
        "sid",
    ]);
    let (running, addr) = Running::start(cmd);
    let res = send(
        &client(),
        request("GET", &format!("http://{addr}/bff/me"), None)
            .header("cookie", "sid=s1")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.target, "/v2/me");
    assert_eq!(seen.header("authorization"), Some("Bearer s1"));
    let (code, _) = running.terminate_async().await;
    assert_eq!(code, Some(0));
}

#[test]
fn demo_help_lists_only_the_flag_it_uses_and_refuses_the_others() {
    let dir = TempDir::new("demo-help");
    let out = run(cookiegate(&dir).args(["demo", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("--listen"), "{help}");
    for ignored in ["--config", "--upstream", "--cookie", "--prefix"] {
        assert!(
            !help.contains(ignored),
            "demo --help lists {ignored}:\n{help}"
        );
    }
    let out = run(cookiegate(&dir).args(["--upstream", "http://127.0.0.1:8000", "demo"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("only --listen"),
        "{}",
        text(&out.stderr)
    );
    // `check` still takes the run flags on either side of its name.
    let out = run(cookiegate(&dir).args(["check", "--upstream", "http://127.0.0.1:8000"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(cookiegate(&dir).args(["--upstream", "http://127.0.0.1:8000", "check"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_port_in_use_says_how_to_choose_another() {
    let dir = TempDir::new("port-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [
        vec!["--upstream", "http://127.0.0.1:8000", "--listen", &addr],
        vec!["demo", "--listen", &addr],
    ] {
        let out = run(cookiegate(&dir).args(&args));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("--listen"),
            "{args:?}: {stderr}"
        );
    }
    drop(taken);
}
