//! Real servers and clients for the integration tests: the one fake upstream
//! ([`TestUpstream`], in `support/upstream.rs`), the real proxy on port 0 ([`Gateway`]), and
//! HTTP/1.1, HTTP/2 and raw-TCP clients. No mocks. Whatever a test starts here, it stops: the
//! gateway by [`Gateway::stop`], the upstream's tasks are joined or at least aborted, and their
//! panics fail the test.

#![allow(dead_code)]

mod browser;
mod idp;
pub mod redis;
mod upstream;

pub use browser::*;
pub use idp::*;
pub use upstream::*;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The raw request target: path and query exactly as sent.
    pub target: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    /// The body, when the upstream read it (recording upstreams do).
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

pub fn json_response(status: StatusCode, body: &'static str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap()
}

/// The real proxy, started through the library entry point on 127.0.0.1:0. Every test stops
/// the gateway it started with [`Gateway::stop`]; dropping one that was not stopped shuts it
/// down and fails the test.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The listener's TLS when the config has `[tls]` (to reload its certificate).
    pub tls: Option<Arc<cookiegate::server::tls::ServerTls>>,
    /// The running state, which [`Gateway::reload`] replaces.
    pub live: cookiegate::server::Live,
    /// The metrics listener's address, when started with [`Gateway::start_with_metrics`].
    pub metrics_addr: Option<SocketAddr>,
    /// The metrics, when on.
    pub metrics: Option<Arc<cookiegate::telemetry::metrics::Metrics>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    metrics_stop: Option<oneshot::Sender<()>>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts cookiegate with this TOML config (its `listen` is ignored: port 0 is used).
    pub async fn start(toml: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = cookiegate::Config::from_toml_str(toml).expect("test config is valid");
        Self::start_on(listener, config)
    }

    /// Starts cookiegate on a listener bound beforehand (when the config must name the
    /// gateway's own address, as an OIDC `redirect_uri` does).
    pub fn start_on(listener: TcpListener, mut config: cookiegate::Config) -> Self {
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        // As the binary does: `[tls]` makes a TLS listener.
        let tls = config
            .tls
            .as_ref()
            .map(|tls| Arc::new(cookiegate::server::tls::ServerTls::new(&tls.loaded)));
        let listener = match &tls {
            Some(tls) => cookiegate::server::Listener::with_tls(listener, tls.clone()),
            None => listener.into(),
        };
        let lasting = Arc::new(match &tls {
            Some(tls) => cookiegate::proxy::Lasting::with_tls(tls.clone()),
            None => cookiegate::proxy::Lasting::default(),
        });
        let state = Arc::new(cookiegate::AppState::with_lasting(config, lasting).unwrap());
        let live = cookiegate::server::Live::new(state);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cookiegate::serve(listener, live.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            tls,
            live,
            metrics_addr: None,
            metrics: None,
            shutdown: Some(tx),
            task: Some(task),
            metrics_stop: None,
            metrics_task: None,
        }
    }

    /// Starts cookiegate with metrics on, their listener on another port 0.
    pub async fn start_with_metrics(toml: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = cookiegate::Config::from_toml_str(toml).expect("test config is valid");
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let metrics = Arc::new(cookiegate::telemetry::metrics::Metrics::new());
        let lasting = cookiegate::proxy::Lasting::default().with_metrics(metrics.clone());
        let state =
            Arc::new(cookiegate::AppState::with_lasting(config, Arc::new(lasting)).unwrap());
        let live = cookiegate::server::Live::new(state);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cookiegate::serve(listener, live.clone(), async move {
            let _ = rx.await;
        }));
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let (metrics_tx, metrics_rx) = oneshot::channel::<()>();
        let metrics_task = tokio::spawn(cookiegate::telemetry::metrics::serve_metrics(
            metrics_listener,
            metrics.clone(),
            async move {
                let _ = metrics_rx.await;
            },
        ));
        Self {
            addr,
            tls: None,
            live,
            metrics_addr: Some(metrics_addr),
            metrics: Some(metrics),
            shutdown: Some(tx),
            task: Some(task),
            metrics_stop: Some(metrics_tx),
            metrics_task: Some(metrics_task),
        }
    }

    /// The metrics listener's URL for `path`.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{}", self.metrics_addr.expect("metrics on"), path)
    }

    /// One route `/api/proxy` -> `upstream`, auth required, cookie `auth_token`.
    pub async fn single(upstream: &str) -> Self {
        Self::start(&format!(
            "[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n"
        ))
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Reloads with this TOML (its `listen` replaced by the gateway's address, as at start);
    /// returns whether it was applied.
    pub fn reload(&self, toml: &str, env: &cookiegate::config::Env) -> bool {
        let loaded = cookiegate::Config::from_toml_str_with(toml, env).map(|mut config| {
            config.listen = self.addr;
            config
        });
        self.live.reload(loaded)
    }

    /// Signals shutdown and waits (within [`GUARD`]) for `serve` to return: the proxy's task is
    /// joined, so its panics fail the test. Clients with a request or stream still open keep a
    /// graceful shutdown waiting: drop them first.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within("the gateway to stop", task)
                .await
                .expect("serve task panicked");
        }
        if let Some(tx) = self.metrics_stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.metrics_task.take() {
            within("the metrics listener to stop", task)
                .await
                .expect("metrics task panicked");
        }
    }
}

impl Drop for Gateway {
    /// Shuts a gateway nobody stopped down (signal, then abort, since a drop cannot wait) and
    /// fails the test, unless it is failing already: its task was never joined.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.metrics_task.take() {
            task.abort();
        }
        if let Some(task) = self.task.take() {
            task.abort();
            assert!(
                std::thread::panicking(),
                "a Gateway was dropped without `stop().await`: its task was never joined"
            );
        }
    }
}

/// A response read whole (for small answers).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// Asserts a cookiegate error: this status, JSON `{"error": message}`.
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.json(), serde_json::json!({ "error": message }));
    }
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    TestBody,
>;

/// An HTTP/1.1 keep-alive client.
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 cleartext (prior knowledge) client.
pub fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request and reads the whole answer.
pub async fn send(client: &Client, req: Request<TestBody>) -> Answer {
    let res = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response in time")
        .expect("request failed");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A request builder with the session cookie already set when `token` is given.
pub fn request(method: &str, url: &str, token: Option<&str>) -> http::request::Builder {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("cookie", format!("theme=dark; auth_token={token}"));
    }
    builder
}

/// GET with an optional session token.
pub async fn get(url: &str, token: Option<&str>) -> Answer {
    send(&client(), request("GET", url, token).body(empty()).unwrap()).await
}

/// Writes raw bytes to `addr` and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    out
}

/// Every byte value 0..=255, `repeat` times.
pub fn all_bytes(repeat: usize) -> Vec<u8> {
    (0..repeat).flat_map(|_| 0u8..=255).collect()
}

/// One HTTP/1.1 response parsed from raw bytes, and how many bytes it took; `None` while
/// incomplete. Bodies are framed by `Content-Length` or chunked encoding; a response with
/// neither (and not 1xx/204/304) runs to the end of `buf`, so it is only complete at EOF.
#[expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helper: a failure fails the test"
)]
pub fn parse_answer(buf: &[u8], at_eof: bool) -> Option<(Answer, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end - 4]).expect("response head is UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line has a ':'");
        headers.append(
            http::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let status = StatusCode::from_u16(code).unwrap();
    let rest = &buf[head_end..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let (body, used) = if status.is_informational() || code == 204 || code == 304 {
        (Vec::new(), 0)
    } else if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = std::str::from_utf8(&rest[at..line_end]).unwrap();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            at = line_end + 2;
            if size == 0 {
                // No trailers from our servers: the last chunk is followed by an empty line.
                if rest.len() < at + 2 {
                    return None;
                }
                at += 2;
                break;
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        (body, at)
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.to_str().unwrap().parse().unwrap();
        if rest.len() < len {
            return None;
        }
        (rest[..len].to_vec(), len)
    } else if at_eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    let answer = Answer {
        status,
        headers,
        body: Bytes::from(body),
    };
    Some((answer, head_end + used))
}

/// Reads one response from a raw stream; `buf` keeps bytes that belong to the next one
/// (pipelining). Panics if none arrives within 20 s.
pub async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    let read = async {
        let mut eof = false;
        loop {
            if let Some((answer, used)) = parse_answer(buf, eof) {
                buf.drain(..used);
                return answer;
            }
            assert!(
                !eof,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(buf)
            );
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            eof = n == 0;
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("response in time")
}

/// Writes raw request bytes on a new connection and reads the first response.
pub async fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_answer(&mut stream, &mut Vec::new()).await
}

/// An upstream URL where nothing listens: connecting is refused at once.
pub async fn dead_upstream_url() -> String {
    // Port 1 (tcpmux) is outside the ephemeral range, so no test listener can ever take it,
    // unlike a port bound and released here, which a parallel test may be handed next.
    "http://127.0.0.1:1".to_string()
}

/// How long a test waits for something that should happen promptly. A guard against hangs,
/// never a timing assertion: a buffering or stuck proxy fails the test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than [`GUARD`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A value that a `Fn` upstream handler hands out to the one request it expects (a oneshot
/// end, say). Taking it twice panics.
pub struct TakeOnce<T>(Arc<Mutex<Option<T>>>);

impl<T> TakeOnce<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(Mutex::new(Some(value))))
    }
    pub fn take(&self) -> T {
        let value = match self.0.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        value.unwrap_or_else(|| panic!("handler value taken twice"))
    }
}

impl<T> Clone for TakeOnce<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// A body whose frames go out as the test sends them; `Sender::abort` ends it in an error.
/// Sends fail once the body has been dropped (its connection closed).
pub fn channel_body(buffer: usize) -> (http_body_util::channel::Sender<Bytes, BoxError>, TestBody) {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(buffer);
    (tx, body.boxed())
}

/// Fires its oneshot when dropped: tells a test that the future owning it (an upstream
/// handler, say) was dropped, e.g. because its connection closed.
pub struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A [`DropSignal`] and the receiver that resolves when it is dropped.
pub fn drop_signal() -> (DropSignal, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    (DropSignal(Some(tx)), rx)
}

/// The next data frame of `body` (trailers skipped): `None` at a clean end.
pub async fn next_data<B>(body: &mut B) -> Option<Result<Bytes, B::Error>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(err) => return Some(Err(err)),
        }
    }
}

/// Reads a response body to its end: the data, and whether it ended in an error (a broken
/// transfer) rather than cleanly.
pub async fn read_to_end_or_break(body: &mut Incoming) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return (got, true),
            None => return (got, false),
        }
    }
}

/// Asserts a 200, showing the body otherwise.
pub fn assert_ok(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        200,
        "{what}: {:?}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// Aborts a helper task and joins it: a panic it had before fails the test.
pub async fn cancel<T>(task: JoinHandle<T>) {
    task.abort();
    if let Err(err) = task.await {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

/// A body of these frames, all ready at once but of no declared length (so HTTP/1.1 sends it
/// chunked): a streamed answer without a task to feed it.
pub fn frames_body(frames: impl IntoIterator<Item = Bytes>) -> TestBody {
    Frames(frames.into_iter().collect()).boxed()
}

struct Frames(VecDeque<Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|data| Ok(Frame::data(data))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A fresh empty directory under the system's temp dir, removed (with everything in it) when
/// dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `cookiegate-it-{name}-{pid}`, emptied if a killed run left it behind.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cookiegate-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
