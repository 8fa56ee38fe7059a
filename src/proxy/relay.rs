//! Streaming the answer back to the client, and the access log line written when it ends.
//!
//! An upstream body is handed on frame by frame as it arrives (an SSE event reaches the client as
//! soon as the upstream writes it). If the upstream fails mid-body the error is passed on, so
//! hyper aborts the client's transfer instead of ending it cleanly: truncated data never looks
//! whole. If the client goes away, hyper drops this body, which drops the upstream body and makes
//! the upstream connection close, cancelling the upstream's work.
//!
//! An upstream failure is passed on one poll late ([`ResponseBody::poll_frame`]): hyper writes
//! the response head and body bytes into its buffer and flushes them only when the body waits,
//! but tears the connection down at once on a body error. Without the extra wait, an upstream
//! that breaks right after its head would leave the client with nothing at all, a connection
//! closed without a byte, which browsers answer by sending the request again, even a POST (a
//! regression test holds it). With it, the client always gets the status line, then a visibly
//! broken transfer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::body::{BodyError, LimitedBody, Progress};
use super::forward::AnswerBody;
use super::{InFlight, SourceChain};
use crate::telemetry::metrics::{
    Observer, OpenGuard, RouteMetrics, StreamKind, UpstreamFailure, method_class,
};

/// The body of every response cookiegate sends: an upstream stream or a small fixed answer.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    kind: Kind,
    log: Option<Box<AccessLog>>,
    /// Dropped with the body, when hyper is done with it: the exchange is over.
    in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum Kind {
    Fixed(Option<Bytes>),
    Upstream(Upstream),
}

#[derive(Debug)]
struct Upstream {
    /// The same wrapper as request bodies get, for its idle timer; responses have no size
    /// limit.
    body: LimitedBody<AnswerBody>,
    /// Who failed, for the log line of a failure.
    origin: Origin,
    /// A failure held back for one poll, so hyper flushes what it has first.
    failed: Option<BodyError>,
}

/// Where an upstream answer comes from: what its failure line names.
#[derive(Debug)]
pub(crate) struct Origin {
    /// The route's prefix.
    pub(crate) route: Arc<str>,
    /// The upstream's authority.
    pub(crate) upstream: http::uri::Authority,
    /// The request's id.
    pub(crate) request_id: HeaderValue,
    /// The route's metrics, when on.
    pub(crate) metrics: Option<Arc<RouteMetrics>>,
}

impl ResponseBody {
    /// A fixed body (errors, health).
    pub(crate) fn fixed(bytes: Bytes, mut log: Option<Box<AccessLog>>) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        if let Some(log) = &mut log {
            log.head_ready();
            // Held in memory: it is sent whole unless the connection dies first.
            log.bytes = bytes.as_ref().map_or(0, |b| b.len() as u64);
            log.complete = true;
        }
        Self {
            kind: Kind::Fixed(bytes),
            log,
            in_flight: None,
        }
    }

    /// The upstream's body from `origin`, closed after `idle` of silence.
    pub(crate) fn upstream(
        body: AnswerBody,
        origin: Origin,
        idle: Duration,
        mut log: Option<Box<AccessLog>>,
    ) -> Self {
        if let Some(log) = &mut log {
            log.head_ready();
            // HEAD, 204 and 304 answers have no body for hyper to poll.
            log.complete = body.is_end_stream();
        }
        Self {
            kind: Kind::Upstream(Upstream {
                body: LimitedBody::new(body, u64::MAX, idle, None),
                origin,
                failed: None,
            }),
            log,
            in_flight: None,
        }
    }

    /// Holds `in_flight` until the body is dropped.
    pub(crate) fn holding(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    fn count(&mut self, frame: &Frame<Bytes>) {
        if matches!(self.kind, Kind::Fixed(_)) {
            return;
        }
        if let (Some(log), Some(data)) = (&mut self.log, frame.data_ref()) {
            log.bytes += data.len() as u64;
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped unfinished because the server is closing its connections, not because the
        // client went away: the log says so.
        if let (Some(log), Some(in_flight)) = (&mut self.log, &self.in_flight) {
            if !log.complete && in_flight.is_closing() {
                log.shutdown = true;
            }
        }
    }
}

/// The kind of a mid-body failure, for the metrics.
fn mid_body_failure(err: &BodyError) -> UpstreamFailure {
    match err {
        BodyError::Idle => UpstreamFailure::Timeout,
        BodyError::Inner(inner) => {
            match inner.downcast_ref::<crate::upstream::UpstreamError<BodyError>>() {
                Some(crate::upstream::UpstreamError::Protocol(_)) => UpstreamFailure::Protocol,
                _ => UpstreamFailure::Reset,
            }
        }
        BodyError::TooLarge => UpstreamFailure::Protocol,
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // `ResponseBody` is `Unpin`: `LimitedBody<AnswerBody>` is.
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(up) => {
                if let Some(err) = up.failed.take() {
                    return Poll::Ready(Some(Err(err)));
                }
                match Pin::new(&mut up.body).poll_frame(cx) {
                    Poll::Ready(Some(Err(err))) => {
                        let kind = mid_body_failure(&err);
                        let origin = &up.origin;
                        tracing::warn!(
                            request_id = %origin.request_id.to_str().unwrap_or("-"),
                            route = &*origin.route,
                            upstream = origin.upstream.as_str(),
                            kind = kind.as_str(),
                            error = %err,
                            cause = %SourceChain(&err),
                            "upstream failed mid-body; the client's transfer is cut{}",
                            if kind == UpstreamFailure::Timeout {
                                " (no body bytes within [server] idle_timeout)"
                            } else {
                                ""
                            }
                        );
                        if let Some(metrics) = &origin.metrics {
                            metrics.upstream_failed(kind);
                        }
                        if let Some(log) = &mut this.log {
                            log.failure = Some(match err {
                                BodyError::Idle => "upstream body idle",
                                _ => "upstream body failed",
                            });
                        }
                        // Held back one poll: hyper flushes the head and the bytes it has
                        // while this body waits, then aborts on the error.
                        up.failed = Some(err);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    other => other,
                }
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.count(frame);
                // hyper stops polling a body whose known length has been sent, so the end may
                // never be seen as `Ready(None)`.
                let done = this.is_end_stream();
                if let Some(log) = &mut this.log {
                    log.complete |= done;
                }
            }
            Poll::Ready(None) => {
                if let Some(log) = &mut this.log {
                    log.complete = true;
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed(bytes) => bytes.is_none(),
            Kind::Upstream(up) => up.failed.is_none() && up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Upstream(up) => up.body.size_hint(),
        }
    }
}

/// Which route's metrics a request counts in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    /// It matched no route (yet).
    None,
    /// A token-handler endpoint.
    Auth,
    /// The route at this index (its place in the file).
    Route(usize),
}

/// One request's record: its access log line and its metrics, written when the response body
/// is done (or dropped, when the client went away), so they can give the bytes sent and the
/// full duration.
///
/// Fields are the request id, the method, the route's prefix, the path without its query (a
/// query may hold secrets), the status, the body bytes sent and the time taken. Header values
/// and cookies are never part of it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    method: Method,
    /// Empty when no line is written (metrics only).
    path: Box<str>,
    route: Option<Arc<str>>,
    slot: Slot,
    status: u16,
    bytes: u64,
    start: Instant,
    complete: bool,
    failure: Option<&'static str>,
    /// Another line replaces this one (a WebSocket logs its own when it closes).
    replaced: bool,
    /// Whether the access line is written.
    write: bool,
    request_id: HeaderValue,
    observer: Option<Arc<Observer>>,
    /// The request body's byte count, when it has one.
    received: Option<Progress>,
    /// An open SSE stream, counted while this lives.
    stream: Option<OpenGuard>,
    /// The server shut down while the answer was still going.
    shutdown: bool,
}

impl AccessLog {
    /// Starts a record if the access log is on (`access`, and `cookiegate::access` enabled at
    /// `info`) or metrics are (`observer`); `None` otherwise, so with both off a request
    /// pays nothing for them.
    pub(crate) fn begin(
        method: &Method,
        path: &str,
        start: Instant,
        request_id: &HeaderValue,
        access: bool,
        observer: Option<&Arc<Observer>>,
    ) -> Option<Box<Self>> {
        let write = access && tracing::enabled!(target: "cookiegate::access", tracing::Level::INFO);
        if !write && observer.is_none() {
            return None;
        }
        // Boxed: the record rides in every response body, which moves several times on its
        // way to hyper; a pointer moves cheaper than the whole record.
        Some(Box::new(Self {
            method: method.clone(),
            path: if write { path.into() } else { Box::default() },
            route: None,
            slot: Slot::None,
            status: 0,
            bytes: 0,
            start,
            complete: false,
            failure: None,
            replaced: false,
            write,
            request_id: request_id.clone(),
            observer: observer.cloned(),
            received: None,
            stream: None,
            shutdown: false,
        }))
    }

    /// Records the route the request matched.
    pub(crate) fn set_route(&mut self, route: &crate::routing::Route) {
        self.route = Some(route.prefix.shared());
        self.slot = Slot::Route(route.index);
    }

    /// Records that the request went to a token-handler endpoint.
    pub(crate) fn set_auth(&mut self) {
        self.slot = Slot::Auth;
    }

    /// Counts the request body's bytes as it goes.
    pub(crate) fn set_received(&mut self, progress: Option<&Progress>) {
        if self.observer.is_some() {
            self.received = progress.cloned();
        }
    }

    /// Counts the answer as an open SSE stream while it lasts (metrics on).
    pub(crate) fn set_sse(&mut self) {
        if let Some(observer) = &self.observer {
            self.stream = Some(observer.metrics().stream_opened(StreamKind::Sse));
        }
    }

    /// Whether the access line is written.
    pub(crate) fn writes(&self) -> bool {
        self.write
    }

    /// Health probes: neither logged nor counted.
    pub(crate) fn skip(mut self) {
        self.replaced = true;
    }

    /// The route's metrics, when on.
    pub(crate) fn route_metrics(&self) -> Option<&Arc<RouteMetrics>> {
        let observer = self.observer.as_ref()?;
        Some(match self.slot {
            Slot::None => observer.none(),
            Slot::Auth => observer.auth(),
            Slot::Route(index) => observer.route(index),
        })
    }

    /// The response head is ready: its time goes to the metrics.
    fn head_ready(&self) {
        if let Some(metrics) = self.route_metrics() {
            metrics.head(self.start.elapsed());
        }
    }

    /// Drops this line without writing it (another line takes its place); its path. The
    /// request is still counted.
    pub(crate) fn replace(mut self) -> String {
        self.replaced = true;
        self.count();
        self.path.to_string()
    }

    fn count(&self) {
        if let Some(metrics) = self.route_metrics() {
            metrics.finished(
                method_class(&self.method),
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                self.start.elapsed(),
                self.received.as_ref().map_or(0, Progress::bytes),
                self.bytes,
            );
        }
    }

    /// Records the response status.
    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.status = status.as_u16();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if self.replaced {
            return;
        }
        self.count();
        if !self.write {
            return;
        }
        let outcome = match (self.complete, self.failure, self.shutdown) {
            (true, _, _) => "complete",
            (false, Some(why), _) => why,
            (false, None, true) => "shutdown",
            (false, None, false) => "client gone",
        };
        tracing::info!(
            target: "cookiegate::access",
            request_id = %self.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            route = self.route.as_deref().unwrap_or("-"),
            path = &*self.path,
            status = self.status,
            bytes = self.bytes,
            // A number (a JSON number in JSON lines), in milliseconds to the microsecond.
            elapsed_ms = (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            outcome,
        );
    }
}
