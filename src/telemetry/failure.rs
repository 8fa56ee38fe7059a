//! The log line (and the metrics) of a request that ended in a [`ProxyError`]: one line, where
//! the error becomes a response, naming what went wrong in words an operator can act on.
//!
//! The client's JSON body stays the short public message of [`ProxyError`]; the reason written
//! here may name config keys, the route, the upstream's address and the request's `Origin`,
//! never a token, a cookie's value or a query string. Refusals (the client's fault) are logged
//! at `info`, upstream failures at `warn`, our own faults at `error`.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::Method;
use http::header::HeaderValue;

use super::metrics::{Observer, Refusal, UpstreamFailure};
use crate::auth::AuthMode;
use crate::config::Config;
use crate::error::{Fault, ProxyError, TimeoutStage};
use crate::guard::csrf::{CsrfMode, CsrfReject};
use crate::proxy::SourceChain;
use crate::routing::Route;
use crate::upstream::UpstreamError;

/// What the failure line of one request names besides the error.
#[derive(Debug)]
pub(crate) struct Failed<'a> {
    /// The configuration the request was answered under.
    pub config: &'a Config,
    /// The request's id.
    pub request_id: &'a HeaderValue,
    /// The request's method.
    pub method: &'a Method,
    /// The route it matched, when it got that far.
    pub route: Option<&'a Route>,
    /// Its path, without the query.
    pub path: Option<&'a str>,
    /// Its `Origin`, when refused before forwarding.
    pub origin: Option<&'a HeaderValue>,
}

/// Writes the one log line of a failed request.
pub(crate) fn log_failure(err: &ProxyError, f: &Failed<'_>) {
    let request_id = f.request_id.to_str().unwrap_or("-");
    let route = f.route.map_or("-", |r| r.prefix.as_str());
    let path = f.path.unwrap_or("-");
    let status = err.status().as_u16();
    if let ProxyError::StoreUnavailable(cause) = err {
        // Its own line: the route's upstream is not the one that failed.
        tracing::warn!(
            request_id = %request_id,
            route,
            method = %f.method,
            path,
            status,
            error = %err,
            cause = %cause,
            "shared store failed: answered 503 with Retry-After; the session is left as it was"
        );
        return;
    }
    match err.fault() {
        Fault::Client => tracing::info!(
            request_id = %request_id,
            route,
            method = %f.method,
            path,
            status,
            guard = refusal(err).map_or("-", Refusal::as_str),
            error = %err,
            reason = %refusal_reason(err, f),
            "request refused"
        ),
        Fault::Upstream => {
            let upstream = match (err, f.route) {
                (
                    ProxyError::IdpUnreachable(_)
                    | ProxyError::IdpTimeout
                    | ProxyError::IdpUnavailable
                    | ProxyError::IdpInvalid(_),
                    _,
                ) => idp(f.config),
                (_, Some(route)) => route.upstream.authority().as_str().to_string(),
                (_, None) => "-".to_string(),
            };
            tracing::warn!(
                request_id = %request_id,
                route,
                upstream,
                method = %f.method,
                path,
                status,
                kind = upstream_failure(err).map_or("-", UpstreamFailure::as_str),
                error = %err,
                reason = %upstream_reason(err, f, &upstream),
                "upstream failed"
            );
        }
        Fault::Internal => tracing::error!(
            request_id = %request_id,
            route,
            method = %f.method,
            path,
            status,
            error = %err,
            detail = err.detail(),
            cause = %SourceChain(err),
            "internal error"
        ),
    }
}

/// Counts a failed request: a refusal by its guard, an upstream failure by its kind.
pub(crate) fn count_failure(observer: &Observer, err: &ProxyError, route: Option<&Route>) {
    if let Some(guard) = refusal(err) {
        observer.metrics().refused(guard);
    }
    if let (Some(kind), Some(route)) = (upstream_failure(err), route) {
        observer.route(route.index).upstream_failed(kind);
    }
}

/// The guard that refused the request, for a refusal (the client's fault).
pub(crate) fn refusal(err: &ProxyError) -> Option<Refusal> {
    Some(match err {
        ProxyError::WithCookies { error, .. } => return refusal(error),
        ProxyError::BadRequest(why) if why.contains("transfer-encoding") => Refusal::Framing,
        ProxyError::BadRequest(why) if why.contains("WebSocket") => Refusal::Websocket,
        ProxyError::BadRequest(_) | ProxyError::UnsafePath => Refusal::Path,
        ProxyError::AmbiguousSession
        | ProxyError::MissingSession
        | ProxyError::UnusableSession
        | ProxyError::SessionExpired => Refusal::Session,
        ProxyError::NoRoute => Refusal::Route,
        ProxyError::MethodNotAllowed(_) => Refusal::Method,
        ProxyError::CsrfRejected(_) => Refusal::Csrf,
        ProxyError::RateLimited(_) => Refusal::RateLimit,
        ProxyError::BodyTooLarge
        | ProxyError::BodyTimeout
        | ProxyError::TooManySockets
        | ProxyError::TooManyConnections => Refusal::Limits,
        ProxyError::UnsupportedTransferCoding => Refusal::Framing,
        ProxyError::LoginFailed(_) | ProxyError::BadLogoutToken(_) => Refusal::Login,
        ProxyError::WebSocketRoute | ProxyError::WebSocketOrigin(_) => Refusal::Websocket,
        ProxyError::UpstreamUnreachable(_)
        | ProxyError::UpstreamTimeout(_)
        | ProxyError::Internal(_)
        | ProxyError::IdpUnreachable(_)
        | ProxyError::IdpTimeout
        | ProxyError::IdpUnavailable
        | ProxyError::IdpInvalid(_)
        | ProxyError::StoreUnavailable(_) => return None,
    })
}

/// The kind of an upstream failure (a route's upstream, not the IdP).
pub(crate) fn upstream_failure(err: &ProxyError) -> Option<UpstreamFailure> {
    match err {
        ProxyError::UpstreamTimeout(_) => Some(UpstreamFailure::Timeout),
        ProxyError::UpstreamUnreachable(source) => Some(
            match source.downcast_ref::<UpstreamError<crate::proxy::body::BodyError>>() {
                Some(UpstreamError::Connect(_)) => UpstreamFailure::Connect,
                Some(UpstreamError::Io(_) | UpstreamError::Closed | UpstreamError::Truncated) => {
                    UpstreamFailure::Reset
                }
                // An invalid response, or a 101 that is no WebSocket handshake.
                _ => UpstreamFailure::Protocol,
            },
        ),
        ProxyError::WithCookies { error, .. } => upstream_failure(error),
        _ => None,
    }
}

fn idp(config: &Config) -> String {
    config
        .session
        .as_ref()
        .and_then(|s| s.oidc.issuer.parse::<http::Uri>().ok())
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_else(|| "-".to_string())
}

/// At most this much of a client's `Origin` goes in a line.
const MAX_ORIGIN: usize = 200;

fn origin_text(origin: Option<&HeaderValue>) -> Cow<'static, str> {
    match origin.map(|o| o.to_str()) {
        None => "(none)".into(),
        Some(Err(_)) => "(not ASCII)".into(),
        Some(Ok(text)) => {
            let mut text = text.to_string();
            if text.len() > MAX_ORIGIN {
                text.truncate(MAX_ORIGIN);
                text.push_str("...");
            }
            text.into()
        }
    }
}

/// A refusal's reason, naming what to change when it is a setting.
pub(crate) fn refusal_reason(err: &ProxyError, f: &Failed<'_>) -> String {
    let config = f.config;
    let route_place = |route: Option<&Route>| match route {
        Some(r) => format!("routes[{}] (prefix {})", r.index, r.prefix.as_str()),
        None => "the route".to_string(),
    };
    let cookie = |route: Option<&Route>| match route {
        Some(r) if r.auth == AuthMode::Session => config
            .session
            .as_ref()
            .map_or("the session cookie", |s| s.cookie.as_str())
            .to_string(),
        Some(r) => r.cookie.as_str().to_string(),
        None => "the session cookie".to_string(),
    };
    match err {
        ProxyError::WithCookies { error, .. } => refusal_reason(error, f),
        ProxyError::BadRequest(why) => {
            format!("{why}: the client sent a request cookiegate does not proxy; fix the client")
        }
        ProxyError::UnsafePath => "the path would climb out of the upstream's base path (dot \
            segments, raw or percent-encoded); such paths are never forwarded"
            .to_string(),
        ProxyError::AmbiguousSession => format!(
            "several cookies named {} were sent, so the session is ambiguous: the browser holds \
             one set for another path or domain; clear the extra one",
            cookie(f.route)
        ),
        ProxyError::MissingSession => match f.route {
            Some(r) if r.auth == AuthMode::Session => format!(
                "no valid session cookie {} (absent, forged, sealed with a key no longer in \
                 [session] keys, or logged out): the user must log in",
                cookie(f.route)
            ),
            Some(r) => format!(
                "no cookie {} on a route with auth = \"required\": the user must log in, or the \
                 cookie is set under another name (set cookie = \"...\" on {}), or set auth = \
                 \"optional\" to forward requests without it",
                r.cookie.as_str(),
                route_place(f.route)
            ),
            None => "no session: the user must log in".to_string(),
        },
        ProxyError::UnusableSession => format!(
            "the cookie {} holds bytes that cannot go in an Authorization header: whatever set it \
             did not store a token",
            cookie(f.route)
        ),
        ProxyError::SessionExpired => "the session ran out ([session] max_age) or the identity \
            provider refused its refresh token: the user must log in again"
            .to_string(),
        ProxyError::NoRoute => "no [[routes]] prefix matches the path: add a route for it, or \
            fix the URL the client calls"
            .to_string(),
        ProxyError::MethodNotAllowed(allow) => match f.route {
            Some(_) if *f.method != Method::CONNECT && *f.method != Method::TRACE => format!(
                "{} is not in the methods of {} (allowed: {}): add it to the route's methods",
                f.method,
                route_place(f.route),
                allow.to_str().unwrap_or("-")
            ),
            _ => format!(
                "{} is never proxied (CONNECT and TRACE, or a method the endpoint does not take: \
                 {})",
                f.method,
                allow.to_str().unwrap_or("-")
            ),
        },
        ProxyError::CsrfRejected(reject) => csrf_reason(*reject, f),
        ProxyError::RateLimited(wait) => {
            let mut text = String::from("the client is over its rate limit");
            if let Some(limit) = &config.rate_limit {
                let _ = write!(
                    text,
                    " ([rate_limit] per_second = {}, burst = {}, per {})",
                    limit.per_second,
                    limit.burst,
                    limit.key.as_str()
                );
            }
            let _ = write!(
                text,
                "; it may retry in {} s; raise the limit if legitimate clients hit it",
                crate::error::retry_after_secs(*wait)
            );
            text
        }
        ProxyError::BodyTooLarge => format!(
            "the request body is over the max_body of {}{}: raise max_body on the route if such \
             bodies are legitimate",
            route_place(f.route),
            f.route
                .map(|r| format!(" ({})", r.max_body))
                .unwrap_or_default()
        ),
        ProxyError::BodyTimeout => format!(
            "the client sent no body bytes for [server] idle_timeout ({}): a stalled upload; \
             raise idle_timeout if uploads are legitimately that slow",
            humantime::format_duration(config.server.idle_timeout)
        ),
        ProxyError::UnsupportedTransferCoding => "Transfer-Encoding names a coding besides \
            chunked, which cookiegate does not forward"
            .to_string(),
        ProxyError::TooManyConnections => format!(
            "[server] max_connections ({}) connections are open already",
            config.server.max_connections
        ),
        ProxyError::LoginFailed(why) => format!("the login could not be completed: {why}"),
        ProxyError::BadLogoutToken(why) => {
            format!("a back-channel logout token was refused: {why}")
        }
        ProxyError::WebSocketRoute => format!(
            "a WebSocket handshake on {}, which has no websocket = true: set it on the route if \
             it carries sockets",
            route_place(f.route)
        ),
        ProxyError::WebSocketOrigin(why) => format!(
            "WebSocket origin {} refused ({why}): add it to [websocket] allowed_origins if it is \
             yours",
            origin_text(f.origin)
        ),
        ProxyError::TooManySockets => format!(
            "the session has [websocket] max_per_session ({}) sockets open already: raise it, \
             or check the client closes its sockets",
            config.websocket.max_per_session
        ),
        other => other.to_string(),
    }
}

fn csrf_reason(reject: CsrfReject, f: &Failed<'_>) -> String {
    match reject {
        CsrfReject::ForeignOrigin => format!(
            "origin {} is not allowed: add it to [csrf] allowed_origins",
            origin_text(f.origin)
        ),
        CsrfReject::CrossSite => format!(
            "the browser marked this {} cross-site (Sec-Fetch-Site: cross-site, origin {}): \
             unsafe cross-site requests are refused whatever [csrf] allowed_origins says; serve \
             the page from the same site as cookiegate",
            f.method,
            origin_text(f.origin)
        ),
        CsrfReject::MissingHeader => {
            let header = match &f.config.csrf.mode {
                CsrfMode::Header(name) => name.as_str().to_string(),
                _ => "the CSRF header".to_string(),
            };
            format!(
                "{} without the {header} header ([csrf] mode = \"header\"): the client must send \
                 it on unsafe methods",
                f.method
            )
        }
    }
}

fn upstream_reason(err: &ProxyError, f: &Failed<'_>, upstream: &str) -> String {
    let timeout = humantime::format_duration(f.config.server.upstream_timeout);
    match err {
        ProxyError::UpstreamTimeout(TimeoutStage::Connect) => format!(
            "connect timeout: no connection to {upstream} within [server] upstream_timeout \
             ({timeout}); is it up and reachable?"
        ),
        ProxyError::UpstreamTimeout(TimeoutStage::Head) => format!(
            "response head timeout: {upstream} took the request but sent no response head \
             within [server] upstream_timeout ({timeout})"
        ),
        ProxyError::UpstreamUnreachable(_) => match upstream_failure(err) {
            Some(UpstreamFailure::Connect) => format!(
                "cannot connect to {upstream}: {}; check the route's upstream and that the \
                 service is up",
                SourceChain(err)
            ),
            Some(UpstreamFailure::Reset) => format!(
                "{upstream} closed or reset the connection before answering: {}",
                SourceChain(err)
            ),
            _ => format!(
                "{upstream} answered with something that is not valid HTTP: {}",
                SourceChain(err)
            ),
        },
        ProxyError::IdpUnreachable(_) => format!(
            "the identity provider {upstream} is unreachable: {}",
            SourceChain(err)
        ),
        ProxyError::IdpTimeout => format!(
            "the identity provider {upstream} did not answer within [server] upstream_timeout \
             ({timeout})"
        ),
        ProxyError::IdpUnavailable => {
            format!("the identity provider {upstream} answered with a server error")
        }
        ProxyError::IdpInvalid(why) => {
            format!("the identity provider {upstream} sent an unusable answer: {why}")
        }
        ProxyError::WithCookies { error, .. } => upstream_reason(error, f, upstream),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str(
            "[csrf]\nallowed_origins = [\"https://ok.example.com\"]\n\
             [[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9/base\"\n",
        )
        .unwrap()
    }

    #[test]
    fn a_foreign_origin_is_named_with_the_setting_that_allows_it() {
        let config = config();
        let origin = HeaderValue::from_static("https://app.example.com");
        let id = HeaderValue::from_static("abc");
        let f = Failed {
            config: &config,
            request_id: &id,
            method: &Method::POST,
            route: config.routes.find("/api/x").map(|(r, _)| r),
            path: Some("/api/x"),
            origin: Some(&origin),
        };
        let err = ProxyError::CsrfRejected(CsrfReject::ForeignOrigin);
        assert_eq!(
            refusal_reason(&err, &f),
            "origin https://app.example.com is not allowed: add it to [csrf] allowed_origins"
        );
        assert_eq!(refusal(&err), Some(Refusal::Csrf));
    }

    #[test]
    fn every_refusal_has_a_guard_and_upstream_failures_have_none() {
        let refused = [
            ProxyError::BadRequest("both content-length and transfer-encoding"),
            ProxyError::UnsafePath,
            ProxyError::MissingSession,
            ProxyError::NoRoute,
            ProxyError::RateLimited(std::time::Duration::from_secs(1)),
            ProxyError::BodyTooLarge,
            ProxyError::TooManySockets,
            ProxyError::WebSocketRoute,
        ];
        for err in &refused {
            assert_eq!(err.fault(), Fault::Client);
            assert!(refusal(err).is_some(), "{err:?}");
        }
        assert_eq!(refusal(&refused[0]), Some(Refusal::Framing));
        let failed = ProxyError::UpstreamTimeout(TimeoutStage::Connect);
        assert_eq!(refusal(&failed), None);
        assert_eq!(upstream_failure(&failed), Some(UpstreamFailure::Timeout));
    }
}
