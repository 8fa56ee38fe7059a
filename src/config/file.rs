//! The TOML file, field for field, as serde reads it.
//!
//! Nothing here is validated beyond TOML types: `config.rs` turns a [`FileConfig`] into a
//! [`Config`](super::Config) and reports every problem with its place. Unknown keys and wrong
//! types are found first, all of them, by `config/schema.rs` (which must list exactly these
//! fields); `deny_unknown_fields` stays as the backstop, so a typo never silently falls back to
//! a default.
//! Defaults live in this file, once, as the `DEFAULT_*` constants.

use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
/// Default request body limit.
pub const DEFAULT_MAX_BODY: &str = "10MiB";
/// Default wait for the upstream's response head.
pub const DEFAULT_UPSTREAM_TIMEOUT: &str = "30s";
/// Default silence allowed on a streaming body in either direction.
pub const DEFAULT_IDLE_TIMEOUT: &str = "5m";
/// Default time a client has to send its request head.
pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
/// Default time in-flight requests get after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
/// Default path of the health endpoint.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
/// Default path of the readiness endpoint.
pub const DEFAULT_READY_PATH: &str = "/readyz";
/// Default session cookie name.
pub const DEFAULT_COOKIE: &str = "auth_token";
/// Default route prefix in zero-config mode.
pub const DEFAULT_PREFIX: &str = "/api/proxy";
/// Default cap on concurrent client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on request header fields (hyper's own default).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default cap on a request head's size.
pub const DEFAULT_MAX_HEADER_BYTES: &str = "64KiB";
/// Default CSRF header for `csrf.mode = "header"`.
pub const DEFAULT_CSRF_HEADER: &str = "x-csrf";
/// Default sustained rate per client when `[rate_limit]` is present.
pub const DEFAULT_PER_SECOND: u32 = 20;
/// Default burst per client when `[rate_limit]` is present.
pub const DEFAULT_BURST: u32 = 40;
/// Default log level when `RUST_LOG` is unset.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default log format.
pub const DEFAULT_LOG_FORMAT: &str = "text";
/// Default address of the metrics listener, when `[metrics]` is present.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default name of the encrypted session cookie.
pub const DEFAULT_SESSION_COOKIE: &str = "__Host-cookiegate";
/// Default environment variable holding the session keys.
pub const DEFAULT_KEYS_ENV: &str = "COOKIEGATE_SESSION_KEYS";
/// Default absolute session lifetime.
pub const DEFAULT_SESSION_MAX_AGE: &str = "8h";
/// Default environment variable holding the OIDC client secret.
pub const DEFAULT_CLIENT_SECRET_ENV: &str = "COOKIEGATE_CLIENT_SECRET";
/// Default scopes asked for at login.
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Default margin before the access token's expiry at which it is refreshed.
pub const DEFAULT_REFRESH_BEFORE: &str = "60s";
/// Default base path of the login, user, logout and back-channel endpoints.
pub const DEFAULT_AUTH_PATH: &str = "/auth";
/// Default silence after which a WebSocket is closed.
pub const DEFAULT_WS_IDLE_TIMEOUT: &str = "5m";
/// Default hard cap on a WebSocket's life.
pub const DEFAULT_WS_MAX_LIFETIME: &str = "24h";
/// Default cap on open WebSockets per session.
pub const DEFAULT_WS_MAX_PER_SESSION: usize = 16;
/// Default prefix of every key cookiegate writes in the store.
pub const DEFAULT_STORE_KEY_PREFIX: &str = "cookiegate:";
/// Default bound on one store call.
pub const DEFAULT_STORE_TIMEOUT: &str = "250ms";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen = "127.0.0.1:4000"`.
    pub listen: Option<String>,
    /// `[server]`.
    #[serde(default)]
    pub server: ServerFile,
    /// `[log]`.
    #[serde(default)]
    pub log: LogFile,
    /// `[metrics]`; absent = no metrics.
    pub metrics: Option<MetricsFile>,
    /// `[csrf]`.
    #[serde(default)]
    pub csrf: CsrfFile,
    /// `[rate_limit]`; absent = no rate limit.
    pub rate_limit: Option<RateLimitFile>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// `[session]`: the encrypted session cookie of logged-in users; with `[oidc]`.
    pub session: Option<SessionFile>,
    /// `[oidc]`: the identity provider cookiegate logs users in with; with `[session]`.
    pub oidc: Option<OidcFile>,
    /// `[websocket]`.
    #[serde(default)]
    pub websocket: WebSocketFile,
    /// `[tls]`: absent = plain HTTP.
    pub tls: Option<TlsFile>,
    /// `[store]`: Valkey/Redis for state shared by instances; absent = in-process state.
    pub store: Option<StoreFile>,
}

/// `[tls]`: the listener ends TLS with this certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain, leaf first.
    pub cert: Option<String>,
    /// PEM private key of the leaf (PKCS#8, RSA or EC).
    pub key: Option<String>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// One node: `redis://host:port/db` or `rediss://` (TLS).
    pub url: Option<String>,
    /// A cluster's seed nodes.
    pub urls: Option<Vec<String>>,
    /// Environment variable holding the password (never in the file).
    pub password_env: Option<String>,
    /// Prepended to every key.
    pub key_prefix: Option<String>,
    /// Bound on one store call (`"250ms"`).
    pub timeout: Option<String>,
    /// `closed` | `open`.
    pub on_failure: Option<String>,
    /// `cookie` | `store`.
    pub sessions: Option<String>,
}

/// `[session]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Name of the encrypted session cookie (split as `NAME.0`, `NAME.1`, ... when large).
    pub cookie: Option<String>,
    /// Environment variable holding comma-separated base64 32-byte keys.
    pub keys_env: Option<String>,
    /// Absolute session lifetime (`"8h"`).
    pub max_age: Option<String>,
    /// `lax` | `strict`.
    pub same_site: Option<String>,
    /// `auto` | `always` | `never`.
    pub secure: Option<String>,
}

/// `[oidc]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The issuer; discovery at `ISSUER/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    /// The client id registered at the IdP.
    pub client_id: Option<String>,
    /// Environment variable holding the client secret (`client_secret_basic`).
    pub client_secret_env: Option<String>,
    /// Scopes asked for at login.
    pub scopes: Option<Vec<String>>,
    /// Public URL of the callback; cookiegate serves its path.
    pub redirect_uri: Option<String>,
    /// Where the IdP sends the browser after logout.
    pub post_logout_redirect_uri: Option<String>,
    /// Refresh when the access token expires within this.
    pub refresh_before: Option<String>,
    /// Base of `PATH/login`, `PATH/user`, `PATH/logout`, `PATH/backchannel`.
    pub path: Option<String>,
    /// Extra authorization-request parameters.
    pub extra_params: Option<std::collections::BTreeMap<String, String>>,
}

/// `[server]`: limits and timeouts shared by every route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Default request body limit (`"10MiB"`).
    pub max_body: Option<String>,
    /// Wait for the upstream's response head (`"30s"`).
    pub upstream_timeout: Option<String>,
    /// Silence allowed on a body in either direction (`"5m"`).
    pub idle_timeout: Option<String>,
    /// Time a client has to send its request head (`"10s"`).
    pub header_timeout: Option<String>,
    /// Time in-flight requests get on shutdown (`"30s"`).
    pub shutdown_grace: Option<String>,
    /// Path answered by cookiegate itself with `200 {"status":"ok"}`; `""` turns it off.
    pub health_path: Option<String>,
    /// Path answered by cookiegate itself with its readiness (`/readyz`); `""` turns it off.
    pub ready_path: Option<String>,
    /// Runtime worker threads; 0 or absent = one per CPU.
    pub workers: Option<usize>,
    /// Concurrent client connections; excess are answered 503 and closed.
    pub max_connections: Option<usize>,
    /// Request header fields allowed (more -> 431).
    pub max_headers: Option<usize>,
    /// Size a request head may take (larger -> 431), at least `"8KiB"`.
    pub max_header_bytes: Option<String>,
    /// CIDRs of proxies in front whose `X-Forwarded-For`/`-Proto`/`-Host` are believed.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[csrf]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrfFile {
    /// `origin` (default) | `header` | `off`.
    pub mode: Option<String>,
    /// Extra origins allowed for unsafe methods.
    pub allowed_origins: Option<Vec<String>>,
    /// The header `mode = "header"` requires.
    pub header: Option<String>,
}

/// `[rate_limit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Sustained requests per second per client.
    pub per_second: Option<u32>,
    /// Requests allowed at once.
    pub burst: Option<u32>,
    /// `ip` | `session` | `ip+session`.
    pub key: Option<String>,
    /// Moved to `[server] trusted_proxies`; read only to say so.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// A `tracing` filter such as `"info"` or `"cookiegate=debug"`; `RUST_LOG` wins when set.
    pub level: Option<String>,
    /// `text` | `json` (one object per line).
    pub format: Option<String>,
    /// Write the access log (one line per request; health probes never).
    pub access: Option<bool>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// Address of the metrics listener (`GET /metrics`), never the public one.
    pub listen: Option<String>,
}

/// One `[[routes]]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Path prefix, matched on a segment boundary.
    pub prefix: Option<String>,
    /// `http://` or `https://` base URL; its path is the base the remainder is appended to.
    pub upstream: Option<String>,
    /// Name of the session cookie.
    pub cookie: Option<String>,
    /// `required` | `optional` | `none` | `session`.
    pub auth: Option<String>,
    /// Allowed methods; empty or absent = all but CONNECT and TRACE.
    pub methods: Option<Vec<String>>,
    /// Per-route body limit.
    pub max_body: Option<String>,
    /// Forward the browser's `Cookie` header upstream (default: only when `auth = "none"`).
    pub forward_cookies: Option<bool>,
    /// The route carries WebSockets (an upgrade to any other route gets 400).
    pub websocket: Option<bool>,
}

/// `[websocket]`: how sockets opened through cookiegate are guarded and ended.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketFile {
    /// Origins allowed to open sockets besides the request's own (`scheme://host[:port]`).
    pub allowed_origins: Option<Vec<String>>,
    /// Let clients that send no `Origin` (non-browser clients) open sockets.
    pub allow_missing_origin: Option<bool>,
    /// No frame either way this long -> closed (`"5m"`).
    pub idle_timeout: Option<String>,
    /// Hard cap on a socket's life (`"24h"`).
    pub max_lifetime: Option<String>,
    /// Open sockets per session (per cookie value on cookie routes); over -> 429.
    pub max_per_session: Option<usize>,
}
