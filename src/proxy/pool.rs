//! Keep-alive HTTP/1.1 connections to the upstreams, reused request after request.
//!
//! One idle list per upstream (`scheme://authority`), built at startup from the routes, so
//! finding it is a short scan with no hashing. A connection goes back to its list when its
//! response body has been read to the end ([`UpstreamBody`]'s `Drop`); a body dropped before
//! its end (the client went away) closes the connection instead, which cancels the upstream's
//! work. Lists are LIFO (the warmest connection first) and never hand out a connection idle
//! for longer than [`POOL_IDLE`].
//!
//! This replaces hyper-util's general-purpose pooled client, whose per-request work (a SipHash
//! of the pool key three times, a `Host` header built by `format!`, a connect future raced
//! against every checkout, a task spawned per request to await the connection's readiness)
//! cost about as many instructions as all of cookiegate's own per-request work (BENCHMARKS.md).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower_service::Service;

use super::body::LimitedBody;
use crate::error::BoxError;

/// The body type sent upstream.
pub type UpstreamRequestBody = LimitedBody<Incoming>;

type Sender = SendRequest<UpstreamRequestBody>;

/// How long an idle pooled upstream connection is kept. Shorter than the usual 60 s+ keep-alive
/// of upstream servers (uvicorn 5 s is the exception; a request that meets a connection closed
/// under it before anything was sent is retried on another one).
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per upstream; more are closed when their response ends.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (DNS, TCP, TLS or the HTTP/1 handshake).
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// The exchange failed (connection closed early, malformed answer, our body stopped).
    #[error("upstream exchange failed")]
    Http(#[source] hyper::Error),
}

/// The pooled keep-alive client every route shares.
pub struct UpstreamClient {
    connector: HttpsConnector<HttpConnector>,
    upstreams: Vec<Arc<Upstream>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("upstreams", &self.upstreams.len())
            .finish_non_exhaustive()
    }
}

/// One upstream's idle connections.
struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for requests to it, built once.
    host: HeaderValue,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl UpstreamClient {
    /// A client for the given upstreams (`scheme`, `authority` pairs; duplicates are merged).
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        upstreams: impl IntoIterator<Item = (Scheme, Authority)>,
    ) -> Self {
        let mut list: Vec<Arc<Upstream>> = Vec::new();
        for (scheme, authority) in upstreams {
            if list
                .iter()
                .any(|u| u.scheme == scheme && u.authority == authority)
            {
                continue;
            }
            // An authority is always a valid header value.
            let Ok(host) = HeaderValue::from_str(authority.as_str()) else {
                continue;
            };
            list.push(Arc::new(Upstream {
                scheme,
                authority,
                host,
                idle: Mutex::new(VecDeque::new()),
            }));
        }
        Self {
            connector,
            upstreams: list,
        }
    }

    /// Sends `req` (absolute URI) and waits for the response head.
    ///
    /// A pooled connection that turns out to be closed before the request could be written
    /// is skipped and the request goes on another one; a request that was (even partly) sent is
    /// never repeated.
    ///
    /// # Errors
    /// [`SendError`] when no connection could be made or the exchange failed.
    pub async fn request(
        &self,
        mut req: Request<UpstreamRequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let upstream = self.find(req.uri());
        let connect_to = req.uri().clone();
        prepare(&mut req, upstream.map(|u| &u.host));
        loop {
            let (mut sender, reused) = match upstream.and_then(|u| u.checkout()) {
                Some(sender) => (sender, true),
                None => (self.connect(&connect_to).await?, false),
            };
            // Normally ready at once; a connection whose last response only just ended may
            // need a moment to get back to idle.
            if let Err(err) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError::Http(err));
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = upstream.map(|u| Lease {
                        sender,
                        upstream: u.clone(),
                    });
                    return Ok(res.map(|body| UpstreamBody {
                        body,
                        lease,
                        ended: false,
                    }));
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Http(err.into_error())),
                },
            }
        }
    }

    /// Closes idle connections past [`POOL_IDLE`] or already closed by the upstream.
    pub fn sweep(&self) {
        for upstream in &self.upstreams {
            upstream.sweep(Instant::now());
        }
    }

    fn find(&self, uri: &Uri) -> Option<&Arc<Upstream>> {
        let (scheme, authority) = (uri.scheme()?, uri.authority()?);
        self.upstreams
            .iter()
            .find(|u| u.authority == *authority && u.scheme == *scheme)
    }

    async fn connect(&self, uri: &Uri) -> Result<Sender, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        // The connection task ends when the connection closes: the upstream closes it, its
        // `SendRequest` is dropped (pool full, expired, or a body dropped mid-stream), or the
        // runtime shuts down.
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Origin-form target (`/path?query`) and the upstream's `Host`, as an HTTP/1.1 origin server
/// expects them.
fn prepare(req: &mut Request<UpstreamRequestBody>, host: Option<&HeaderValue>) {
    let host = match host {
        Some(host) => Some(host.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    if let Some(host) = host {
        req.headers_mut().insert(HOST, host);
    }
    if let Some(path_and_query) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(path_and_query);
    }
}

impl Upstream {
    fn checkout(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop_back() {
            if now.saturating_duration_since(entry.since) > POOL_IDLE {
                // Everything before it is older still.
                idle.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.since) > POOL_IDLE)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push_back(Idle { sender, since: now });
        }
    }

    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|e| {
            !e.sender.is_closed() && now.saturating_duration_since(e.since) <= POOL_IDLE
        });
    }
}

/// A connection lent to one response; it goes back to its pool when the body ended.
struct Lease {
    sender: Sender,
    upstream: Arc<Upstream>,
}

/// An upstream response body. When it is dropped after its end, its connection goes back to
/// the pool; dropped before (the client went away, or the transfer broke), the connection is
/// closed, which is how the upstream learns that nobody is listening any more.
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
    /// The last frame went by (a chunked body's end is only seen as `Ready(None)`).
    ended: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Ok(_))) => this.ended = this.body.is_end_stream(),
            // A broken exchange: the connection is not reusable.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            if self.ended || self.body.is_end_stream() {
                lease.upstream.checkin(lease.sender);
            }
        }
    }
}
