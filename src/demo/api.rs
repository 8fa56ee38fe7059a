//! The demo API: a tiny stand-in for the application backend cookiegate sits in front of.
//!
//! It plays both sides of the cookie-to-bearer split, the way a real stack would:
//!
//! - `GET /` serves the page ([`PAGE`]); `POST /login` and `POST /logout` set and clear the
//!   httpOnly session cookie (they reach it through cookiegate's `auth = "none"` route, which
//!   passes cookies and `Set-Cookie` through untouched);
//! - `GET /api/me`, `GET|POST /api/items`, `GET /api/events` (SSE) and `POST /chatkit` (SSE)
//!   accept only `Authorization: Bearer <token>` of a known session, never the cookie, and answer
//!   401 `{"detail":"invalid token"}` otherwise, like a FastAPI backend. The browser cannot send
//!   that header itself (the token is httpOnly), so these work only through cookiegate.
//!
//! Sessions and items live in memory and vanish with the process. The session tokens are
//! demo-grade: see [`Store::new_token`]. Nothing here is meant for production use.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderValue, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::COOKIE as COOKIE_NAME;

/// The page, one self-contained file: inline CSS and script, no external resources.
const PAGE: &str = include_str!("page.html");
/// Request bodies are read whole here (they are small JSON), so they are bounded.
const MAX_BODY: usize = 64 * 1024;
/// Time between two `tick` events on `/api/events`.
const TICK: Duration = Duration::from_secs(2);
/// Pause between two words of the assistant's reply, unless the demo is started with another.
pub(super) const WORD_PAUSE: Duration = Duration::from_millis(80);
/// Longest name or item title kept, in characters.
const MAX_TEXT: usize = 80;

/// The demo API serving on `127.0.0.1:<port chosen by the OS>` until dropped.
///
/// Dropping it aborts the accept loop, which owns every connection task; a connection's streams
/// end with it (see [`EventBody`]).
pub(crate) struct DemoApi {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl DemoApi {
    /// Binds a loopback port and starts serving; the assistant's replies pause `word_pause`
    /// between words.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub(crate) async fn start(word_pause: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store {
            word_pause,
            ..Store::default()
        });
        let accept = tokio::spawn(accept_loop(listener, store));
        Ok(Self { addr, accept })
    }

    /// Where the API listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, store: Arc<Store>) {
    // Owned here so that aborting this task aborts every connection too.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "demo API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let store = store.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(route(&store, req).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "demo API: connection ended with an error");
            }
        });
    }
}

/// Every answer: a fixed body, or a stream of SSE events.
type DemoBody = Either<Full<Bytes>, EventBody>;

/// In-memory sessions and items, shared by all connections.
struct Store {
    inner: Mutex<Inner>,
    /// `item` events for every open `/api/events` stream.
    events: broadcast::Sender<Bytes>,
    /// Keyed at random once per process; see [`Store::new_token`].
    keys: std::collections::hash_map::RandomState,
    /// Pause between two words of the assistant's reply.
    word_pause: Duration,
}

#[derive(Default)]
struct Inner {
    /// Token -> user name.
    sessions: HashMap<String, String>,
    /// User name -> that user's items.
    items: HashMap<String, Vec<Value>>,
    /// Last item id handed out.
    last_id: u64,
    /// Tokens handed out, so no two are hashed from the same input.
    tokens_issued: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            events: broadcast::channel(64).0,
            keys: std::collections::hash_map::RandomState::new(),
            word_pause: WORD_PAUSE,
        }
    }
}

impl Store {
    /// The lock, even if a panicking request poisoned it: the maps stay consistent because no
    /// code panics halfway through an update, and the demo should keep serving.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A 128-bit token as 32 hex digits: two SipHash outputs, under std's randomly seeded
    /// `RandomState` keys, of a counter and the clock.
    ///
    /// DEMO ONLY. This is not a real session scheme: `RandomState` is not a documented CSPRNG,
    /// sessions never expire, and they live in one process's memory. A real backend issues
    /// tokens from its identity provider or a CSPRNG and stores sessions properly.
    fn new_token(&self, inner: &mut Inner) -> String {
        inner.tokens_issued += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let half = |lane: u8| self.keys.hash_one((lane, inner.tokens_issued, nanos));
        format!("{:016x}{:016x}", half(0), half(1))
    }

    /// The user of the session whose token is in `Authorization: Bearer`, if any.
    fn bearer_user(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.lock().sessions.get(token).cloned()
    }
}

/// Dispatches one request.
async fn route(store: &Store, req: Request<Incoming>) -> Response<DemoBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let allowed: &[Method] = match path.as_str() {
        "/" | "/api/me" | "/api/events" => &[Method::GET],
        "/login" | "/logout" | "/chatkit" => &[Method::POST],
        "/api/items" => &[Method::GET, Method::POST],
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if !allowed.contains(&method) {
        return detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    match path.as_str() {
        "/" => page(),
        "/login" => login(store, req).await,
        "/logout" => logout(store, req.headers()),
        _ => {
            let Some(user) = store.bearer_user(req.headers()) else {
                return detail(StatusCode::UNAUTHORIZED, "invalid token");
            };
            match (path.as_str(), method) {
                ("/api/me", _) => json_response(StatusCode::OK, &json!({ "user": user })),
                ("/api/items", Method::GET) => list_items(store, &user),
                ("/api/items", _) => create_item(store, &user, req).await,
                ("/api/events", _) => events(store),
                _ => chatkit(store, &user, req).await,
            }
        }
    }
}

fn page() -> Response<DemoBody> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from_static(PAGE.as_bytes()))));
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `POST /login`, body `{"name": "..."}` or empty: a new session and its httpOnly cookie.
/// A cross-site login is refused ([`is_cross_site`]).
async fn login(store: &Store, req: Request<Incoming>) -> Response<DemoBody> {
    if is_cross_site(req.headers()) {
        return detail(StatusCode::FORBIDDEN, "cross-site login refused");
    }
    let body = match read_json(req).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    let name = text_field(&body, "name").unwrap_or_else(|| "guest".into());
    let token = {
        let mut inner = store.lock();
        let token = store.new_token(&mut inner);
        inner.sessions.insert(token.clone(), name.clone());
        token
    };
    tracing::info!(user = %name, "demo API: logged in");
    // HttpOnly keeps the token away from page scripts (and XSS); SameSite=Lax keeps it off
    // cross-site POSTs. A real deployment over HTTPS adds `Secure`.
    let cookie = format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Lax; Path=/");
    let mut res = json_response(StatusCode::OK, &json!({ "user": name }));
    match HeaderValue::try_from(cookie) {
        Ok(value) => {
            res.headers_mut().insert(SET_COOKIE, value);
            res
        }
        Err(_) => detail(StatusCode::INTERNAL_SERVER_ERROR, "cannot set cookie"),
    }
}

/// Whether a request comes from another site: login CSRF, where a hostile page logs the
/// visitor into an account of the attacker's choosing (what they then type lands in the
/// attacker's account). Issuing the session cookie is the cookie issuer's duty, not
/// cookiegate's (its CSRF check guards the routes that send a token), so the demo API does it
/// itself, as a real login endpoint must: `Sec-Fetch-Site` from browsers that send it (all
/// current ones), else an `Origin` naming another host than the one the browser asked
/// (`X-Forwarded-Host` behind cookiegate, else `Host`). Neither header (curl, scripts): allowed.
fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return false;
    };
    let asked = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(http::header::HOST))
        .map(HeaderValue::as_bytes);
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host.as_bytes());
    match (origin_host, asked) {
        (Some(origin_host), Some(asked)) => !origin_host.eq_ignore_ascii_case(asked),
        _ => true,
    }
}

/// `POST /logout`: forgets the session named by the bearer or the cookie, and clears the cookie.
fn logout(store: &Store, headers: &HeaderMap) -> Response<DemoBody> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookies = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='));
    let mut inner = store.lock();
    for token in bearer.into_iter().chain(cookies) {
        if let Some(user) = inner.sessions.remove(token) {
            tracing::info!(user = %user, "demo API: logged out");
        }
    }
    drop(inner);
    let mut res = json_response(StatusCode::OK, &json!({ "user": null }));
    res.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("auth_token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
    );
    res
}

fn list_items(store: &Store, user: &str) -> Response<DemoBody> {
    let items = store.lock().items.get(user).cloned().unwrap_or_default();
    json_response(StatusCode::OK, &Value::Array(items))
}

/// `POST /api/items`, body `{"title": "..."}`: 201 with the new item, and an `item` event.
async fn create_item(store: &Store, user: &str, req: Request<Incoming>) -> Response<DemoBody> {
    let body = match read_json(req).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    let Some(title) = text_field(&body, "title") else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "title is required");
    };
    let item = {
        let mut inner = store.lock();
        inner.last_id += 1;
        let item = json!({ "id": inner.last_id, "title": title });
        inner
            .items
            .entry(user.to_owned())
            .or_default()
            .push(item.clone());
        item
    };
    // No receiver (no open feed) is not an error.
    let _ = store
        .events
        .send(sse("item", &json!({ "user": user, "item": item })));
    json_response(StatusCode::CREATED, &item)
}

/// `GET /api/events`: a `tick` every [`TICK`] and an `item` for every item created, until the
/// client goes away.
fn events(store: &Store) -> Response<DemoBody> {
    let mut items = store.events.subscribe();
    event_stream(|tx| async move {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                _ = ticks.tick() => sse("tick", &json!({ "time": unix_seconds() })),
                item = items.recv() => match item {
                    Ok(event) => event,
                    // A slow reader missed some events; carry on with the next ones.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    })
}

/// `POST /chatkit`: a canned reply, one word per `token` event, then `done`.
async fn chatkit(store: &Store, user: &str, req: Request<Incoming>) -> Response<DemoBody> {
    let body = match read_json(req).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    let question = text_field(&body, "message").unwrap_or_else(|| "nothing in particular".into());
    let count = store.lock().items.get(user).map_or(0, Vec::len);
    let reply = format!(
        "Hi {user}! You asked about \"{question}\". You have {count} item{s}. Each word of this \
         answer left the demo API as its own server-sent event, and cookiegate relayed every one \
         the moment it arrived, without buffering. Your token never touched this page's script.",
        s = if count == 1 { "" } else { "s" },
    );
    word_events(reply, "text", store.word_pause)
}

/// A streamed assistant reply: each word of `reply` (with the space before it) as a `token`
/// event whose JSON carries it under `field`, `pause` apart, then a `done` event. A zero
/// `pause` yields instead, so the reader takes each word before the next is sent.
fn word_events(
    reply: String,
    field: &'static str,
    pause: std::time::Duration,
) -> Response<Either<Full<Bytes>, EventBody>> {
    event_stream(move |tx| async move {
        for (i, word) in reply.split(' ').enumerate() {
            let text = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            if tx
                .send(sse("token", &json!({ field: text })))
                .await
                .is_err()
            {
                return;
            }
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
        let _ = tx.send(sse("done", &json!({}))).await;
    })
}

/// A `text/event-stream` answer whose events `produce` sends into the channel.
fn event_stream<F, Fut>(produce: F) -> Response<Either<Full<Bytes>, EventBody>>
where
    F: FnOnce(mpsc::Sender<Bytes>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let producer = tokio::spawn(produce(tx)).abort_handle();
    let mut res = Response::new(Either::Right(EventBody { rx, producer }));
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// An SSE body fed by a producer task it owns: each event is sent as its own frame, and
/// dropping the body (the client went away, or the API is shutting down) aborts the producer.
struct EventBody {
    rx: mpsc::Receiver<Bytes>,
    producer: AbortHandle,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|event| event.map(|e| Ok(Frame::data(e))))
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

/// One SSE event with a JSON `data` line.
fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; an empty body reads as `{}`.
async fn read_json(req: Request<Incoming>) -> Result<Value, Response<DemoBody>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Err(detail(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
        }
        Err(_) => return Err(detail(StatusCode::BAD_REQUEST, "cannot read body")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| detail(StatusCode::UNPROCESSABLE_ENTITY, "body must be JSON"))
}

/// A string field, trimmed and cut to [`MAX_TEXT`] characters; `None` when absent or blank.
fn text_field(body: &Value, key: &str) -> Option<String> {
    let text = body.get(key)?.as_str()?.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_TEXT).collect())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_response(status: StatusCode, value: &Value) -> Response<DemoBody> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A FastAPI-style error: `{"detail": "..."}`.
fn detail(status: StatusCode, message: &str) -> Response<DemoBody> {
    json_response(status, &json!({ "detail": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        json: Value,
    }

    async fn call(
        client: &TestClient,
        api: &DemoApi,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Response<Incoming> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", api.addr()));
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .expect("answer in time")
            .expect("request sent")
    }

    async fn send(
        client: &TestClient,
        api: &DemoApi,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Reply {
        let res = call(client, api, method, path, token, body).await;
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    /// Logs in as `name` and returns the session token from the cookie.
    async fn login_as(client: &TestClient, api: &DemoApi, name: &str) -> String {
        let reply = send(
            client,
            api,
            "POST",
            "/login",
            None,
            &json!({ "name": name }).to_string(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let cookie = reply.headers[SET_COOKIE].to_str().unwrap();
        let token = cookie
            .strip_prefix("auth_token=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        token.to_owned()
    }

    #[tokio::test]
    async fn login_sets_an_httponly_session_cookie() {
        let api = DemoApi::start(WORD_PAUSE).await.unwrap();
        let client = client();
        let reply = send(&client, &api, "POST", "/login", None, r#"{"name":" ada "}"#).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json, json!({ "user": "ada" }));
        let cookie = reply.headers[SET_COOKIE].to_str().unwrap();
        let (token, attributes) = cookie
            .strip_prefix("auth_token=")
            .unwrap()
            .split_once(';')
            .unwrap();
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(attributes, " HttpOnly; SameSite=Lax; Path=/");

        let anonymous = send(&client, &api, "POST", "/login", None, "").await;
        assert_eq!(anonymous.json, json!({ "user": "guest" }));
        let other = login_as(&client, &api, "ada").await;
        assert_ne!(other, token, "every login gets a fresh token");
    }

    #[tokio::test]
    async fn api_refuses_a_missing_or_unknown_bearer_like_fastapi() {
        let api = DemoApi::start(WORD_PAUSE).await.unwrap();
        let client = client();
        for token in [None, Some("0123456789abcdef0123456789abcdef")] {
            for (method, path) in [
                ("GET", "/api/items"),
                ("GET", "/api/events"),
                ("POST", "/chatkit"),
            ] {
                let reply = send(&client, &api, method, path, token, "").await;
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert_eq!(reply.json, json!({ "detail": "invalid token" }));
            }
        }
    }

    #[tokio::test]
    async fn bearer_lists_and_creates_its_own_items() {
        let api = DemoApi::start(WORD_PAUSE).await.unwrap();
        let client = client();
        let ada = login_as(&client, &api, "ada").await;
        let bob = login_as(&client, &api, "bob").await;
        let empty = send(&client, &api, "GET", "/api/items", Some(&ada), "").await;
        assert_eq!((empty.status, empty.json), (StatusCode::OK, json!([])));

        let created = send(
            &client,
            &api,
            "POST",
            "/api/items",
            Some(&ada),
            r#"{"title":"milk"}"#,
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED);
        assert_eq!(created.json, json!({ "id": 1, "title": "milk" }));
        let listed = send(&client, &api, "GET", "/api/items", Some(&ada), "").await;
        assert_eq!(listed.json, json!([{ "id": 1, "title": "milk" }]));
        let others = send(&client, &api, "GET", "/api/items", Some(&bob), "").await;
        assert_eq!(others.json, json!([]));
        let me = send(&client, &api, "GET", "/api/me", Some(&bob), "").await;
        assert_eq!(me.json, json!({ "user": "bob" }));

        let untitled = send(
            &client,
            &api,
            "POST",
            "/api/items",
            Some(&ada),
            r#"{"title":" "}"#,
        )
        .await;
        assert_eq!(untitled.status, StatusCode::UNPROCESSABLE_ENTITY);
        let huge = format!(r#"{{"title":"{}"}}"#, "x".repeat(MAX_BODY));
        let too_large = send(&client, &api, "POST", "/api/items", Some(&ada), &huge).await;
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn cross_site_logins_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("sec-fetch-site", "same-origin")], false),
            (&[("sec-fetch-site", "none")], false),
            (&[("sec-fetch-site", "cross-site")], true),
            (&[("sec-fetch-site", "same-site")], true),
            (
                &[
                    ("host", "localhost:4000"),
                    ("origin", "http://localhost:4000"),
                ],
                false,
            ),
            (
                &[
                    ("host", "localhost:4000"),
                    ("origin", "http://LOCALHOST:4000"),
                ],
                false,
            ),
            (
                &[
                    ("host", "localhost:4000"),
                    ("origin", "https://evil.example"),
                ],
                true,
            ),
            (
                &[
                    ("host", "api:80"),
                    ("x-forwarded-host", "app:4000"),
                    ("origin", "http://app:4000"),
                ],
                false,
            ),
            (
                &[
                    ("host", "app:4000"),
                    ("x-forwarded-host", "api:80"),
                    ("origin", "http://app:4000"),
                ],
                true,
            ),
            (&[("host", "localhost:4000"), ("origin", "null")], true),
            (&[("origin", "http://localhost:4000")], true),
            // The browser's word wins over a matching Origin.
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("host", "a"),
                    ("origin", "http://a"),
                ],
                true,
            ),
        ];
        for (pairs, cross) in cases {
            assert_eq!(is_cross_site(&headers(pairs)), *cross, "{pairs:?}");
        }
    }

    #[tokio::test]
    async fn logout_forgets_the_session_and_clears_the_cookie() {
        let api = DemoApi::start(WORD_PAUSE).await.unwrap();
        let client = client();
        let token = login_as(&client, &api, "ada").await;
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://{}/logout", api.addr()))
            .header(COOKIE, format!("theme=dark; auth_token={token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let cleared = res.headers()[SET_COOKIE].to_str().unwrap();
        assert!(cleared.starts_with("auth_token=;") && cleared.ends_with("Max-Age=0"));
        let after = send(&client, &api, "GET", "/api/items", Some(&token), "").await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn chatkit_streams_one_event_per_word_then_done() {
        let api = DemoApi::start(Duration::ZERO).await.unwrap();
        let client = client();
        let token = login_as(&client, &api, "ada").await;
        let res = call(
            &client,
            &api,
            "POST",
            "/chatkit",
            Some(&token),
            r#"{"message":"hello"}"#,
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/event-stream");
        let mut body = res.into_body();
        let mut events = Vec::new();
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("next event in time")
        {
            if let Ok(data) = frame.unwrap().into_data() {
                events.push(String::from_utf8(data.to_vec()).unwrap());
            }
        }
        assert!(events.len() > 5, "one frame per word, got {events:?}");
        assert_eq!(events[0], "event: token\ndata: {\"text\":\"Hi\"}\n\n");
        assert_eq!(events.last().unwrap(), "event: done\ndata: {}\n\n");
        let words: String = events[..events.len() - 1]
            .iter()
            .map(|e| {
                let data = e.split_once("data: ").unwrap().1.trim_end();
                serde_json::from_str::<Value>(data).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(
            words.starts_with("Hi ada! You asked about \"hello\". You have 0 items."),
            "{words}"
        );
    }

    #[tokio::test]
    async fn event_feed_ticks_and_announces_new_items() {
        let api = DemoApi::start(WORD_PAUSE).await.unwrap();
        let client = client();
        let token = login_as(&client, &api, "ada").await;
        let res = call(&client, &api, "GET", "/api/events", Some(&token), "").await;
        assert_eq!(res.headers()[CONTENT_TYPE], "text/event-stream");
        let mut body = res.into_body();
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("next event in time")
                .expect("stream still open")
                .unwrap();
            String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
        };
        // The first tick is sent at once, so the feed is known to be subscribed before the POST.
        assert!(next().await.starts_with("event: tick\ndata: {\"time\":"));
        let created = send(
            &client,
            &api,
            "POST",
            "/api/items",
            Some(&token),
            r#"{"title":"tea"}"#,
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let event = loop {
            let event = next().await;
            if !event.starts_with("event: tick") {
                break event;
            }
        };
        assert_eq!(
            event,
            "event: item\ndata: {\"item\":{\"id\":1,\"title\":\"tea\"},\"user\":\"ada\"}\n\n"
        );
    }

    #[tokio::test]
    async fn page_and_unknown_paths() {
        let api = DemoApi::start(WORD_PAUSE).await.unwrap();
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let res = client
            .get(format!("http://{}/", api.addr()).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let html = res.into_body().collect().await.unwrap().to_bytes();
        assert!(html.starts_with(b"<!doctype html>"));
        let missing = send(&self::client(), &api, "GET", "/nope", None, "").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let wrong = send(&self::client(), &api, "GET", "/login", None, "").await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
