//! The gateway under test: the real `cookiegate` binary as a child process, and what `/proc`
//! says about it (RSS, high-water mark, open descriptors).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{HEADER_TIMEOUT, MAX_BODY, MAX_CONNECTIONS, MAX_HEADER_BYTES, Options};

/// As if behind a local reverse proxy: the load's clients name themselves in `X-Forwarded-For`,
/// so each gets its own bucket and only the flood kind is limited.
const RATE_LIMIT: &str = r#"[rate_limit]
per_second = 100
burst = 200
key = "ip"
"#;

pub(crate) struct Gateway {
    child: Option<Child>,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
}

impl Gateway {
    pub(crate) fn start(options: &Options, upstream: SocketAddr) -> anyhow::Result<Self> {
        let config = options.dir.join("cookiegate.toml");
        let log = options.dir.join("cookiegate.log");
        std::fs::write(
            &config,
            format!(
                r#"# Written by examples/load (scripts/load-test.sh).
listen = "127.0.0.1:0"

[server]
max_body = "{max_body}"
max_header_bytes = "{max_header}"
max_connections = {max_connections}
header_timeout = "{header_timeout}s"
idle_timeout = "3s"
upstream_timeout = "5s"
shutdown_grace = "5s"
trusted_proxies = ["127.0.0.1/32"]

[log]
level = "info,cookiegate::access=off"

{rate_limit}
[[routes]]
prefix = "/api"
upstream = "http://{upstream}/v1"
cookie = "auth_token"
"#,
                max_body = MAX_BODY,
                max_header = MAX_HEADER_BYTES,
                max_connections = MAX_CONNECTIONS,
                header_timeout = HEADER_TIMEOUT.as_secs(),
                rate_limit = if options.rate_limit { RATE_LIMIT } else { "" },
            ),
        )?;
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(&options.gateway)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("COOKIEGATE_CONFIG")
            .env_remove("BACKEND_URL")
            .envs(
                crate::MALLOC_FIXED
                    .iter()
                    .copied()
                    .filter(|_| options.malloc_fixed),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", options.gateway.display()))?;
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find(|l| l.contains("cookiegate listening"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
                .and_then(|a| a.parse().ok())
            {
                return Ok(Self {
                    child: Some(child),
                    pid,
                    addr,
                    log,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("gateway exited at start ({status}):\n{text}");
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("gateway did not log its address within 15 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (or why there is none).
    pub(crate) async fn terminate(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already gone".into();
        };
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = child.kill();
            return "could not send SIGTERM".into();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(err) => return format!("wait failed: {err}"),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        "did not exit within 15 s of SIGTERM (killed)".into()
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Memory and descriptors of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proc {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) fds: usize,
}

impl Proc {
    pub(crate) fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid} is gone"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            fds: Self::fds(pid)?,
        })
    }

    pub(crate) fn fds(pid: u32) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// What the open descriptors are (`socket` x 3, `anon_inode:[eventpoll]` x 1, ...).
    pub(crate) fn fd_kinds(pid: u32) -> String {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for entry in dir.flatten() {
                let target = std::fs::read_link(entry.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let kind = target.split(':').next().unwrap_or_default().to_string();
                let kind = if kind.starts_with('/') { target } else { kind };
                *kinds.entry(kind).or_default() += 1;
            }
        }
        kinds
            .iter()
            .map(|(k, n)| format!("{k} x {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Samples the gateway while the load runs: the descriptor peak (every 250 ms; the RSS peak
/// comes from VmHWM) and RSS every 5 s, to tell a plateau (caches) from a climb (a leak).
pub(crate) struct Sampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, Vec<u64>)>,
}

impl Sampler {
    pub(crate) fn start(pid: u32) -> Self {
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut peak = 0;
            let mut rss = Vec::new();
            let started = Instant::now();
            let mut next_rss = started;
            loop {
                peak = peak.max(Proc::fds(pid).unwrap_or(0));
                if Instant::now() >= next_rss {
                    rss.push(Proc::read(pid).map_or(0, |p| p.rss_kib));
                    next_rss += Duration::from_secs(5);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = rx.changed() => return (peak, rss),
                }
            }
        });
        Self { stop, task }
    }

    /// The descriptor peak and the RSS samples (KiB, one per 5 s).
    pub(crate) async fn stop(self) -> (usize, Vec<u64>) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
