//! [`UpstreamError`]: why an exchange with an upstream failed.

use super::h1::H1Error;
use crate::error::BoxError;

/// Why a request got no response, or its response body broke off. `E` is the error of the
/// request body the caller gave, passed on as it is, so the caller can tell its own limits
/// from the upstream's failures without looking through source chains.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError<E> {
    /// No connection could be made (DNS, TCP or TLS).
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// Reading or writing the connection failed.
    #[error("upstream connection failed")]
    Io(#[source] std::io::Error),
    /// The upstream closed the connection before a complete response head.
    #[error("upstream closed the connection before answering")]
    Closed,
    /// The upstream closed the connection before the end of the response body.
    #[error("upstream closed the connection mid-body")]
    Truncated,
    /// The upstream's bytes are not a valid HTTP/1.1 response.
    #[error("invalid upstream response")]
    Protocol(#[source] H1Error),
    /// The request body failed (the caller's error, untouched).
    #[error("request body stopped")]
    Body(#[source] E),
    /// The request body's length differs from the `Content-Length` it was sent with.
    #[error("request body length differs from its Content-Length")]
    BodyLength,
}
