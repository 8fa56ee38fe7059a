//! Opening upstream connections (TCP, and TLS with rustls over the ring provider) and the
//! [`Conn`] that carries one: the stream and the bytes read from it but not used yet.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use super::error::UpstreamError;
use crate::error::BoxError;

/// An upstream connection's stream (plain TCP or TLS).
pub(crate) type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Read size for response heads and the start of bodies; doubled up to [`MAX_READ`] while
/// reads keep filling it (large downloads), so small answers stay small in memory.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Opens connections to upstreams: TCP with `TCP_NODELAY` and a connect timeout, then TLS for
/// `https` upstreams (SNI and certificate checked against the platform's roots).
#[derive(Clone)]
pub(crate) struct Connector {
    inner: HttpsConnector<HttpConnector>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector; `with_tls_roots` loads the platform's root certificates (only needed, and
    /// only paid for at startup, when some upstream is `https`).
    ///
    /// # Errors
    /// When roots are needed and none can be loaded.
    pub(crate) fn new(connect_timeout: Duration, with_tls_roots: bool) -> Result<Self, BoxError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        let mut roots = rustls::RootCertStore::empty();
        if with_tls_roots {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no usable root certificates found on this system (install ca-certificates)"
                        .into(),
                );
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let inner = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self { inner })
    }

    /// Opens a new connection to `uri`'s scheme and authority.
    ///
    /// # Errors
    /// [`UpstreamError::Connect`] when DNS, TCP or TLS fails.
    pub(crate) async fn connect<E>(&self, uri: &Uri) -> Result<Conn, UpstreamError<E>> {
        let mut connector = self.inner.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        Ok(Conn::new(TokioIo::new(io)))
    }
}

/// An open upstream connection and the bytes read from it but not used yet.
pub(crate) struct Conn {
    /// Boxed: a TLS stream is over a kilobyte, and a `Conn` moves in and out of the pool.
    pub(super) io: Box<Io>,
    pub(super) buf: BytesMut,
    read_size: usize,
}

impl Conn {
    /// Wraps a freshly opened connection.
    pub(crate) fn new(io: Io) -> Self {
        Self {
            io: Box::new(io),
            buf: BytesMut::new(),
            read_size: FIRST_READ,
        }
    }

    /// Whether an idle connection can carry a request: it must have nothing to read. An
    /// upstream that closed it (EOF) or wrote to it unasked (stray bytes) makes it unusable.
    /// A non-blocking read, at most one system call.
    pub(crate) fn is_idle_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads more bytes into the buffer. `Ok(0)`: the upstream closed its side.
    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
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
