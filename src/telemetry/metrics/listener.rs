//! The metrics listener: its own socket (never the public one), HTTP/1.1 only, `GET /metrics`
//! and nothing else. Other paths get the usual 404 JSON error, other methods a 405 with
//! `Allow: GET`, both rendered by [`ProxyError::to_response`] like every error cookiegate sends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::Metrics;
use crate::error::ProxyError;

/// A scrape connection that takes longer than this (slow client, idle keep-alive) is closed.
const SCRAPE_CONNECTION_LIMIT: Duration = Duration::from_secs(60);

/// Scrape connections served at once; more wait in the kernel's accept queue.
const MAX_SCRAPE_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; open scrape connections are
/// closed then.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept(), if connections.len() < MAX_SCRAPE_CONNECTIONS => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(SCRAPE_CONNECTION_LIMIT, conn).await;
        });
    }
    connections.shutdown().await;
}

/// The answer to one request on the metrics listener.
fn answer<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return error(&ProxyError::NoRoute);
    }
    if req.method() != Method::GET {
        return error(&ProxyError::MethodNotAllowed(HeaderValue::from_static(
            "GET",
        )));
    }
    let mut res = Response::new(Full::new(Bytes::from(metrics.render())));
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    res
}

fn error(err: &ProxyError) -> Response<Full<Bytes>> {
    err.to_response(Version::HTTP_11).map(Full::new)
}
