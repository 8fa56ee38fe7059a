//! The validated configuration.
//!
//! Two layers: [`file`](mod@file) mirrors the TOML; validation (`config/validate.rs`) checks it
//! and produces types that cannot hold bad values. Every problem is collected with its place
//! (`routes[1].upstream: scheme must be http or https`) before failing, and all of it happens
//! before any socket is bound. Where the config comes from is [`Source`] (`config/source.rs`):
//! zero-config flags build the same [`file::FileConfig`] and go through the same validation.
//! The route table `cookiegate check` prints is `config/describe.rs`.
//!
//! One exception to "no I/O but the config file": `[tls]`'s certificate and key are read and
//! parsed during validation, so `check` can tell that they parse and belong together, and what
//! it accepted is what the listener serves ([`TlsSettings::loaded`]).

mod describe;
mod diff;
pub mod file;
mod schema;
mod source;
pub mod units;
mod validate;

pub use source::{Env, Source, ZeroConfig};
pub(crate) use validate::check_idp_url;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::CookieName;
use crate::auth::session::SessionKeys;
use crate::auth::session::chunk::SameSite;
use crate::guard::csrf::CsrfPolicy;
use crate::guard::rate_limit::KeyKind;
use crate::routing::RouteTable;
use crate::trust::TrustedProxies;
use file::FileConfig;
use units::ByteSize;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Server-wide settings.
    pub server: ServerSettings,
    /// The `tracing` filter used when `RUST_LOG` is unset.
    pub log_level: String,
    /// `[log]`: the format and the access log (the level is `log_level`).
    pub log: LogSettings,
    /// `[metrics]`, when present.
    pub metrics: Option<MetricsSettings>,
    /// The routes.
    pub routes: RouteTable,
    /// `[csrf]`: applies to every route that sends a token.
    pub csrf: CsrfPolicy,
    /// `[rate_limit]`, when present.
    pub rate_limit: Option<RateLimitSettings>,
    /// `[session]` and `[oidc]`, when cookiegate logs users in itself.
    pub session: Option<SessionSettings>,
    /// `[websocket]`: for routes with `websocket = true`.
    pub websocket: WebSocketSettings,
    /// `[tls]`, when the listener ends TLS itself.
    pub tls: Option<TlsSettings>,
    /// `[store]`, when instances share their state on Valkey/Redis.
    pub store: Option<StoreConfig>,
}

/// `[tls]`, validated: both files were read, parsed and found to belong together.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The PEM certificate chain's path, as written (relative paths are relative to the
    /// working directory); re-read by a reload.
    pub cert: PathBuf,
    /// The PEM private key's path, as written.
    pub key: PathBuf,
    /// What the files held when validated: served from startup, so what `check` accepted is
    /// what is served.
    pub loaded: crate::server::tls::LoadedCert,
}

/// `[log]`, validated (besides its level, [`Config::log_level`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// How lines are written.
    pub format: LogFormat,
    /// Whether the access log is written.
    pub access: bool,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`tracing`'s own format).
    Text,
    /// One JSON object per line, fields flattened (names in the README).
    Json,
}

impl LogFormat {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served.
    pub listen: SocketAddr,
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where the store is and how to talk to it.
    pub settings: crate::store::StoreSettings,
    /// What a request that needs the store gets while it fails.
    pub on_failure: crate::store::OnFailure,
    /// Where a session's tokens live.
    pub sessions: crate::store::SessionStorage,
}

impl StoreConfig {
    /// Whether `other` is the same store used the same way (a reload then keeps the client
    /// and its connections).
    pub(crate) fn is_same(&self, other: &Self) -> bool {
        let (a, b) = (&self.settings, &other.settings);
        a.urls == b.urls
            && a.cluster == b.cluster
            && a.password == b.password
            && a.key_prefix == b.key_prefix
            && a.timeout == b.timeout
            && self.on_failure == other.on_failure
            && self.sessions == other.sessions
    }
}

/// `[websocket]`, validated.
#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    /// Origins (`scheme://host[:port]`, lowercase) allowed besides the request's own.
    pub allowed_origins: Vec<String>,
    /// Whether a handshake without `Origin` is allowed.
    pub allow_missing_origin: bool,
    /// No frame either way this long -> closed.
    pub idle_timeout: Duration,
    /// Hard cap on a socket's life.
    pub max_lifetime: Duration,
    /// Open sockets per session or cookie value.
    pub max_per_session: usize,
}

/// `[session]` and `[oidc]`, validated: the token handler's settings.
#[derive(Clone)]
pub struct SessionSettings {
    /// The session cookie's name.
    pub cookie: CookieName,
    /// The keys (first seals, all open), from the environment.
    pub(crate) keys: std::sync::Arc<SessionKeys>,
    /// Absolute session lifetime.
    pub max_age: Duration,
    /// `SameSite` of the session cookie.
    pub(crate) same_site: SameSite,
    /// Whether cookies carry `Secure`.
    pub secure: bool,
    /// The IdP and the client.
    pub oidc: OidcSettings,
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("cookie", &self.cookie)
            .field("keys", &self.keys)
            .field("max_age", &self.max_age)
            .field("same_site", &self.same_site)
            .field("secure", &self.secure)
            .field("oidc", &self.oidc)
            .finish()
    }
}

impl SessionSettings {
    /// Whether `other` is the same settings (keys compared by their ids): a reload that keeps
    /// them keeps the token handler, its refreshes in flight and its opened sessions.
    pub(crate) fn is_same(&self, other: &SessionSettings) -> bool {
        self.cookie.as_str() == other.cookie.as_str()
            && self.keys.is_same(&other.keys)
            && self.max_age == other.max_age
            && self.same_site == other.same_site
            && self.secure == other.secure
            && self.oidc == other.oidc
    }
}

/// `[oidc]`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer, exactly as the IdP names itself (`iss` is compared with it byte for byte).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, from the environment (`Debug` hides it).
    pub(crate) client_secret: String,
    /// Scopes asked for at login.
    pub scopes: Vec<String>,
    /// The public callback URL.
    pub redirect_uri: String,
    /// The callback's path, served by cookiegate.
    pub callback_path: String,
    /// Where the IdP sends the browser after logout.
    pub post_logout_redirect_uri: Option<String>,
    /// Refresh when the access token expires within this.
    pub refresh_before: Duration,
    /// Base path of the token handler's endpoints (`/auth`).
    pub path: String,
    /// Extra authorization-request parameters.
    pub extra_params: Vec<(String, String)>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("redirect_uri", &self.redirect_uri)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `[rate_limit]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Readiness path answered by cookiegate itself; `None` when turned off.
    pub ready_path: Option<String>,
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
    /// The file is not valid TOML.
    #[error("{0}")]
    Syntax(String),
    /// Unknown keys, wrong types or invalid values; each entry names its place.
    #[error("{} problem{} in config:\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  "))]
    Invalid(Vec<String>),
    /// Neither a file nor an upstream was given.
    #[error(
        "no configuration: pass --config PATH (or set COOKIEGATE_CONFIG), create ./cookiegate.toml, \
         pass --upstream URL (or set BACKEND_URL), or try `cookiegate demo`"
    )]
    Missing,
}

impl Config {
    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for TOML syntax errors, [`ConfigError::Invalid`] with every
    /// unknown key, wrong type and bad value.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str_with(text, &Env::default())
    }

    /// [`Config::from_toml_str`] with the environment secrets are read from.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`].
    pub fn from_toml_str_with(text: &str, env: &Env) -> Result<Self, ConfigError> {
        // Syntax first (fails at once, with line and column); then every unknown key and wrong
        // type, then every bad value, reported together (`config/schema.rs`).
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        let sifted = schema::sift(table, schema::ROOT);
        let file: FileConfig = toml::Value::Table(sifted.table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        match Self::from_file(file, env) {
            Ok(config) if sifted.problems.is_empty() => Ok(config),
            Ok(_) => Err(ConfigError::Invalid(sifted.problems)),
            Err(ConfigError::Invalid(more)) => {
                let mut problems = sifted.problems.clone();
                problems.extend(more.into_iter().filter(|p| !sifted.is_reported(p)));
                Err(ConfigError::Invalid(problems))
            }
            Err(other) => Err(other),
        }
    }

    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`], plus [`ConfigError::Read`].
    pub fn load(path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str_with(&text, env).map_err(|e| match e {
            ConfigError::Syntax(msg) => ConfigError::Syntax(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Validates the file model; secrets come from `env`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem.
    pub fn from_file(file: FileConfig, env: &Env) -> Result<Self, ConfigError> {
        validate::config(&file, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMode;
    use crate::guard::csrf::CsrfMode;

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

    const ONE_ROUTE: &str = "[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9\"\n";

    #[test]
    fn metrics_are_off_unless_their_section_is_there_and_then_default_their_address() {
        assert_eq!(Config::from_toml_str(ONE_ROUTE).unwrap().metrics, None);
        let on = Config::from_toml_str(&format!("[metrics]\n{ONE_ROUTE}")).unwrap();
        assert_eq!(
            on.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("127.0.0.1:9464")
        );
        let described = on.describe();
        assert!(
            described.contains("metrics http://127.0.0.1:9464/metrics"),
            "{described}"
        );
        assert!(
            described.contains("log info text, access log on"),
            "{described}"
        );
    }

    #[test]
    fn metrics_need_an_address_of_their_own_and_log_a_known_format() {
        assert_problems(
            &problems(&format!(
                "listen = \"0.0.0.0:4000\"\n[metrics]\nlisten = \"127.0.0.1:4000\"\n\
                 [log]\nformat = \"yaml\"\n{ONE_ROUTE}"
            )),
            &[
                "metrics.listen: `127.0.0.1:4000` is the public listener's address",
                "log.format: `yaml` must be \"text\" or \"json\"",
            ],
        );
        assert_problems(
            &problems(&format!("[metrics]\nlisten = \"localhost\"\n{ONE_ROUTE}")),
            &["metrics.listen: `localhost` must be an IP address and port"],
        );
        let json = Config::from_toml_str(&format!(
            "[log]\nformat = \"json\"\naccess = false\n{ONE_ROUTE}"
        ))
        .unwrap();
        assert_eq!(
            json.log,
            LogSettings {
                format: LogFormat::Json,
                access: false
            }
        );
    }

    #[test]
    fn readme_example_parses_with_its_annotated_values() {
        let readme = include_str!("../README.md");
        // The annotated reference: the first toml block of the "Configuration" section.
        let section = readme
            .find("\n## Configuration\n")
            .expect("README has a Configuration section");
        let start = section
            + readme[section..]
                .find("```toml\n")
                .expect("README has a toml block")
            + 8;
        let end = start + readme[start..].find("```").expect("block ends");
        let cfg = Config::from_toml_str(&readme[start..end]).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(cfg.server.max_body, ByteSize(10 << 20));
        assert_eq!(cfg.server.upstream_timeout, Duration::from_secs(30));
        assert_eq!(cfg.server.idle_timeout, Duration::from_secs(300));
        assert_eq!(cfg.server.header_timeout, Duration::from_secs(10));
        assert_eq!(cfg.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(cfg.server.health_path.as_deref(), Some("/healthz"));
        assert_eq!(cfg.server.ready_path.as_deref(), Some("/readyz"));
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
        assert_problems(
            &problems("[[routes]]\nprefix = \"/\"\nupstream = \"http://h\"\ncookies = \"x\"\n"),
            &["routes[0].cookies: unknown key (did you mean cookie?)"],
        );
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_are_reported_together() {
        let found = problems(
            r#"
[server]
max_connections = "lots"
idle_timeout = "forever"
[[routes]]
prefix = "/api"
upstrem = "http://h"
upstream = "ftp://h"
[[routes]]
prefix = 7
upstream = "http://h"
"#,
        );
        assert_problems(
            &found,
            &[
                "server.max_connections: expected an integer, found a string",
                "server.idle_timeout: `forever` is not a duration",
                "routes[0].upstrem: unknown key (did you mean upstream?)",
                "routes[0].upstream: scheme must be http or https",
                // Not also "is required": the wrong type was the problem.
                "routes[1].prefix: expected a string, found an integer",
            ],
        );
    }

    #[test]
    fn syntax_errors_fail_at_once_with_their_line() {
        let err = Config::from_toml_str("[[routes]]\nprefix = \"/\nupstream = 1\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax(ref m) if m.contains("line 2")),
            "{err}"
        );
    }

    #[test]
    fn zero_config_uses_flags_then_backend_url() {
        let env = Env {
            config_path: None,
            backend_url: Some("http://127.0.0.1:9000".into()),
            ..Env::default()
        };
        let cfg = Config::from_file(ZeroConfig::default().to_file(&env), &env).unwrap();
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
        let cfg = Config::from_file(flags.to_file(&env), &env).unwrap();
        let (route, _) = cfg.routes.find("/bff/x").unwrap();
        assert_eq!(route.upstream.base_path(), "/v1");
        assert_eq!(route.cookie.as_str(), "sid");
        assert_eq!(cfg.listen.port(), 0);
        let missing = Config::from_file(
            ZeroConfig::default().to_file(&Env::default()),
            &Env::default(),
        );
        assert!(
            matches!(missing, Err(ConfigError::Invalid(p)) if p[0].starts_with("routes[0].upstream: is required"))
        );
    }

    #[test]
    fn zero_config_problems_name_the_flag_or_variable() {
        let env = Env {
            backend_url: Some("ftp://x".into()),
            ..Env::default()
        };
        let from_env = Source::Flags(ZeroConfig::default()).load(&env);
        assert!(
            matches!(from_env, Err(ConfigError::Invalid(ref p)) if p == &["BACKEND_URL: scheme must be http or https"]),
            "{from_env:?}"
        );
        let flags = ZeroConfig {
            upstream: Some("ftp://x".into()),
            prefix: Some("api".into()),
            ..ZeroConfig::default()
        };
        let from_flags = Source::Flags(flags).load(&env);
        let Err(ConfigError::Invalid(p)) = from_flags else {
            panic!("{from_flags:?}");
        };
        assert!(
            p.iter()
                .any(|p| p == "--upstream: scheme must be http or https"),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.starts_with("--prefix: `api`")), "{p:?}");
    }

    #[test]
    fn source_order_is_flag_env_upstream_local_backend() {
        let env = Env {
            config_path: Some("env.toml".into()),
            backend_url: Some("http://b".into()),
            ..Env::default()
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

    const SESSION_TOML: &str = r#"
[session]
cookie = "__Host-cookiegate"

[oidc]
issuer = "https://idp.example.com"
client_id = "cookiegate"
redirect_uri = "https://app.example.com/auth/callback"
post_logout_redirect_uri = "https://app.example.com/"
extra_params = { audience = "https://api.example.com" }

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:8000"
auth = "session"
"#;

    fn secrets() -> Env {
        Env::default()
            .with_var(
                "COOKIEGATE_SESSION_KEYS",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .with_var("COOKIEGATE_CLIENT_SECRET", "s3cret-value")
    }

    #[test]
    fn session_and_oidc_parse_with_secrets_from_the_environment() {
        let cfg = Config::from_toml_str_with(SESSION_TOML, &secrets()).unwrap();
        let session = cfg.session.unwrap();
        assert_eq!(session.cookie.as_str(), "__Host-cookiegate");
        assert!(session.secure, "https callback: Secure");
        assert_eq!(session.max_age, std::time::Duration::from_secs(8 * 3600));
        assert_eq!(session.oidc.callback_path, "/auth/callback");
        assert_eq!(session.oidc.path, "/auth");
        assert_eq!(
            session.oidc.scopes,
            ["openid", "profile", "email", "offline_access"]
        );
        assert_eq!(
            session.oidc.extra_params,
            [(
                "audience".to_string(),
                "https://api.example.com".to_string()
            )]
        );
        // Secrets never show in Debug.
        let debug = format!("{session:?}");
        assert!(
            !debug.contains("s3cret-value") && !debug.contains("AAECAwQF"),
            "{debug}"
        );
        assert!(!format!("{:?}", secrets()).contains("s3cret-value"));
    }

    #[test]
    fn session_problems_are_all_listed_without_secrets() {
        let text = r#"
[session]
cookie = "__Host-cookiegate"
secure = "auto"
max_age = "0s"

[oidc]
issuer = "http://idp.example.com"
client_id = ""
redirect_uri = "http://127.0.0.1:4000/auth/callback"
scopes = ["profile"]
extra_params = { state = "x" }

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:8000"
auth = "session"
"#;
        let env = Env::default().with_var("COOKIEGATE_SESSION_KEYS", "c2hvcnQ=");
        let Err(ConfigError::Invalid(found)) = Config::from_toml_str_with(text, &env) else {
            panic!("expected problems");
        };
        assert_problems(
            &found,
            &[
                "session.keys_env: COOKIEGATE_SESSION_KEYS: key 1 is 5 bytes, needs 32",
                "session.max_age: must be greater than zero",
                "oidc.issuer: `http://idp.example.com` must use https",
                "oidc.client_id: is required",
                "oidc.client_secret_env: environment variable COOKIEGATE_CLIENT_SECRET is not set",
                "oidc.scopes: must include `openid`",
                "oidc.extra_params.state: cookiegate sets `state` itself",
                // http on loopback: no Secure, which a __Host- name needs.
                "session.cookie:",
            ],
        );
        assert!(!found.join("\n").contains("c2hvcnQ"));
        // A session route without the sections.
        let Err(ConfigError::Invalid(found)) = Config::from_toml_str(
            "[[routes]]\nprefix = \"/api\"\nupstream = \"http://h\"\nauth = \"session\"\n",
        ) else {
            panic!("expected problems");
        };
        assert_problems(
            &found,
            &["routes[0].auth: `session` needs the [session] and [oidc] sections"],
        );
    }

    #[test]
    fn readme_token_handler_example_parses_with_its_annotated_values() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Log users in").expect("the section")..];
        let start = section.find("```toml\n").expect("a toml block") + 8;
        let end = start + section[start..].find("```").expect("block ends");
        let cfg = Config::from_toml_str_with(&section[start..end], &secrets()).unwrap();
        let session = cfg.session.unwrap();
        assert_eq!(session.cookie.as_str(), "__Host-cookiegate");
        assert_eq!(session.max_age, std::time::Duration::from_secs(8 * 3600));
        assert!(session.secure);
        assert_eq!(
            session.oidc.refresh_before,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(session.oidc.path, "/auth");
        assert_eq!(session.oidc.callback_path, "/auth/callback");
        let (route, _) = cfg.routes.find("/api/x").unwrap();
        assert_eq!(route.auth, AuthMode::Session);
    }

    fn tls_section(cert: &str, key: &str) -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/");
        format!("[tls]\ncert = \"{dir}{cert}\"\nkey = \"{dir}{key}\"\n")
    }

    #[test]
    fn tls_loads_a_matching_pair_and_lists_each_files_problem() {
        let routes = "[[routes]]\nprefix = \"/\"\nupstream = \"http://h\"\n";
        let cfg = Config::from_toml_str(&format!(
            "{}{routes}",
            tls_section("localhost.pem", "localhost.key")
        ))
        .unwrap();
        let tls = cfg.tls.unwrap();
        assert!(tls.cert.ends_with("localhost.pem") && tls.key.ends_with("localhost.key"));
        assert_eq!(tls.loaded.chain_len(), 1);
        assert!(Config::from_toml_str(routes).unwrap().tls.is_none());

        assert_problems(
            &problems(&format!("[tls]\n{routes}")),
            &["tls.cert: is required", "tls.key: is required"],
        );
        assert_problems(
            &problems(&format!("[tls]\nkey = \"k.pem\"\n{routes}")),
            &["tls.cert: is required"],
        );
        assert_problems(
            &problems(&format!(
                "{}{routes}",
                tls_section("missing.pem", "localhost.pem")
            )),
            &["tls.cert: cannot read", "tls.key: "],
        );
        assert_problems(
            &problems(&format!(
                "{}{routes}",
                tls_section("localhost.pem", "reload.key")
            )),
            &["tls.key: the key in"],
        );
        assert!(
            Config::from_toml_str(&format!(
                "[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n{routes}"
            ))
            .is_err_and(|e| e.to_string().contains("tls.ca: unknown key"))
        );
    }

    #[test]
    fn auto_secure_cookies_are_secure_when_cookiegate_ends_tls() {
        // A loopback http callback alone means local development: no Secure (and so no
        // `__Host-` name). With `[tls]` browsers only reach cookiegate over https.
        let text = SESSION_TOML
            .replace(
                "https://app.example.com/auth/callback",
                "http://127.0.0.1:4000/auth/callback",
            )
            .replace("__Host-cookiegate", "sid");
        let plain = Config::from_toml_str_with(&text, &secrets()).unwrap();
        assert!(!plain.session.unwrap().secure);
        let tls = tls_section("localhost.pem", "localhost.key");
        let with_tls = Config::from_toml_str_with(&format!("{tls}{text}"), &secrets()).unwrap();
        assert!(with_tls.session.unwrap().secure);
    }

    #[test]
    fn websocket_settings_have_defaults_and_problems() {
        let cfg = Config::from_toml_str(
            "[[routes]]\nprefix = \"/ws\"\nupstream = \"http://h\"\nwebsocket = true\n",
        )
        .unwrap();
        assert_eq!(cfg.websocket.idle_timeout, Duration::from_secs(300));
        assert_eq!(cfg.websocket.max_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(cfg.websocket.max_per_session, 16);
        assert!(!cfg.websocket.allow_missing_origin);
        assert!(cfg.routes.find("/ws/x").unwrap().0.websocket);
        let found = problems(
            "[websocket]\nallowed_origins = [\"evil.example\"]\nidle_timeout = \"0s\"\nmax_per_session = 0\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"http://h\"\n",
        );
        assert_problems(
            &found,
            &[
                "websocket.allowed_origins[0]: `evil.example` must look like",
                "websocket.idle_timeout: must be greater than zero",
                "websocket.max_per_session: must be greater than zero",
            ],
        );
    }
}
