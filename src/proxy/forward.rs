//! Sending an admitted request upstream through the [`UpstreamClient`], and the wait for the
//! response head, with our body limits told apart from the upstream's failures by type.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Response, Uri};
use hyper::body::Incoming;

use super::body::{BodyError, LimitedBody, Progress};
use crate::error::{BoxError, ProxyError, TimeoutStage};
use crate::routing::RouteTable;
use crate::upstream::{UpstreamBody, UpstreamClient, UpstreamError};

/// The request body as it goes upstream: the client's, with the route's limits around it.
pub(crate) type RequestBody = LimitedBody<Incoming>;

/// The upstream's answer body to a proxied request.
pub(crate) type AnswerBody = UpstreamBody<RequestBody>;

/// Builds the client for the routes' upstreams and the IdP (one keep-alive pool per
/// `scheme://authority`).
/// The connect timeout is `upstream_timeout`.
///
/// # Errors
/// When `https` is needed and no root certificate can be loaded.
pub(crate) fn build_client(
    routes: &RouteTable,
    issuer: Option<&str>,
    connect_timeout: Duration,
) -> Result<UpstreamClient, BoxError> {
    let mut upstreams: Vec<(Scheme, http::uri::Authority)> = routes
        .in_file_order()
        .into_iter()
        .map(|route| {
            let scheme = if route.upstream.is_https() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            (scheme, route.upstream.authority().clone())
        })
        .collect();
    // The IdP's connections are pooled too (discovery, JWKS, token calls), and an https IdP
    // needs the platform's roots.
    if let Some(issuer) = issuer.and_then(|i| i.parse::<Uri>().ok()) {
        if let (Some(scheme), Some(authority)) = (issuer.scheme(), issuer.authority()) {
            upstreams.push((scheme.clone(), authority.clone()));
        }
    }
    UpstreamClient::new(upstreams, connect_timeout)
}

/// A request on its way upstream.
#[derive(Debug)]
pub(crate) struct Outgoing<'a, F> {
    /// The method.
    pub method: &'a Method,
    /// The upstream URI (absolute).
    pub uri: &'a Uri,
    /// The header fields the policy lets through and adds.
    pub fields: F,
    /// The client sent `Content-Length`.
    pub declared_length: bool,
    /// A WebSocket handshake: a valid `101` is an answer.
    pub upgrade: bool,
    /// The body.
    pub body: RequestBody,
}

/// Sends `req` and waits for the response head.
///
/// The wait is bounded by `timeout` of upstream silence: while the request body is still
/// flowing (`progress` marked), the clock restarts, so a slow large upload is not cut off; once
/// the body is sent, the upstream has `timeout` to answer. The response body is never timed.
///
/// # Errors
/// 504 on timeout; 413/408/400 when our request body wrapper stopped the body; 502 otherwise.
pub(crate) async fn send<'f, F>(
    client: &UpstreamClient,
    req: Outgoing<'_, F>,
    timeout: Duration,
    progress: Option<Progress>,
) -> Result<Response<AnswerBody>, ProxyError>
where
    F: IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
{
    let connected = AtomicBool::new(false);
    let response = client.request_noting(
        req.method,
        req.uri,
        req.fields,
        req.declared_length,
        req.upgrade,
        req.body,
        &connected,
    );
    tokio::pin!(response);
    loop {
        match tokio::time::timeout(timeout, &mut response).await {
            Ok(Ok(res)) => return Ok(res),
            Ok(Err(err)) => return Err(classify(err)),
            Err(_elapsed) => {
                if !progress.as_ref().is_some_and(Progress::take) {
                    return Err(ProxyError::UpstreamTimeout(
                        if connected.load(Ordering::Relaxed) {
                            TimeoutStage::Head
                        } else {
                            TimeoutStage::Connect
                        },
                    ));
                }
            }
        }
    }
}

/// Maps a failed exchange to the response it deserves: our own body limits first.
fn classify(err: UpstreamError<BodyError>) -> ProxyError {
    match err {
        UpstreamError::Body(BodyError::TooLarge) => ProxyError::BodyTooLarge,
        UpstreamError::Body(BodyError::Idle) => ProxyError::BodyTimeout,
        // The client's own body stream broke (it went away mid-upload), or disagreed with its
        // own Content-Length: its fault, not the upstream's.
        UpstreamError::Body(BodyError::Inner(_)) | UpstreamError::BodyLength => {
            ProxyError::BadRequest("request body ended early")
        }
        other => ProxyError::UpstreamUnreachable(Box::new(other)),
    }
}
