//! Keep-alive HTTP/1.1 connections to the upstreams, reused request after request.
//!
//! One idle list per upstream (`scheme://authority`), built at startup from the routes, so
//! finding it is a short scan with no hashing. A connection goes back to its list when its
//! exchange ended cleanly ([`super::exchange`]); lists are LIFO (the warmest connection first),
//! never hand out a connection idle for longer than [`POOL_IDLE`], and check that an idle
//! connection has nothing to read (the upstream did not close it) before lending it.
//!
//! This replaces hyper's pooled client, whose per-request work (a task per connection, the
//! request and response handed across channels, the pool key hashed three times) cost about as
//! many instructions as all of cookiegate's own per-request work (BENCHMARKS.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower_service::Service;

use super::body::LimitedBody;
pub use super::exchange::UpstreamBody;
use super::exchange::{Conn, Exchange, ExchangeError};
use super::h1::{self, RequestFraming};
use super::headers::UpstreamFields;

/// The body type sent upstream.
pub type UpstreamRequestBody = LimitedBody<Incoming>;

/// Why a request got no response head.
pub type SendError = ExchangeError;

/// How long an idle pooled upstream connection is kept. Shorter than the usual 60 s+ keep-alive
/// of upstream servers (uvicorn 5 s is the exception; a request that meets a connection closed
/// under it is sent on another one, see [`UpstreamClient::request`]).
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per upstream; more are closed when their response ends.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

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
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for requests to it, built once.
    host: HeaderValue,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
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

    /// Sends `req` (absolute URI), its header fields as `fields` decides, and waits for the
    /// response head.
    ///
    /// A request with no body that meets a pooled connection the upstream closed under it (no
    /// byte of an answer came back) is sent again on another connection if its method is
    /// idempotent (RFC 9110 §9.2.2), as nginx does; any other request is never repeated.
    ///
    /// # Errors
    /// [`SendError`] when no connection could be made or the exchange failed.
    pub async fn request(
        &self,
        req: Request<UpstreamRequestBody>,
        fields: &UpstreamFields,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let upstream = self.find(req.uri());
        let (parts, body) = req.into_parts();
        let host = match upstream {
            Some(u) => u.host.clone(),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .ok_or(ExchangeError::Connect(
                    "upstream URI has no authority".into(),
                ))?,
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let ended = body.is_end_stream();
        let framing = RequestFraming::of(
            ended,
            body.size_hint().exact(),
            parts.headers.contains_key(CONTENT_LENGTH),
        );
        let mut head = BytesMut::new();
        h1::encode_request_head(
            &mut head,
            &parts.method,
            target,
            &host,
            fields.iter(&parts.headers),
            framing,
        );
        let head: Bytes = head.freeze();
        let mut body = (!ended).then_some(body);
        let may_retry = ended && parts.method.is_idempotent();
        let mut first = true;
        loop {
            // A second attempt always goes on a new connection: the pool may hold more
            // connections the upstream has closed, and a request is sent at most twice.
            let pooled = if first {
                upstream.and_then(|u| u.checkout())
            } else {
                None
            };
            first = false;
            let (conn, reused) = match pooled {
                Some(conn) => (conn, true),
                None => (self.connect(&parts.uri).await?, false),
            };
            let exchange = Exchange::new(
                conn,
                parts.method.clone(),
                head.clone(),
                body.take(),
                framing,
            );
            match exchange.response(upstream.cloned()).await {
                Ok(res) => return Ok(res),
                Err((ExchangeError::Closed | ExchangeError::Io(_), false))
                    if reused && may_retry => {}
                Err((err, _)) => return Err(err),
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

    async fn connect(&self, uri: &Uri) -> Result<Conn, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(ExchangeError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(ExchangeError::Connect)?;
        Ok(Conn::new(TokioIo::new(io)))
    }
}

impl Upstream {
    /// The most recently used idle connection that is still usable.
    fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let entry = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let entry = idle.pop_back()?;
                if now.saturating_duration_since(entry.since) > POOL_IDLE {
                    // Everything before it is older still.
                    idle.clear();
                    return None;
                }
                entry
            };
            // Probed outside the lock: it may take a system call.
            let mut conn = entry.conn;
            if conn.is_idle_alive() {
                return Some(conn);
            }
        }
    }

    /// Takes back a connection whose exchange ended cleanly.
    pub(super) fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.since) > POOL_IDLE)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push_back(Idle { conn, since: now });
        }
    }

    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(|e| {
            now.saturating_duration_since(e.since) <= POOL_IDLE && e.conn.is_idle_alive()
        });
    }
}
