//! One request, end to end: route -> guards -> token -> forward -> relay.
//!
//! [`handle`] is the whole pipeline and the only place an error becomes a response (and is
//! logged). Checks run in this order, each refusing before anything reaches the upstream:
//!
//! 1. health endpoint (answered here, no route needed);
//! 2. CONNECT and TRACE -> 405; a target that is not an origin-form path -> 400;
//! 3. route by longest prefix -> 404; the route's methods -> 405;
//! 4. path mapping: a remainder that could climb out of the base path -> 400;
//! 5. the guards ([`crate::guard`]): smuggling shapes -> 400 (for HTTP/1 also as found in the
//!    connection's raw bytes, [`crate::guard::framing`]), CSRF -> 403, rate limit -> 429;
//! 6. a declared `Content-Length` over the route's `max_body` -> 413;
//! 7. the session cookie -> 400 ambiguous, 401 missing or unusable;
//! 8. forward, with the body limit and idle timer wrapping the body as it streams.

pub mod body;
pub mod exchange;
pub mod forward;
pub mod h1;
pub mod headers;
pub mod pool;
pub mod relay;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::auth::{AuthMode, SessionError, SessionToken, extract_session};
use crate::config::Config;
use crate::error::{BoxError, Fault, ProxyError};
use crate::guard::framing::FramingWatch;
use crate::guard::{self, Guards, RequestFacts};
use crate::routing::is_forwardable;
use body::{LimitedBody, Progress};
use forward::UpstreamClient;
use headers::UpstreamHeaders;
use relay::{AccessLog, ResponseBody};

/// Everything a request needs, built once at startup and shared read-only.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// The pooled upstream client.
    pub client: UpstreamClient,
    /// CSRF policy and rate limiter.
    pub guards: Guards,
}

impl AppState {
    /// Builds the state, including the upstream client.
    ///
    /// # Errors
    /// When a TLS upstream is configured and no root certificates can be loaded.
    pub fn new(config: Config) -> Result<Self, BoxError> {
        let client = forward::build_client(&config.routes, config.server.upstream_timeout)?;
        let guards = Guards::new(&config);
        Ok(Self {
            config,
            client,
            guards,
        })
    }
}

/// What we know about the client's connection, computed once per connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer's address.
    pub peer: std::net::IpAddr,
    /// The TCP peer's address as a header value, for `X-Forwarded-For` and friends.
    pub client_ip: HeaderValue,
    /// `http` (cookiegate does not terminate TLS yet).
    pub proto: &'static str,
    /// What the connection's raw-byte scanner found about its HTTP/1 request heads.
    pub framing: Arc<FramingWatch>,
    /// Requests of this connection whose response is not finished ([`InFlight`]).
    pub in_flight: AtomicUsize,
}

impl ConnInfo {
    /// Counts a request in until its response is finished (the returned guard is dropped
    /// with the response body). Called by the server as hyper hands it the request, so the
    /// count is up before hyper reads on.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether a request of this connection is being answered.
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// A request being answered; see [`ConnInfo::begin`].
#[derive(Debug)]
pub struct InFlight(Arc<ConnInfo>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers one request. Never fails: every error becomes a JSON response here. `in_flight`
/// is held by the response body until it is finished.
pub async fn handle(
    state: Arc<AppState>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let version = req.version();
    let mut log = AccessLog::begin(req.method(), req.uri().path(), start);
    let res = match proxy(&state, &conn, req, &mut log).await {
        Ok(res) => res,
        Err(err) => {
            match err.fault() {
                Fault::Client => tracing::debug!(
                    status = err.status().as_u16(),
                    error = %err,
                    detail = err.detail(),
                    "request refused"
                ),
                Fault::Upstream => tracing::warn!(
                    status = err.status().as_u16(),
                    error = %err,
                    cause = %SourceChain(&err),
                    "upstream failed"
                ),
            }
            if let Some(log) = &mut log {
                log.set_status(err.status());
            }
            let (parts, bytes) = err.to_response(version).into_parts();
            Response::from_parts(parts, ResponseBody::fixed(bytes, log))
        }
    };
    Ok(res.map(|body| body.holding(in_flight)))
}

async fn proxy(
    state: &AppState,
    conn: &ConnInfo,
    req: Request<Incoming>,
    log: &mut Option<AccessLog>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let config = &state.config;
    // Counted first, once per HTTP/1 request whatever its fate, so the count stays in step
    // with the heads the scanner saw.
    let had_both_framings = req.version() < Version::HTTP_2 && conn.framing.next_request_had_both();
    let method = req.method();
    let path = req.uri().path();

    if config.server.health_path.as_deref() == Some(path)
        && (method == Method::GET || method == Method::HEAD)
    {
        return Ok(health(log.take()));
    }
    if !is_forwardable(method) {
        return Err(ProxyError::MethodNotAllowed(HeaderValue::from_static(
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        )));
    }
    if !path.starts_with('/') {
        return Err(ProxyError::BadRequest(
            "request target is not an origin-form path",
        ));
    }
    let (route, rest) = config.routes.find(path).ok_or(ProxyError::NoRoute)?;
    if let Some(log) = log {
        log.set_route(route.prefix.shared());
    }
    if !route.methods.allows(method) {
        return Err(ProxyError::MethodNotAllowed(
            route.methods.allow_header().clone(),
        ));
    }
    let uri = route
        .upstream
        .uri(rest, req.uri().query())
        .map_err(|_| ProxyError::UnsafePath)?;

    // HTTP/2 clients send the host as `:authority`, HTTP/1 clients as `Host`.
    let host = req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let session = match route.auth {
        AuthMode::None => Ok(None),
        _ => extract_session(req.headers(), &route.cookie),
    };
    let client_ip = state.guards.client_ip(conn.peer, req.headers());
    guard::check_raw_framing(had_both_framings)?;
    state.guards.check(
        route,
        &RequestFacts {
            method,
            headers: req.headers(),
            host: host.as_ref(),
            client_ip,
            // Only the rate limiter reads it; a keyed hash per request is not free.
            session: state
                .guards
                .limiter
                .as_ref()
                .and(session.as_ref().ok())
                .and_then(|s| s.as_ref().map(SessionToken::fingerprint)),
        },
    )?;

    let max_body = route.max_body.as_u64();
    if http_body::Body::size_hint(req.body())
        .exact()
        .is_some_and(|len| len > max_body)
    {
        return Err(ProxyError::BodyTooLarge);
    }
    let bearer = match session {
        Ok(Some(token)) => Some(token.authorization()),
        Ok(None) if route.auth == AuthMode::Required => return Err(ProxyError::MissingSession),
        Ok(None) => None,
        Err(SessionError::Ambiguous) => return Err(ProxyError::AmbiguousSession),
        Err(SessionError::Unusable) => return Err(ProxyError::UnusableSession),
    };

    let (mut parts, incoming) = req.into_parts();
    let client_ip = if client_ip == conn.peer {
        conn.client_ip.clone()
    } else {
        headers::ip_header_value(client_ip)
    };
    let fields = headers::upstream_fields(
        &mut parts.headers,
        UpstreamHeaders {
            bearer,
            keep_client_authorization: route.auth == AuthMode::None,
            forward_cookies: route.forward_cookies,
            client_ip: &client_ip,
            host: host.as_ref(),
            proto: conn.proto,
        },
    );
    parts.uri = uri;
    // We speak HTTP/1.1 to upstreams whatever the client spoke to us.
    parts.version = Version::HTTP_11;
    let progress = (!http_body::Body::is_end_stream(&incoming)).then(Progress::default);
    let body = LimitedBody::new(
        incoming,
        max_body,
        config.server.idle_timeout,
        progress.clone(),
    );
    let upstream_req = Request::from_parts(parts, body);

    let res = forward::send(
        &state.client,
        upstream_req,
        config.server.upstream_timeout,
        &fields,
        progress,
    )
    .await?;

    let (mut parts, body) = res.into_parts();
    headers::to_client(&mut parts.headers);
    parts.version = Version::HTTP_11;
    if let Some(log) = log {
        log.set_status(parts.status);
    }
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, config.server.idle_timeout, log.take()),
    ))
}

fn health(mut log: Option<AccessLog>) -> Response<ResponseBody> {
    if let Some(log) = &mut log {
        log.set_status(StatusCode::OK);
    }
    let mut res = Response::new(ResponseBody::fixed(
        Bytes::from_static(b"{\"status\":\"ok\"}"),
        log,
    ));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Displays an error's source chain (`a: b: c`) for the log.
struct SourceChain<'e>(&'e (dyn std::error::Error + 'static));

impl std::fmt::Display for SourceChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut next = self.0.source();
        let mut first = true;
        while let Some(err) = next {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{err}")?;
            first = false;
            next = err.source();
        }
        Ok(())
    }
}
