//! The checks a routed request must pass before its token is used, in one fixed order.
//!
//! Every route goes through the same [`Guards::check`], whichever way it was declared, so no
//! route can skip a guard (Duende BFF shipped advisories because config-declared routes skipped
//! its CSRF check). The order, after routing and path mapping:
//!
//! 1. request smuggling shapes (`Content-Length` with `Transfer-Encoding`) -> 400; hyper drops
//!    `Content-Length` from such an HTTP/1 request before we see it, so [`framing`] finds the
//!    shape in the connection's raw bytes and `proxy` calls [`check_raw_framing`] with what it
//!    found right before [`Guards::check`];
//! 2. CSRF, for unsafe methods on routes that send a token -> 403;
//! 3. the rate limit, per client -> 429 with `Retry-After`.
//!
//! A request failing several checks gets the first failure's answer; tests pin that order.
//! Body size (413) and the session cookie (401/400) come after, in `proxy`, since they need the
//! body and the token.

pub mod csrf;
pub mod framing;
pub mod rate_limit;

use std::net::IpAddr;

use http::Method;
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderValue, TRANSFER_ENCODING};

use crate::auth::AuthMode;
use crate::config::Config;
use crate::error::ProxyError;
use crate::routing::Route;
use csrf::CsrfPolicy;
use rate_limit::ClientLimiter;

/// The guards, built once from the config.
#[derive(Debug)]
pub struct Guards {
    /// CSRF policy.
    pub csrf: CsrfPolicy,
    /// The rate limiter, when `[rate_limit]` is configured.
    pub limiter: Option<ClientLimiter>,
}

/// What the guards need to know about one request.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The host the client asked for (`Host` or `:authority`).
    pub host: Option<&'a HeaderValue>,
    /// The client's IP (behind trusted proxies, the first untrusted hop).
    pub client_ip: IpAddr,
    /// A fingerprint of the session cookie, when there is a usable one.
    pub session: Option<u64>,
}

impl Guards {
    /// Builds the guards from the config.
    pub fn new(config: &Config) -> Self {
        Self {
            csrf: config.csrf.clone(),
            limiter: config.rate_limit.as_ref().map(|r| {
                ClientLimiter::new(r.per_second, r.burst, r.key, r.trusted_proxies.clone())
            }),
        }
    }

    /// Runs every guard in order for a request on `route`.
    ///
    /// # Errors
    /// The first guard's refusal.
    pub fn check(&self, route: &Route, req: &RequestFacts<'_>) -> Result<(), ProxyError> {
        check_framing(req.headers)?;
        if route.auth != AuthMode::None {
            self.csrf
                .check(req.method, req.headers, req.host)
                .map_err(ProxyError::CsrfRejected)?;
        }
        if let Some(limiter) = &self.limiter {
            let key = limiter.key.key(req.client_ip, req.session);
            limiter.check(&key).map_err(ProxyError::RateLimited)?;
        }
        Ok(())
    }

    /// The client's IP for a connection from `peer` (trusted proxies taken into account).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        match &self.limiter {
            Some(limiter) if !limiter.trusted_proxies.is_empty() => {
                rate_limit::client_ip(peer, headers, &limiter.trusted_proxies)
            }
            _ => peer,
        }
    }
}

/// Refuses an HTTP/1 request whose raw head carried both `Content-Length` and
/// `Transfer-Encoding`, as the connection's [`framing::FramingScanner`] saw it: hyper frames
/// such a request by `Transfer-Encoding` and leaves `Content-Length` out of the headers
/// [`Guards::check`] sees (RFC 9112 §6.3), so the shape is only visible in the raw bytes. Runs
/// right before [`Guards::check`], which keeps the smuggling check first.
///
/// # Errors
/// [`ProxyError::BadRequest`] when `had_both`.
pub fn check_raw_framing(had_both: bool) -> Result<(), ProxyError> {
    if had_both {
        return Err(ProxyError::BadRequest(BOTH_FRAMINGS));
    }
    Ok(())
}

const BOTH_FRAMINGS: &str = "both content-length and transfer-encoding";

/// Refuses a request whose body length two framings disagree on (RFC 9112 §6.3: a message with
/// both `Transfer-Encoding` and `Content-Length` "ought to be handled as an error"), the classic
/// request-smuggling shape. hyper already refuses differing duplicated `Content-Length`s and
/// obs-folded headers while parsing. Over HTTP/1 hyper never lets both through (see
/// [`check_raw_framing`]) and HTTP/2 forbids `Transfer-Encoding`; this stays for any other
/// way a request is built.
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest(BOTH_FRAMINGS));
    }
    Ok(())
}
