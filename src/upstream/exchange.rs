//! One request and its response on one upstream connection, driven by the request's own task.
//!
//! [`Exchange`] writes the request head and streams the request body while it waits for the
//! response head (full duplex: an upstream may answer before it has read the whole body), then
//! becomes the response's [`UpstreamBody`], which reads the body straight off the socket and
//! keeps any request body still flowing. Nothing is buffered beyond one read or one body frame.
//!
//! When the exchange ends, its [`Pooled`] handle decides with [`super::pool::is_reusable`]:
//! back to the pool after a clean end, closed in every other case (the client went away, the
//! upstream broke off, the framing was doubtful), which is also how an upstream learns that
//! nobody is listening any more. After a `101` to a request that asked for it, the raw
//! connection is handed over whole ([`UpstreamBody::into_upgraded`]).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::connect::Io;
use super::error::UpstreamError;
use super::h1::{self, ChunkedDecoder, Decoded, RequestFraming, ResponseFraming};
use super::pool::{Ending, Pooled};

/// Request body bytes queued for the socket before the body is polled again.
const MAX_QUEUED: usize = 256 * 1024;

/// The request side: bytes waiting for the socket, and the body still to come.
struct Sending<B> {
    queue: VecDeque<Bytes>,
    queued: usize,
    body: Option<B>,
    framing: RequestFraming,
    /// Body bytes still owed by `Content-Length`.
    owed: u64,
    /// Writing failed; kept to report if no response comes either.
    failed: Option<std::io::Error>,
}

impl<B: Body<Data = Bytes> + Unpin> Sending<B> {
    fn is_done(&self) -> bool {
        self.queue.is_empty() && self.body.is_none()
    }

    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queued += bytes.len();
            self.queue.push_back(bytes);
        }
    }

    /// Moves the request forward as far as it can without waiting. `Ready(Ok)`: all sent.
    fn poll(
        &mut self,
        io: &mut Io,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UpstreamError<B::Error>>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut body_pending = false;
            if let Some(body) = &mut self.body {
                if self.queued < MAX_QUEUED {
                    match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            // Request trailers are not forwarded (few upstreams read them).
                            if let Ok(data) = frame.into_data() {
                                self.encode(data)?;
                            }
                            continue;
                        }
                        Poll::Ready(None) => {
                            self.body = None;
                            match self.framing {
                                RequestFraming::Chunked => {
                                    self.push(Bytes::from_static(h1::LAST_CHUNK));
                                }
                                _ if self.owed > 0 => {
                                    return Poll::Ready(Err(UpstreamError::BodyLength));
                                }
                                _ => {}
                            }
                            continue;
                        }
                        Poll::Ready(Some(Err(err))) => {
                            self.body = None;
                            return Poll::Ready(Err(UpstreamError::Body(err)));
                        }
                        Poll::Pending => body_pending = true,
                    }
                }
            }
            if self.queue.is_empty() {
                if body_pending {
                    return Poll::Pending;
                }
                return match Pin::new(io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                    Poll::Ready(Err(err)) => {
                        self.fail(err);
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            let mut slices = [IoSlice::new(&[]); 16];
            let count = self.queue.len().min(slices.len());
            for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                *slice = IoSlice::new(bytes);
            }
            match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => {
                    self.fail(std::io::ErrorKind::WriteZero.into());
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(n)) => self.advance(n),
                Poll::Ready(Err(err)) => {
                    self.fail(err);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn encode(&mut self, data: Bytes) -> Result<(), UpstreamError<B::Error>> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            RequestFraming::Chunked => {
                let mut size = BytesMut::with_capacity(18);
                h1::encode_chunk_size(&mut size, data.len());
                self.push(size.freeze());
                self.push(data);
                self.push(Bytes::from_static(b"\r\n"));
            }
            _ => {
                let len = data.len() as u64;
                if len > self.owed {
                    return Err(UpstreamError::BodyLength);
                }
                self.owed -= len;
                self.push(data);
            }
        }
        Ok(())
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }

    /// Writing failed (the upstream closed its side, perhaps after answering early): stop
    /// sending and let the response side find out whether an answer came.
    fn fail(&mut self, err: std::io::Error) {
        self.queue.clear();
        self.queued = 0;
        self.body = None;
        self.failed = Some(err);
    }
}

/// A request in flight on one connection, until its response head arrives.
pub(crate) struct Exchange<B> {
    conn: Pooled,
    sending: Sending<B>,
    method: Method,
    /// The request asked to switch protocols.
    upgrade: bool,
    /// Any response byte arrived (a failure after that is never retried).
    answered: bool,
}

impl<B: Body<Data = Bytes> + Unpin> Exchange<B> {
    /// Starts an exchange: `head` is the encoded request head, `body` what follows it.
    pub(crate) fn new(
        conn: Pooled,
        method: Method,
        upgrade: bool,
        head: Bytes,
        body: Option<B>,
        framing: RequestFraming,
    ) -> Self {
        let owed = match framing {
            RequestFraming::Length(len) => len,
            _ => 0,
        };
        let mut sending = Sending {
            queue: VecDeque::with_capacity(4),
            queued: 0,
            body,
            framing,
            owed,
            failed: None,
        };
        sending.push(head);
        Self {
            conn,
            sending,
            method,
            upgrade,
            answered: false,
        }
    }

    /// Sends the request and waits for the response head; the body that follows reads on from
    /// the same connection, whose handle gives it back to its pool at the end.
    ///
    /// # Errors
    /// [`UpstreamError`], with whether any byte of an answer had arrived and whether the
    /// connection was a reused one (see [`super::may_resend`]); our own body's failures come
    /// first, as they decide the status.
    pub(crate) async fn response(mut self) -> Result<Response<UpstreamBody<B>>, Failed<B::Error>> {
        let head = match std::future::poll_fn(|cx| self.poll_head(cx)).await {
            Ok(head) => head,
            Err(error) => {
                return Err(Failed {
                    error,
                    answered: self.answered,
                    reused: self.conn.is_reused(),
                });
            }
        };
        let decoder = match head.framing {
            ResponseFraming::Empty => Decoder::Ended,
            ResponseFraming::Length(0) => Decoder::Ended,
            ResponseFraming::Length(len) => Decoder::Length(len),
            ResponseFraming::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
            ResponseFraming::Close => Decoder::Close,
            ResponseFraming::Switched => Decoder::Switched,
        };
        let mut body = UpstreamBody {
            exchange: Some(Box::new(self)),
            decoder,
            reusable: head.reusable,
        };
        if matches!(body.decoder, Decoder::Ended) {
            body.finish();
        }
        Ok(Response::from_parts(head.parts, body))
    }

    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<h1::ResponseHead, UpstreamError<B::Error>>> {
        let conn = &mut self.conn.conn;
        if let Poll::Ready(Err(err)) = self.sending.poll(&mut conn.io, cx) {
            return Poll::Ready(Err(err));
        }
        loop {
            if !conn.buf.is_empty() {
                match h1::parse_response_head(&mut conn.buf, &self.method, self.upgrade) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(err) => return Poll::Ready(Err(UpstreamError::Protocol(err))),
                }
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(match self.sending.failed.take() {
                        Some(err) if !self.answered => UpstreamError::Io(err),
                        _ => UpstreamError::Closed,
                    }));
                }
                Ok(_) => self.answered = true,
                Err(err) => return Poll::Ready(Err(UpstreamError::Io(err))),
            }
        }
    }
}

/// What polling a response body gives.
type PolledFrame<E> = Poll<Option<Result<Frame<Bytes>, UpstreamError<E>>>>;

/// An exchange that ended without a response head.
#[derive(Debug)]
pub(crate) struct Failed<E> {
    /// Why.
    pub(crate) error: UpstreamError<E>,
    /// Some byte of an answer had arrived.
    pub(crate) answered: bool,
    /// The connection had carried an earlier exchange.
    pub(crate) reused: bool,
}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    /// After a `101`: no body; the connection is the new protocol's.
    Switched,
    Ended,
}

/// An upstream response body, read off the connection as the client takes it.
pub(crate) struct UpstreamBody<B> {
    /// `None` once the body ended (the connection is back in its pool or closed). Boxed: it
    /// holds the whole connection state, and a response body is moved several times.
    exchange: Option<Box<Exchange<B>>>,
    decoder: Decoder,
    reusable: bool,
}

/// The raw upstream connection after a `101 Switching Protocols`, and the bytes of the new
/// protocol that arrived with the head.
pub(crate) struct Upgraded {
    /// The stream (plain TCP or TLS).
    pub(crate) io: Box<Io>,
    /// Bytes read past the `101` head.
    pub(crate) read: BytesMut,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read", &self.read.len())
            .finish_non_exhaustive()
    }
}

impl<B> std::fmt::Debug for UpstreamBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("ended", &self.exchange.is_none())
            .finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes> + Unpin> UpstreamBody<B> {
    /// The body ended at its framed end: the connection's handle decides whether it goes back
    /// to its pool.
    fn finish(&mut self) {
        self.decoder = Decoder::Ended;
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let Exchange { conn, sending, .. } = *exchange;
        conn.release(&Ending {
            head_allows_reuse: self.reusable,
            body_finished: true,
            request_sent: sending.is_done(),
            write_failed: sending.failed.is_some(),
            stray_bytes: 0,
        });
    }

    /// After a `101` answer: the raw connection, for the caller to carry the new protocol.
    /// `None` for any other answer. A request body still being sent is dropped (a request
    /// asking for an upgrade has none).
    pub(crate) fn into_upgraded(mut self) -> Option<Upgraded> {
        if !matches!(self.decoder, Decoder::Switched) {
            return None;
        }
        let exchange = self.exchange.take()?;
        let conn = exchange.conn.into_conn();
        Some(Upgraded {
            io: conn.io,
            read: conn.buf,
        })
    }

    fn fail(&mut self, err: UpstreamError<B::Error>) -> PolledFrame<B::Error> {
        // Dropping the exchange closes the connection.
        self.exchange = None;
        self.decoder = Decoder::Ended;
        Poll::Ready(Some(Err(err)))
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for UpstreamBody<B> {
    type Data = Bytes;
    type Error = UpstreamError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(exchange) = &mut this.exchange else {
                return Poll::Ready(None);
            };
            let conn = &mut exchange.conn.conn;
            // Keep the request body flowing (an early answer while the upload goes on).
            if !exchange.sending.is_done() {
                if let Poll::Ready(Err(err)) = exchange.sending.poll(&mut conn.io, cx) {
                    return this.fail(err);
                }
            }
            let buf = &mut conn.buf;
            match &mut this.decoder {
                // The connection waits for `into_upgraded`; as a body, a switch has none.
                Decoder::Switched => return Poll::Ready(None),
                Decoder::Ended => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoder::Length(left) => {
                    if !buf.is_empty() {
                        let take = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                        *left -= take as u64;
                        let data = buf.split_to(take).freeze();
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decoder::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Some(Decoded::Data(data))) => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Some(Decoded::Trailers(trailers))) => {
                        // The last frame: hyper's server does not poll a body after its
                        // trailers, so the body ends here.
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Some(Decoded::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(err) => return this.fail(UpstreamError::Protocol(err)),
                },
                Decoder::Close => {
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match conn.poll_read_more(cx) {
                Poll::Ready(Ok(0)) => {
                    if matches!(this.decoder, Decoder::Close) {
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail(UpstreamError::Truncated);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return this.fail(UpstreamError::Io(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none() || matches!(self.decoder, Decoder::Switched)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.exchange, &self.decoder) {
            (None, _) | (_, Decoder::Ended | Decoder::Switched) => SizeHint::with_exact(0),
            (Some(_), Decoder::Length(left)) => SizeHint::with_exact(*left),
            (Some(_), _) => SizeHint::default(),
        }
    }
}
