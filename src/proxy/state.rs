//! What a request runs on: [`AppState`], built from one config and never changed, and
//! [`Lasting`], what outlives every config (a reload builds the next `AppState` from the
//! previous one, [`AppState::next`]).
//!
//! # What survives a reload, and why
//!
//! A reload swaps the whole `AppState` for new requests; requests, streams and sockets already
//! running keep the `Arc` of the state they started on, so they finish on their old route,
//! upstream and limits. What must not be forgotten across the swap is carried over:
//!
//! - **always** ([`Lasting`], built once and handed from state to state): the revocation list
//!   (a logged-out session must stay refused: forgetting it would let a stolen cookie back in),
//!   the open WebSockets ([`Sockets`]: shutdown closes every one, old state's or new, and the
//!   per-session cap counts them all, so a reload cannot be used to open more), used login
//!   states and seen logout tokens (replay protection: a reload must not reopen a replay
//!   window), and whether the server is draining;
//! - **refreshes in flight** (and just
//!   landed) as long as the IdP and client id are the same: a refresh token redeemed a second
//!   time by a new handler could end the session at an IdP that rotates refresh tokens;
//! - **the token handler as a whole** (the discovered IdP, refreshes in flight, the single
//!   flight that makes concurrent requests share one refresh) when `[session]`, `[oidc]`,
//!   `[store]` and `upstream_timeout` are unchanged: a second refresh of a rotated refresh token would end
//!   the user's session. The cache of opened sessions goes with it: when the keys change, a
//!   cookie sealed with a removed key must no longer open;
//! - **the rate-limit buckets** when `per_second`, `burst` and `key` are unchanged (a reload
//!   must not hand every client a fresh burst); a changed limit starts afresh;
//! - **the shared store's client** (`[store]`) when `[store]` is unchanged;
//! - **the upstream client and its keep-alive pools** when the set of upstream and IdP origins
//!   and `upstream_timeout` (its connect timeout) are unchanged; otherwise a new client, and
//!   the old one's connections close when the last request using them ends.
//!
//! Everything else (routes, CSRF policy, WebSocket settings, `[server]` limits and timeouts) is
//! simply the new config's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::oidc::{LoginMemory, TokenHandler};
use crate::auth::revocation::Revocations;
use crate::config::Config;
use crate::error::BoxError;
use crate::guard::Guards;
use crate::proxy::forward;
use crate::proxy::websocket::Sockets;
use crate::telemetry::metrics::{Metrics, Observer};
use crate::telemetry::request_id::RequestIds;
use crate::upstream::UpstreamClient;

/// What outlives every config: built once by whoever runs the server, and handed from each
/// [`AppState`] to the next at a reload. Long-lived shared things (the TLS certificate, the metrics
/// registry) belong here, not in anything rebuilt from a config.
#[derive(Debug, Default)]
pub struct Lasting {
    /// Sessions logged out before their cookie expired.
    pub(crate) revocations: Arc<Revocations>,
    /// Open WebSockets (the per-session cap, shutdown).
    pub(crate) sockets: Arc<Sockets>,
    /// Used login states and seen logout tokens.
    pub(crate) logins: Arc<LoginMemory>,
    /// Set when shutdown begins: readiness answers 503 from then on.
    draining: AtomicBool,
    /// The TLS listener's certificate, when `[tls]` is configured: a reload installs the new
    /// config's files in it (turning TLS on or off takes a restart).
    pub(crate) tls: Option<Arc<crate::server::tls::ServerTls>>,
    /// The metrics, when `[metrics]` is on: one registry for the process, whatever the
    /// reloads (each state resolves its own routes' handles in it).
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl Lasting {
    /// The same, counting in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The long-lived parts of a server whose listener ends TLS with `tls`.
    pub fn with_tls(tls: Arc<crate::server::tls::ServerTls>) -> Self {
        Self {
            tls: Some(tls),
            ..Self::default()
        }
    }

    /// Marks the server as draining (shutdown has begun).
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Everything a request needs, built from one config and shared read-only; see the module
/// docs for how a reload replaces it.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub(crate) config: Config,
    /// The pooled upstream client (also the token handler's, towards the IdP).
    pub(crate) client: Arc<UpstreamClient>,
    /// CSRF policy, rate limiter, revoked sessions.
    pub(crate) guards: Guards,
    /// The token handler, when `[session]` and `[oidc]` are configured.
    pub(crate) tokens: Option<Arc<TokenHandler>>,
    /// What outlives this config.
    pub(crate) lasting: Arc<Lasting>,
    /// Request ids: generated, or taken from a trusted proxy (the same generator across
    /// reloads, so ids stay unique).
    pub(crate) request_ids: Arc<RequestIds>,
    /// This route table's metric handles, when `[metrics]` is on.
    pub(crate) observer: Option<Arc<Observer>>,
    /// The state shared with other instances, when `[store]` is configured.
    pub(crate) shared: Option<Arc<crate::store::SharedState>>,
}

impl AppState {
    /// Builds the state, including the upstream client, with a fresh [`Lasting`].
    ///
    /// # Errors
    /// When a TLS upstream is configured and no root certificates can be loaded.
    pub fn new(config: Config) -> Result<Self, BoxError> {
        Self::with_lasting(config, Arc::default())
    }

    /// Builds the first state of a server, on the long-lived parts given.
    ///
    /// # Errors
    /// As [`AppState::new`].
    pub fn with_lasting(config: Config, lasting: Arc<Lasting>) -> Result<Self, BoxError> {
        let client = Arc::new(build_client(&config)?);
        let guards = Guards::carry(&config, &lasting, None);
        let shared = config.store.as_ref().map(|store| {
            Arc::new(crate::store::SharedState::new(
                store,
                lasting.metrics.clone(),
            ))
        });
        let tokens = config.session.clone().map(|settings| {
            Arc::new(
                TokenHandler::new(
                    settings,
                    config.server.upstream_timeout,
                    lasting.logins.clone(),
                    None,
                )
                .with_shared(shared.clone()),
            )
        });
        let observer = lasting
            .metrics
            .as_ref()
            .map(|metrics| Arc::new(metrics.for_routes(&config.routes, &client)));
        Ok(Self {
            config,
            client,
            guards,
            tokens,
            lasting,
            request_ids: Arc::new(
                RequestIds::new().map_err(|_| "the system random generator failed")?,
            ),
            observer,
            shared,
        })
    }

    /// The state for a reloaded config, carrying over from this one what must survive (see
    /// the module docs).
    ///
    /// # Errors
    /// As [`AppState::new`], when a new upstream client is needed.
    pub fn next(&self, config: Config) -> Result<Self, BoxError> {
        let old = &self.config;
        let same_timeout = old.server.upstream_timeout == config.server.upstream_timeout;
        let client = if same_timeout && client_targets(old) == client_targets(&config) {
            self.client.clone()
        } else {
            Arc::new(build_client(&config)?)
        };
        // The store's client (and its connections) while `[store]` is the same; the token
        // handler, which holds it, only then.
        let shared = match (&self.shared, &config.store) {
            (Some(shared), Some(new)) if old.store.as_ref().is_some_and(|o| o.is_same(new)) => {
                Some(shared.clone())
            }
            (_, Some(new)) => Some(Arc::new(crate::store::SharedState::new(
                new,
                self.lasting.metrics.clone(),
            ))),
            (_, None) => None,
        };
        let same_store = match (&self.shared, &shared) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let same_session = same_timeout
            && same_store
            && match (&old.session, &config.session) {
                (Some(a), Some(b)) => a.is_same(b),
                _ => false,
            };
        let guards = Guards::carry(
            &config,
            &self.lasting,
            Some((old, &self.guards, same_session)),
        );
        let tokens = match (&self.tokens, config.session.clone()) {
            (Some(tokens), Some(_)) if same_session => Some(tokens.clone()),
            (previous, Some(settings)) => Some(Arc::new(
                TokenHandler::new(
                    settings,
                    config.server.upstream_timeout,
                    self.lasting.logins.clone(),
                    previous.as_deref(),
                )
                .with_shared(shared.clone()),
            )),
            (_, None) => None,
        };
        // The new route table's handles, in the same registry.
        let observer = self
            .lasting
            .metrics
            .as_ref()
            .map(|metrics| Arc::new(metrics.for_routes(&config.routes, &client)));
        Ok(Self {
            config,
            client,
            guards,
            tokens,
            lasting: self.lasting.clone(),
            request_ids: self.request_ids.clone(),
            observer,
            shared,
        })
    }

    /// The shared metrics, when on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.observer.as_ref().map(|o| o.metrics())
    }

    /// Forgets what periodic upkeep forgets: refilled rate-limit buckets, idle upstream
    /// connections, used login states, refresh outcomes past their grace, old revocations.
    pub(crate) fn sweep(&self) {
        if let Some(limiter) = &self.guards.limiter {
            limiter.sweep();
        }
        self.client.sweep();
        match &self.tokens {
            Some(tokens) => tokens.sweep(&self.guards.revocations, &self.guards.opened),
            None => self.guards.revocations.sweep(crate::auth::oidc::now()),
        }
    }

    /// Why the server is not ready for traffic, if it is not: draining after a shutdown
    /// signal, or (with sessions) the IdP's discovery document not loaded yet.
    pub(crate) fn not_ready(&self) -> Option<NotReady> {
        if self.lasting.is_draining() {
            return Some(NotReady::Draining);
        }
        match &self.tokens {
            Some(tokens) if !tokens.is_discovered() => {
                Some(NotReady::Discovery(tokens.discovery_failure()))
            }
            _ => None,
        }
    }
}

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// Shutdown has begun.
    Draining,
    /// The IdP's discovery document is not loaded; the last attempt's public reason, if one
    /// failed.
    Discovery(Option<&'static str>),
}

/// The origins the upstream client pools connections to.
fn client_targets(config: &Config) -> Vec<String> {
    let mut targets: Vec<String> = config
        .routes
        .in_file_order()
        .into_iter()
        .map(|route| {
            let scheme = if route.upstream.is_https() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", route.upstream.authority())
        })
        .collect();
    if let Some(session) = &config.session {
        targets.push(session.oidc.issuer.clone());
    }
    targets.sort();
    targets.dedup();
    targets
}

fn build_client(config: &Config) -> Result<UpstreamClient, BoxError> {
    let issuer = config.session.as_ref().map(|s| s.oidc.issuer.as_str());
    forward::build_client(&config.routes, issuer, config.server.upstream_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn session_config(max_age: &str) -> Config {
        let env = Env::default()
            .with_var(
                "COOKIEGATE_SESSION_KEYS",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .with_var("COOKIEGATE_CLIENT_SECRET", "s");
        Config::from_toml_str_with(
            &format!(
                "[session]\nmax_age = \"{max_age}\"\n[oidc]\nissuer = \"https://idp.example\"\n\
                 client_id = \"c\"\nredirect_uri = \"https://app.example/auth/callback\"\n\
                 [[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"session\"\n"
            ),
            &env,
        )
        .unwrap()
    }

    #[test]
    fn the_token_handler_is_kept_only_while_the_session_settings_are() {
        let first = AppState::new(session_config("8h")).unwrap();
        let same = first.next(session_config("8h")).unwrap();
        let (a, b) = (
            first.tokens.as_ref().unwrap(),
            same.tokens.as_ref().unwrap(),
        );
        assert!(Arc::ptr_eq(a, b));
        assert!(Arc::ptr_eq(&first.guards.opened, &same.guards.opened));
        let changed = same.next(session_config("7h")).unwrap();
        assert!(!Arc::ptr_eq(b, changed.tokens.as_ref().unwrap()));
        assert!(
            !Arc::ptr_eq(&same.guards.opened, &changed.guards.opened),
            "opened sessions are not kept across new session settings"
        );
        assert!(Arc::ptr_eq(
            &first.guards.revocations,
            &changed.guards.revocations
        ));
    }
}
