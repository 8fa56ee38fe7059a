//! Real Valkey/Redis servers for the shared-state tests: Debian's `redis-server` (7.0) on
//! 127.0.0.1, one node or a three-node cluster, started by the test and killed by PID when
//! dropped. `.ci/run` installs the package; a machine without it fails these tests, saying so.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::*;

/// A running `redis-server`.
pub struct RedisNode {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

/// A port free right now on 127.0.0.1 (redis-server cannot listen on port 0 and report it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl RedisNode {
    /// Starts a node on a free port and waits until it answers `PING`.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, free_port(), &[]).await
    }

    /// Starts a node on `port` with extra arguments (`--cluster-enabled yes`, ...).
    pub async fn start_with(name: &str, port: u16, extra: &[&str]) -> Self {
        let dir = TempDir::new(&format!("redis-{name}-{port}"));
        let mut node = Self {
            child: None,
            port,
            dir,
        };
        node.spawn(extra).await;
        node
    }

    async fn spawn(&mut self, extra: &[&str]) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "local"])
            .args(extra)
            .current_dir(&*self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (apt-get install redis-server; .ci/run installs it)");
        self.child = Some(child);
        let port = self.port;
        within("redis-server to answer PING", async {
            loop {
                // Raw RESP, so a node with `--requirepass` counts as up too (it answers
                // `-NOAUTH`): what matters here is that it answers.
                if let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut answer = [0u8; 64];
                    if conn.write_all(b"PING\r\n").await.is_ok()
                        && matches!(conn.read(&mut answer).await, Ok(n) if n > 0)
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the node (SIGKILL) and waits for it: the store is gone, its data with it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (after [`RedisNode::kill`]).
    pub async fn restart(&mut self, extra: &[&str]) {
        self.kill().await;
        self.spawn(extra).await;
    }

    /// Runs one command on the node, on a connection of its own.
    pub async fn command(&self, args: &[&str]) -> ::redis::Value {
        let client = ::redis::Client::open(self.url().as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = ::redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// Blocks the node for `seconds` (`DEBUG SLEEP`), from a task of its own: a slow store.
    pub fn stall(&self, seconds: f64) -> tokio::task::JoinHandle<()> {
        let url = self.url();
        tokio::spawn(async move {
            let client = ::redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: ::redis::RedisResult<::redis::Value> = ::redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(seconds)
                .query_async(&mut conn)
                .await;
        })
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// Three masters, no replicas, all 16384 slots assigned (`redis-cli --cluster create`).
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

pub const CLUSTER_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

impl RedisCluster {
    pub async fn start(name: &str) -> Self {
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(
                RedisNode::start_with(&format!("{name}-{i}"), free_port(), CLUSTER_ARGS).await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("redis-cli runs (redis-tools, installed with redis-server)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        within("the cluster to agree it is ok", async {
            loop {
                let mut ok = 0;
                for node in &cluster.nodes {
                    let info = match node.command(&["CLUSTER", "INFO"]).await {
                        ::redis::Value::BulkString(bytes) => {
                            String::from_utf8_lossy(&bytes).into_owned()
                        }
                        ::redis::Value::VerbatimString { text, .. } => text,
                        _ => String::new(),
                    };
                    if info.contains("cluster_state:ok") {
                        ok += 1;
                    }
                }
                if ok == cluster.nodes.len() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }
}
