//! The real identity provider of the token handler's tests: oidc-provider 9 (`tests/idp/`),
//! started by the test on 127.0.0.1 and stopped by it (killed by PID on drop otherwise).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::*;

/// A running test IdP.
pub struct Idp {
    child: Option<Child>,
    pub issuer: String,
}

impl Idp {
    /// Starts `node tests/idp/server.mjs` with these environment settings (`IDP_*`, see
    /// tests/idp/README.md) and waits for its one line saying where it listens.
    pub async fn start(env: &[(&str, String)]) -> Self {
        let root = env!("CARGO_MANIFEST_DIR");
        // `cargo test` on a fresh machine: install the IdP's pinned npm packages once.
        static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        INSTALLED
            .get_or_init(|| async {
                let status = Command::new("bash")
                    .arg(format!("{root}/tests/idp/install.sh"))
                    .stdout(Stdio::null())
                    .status()
                    .await
                    .expect("bash runs tests/idp/install.sh");
                assert!(status.success(), "tests/idp/install.sh failed (npm ci)");
            })
            .await;
        let mut command = Command::new("node");
        command
            .arg(format!("{root}/tests/idp/server.mjs"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("IDP_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .expect("node runs tests/idp/server.mjs (tests/idp/install.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let line = within("the test IdP to start", async {
            let mut lines = BufReader::new(stdout).lines();
            lines
                .next_line()
                .await
                .unwrap()
                .expect("the IdP's start line")
        })
        .await;
        let started: serde_json::Value = serde_json::from_str(&line).unwrap();
        Self {
            child: Some(child),
            issuer: started["issuer"].as_str().unwrap().to_string(),
        }
    }

    /// An IdP that is not running (in place of one a test stopped early).
    pub fn placeholder() -> Self {
        Self {
            child: None,
            issuer: String::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The counters of user `sub` (code and refresh grants, revocations, ...).
    pub async fn stats(&self, sub: &str) -> serde_json::Value {
        get(&self.url(&format!("/test/stats?sub={sub}")), None)
            .await
            .json()
    }

    /// POSTs to a `/test/` endpoint and returns the JSON answer.
    pub async fn test_post(&self, path: &str, form: &str) -> Answer {
        let req = request("POST", &self.url(path), None)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(form.to_string()))
            .unwrap();
        send(&client(), req).await
    }

    /// Whether the IdP considers `access_token` active (its signature, expiry and grant).
    pub async fn introspect(&self, access_token: &str) -> serde_json::Value {
        self.test_post("/test/introspect", &format!("token={access_token}"))
            .await
            .json()
    }

    /// Stops the IdP (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}
