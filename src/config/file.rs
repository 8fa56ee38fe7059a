//! The TOML file, field for field, as serde reads it.
//!
//! Nothing here is validated beyond TOML types: `config.rs` turns a [`FileConfig`] into a
//! [`Config`](super::Config) and reports every problem with its place. Unknown keys are refused
//! here (`deny_unknown_fields`), so a typo never silently falls back to a default.
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
    /// `[csrf]`.
    #[serde(default)]
    pub csrf: CsrfFile,
    /// `[rate_limit]`; absent = no rate limit.
    pub rate_limit: Option<RateLimitFile>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
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
    /// `required` | `optional` | `none`.
    pub auth: Option<String>,
    /// Allowed methods; empty or absent = all but CONNECT and TRACE.
    pub methods: Option<Vec<String>>,
    /// Per-route body limit.
    pub max_body: Option<String>,
    /// Forward the browser's `Cookie` header upstream (default: only when `auth = "none"`).
    pub forward_cookies: Option<bool>,
}
