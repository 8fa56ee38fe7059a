//! Sending the request upstream: the pooled client and the wait for the response head.

use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;

use super::body::{BodyError, Progress};
use super::headers::UpstreamFields;
use super::pool::SendError;
pub use super::pool::{UpstreamBody, UpstreamClient, UpstreamRequestBody};
use crate::error::{BoxError, ProxyError};
use crate::routing::RouteTable;

/// Builds the client for the routes' upstreams. TLS uses rustls with the ring provider and the
/// platform's root certificates, loaded only when a route is `https` (so startup stays fast
/// without them).
///
/// # Errors
/// When `https` is needed and no root certificate can be loaded.
pub fn build_client(
    routes: &RouteTable,
    connect_timeout: Duration,
) -> Result<UpstreamClient, BoxError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let mut roots = rustls::RootCertStore::empty();
    if routes.has_https() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(
                "no usable root certificates found on this system (install ca-certificates)".into(),
            );
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let upstreams = routes.in_file_order().into_iter().map(|route| {
        let scheme = if route.upstream.is_https() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        (scheme, route.upstream.authority().clone())
    });
    Ok(UpstreamClient::new(connector, upstreams))
}

/// Sends `req` with the header fields the policy decided, and waits for the response head.
///
/// The wait is bounded by `timeout` of upstream silence: while the request body is still
/// flowing (`progress` marked), the clock restarts, so a slow large upload is not cut off; once
/// the body is sent, the upstream has `timeout` to answer. The response body is never timed.
///
/// # Errors
/// 504 on timeout; 413/408 when our request body wrapper stopped the body; 502 otherwise.
pub async fn send(
    client: &UpstreamClient,
    req: Request<UpstreamRequestBody>,
    timeout: Duration,
    fields: &UpstreamFields,
    progress: Option<Progress>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let response = client.request(req, fields);
    tokio::pin!(response);
    loop {
        match tokio::time::timeout(timeout, &mut response).await {
            Ok(Ok(res)) => return Ok(res),
            Ok(Err(err)) => return Err(classify(err)),
            Err(_elapsed) => {
                if !progress.as_ref().is_some_and(Progress::take) {
                    return Err(ProxyError::UpstreamTimeout);
                }
            }
        }
    }
}

/// Maps a client error to the response it deserves: our own body limits first.
fn classify(err: SendError) -> ProxyError {
    match BodyError::find(&err) {
        Some(BodyError::TooLarge) => ProxyError::BodyTooLarge,
        Some(BodyError::Idle) => ProxyError::BodyTimeout,
        // The client's own body stream broke (it went away mid-upload): its fault, not the
        // upstream's, and nobody is left to read the answer.
        Some(BodyError::Inner(_)) => ProxyError::BadRequest("request body ended early"),
        None => ProxyError::UpstreamUnreachable(Box::new(err)),
    }
}
