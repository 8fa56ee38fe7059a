//! Whether a request may go upstream, and with what: the whole refusal order in one pure,
//! synchronous function, [`admit`]. Nothing here does I/O; the pipeline (`proxy`) gathers the
//! request's facts, calls it, and either answers the refusal or forwards what was admitted.
//!
//! The order, each step refusing before anything reaches the upstream (a request failing
//! several checks gets the first one's answer; the table test pins this):
//!
//! 1. the health endpoint (`GET`/`HEAD` on `server.health_path`) -> answered here; the
//!    readiness endpoint (`server.ready_path`) -> answered by the pipeline, which knows
//!    whether the server is draining or still discovering its IdP;
//! 2. CONNECT and TRACE -> 405; a target that is not an origin-form path -> 400;
//! 3. the token handler's endpoints (`[oidc] path` and the callback) come before the routes,
//!    with the same steps below in the same order (methods, framing, CSRF for logout, rate
//!    limit, size, session);
//! 4. the route, by longest prefix -> 404; the route's methods -> 405;
//! 5. path mapping: a remainder that could climb out of the base path -> 400; a WebSocket
//!    handshake to a route without `websocket = true` -> 400;
//! 6. framing ([`guard::check_framing`]): smuggling shapes -> 400, codings besides `chunked`
//!    -> 501;
//! 7. a WebSocket handshake's `Origin` (own or allowed; never `Sec-Fetch-Site` cross-site or
//!    same-site) -> 403; CSRF, for unsafe methods on routes that send a token -> 403;
//! 8. the rate limit, per client -> 429 with `Retry-After`; a WebSocket over
//!    `max_per_session` open sockets -> 429;
//! 9. a declared `Content-Length` over the route's `max_body` -> 413;
//! 10. the session cookie -> 400 ambiguous, 401 missing or unusable; on `auth = "session"`
//!     routes, the encrypted session: 401 (cookie cleared) when forged, expired or logged out.
//!
//! Smuggling comes before everything that reads headers a smuggled request could carry; CSRF
//! before the rate limit, so a cross-site page cannot spend a victim's budget; the session
//! last, so no refused request ever touches a token.

use std::net::IpAddr;

use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Method, Uri};

use crate::auth::oidc::{Endpoint, TokenHandler, session_ref};
use crate::auth::opened::Opened;
use crate::auth::{AuthMode, SessionError, extract_session};
use crate::config::{Config, SessionSettings};
use crate::error::ProxyError;
use crate::guard::{self, FramingReject, Guards};
use crate::proxy::websocket::{OriginReject, check_origin, is_upgrade};
use crate::routing::{Route, UriError, is_forwardable};
use crate::trust::{self, Client, Proto};
use std::sync::Arc;

/// What [`admit`] needs to know about one request.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target as received.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The body's length when the client declared it (`Content-Length`, or none for
    /// HTTP/2 end-of-stream).
    pub body_length: Option<u64>,
    /// The connection's raw bytes showed both `Content-Length` and `Transfer-Encoding` on
    /// this (HTTP/1) request's head.
    pub raw_both_framings: bool,
    /// The TCP peer.
    pub peer: IpAddr,
    /// How the peer reached us.
    pub proto: Proto,
    /// The time, unix seconds (session expiry).
    pub now: u64,
}

/// An admitted request.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "`Forward` is the common case: boxing it would allocate on every proxied request"
)]
pub enum Admitted<'c> {
    /// The health endpoint: answer `200 {"status":"ok"}`.
    Health,
    /// The readiness endpoint: answer whether the server takes traffic.
    Ready,
    /// Forward it.
    Forward(Forward<'c>),
    /// One of the token handler's own endpoints (login, callback, user, logout, back-channel).
    Auth(AuthRequest),
}

/// A request for a token-handler endpoint.
#[derive(Debug)]
pub struct AuthRequest {
    /// Which endpoint.
    pub(crate) endpoint: Endpoint,
    /// The request's session, when it carries a valid one.
    pub(crate) session: Option<Arc<Opened>>,
    /// The rate-limit step left to the shared store (`[store]`), when there is one.
    pub(crate) rate: Option<RatePending>,
}

/// A rate-limit step `admit` cannot take itself because its bucket is in the shared store
/// (an async call): the pipeline takes it right after admission. So with `[store]`, a
/// request over its size limit or without its cookie is refused before it is counted, where
/// the in-process limiter counts it first; nothing else in the order changes.
#[derive(Debug, Clone)]
pub(crate) struct RatePending {
    /// The bucket's store key: a hash of the client's IP and/or credential, never either.
    pub(crate) store_key: String,
    /// The in-process key, for `on_failure = "open"`.
    pub(crate) local: crate::guard::rate_limit::ClientKey,
}

/// Everything the pipeline needs to forward an admitted request.
#[derive(Debug)]
pub struct Forward<'c> {
    /// The route it matched.
    pub route: &'c Route,
    /// The upstream URI (absolute).
    pub uri: Uri,
    /// Who the client is ([`crate::trust`]).
    pub client: Client,
    /// `Bearer <token>` from the route's cookie, marked sensitive, when there is one.
    pub bearer: Option<HeaderValue>,
    /// On `auth = "session"` routes, the user's session: the pipeline takes its access token,
    /// refreshed first when it is about to expire.
    pub(crate) session: Option<Arc<Opened>>,
    /// A WebSocket handshake, with the key its sockets are counted under (the session's or the
    /// cookie's fingerprint; `None` on routes without a credential).
    pub(crate) websocket: Option<Option<u64>>,
    /// The rate-limit step left to the shared store, when there is one.
    pub(crate) rate: Option<RatePending>,
}

/// The `Allow` value of the 405 for CONNECT and TRACE.
const FORWARDABLE: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Decides one request; see the module docs for the order. Takes one token from the client's
/// rate-limit bucket when it gets that far (the only state it touches).
///
/// # Errors
/// The first refusal, as the [`ProxyError`] to answer.
pub fn admit<'c>(
    config: &'c Config,
    guards: &Guards,
    req: &Facts<'_>,
) -> Result<Admitted<'c>, ProxyError> {
    let (method, path) = (req.method, req.uri.path());
    if config.server.health_path.as_deref() == Some(path)
        && (method == Method::GET || method == Method::HEAD)
    {
        return Ok(Admitted::Health);
    }
    if config.server.ready_path.as_deref() == Some(path)
        && (method == Method::GET || method == Method::HEAD)
    {
        return Ok(Admitted::Ready);
    }
    if !is_forwardable(method) {
        return Err(ProxyError::MethodNotAllowed(HeaderValue::from_static(
            FORWARDABLE,
        )));
    }
    if !path.starts_with('/') {
        return Err(ProxyError::BadRequest(
            "request target is not an origin-form path",
        ));
    }
    if let Some(settings) = &config.session {
        if let Some(endpoint) = Endpoint::find(path, settings) {
            return admit_auth(config, settings, guards, req, endpoint);
        }
    }
    let (route, rest) = config.routes.find(path).ok_or(ProxyError::NoRoute)?;
    if !route.methods.allows(method) {
        return Err(ProxyError::MethodNotAllowed(
            route.methods.allow_header().clone(),
        ));
    }
    let uri = route
        .upstream
        .uri(rest, req.uri.query())
        .map_err(|err| match err {
            UriError::Refused => ProxyError::UnsafePath,
            UriError::Invalid => ProxyError::Internal("a mapped upstream path is not a URI"),
        })?;
    let websocket = is_upgrade(req.method, req.headers);
    if websocket && !route.websocket {
        return Err(ProxyError::WebSocketRoute);
    }
    // A handshake has no body (RFC 6455 §4.1); bytes after its head would reach the upstream
    // as the socket's first frames.
    if websocket
        && (req.body_length.is_some_and(|len| len > 0)
            || req.headers.contains_key(http::header::TRANSFER_ENCODING))
    {
        return Err(ProxyError::BadRequest("a WebSocket handshake with a body"));
    }
    check_framing(req)?;
    let client = identify(config, req);
    if websocket {
        check_origin(req.headers, &client, &config.websocket).map_err(|reject| {
            ProxyError::WebSocketOrigin(match reject {
                OriginReject::CrossSite => "Sec-Fetch-Site says cross-site or same-site",
                OriginReject::Foreign => "the Origin is neither the request's own nor allowed",
                OriginReject::Missing => {
                    "no Origin (set allow_missing_origin for non-browser clients)"
                }
            })
        })?;
    }
    if route.auth != AuthMode::None {
        guards
            .csrf
            .check(method, req.headers, client.host.as_ref())
            .map_err(ProxyError::CsrfRejected)?;
    }
    // Read before the rate limit (a session-keyed limit needs it), refused after it.
    let (cookie, session) = match route.auth {
        AuthMode::None => (Ok(None), Ok(None)),
        AuthMode::Session => (
            Ok(None),
            match &config.session {
                Some(settings) => session_of(settings, guards, req),
                None => Err(ProxyError::Internal("a session route without [session]")),
            },
        ),
        _ => (extract_session(req.headers, &route.cookie), Ok(None)),
    };
    let credential = || match (&cookie, &session) {
        (Ok(Some(token)), _) => Some(Credential::Token(token)),
        (_, Ok(Some(opened))) => Some(Credential::Session(&opened.session.id)),
        _ => None,
    };
    let rate = rate_limit(config, guards, &client, credential)?;
    let credential = || credential().map(|c| c.fingerprint());
    let websocket = if websocket {
        let key = credential();
        if key.is_some_and(|key| guards.sockets.count(key) >= config.websocket.max_per_session) {
            return Err(ProxyError::TooManySockets);
        }
        Some(key)
    } else {
        None
    };
    if req
        .body_length
        .is_some_and(|len| len > route.max_body.as_u64())
    {
        return Err(ProxyError::BodyTooLarge);
    }
    let session = session?;
    let bearer = match cookie {
        Ok(Some(token)) => Some(token.authorization()),
        Ok(None) if route.auth == AuthMode::Required => return Err(ProxyError::MissingSession),
        Ok(None) if route.auth == AuthMode::Session && session.is_none() => {
            return Err(ProxyError::MissingSession);
        }
        Ok(None) => None,
        Err(SessionError::Ambiguous) => return Err(ProxyError::AmbiguousSession),
        Err(SessionError::Unusable) => return Err(ProxyError::UnusableSession),
    };
    Ok(Admitted::Forward(Forward {
        route,
        uri,
        client,
        bearer,
        session,
        websocket,
        rate,
    }))
}

/// The same order for the token handler's endpoints: methods, framing, CSRF (logout, an
/// unsafe request carrying the session), rate limit, size (back-channel bodies are small),
/// session (`/user` needs one; logout takes one if there is).
fn admit_auth<'c>(
    _config: &'c Config,
    settings: &SessionSettings,
    guards: &Guards,
    req: &Facts<'_>,
    endpoint: Endpoint,
) -> Result<Admitted<'c>, ProxyError> {
    if !endpoint.allows(req.method) {
        return Err(ProxyError::MethodNotAllowed(HeaderValue::from_static(
            endpoint.allow(),
        )));
    }
    check_framing(req)?;
    let client = identify(_config, req);
    if endpoint == Endpoint::Logout {
        guards
            .csrf
            .check(req.method, req.headers, client.host.as_ref())
            .map_err(ProxyError::CsrfRejected)?;
    }
    let session = match endpoint {
        Endpoint::User | Endpoint::Logout => session_of(settings, guards, req),
        _ => Ok(None),
    };
    let rate = rate_limit(_config, guards, &client, || match &session {
        Ok(Some(opened)) => Some(Credential::Session(&opened.session.id)),
        _ => None,
    })?;
    if endpoint == Endpoint::Backchannel
        && req
            .body_length
            .is_some_and(|len| len > crate::auth::oidc::MAX_LOGOUT_BODY as u64)
    {
        return Err(ProxyError::BodyTooLarge);
    }
    let session = match (endpoint, session) {
        (Endpoint::User, Ok(None)) => return Err(ProxyError::MissingSession),
        (Endpoint::User, Err(err)) => return Err(err),
        // Logging out with a cookie that is no session (any more) still clears it.
        (Endpoint::Logout, Err(_)) => None,
        (_, Ok(session)) => session,
        (_, Err(_)) => None,
    };
    Ok(Admitted::Auth(AuthRequest {
        endpoint,
        session,
        rate,
    }))
}

fn check_framing(req: &Facts<'_>) -> Result<(), ProxyError> {
    guard::check_framing(req.headers, req.raw_both_framings).map_err(|reject| match reject {
        FramingReject::BothFramings => {
            ProxyError::BadRequest("both content-length and transfer-encoding")
        }
        FramingReject::UnsupportedCoding => ProxyError::UnsupportedTransferCoding,
    })
}

fn identify(config: &Config, req: &Facts<'_>) -> Client {
    // HTTP/2 clients send the host as `:authority`, HTTP/1 clients as `Host`.
    let own_host = req.headers.get(HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    trust::identify(
        req.peer,
        req.proto,
        own_host,
        req.headers,
        &config.server.trusted_proxies,
    )
}

/// What a client holds besides its IP: the route's cookie, or a token-handler session.
enum Credential<'a> {
    Token(&'a crate::auth::SessionToken),
    Session(&'a str),
}

impl Credential<'_> {
    /// Keyed per process: the in-process limiter's and the socket cap's key.
    fn fingerprint(&self) -> u64 {
        match self {
            Self::Token(token) => token.fingerprint(),
            Self::Session(id) => fingerprint(id.as_bytes()),
        }
    }

    /// The same for every instance (the store's keys hash it once more).
    fn shared(&self) -> [u8; 32] {
        match self {
            Self::Token(token) => token.digest(),
            Self::Session(id) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
                let mut out = [0; 32];
                out.copy_from_slice(digest.as_ref());
                out
            }
        }
    }
}

/// Takes one request from the client's bucket, or, with `[store]`, says which bucket the
/// pipeline must take it from. `credential` is asked for only by a limiter keyed on it.
fn rate_limit<'a>(
    config: &Config,
    guards: &Guards,
    client: &Client,
    credential: impl FnOnce() -> Option<Credential<'a>>,
) -> Result<Option<RatePending>, ProxyError> {
    let Some(limiter) = &guards.limiter else {
        return Ok(None);
    };
    let credential = match limiter.key {
        guard::rate_limit::KeyKind::Ip => None,
        _ => credential(),
    };
    let local = limiter
        .key
        .key(client.ip, credential.as_ref().map(Credential::fingerprint));
    if let Some(store) = &config.store {
        let mut material = Vec::with_capacity(64);
        match local {
            guard::rate_limit::ClientKey::Ip(_) => {
                material.extend_from_slice(b"ip ");
                material.extend_from_slice(client.ip.to_string().as_bytes());
            }
            guard::rate_limit::ClientKey::Session(_) => {
                material.extend_from_slice(b"credential ");
            }
            guard::rate_limit::ClientKey::IpSession(..) => {
                material.extend_from_slice(b"ip+credential ");
                material.extend_from_slice(client.ip.to_string().as_bytes());
                material.push(b' ');
            }
        }
        if !matches!(local, guard::rate_limit::ClientKey::Ip(_)) {
            if let Some(credential) = &credential {
                material.extend_from_slice(&credential.shared());
            }
        }
        return Ok(Some(RatePending {
            store_key: crate::store::key(&store.settings.key_prefix, "rl", &material),
            local,
        }));
    }
    limiter.check(&local).map_err(ProxyError::RateLimited)?;
    Ok(None)
}

/// The request's session on a session route: `Ok(None)` without a session cookie; an
/// authentic, unexpired, unrevoked session; or the refusal (401, the cookie cleared).
fn session_of(
    settings: &SessionSettings,
    guards: &Guards,
    req: &Facts<'_>,
) -> Result<Option<Arc<Opened>>, ProxyError> {
    let refused = |error: ProxyError| ProxyError::WithCookies {
        error: Box::new(error),
        cookies: TokenHandler::clear_session(settings, req.headers),
    };
    let opened = match TokenHandler::open_session(settings, &guards.opened, req.headers) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Ok(None),
        // Tampered, truncated, sealed with a key no longer configured, or tossed twice.
        Err(_) => return Err(refused(ProxyError::MissingSession)),
    };
    if opened.session.is_expired(req.now) {
        return Err(refused(ProxyError::SessionExpired));
    }
    if guards.revocations.is_revoked(session_ref(&opened.session)) {
        return Err(refused(ProxyError::MissingSession));
    }
    Ok(Some(opened))
}

/// A keyed fingerprint of a session id for the rate limiter.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut hasher = KEY.get_or_init(Default::default).build_hasher();
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests;
