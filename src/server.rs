//! The accept loop: connection settings, the header timeout, graceful shutdown.
//!
//! [`serve`] takes a bound listener, the state (or a [`Live`] one that reloads) and a shutdown
//! future, so tests bind port 0 and the binary passes a signal. Each connection speaks HTTP/1.1
//! (keep-alive) or HTTP/2 (cleartext with prior knowledge, or by ALPN over TLS), detected from
//! its first bytes. With `[tls]` the listener ([`Listener::with_tls`]) first ends TLS
//! ([`tls`]); the decrypted stream then goes through the same per-connection code as a plain
//! one, generic over the stream, so a plain listener does no TLS work at all.

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
use crate::trust::Proto;
use head_timer::{HeadTimer, NeverTimer};
pub use reload::Live;
use tls::ServerTls;

mod head_timer;
mod reload;
pub mod tls;

/// A bound socket and, when `[tls]` is configured, the TLS it ends. A plain [`TcpListener`]
/// converts into one, so `serve(listener, ..)` keeps serving plain HTTP.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<ServerTls>>,
}

impl Listener {
    /// A listener whose connections start with a TLS handshake; keep a clone of `tls` to
    /// reload its certificate ([`ServerTls::reload`], or a config reload through
    /// [`crate::proxy::Lasting::with_tls`]).
    pub fn with_tls(tcp: TcpListener, tls: Arc<ServerTls>) -> Self {
        Self {
            tcp,
            tls: Some(tls),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

/// Connection settings from one config's `[server]`: a reload applies them to new
/// connections.
struct ConnSettings {
    builder: auto::Builder<TokioExecutor>,
    max_head_bytes: usize,
    max_headers: usize,
    header_timeout: Duration,
    max_connections: usize,
    /// Whether any route carries WebSockets (connections are served with upgrades).
    websockets: bool,
}

impl ConnSettings {
    fn of(state: &AppState) -> Arc<Self> {
        let settings = &state.config.server;
        let max_head_bytes =
            usize::try_from(settings.max_header_bytes.as_u64()).unwrap_or(usize::MAX);
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
        Arc::new(Self {
            builder,
            max_head_bytes,
            max_headers,
            header_timeout: settings.header_timeout,
            max_connections: settings.max_connections,
            websockets: state.config.routes.has_websocket(),
        })
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for up
/// to `server.shutdown_grace`, and closes what is left.
///
/// `state` is an `Arc<AppState>`, or a [`Live`] someone else may [`Live::reload`]: each
/// request runs on the state current when it arrived, each new connection gets the current
/// `[server]` settings. With sessions configured, the IdP's discovery starts at once in the
/// background (and again for a reloaded IdP), so `/readyz` turns 200 without a first login.
/// From the shutdown signal on, `/readyz` answers 503 on every connection still open.
pub async fn serve(
    listener: impl Into<Listener>,
    state: impl Into<Live>,
    shutdown: impl Future<Output = ()>,
) {
    let Listener { tcp: listener, tls } = listener.into();
    let live: Live = state.into();
    let mut swapped = live.subscribe();
    let mut current = live.current();
    let mut settings = ConnSettings::of(&current);
    let mut discovery = JoinSet::new();
    discover(&current, None, &mut discovery);

    let graceful = GracefulShutdown::new();
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sweep.tick() => {
                live.current().sweep();
                continue;
            }
            Ok(()) = swapped.changed() => {
                let next = live.current();
                discover(&next, Some(&current), &mut discovery);
                settings = ConnSettings::of(&next);
                current = next;
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
        let max_connections = settings.max_connections;
        if connections.len() >= max_connections {
            tracing::warn!(
                max_connections,
                "connection limit reached; refusing a connection"
            );
            if let Some(metrics) = current.metrics() {
                metrics.refused(crate::telemetry::metrics::Refusal::Limits);
            }
            while refusals.try_join_next().is_some() {}
            if refusals.len() < MAX_REFUSALS_IN_FLIGHT {
                let busy = ProxyError::TooManyConnections.to_http1_bytes();
                match &tls {
                    None => refusals.spawn(refuse(stream, busy)),
                    Some(tls) => refusals.spawn(tls.clone().refuse(stream, busy)),
                };
            }
            continue;
        }
        let settings = settings.clone();
        let watcher = graceful.watcher();
        let live = live.clone();
        let tls = tls.clone();
        let closing = closing.clone();
        let metrics = current.metrics().cloned();
        connections.spawn(async move {
            // Counted open from accept to close (metrics on).
            let _open = metrics.as_ref().map(|m| m.connection_opened());
            let _ = stream.set_nodelay(true);
            let header_timeout = settings.header_timeout;
            match tls {
                None => {
                    if first_bytes_arrive(&stream, header_timeout).await {
                        serve_connection(
                            stream,
                            Proto::Http,
                            peer,
                            settings,
                            live,
                            closing,
                            watcher,
                        )
                        .await;
                    }
                }
                // Boxed: the handshake's and rustls's state stay out of plain connections'
                // tasks.
                Some(tls) => {
                    Box::pin(async move {
                        if let Some(stream) = tls.handshake(stream, peer.ip(), header_timeout).await
                        {
                            serve_connection(
                                stream,
                                Proto::Https,
                                peer,
                                settings,
                                live,
                                closing,
                                watcher,
                            )
                            .await;
                        }
                    })
                    .await;
                }
            }
        });
    }
    drop(listener);
    let state = live.current();
    // From here `/readyz` answers 503 on the connections still open.
    state.lasting.start_draining();
    discovery.shutdown().await;
    let grace = state.config.server.shutdown_grace;
    let sockets = &state.lasting.sockets;
    tracing::info!(
        connections = connections.len(),
        "shutting down: no longer accepting"
    );
    // Connections and open WebSockets get the grace period together, then what is left is
    // closed.
    let drained = async {
        graceful.shutdown().await;
        sockets.all_closed().await;
    };
    tokio::select! {
        () = drained => tracing::info!("all connections finished"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            connections = connections.len(),
            websockets = sockets.open(),
            "shutdown grace period over; closing the remaining connections"
        ),
    }
    // What is cut from here on is cut by the shutdown (its access lines say so).
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    sockets.close_all();
    // The sockets close at once; their tasks get a moment to log their lines.
    let _ = tokio::time::timeout(Duration::from_millis(500), sockets.all_closed()).await;
    connections.abort_all();
    while let Some(ended) = connections.join_next().await {
        log_panic(ended);
    }
    refusals.shutdown().await;
}

/// Serves one connection's requests until it ends: `stream` is the TCP stream, or the
/// decrypted one after a TLS handshake (`proto` says which).
async fn serve_connection<S>(
    stream: S,
    proto: Proto,
    peer: std::net::SocketAddr,
    settings: Arc<ConnSettings>,
    live: Live,
    closing: Arc<std::sync::atomic::AtomicBool>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Arc::new(FramingWatch::default());
    let info = Arc::new(ConnInfo {
        peer: peer.ip(),
        client_ip: ip_header_value(peer.ip()),
        proto,
        framing: framing.clone(),
        upgraded: std::sync::atomic::AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        closing,
    });
    let stream = Scanned {
        stream,
        scanner: FramingScanner::new(settings.max_head_bytes, settings.max_headers),
        watch: framing,
        conn: info.clone(),
        head_timer: HeadTimer::new(settings.header_timeout),
    };
    let service = service_fn(move |req| {
        let in_flight = info.begin();
        proxy::handle(live.clone(), info.clone(), req, in_flight)
    });
    // With upgrades only when a route carries WebSockets (a 101 then hands the
    // connection to its socket): hyper's upgradeable connection costs a few hundred
    // instructions per request that plain proxying need not pay.
    let builder = &settings.builder;
    let ended = if settings.websockets {
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        watcher.watch(conn).await
    } else {
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        watcher.watch(conn).await
    };
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Starts loading the IdP's discovery document in the background when `state` has a token
/// handler that has not loaded it, unless `previous` already had that same handler (whose
/// discovery is running). The task belongs to the accept loop, which aborts it at shutdown.
fn discover(state: &Arc<AppState>, previous: Option<&Arc<AppState>>, tasks: &mut JoinSet<()>) {
    let Some(tokens) = &state.tokens else {
        tasks.abort_all();
        return;
    };
    let same = previous
        .and_then(|p| p.tokens.as_ref())
        .is_some_and(|old| Arc::ptr_eq(old, tokens));
    if same || tokens.is_discovered() {
        return;
    }
    tasks.abort_all();
    let (tokens, client) = (tokens.clone(), state.client.clone());
    tasks.spawn(async move { tokens.discover_until_ready(&client).await });
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

/// Answers a connection over `server.max_connections` with `busy` (the 503 JSON error) and
/// closes it, within a second.
async fn refuse(stream: TcpStream, busy: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), close_with(stream, &busy)).await;
}

/// Writes `answer` and closes the connection. The request is read (bounded) before closing so
/// the kernel does not reset the connection and destroy the answer before the client reads it;
/// the caller bounds the time.
async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    let drain = async {
        stream.write_all(answer).await?;
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
    let _ = drain.await;
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

/// The error for a listener that cannot be bound, with what to do about the usual causes.
pub fn bind_error(addr: std::net::SocketAddr, err: &std::io::Error) -> crate::error::BoxError {
    let hint = match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another process is listening there; stop it, or choose another address with \
             --listen (or `listen` in the config file)"
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            ": ports below 1024 need the CAP_NET_BIND_SERVICE capability (the Debian package's \
             unit grants it), or choose a port above 1023 with --listen"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            ": no network interface has this address; 127.0.0.1 or 0.0.0.0 are the usual \
             choices (--listen)"
        }
        _ => "",
    };
    format!("cannot listen on {addr}: {err}{hint}").into()
}
