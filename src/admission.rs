//! Whether a request may go upstream, and with what: the whole refusal order in one pure,
//! synchronous function, [`admit`]. Nothing here does I/O; the pipeline (`proxy`) gathers the
//! request's facts, calls it, and either answers the refusal or forwards what was admitted.
//!
//! The order, each step refusing before anything reaches the upstream (a request failing
//! several checks gets the first one's answer; the table test pins this):
//!
//! 1. the health endpoint (`GET`/`HEAD` on `server.health_path`) -> answered here;
//! 2. CONNECT and TRACE -> 405; a target that is not an origin-form path -> 400;
//! 3. the route, by longest prefix -> 404; the route's methods -> 405;
//! 4. path mapping: a remainder that could climb out of the base path -> 400;
//! 5. framing ([`guard::check_framing`]): smuggling shapes -> 400, codings besides `chunked`
//!    -> 501;
//! 6. CSRF, for unsafe methods on routes that send a token -> 403;
//! 7. the rate limit, per client -> 429 with `Retry-After`;
//! 8. a declared `Content-Length` over the route's `max_body` -> 413;
//! 9. the session cookie -> 400 ambiguous, 401 missing or unusable.
//!
//! Smuggling comes before everything that reads headers a smuggled request could carry; CSRF
//! before the rate limit, so a cross-site page cannot spend a victim's budget; the session
//! last, so no refused request ever touches a token.

use std::net::IpAddr;

use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Method, Uri};

use crate::auth::{AuthMode, SessionError, SessionToken, extract_session};
use crate::config::Config;
use crate::error::ProxyError;
use crate::guard::{self, FramingReject, Guards};
use crate::routing::{Route, UriError, is_forwardable};
use crate::trust::{self, Client, Proto};

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
}

/// An admitted request.
#[derive(Debug)]
pub enum Admitted<'c> {
    /// The health endpoint: answer `200 {"status":"ok"}`.
    Health,
    /// Forward it.
    Forward(Forward<'c>),
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
    /// `Bearer <token>` from the session cookie, marked sensitive, when there is one.
    pub bearer: Option<HeaderValue>,
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
    guard::check_framing(req.headers, req.raw_both_framings).map_err(|reject| match reject {
        FramingReject::BothFramings => {
            ProxyError::BadRequest("both content-length and transfer-encoding")
        }
        FramingReject::UnsupportedCoding => ProxyError::UnsupportedTransferCoding,
    })?;

    // HTTP/2 clients send the host as `:authority`, HTTP/1 clients as `Host`.
    let own_host = req.headers.get(HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let client = trust::identify(
        req.peer,
        req.proto,
        own_host,
        req.headers,
        &config.server.trusted_proxies,
    );
    if route.auth != AuthMode::None {
        guards
            .csrf
            .check(method, req.headers, client.host.as_ref())
            .map_err(ProxyError::CsrfRejected)?;
    }
    let session = match route.auth {
        AuthMode::None => Ok(None),
        _ => extract_session(req.headers, &route.cookie),
    };
    if let Some(limiter) = &guards.limiter {
        // Only a session-keyed limiter reads the fingerprint; a keyed hash is not free.
        let fingerprint = match limiter.key {
            guard::rate_limit::KeyKind::Ip => None,
            _ => session
                .as_ref()
                .ok()
                .and_then(|s| s.as_ref().map(SessionToken::fingerprint)),
        };
        limiter
            .check(&limiter.key.key(client.ip, fingerprint))
            .map_err(ProxyError::RateLimited)?;
    }
    if req
        .body_length
        .is_some_and(|len| len > route.max_body.as_u64())
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
    Ok(Admitted::Forward(Forward {
        route,
        uri,
        client,
        bearer,
    }))
}

#[cfg(test)]
mod tests;
