//! Validation: the TOML file model in, a [`Config`] out, or every problem with its place.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use super::file::{self, CsrfFile, FileConfig, RateLimitFile, RouteFile, ServerFile};
use super::file::{OidcFile, SessionFile, TlsFile, WebSocketFile};
use super::units::{ByteSize, parse_duration};
use super::{
    Config, ConfigError, Env, OidcSettings, RateLimitSettings, ServerSettings, SessionSettings,
    TlsSettings, WebSocketSettings,
};
use crate::auth::session::SessionKeys;
use crate::auth::session::chunk::{SameSite, check_name_and_secure};
use crate::auth::{AuthMode, CookieName};
use crate::guard::csrf::{CsrfMode, CsrfPolicy, parse_origin};
use crate::guard::rate_limit::KeyKind;
use crate::routing::{MethodSet, Route, RoutePrefix, RouteTable, UpstreamBase};
use crate::trust::{TrustedProxies, parse_cidr};

/// Validates the whole file model.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem.
pub(super) fn config(file: &FileConfig, env: &Env) -> Result<Config, ConfigError> {
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
    let log = validate_log(&file.log, &mut problems);
    let metrics = match &file.metrics {
        Some(m) => validate_metrics(m, listen, &mut problems).map(Some),
        None => Some(None),
    };

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

    let websocket = validate_websocket(&file.websocket, &mut problems);
    let tls = match &file.tls {
        Some(tls) => validate_tls(tls, &mut problems).map(Some),
        None => Some(None),
    };
    let store = match &file.store {
        Some(store) => validate_store(store, env, file.session.is_some(), &mut problems).map(Some),
        None => Some(None),
    };
    let session = match (&file.session, &file.oidc) {
        (None, None) => Some(None),
        (Some(session), Some(oidc)) => {
            validate_session(session, oidc, file.tls.is_some(), env, &mut problems).map(Some)
        }
        (Some(_), None) => {
            problems.push("session: needs an [oidc] section (the IdP users log in with)".into());
            None
        }
        (None, Some(_)) => {
            problems.push(
                "oidc: needs a [session] section (where logged-in users' tokens live)".into(),
            );
            None
        }
    };
    if file.session.is_none() {
        for route in routes.iter().filter(|r| r.auth == AuthMode::Session) {
            problems.push(format!(
                "routes[{}].auth: `session` needs the [session] and [oidc] sections",
                route.index
            ));
        }
    }

    let (
        true,
        Some(listen),
        Some(server),
        Some(csrf),
        Some(rate_limit),
        Some(session),
        Some(websocket),
        Some(tls),
        Some(log),
        Some(metrics),
        Some(store),
    ) = (
        problems.is_empty(),
        listen,
        server,
        csrf,
        rate_limit,
        session,
        websocket,
        tls,
        log,
        metrics,
        store,
    )
    else {
        return Err(ConfigError::Invalid(problems));
    };
    Ok(Config {
        listen,
        server,
        csrf,
        rate_limit,
        log_level,
        log,
        metrics,
        routes: RouteTable::new(routes),
        session,
        websocket,
        tls,
        store,
    })
}

fn validate_store(
    s: &file::StoreFile,
    env: &Env,
    has_session: bool,
    problems: &mut Vec<String>,
) -> Option<super::StoreConfig> {
    use crate::store::{OnFailure, SessionStorage, StoreSettings};
    let before = problems.len();
    let (urls, cluster) = match (&s.url, &s.urls) {
        (Some(url), None) => (vec![url.clone()], false),
        (None, Some(urls)) if !urls.is_empty() => (urls.clone(), true),
        (None, Some(_)) => {
            problems.push("store.urls: list at least one node of the cluster".into());
            (Vec::new(), true)
        }
        (Some(_), Some(_)) => {
            problems
                .push("store: `url` (one node) and `urls` (a cluster) cannot both be set".into());
            (Vec::new(), false)
        }
        (None, None) => {
            problems.push(
                "store: needs `url = \"redis://host:6379/0\"` (one node) or `urls = [...]` \
                 (a cluster)"
                    .into(),
            );
            (Vec::new(), false)
        }
    };
    let place = if cluster { "store.urls" } else { "store.url" };
    for url in &urls {
        if let Err(problem) = crate::store::check_url(url, cluster) {
            problems.push(format!("{place}: {problem}"));
        }
    }
    let password = match &s.password_env {
        None => None,
        Some(name) => match env.var(name) {
            Some(value) => Some(value.to_string()),
            None => {
                problems.push(format!(
                    "store.password_env: the environment variable {name} is not set"
                ));
                None
            }
        },
    };
    let key_prefix = s
        .key_prefix
        .clone()
        .unwrap_or_else(|| file::DEFAULT_STORE_KEY_PREFIX.into());
    if key_prefix.contains(['{', '}']) {
        problems.push(
            "store.key_prefix: braces are not allowed (they would change the keys' cluster \
             hash slot)"
                .into(),
        );
    }
    let timeout = check(
        problems,
        "store.timeout",
        parse_duration(s.timeout.as_deref().unwrap_or(file::DEFAULT_STORE_TIMEOUT)).and_then(|d| {
            if d.is_zero() || d > std::time::Duration::from_secs(30) {
                Err("must be between 1ms and 30s".into())
            } else {
                Ok(d)
            }
        }),
    );
    let on_failure = check(
        problems,
        "store.on_failure",
        OnFailure::parse(s.on_failure.as_deref().unwrap_or("closed")),
    );
    let sessions = check(
        problems,
        "store.sessions",
        SessionStorage::parse(s.sessions.as_deref().unwrap_or("cookie")),
    );
    if sessions == Some(SessionStorage::Store) && !has_session {
        problems.push(
            "store.sessions: `store` keeps the token handler's sessions; it needs the \
             [session] and [oidc] sections"
                .into(),
        );
    }
    if problems.len() != before {
        return None;
    }
    Some(super::StoreConfig {
        settings: StoreSettings {
            urls,
            cluster,
            password,
            key_prefix,
            timeout: timeout?,
        },
        on_failure: on_failure?,
        sessions: sessions?,
    })
}

/// `[tls]`: both keys, and files that parse and belong together. Each file's problem is listed
/// under its own key, both when both are bad.
fn validate_tls(t: &TlsFile, problems: &mut Vec<String>) -> Option<TlsSettings> {
    let (cert, key) = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => (
            std::path::PathBuf::from(cert),
            std::path::PathBuf::from(key),
        ),
        (cert, key) => {
            let together = if cert.is_some() || key.is_some() {
                ": cert and key go together"
            } else {
                ""
            };
            if cert.is_none() {
                problems.push(format!(
                    "tls.cert: is required (the PEM certificate chain, like \"/etc/cookiegate/cert.pem\"){together}"
                ));
            }
            if key.is_none() {
                problems.push(format!(
                    "tls.key: is required (the PEM private key, like \"/etc/cookiegate/key.pem\"){together}"
                ));
            }
            return None;
        }
    };
    match crate::server::tls::LoadedCert::load_all(&cert, &key) {
        Ok(loaded) => Some(TlsSettings { cert, key, loaded }),
        Err(errors) => {
            for err in errors {
                problems.push(format!("{}: {err}", err.file().key_path()));
            }
            None
        }
    }
}

/// `[log]` beyond its level: the format and the access log.
fn validate_log(l: &file::LogFile, problems: &mut Vec<String>) -> Option<super::LogSettings> {
    let format = match l.format.as_deref().unwrap_or(file::DEFAULT_LOG_FORMAT) {
        "text" => super::LogFormat::Text,
        "json" => super::LogFormat::Json,
        other => {
            problems.push(format!(
                "log.format: `{other}` must be \"text\" or \"json\""
            ));
            return None;
        }
    };
    Some(super::LogSettings {
        format,
        access: l.access.unwrap_or(true),
    })
}

/// `[metrics]`: an address of its own, never the public listener's (metrics are for the
/// operator's scraper, not for browsers).
fn validate_metrics(
    m: &file::MetricsFile,
    public: Option<SocketAddr>,
    problems: &mut Vec<String>,
) -> Option<super::MetricsSettings> {
    let text = m.listen.as_deref().unwrap_or(file::DEFAULT_METRICS_LISTEN);
    let Ok(listen) = text.parse::<SocketAddr>() else {
        problems.push(format!(
            "metrics.listen: `{text}` must be an IP address and port, like \"127.0.0.1:9464\""
        ));
        return None;
    };
    if public.is_some_and(|p| {
        p.port() == listen.port()
            && listen.port() != 0
            && (p.ip() == listen.ip() || p.ip().is_unspecified() || listen.ip().is_unspecified())
    }) {
        problems.push(format!(
            "metrics.listen: `{listen}` is the public listener's address; metrics need a listener of their own"
        ));
        return None;
    }
    Some(super::MetricsSettings { listen })
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
    let mut endpoint_path = |key: &str, value: &Option<String>, default: &str| match value
        .as_deref()
        .unwrap_or(default)
    {
        "" => Some(None),
        path => check(
            problems,
            &format!("server.{key}"),
            if path.starts_with('/') && !path.contains(['?', '#', ' ']) {
                Ok(Some(path.to_string()))
            } else {
                Err(format!("`{path}` must be a path starting with '/'"))
            },
        ),
    };
    let health_path = endpoint_path("health_path", &s.health_path, file::DEFAULT_HEALTH_PATH);
    let ready_path = endpoint_path("ready_path", &s.ready_path, file::DEFAULT_READY_PATH);
    if let (Some(Some(health)), Some(Some(ready))) = (&health_path, &ready_path) {
        if health == ready {
            problems.push(format!(
                "server.ready_path: `{ready}` is already the health_path"
            ));
        }
    }
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
        ready_path: ready_path?,
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
        websocket: route.websocket.unwrap_or(false),
    })
}

/// A URL cookiegate sends browsers to or calls: `https`, or `http` on a loopback host only
/// (local development), absolute, without a fragment. Returns whether it is plain `http`.
fn check_url(text: &str, what: &str) -> Result<bool, String> {
    let uri: http::Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    let host = uri.host().ok_or_else(|| {
        format!("`{text}` needs a scheme and a host, like https://{what}.example.com")
    })?;
    if text.contains('#') {
        return Err(format!("`{text}` must not have a fragment"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(false),
        Some("http") if is_loopback_host(host) => Ok(true),
        Some("http") => Err(format!(
            "`{text}` must use https (plain http is only allowed on a loopback host such as 127.0.0.1 or localhost)"
        )),
        _ => Err(format!("`{text}` must be an https URL")),
    }
}

/// An IdP endpoint URL from a discovery document, held to the same rule as the issuer:
/// `https`, or `http` on a loopback host.
pub(crate) fn check_idp_url(text: &str) -> Option<http::Uri> {
    check_url(text, "idp").ok()?;
    text.parse().ok()
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Authorization-request parameters cookiegate sets itself: `extra_params` may not override
/// them (a `redirect_uri` or `state` from the file would break the flow's guarantees).
const RESERVED_PARAMS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
];

fn validate_session(
    s: &SessionFile,
    o: &OidcFile,
    tls: bool,
    env: &Env,
    problems: &mut Vec<String>,
) -> Option<SessionSettings> {
    let before = problems.len();
    let cookie = check(
        problems,
        "session.cookie",
        CookieName::parse(s.cookie.as_deref().unwrap_or(file::DEFAULT_SESSION_COOKIE)),
    );
    let keys_env = s.keys_env.as_deref().unwrap_or(file::DEFAULT_KEYS_ENV);
    let keys = check(
        problems,
        "session.keys_env",
        match env.var(keys_env) {
            None => Err(format!(
                "environment variable {keys_env} is not set (comma-separated base64 32-byte keys; \
                 make one with `openssl rand -base64 32`)"
            )),
            Some(text) => SessionKeys::parse(text).map_err(|e| format!("{keys_env}: {e}")),
        },
    );
    let max_age = check(
        problems,
        "session.max_age",
        parse_duration(
            s.max_age
                .as_deref()
                .unwrap_or(file::DEFAULT_SESSION_MAX_AGE),
        )
        .and_then(|d| {
            if d.is_zero() {
                Err("must be greater than zero".into())
            } else {
                Ok(d)
            }
        }),
    );
    let same_site = check(
        problems,
        "session.same_site",
        SameSite::parse(s.same_site.as_deref().unwrap_or("lax")),
    );

    let issuer = check(
        problems,
        "oidc.issuer",
        o.issuer
            .clone()
            .ok_or_else(|| {
                "is required (the IdP's issuer URL, like https://idp.example.com)".to_string()
            })
            .and_then(|i| {
                check_url(&i, "idp")?;
                if i.contains('?') {
                    return Err(format!("`{i}` must not have a query"));
                }
                Ok(i)
            }),
    );
    let client_id = check(
        problems,
        "oidc.client_id",
        o.client_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| "is required".to_string()),
    );
    let secret_env = o
        .client_secret_env
        .as_deref()
        .unwrap_or(file::DEFAULT_CLIENT_SECRET_ENV);
    let client_secret = check(
        problems,
        "oidc.client_secret_env",
        env.var(secret_env).map(str::to_string).ok_or_else(|| {
            format!("environment variable {secret_env} is not set (the client secret)")
        }),
    );
    let scopes: Vec<String> = o
        .scopes
        .clone()
        .unwrap_or_else(|| file::DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
    if !scopes.iter().any(|s| s == "openid") {
        problems.push("oidc.scopes: must include `openid`".into());
    }
    if let Some(bad) = scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        problems.push(format!("oidc.scopes: `{bad}` is not a scope token"));
    }
    let redirect = check(
        problems,
        "oidc.redirect_uri",
        o.redirect_uri
            .clone()
            .ok_or_else(|| {
                "is required (the public URL of the callback, like https://app.example.com/auth/callback)"
                    .to_string()
            })
            .and_then(|r| {
                let plain = check_url(&r, "app")?;
                let uri: http::Uri = r.parse().map_err(|_| format!("`{r}` is not a URL"))?;
                if uri.query().is_some() {
                    return Err(format!("`{r}` must not have a query"));
                }
                let path = uri.path();
                if path.len() < 2 {
                    return Err(format!("`{r}` needs a path for the callback, like /auth/callback"));
                }
                Ok((r.clone(), path.to_string(), plain))
            }),
    );
    let post_logout_redirect_uri = match &o.post_logout_redirect_uri {
        None => Some(None),
        Some(p) => check(
            problems,
            "oidc.post_logout_redirect_uri",
            check_url(p, "app").map(|_| Some(p.clone())),
        ),
    };
    let refresh_before = check(
        problems,
        "oidc.refresh_before",
        parse_duration(
            o.refresh_before
                .as_deref()
                .unwrap_or(file::DEFAULT_REFRESH_BEFORE),
        ),
    );
    let path = check(
        problems,
        "oidc.path",
        RoutePrefix::parse(o.path.as_deref().unwrap_or(file::DEFAULT_AUTH_PATH)).and_then(|p| {
            if p.as_str() == "/" {
                Err("must not be `/`: it would take every path".into())
            } else {
                Ok(p.as_str().to_string())
            }
        }),
    );
    let mut extra_params = Vec::new();
    for (name, value) in o.extra_params.iter().flatten() {
        if RESERVED_PARAMS.contains(&name.as_str()) {
            problems.push(format!(
                "oidc.extra_params.{name}: cookiegate sets `{name}` itself"
            ));
        } else {
            extra_params.push((name.clone(), value.clone()));
        }
    }
    let secure = match (s.secure.as_deref().unwrap_or("auto"), &redirect) {
        ("always", _) => Some(true),
        ("never", _) => Some(false),
        // Secure unless the callback is plain http on a loopback host (local development,
        // where a browser would not send a Secure cookie back over http), and always when
        // cookiegate ends TLS itself: its browsers then only ever reach it over https.
        ("auto", Some((_, _, plain))) => Some(!plain || tls),
        ("auto", None) => None,
        (other, _) => {
            problems.push(format!(
                "session.secure: `{other}` must be one of auto, always, never"
            ));
            None
        }
    };
    if let (Some(cookie), Some(secure)) = (&cookie, secure) {
        if let Err(e) = check_name_and_secure(cookie, secure) {
            problems.push(format!("session.cookie: {e}"));
        }
    }
    if problems.len() != before {
        return None;
    }
    let (redirect_uri, callback_path, _) = redirect?;
    Some(SessionSettings {
        cookie: cookie?,
        keys: std::sync::Arc::new(keys?),
        max_age: max_age?,
        same_site: same_site?,
        secure: secure?,
        oidc: OidcSettings {
            issuer: issuer?,
            client_id: client_id?,
            client_secret: client_secret?,
            scopes,
            redirect_uri,
            callback_path,
            post_logout_redirect_uri: post_logout_redirect_uri?,
            refresh_before: refresh_before?,
            path: path?,
            extra_params,
        },
    })
}

fn validate_websocket(w: &WebSocketFile, problems: &mut Vec<String>) -> Option<WebSocketSettings> {
    let before = problems.len();
    let mut allowed_origins = Vec::new();
    for (i, origin) in w.allowed_origins.iter().flatten().enumerate() {
        if let Some(origin) = check(
            problems,
            &format!("websocket.allowed_origins[{i}]"),
            parse_origin(origin),
        ) {
            allowed_origins.push(origin);
        }
    }
    let mut duration = |key: &str, value: &Option<String>, default: &str| {
        check(
            problems,
            &format!("websocket.{key}"),
            parse_duration(value.as_deref().unwrap_or(default)).and_then(|d| {
                if d.is_zero() {
                    Err("must be greater than zero".into())
                } else {
                    Ok(d)
                }
            }),
        )
    };
    let idle_timeout = duration(
        "idle_timeout",
        &w.idle_timeout,
        file::DEFAULT_WS_IDLE_TIMEOUT,
    );
    let max_lifetime = duration(
        "max_lifetime",
        &w.max_lifetime,
        file::DEFAULT_WS_MAX_LIFETIME,
    );
    let max_per_session = match w.max_per_session {
        Some(0) => {
            problems.push("websocket.max_per_session: must be greater than zero".into());
            None
        }
        other => Some(other.unwrap_or(file::DEFAULT_WS_MAX_PER_SESSION)),
    };
    if problems.len() != before {
        return None;
    }
    Some(WebSocketSettings {
        allowed_origins,
        allow_missing_origin: w.allow_missing_origin.unwrap_or(false),
        idle_timeout: idle_timeout?,
        max_lifetime: max_lifetime?,
        max_per_session: max_per_session?,
    })
}
