//! Sending the request upstream: the pooled client and the wait for the response head.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{BodyError, LimitedBody, Progress};
use crate::error::{BoxError, ProxyError};

/// The body type sent upstream.
pub type UpstreamRequestBody = LimitedBody<Incoming>;

/// The pooled keep-alive client every route shares.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamRequestBody>;

/// How long an idle pooled upstream connection is kept. Shorter than the usual 60 s+ keep-alive
/// of upstream servers (uvicorn 5 s is the exception; the client retries a request that met a
/// connection closed under it before anything was sent).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Builds the client. TLS uses rustls with the ring provider and the platform's root
/// certificates, loaded only when a route is `https` (so startup stays fast without them).
///
/// # Errors
/// When `https` is needed and no root certificate can be loaded.
pub fn build_client(need_tls: bool, connect_timeout: Duration) -> Result<UpstreamClient, BoxError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let mut roots = rustls::RootCertStore::empty();
    if need_tls {
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
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

/// Sends `req` and waits for the response head.
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
    progress: Option<Progress>,
) -> Result<Response<Incoming>, ProxyError> {
    let response = client.request(req);
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
fn classify(err: hyper_util::client::legacy::Error) -> ProxyError {
    match BodyError::find(&err) {
        Some(BodyError::TooLarge) => ProxyError::BodyTooLarge,
        Some(BodyError::Idle) => ProxyError::BodyTimeout,
        _ => ProxyError::UpstreamUnreachable(Box::new(err)),
    }
}
