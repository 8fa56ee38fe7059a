//! Real servers and clients for the integration tests: an upstream that records what it got,
//! the real proxy on port 0, and HTTP/1.1, HTTP/2 and raw-TCP clients. No mocks.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
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
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// A real HTTP/1.1 server on 127.0.0.1:0 that records each request's head (and body, for
/// recording upstreams).
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Reads each request body whole, records it, and answers with `respond(&seen)`.
    pub async fn recording<F>(respond: F) -> Self
    where
        F: Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    {
        let respond = Arc::new(respond);
        Self::streaming(move |req, seen: Arc<Mutex<Vec<Seen>>>| {
            let respond = respond.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let record = Seen {
                    method: parts.method.to_string(),
                    target: parts.uri.to_string(),
                    version: parts.version,
                    headers: parts.headers,
                    body,
                };
                let res = respond(&record);
                seen.lock().unwrap().push(record);
                res
            }
        })
        .await
    }

    /// Answers 200 with `{"ok":true}` and records everything.
    pub async fn echo_ok() -> Self {
        Self::recording(|_| json_response(StatusCode::OK, r#"{"ok":true}"#)).await
    }

    /// Hands each request, body unread, to `handler`; the head is recorded on arrival.
    pub async fn streaming<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>, Arc<Mutex<Vec<Seen>>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler = Arc::new(handler);
        let seen_for_task = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let handler = handler.clone();
                let seen = seen_for_task.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(handler(req, seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request recorded; panics if there were more or none.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected exactly one upstream request, got {seen:#?}");
        seen.into_iter().next().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records a request head for streaming upstreams.
pub fn record_head(req: &Request<Incoming>, seen: &Arc<Mutex<Vec<Seen>>>) {
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
        body: Bytes::new(),
    });
}

pub fn json_response(status: StatusCode, body: &'static str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap()
}

/// The real proxy, started through the library entry point on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts cookiegate with this TOML config (its `listen` is ignored: port 0 is used).
    pub async fn start(toml: &str) -> Self {
        let mut config = cookiegate::Config::from_toml_str(toml).expect("test config is valid");
        config.listen = "127.0.0.1:0".parse().unwrap();
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(cookiegate::AppState::new(config).unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cookiegate::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
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

    /// Signals shutdown and waits for `serve` to return (joined, so its panics fail the test).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task panicked");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
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
            panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body))
        })
    }
    /// Asserts a cookiegate error: this status, JSON `{"error": message}`.
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", String::from_utf8_lossy(&self.body));
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
