//! The example backend API behind `examples/nextjs/`: a small FastAPI-style service, in Rust, that
//! only understands `Authorization: Bearer <token>` and never a cookie. A workspace package of its
//! own (`nextjs-backend`); it does not use the cookiegate library.
//!
//! ```sh
//! cargo run --release -p nextjs-backend                 # http://127.0.0.1:8000
//! cargo run --release -p nextjs-backend -- --listen 127.0.0.1:8001 --auth-log /tmp/auth.log
//! ```
//!
//! `--listen` falls back to `$BACKEND_LISTEN`, then `127.0.0.1:$PORT`, then `127.0.0.1:8000`.
//!
//! | method | path | auth | answer |
//! | --- | --- | --- | --- |
//! | `GET` | `/healthz` | none | `{"status":"ok"}` |
//! | `POST` | `/auth/token` | none | `{"username","password"}` -> `{"access_token","token_type","expires_in"}` or 401 |
//! | `POST` | `/auth/revoke` | bearer | 204; the token stops working |
//! | `GET` | `/api/me` | bearer | `{"user"}` |
//! | `GET`, `POST` | `/api/tasks` | bearer | the caller's tasks; `{"title"}` -> 201 and the task |
//! | `GET`, `PATCH`, `DELETE` | `/api/tasks/{id}` | bearer | one task; `{"title"?, "done"?}`; 204 on delete |
//! | `POST` | `/api/files` | bearer | `multipart/form-data` with a `file` part (at most 10 MiB) -> 201 `{"id","name","size","content_type"}` |
//! | `GET` | `/api/files/{id}` | bearer | the bytes, with `Content-Type`, `Content-Disposition` and `ETag` |
//! | `POST` | `/chatkit` | bearer | `{"message"}` -> `text/event-stream`, one `token` event every 100 ms, then `done` |
//!
//! Errors are FastAPI's shape, `{"detail": "..."}`: 401 without a valid bearer, 404, 405, 413, 422.
//!
//! Tokens are 256 random bits from the operating system's CSPRNG (`getrandom`), issued by
//! `POST /auth/token` to the Next.js login handler (server to server), kept in memory with an
//! expiry, and revoked on logout: a real opaque-token scheme, minus persistence. The users are
//! fixed demo accounts (`ada`/`lovelace`, `grace`/`hopper`, `alan`/`turing`); passwords are
//! compared in constant time (`subtle`).
//!
//! Request bodies are read as they arrive and bounded: JSON bodies to 64 KiB, uploads (parsed by
//! `multer` while they stream in) to 10 MiB.
//!
//! Each request is logged to stderr with its bearer shortened to 6 characters. `--auth-log FILE`
//! (for the end-to-end test only) also appends the **full** `Authorization` value of every request
//! to `FILE`, so the test can prove the backend received exactly the token the browser's httpOnly
//! cookie holds. Never turn that on outside a test.

#![expect(
    clippy::print_stderr,
    reason = "an example binary: its request log goes to stderr"
)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{CommandFactory as _, Parser};
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, ETAG, HeaderValue, LOCATION,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// JSON bodies are read whole, so they are bounded.
const MAX_JSON: usize = 64 * 1024;
/// A multipart upload, whole (the file and its envelope).
const MAX_UPLOAD: u64 = 10 * 1024 * 1024;
/// All stored files together; older files are dropped to make room.
const MAX_STORED: usize = 64 * 1024 * 1024;
/// How long an issued token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Pause between two tokens of the assistant's streamed reply.
const TOKEN_PAUSE: Duration = Duration::from_millis(100);
/// Longest task title kept, in characters.
const MAX_TITLE: usize = 200;
/// The demo accounts: user name and password.
const USERS: &[(&str, &str)] = &[("ada", "lovelace"), ("grace", "hopper"), ("alan", "turing")];

/// Every answer: a fixed body, or a stream of SSE events fed by a producer task.
type ApiBody = Either<Full<Bytes>, Channel<Bytes>>;

/// The example backend API behind cookiegate's Next.js example: it only understands
/// `Authorization: Bearer <token>`, never a cookie.
#[derive(Parser)]
#[command(name = "nextjs-backend")]
struct Options {
    /// Address to listen on [default: 127.0.0.1:$PORT if PORT is set, else 127.0.0.1:8000]
    #[arg(long, value_name = "ADDR", env = "BACKEND_LISTEN")]
    listen: Option<SocketAddr>,
    /// Also append the full `Authorization` value of every request to FILE (for the end-to-end
    /// test only: it writes whole tokens)
    #[arg(long, value_name = "FILE")]
    auth_log: Option<PathBuf>,
}

impl Options {
    /// `--listen`, else `$BACKEND_LISTEN`, else `127.0.0.1:$PORT`, else `127.0.0.1:8000`.
    fn listen(&self) -> Result<SocketAddr, String> {
        if let Some(addr) = self.listen {
            return Ok(addr);
        }
        let port = match std::env::var("PORT") {
            Ok(port) => port
                .parse()
                .map_err(|_| format!("PORT=`{port}` is not a port number"))?,
            Err(_) => 8000,
        };
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let listen = match options.listen() {
        Ok(listen) => listen,
        Err(message) => Options::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit(),
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("nextjs-backend: cannot listen on {listen}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("nextjs-backend: listening on http://{listen}");
    let state = Arc::new(State {
        store: Mutex::default(),
        auth_log: options.auth_log,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        eprintln!("nextjs-backend: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    // A client that goes away mid-stream ends its connection with an error;
                    // nothing to do about it here.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Dropping the set aborts every connection; the SSE producers stop at their next event, whose
    // body is gone (and with the runtime, when `main` returns).
    drop(connections);
    std::process::ExitCode::SUCCESS
}

/// Shared by every connection.
struct State {
    store: Mutex<Store>,
    auth_log: Option<PathBuf>,
}

impl State {
    /// The store, even if a panicking request poisoned the lock: no update panics halfway.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the full `Authorization` value to the test's auth log, when one is configured.
    fn log_authorization(&self, method: &Method, path: &str, authorization: Option<&str>) {
        let Some(file) = &self.auth_log else { return };
        let line = format!("{method} {path} {}\n", authorization.unwrap_or("-"));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(err) = written {
            eprintln!("nextjs-backend: cannot write {}: {err}", file.display());
        }
    }
}

#[derive(Default)]
struct Store {
    /// Token -> session.
    sessions: HashMap<String, Session>,
    /// Task id -> task, in creation order.
    tasks: BTreeMap<u64, Task>,
    /// File id -> file, in upload order.
    files: BTreeMap<u64, StoredFile>,
    /// Last id handed out (tasks and files share the counter).
    last_id: u64,
}

struct Session {
    user: String,
    expires: Instant,
}

struct Task {
    owner: String,
    title: String,
    done: bool,
}

impl Task {
    fn to_json(&self, id: u64) -> Value {
        json!({ "id": id, "title": self.title, "done": self.done })
    }
}

struct StoredFile {
    owner: String,
    name: String,
    content_type: String,
    bytes: Bytes,
}

impl Store {
    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// The user of a live session, forgetting it if it has expired.
    fn user_of(&mut self, token: &str) -> Option<String> {
        let session = self.sessions.get(token)?;
        if session.expires > Instant::now() {
            return Some(session.user.clone());
        }
        self.sessions.remove(token);
        None
    }
}

/// Handles one request and logs it, with the bearer shortened.
async fn handle(state: &State, req: Request<Incoming>) -> Response<ApiBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.log_authorization(&method, &path, authorization.as_deref());
    let res = route(state, req).await;
    eprintln!(
        "nextjs-backend: {method} {path} -> {} (authorization: {})",
        res.status().as_u16(),
        authorization.as_deref().map_or("none".into(), shorten)
    );
    res
}

/// `Bearer 3fa9c1…`: enough to tell sessions apart in a log, too little to use.
fn shorten(authorization: &str) -> String {
    match authorization.strip_prefix("Bearer ") {
        Some(token) => format!("Bearer {}…", token.chars().take(6).collect::<String>()),
        None => "(not a bearer)".into(),
    }
}

/// Dispatches one request by path and method.
async fn route(state: &State, req: Request<Incoming>) -> Response<ApiBody> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let allowed: &[Method] = match segments.as_slice() {
        ["healthz"] => &[Method::GET],
        ["auth", "token" | "revoke"] | ["chatkit"] | ["api", "files"] => &[Method::POST],
        ["api", "me"] | ["api", "files", _] => &[Method::GET],
        ["api", "tasks"] => &[Method::GET, Method::POST],
        ["api", "tasks", _] => &[Method::GET, Method::PATCH, Method::DELETE],
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if !allowed.contains(&method) {
        return detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    match segments.as_slice() {
        ["healthz"] => return json_response(StatusCode::OK, &json!({ "status": "ok" })),
        ["auth", "token"] => return issue_token(state, req).await,
        _ => {}
    }
    let Some((token, user)) = bearer(state, req.headers()) else {
        return detail(StatusCode::UNAUTHORIZED, "Not authenticated");
    };
    match (segments.as_slice(), method) {
        (["auth", "revoke"], _) => {
            state.lock().sessions.remove(&token);
            empty(StatusCode::NO_CONTENT)
        }
        (["api", "me"], _) => json_response(StatusCode::OK, &json!({ "user": user })),
        (["api", "tasks"], Method::GET) => list_tasks(state, &user),
        (["api", "tasks"], _) => create_task(state, &user, req).await,
        (["api", "tasks", id], method) => match id.parse::<u64>() {
            Ok(id) => task(state, &user, id, method, req).await,
            Err(_) => detail(StatusCode::NOT_FOUND, "Task not found"),
        },
        (["api", "files"], _) => upload(state, &user, req).await,
        (["api", "files", id], _) => match id.parse::<u64>() {
            Ok(id) => download(state, &user, id),
            Err(_) => detail(StatusCode::NOT_FOUND, "File not found"),
        },
        _ => chatkit(state, &user, req).await,
    }
}

/// The token and user of a valid `Authorization: Bearer <token>`.
fn bearer(state: &State, headers: &HeaderMap) -> Option<(String, String)> {
    let token = headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let user = state.lock().user_of(token)?;
    Some((token.to_owned(), user))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// `POST /auth/token`: the OAuth2 password grant, JSON flavoured. The Next.js login handler calls
/// it server to server; the browser never sees the answer, only the cookie made from it.
async fn issue_token(state: &State, req: Request<Incoming>) -> Response<ApiBody> {
    let credentials: Credentials = match read_json(req).await {
        Ok(value) => value,
        Err(res) => return res,
    };
    let known = USERS.iter().any(|(user, password)| {
        *user == credentials.username
            && bool::from(password.as_bytes().ct_eq(credentials.password.as_bytes()))
    });
    if !known {
        return detail(StatusCode::UNAUTHORIZED, "Incorrect username or password");
    }
    let token = match random_token() {
        Ok(token) => token,
        Err(err) => {
            eprintln!("nextjs-backend: no random bytes from the OS: {err}");
            return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    {
        let mut store = state.lock();
        let now = Instant::now();
        store.sessions.retain(|_, s| s.expires > now);
        store.sessions.insert(
            token.clone(),
            Session {
                user: credentials.username,
                expires: now + TOKEN_LIFETIME,
            },
        );
    }
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
        }),
    )
}

/// 256 bits from the OS's CSPRNG, as 64 lowercase hex digits (cookie- and header-safe).
fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut token = String::with_capacity(64);
    for b in bytes {
        let _ = write!(token, "{b:02x}");
    }
    Ok(token)
}

fn list_tasks(state: &State, user: &str) -> Response<ApiBody> {
    let tasks: Vec<Value> = state
        .lock()
        .tasks
        .iter()
        .filter(|(_, t)| t.owner == user)
        .map(|(id, t)| t.to_json(*id))
        .collect();
    json_response(StatusCode::OK, &Value::Array(tasks))
}

#[derive(Deserialize)]
struct NewTask {
    title: String,
}

/// `POST /api/tasks`: 201, the task, and its `Location`.
async fn create_task(state: &State, user: &str, req: Request<Incoming>) -> Response<ApiBody> {
    let new: NewTask = match read_json(req).await {
        Ok(value) => value,
        Err(res) => return res,
    };
    let Some(title) = clean_title(&new.title) else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "title must not be empty");
    };
    let (id, value) = {
        let mut store = state.lock();
        let id = store.next_id();
        let task = Task {
            owner: user.to_owned(),
            title,
            done: false,
        };
        let value = task.to_json(id);
        store.tasks.insert(id, task);
        (id, value)
    };
    let mut res = json_response(StatusCode::CREATED, &value);
    if let Ok(location) = HeaderValue::try_from(format!("/api/tasks/{id}")) {
        res.headers_mut().insert(LOCATION, location);
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskPatch {
    title: Option<String>,
    done: Option<bool>,
}

/// `GET`, `PATCH` or `DELETE /api/tasks/{id}`, for the task's owner only (others get 404).
async fn task(
    state: &State,
    user: &str,
    id: u64,
    method: Method,
    req: Request<Incoming>,
) -> Response<ApiBody> {
    let patch: Option<TaskPatch> = if method == Method::PATCH {
        match read_json(req).await {
            Ok(patch) => Some(patch),
            Err(res) => return res,
        }
    } else {
        None
    };
    let title = match patch.as_ref().and_then(|p| p.title.as_deref()) {
        Some(raw) => match clean_title(raw) {
            Some(title) => Some(title),
            None => return detail(StatusCode::UNPROCESSABLE_ENTITY, "title must not be empty"),
        },
        None => None,
    };
    let mut store = state.lock();
    let Some(task) = store.tasks.get_mut(&id).filter(|t| t.owner == user) else {
        return detail(StatusCode::NOT_FOUND, "Task not found");
    };
    match method {
        Method::DELETE => {
            store.tasks.remove(&id);
            empty(StatusCode::NO_CONTENT)
        }
        _ => {
            if let Some(title) = title {
                task.title = title;
            }
            if let Some(done) = patch.and_then(|p| p.done) {
                task.done = done;
            }
            json_response(StatusCode::OK, &task.to_json(id))
        }
    }
}

/// A title trimmed and cut to [`MAX_TITLE`] characters; `None` when blank.
fn clean_title(raw: &str) -> Option<String> {
    let title = raw.trim();
    (!title.is_empty()).then(|| title.chars().take(MAX_TITLE).collect())
}

/// `POST /api/files`: stores the `file` part of a `multipart/form-data` body.
async fn upload(state: &State, user: &str, req: Request<Incoming>) -> Response<ApiBody> {
    let Some(boundary) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
    else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected multipart/form-data with a boundary",
        );
    };
    let part = match file_part(req.into_body(), boundary, MAX_UPLOAD).await {
        Ok(Some(part)) => part,
        Ok(None) => return detail(StatusCode::UNPROCESSABLE_ENTITY, "no `file` part"),
        Err(multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. }) => {
            return detail(StatusCode::PAYLOAD_TOO_LARGE, "upload larger than 10 MiB");
        }
        Err(multer::Error::StreamReadFailed(_)) => {
            return detail(StatusCode::BAD_REQUEST, "cannot read body");
        }
        Err(err) => {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("malformed multipart body: {err}"),
            );
        }
    };
    let file = StoredFile {
        owner: user.to_owned(),
        name: safe_file_name(part.filename.as_deref().unwrap_or("upload.bin")),
        content_type: part
            .content_type
            .unwrap_or_else(|| "application/octet-stream".into()),
        bytes: part.data,
    };
    let mut answer = json!({
        "name": file.name,
        "size": file.bytes.len(),
        "content_type": file.content_type,
    });
    let id = {
        let mut store = state.lock();
        let id = store.next_id();
        store.files.insert(id, file);
        // Oldest first, until everything fits again.
        while store.files.values().map(|f| f.bytes.len()).sum::<usize>() > MAX_STORED {
            store.files.pop_first();
        }
        id
    };
    answer["id"] = json!(id);
    json_response(StatusCode::CREATED, &answer)
}

/// The `file` part of an upload.
#[derive(Debug)]
struct FilePart {
    filename: Option<String>,
    /// The part's own `Content-Type`, as sent.
    content_type: Option<String>,
    /// Exactly the bytes sent: binary is never decoded.
    data: Bytes,
}

/// The first part named `file` of a multipart body (RFC 7578), parsed from `body` as it arrives,
/// `None` without one. The body is read to its end (later parts are skipped, not kept) and at
/// most `limit` bytes of it, envelope included: beyond, `StreamSizeExceeded`.
async fn file_part<B>(body: B, boundary: String, limit: u64) -> multer::Result<Option<FilePart>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut found = None;
    while let Some(field) = multipart.next_field().await? {
        if found.is_some() || field.name() != Some("file") {
            // The next `next_field` skips what is left of this one.
            continue;
        }
        let filename = field.file_name().map(str::to_owned);
        let content_type = field
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned());
        let data = field.bytes().await?;
        found = Some(FilePart {
            filename,
            content_type,
            data,
        });
    }
    Ok(found)
}

/// `GET /api/files/{id}`: the bytes as uploaded, for their owner only.
fn download(state: &State, user: &str, id: u64) -> Response<ApiBody> {
    let store = state.lock();
    let Some(file) = store.files.get(&id).filter(|f| f.owner == user) else {
        return detail(StatusCode::NOT_FOUND, "File not found");
    };
    let mut res = Response::new(Either::Left(Full::new(file.bytes.clone())));
    let headers = res.headers_mut();
    let content_type = HeaderValue::try_from(file.content_type.as_str())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_TYPE, content_type);
    if let Ok(disposition) =
        HeaderValue::try_from(format!("attachment; filename=\"{}\"", file.name))
    {
        headers.insert(CONTENT_DISPOSITION, disposition);
    }
    if let Ok(etag) = HeaderValue::try_from(format!("\"file-{id}-{}\"", file.bytes.len())) {
        headers.insert(ETAG, etag);
    }
    res
}

/// A file name safe to put back in a quoted `Content-Disposition`: no quotes, no path, no
/// control characters, at most 100 characters.
fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if cleaned.trim_matches(['.', ' ']).is_empty() {
        "upload.bin".into()
    } else {
        cleaned
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    message: String,
}

/// `POST /chatkit`: a canned "assistant" reply, one word per `token` event every
/// [`TOKEN_PAUSE`], then `done`.
async fn chatkit(state: &State, user: &str, req: Request<Incoming>) -> Response<ApiBody> {
    let chat: ChatRequest = match read_json(req).await {
        Ok(value) => value,
        Err(res) => return res,
    };
    let question: String = chat.message.trim().chars().take(80).collect();
    let open = state
        .lock()
        .tasks
        .values()
        .filter(|t| t.owner == user && !t.done)
        .count();
    let reply = format!(
        "Hello {user}! You asked: \"{question}\". You have {open} open task{s}. This answer left \
         the Rust backend one word at a time, as server-sent events 100 ms apart: if the words \
         appeared one by one, nothing on the way buffered them.",
        s = if open == 1 { "" } else { "s" },
    );
    word_events(reply, TOKEN_PAUSE)
}

/// A `text/event-stream` answer: each word of `reply` (with the space before it) as a `token`
/// event, `{"token": "..."}`, `pause` apart, then a `done` event. Each event is its own frame; a
/// producer task sends them and stops at the first one nobody receives (the client went away).
fn word_events(reply: String, pause: Duration) -> Response<ApiBody> {
    let (mut tx, body) = Channel::new(16);
    tokio::spawn(async move {
        for (i, word) in reply.split(' ').enumerate() {
            let text = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            if tx
                .send_data(sse("token", &json!({ "token": text })))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(pause).await;
        }
        let _ = tx.send_data(sse("done", &json!({}))).await;
    });
    let mut res = Response::new(Either::Right(body));
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// One SSE event with a JSON `data` line.
fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Reads and decodes a JSON body of at most [`MAX_JSON`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<ApiBody>> {
    let bytes = match Limited::new(req.into_body(), MAX_JSON).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Err(detail(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
        }
        Err(_) => return Err(detail(StatusCode::BAD_REQUEST, "cannot read body")),
    };
    serde_json::from_slice(&bytes)
        .map_err(|err| detail(StatusCode::UNPROCESSABLE_ENTITY, &err.to_string()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<ApiBody> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn empty(status: StatusCode) -> Response<ApiBody> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
    *res.status_mut() = status;
    res
}

/// A FastAPI-style error: `{"detail": "..."}`.
fn detail(status: StatusCode, message: &str) -> Response<ApiBody> {
    json_response(status, &json!({ "detail": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multipart body with a text part, then a `file` part holding `data`.
    fn two_parts(data: &[u8]) -> Vec<u8> {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
                         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.bin\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
            .to_vec();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    /// `body` as a stream of `chunk`-byte pieces, as it may come off the network.
    fn chunked(body: Vec<u8>, chunk: usize) -> Channel<Bytes> {
        let (mut tx, rx) = Channel::new(4);
        tokio::spawn(async move {
            for piece in body.chunks(chunk) {
                if tx.send_data(Bytes::copy_from_slice(piece)).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    #[tokio::test]
    async fn multipart_keeps_every_byte_value_of_a_file_part() {
        let data: Vec<u8> = (0..=255u8).chain(b"\r\n--not-it".iter().copied()).collect();
        for chunk in [1, 7, 4096] {
            let body = chunked(two_parts(&data), chunk);
            let part = file_part(body, "XyZ".into(), MAX_UPLOAD)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(part.filename.as_deref(), Some("a b.bin"));
            assert_eq!(
                part.content_type.as_deref(),
                Some("application/octet-stream")
            );
            assert_eq!(part.data, &data[..], "in {chunk}-byte chunks");
        }
    }

    #[tokio::test]
    async fn uploads_are_bounded_and_need_a_file_part() {
        let body = two_parts(&[b'x'; 1000]);
        let limit = u64::try_from(body.len() - 1).unwrap();
        let err = file_part(chunked(body, 100), "XyZ".into(), limit)
            .await
            .unwrap_err();
        assert!(
            matches!(err, multer::Error::StreamSizeExceeded { .. }),
            "{err:?}"
        );
        let only_note =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XyZ--\r\n";
        let body = Full::new(Bytes::from_static(only_note));
        assert!(
            file_part(body, "XyZ".into(), MAX_UPLOAD)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn multipart_boundary_is_read_from_the_content_type() {
        assert_eq!(
            multer::parse_boundary("multipart/form-data; boundary=----WebKitFormBoundaryA1")
                .unwrap(),
            "----WebKitFormBoundaryA1"
        );
        assert_eq!(
            multer::parse_boundary("Multipart/Form-Data; charset=x; boundary=\"q q\"").unwrap(),
            "q q"
        );
        assert!(multer::parse_boundary("application/json; boundary=x").is_err());
        assert!(multer::parse_boundary("multipart/form-data").is_err());
    }

    #[test]
    fn file_names_cannot_break_out_of_content_disposition() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("a\"b\r\n.pdf"), "a_b__.pdf");
        assert_eq!(safe_file_name(".."), "upload.bin");
        assert_eq!(safe_file_name("C:\\x\\report.pdf"), "report.pdf");
    }

    #[test]
    fn tokens_are_long_random_and_header_safe() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(
            shorten(&format!("Bearer {a}")),
            format!("Bearer {}…", &a[..6])
        );
    }
}
