//! The one fake upstream of the integration tests: [`TestUpstream`], a real server on
//! `127.0.0.1:0` in one of two shapes.
//!
//! - HTTP: a hyper HTTP/1.1 server (optionally behind TLS) that records every request it gets as
//!   a [`Seen`]: [`UpstreamBuilder::respond`] reads each body whole and answers from the record,
//!   [`UpstreamBuilder::handle`] hands the request over with its body unread.
//! - Raw: a scripted TCP server that runs a script on each accepted connection, which reads
//!   request bytes and writes exact response bytes through a [`Wire`] (malformed upstreams);
//!   what it reads is recorded as [`Received`].
//!
//! The upstream owns every task it runs: its accept loop, one task per connection, and whatever
//! a handler starts with [`Tasks::spawn`]. A panic in any of them is caught, and raised again in
//! the test: by [`TestUpstream::stop`] and [`TestUpstream::finish`] (which join the tasks), by
//! the record accessors, and at the latest when the upstream is dropped.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_rustls::TlsAcceptor;

use super::{GUARD, Seen, TestBody, json_response, within};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Panic = Box<dyn Any + Send>;

/// A lock that ignores poisoning: a panic is reported through [`Tasks`], not through the
/// records it left half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Owned tasks
// ---------------------------------------------------------------------------------------------

/// The tasks of one [`TestUpstream`]. A handler gets a clone to start helper tasks (a body
/// feeder, say) that the upstream then owns like its own.
#[derive(Clone, Default)]
pub struct Tasks(Arc<TaskSet>);

#[derive(Default)]
struct TaskSet {
    running: Mutex<Vec<JoinHandle<()>>>,
    /// Panics caught so far, first first.
    panics: Mutex<Vec<Panic>>,
}

impl Tasks {
    /// Runs `task` as a task of this upstream: if it panics, the test fails.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let handle = tokio::spawn(CatchPanic {
            task: Box::pin(task),
            tasks: self.clone(),
        });
        let abort = handle.abort_handle();
        let mut running = lock(&self.0.running);
        running.retain(|t| !t.is_finished());
        running.push(handle);
        abort
    }

    /// Raises the first panic caught so far, if any, in the caller.
    fn raise(&self) {
        let first = {
            let mut panics = lock(&self.0.panics);
            let first = (!panics.is_empty()).then(|| panics.remove(0));
            panics.clear();
            first
        };
        if let Some(panic) = first {
            std::panic::resume_unwind(panic);
        }
    }

    fn abort_all(&self) {
        for task in lock(&self.0.running).iter() {
            task.abort();
        }
    }

    /// Waits until every task has ended, those started meanwhile too.
    async fn join_all(&self) {
        loop {
            let batch = std::mem::take(&mut *lock(&self.0.running));
            if batch.is_empty() {
                return;
            }
            for task in batch {
                // A panic was caught and recorded by `CatchPanic`; an abort is not a failure.
                let _ = task.await;
            }
        }
    }
}

/// A task that records its panic in its [`Tasks`] instead of losing it in a detached handle.
struct CatchPanic {
    task: BoxFuture<()>,
    tasks: Tasks,
}

impl Future for CatchPanic {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.task.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                lock(&this.tasks.0.panics).push(panic);
                Poll::Ready(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------------

/// A fake upstream on `127.0.0.1:0`; see the module docs. Build one with
/// [`TestUpstream::builder`].
pub struct TestUpstream {
    pub addr: SocketAddr,
    records: Arc<Records>,
    tasks: Tasks,
    accept: AbortHandle,
}

#[derive(Default)]
struct Records {
    /// HTTP shapes: the requests, in arrival order.
    seen: Mutex<Vec<Seen>>,
    /// Raw shape: the requests scripts read, in order.
    received: Mutex<Vec<Received>>,
    accepted: AtomicUsize,
}

/// How a [`TestUpstream`] answers; see its builder methods.
#[derive(Default)]
pub struct UpstreamBuilder {
    shape: Option<Shape>,
    tls: Option<TlsAcceptor>,
}

type Respond = Arc<dyn Fn(&Seen) -> Response<TestBody> + Send + Sync>;
type Handler = Arc<dyn Fn(Request<Incoming>, Tasks) -> BoxFuture<Response<TestBody>> + Send + Sync>;
type Script = Arc<dyn Fn(Wire) -> BoxFuture<()> + Send + Sync>;

#[derive(Clone)]
enum Shape {
    Respond(Respond),
    Handle(Handler),
    Raw(Script),
}

impl UpstreamBuilder {
    /// HTTP: reads each request body whole, records the request, and answers with
    /// `respond(&seen)`.
    pub fn respond<F>(self, respond: F) -> Self
    where
        F: Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    {
        self.shape(Shape::Respond(Arc::new(respond)))
    }

    /// HTTP: records each request head on arrival (the body is not read, [`Seen::body`] stays
    /// empty) and answers with `handler(request, tasks)`; `tasks` starts tasks the upstream
    /// owns.
    pub fn handle<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(Request<Incoming>, Tasks) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        self.shape(Shape::Handle(Arc::new(move |req, tasks| {
            Box::pin(handler(req, tasks))
        })))
    }

    /// Raw TCP: runs `script` on each accepted connection; the connection closes when the
    /// script drops its [`Wire`].
    pub fn raw<F, Fut>(self, script: F) -> Self
    where
        F: Fn(Wire) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shape(Shape::Raw(Arc::new(move |wire| Box::pin(script(wire)))))
    }

    /// Serves the HTTP shapes over TLS with this configuration. (A raw script that wants TLS
    /// does the handshake itself: it gets the TCP stream.)
    pub fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.tls = Some(TlsAcceptor::from(Arc::new(config)));
        self
    }

    fn shape(mut self, shape: Shape) -> Self {
        assert!(self.shape.is_none(), "a test upstream has one shape");
        self.shape = Some(shape);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(self) -> TestUpstream {
        let shape = self
            .shape
            .expect("TestUpstream::builder() needs .respond, .handle or .raw");
        assert!(
            self.tls.is_none() || !matches!(shape, Shape::Raw(_)),
            "tls is for the HTTP shapes"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Arc::<Records>::default();
        let tasks = Tasks::default();
        let accept = tasks.spawn(accept_loop(
            listener,
            shape,
            self.tls,
            records.clone(),
            tasks.clone(),
        ));
        TestUpstream {
            addr,
            records,
            tasks,
            accept,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shape: Shape,
    tls: Option<TlsAcceptor>,
    records: Arc<Records>,
    tasks: Tasks,
) {
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .expect("the test upstream accepts a connection");
        let conn = records.accepted.fetch_add(1, Ordering::SeqCst);
        let connection: BoxFuture<()> = match (&shape, &tls) {
            (Shape::Raw(script), _) => script(Wire {
                stream,
                buf: Vec::new(),
                conn,
                records: records.clone(),
            }),
            (_, Some(acceptor)) => {
                let (acceptor, shape) = (acceptor.clone(), shape.clone());
                let (records, tasks) = (records.clone(), tasks.clone());
                Box::pin(async move {
                    // A client that gives up on the handshake is not the upstream's failure.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_http(stream, shape, records, tasks).await;
                    }
                })
            }
            (_, None) => Box::pin(serve_http(
                stream,
                shape.clone(),
                records.clone(),
                tasks.clone(),
            )),
        };
        tasks.spawn(connection);
    }
}

async fn serve_http<I>(io: I, shape: Shape, records: Arc<Records>, tasks: Tasks)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let (shape, records, tasks) = (shape.clone(), records.clone(), tasks.clone());
        async move { Ok::<_, Infallible>(answer(&shape, req, &records, tasks).await) }
    });
    // The connection's end (a client that went away included) is not the upstream's failure.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn answer(
    shape: &Shape,
    req: Request<Incoming>,
    records: &Records,
    tasks: Tasks,
) -> Response<TestBody> {
    match shape {
        Shape::Respond(respond) => {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                version: parts.version,
                headers: parts.headers,
                body,
            };
            lock(&records.seen).push(seen.clone());
            respond(&seen)
        }
        Shape::Handle(handler) => {
            lock(&records.seen).push(Seen {
                method: req.method().to_string(),
                target: req.uri().to_string(),
                version: req.version(),
                headers: req.headers().clone(),
                body: Bytes::new(),
            });
            handler(req, tasks).await
        }
        Shape::Raw(_) => unreachable!("raw connections are not served by hyper"),
    }
}

impl TestUpstream {
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// Answers 200 with `{"ok":true}` and records everything.
    pub async fn echo_ok() -> Self {
        Self::builder()
            .respond(|_| json_response(http::StatusCode::OK, r#"{"ok":true}"#))
            .start()
            .await
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// HTTP shapes: every request recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.tasks.raise();
        lock(&self.records.seen).clone()
    }

    /// HTTP shapes: the one request recorded; panics if there were more or none.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one upstream request, got {seen:#?}"
        );
        seen.into_iter().next().unwrap()
    }

    /// Raw shape: every request a script read so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.tasks.raise();
        lock(&self.records.received).clone()
    }

    /// Raw shape: the one request read so far; panics if there were more or none.
    pub fn only_received(&self) -> Received {
        let received = self.received();
        assert_eq!(received.len(), 1, "{received:#?}");
        received.into_iter().next().unwrap()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.tasks.raise();
        self.records.accepted.load(Ordering::SeqCst)
    }

    /// Stops the upstream: aborts whatever still runs, joins every task and raises the first
    /// panic any of them had.
    pub async fn stop(self) {
        self.tasks.abort_all();
        self.tasks.join_all().await;
        self.tasks.raise();
    }

    /// Stops accepting, then waits (within [`GUARD`]) for every connection and helper task to
    /// end by itself, and raises the first panic any of them had: for scripts whose end the test
    /// depends on.
    pub async fn finish(self) {
        self.accept.abort();
        within("the upstream's connections to end", self.tasks.join_all()).await;
        self.tasks.raise();
    }
}

impl Drop for TestUpstream {
    /// Aborts every task and, unless the test is failing already, raises a panic one of them
    /// had: an upstream nobody stopped still cannot lose one.
    fn drop(&mut self) {
        self.tasks.abort_all();
        if !std::thread::panicking() {
            self.tasks.raise();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw shape
// ---------------------------------------------------------------------------------------------

/// A request as a raw script read it off the wire.
#[derive(Debug, Clone)]
pub struct Received {
    /// The accepted connection it came on (0 for the first).
    pub conn: usize,
    /// The head exactly as sent, without its final blank line.
    pub head: String,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
    /// What was wrong with the body's framing, if anything.
    pub malformed: Option<String>,
}

impl Received {
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or_default()
    }

    /// The values of every field named `name` (case-insensitive), in order.
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| {
                let (field, value) = line.split_once(':')?;
                field
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
            .collect()
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One accepted connection of a raw [`TestUpstream`]: reads requests (recording them) and
/// writes bytes. Dropping it closes the connection.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Which accepted connection this is (0 for the first).
    pub conn: usize,
    records: Arc<Records>,
}

impl Wire {
    /// Reads more bytes; false at EOF or on an error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The bytes up to `delimiter`, which is consumed too; `None` at EOF.
    pub async fn read_until(&mut self, delimiter: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.buf, delimiter) {
                let line = self.buf[..at].to_vec();
                self.buf.drain(..at + delimiter.len());
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next `len` bytes; `None` at EOF.
    pub async fn read_exact(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buf.len() < len {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..len).collect())
    }

    fn record(&self, received: &Received) {
        lock(&self.records.received).push(received.clone());
    }

    /// Reads the next request head and records it, body unread. `None` at EOF.
    pub async fn head(&mut self) -> Option<Received> {
        let head = self.read_until(b"\r\n\r\n").await?;
        let received = Received {
            conn: self.conn,
            head: String::from_utf8_lossy(&head).into_owned(),
            body: Vec::new(),
            malformed: None,
        };
        self.record(&received);
        Some(received)
    }

    /// Reads a whole request (its body by its framing) and records it. `None` at EOF, also
    /// in the middle of a request (which is then not recorded).
    pub async fn request(&mut self) -> Option<Received> {
        self.request_with(|_| {}).await
    }

    /// [`Wire::request`], telling `on_data` about each piece of body data as it is read (each
    /// chunk of a chunked body).
    pub async fn request_with(&mut self, mut on_data: impl FnMut(&[u8])) -> Option<Received> {
        let head = self.read_until(b"\r\n\r\n").await?;
        let mut received = Received {
            conn: self.conn,
            head: String::from_utf8_lossy(&head).into_owned(),
            body: Vec::new(),
            malformed: None,
        };
        let codings = received.fields("transfer-encoding");
        let lengths = received.fields("content-length");
        if !codings.is_empty() {
            if codings == ["chunked"] {
                loop {
                    match self.read_chunk().await? {
                        Ok(Some(data)) => {
                            on_data(&data);
                            received.body.extend_from_slice(&data);
                        }
                        Ok(None) => break,
                        Err(why) => {
                            received.malformed = Some(why);
                            break;
                        }
                    }
                }
            } else {
                received.malformed = Some(format!("transfer-encoding {codings:?}"));
            }
        } else if let Some(length) = lengths.first() {
            match length.parse::<usize>() {
                Ok(len) => {
                    received.body = self.read_exact(len).await?;
                    on_data(&received.body);
                }
                Err(_) => received.malformed = Some(format!("content-length {length:?}")),
            }
        }
        self.record(&received);
        Some(received)
    }

    /// One chunk of a chunked body, read strictly (bare hex sizes, CRLF after each chunk, no
    /// trailers); `Ok(None)` after the last chunk and the empty trailer section. `None` at EOF.
    pub async fn read_chunk(&mut self) -> Option<Result<Option<Vec<u8>>, String>> {
        let line = self.read_until(b"\r\n").await?;
        if line.is_empty() || !line.iter().all(u8::is_ascii_hexdigit) || line.len() > 16 {
            return Some(Err(format!(
                "bad chunk size line {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line).unwrap(), 16).unwrap();
        if size == 0 {
            let end = self.read_until(b"\r\n").await?;
            return Some(if end.is_empty() {
                Ok(None)
            } else {
                Err("trailers after the last chunk".into())
            });
        }
        let data = self.read_exact(size + 2).await?;
        if &data[size..] != b"\r\n" {
            return Some(Err("no CRLF after chunk data".into()));
        }
        Some(Ok(Some(data[..size].to_vec())))
    }

    /// Writes `bytes` (errors ignored: the other side may have gone).
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// Writes `pieces` one at a time, each once cookiegate has read the one before, so they
    /// arrive in separate reads.
    ///
    /// The test's runtime runs on one thread, and a yielding task there is resumed only after
    /// the runtime has polled its sockets: by then cookiegate's task has been woken for the
    /// piece just written and runs (and reads it) before this one writes the next. (Pieces
    /// that do arrive together still make a valid answer; the test only exercises less.)
    pub async fn send_in_pieces(&mut self, pieces: &[&[u8]]) {
        for piece in pieces {
            self.send(piece).await;
            tokio::task::yield_now().await;
        }
    }

    /// Reads until the other side closes the connection; what arrived meanwhile, or `None`
    /// if it was still open after [`GUARD`].
    pub async fn until_closed(&mut self) -> Option<Vec<u8>> {
        let wait = async { while self.fill().await {} };
        tokio::time::timeout(GUARD, wait).await.ok()?;
        Some(std::mem::take(&mut self.buf))
    }

    /// The TCP stream, and the bytes already read from it but not consumed.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}
