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
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::body::{BodyError, LimitedBody};
use super::forward::AnswerBody;
use super::{InFlight, SourceChain};

/// The body of every response cookiegate sends: an upstream stream or a small fixed answer.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    kind: Kind,
    log: Option<AccessLog>,
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
    /// The route's prefix, for the log line of a failure.
    route: Arc<str>,
    /// A failure held back for one poll, so hyper flushes what it has first.
    failed: Option<BodyError>,
}

impl ResponseBody {
    /// A fixed body (errors, health).
    pub(crate) fn fixed(bytes: Bytes, mut log: Option<AccessLog>) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        if let Some(log) = &mut log {
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

    /// The upstream's body on `route`, closed after `idle` of silence.
    pub(crate) fn upstream(
        body: AnswerBody,
        route: Arc<str>,
        idle: Duration,
        mut log: Option<AccessLog>,
    ) -> Self {
        if let Some(log) = &mut log {
            // HEAD, 204 and 304 answers have no body for hyper to poll.
            log.complete = body.is_end_stream();
        }
        Self {
            kind: Kind::Upstream(Upstream {
                body: LimitedBody::new(body, u64::MAX, idle, None),
                route,
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
                        tracing::warn!(
                            route = &*up.route,
                            error = %err,
                            cause = %SourceChain(&err),
                            "upstream failed mid-body; the client's transfer is cut"
                        );
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

/// One access log line, written when the response body is done (or dropped, when the client
/// went away), so it can give the bytes sent and the full duration.
///
/// Fields are the method, the route's prefix, the path without its query (a query may hold
/// secrets), the status, the body bytes sent and the time taken. Header values and cookies are
/// never part of it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    method: Method,
    path: Box<str>,
    route: Option<Arc<str>>,
    status: u16,
    bytes: u64,
    start: Instant,
    complete: bool,
    failure: Option<&'static str>,
    /// Another line replaces this one (a WebSocket logs its own when it closes).
    replaced: bool,
}

impl AccessLog {
    /// Starts a log line if access logging is on (`cookiegate::access` at `info`); `None`
    /// otherwise, so a disabled log costs nothing per request.
    pub(crate) fn begin(method: &Method, path: &str, start: Instant) -> Option<Self> {
        if !tracing::enabled!(target: "cookiegate::access", tracing::Level::INFO) {
            return None;
        }
        Some(Self {
            method: method.clone(),
            path: path.into(),
            route: None,
            status: 0,
            bytes: 0,
            start,
            complete: false,
            failure: None,
            replaced: false,
        })
    }

    /// Records the route the request matched.
    pub(crate) fn set_route(&mut self, prefix: Arc<str>) {
        self.route = Some(prefix);
    }

    /// Drops this line without writing it (another line takes its place); its path.
    pub(crate) fn replace(mut self) -> String {
        self.replaced = true;
        self.path.to_string()
    }

    /// Drops the line unwritten (health and readiness probes, which would drown the log).
    pub(crate) fn discard(mut self) {
        self.replaced = true;
    }

    /// The route the request matched, once known.
    pub(crate) fn route(&self) -> Option<Arc<str>> {
        self.route.clone()
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
        let outcome = match (self.complete, self.failure) {
            (true, _) => "complete",
            (false, Some(why)) => why,
            (false, None) => "client gone",
        };
        tracing::info!(
            target: "cookiegate::access",
            method = %self.method,
            route = self.route.as_deref().unwrap_or("-"),
            path = &*self.path,
            status = self.status,
            bytes = self.bytes,
            elapsed_ms = %format_args!("{:.3}", self.start.elapsed().as_secs_f64() * 1000.0),
            outcome,
        );
    }
}
