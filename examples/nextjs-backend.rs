//! The example backend API behind `examples/nextjs/`: a small FastAPI-style service, in Rust, that
//! only understands `Authorization: Bearer <token>` and never a cookie.
//!
//! ```sh
//! cargo run --release --example nextjs-backend                 # http://127.0.0.1:8000
//! cargo run --release --example nextjs-backend -- --listen 127.0.0.1:8001 --auth-log /tmp/auth.log
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
//! Tokens are 256 random bits from the kernel (`/dev/urandom`), issued by `POST /auth/token` to
//! the Next.js login handler (server to server), kept in memory with an expiry, and revoked on
//! logout: a real opaque-token scheme, minus persistence. The users are fixed demo accounts
//! (`ada`/`lovelace`, `grace`/`hopper`, `alan`/`turing`).
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
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cookiegate::demo::{EventBody, word_events};
use http::header::{AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_TYPE, ETAG, HeaderValue, LOCATION};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// JSON bodies are read whole, so they are bounded.
const MAX_JSON: usize = 64 * 1024;
/// A multipart upload, whole (the file and its envelope).
const MAX_UPLOAD: usize = 10 * 1024 * 1024;
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

/// Every answer: a fixed body, or a stream of SSE events.
type ApiBody = Either<Full<Bytes>, EventBody>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("nextjs-backend: {message}");
            eprintln!("usage: nextjs-backend [--listen ADDR] [--auth-log FILE]");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("nextjs-backend: cannot listen on {}: {err}", options.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("nextjs-backend: listening on http://{}", options.listen);
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
    // Dropping the set aborts every connection, and with it every SSE producer.
    drop(connections);
    std::process::ExitCode::SUCCESS
}

/// Command-line options.
struct Options {
    listen: SocketAddr,
    auth_log: Option<PathBuf>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut listen = std::env::var("BACKEND_LISTEN")
            .ok()
            .or_else(|| std::env::var("PORT").ok().map(|p| format!("127.0.0.1:{p}")))
            .unwrap_or_else(|| "127.0.0.1:8000".into());
        let mut auth_log = None;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--listen" => listen = args.next().ok_or("--listen needs an address")?,
                "--auth-log" => {
                    auth_log = Some(PathBuf::from(args.next().ok_or("--auth-log needs a file")?));
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let listen = listen
            .parse()
            .map_err(|_| format!("`{listen}` is not an address like 127.0.0.1:8000"))?;
        Ok(Self { listen, auth_log })
    }
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
        *user == credentials.username && constant_time_eq(password, &credentials.password)
    });
    if !known {
        return detail(StatusCode::UNAUTHORIZED, "Incorrect username or password");
    }
    let token = match random_token() {
        Ok(token) => token,
        Err(err) => {
            eprintln!("nextjs-backend: cannot read /dev/urandom: {err}");
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

/// Compares two secrets without stopping at the first difference.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 256 bits from the kernel's CSPRNG, as 64 lowercase hex digits (cookie- and header-safe).
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
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
        .and_then(multipart_boundary)
    else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected multipart/form-data with a boundary",
        );
    };
    let body = match Limited::new(req.into_body(), MAX_UPLOAD).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return detail(StatusCode::PAYLOAD_TOO_LARGE, "upload larger than 10 MiB");
        }
        Err(_) => return detail(StatusCode::BAD_REQUEST, "cannot read body"),
    };
    let Some(part) = multipart_parts(&body, &boundary)
        .into_iter()
        .find(|p| p.name == "file")
    else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "no `file` part");
    };
    let file = StoredFile {
        owner: user.to_owned(),
        name: safe_file_name(part.filename.as_deref().unwrap_or("upload.bin")),
        content_type: part
            .content_type
            .unwrap_or_else(|| "application/octet-stream".into()),
        bytes: body.slice_ref(part.data),
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

/// The `boundary` parameter of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|param| {
        let (key, value) = param.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        // RFC 2046 §5.1.1: 1 to 70 characters.
        (1..=70).contains(&value.len()).then(|| value.to_owned())
    })
}

/// One part of a multipart body.
#[derive(Debug)]
struct Part<'a> {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: &'a [u8],
}

/// The parts of a multipart body (RFC 7578), ignoring anything malformed. Each part's data is
/// the exact bytes between its blank line and the next delimiter: binary is never decoded.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
    // The first delimiter may open the body without the CRLF in front of it.
    let Some(first) = find(body, &delimiter[2..]) else {
        return Vec::new();
    };
    let mut rest = &body[first + delimiter.len() - 2..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        let Some(after_line) = find(rest, b"\r\n").map(|i| &rest[i + 2..]) else {
            break;
        };
        let Some(head_end) = find(after_line, b"\r\n\r\n") else {
            break;
        };
        let head = &after_line[..head_end];
        let content = &after_line[head_end + 4..];
        let Some(end) = find(content, &delimiter) else {
            break;
        };
        if let Some(part) = parse_part_head(head, &content[..end]) {
            parts.push(part);
        }
        rest = &content[end + delimiter.len()..];
    }
    parts
}

fn parse_part_head<'a>(head: &[u8], data: &'a [u8]) -> Option<Part<'a>> {
    let head = std::str::from_utf8(head).ok()?;
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in head.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            for param in value.split(';').skip(1) {
                let Some((k, v)) = param.trim().split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(v),
                    "filename" => filename = Some(v),
                    _ => {}
                }
            }
        } else if key.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    Some(Part {
        name: name?,
        filename,
        content_type,
        data,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    word_events(reply, "token", TOKEN_PAUSE)
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

    #[test]
    fn multipart_keeps_every_byte_value_of_a_file_part() {
        let data: Vec<u8> = (0..=255u8).chain(b"\r\n--not-it".iter().copied()).collect();
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
                         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.bin\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
            .to_vec();
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        let parts = multipart_parts(&body, "XyZ");
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data),
            ("note", &b"hi"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("a b.bin"));
        assert_eq!(
            parts[1].content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(parts[1].data, &data[..]);
    }

    #[test]
    fn multipart_boundary_is_read_from_the_content_type() {
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=----WebKitFormBoundaryA1").as_deref(),
            Some("----WebKitFormBoundaryA1")
        );
        assert_eq!(
            multipart_boundary("Multipart/Form-Data; charset=x; boundary=\"q q\"").as_deref(),
            Some("q q")
        );
        assert_eq!(multipart_boundary("application/json; boundary=x"), None);
        assert_eq!(multipart_boundary("multipart/form-data"), None);
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
