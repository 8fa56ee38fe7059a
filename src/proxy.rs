//! One request, end to end: admit -> forward -> relay.
//!
//! `handle` gathers the request's facts, asks [`crate::admission::admit`] (the whole refusal
//! order, pure), sends what was admitted through the upstream client (`forward`, with the
//! header policy of [`headers`] and the body limits of `body`), and relays the answer
//! (`relay`). It is the only place an error becomes a response, and where it is logged.

pub(crate) mod body;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod relay;
mod state;
pub(crate) mod websocket;

pub(crate) use state::NotReady;
pub use state::{AppState, Lasting};

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::admission::{self, Admitted, AuthRequest, Facts, Forward};
use crate::auth::oidc::Endpoint;
use crate::config::Config;
use crate::error::{self, ProxyError};
use crate::guard::framing::FramingWatch;
use crate::telemetry::request_id::X_REQUEST_ID;
use crate::trust::Proto;
use body::{LimitedBody, Progress};
use headers::UpstreamHeaders;
use relay::{AccessLog, ResponseBody};

/// What we know about the client's connection, computed once per connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The TCP peer's address.
    pub peer: std::net::IpAddr,
    /// The TCP peer's address as a header value, for `X-Forwarded-For` and friends.
    pub client_ip: HeaderValue,
    /// How the peer reached us: `Https` when the listener ended TLS (`[tls]`).
    pub proto: Proto,
    /// What the connection's raw-byte scanner found about its HTTP/1 request heads.
    pub framing: Arc<FramingWatch>,
    /// The connection became a WebSocket: no more request heads to scan or time.
    pub upgraded: std::sync::atomic::AtomicBool,
    /// Requests of this connection whose response is not finished ([`InFlight`]).
    pub in_flight: AtomicUsize,
    /// Set by the server when it closes what is left at the end of its shutdown grace: a
    /// stream cut then was cut by the shutdown, not by its client.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
}

impl ConnInfo {
    /// Counts a request in until its response is finished (the returned guard is dropped
    /// with the response body). Called by the server as hyper hands it the request, so the
    /// count is up before hyper reads on.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether a request of this connection is being answered.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// A request being answered; see [`ConnInfo::begin`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnInfo>);

impl InFlight {
    /// Whether the server is closing its connections (shutdown).
    pub(crate) fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers one request, on the state current as it arrives (kept to its end, whatever a
/// reload does meanwhile). Never fails: every error becomes a JSON response here. `in_flight`
/// is held by the response body until it is finished.
pub(crate) async fn handle(
    live: crate::server::Live,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> Result<Response<ResponseBody>, Infallible> {
    // Taken here rather than by the caller: the lock inside the connection's service closure
    // cost about 600 instructions a request in how the compiler then built this future
    // (BENCHMARKS.md), here it costs nothing measurable.
    let state = live.current();
    drop(live);
    let start = Instant::now();
    let version = req.version();
    let request_id = state.request_ids.for_request(
        req.headers(),
        conn.peer,
        &state.config.server.trusted_proxies,
    );
    let mut log = AccessLog::begin(
        req.method(),
        req.uri().path(),
        start,
        &request_id,
        state.config.log.access,
        state.observer.as_ref(),
    );
    let mut seen = Seen::default();
    let method = req.method().clone();
    let mut res = match proxy(&state, &conn, req, &request_id, &mut log, &mut seen).await {
        Ok(res) => res,
        Err(err) => {
            crate::telemetry::log_failure(
                &err,
                &crate::telemetry::Failed {
                    config: &state.config,
                    request_id: &request_id,
                    method: &method,
                    route: seen.route,
                    path: seen.path.as_deref(),
                    origin: seen.origin.as_ref(),
                },
            );
            if let Some(observer) = &state.observer {
                crate::telemetry::count_failure(observer, &err, seen.route);
            }
            if let Some(log) = &mut log {
                log.set_status(err.status());
            }
            let (parts, bytes) = err.to_response(version).into_parts();
            Response::from_parts(parts, ResponseBody::fixed(bytes, log))
        }
    };
    res.headers_mut().insert(&X_REQUEST_ID, request_id);
    Ok(res.map(|body| body.holding(in_flight)))
}

/// What the log line of a failed request needs that the request itself took with it.
#[derive(Debug, Default)]
struct Seen<'c> {
    /// The route it matched (or would have, when refused before routing ended).
    route: Option<&'c crate::routing::Route>,
    /// Its path (no query), for refusals and upstream failures.
    path: Option<Box<str>>,
    /// Its `Origin`, for CSRF and WebSocket origin refusals.
    origin: Option<HeaderValue>,
}

async fn proxy<'c>(
    state: &'c Arc<AppState>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    log: &mut Option<Box<AccessLog>>,
    seen: &mut Seen<'c>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let config = &state.config;
    // Counted first, once per HTTP/1 request whatever its fate, so the count stays in step
    // with the heads the scanner saw.
    let raw_both_framings = req.version() < Version::HTTP_2 && conn.framing.next_request_had_both();
    let facts = Facts {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        body_length: http_body::Body::size_hint(req.body()).exact(),
        raw_both_framings,
        peer: conn.peer,
        proto: conn.proto,
        now: if config.session.is_some() {
            crate::auth::oidc::now()
        } else {
            0
        },
    };
    if state.shared.is_some() {
        Box::pin(load_stored_session(state, req.uri().path(), req.headers())).await?;
    }
    let forward = match admission::admit(config, &state.guards, &facts) {
        // Probes stay out of the access log and the metrics: they would drown them.
        Ok(Admitted::Health) => {
            if let Some(log) = log.take() {
                log.skip();
            }
            return Ok(fixed(error::health()));
        }
        Ok(Admitted::Ready) => {
            if let Some(log) = log.take() {
                log.skip();
            }
            return Ok(fixed(error::readiness(state.not_ready())));
        }
        Ok(Admitted::Auth(mut auth)) => {
            if let Some(log) = log {
                log.set_auth();
            }
            seen.path = Some(req.uri().path().into());
            take_rate(state, auth.rate.take()).await?;
            if let Err(refused) = check_revoked(state, auth.session.as_ref(), req.headers()).await {
                match auth.endpoint {
                    // Logging out a session already ended elsewhere still clears its cookie.
                    Endpoint::Logout if refused.status() == StatusCode::UNAUTHORIZED => {
                        auth.session = None;
                    }
                    _ => return Err(refused),
                }
            }
            return token_endpoint(state, auth, req, log).await;
        }
        Ok(Admitted::Forward(mut forward)) => {
            if let Some(log) = log {
                log.set_route(forward.route);
            }
            seen.route = Some(forward.route);
            // Only with `[store]`: the plain path awaits nothing here.
            if state.shared.is_some() {
                Box::pin(take_rate(state, forward.rate.take())).await?;
                Box::pin(check_revoked(
                    state,
                    forward.session.as_ref(),
                    req.headers(),
                ))
                .await?;
            }
            forward
        }
        Err(err) => {
            // Refused after routing: the log line names the route all the same (not for the
            // token handler's endpoints, which come before the routes).
            let path = req.uri().path();
            let is_auth = config
                .session
                .as_ref()
                .is_some_and(|s| Endpoint::find(path, s).is_some());
            match (config.routes.find(path), is_auth) {
                (_, true) => {
                    if let Some(log) = log {
                        log.set_auth();
                    }
                }
                (Some((route, _)), false) => {
                    if let Some(log) = log {
                        log.set_route(route);
                    }
                    seen.route = Some(route);
                }
                (None, false) => {}
            }
            seen.path = Some(path.into());
            seen.origin = req.headers().get(http::header::ORIGIN).cloned();
            return Err(err);
        }
    };
    if forward.websocket.is_some() {
        seen.path = Some(req.uri().path().into());
        // Boxed: the handshake's own state stays out of every plain request's future.
        return Box::pin(websocket_forward(
            state, conn, req, forward, request_id, log,
        ))
        .await;
    }
    let mut forward = forward;
    let route = forward.route;
    let (mut parts, incoming) = req.into_parts();
    let (bearer, session_cookies) = bearer_of(state, &mut forward, &parts.headers).await?;
    let client_ip = client_ip_value(conn, &forward);
    let fields = headers::upstream_fields(
        &mut parts.headers,
        UpstreamHeaders {
            bearer,
            keep_client_authorization: route.auth == crate::auth::AuthMode::None,
            forward_cookies: route.forward_cookies,
            client_ip: &client_ip,
            host: forward.client.host.as_ref(),
            proto: forward.client.proto.as_str(),
            websocket: false,
        },
    )
    // The request's id goes upstream in place of whatever the client sent.
    .with_request_id(request_id.clone());
    let progress = (!http_body::Body::is_end_stream(&incoming)).then(Progress::default);
    if let Some(log) = log {
        log.set_received(progress.as_ref());
    }
    let body = LimitedBody::new(
        incoming,
        route.max_body.as_u64(),
        config.server.idle_timeout,
        progress.clone(),
    );
    let res = match forward::send(
        &state.client,
        forward::Outgoing {
            method: &parts.method,
            uri: &forward.uri,
            fields: fields.iter(&parts.headers),
            declared_length: parts.headers.contains_key(CONTENT_LENGTH),
            upgrade: false,
            body,
        },
        config.server.upstream_timeout,
        progress,
    )
    .await
    {
        Ok(res) => res,
        Err(err) => {
            seen.path = Some(parts.uri.path().into());
            return Err(err);
        }
    };
    Ok(relay_answer(
        res,
        session_cookies,
        route,
        config,
        request_id,
        log,
    ))
}

/// With `[store] sessions = "store"`, a session route's (or token endpoint's) session is read
/// from the store before admission, which then opens it like a cookie's
/// ([`TokenHandler::load_stored`]). Other routes never wait for the store.
async fn load_stored_session(
    state: &AppState,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<(), ProxyError> {
    let (Some(tokens), Some(settings)) = (&state.tokens, &state.config.session) else {
        return Ok(());
    };
    let wanted = Endpoint::find(path, settings).is_some()
        || state
            .config
            .routes
            .find(path)
            .is_some_and(|(route, _)| route.auth == crate::auth::AuthMode::Session);
    if wanted {
        tokens.load_stored(&state.guards.opened, headers).await?;
    }
    Ok(())
}

/// The rate-limit step `admit` left to the shared store: one GCRA step there, or this
/// instance's own limiter while the store fails and `on_failure = "open"`.
async fn take_rate(
    state: &AppState,
    pending: Option<admission::RatePending>,
) -> Result<(), ProxyError> {
    let (Some(pending), Some(shared), Some(settings)) =
        (pending, &state.shared, &state.config.rate_limit)
    else {
        return Ok(());
    };
    let interval = std::time::Duration::from_secs(1) / settings.per_second.get();
    let answer = shared
        .store
        .rate_limit(&pending.store_key, interval, settings.burst.get())
        .await;
    match shared.settle("rate limit", answer)? {
        Some(None) => Ok(()),
        Some(Some(wait)) => Err(ProxyError::RateLimited(wait)),
        None => match &state.guards.limiter {
            Some(limiter) => limiter
                .check(&pending.local)
                .map_err(ProxyError::RateLimited),
            None => Ok(()),
        },
    }
}

/// The session's revocation as every instance knows it (`[store]`): admission checked this
/// instance's own list; a session logged out on another instance is refused here the same way
/// (401, the cookie cleared).
async fn check_revoked(
    state: &AppState,
    session: Option<&Arc<crate::auth::opened::Opened>>,
    headers: &http::HeaderMap,
) -> Result<(), ProxyError> {
    let (Some(opened), Some(shared), Some(settings)) =
        (session, &state.shared, &state.config.session)
    else {
        return Ok(());
    };
    let revoked = shared
        .is_revoked(crate::auth::oidc::session_ref(&opened.session))
        .await;
    match shared.settle("revocation check", revoked)? {
        Some(true) => Err(ProxyError::WithCookies {
            error: Box::new(ProxyError::MissingSession),
            cookies: crate::auth::oidc::TokenHandler::clear_session(settings, headers),
        }),
        // False, or the store failed with `on_failure = "open"`: this instance's own list,
        // already checked, decides.
        Some(false) | None => Ok(()),
    }
}

/// An upstream's answer as the client gets it: hop-by-hop and internal fields off, a refreshed
/// session's cookies on, the body streamed under the idle timeout and logged when it ends.
fn relay_answer(
    res: Response<forward::AnswerBody>,
    session_cookies: Vec<HeaderValue>,
    route: &crate::routing::Route,
    config: &Config,
    request_id: &HeaderValue,
    log: &mut Option<Box<AccessLog>>,
) -> Response<ResponseBody> {
    let (mut parts, body) = res.into_parts();
    headers::to_client(&mut parts.headers);
    for cookie in session_cookies {
        parts.headers.append(http::header::SET_COOKIE, cookie);
    }
    parts.version = Version::HTTP_11;
    let mut metrics = None;
    if let Some(log) = log {
        log.set_status(parts.status);
        metrics = log.route_metrics().cloned();
        if metrics.is_some() && is_event_stream(&parts.headers) {
            log.set_sse();
        }
    }
    let origin = relay::Origin {
        route: route.prefix.shared(),
        upstream: route.upstream.authority().clone(),
        request_id: request_id.clone(),
        metrics,
    };
    Response::from_parts(
        parts,
        ResponseBody::upstream(body, origin, config.server.idle_timeout, log.take()),
    )
}

/// Whether an answer is a Server-Sent Events stream (`text/event-stream`).
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// The bearer for an admitted request, and the `Set-Cookie` values of a refreshed session: on
/// a session route, the session's access token, refreshed first when it is about to expire.
async fn bearer_of(
    state: &AppState,
    forward: &mut Forward<'_>,
    headers: &http::HeaderMap,
) -> Result<(Option<HeaderValue>, Vec<HeaderValue>), ProxyError> {
    match (forward.session.take(), &state.tokens) {
        (Some(session), Some(tokens)) => {
            let (bearer, cookies) = tokens
                .bearer_for(&state.client, &state.guards.revocations, session, headers)
                .await?;
            Ok((Some(bearer), cookies))
        }
        _ => Ok((forward.bearer.take(), Vec::new())),
    }
}

/// The client's IP as a header value (the connection's, built once, when it is the peer).
fn client_ip_value(conn: &ConnInfo, forward: &Forward<'_>) -> HeaderValue {
    if forward.client.ip == conn.peer {
        conn.client_ip.clone()
    } else {
        headers::ip_header_value(forward.client.ip)
    }
}

/// A WebSocket handshake: sent upstream with its upgrade fields; a valid `101` hands both
/// connections to a socket task ([`websocket::splice`]); any other answer is relayed.
async fn websocket_forward(
    state: &Arc<AppState>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    mut forward: Forward<'_>,
    request_id: &HeaderValue,
    log: &mut Option<Box<AccessLog>>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let config = &state.config;
    let route = forward.route;
    let socket_key = forward.websocket.flatten();
    // The socket's place is taken before the upstream is contacted: concurrent handshakes of
    // one session cannot all pass the cap.
    let slot = state
        .guards
        .sockets
        .take(socket_key, config.websocket.max_per_session)
        .ok_or(ProxyError::TooManySockets)?;
    // The client's side of the upgrade, taken before the request is split.
    let client_upgrade = hyper::upgrade::on(&mut req);
    let socket_session = forward.session.as_ref().map(|s| websocket::SocketSession {
        id: s.session.id.clone(),
        sid: s.session.sid.clone(),
        sub: s.session.sub.clone(),
        issued_at: s.session.issued_at,
        expires_at: s.session.expires_at,
    });
    let (mut parts, incoming) = req.into_parts();
    let (bearer, session_cookies) = bearer_of(state, &mut forward, &parts.headers).await?;
    let client_ip = client_ip_value(conn, &forward);
    let fields = headers::upstream_fields(
        &mut parts.headers,
        UpstreamHeaders {
            bearer,
            keep_client_authorization: route.auth == crate::auth::AuthMode::None,
            forward_cookies: route.forward_cookies,
            client_ip: &client_ip,
            host: forward.client.host.as_ref(),
            proto: forward.client.proto.as_str(),
            websocket: true,
        },
    )
    // The request's id goes upstream in place of whatever the client sent.
    .with_request_id(request_id.clone());
    let websocket_key = parts.headers.get("sec-websocket-key").cloned();
    let body = LimitedBody::new(
        incoming,
        route.max_body.as_u64(),
        config.server.idle_timeout,
        None,
    );
    let res = forward::send(
        &state.client,
        forward::Outgoing {
            method: &parts.method,
            uri: &forward.uri,
            fields: fields.iter(&parts.headers),
            declared_length: parts.headers.contains_key(CONTENT_LENGTH),
            upgrade: true,
            body,
        },
        config.server.upstream_timeout,
        None,
    )
    .await?;

    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the socket: its answer goes to the client as any answer does.
        return Ok(relay_answer(
            res,
            session_cookies,
            route,
            config,
            request_id,
            log,
        ));
    }
    let (mut parts, body) = res.into_parts();
    if !websocket::is_valid_switch(websocket_key.as_ref(), &parts.headers) {
        return Err(ProxyError::UpstreamUnreachable(
            "the upstream's 101 is not a valid WebSocket handshake".into(),
        ));
    }
    let upstream = body
        .into_upgraded()
        .ok_or(ProxyError::Internal("a valid 101 without its connection"))?;
    parts.headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    for cookie in session_cookies {
        parts.headers.append(http::header::SET_COOKIE, cookie);
    }
    conn.upgraded
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The socket logs its own line when it closes; the handshake's is dropped (and counted).
    let logged = log.as_ref().is_some_and(|l| l.writes());
    let path = log.take().map_or_else(String::new, |l| l.replace());
    let state = state.clone();
    let route_prefix = route.prefix.shared();
    let request_id = request_id.clone();
    let open = state
        .metrics()
        .map(|m| m.stream_opened(crate::telemetry::metrics::StreamKind::WebSocket));
    // Detached: the socket lives past this request; `Sockets` counts it, and shutdown closes
    // it after the grace period.
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let Ok(client) = client_upgrade.await else {
            return;
        };
        let _slot = slot;
        let sockets = &state.guards.sockets;
        let mut moved = websocket::Moved::default();
        let ending = websocket::splice(
            hyper_util::rt::TokioIo::new(client),
            upstream.io,
            upstream.read,
            &state.config.websocket,
            sockets,
            &state.guards.revocations,
            socket_session.as_ref(),
            &mut moved,
        )
        .await;
        drop(open);
        if logged {
            websocket::log_close(&request_id, &route_prefix, &path, started, &moved, ending);
        }
    });
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(
        parts,
        ResponseBody::fixed(bytes::Bytes::new(), None),
    ))
}

/// Answers a token-handler endpoint ([`crate::auth::oidc`]).
async fn token_endpoint(
    state: &AppState,
    auth: AuthRequest,
    req: Request<Incoming>,
    log: &mut Option<Box<AccessLog>>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some(tokens) = &state.tokens else {
        return Err(ProxyError::Internal(
            "a token endpoint without a token handler",
        ));
    };
    let client = &state.client;
    let revocations = &state.guards.revocations;
    let res = match auth.endpoint {
        Endpoint::Login => {
            tokens
                .login(client, req.uri().query(), req.headers())
                .await?
        }
        Endpoint::Callback => {
            tokens
                .callback(client, req.uri().query(), req.headers())
                .await?
        }
        Endpoint::User => match &auth.session {
            Some(opened) => tokens.user(&opened.session)?,
            None => return Err(ProxyError::MissingSession),
        },
        Endpoint::Logout => {
            tokens
                .logout(client, revocations, auth.session, req.headers())
                .await?
        }
        Endpoint::Backchannel => {
            use http_body_util::BodyExt as _;
            let body =
                http_body_util::Limited::new(req.into_body(), crate::auth::oidc::MAX_LOGOUT_BODY)
                    .collect()
                    .await
                    .map_err(|_| ProxyError::BodyTooLarge)?
                    .to_bytes();
            tokens.backchannel(client, revocations, &body).await?
        }
    };
    if let Some(log) = log {
        log.set_status(res.status());
    }
    let (parts, bytes) = res.into_parts();
    Ok(Response::from_parts(
        parts,
        ResponseBody::fixed(bytes, log.take()),
    ))
}

/// An answer of cookiegate's own (the probes'), logged and counted nowhere.
fn fixed(res: Response<bytes::Bytes>) -> Response<ResponseBody> {
    let (parts, bytes) = res.into_parts();
    Response::from_parts(parts, ResponseBody::fixed(bytes, None))
}

/// Displays an error's source chain (`a: b: c`) for the log.
pub(crate) struct SourceChain<'e>(pub(crate) &'e (dyn std::error::Error + 'static));

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
