//! [`ProxyError`]: every way a request can end early, its status, and its JSON rendering; and
//! the other answers cookiegate writes itself (the health and readiness endpoints').
//!
//! Exactly one function, [`ProxyError::to_response`], turns an error into a response, even for
//! a connection refused before HTTP is spoken ([`ProxyError::to_http1_bytes`]). The body is
//! `{"error": "<public message>"}`, built with `serde_json`; the public message is fixed per
//! variant and never carries a source error's text, an upstream address, a header value or a
//! token. Detail goes to the log, once, where the error becomes a response, at the level its
//! [`Fault`] picks.

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode, Version};

/// A boxed error from below (hyper, the network).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whose fault an error was: picks the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse (logged at `debug`).
    Client,
    /// The upstream failed (logged at `warn`).
    Upstream,
    /// Our own bug or an exhausted resource of ours (logged at `error`).
    Internal,
}

/// Where an upstream exchange was when `upstream_timeout` ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutStage {
    /// No connection (TCP, TLS) was made yet.
    Connect,
    /// Connected; the response head did not come.
    Head,
}

/// Every way cookiegate ends a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be proxied as sent (not an origin-form path, bad header).
    #[error("malformed request")]
    BadRequest(&'static str),
    /// The path would climb out of the upstream's base path once decoded.
    #[error("request path refused")]
    UnsafePath,
    /// Several cookies carry the route's session cookie name.
    #[error("ambiguous session cookie")]
    AmbiguousSession,
    /// The route needs the session cookie and there is none.
    #[error("not authenticated")]
    MissingSession,
    /// The session cookie holds bytes that cannot be a header value.
    #[error("unusable session cookie")]
    UnusableSession,
    /// No route's prefix matches the path.
    #[error("no route for this path")]
    NoRoute,
    /// The route (or cookiegate, for CONNECT and TRACE) does not take this method.
    #[error("method not allowed")]
    MethodNotAllowed(HeaderValue),
    /// A CSRF guard refused the request (cross-site, foreign origin, missing header).
    #[error("cross-site request refused")]
    CsrfRejected(crate::guard::csrf::CsrfReject),
    /// The client is over its rate limit; retry after this long.
    #[error("too many requests")]
    RateLimited(std::time::Duration),
    /// The body is larger than the route's `max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The client stopped sending its body for longer than `idle_timeout`.
    #[error("request body timed out")]
    BodyTimeout,
    /// The upstream could not be reached, or broke before sending its response head.
    #[error("upstream unreachable")]
    UpstreamUnreachable(#[source] BoxError),
    /// The upstream did not take the connection, or did not send its response head, within
    /// `upstream_timeout` (which of the two goes to the log).
    #[error("upstream timed out")]
    UpstreamTimeout(TimeoutStage),
    /// The request's `Transfer-Encoding` names a coding besides `chunked` (RFC 9112 §6.1:
    /// a server that does not understand a coding answers 501, as nginx does).
    #[error("transfer coding not supported")]
    UnsupportedTransferCoding,
    /// `server.max_connections` connections are open already.
    #[error("too many connections")]
    TooManyConnections,
    /// Something that cannot happen did: a bug of ours (the reason goes to the log).
    #[error("internal error")]
    Internal(&'static str),
    /// The session's refresh token is no longer valid at the IdP, or the session's absolute
    /// lifetime ran out: the user must log in again.
    #[error("session expired")]
    SessionExpired,
    /// The login could not be completed (state, code exchange or ID token refused; the reason
    /// goes to the log).
    #[error("login failed")]
    LoginFailed(&'static str),
    /// A back-channel logout token was refused (the reason goes to the log).
    #[error("invalid logout token")]
    BadLogoutToken(&'static str),
    /// The identity provider could not be reached.
    #[error("identity provider unreachable")]
    IdpUnreachable(#[source] BoxError),
    /// The identity provider did not answer in time.
    #[error("identity provider timed out")]
    IdpTimeout,
    /// The identity provider answered with a server error.
    #[error("identity provider unavailable")]
    IdpUnavailable,
    /// The identity provider's answer could not be used (the reason goes to the log).
    #[error("invalid identity provider response")]
    IdpInvalid(&'static str),
    /// A WebSocket handshake to a route without `websocket = true`.
    #[error("websocket not allowed on this route")]
    WebSocketRoute,
    /// A WebSocket handshake from an origin that may not open sockets (cross-site WebSocket
    /// hijacking).
    #[error("websocket origin refused")]
    WebSocketOrigin(&'static str),
    /// The session (or cookie) has `max_per_session` sockets open already.
    #[error("too many websockets")]
    TooManySockets,
    /// The shared store (`[store]`) failed and `on_failure = "closed"`: what needs it waits
    /// for it (`Retry-After`); the session is left as it was.
    #[error("shared state unavailable")]
    StoreUnavailable(#[source] crate::store::StoreError),
    /// Another error, answered with cookies set or cleared (a login state used up, a session
    /// that ended): the error's own status and body, plus these `Set-Cookie` fields.
    #[error("{error}")]
    WithCookies {
        /// The error answered.
        error: Box<ProxyError>,
        /// `Set-Cookie` values, already built.
        cookies: Vec<HeaderValue>,
    },
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::UnsafePath | Self::AmbiguousSession => {
                StatusCode::BAD_REQUEST
            }
            Self::MissingSession | Self::UnusableSession => StatusCode::UNAUTHORIZED,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::CsrfRejected(_) => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::SessionExpired => StatusCode::UNAUTHORIZED,
            Self::LoginFailed(_) | Self::BadLogoutToken(_) => StatusCode::BAD_REQUEST,
            Self::IdpUnreachable(_) | Self::IdpInvalid(_) => StatusCode::BAD_GATEWAY,
            Self::IdpTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::IdpUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::WithCookies { error, .. } => error.status(),
            Self::WebSocketRoute => StatusCode::BAD_REQUEST,
            Self::WebSocketOrigin(_) => StatusCode::FORBIDDEN,
            Self::TooManySockets => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        match self {
            Self::UpstreamUnreachable(_)
            | Self::UpstreamTimeout(_)
            | Self::IdpUnreachable(_)
            | Self::IdpTimeout
            | Self::IdpUnavailable
            | Self::IdpInvalid(_)
            | Self::StoreUnavailable(_) => Fault::Upstream,
            Self::TooManyConnections | Self::Internal(_) => Fault::Internal,
            Self::WithCookies { error, .. } => error.fault(),
            Self::SessionExpired
            | Self::LoginFailed(_)
            | Self::BadLogoutToken(_)
            | Self::WebSocketRoute
            | Self::WebSocketOrigin(_)
            | Self::TooManySockets => Fault::Client,
            Self::BadRequest(_)
            | Self::UnsafePath
            | Self::AmbiguousSession
            | Self::MissingSession
            | Self::UnusableSession
            | Self::NoRoute
            | Self::MethodNotAllowed(_)
            | Self::CsrfRejected(_)
            | Self::RateLimited(_)
            | Self::BodyTooLarge
            | Self::BodyTimeout
            | Self::UnsupportedTransferCoding => Fault::Client,
        }
    }

    /// The JSON error response. `version` decides whether `Connection: close` may be added (it
    /// is an HTTP/1 header; HTTP/2 forbids it).
    pub fn to_response(&self, version: Version) -> Response<Bytes> {
        if let Self::WithCookies { error, cookies } = self {
            let mut res = error.to_response(version);
            for cookie in cookies {
                res.headers_mut()
                    .append(http::header::SET_COOKIE, cookie.clone());
            }
            res.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            return res;
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut res = Response::new(Bytes::from(body));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            Self::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, allow.clone());
            }
            Self::RateLimited(wait) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(*wait)));
            }
            Self::IdpUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::TooManyConnections | Self::StoreUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // The body was left unread (or half read): the connection cannot be reused.
            Self::BodyTooLarge | Self::BodyTimeout | Self::UnsupportedTransferCoding
                if version < Version::HTTP_2 =>
            {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }

    /// The HTTP/1.1 bytes of [`Self::to_response`] with its `Content-Length`, for a connection
    /// answered before any HTTP server runs on it (the connection cap).
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let res = self.to_response(Version::HTTP_11);
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(res.status().as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            res.status()
                .canonical_reason()
                .unwrap_or("Error")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        for (name, value) in res.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(res.body().len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(res.body());
        out
    }

    /// A short reason for the log, for variants whose public message hides it.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest(why)
            | Self::Internal(why)
            | Self::LoginFailed(why)
            | Self::BadLogoutToken(why)
            | Self::IdpInvalid(why)
            | Self::WebSocketOrigin(why) => Some(why),
            Self::WithCookies { error, .. } => error.detail(),
            Self::CsrfRejected(why) => Some(why.as_str()),
            _ => None,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
pub(crate) fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The health endpoint's answer: `200 {"status":"ok"}`.
pub(crate) fn health() -> Response<Bytes> {
    let mut res = Response::new(Bytes::from_static(b"{\"status\":\"ok\"}"));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The readiness endpoint's answer: `200 {"status":"ready"}`, or 503 with why not:
/// `{"status":"draining"}` after a shutdown signal, `{"status":"starting","reason":...}` while
/// the IdP's discovery document is not loaded (the reason is a fixed text, never an address).
pub(crate) fn readiness(not_ready: Option<crate::proxy::NotReady>) -> Response<Bytes> {
    use crate::proxy::NotReady;
    let (status, body) = match not_ready {
        None => (StatusCode::OK, serde_json::json!({ "status": "ready" })),
        Some(NotReady::Draining) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "draining" }),
        ),
        Some(NotReady::Discovery(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "status": "starting",
                "reason": match reason {
                    Some(why) => format!("identity provider discovery failed: {why}"),
                    None => "identity provider discovery not finished".to_string(),
                },
            }),
        ),
    };
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_json_with_a_fixed_message() {
        let secret = "upstream-secret-host:9999 Bearer abc";
        let cases = [
            (ProxyError::BadRequest("x"), 400, "malformed request"),
            (ProxyError::UnsafePath, 400, "request path refused"),
            (
                ProxyError::AmbiguousSession,
                400,
                "ambiguous session cookie",
            ),
            (ProxyError::MissingSession, 401, "not authenticated"),
            (ProxyError::UnusableSession, 401, "unusable session cookie"),
            (ProxyError::NoRoute, 404, "no route for this path"),
            (
                ProxyError::CsrfRejected(crate::guard::csrf::CsrfReject::CrossSite),
                403,
                "cross-site request refused",
            ),
            (
                ProxyError::RateLimited(std::time::Duration::from_millis(1500)),
                429,
                "too many requests",
            ),
            (
                ProxyError::MethodNotAllowed(HeaderValue::from_static("GET")),
                405,
                "method not allowed",
            ),
            (ProxyError::BodyTimeout, 408, "request body timed out"),
            (ProxyError::BodyTooLarge, 413, "request body too large"),
            (
                ProxyError::UpstreamUnreachable(secret.into()),
                502,
                "upstream unreachable",
            ),
            (
                ProxyError::UpstreamTimeout(TimeoutStage::Head),
                504,
                "upstream timed out",
            ),
            (
                ProxyError::UnsupportedTransferCoding,
                501,
                "transfer coding not supported",
            ),
            (ProxyError::TooManyConnections, 503, "too many connections"),
            (ProxyError::Internal("secret detail"), 500, "internal error"),
            (ProxyError::SessionExpired, 401, "session expired"),
            (
                ProxyError::WebSocketRoute,
                400,
                "websocket not allowed on this route",
            ),
            (
                ProxyError::WebSocketOrigin("x"),
                403,
                "websocket origin refused",
            ),
            (ProxyError::TooManySockets, 429, "too many websockets"),
            (
                ProxyError::StoreUnavailable(crate::store::StoreError::Failed(secret.into())),
                503,
                "shared state unavailable",
            ),
            (ProxyError::LoginFailed("secret"), 400, "login failed"),
            (
                ProxyError::BadLogoutToken("secret"),
                400,
                "invalid logout token",
            ),
            (
                ProxyError::IdpUnreachable(secret.into()),
                502,
                "identity provider unreachable",
            ),
            (ProxyError::IdpTimeout, 504, "identity provider timed out"),
            (
                ProxyError::IdpUnavailable,
                503,
                "identity provider unavailable",
            ),
            (
                ProxyError::IdpInvalid("secret"),
                502,
                "invalid identity provider response",
            ),
            (
                ProxyError::WithCookies {
                    error: Box::new(ProxyError::SessionExpired),
                    cookies: vec![HeaderValue::from_static("a=; Max-Age=0")],
                },
                401,
                "session expired",
            ),
        ];
        for (err, status, message) in cases {
            let res = err.to_response(Version::HTTP_11);
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
            let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
            assert_eq!(body, serde_json::json!({ "error": message }));
            assert!(!String::from_utf8_lossy(res.body()).contains("secret"));
        }
    }

    #[test]
    fn connection_close_only_on_http1() {
        let h1 = ProxyError::BodyTooLarge.to_response(Version::HTTP_11);
        assert_eq!(h1.headers()[CONNECTION], "close");
        let h2 = ProxyError::BodyTooLarge.to_response(Version::HTTP_2);
        assert!(h2.headers().get(CONNECTION).is_none());
        let allow = ProxyError::MethodNotAllowed(HeaderValue::from_static("POST"))
            .to_response(Version::HTTP_11);
        assert_eq!(allow.headers()[ALLOW], "POST");
        let limited = ProxyError::RateLimited(std::time::Duration::from_millis(1500))
            .to_response(Version::HTTP_11);
        assert_eq!(limited.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(std::time::Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(std::time::Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(std::time::Duration::from_secs(3)), 3);
    }

    #[test]
    fn faults_pick_who_is_to_blame() {
        assert_eq!(ProxyError::NoRoute.fault(), Fault::Client);
        assert_eq!(
            ProxyError::UpstreamTimeout(TimeoutStage::Connect).fault(),
            Fault::Upstream
        );
        assert_eq!(ProxyError::Internal("x").fault(), Fault::Internal);
        assert_eq!(ProxyError::TooManyConnections.fault(), Fault::Internal);
    }

    #[test]
    fn a_refused_connection_gets_a_complete_http1_answer() {
        let bytes = ProxyError::TooManyConnections.to_http1_bytes();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nretry-after: 1"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert_eq!(body, r#"{"error":"too many connections"}"#);
    }
}
