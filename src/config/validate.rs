//! Validation: the TOML file model in, a [`Config`] out, or every problem with its place.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use super::file::{self, CsrfFile, FileConfig, RateLimitFile, RouteFile, ServerFile};
use super::units::{ByteSize, parse_duration};
use super::{Config, ConfigError, RateLimitSettings, ServerSettings};
use crate::auth::{AuthMode, CookieName};
use crate::guard::csrf::{CsrfMode, CsrfPolicy, parse_origin};
use crate::guard::rate_limit::KeyKind;
use crate::routing::{MethodSet, Route, RoutePrefix, RouteTable, UpstreamBase};
use crate::trust::{TrustedProxies, parse_cidr};

/// Validates the whole file model.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem.
pub(super) fn config(file: &FileConfig) -> Result<Config, ConfigError> {
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
