//! The accept loop: connection settings, the header timeout, graceful shutdown.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests bind port 0 and the binary
//! passes a signal. Each connection speaks HTTP/1.1 (keep-alive) or HTTP/2 cleartext with prior
//! knowledge, detected from its first bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::error::ProxyError;
use crate::guard::framing::{FramingScanner, FramingWatch};
use crate::proxy::{self, AppState, ConnInfo, headers::ip_header_value};
use head_timer::{HeadTimer, NeverTimer};

mod head_timer;

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for up
/// to `server.shutdown_grace`, and closes what is left.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let settings = &state.config.server;
    let max_head_bytes = usize::try_from(settings.max_header_bytes.as_u64()).unwrap_or(usize::MAX);
    let max_headers = settings.max_headers;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Heads are timed by `Scanned` (see `head_timer`): hyper's timer never fires.
        .timer(NeverTimer)
        .header_read_timeout(settings.header_timeout)
        .max_headers(max_headers)
        .max_buf_size(max_head_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(settings.max_header_bytes.as_u64()).unwrap_or(u32::MAX),
        );
    let builder = Arc::new(builder);
    let header_timeout = settings.header_timeout;
    let grace = settings.shutdown_grace;
    let websockets = state.config.routes.has_websocket();

    let graceful = GracefulShutdown::new();
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    let max_connections = settings.max_connections;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sweep.tick() => {
                state.sweep();
                continue;
            }
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks so the set stays as small as the live connections.
        while let Some(ended) = connections.try_join_next() {
            log_panic(ended);
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Typically EMFILE: out of file descriptors. Back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if connections.len() >= max_connections {
            tracing::warn!(
                max_connections,
                "connection limit reached; refusing a connection"
            );
            if let Some(metrics) = state.metrics() {
                metrics.refused(crate::telemetry::metrics::Refusal::Limits);
            }
            while refusals.try_join_next().is_some() {}
            if refusals.len() < MAX_REFUSALS_IN_FLIGHT {
                refusals.spawn(refuse(stream));
            }
            continue;
        }
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let state = state.clone();
        let closing = closing.clone();
        connections.spawn(async move {
            // Counted open from accept to close (metrics on).
            let _open = state.metrics().map(|m| m.connection_opened());
            let _ = stream.set_nodelay(true);
            if !first_bytes_arrive(&stream, header_timeout).await {
                return;
            }
            let framing = Arc::new(FramingWatch::default());
            let info = Arc::new(ConnInfo {
                peer: peer.ip(),
                client_ip: ip_header_value(peer.ip()),
                proto: crate::trust::Proto::Http,
                framing: framing.clone(),
                upgraded: std::sync::atomic::AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                closing,
            });
            let stream = Scanned {
                stream,
                scanner: FramingScanner::new(max_head_bytes, max_headers),
                watch: framing,
                conn: info.clone(),
                head_timer: HeadTimer::new(header_timeout),
            };
            let service = service_fn(move |req| {
                let in_flight = info.begin();
                proxy::handle(state.clone(), info.clone(), req, in_flight)
            });
            // With upgrades only when a route carries WebSockets (a 101 then hands the
            // connection to its socket): hyper's upgradeable connection costs a few hundred
            // instructions per request that plain proxying need not pay.
            let ended = if websockets {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(conn).await
            } else {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn).await
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: no longer accepting"
    );
    // Connections and open WebSockets get the grace period together, then what is left is
    // closed.
    let drained = async {
        graceful.shutdown().await;
        state.guards.sockets.all_closed().await;
    };
    tokio::select! {
        () = drained => tracing::info!("all connections finished"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            connections = connections.len(),
            websockets = state.guards.sockets.open(),
            "shutdown grace period over; closing the remaining connections"
        ),
    }
    // What is cut from here on is cut by the shutdown (its access lines say so).
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    state.guards.sockets.close_all();
    // The sockets close at once; their tasks get a moment to log their lines.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        state.guards.sockets.all_closed(),
    )
    .await;
    connections.abort_all();
    while let Some(ended) = connections.join_next().await {
        log_panic(ended);
    }
    refusals.shutdown().await;
}

/// A connection task that panicked is a bug of ours: say so loudly (hyper's connection is
/// gone with it; the process and every other connection carry on).
fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(err) = ended {
        if err.is_panic() {
            let panic = err.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(panic = message, "a connection task panicked");
        }
    }
}

/// Refusals being written at once; past this, excess connections are simply closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 256;

/// How often the rate limiter forgets clients whose bucket has refilled, and the upstream pool
/// closes connections idle past its limit.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Answers a connection over `server.max_connections` with a 503 JSON error and closes it.
/// The request is read (bounded, briefly) before closing so the kernel does not reset the
/// connection and destroy the answer before the client reads it.
async fn refuse(mut stream: TcpStream) {
    let busy = ProxyError::TooManyConnections.to_http1_bytes();
    let drain = async {
        stream.write_all(&busy).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// A client connection (any byte stream) whose incoming bytes pass through a
/// [`FramingScanner`] on their way to hyper, so request smuggling shapes hyper hides from its
/// requests are still refused ([`crate::guard::check_framing`]), and whose HTTP/1 request
/// heads are timed ([`HeadTimer`]: a read that has to wait while no request is being answered
/// is a wait for a head). Writes go straight through.
struct Scanned<S> {
    stream: S,
    scanner: FramingScanner,
    watch: Arc<FramingWatch>,
    conn: Arc<ConnInfo>,
    head_timer: HeadTimer,
}

impl<S: AsyncRead + Unpin> AsyncRead for Scanned<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this
            .conn
            .upgraded
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // A WebSocket now: its bytes are frames, not request heads, and its silences are
            // the socket's idle timeout's business.
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) => {
                if let Some(head) = this.scanner.feed(&buf.filled()[before..]) {
                    this.watch.report(head);
                }
            }
            // HTTP/2 (the scanner stops at its preface) keeps hyper's own handling.
            Poll::Pending if this.conn.is_busy() || this.scanner.is_stopped() => {
                this.head_timer.stop();
            }
            Poll::Pending => {
                if this.head_timer.poll_expired(cx) {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request head not received within header_timeout",
                    )));
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Scanned<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Waits (up to the header timeout) for a new connection's first bytes, so a client that
/// connects and stays silent is dropped; hyper's `header_read_timeout` covers the rest of the
/// head.
async fn first_bytes_arrive(stream: &TcpStream, header_timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Pending connections the kernel queues for `accept`. The usual 128 overflows under a burst of
/// new connections (clients then retry after a second); nginx uses 511, we take 1024.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listener with `SO_REUSEADDR` (so a restart does not wait out `TIME_WAIT`) and a
/// deeper accept queue than the default.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
