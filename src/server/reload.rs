//! The running state and its replacement at a reload (SIGHUP in the binary).
//!
//! [`Live`] holds the current [`AppState`]; every request takes an `Arc` of it as it starts
//! (a read lock and a reference count: no allocation, no waiting, measured in BENCHMARKS.md)
//! and keeps it to its end, so a reload never changes a request, a stream or a WebSocket
//! midway. [`Live::reload`] validates first: an invalid config changes nothing and logs every
//! problem, one line each; a valid one is built on the running state ([`AppState::next`], whose
//! docs say what survives and why) and swapped in for new requests and connections. Settings
//! only a restart can change are logged (`listen changed from X to Y: restart to apply`) and
//! the rest still applies.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::proxy::{AppState, Lasting};

/// The current state, shared by the accept loop, every connection and whoever reloads.
/// Cloning is cheap (one `Arc`).
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: RwLock<Arc<AppState>>,
    /// Bumped at every swap, so the accept loop can start what a new state needs (IdP
    /// discovery) and pick up its connection settings.
    swapped: watch::Sender<u64>,
}

impl From<Arc<AppState>> for Live {
    fn from(state: Arc<AppState>) -> Self {
        Self::new(state)
    }
}

impl Live {
    /// Holds `state` as the current one.
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(state),
                swapped: watch::channel(0).0,
            }),
        }
    }

    /// The state new requests run on.
    pub fn current(&self) -> Arc<AppState> {
        // A poisoned lock still holds a whole state: the swap is a single assignment.
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What outlives every config.
    pub fn lasting(&self) -> Arc<Lasting> {
        self.current().lasting.clone()
    }

    /// Waits for swaps (the accept loop's).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.swapped.subscribe()
    }

    /// Applies a reloaded config, or keeps the running one and logs why: each problem on its
    /// own line at `error`. Returns whether the new config was applied.
    pub fn reload(&self, loaded: Result<Config, ConfigError>) -> bool {
        let config = match loaded {
            Ok(config) => config,
            Err(err) => {
                let problems = match err {
                    ConfigError::Invalid(problems) => problems,
                    // A syntax error's snippet spans lines: one line in the log all the same.
                    other => vec![
                        other
                            .to_string()
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && *l != "|")
                            .collect::<Vec<_>>()
                            .join(" "),
                    ],
                };
                tracing::error!(
                    problems = problems.len(),
                    "config reload refused: still serving the running config"
                );
                for problem in &problems {
                    tracing::error!("config reload refused: {problem}");
                }
                return false;
            }
        };
        let running = self.current();
        for line in config.needs_restart(&running.config) {
            tracing::warn!("{line}");
        }
        let next = match running.next(config) {
            Ok(next) => Arc::new(next),
            Err(err) => {
                tracing::error!(error = %err, "config reload refused: still serving the running config");
                return false;
            }
        };
        // Only once the new state is built: a refused reload changes nothing, TLS included.
        reload_tls(&running.lasting, &next.config);
        let routes = next.config.routes.in_file_order().len();
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = next;
        self.inner.swapped.send_modify(|n| *n += 1);
        tracing::info!(routes, "config reloaded: new requests use it");
        true
    }
}

/// The TLS listener's certificate and key from the reloaded config, installed before the new
/// state is swapped in, so new handshakes use them and live connections keep theirs. The
/// files were read and checked (chain, key, the key matching the certificate) when the config
/// was validated: a bad file made the whole reload invalid, and the old certificate stays.
/// Turning TLS on or off needs a new listener: logged, and the listener stays as it is.
fn reload_tls(lasting: &Lasting, config: &Config) {
    match (&lasting.tls, &config.tls) {
        (Some(server), Some(new)) => {
            server.install(&new.loaded);
            tracing::info!(
                cert = %new.cert.display(),
                key = %new.key.display(),
                "TLS certificate reloaded (new handshakes use it)"
            );
        }
        (Some(_), None) => {
            tracing::warn!("[tls] removed: the listener keeps serving TLS; restart to apply");
        }
        (None, Some(_)) => {
            tracing::warn!("[tls] added: the listener keeps serving plain HTTP; restart to apply");
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> Config {
        Config::from_toml_str(&format!(
            "[rate_limit]\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:1\"\n"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_reload_swaps_the_state_and_keeps_what_must_survive() {
        let live = Live::new(Arc::new(AppState::new(config("/a")).unwrap()));
        let before = live.current();
        let swapped = live.subscribe();
        assert!(live.reload(Ok(config("/b"))));
        assert!(swapped.has_changed().unwrap());
        let after = live.current();
        assert!(after.config.routes.find("/b/x").is_some());
        assert!(after.config.routes.find("/a/x").is_none());
        assert!(
            before.config.routes.find("/a/x").is_some(),
            "old state untouched"
        );
        assert!(Arc::ptr_eq(&before.lasting, &after.lasting));
        assert!(Arc::ptr_eq(
            &before.guards.revocations,
            &after.guards.revocations
        ));
        assert!(Arc::ptr_eq(&before.guards.sockets, &after.guards.sockets));
        // Same limit: same buckets. Same upstream origins: same pools.
        assert!(Arc::ptr_eq(
            before.guards.limiter.as_ref().unwrap(),
            after.guards.limiter.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&before.client, &after.client));
    }

    #[tokio::test]
    async fn an_invalid_config_changes_nothing() {
        let live = Live::new(Arc::new(AppState::new(config("/a")).unwrap()));
        let before = live.current();
        assert!(!live.reload(Err(ConfigError::Invalid(vec!["x: bad".into()]))));
        assert!(Arc::ptr_eq(&before, &live.current()));
    }

    #[tokio::test]
    async fn a_changed_limit_starts_afresh() {
        let live = Live::new(Arc::new(AppState::new(config("/a")).unwrap()));
        let before = live.current();
        let changed = Config::from_toml_str(
            "[rate_limit]\nburst = 1\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:2\"\n",
        )
        .unwrap();
        assert!(live.reload(Ok(changed)));
        let after = live.current();
        assert!(!Arc::ptr_eq(
            before.guards.limiter.as_ref().unwrap(),
            after.guards.limiter.as_ref().unwrap()
        ));
        assert!(
            !Arc::ptr_eq(&before.client, &after.client),
            "new origin, new client"
        );
    }
}
