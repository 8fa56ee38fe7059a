//! WebSockets through cookiegate (RFC 6455): the upgrade handshake is admitted like any request
//! (route, methods, path, framing, rate limit, session) plus an `Origin` check, since browsers
//! send cookies with a cross-site `new WebSocket(...)` and the same-origin policy does not apply
//! to sockets (Cross-Site WebSocket Hijacking, RFC 6455 §10.2). The upstream gets the bearer at
//! the handshake; after its `101` (checked: `Upgrade: websocket`, the right
//! `Sec-WebSocket-Accept`), bytes are spliced both ways as they come, never buffered or
//! reframed, until one side closes, the socket is idle for `idle_timeout`, reaches
//! `max_lifetime`, or its session ends (expiry, logout, back-channel logout, a failed refresh:
//! checked twice a second against the revocation list). Closing is a TCP close on both sides
//! (no Close frame is written: cookiegate never parses frames).
//!
//! HTTP/2 extended CONNECT (RFC 8441) is not supported: an h2 client's upgrade is refused by
//! hyper, and browsers fall back to HTTP/1.1 for sockets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use http::Method;
use http::header::{CONNECTION, HeaderMap, HeaderValue, ORIGIN, UPGRADE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::auth::revocation::{Revocations, SessionRef};
use crate::config::WebSocketSettings;
use crate::trust::Client;

/// `Sec-Fetch-Site`: set by browsers on every request, sockets included.
static SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

/// The GUID of RFC 6455 §1.3, which the accept key is derived with.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How often a socket of a session checks whether the session ended.
const SESSION_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Whether a request asks to become a WebSocket: `GET`, `Upgrade: websocket` and a
/// `Connection` list holding `upgrade`, all case-insensitive (Firefox sends
/// `Connection: keep-alive, Upgrade`).
pub(crate) fn is_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    // One probe for the common case, a request that asks for no upgrade at all.
    if method != Method::GET || !headers.contains_key(UPGRADE) {
        return false;
    }
    headers
        .get_all(UPGRADE)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"websocket"))
        && headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"upgrade"))
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Why a handshake's origin was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginReject {
    /// `Sec-Fetch-Site: cross-site` or `same-site`.
    CrossSite,
    /// An `Origin` that is neither the request's own nor allowed.
    Foreign,
    /// No `Origin` (and `allow_missing_origin` is off).
    Missing,
}

/// The handshake's `Origin` decision: the request's own origin (`scheme://host` as the client
/// reached us, [`crate::trust`]) or one of `allowed_origins`; a browser's `Sec-Fetch-Site` of
/// `cross-site` or `same-site` is refused whatever the origin says (a sibling subdomain is
/// another origin too).
pub(crate) fn check_origin(
    headers: &HeaderMap,
    client: &Client,
    settings: &WebSocketSettings,
) -> Result<(), OriginReject> {
    if headers.get(&SEC_FETCH_SITE).is_some_and(|v| {
        v.as_bytes().eq_ignore_ascii_case(b"cross-site")
            || v.as_bytes().eq_ignore_ascii_case(b"same-site")
    }) {
        return Err(OriginReject::CrossSite);
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return if settings.allow_missing_origin {
            Ok(())
        } else {
            Err(OriginReject::Missing)
        };
    };
    let origin = origin.to_str().map_err(|_| OriginReject::Foreign)?.trim();
    let own = client
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("{}://{host}", client.proto.as_str()));
    if own.is_some_and(|own| own.eq_ignore_ascii_case(origin))
        || settings
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        Err(OriginReject::Foreign)
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub(crate) fn accept_for(key: &[u8]) -> String {
    let mut input = Vec::with_capacity(key.len() + ACCEPT_GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    STANDARD.encode(digest.as_ref())
}

/// Whether the upstream's `101` completes this handshake: `Upgrade: websocket` and the accept
/// key derived from the client's `Sec-WebSocket-Key` (an upstream that is not a WebSocket
/// server, or a response meant for another request, does not).
pub(crate) fn is_valid_switch(key: Option<&HeaderValue>, response: &HeaderMap) -> bool {
    let upgrade = response
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let accept = match (key, response.get("sec-websocket-accept")) {
        (Some(key), Some(accept)) => accept.as_bytes() == accept_for(key.as_bytes()).as_bytes(),
        _ => false,
    };
    upgrade && accept
}

/// A socket's session, for the revocation check.
#[derive(Debug, Clone)]
pub(crate) struct SocketSession {
    pub(crate) id: String,
    pub(crate) sid: Option<String>,
    pub(crate) sub: String,
    pub(crate) issued_at: u64,
    /// The session's absolute end (unix seconds).
    pub(crate) expires_at: u64,
}

/// The open sockets: how many per session (the cap), and the shutdown signal.
#[derive(Debug)]
pub(crate) struct Sockets {
    per_key: Mutex<HashMap<u64, usize>>,
    open: AtomicU64,
    shutdown: watch::Sender<bool>,
    idle: Notify,
}

impl Default for Sockets {
    fn default() -> Self {
        Self {
            per_key: Mutex::new(HashMap::new()),
            open: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            idle: Notify::new(),
        }
    }
}

/// One open socket's place in [`Sockets`]; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    sockets: std::sync::Arc<Sockets>,
    key: Option<u64>,
}

impl Sockets {
    /// Sockets open for `key` (a session or cookie fingerprint).
    pub(crate) fn count(&self, key: u64) -> usize {
        self.lock().get(&key).copied().unwrap_or(0)
    }

    /// Takes a place for a socket of `key`, unless `max` are open already. Taken before the
    /// handshake goes upstream, so concurrent handshakes cannot all pass the cap.
    pub(crate) fn take(self: &std::sync::Arc<Self>, key: Option<u64>, max: usize) -> Option<Slot> {
        if let Some(key) = key {
            let mut per_key = self.lock();
            let count = per_key.entry(key).or_insert(0);
            if *count >= max {
                return None;
            }
            *count += 1;
        }
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(Slot {
            sockets: self.clone(),
            key,
        })
    }

    /// Sockets open now.
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every socket (the end of the shutdown grace period).
    pub(crate) fn close_all(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until no socket is open.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.per_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut per_key = self.sockets.lock();
            if let Some(count) = per_key.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    per_key.remove(&key);
                }
            }
        }
        if self.sockets.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.sockets.idle.notify_waiters();
        }
    }
}

/// Why a socket ended, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client closed its side.
    ClientClosed,
    /// The upstream closed its side.
    UpstreamClosed,
    /// No byte either way for `idle_timeout`.
    Idle,
    /// `max_lifetime` reached.
    Lifetime,
    /// The session expired, was logged out, or was revoked by the IdP.
    SessionEnded,
    /// cookiegate is shutting down.
    Shutdown,
    /// Reading or writing failed.
    Error,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client closed",
            Self::UpstreamClosed => "upstream closed",
            Self::Idle => "idle",
            Self::Lifetime => "max_lifetime",
            Self::SessionEnded => "session ended",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
        }
    }
}

/// What a splice moved.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// Client to upstream.
    pub(crate) up: u64,
    /// Upstream to client.
    pub(crate) down: u64,
}

/// Copies bytes both ways until one side closes or a limit ends the socket. `early` are the
/// upstream's bytes that came with its `101`. Nothing is buffered beyond one read.
#[expect(
    clippy::too_many_arguments,
    reason = "the socket's parts and limits, all distinct"
)]
pub(crate) async fn splice<C, U>(
    client: C,
    upstream: U,
    early: BytesMut,
    settings: &WebSocketSettings,
    sockets: &Sockets,
    revocations: &Revocations,
    session: Option<&SocketSession>,
    moved: &mut Moved,
) -> Ending
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    if !early.is_empty() {
        if client_write.write_all(&early).await.is_err() {
            return Ending::ClientClosed;
        }
        moved.down += early.len() as u64;
    }
    // The head's read buffer is not kept for the socket's life.
    drop(early);
    let activity = Notify::new();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = pump(&mut client_read, &mut upstream_write, &activity, &up_bytes);
    let down = pump(
        &mut upstream_read,
        &mut client_write,
        &activity,
        &down_bytes,
    );
    tokio::pin!(up, down);
    let started = Instant::now();
    // `checked_add`: a configured lifetime of centuries must not overflow the clock.
    let far = |from: Instant, d: Duration| {
        from.checked_add(d)
            .unwrap_or(from + Duration::from_secs(100 * 365 * 24 * 3600))
    };
    let mut deadline = far(started, settings.max_lifetime);
    let mut ends_with_session = false;
    if let Some(session) = session {
        let now = crate::auth::oidc::now();
        let left = Duration::from_secs(session.expires_at.saturating_sub(now));
        if far(started, left) < deadline {
            deadline = far(started, left);
            ends_with_session = true;
        }
    }
    let lifetime = tokio::time::sleep_until(deadline);
    let idle = tokio::time::sleep_until(far(started, settings.idle_timeout));
    tokio::pin!(lifetime, idle);
    let mut check = tokio::time::interval(SESSION_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = sockets.shutdown.subscribe();
    let ending = loop {
        tokio::select! {
            result = &mut up => break match result {
                Ok(()) => Ending::ClientClosed,
                Err(_) => Ending::Error,
            },
            result = &mut down => break match result {
                Ok(()) => Ending::UpstreamClosed,
                Err(_) => Ending::Error,
            },
            () = activity.notified() => {
                idle.as_mut().reset(far(Instant::now(), settings.idle_timeout));
            }
            () = &mut idle => break Ending::Idle,
            () = &mut lifetime => break if ends_with_session {
                Ending::SessionEnded
            } else {
                Ending::Lifetime
            },
            _ = check.tick(), if session.is_some() => {
                if let Some(s) = session {
                    let revoked = revocations.is_revoked(SessionRef {
                        id: &s.id,
                        sid: s.sid.as_deref(),
                        sub: &s.sub,
                        issued_at: s.issued_at,
                    });
                    if revoked {
                        break Ending::SessionEnded;
                    }
                }
            }
            _ = shutdown.wait_for(|closing| *closing) => break Ending::Shutdown,
        }
    };
    moved.up += up_bytes.load(Ordering::Relaxed);
    moved.down += down_bytes.load(Ordering::Relaxed);
    ending
}

/// First read size of a direction: small, since most sockets are idle most of the time; doubled
/// up to [`MAX_READ`] while reads fill it (a large transfer).
const FIRST_READ: usize = 2 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Copies one direction, marking activity; ends at the reader's EOF (shutting the writer).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    activity: &Notify,
    count: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; FIRST_READ];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        activity.notify_one();
        if n == buf.len() && buf.len() < MAX_READ {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// The one access-log line of a socket, written when it closes.
pub(crate) fn log_close(
    request_id: &HeaderValue,
    route: &str,
    path: &str,
    started: Instant,
    moved: &Moved,
    ending: Ending,
) {
    tracing::info!(
        target: "cookiegate::access",
        request_id = %request_id.to_str().unwrap_or("-"),
        kind = "websocket",
        route,
        path,
        status = 101,
        bytes_up = moved.up,
        bytes_down = moved.down,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome = ending.as_str(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Proto;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn settings(allowed: &[&str], missing: bool) -> WebSocketSettings {
        WebSocketSettings {
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            allow_missing_origin: missing,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
            max_per_session: 2,
        }
    }

    fn client() -> Client {
        Client {
            ip: "127.0.0.1".parse().unwrap(),
            proto: Proto::Https,
            host: Some(HeaderValue::from_static("app.example.com")),
        }
    }

    #[test]
    fn upgrades_are_recognised_in_every_browser_shape() {
        let chrome = headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]);
        let firefox = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        assert!(is_upgrade(&Method::GET, &chrome));
        assert!(is_upgrade(&Method::GET, &firefox));
        assert!(!is_upgrade(&Method::POST, &chrome));
        assert!(!is_upgrade(
            &Method::GET,
            &headers(&[("upgrade", "h2c"), ("connection", "upgrade")])
        ));
        assert!(!is_upgrade(
            &Method::GET,
            &headers(&[("upgrade", "websocket")])
        ));
        assert!(!is_upgrade(
            &Method::GET,
            &headers(&[("upgrade", "websocket"), ("connection", "upgraded")])
        ));
    }

    #[test]
    fn only_the_own_or_allowed_origins_open_sockets() {
        let s = settings(&["https://admin.example.com"], false);
        let check = |pairs: &[(&str, &str)]| check_origin(&headers(pairs), &client(), &s);
        assert_eq!(check(&[("origin", "https://app.example.com")]), Ok(()));
        assert_eq!(check(&[("origin", "HTTPS://App.Example.com")]), Ok(()));
        assert_eq!(check(&[("origin", "https://admin.example.com")]), Ok(()));
        assert_eq!(
            check(&[("origin", "http://app.example.com")]),
            Err(OriginReject::Foreign),
            "another scheme is another origin"
        );
        assert_eq!(
            check(&[("origin", "https://evil.example")]),
            Err(OriginReject::Foreign)
        );
        assert_eq!(check(&[("origin", "null")]), Err(OriginReject::Foreign));
        assert_eq!(check(&[]), Err(OriginReject::Missing));
        for site in ["cross-site", "same-site", "Cross-Site"] {
            assert_eq!(
                check(&[
                    ("origin", "https://app.example.com"),
                    ("sec-fetch-site", site)
                ]),
                Err(OriginReject::CrossSite),
                "{site}"
            );
        }
        let lenient = settings(&[], true);
        assert_eq!(check_origin(&HeaderMap::new(), &client(), &lenient), Ok(()));
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let request = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        let request = Some(&request);
        let good = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        assert!(is_valid_switch(request, &good));
        let wrong = headers(&[("upgrade", "websocket"), ("sec-websocket-accept", "x")]);
        assert!(!is_valid_switch(request, &wrong));
        let other = headers(&[
            ("upgrade", "h2c"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        assert!(!is_valid_switch(request, &other));
    }

    #[test]
    fn the_per_session_cap_counts_open_sockets() {
        let sockets = std::sync::Arc::new(Sockets::default());
        let a = sockets.take(Some(7), 2).unwrap();
        let b = sockets.take(Some(7), 2).unwrap();
        assert!(sockets.take(Some(7), 2).is_none());
        assert!(sockets.take(Some(8), 2).is_some());
        assert_eq!(sockets.count(7), 2);
        drop(a);
        assert_eq!(sockets.count(7), 1);
        assert!(sockets.take(None, 2).is_some(), "no key: no cap");
        drop(b);
        assert_eq!(sockets.count(7), 0);
        assert_eq!(sockets.open(), 0);
    }
}
