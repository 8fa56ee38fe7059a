//! The validated configuration.
//!
//! Two layers: [`file`](mod@file) mirrors the TOML; this module checks it and produces types that cannot
//! hold bad values. Every problem is collected with its place (`routes[1].upstream: scheme must
//! be http or https`) before failing, and all of it happens before any socket is bound.
//! Zero-config flags build the same [`file::FileConfig`] and go through the same validation.

pub mod file;
pub mod units;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{AuthMode, CookieName};
use crate::guard::csrf::{CsrfMode, CsrfPolicy, parse_origin};
use crate::guard::rate_limit::KeyKind;
use crate::routing::{MethodSet, Route, RoutePrefix, RouteTable, UpstreamBase};
use crate::trust::{TrustedProxies, parse_cidr};
use file::{CsrfFile, FileConfig, RateLimitFile, RouteFile, ServerFile};
use units::{ByteSize, parse_duration};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Server-wide settings.
    pub server: ServerSettings,
    /// The `tracing` filter used when `RUST_LOG` is unset.
    pub log_level: String,
    /// The routes.
    pub routes: RouteTable,
    /// `[csrf]`: applies to every route that sends a token.
    pub csrf: CsrfPolicy,
    /// `[rate_limit]`, when present.
    pub rate_limit: Option<RateLimitSettings>,
}

/// `[rate_limit]`, validated.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Sustained requests per second per client.
    pub per_second: NonZeroU32,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
    /// What identifies a client.
    pub key: KeyKind,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Default request body limit.
    pub max_body: ByteSize,
    /// Wait for the upstream's response head, counted from the last request byte sent.
    pub upstream_timeout: Duration,
    /// Silence allowed on a body in either direction.
    pub idle_timeout: Duration,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
    /// Path answered by cookiegate itself; `None` when turned off.
    pub health_path: Option<String>,
    /// Runtime worker threads; 0 = one per CPU.
    pub workers: usize,
    /// Concurrent client connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Request header fields allowed; more -> 431.
    pub max_headers: usize,
    /// Bytes a request head may take; more -> 431.
    pub max_header_bytes: ByteSize,
    /// Proxies in front whose `X-Forwarded-For`/`-Proto`/`-Host` are believed
    /// ([`crate::trust`]).
    pub trusted_proxies: TrustedProxies,
}

/// Environment values the config may read, passed in so tests never touch the process
/// environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$COOKIEGATE_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// `$BACKEND_URL`.
    pub backend_url: Option<String>,
}

impl Env {
    /// Reads the real process environment.
    pub fn from_process() -> Self {
        Self {
            config_path: std::env::var_os("COOKIEGATE_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            backend_url: std::env::var("BACKEND_URL").ok().filter(|v| !v.is_empty()),
        }
    }
}

/// Why a configuration could not be used. Setup errors: they stop the process with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{0}")]
    Syntax(String),
    /// One or more values are invalid; each entry names its place.
    #[error("{} problem{} in config:\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  "))]
    Invalid(Vec<String>),
    /// Neither a file nor an upstream was given.
    #[error(
        "no configuration: pass --config PATH (or set COOKIEGATE_CONFIG), create ./cookiegate.toml, \
         pass --upstream URL (or set BACKEND_URL), or try `cookiegate demo`"
    )]
    Missing,
}

/// The zero-config flags: one route built from the command line.
#[derive(Debug, Clone, Default)]
pub struct ZeroConfig {
    /// `--upstream` (falls back to `$BACKEND_URL`).
    pub upstream: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--cookie`.
    pub cookie: Option<String>,
    /// `--prefix`.
    pub prefix: Option<String>,
}

impl ZeroConfig {
    /// The file model these flags stand for.
    pub fn to_file(&self, env: &Env) -> FileConfig {
        FileConfig {
            listen: self.listen.clone(),
            routes: vec![RouteFile {
                prefix: Some(
                    self.prefix
                        .clone()
                        .unwrap_or_else(|| file::DEFAULT_PREFIX.into()),
                ),
                upstream: self.upstream.clone().or_else(|| env.backend_url.clone()),
                cookie: self.cookie.clone(),
                ..RouteFile::default()
            }],
            ..FileConfig::default()
        }
    }
}

impl Config {
    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for TOML errors and unknown keys, [`ConfigError::Invalid`] with
    /// every bad value.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::from_file(file)
    }

    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`], plus [`ConfigError::Read`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Syntax(msg) => ConfigError::Syntax(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Validates the file model.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem.
    pub fn from_file(file: FileConfig) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let listen = check(
            &mut problems,
            "listen",
            file.listen
                .as_deref()
                .unwrap_or(file::DEFAULT_LISTEN)
                .parse::<SocketAddr>()
                .map_err(|_| "must be an IP address and port, like \"127.0.0.1:4000\"".into()),
        );
        let server = validate_server(&file.server, &mut problems);
        let csrf = validate_csrf(&file.csrf, &mut problems);
        let rate_limit = match &file.rate_limit {
            Some(rate) => validate_rate_limit(rate, &mut problems).map(Some),
            None => Some(None),
        };
        let log_level = file
            .log
            .level
            .clone()
            .unwrap_or_else(|| file::DEFAULT_LOG_LEVEL.into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            problems.push(format!("log.level: `{log_level}` is not a log filter: {e}"));
        }

        if file.routes.is_empty() {
            problems.push("routes: at least one [[routes]] table is needed".into());
        }
        let default_max_body = server.as_ref().map_or(ByteSize(0), |s| s.max_body);
        let mut routes = Vec::new();
        for (index, route) in file.routes.iter().enumerate() {
            if let Some(route) = validate_route(index, route, default_max_body, &mut problems) {
                routes.push(route);
            }
        }
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i].iter().find(|b| b.prefix == a.prefix) {
                problems.push(format!(
                    "routes[{}].prefix: `{}` is already used by routes[{}]",
                    a.index,
                    a.prefix.as_str(),
                    b.index
                ));
            }
        }

        let (true, Some(listen), Some(server), Some(csrf), Some(rate_limit)) =
            (problems.is_empty(), listen, server, csrf, rate_limit)
        else {
            return Err(ConfigError::Invalid(problems));
        };
        Ok(Config {
            listen,
            server,
            csrf,
            rate_limit,
            log_level,
            routes: RouteTable::new(routes),
        })
    }

    /// The route table as `cookiegate check` prints it.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("listen {}\n", self.listen);
        let csrf = match &self.csrf.mode {
            CsrfMode::Origin => "origin".to_string(),
            CsrfMode::Header(name) => format!("header {name}"),
            CsrfMode::Off => "off".to_string(),
        };
        let _ = writeln!(out, "csrf {csrf}");
        match &self.rate_limit {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "rate_limit {}/s burst {} by {}",
                    r.per_second,
                    r.burst,
                    r.key.as_str()
                );
            }
            None => out.push_str("rate_limit off\n"),
        }
        let rows: Vec<[String; 6]> = self
            .routes
            .in_file_order()
            .into_iter()
            .map(|r| {
                [
                    r.prefix.as_str().to_string(),
                    r.upstream.to_string(),
                    r.auth.as_str().to_string(),
                    if r.auth == AuthMode::None {
                        "-".into()
                    } else {
                        r.cookie.as_str().to_string()
                    },
                    r.methods.describe(),
                    r.max_body.to_string(),
                ]
            })
            .collect();
        let header = [
            "PREFIX", "UPSTREAM", "AUTH", "COOKIE", "METHODS", "MAX_BODY",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(header.map(String::from)).chain(rows) {
            let line = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ");
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// Keeps a value, or records its problem under `place`.
fn check<T>(problems: &mut Vec<String>, place: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(msg) => {
            problems.push(format!("{place}: {msg}"));
            None
        }
    }
}

fn validate_server(s: &ServerFile, problems: &mut Vec<String>) -> Option<ServerSettings> {
    let before = problems.len();
    let max_body = check(
        problems,
        "server.max_body",
        ByteSize::parse(s.max_body.as_deref().unwrap_or(file::DEFAULT_MAX_BODY)),
    );
    let mut duration = |key: &str, value: &Option<String>, default: &str| {
        check(
            problems,
            &format!("server.{key}"),
            parse_duration(value.as_deref().unwrap_or(default)).and_then(|d| {
                if d.is_zero() {
                    Err("must be greater than zero".into())
                } else {
                    Ok(d)
                }
            }),
        )
    };
    let upstream_timeout = duration(
        "upstream_timeout",
        &s.upstream_timeout,
        file::DEFAULT_UPSTREAM_TIMEOUT,
    );
    let idle_timeout = duration("idle_timeout", &s.idle_timeout, file::DEFAULT_IDLE_TIMEOUT);
    let header_timeout = duration(
        "header_timeout",
        &s.header_timeout,
        file::DEFAULT_HEADER_TIMEOUT,
    );
    let shutdown_grace = duration(
        "shutdown_grace",
        &s.shutdown_grace,
        file::DEFAULT_SHUTDOWN_GRACE,
    );
    let health_path = match s
        .health_path
        .as_deref()
        .unwrap_or(file::DEFAULT_HEALTH_PATH)
    {
        "" => Some(None),
        path => check(
            problems,
            "server.health_path",
            if path.starts_with('/') && !path.contains(['?', '#', ' ']) {
                Ok(Some(path.to_string()))
            } else {
                Err(format!("`{path}` must be a path starting with '/'"))
            },
        ),
    };
    let max_header_bytes = check(
        problems,
        "server.max_header_bytes",
        ByteSize::parse(
            s.max_header_bytes
                .as_deref()
                .unwrap_or(file::DEFAULT_MAX_HEADER_BYTES),
        )
        .and_then(|size| {
            // hyper's smallest read buffer.
            if size.as_u64() < 8192 {
                Err("must be at least 8KiB".into())
            } else {
                Ok(size)
            }
        }),
    );
    let positive = |value: Option<usize>, default: usize| match value {
        Some(0) => Err("must be greater than zero".to_string()),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let max_headers = check(
        problems,
        "server.max_headers",
        positive(s.max_headers, file::DEFAULT_MAX_HEADERS),
    );
    let max_connections = check(
        problems,
        "server.max_connections",
        positive(s.max_connections, file::DEFAULT_MAX_CONNECTIONS),
    );
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in s.trusted_proxies.iter().flatten().enumerate() {
        if let Some(net) = check(
            problems,
            &format!("server.trusted_proxies[{i}]"),
            parse_cidr(cidr),
        ) {
            trusted_proxies.push(net);
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(ServerSettings {
        max_body: max_body?,
        upstream_timeout: upstream_timeout?,
        idle_timeout: idle_timeout?,
        header_timeout: header_timeout?,
        shutdown_grace: shutdown_grace?,
        health_path: health_path?,
        workers: s.workers.unwrap_or(0),
        max_connections: max_connections?,
        max_headers: max_headers?,
        max_header_bytes: max_header_bytes?,
        trusted_proxies: TrustedProxies::new(trusted_proxies),
    })
}

fn validate_csrf(c: &CsrfFile, problems: &mut Vec<String>) -> Option<CsrfPolicy> {
    let before = problems.len();
    let header = check(
        problems,
        "csrf.header",
        http::HeaderName::from_bytes(
            c.header
                .as_deref()
                .unwrap_or(file::DEFAULT_CSRF_HEADER)
                .as_bytes(),
        )
        .map_err(|_| "is not a valid header name".to_string()),
    );
    let mode = match c.mode.as_deref().unwrap_or("origin") {
        "origin" => Some(CsrfMode::Origin),
        "header" => header.map(CsrfMode::Header),
        "off" => Some(CsrfMode::Off),
        other => {
            problems.push(format!(
                "csrf.mode: `{other}` must be one of origin, header, off"
            ));
            None
        }
    };
    let mut allowed_origins = Vec::new();
    for (i, origin) in c.allowed_origins.iter().flatten().enumerate() {
        if let Some(origin) = check(
            problems,
            &format!("csrf.allowed_origins[{i}]"),
            parse_origin(origin),
        ) {
            allowed_origins.push(origin);
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(CsrfPolicy {
        mode: mode?,
        allowed_origins,
    })
}

fn validate_rate_limit(r: &RateLimitFile, problems: &mut Vec<String>) -> Option<RateLimitSettings> {
    let before = problems.len();
    let nonzero = |value: Option<u32>, default: u32| {
        NonZeroU32::new(value.unwrap_or(default))
            .ok_or_else(|| "must be greater than zero".to_string())
    };
    let per_second = check(
        problems,
        "rate_limit.per_second",
        nonzero(r.per_second, file::DEFAULT_PER_SECOND),
    );
    let burst = check(
        problems,
        "rate_limit.burst",
        nonzero(r.burst, file::DEFAULT_BURST),
    );
    let key = check(
        problems,
        "rate_limit.key",
        KeyKind::parse(r.key.as_deref().unwrap_or("ip")),
    );
    if r.trusted_proxies.is_some() {
        // Who the client is decides more than the rate limit (forwarding headers, CSRF), so
        // the setting moved to the server.
        problems.push(
            "rate_limit.trusted_proxies: moved to [server] trusted_proxies (it now decides the \
             client IP, scheme and host for every route, not only the rate limit)"
                .into(),
        );
    }
    if problems.len() != before {
        return None;
    }
    Some(RateLimitSettings {
        per_second: per_second?,
        burst: burst?,
        key: key?,
    })
}

fn validate_route(
    index: usize,
    route: &RouteFile,
    default_max_body: ByteSize,
    problems: &mut Vec<String>,
) -> Option<Route> {
    let before = problems.len();
    let at = |key: &str| format!("routes[{index}].{key}");
    let prefix = check(
        problems,
        &at("prefix"),
        route
            .prefix
            .as_deref()
            .ok_or_else(|| "is required (for example \"/api/proxy\")".to_string())
            .and_then(RoutePrefix::parse),
    );
    let upstream = check(
        problems,
        &at("upstream"),
        route
            .upstream
            .as_deref()
            .ok_or_else(|| {
                "is required (for example \"http://127.0.0.1:8000\"; in zero-config mode pass \
                 --upstream or set BACKEND_URL)"
                    .to_string()
            })
            .and_then(UpstreamBase::parse),
    );
    let cookie = check(
        problems,
        &at("cookie"),
        CookieName::parse(route.cookie.as_deref().unwrap_or(file::DEFAULT_COOKIE)),
    );
    let auth = check(
        problems,
        &at("auth"),
        AuthMode::parse(route.auth.as_deref().unwrap_or("required")),
    );
    let methods = check(
        problems,
        &at("methods"),
        MethodSet::parse(route.methods.as_deref().unwrap_or_default()),
    );
    let max_body = match &route.max_body {
        Some(text) => check(problems, &at("max_body"), ByteSize::parse(text)),
        None => Some(default_max_body),
    };
    if problems.len() != before {
        return None;
    }
    let auth = auth?;
    Some(Route {
        index,
        prefix: prefix?,
        upstream: upstream?,
        cookie: cookie?,
        auth,
        methods: methods?,
        max_body: max_body?,
        forward_cookies: route.forward_cookies.unwrap_or(auth == AuthMode::None),
    })
}

/// Where `cookiegate` (run or check) gets its configuration, in order: `--config`, then
/// `$COOKIEGATE_CONFIG`, then zero-config flags (`--upstream`), then `./cookiegate.toml`, then
/// `$BACKEND_URL` alone.
#[derive(Debug, Clone)]
pub enum Source {
    /// A TOML file.
    File(PathBuf),
    /// One route from flags and the environment.
    Flags(ZeroConfig),
}

impl Source {
    /// Picks the source.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when nothing says where to proxy to.
    pub fn choose(
        config: Option<PathBuf>,
        flags: ZeroConfig,
        env: &Env,
    ) -> Result<Self, ConfigError> {
        if let Some(path) = config.or_else(|| env.config_path.clone()) {
            return Ok(Self::File(path));
        }
        if flags.upstream.is_some() {
            return Ok(Self::Flags(flags));
        }
        let local = PathBuf::from("cookiegate.toml");
        if local.is_file() {
            return Ok(Self::File(local));
        }
        if env.backend_url.is_some() {
            return Ok(Self::Flags(flags));
        }
        Err(ConfigError::Missing)
    }

    /// Loads and validates the chosen source.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn load(&self, env: &Env) -> Result<Config, ConfigError> {
        match self {
            Self::File(path) => Config::load(path),
            Self::Flags(flags) => Config::from_file(flags.to_file(env)),
        }
    }

    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Flags(_) => "command-line flags".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each expected problem is reported (as a prefix), and nothing else is.
    fn assert_problems(found: &[String], expected: &[&str]) {
        for want in expected {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml_str(text) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn readme_example_parses_with_its_annotated_values() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + 8;
        let end = start + readme[start..].find("```").expect("block ends");
        let cfg = Config::from_toml_str(&readme[start..end]).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(cfg.server.max_body, ByteSize(10 << 20));
        assert_eq!(cfg.server.upstream_timeout, Duration::from_secs(30));
        assert_eq!(cfg.server.idle_timeout, Duration::from_secs(300));
        assert_eq!(cfg.server.header_timeout, Duration::from_secs(10));
        assert_eq!(cfg.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(cfg.server.health_path.as_deref(), Some("/healthz"));
        assert_eq!(cfg.server.max_connections, 10_000);
        assert_eq!(cfg.server.max_headers, 100);
        assert_eq!(cfg.server.max_header_bytes, ByteSize(64 * 1024));
        assert!(matches!(cfg.csrf.mode, CsrfMode::Origin));
        assert!(cfg.csrf.allowed_origins.is_empty());
        assert!(
            cfg.rate_limit.is_none(),
            "the README's [rate_limit] is commented out: off"
        );
        let (chatkit, rest) = cfg.routes.find("/api/chatkit").unwrap();
        assert_eq!(rest, "");
        assert_eq!(chatkit.upstream.base_path(), "/chatkit");
        assert_eq!(chatkit.cookie.as_str(), "taskflow_id_token");
        assert!(!chatkit.methods.allows(&http::Method::GET));
        let (proxy, _) = cfg.routes.find("/api/proxy/x").unwrap();
        assert_eq!(proxy.max_body, ByteSize(1 << 30));
        assert_eq!(proxy.auth, AuthMode::Required);
        assert!(!proxy.forward_cookies);
        let (root, _) = cfg.routes.find("/page").unwrap();
        assert_eq!(root.auth, AuthMode::None);
        assert!(root.forward_cookies);
    }

    #[test]
    fn defaults_apply_to_a_minimal_file() {
        let cfg = Config::from_toml_str(
            "[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:8000\"\n",
        )
        .unwrap();
        assert_eq!(cfg.listen.to_string(), file::DEFAULT_LISTEN);
        assert_eq!(cfg.server.max_body, ByteSize(10 << 20));
        let (route, _) = cfg.routes.find("/api").unwrap();
        assert_eq!(route.cookie.as_str(), "auth_token");
        assert_eq!(route.auth, AuthMode::Required);
        assert_eq!(route.max_body, ByteSize(10 << 20));
    }

    #[test]
    fn every_problem_is_listed_with_its_place() {
        let found = problems(
            r#"
listen = "nowhere"
[server]
max_body = "lots"
upstream_timeout = "0s"
[[routes]]
prefix = "/ok"
upstream = "http://127.0.0.1:1"
[[routes]]
prefix = "api"
upstream = "ftp://x"
auth = "maybe"
cookie = "a b"
methods = ["TRACE"]
[[routes]]
prefix = "/ok/"
upstream = "http://127.0.0.1:2"
"#,
        );
        let expected = [
            "listen: must be an IP address and port",
            "server.max_body: `lots` is not a size",
            "server.upstream_timeout: must be greater than zero",
            "routes[1].prefix: `api` must start with '/'",
            "routes[1].upstream: scheme must be http or https",
            "routes[1].cookie: `a b` is not a valid cookie name",
            "routes[1].auth: `maybe` must be one of required, optional, none",
            "routes[1].methods: `TRACE` is never forwarded",
            "routes[2].prefix: `/ok` is already used by routes[0]",
        ];
        assert_problems(&found, &expected);
    }

    #[test]
    fn guard_sections_parse_with_defaults_and_problems() {
        let cfg = Config::from_toml_str(
            "[rate_limit]\n[csrf]\nmode = \"header\"\nallowed_origins = [\"https://Admin.example.com/\"]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"http://h\"\n",
        )
        .unwrap();
        let rate = cfg.rate_limit.unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (20, 40));
        assert_eq!(rate.key, KeyKind::Ip);
        assert!(matches!(cfg.csrf.mode, CsrfMode::Header(ref h) if h == "x-csrf"));
        assert_eq!(cfg.csrf.allowed_origins, ["https://admin.example.com"]);

        let found = problems(
            r#"
[server]
max_header_bytes = "1KiB"
max_connections = 0
trusted_proxies = ["10.0.0.0/40", "::ffff:10.0.0.0/104", "10.0.0.1/8"]
[csrf]
mode = "strict"
allowed_origins = ["admin.example.com"]
[rate_limit]
per_second = 0
key = "cookie"
trusted_proxies = ["10.0.0.0/40"]
[[routes]]
prefix = "/"
upstream = "http://h"
"#,
        );
        let expected = [
            "server.max_header_bytes: must be at least 8KiB",
            "server.max_connections: must be greater than zero",
            "server.trusted_proxies[0]: `10.0.0.0/40` is not an IP network",
            "server.trusted_proxies[1]: `::ffff:10.0.0.0/104` is an IPv4-mapped IPv6 network",
            "server.trusted_proxies[2]: `10.0.0.1/8` has bits set past its prefix: write it as 10.0.0.0/8",
            "csrf.mode: `strict` must be one of origin, header, off",
            "csrf.allowed_origins[0]: `admin.example.com` must look like",
            "rate_limit.per_second: must be greater than zero",
            "rate_limit.key: `cookie` must be one of ip, session, ip+session",
            "rate_limit.trusted_proxies: moved to [server] trusted_proxies",
        ];
        assert_problems(&found, &expected);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml_str(
            "[[routes]]\nprefix = \"/\"\nupstream = \"http://h\"\ncookies = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax(ref m) if m.contains("unknown field `cookies`")),
            "{err}"
        );
    }

    #[test]
    fn zero_config_uses_flags_then_backend_url() {
        let env = Env {
            config_path: None,
            backend_url: Some("http://127.0.0.1:9000".into()),
        };
        let cfg = Config::from_file(ZeroConfig::default().to_file(&env)).unwrap();
        let (route, rest) = cfg.routes.find("/api/proxy/x").unwrap();
        assert_eq!(rest, "/x");
        assert_eq!(route.upstream.to_string(), "http://127.0.0.1:9000");
        assert_eq!(route.cookie.as_str(), "auth_token");
        let flags = ZeroConfig {
            upstream: Some("http://127.0.0.1:1/v1".into()),
            listen: Some("127.0.0.1:0".into()),
            cookie: Some("sid".into()),
            prefix: Some("/bff".into()),
        };
        let cfg = Config::from_file(flags.to_file(&env)).unwrap();
        let (route, _) = cfg.routes.find("/bff/x").unwrap();
        assert_eq!(route.upstream.base_path(), "/v1");
        assert_eq!(route.cookie.as_str(), "sid");
        assert_eq!(cfg.listen.port(), 0);
        let missing = Config::from_file(ZeroConfig::default().to_file(&Env::default()));
        assert!(
            matches!(missing, Err(ConfigError::Invalid(p)) if p[0].starts_with("routes[0].upstream: is required"))
        );
    }

    #[test]
    fn source_order_is_flag_env_upstream_local_backend() {
        let env = Env {
            config_path: Some("env.toml".into()),
            backend_url: Some("http://b".into()),
        };
        let flags = ZeroConfig {
            upstream: Some("http://u".into()),
            ..ZeroConfig::default()
        };
        assert!(
            matches!(Source::choose(Some("flag.toml".into()), flags.clone(), &env), Ok(Source::File(p)) if p == Path::new("flag.toml"))
        );
        assert!(
            matches!(Source::choose(None, flags.clone(), &env), Ok(Source::File(p)) if p == Path::new("env.toml"))
        );
        let env = Env {
            config_path: None,
            ..env
        };
        assert!(matches!(
            Source::choose(None, flags, &env),
            Ok(Source::Flags(_))
        ));
    }
}
