//! One request and its response on one upstream connection, driven by the request's own task.
//!
//! [`Exchange`] writes the request head and streams the request body while it waits for the
//! response head (full duplex: an upstream may answer before it has read the whole body), then
//! becomes the response's [`UpstreamBody`], which reads the body straight off the socket and
//! keeps any request body still flowing. Nothing is buffered beyond one read or one body frame.
//!
//! When the response ended cleanly, the request was sent whole and nothing stray followed, the
//! connection goes back to its pool ([`super::pool`]); in every other case (the client went
//! away, the upstream broke off, the framing was doubtful) it is closed, which is also how an
//! upstream learns that nobody is listening any more.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::h1::{self, ChunkedDecoder, Decoded, H1Error, RequestFraming, ResponseFraming};
use super::pool::{Upstream, UpstreamRequestBody};
use crate::error::BoxError;

/// An upstream connection's stream (plain TCP or TLS).
pub type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Read size for response heads and the start of bodies; doubled up to [`MAX_READ`] while
/// reads keep filling it (large downloads), so small answers stay small in memory.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Request body bytes queued for the socket before the body is polled again.
const MAX_QUEUED: usize = 256 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
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
    /// Our side of the request body failed (limit, idle timer, or the client went away).
    #[error("request body stopped")]
    Body(#[source] BoxError),
}

/// An open upstream connection and the bytes read from it but not used yet.
pub struct Conn {
    /// Boxed: a TLS stream is over a kilobyte, and a `Conn` moves in and out of the pool.
    io: Box<Io>,
    buf: BytesMut,
    read_size: usize,
}

impl Conn {
    /// Wraps a freshly opened connection.
    pub fn new(io: Io) -> Self {
        Self {
            io: Box::new(io),
            buf: BytesMut::new(),
            read_size: FIRST_READ,
        }
    }

    /// Whether an idle connection can carry a request: it must have nothing to read. An
    /// upstream that closed it (EOF) or wrote to it unasked (stray bytes) makes it unusable.
    /// A non-blocking read, at most one system call.
    pub fn is_idle_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// The request side: bytes waiting for the socket, and the body still to come.
struct Sending {
    queue: VecDeque<Bytes>,
    queued: usize,
    body: Option<UpstreamRequestBody>,
    framing: RequestFraming,
    /// Body bytes still owed by `Content-Length`.
    owed: u64,
    /// Writing failed; kept to report if no response comes either.
    failed: Option<std::io::Error>,
}

impl Sending {
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
    fn poll(&mut self, io: &mut Io, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
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
                                    return Poll::Ready(Err(ExchangeError::Body(
                                        "request body shorter than its Content-Length".into(),
                                    )));
                                }
                                _ => {}
                            }
                            continue;
                        }
                        Poll::Ready(Some(Err(err))) => {
                            self.body = None;
                            return Poll::Ready(Err(ExchangeError::Body(Box::new(err))));
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

    fn encode(&mut self, data: Bytes) -> Result<(), ExchangeError> {
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
                    return Err(ExchangeError::Body(
                        "request body longer than its Content-Length".into(),
                    ));
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
pub struct Exchange {
    conn: Conn,
    sending: Sending,
    method: Method,
    /// Any response byte arrived (a failure after that is never retried).
    answered: bool,
}

impl Exchange {
    /// Starts an exchange: `head` is the encoded request head, `body` what follows it.
    pub fn new(
        conn: Conn,
        method: Method,
        head: Bytes,
        body: Option<UpstreamRequestBody>,
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
            answered: false,
        }
    }

    /// Sends the request and waits for the response head; the body that follows reads on from
    /// the same connection and gives it back to `upstream`'s pool at its end.
    ///
    /// # Errors
    /// [`ExchangeError`], with whether any byte of an answer had arrived (if none had, the
    /// request may be sent again on another connection); our own body's failures come first,
    /// as they decide the status.
    pub async fn response(
        mut self,
        upstream: Option<Arc<Upstream>>,
    ) -> Result<Response<UpstreamBody>, (ExchangeError, bool)> {
        let head = std::future::poll_fn(|cx| self.poll_head(cx))
            .await
            .map_err(|err| (err, self.answered))?;
        let decoder = match head.framing {
            ResponseFraming::Empty => Decoder::Ended,
            ResponseFraming::Length(0) => Decoder::Ended,
            ResponseFraming::Length(len) => Decoder::Length(len),
            ResponseFraming::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
            ResponseFraming::Close => Decoder::Close,
        };
        let mut body = UpstreamBody {
            exchange: Some(Box::new(self)),
            decoder,
            reusable: head.reusable,
            upstream,
        };
        if matches!(body.decoder, Decoder::Ended) {
            body.finish();
        }
        Ok(Response::from_parts(head.parts, body))
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<h1::ResponseHead, ExchangeError>> {
        if let Poll::Ready(Err(err)) = self.sending.poll(&mut self.conn.io, cx) {
            return Poll::Ready(Err(err));
        }
        loop {
            if !self.conn.buf.is_empty() {
                match h1::parse_response_head(&mut self.conn.buf, &self.method) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(err) => return Poll::Ready(Err(ExchangeError::Protocol(err))),
                }
            }
            match ready!(self.conn.poll_read_more(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(match self.sending.failed.take() {
                        Some(err) if !self.answered => ExchangeError::Io(err),
                        _ => ExchangeError::Closed,
                    }));
                }
                Ok(_) => self.answered = true,
                Err(err) => return Poll::Ready(Err(ExchangeError::Io(err))),
            }
        }
    }
}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Ended,
}

/// An upstream response body, read off the connection as the client takes it.
pub struct UpstreamBody {
    /// `None` once the body ended (the connection is back in its pool or closed). Boxed: it
    /// holds the whole connection state, and a response body is moved several times.
    exchange: Option<Box<Exchange>>,
    decoder: Decoder,
    reusable: bool,
    upstream: Option<Arc<Upstream>>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("ended", &self.exchange.is_none())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// The body ended: the connection goes back to its pool if it can carry another request.
    fn finish(&mut self) {
        self.decoder = Decoder::Ended;
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let clean = self.reusable
            && exchange.sending.is_done()
            && exchange.sending.failed.is_none()
            && exchange.conn.buf.is_empty();
        if let (true, Some(upstream)) = (clean, &self.upstream) {
            upstream.checkin(exchange.conn);
        }
    }

    fn fail(&mut self, err: ExchangeError) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        // Dropping the exchange closes the connection.
        self.exchange = None;
        self.decoder = Decoder::Ended;
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        loop {
            let Some(exchange) = &mut this.exchange else {
                return Poll::Ready(None);
            };
            // Keep the request body flowing (an early answer while the upload goes on).
            if !exchange.sending.is_done() {
                if let Poll::Ready(Err(err)) = exchange.sending.poll(&mut exchange.conn.io, cx) {
                    return this.fail(err);
                }
            }
            let buf = &mut exchange.conn.buf;
            match &mut this.decoder {
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
                    Err(err) => return this.fail(ExchangeError::Protocol(err)),
                },
                Decoder::Close => {
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match exchange.conn.poll_read_more(cx) {
                Poll::Ready(Ok(0)) => {
                    if matches!(this.decoder, Decoder::Close) {
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail(ExchangeError::Truncated);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return this.fail(ExchangeError::Io(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.exchange, &self.decoder) {
            (None, _) | (_, Decoder::Ended) => SizeHint::with_exact(0),
            (Some(_), Decoder::Length(left)) => SizeHint::with_exact(*left),
            (Some(_), _) => SizeHint::default(),
        }
    }
}
