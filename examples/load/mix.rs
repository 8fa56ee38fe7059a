//! The traffic: request kinds and their weights, the workers that send them, and what counts as
//! the right answer for each.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, COOKIE, ORIGIN};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::raw::{oversized_chunked, raw_exchange, silent, slow_body, slow_head};
use crate::{BIG, MAX_BODY, MAX_HEADER_BYTES, Options, REQUEST_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    ValidGet,
    ValidPost,
    ValidBig,
    ValidH2,
    HostConfusion,
    AbsoluteForm,
    RateFlood,
    MissingCookie,
    DotSegment,
    CrossSitePost,
    ForeignOrigin,
    DupCookie,
    BadCookie,
    OversizedDeclared,
    OversizedChunked,
    Smuggling,
    Garbage,
    HugeHead,
    ManyHeaders,
    ConnectTrace,
    SlowHead,
    SlowBody,
    SilentConn,
    ConnFlood,
}

impl Kind {
    /// The fast kinds and their weights (per mille).
    const FAST: &[(Kind, u32)] = &[
        (Kind::ValidGet, 380),
        (Kind::ValidPost, 120),
        (Kind::ValidBig, 30),
        (Kind::ValidH2, 100),
        (Kind::HostConfusion, 20),
        (Kind::AbsoluteForm, 10),
        (Kind::RateFlood, 30),
        (Kind::MissingCookie, 60),
        (Kind::DotSegment, 40),
        (Kind::CrossSitePost, 40),
        (Kind::ForeignOrigin, 20),
        (Kind::DupCookie, 30),
        (Kind::BadCookie, 20),
        (Kind::OversizedDeclared, 15),
        (Kind::OversizedChunked, 15),
        (Kind::Smuggling, 30),
        (Kind::Garbage, 10),
        (Kind::HugeHead, 10),
        (Kind::ManyHeaders, 5),
        (Kind::ConnectTrace, 10),
    ];
    /// The slow kinds, run by their own workers so they do not starve the fast ones.
    const SLOW: &[(Kind, u32)] = &[
        (Kind::SlowHead, 45),
        (Kind::SlowBody, 45),
        (Kind::SilentConn, 10),
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::ValidGet => "valid GET (h1)",
            Kind::ValidPost => "valid POST 1-16 KiB",
            Kind::ValidBig => "valid GET 256 KiB",
            Kind::ValidH2 => "valid GET (h2c)",
            Kind::HostConfusion => "host confusion %5C //",
            Kind::AbsoluteForm => "absolute-form target",
            Kind::RateFlood => "rate flood, one client",
            Kind::MissingCookie => "missing cookie",
            Kind::DotSegment => "dot-segment path",
            Kind::CrossSitePost => "cross-site POST",
            Kind::ForeignOrigin => "foreign-Origin POST",
            Kind::DupCookie => "duplicated cookie",
            Kind::BadCookie => "unusable cookie bytes",
            Kind::OversizedDeclared => "body > max (declared)",
            Kind::OversizedChunked => "body > max (chunked)",
            Kind::Smuggling => "smuggling shapes, obs-fold",
            Kind::Garbage => "garbage head",
            Kind::HugeHead => "head > max_header_bytes",
            Kind::ManyHeaders => "150 header fields",
            Kind::ConnectTrace => "CONNECT / TRACE",
            Kind::SlowHead => "slow head, then gone",
            Kind::SlowBody => "body abandoned midway",
            Kind::SilentConn => "silent connection",
            Kind::ConnFlood => "connection flood",
        }
    }

    pub(crate) fn is_valid(self) -> bool {
        matches!(
            self,
            Kind::ValidGet | Kind::ValidPost | Kind::ValidBig | Kind::ValidH2
        )
    }

    /// Hostile kinds that are forwarded by design: the path or target cannot change the
    /// upstream (the upstream checks its `Host`), and a flood is answered until its bucket runs dry.
    pub(crate) fn may_succeed(self) -> bool {
        matches!(
            self,
            Kind::HostConfusion | Kind::AbsoluteForm | Kind::RateFlood
        )
    }

    /// The answers cookiegate documents for this kind, plus the transport outcomes a race can
    /// give (the server answers and closes while the client is still writing).
    pub(crate) fn expects(self, outcome: &Outcome) -> bool {
        use Outcome::{ClientLeft, Closed, Reset, Status, Timeout};
        matches!(
            (self, outcome),
            (Kind::ValidGet | Kind::ValidBig | Kind::ValidH2, Status(200))
                | (Kind::ValidPost, Status(201))
                | (Kind::HostConfusion | Kind::AbsoluteForm, Status(200))
                | (Kind::RateFlood, Status(200 | 429))
                | (Kind::MissingCookie | Kind::BadCookie, Status(401))
                | (
                    Kind::DotSegment | Kind::DupCookie | Kind::Smuggling,
                    Status(400)
                )
                | (Kind::CrossSitePost | Kind::ForeignOrigin, Status(403))
                | (
                    Kind::OversizedDeclared | Kind::OversizedChunked,
                    Status(413) | Reset
                )
                | (Kind::Garbage, Status(400) | Closed | Reset)
                | (Kind::HugeHead | Kind::ManyHeaders, Status(431) | Reset)
                | (Kind::ConnectTrace, Status(400 | 405))
                | (Kind::SlowHead, Closed | Reset | ClientLeft)
                | (Kind::SlowBody, Status(408) | ClientLeft)
                | (Kind::SilentConn, Closed)
                | (Kind::ConnFlood, Status(503) | Closed | Reset | Timeout)
        )
    }

    fn pick(table: &[(Kind, u32)], rng: &mut Rng) -> Kind {
        let total: u32 = table.iter().map(|(_, w)| w).sum();
        let mut roll = rng.below(u64::from(total));
        for (kind, weight) in table {
            if roll < u64::from(*weight) {
                return *kind;
            }
            roll -= u64::from(*weight);
        }
        Kind::ValidGet
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Status(u16),
    /// 2xx, but the body was not what the upstream sent.
    WrongBody,
    /// The server closed the connection without an answer.
    Closed,
    Reset,
    Timeout,
    ClientError(String),
    /// The client walked away on purpose (slow kinds).
    ClientLeft,
}

impl Outcome {
    pub(crate) fn is_success(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }

    pub(crate) fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::WrongBody => "2xx, wrong body".into(),
            Outcome::Closed => "closed".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::ClientError(e) => format!("client error: {e}"),
            Outcome::ClientLeft => "client left".into(),
        }
    }
}

/// A small xorshift generator: the mix needs spread, not cryptographic quality.
pub(crate) struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }

    /// A client address as a trusted proxy would report it: spread over 10.0.0.0/8, so each
    /// client's bucket stays far from the limit.
    fn client_ip(&mut self) -> String {
        let n = self.next();
        format!("10.{}.{}.{}", (n >> 16) as u8, (n >> 8) as u8, n as u8)
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) counts: BTreeMap<(Kind, Outcome), u64>,
    /// Microseconds per valid request.
    pub(crate) valid_latency_us: Vec<u32>,
}

impl Stats {
    pub(crate) fn record(&mut self, kind: Kind, outcome: Outcome, took: Duration) {
        if kind.is_valid() {
            self.valid_latency_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
        *self.counts.entry((kind, outcome)).or_default() += 1;
    }

    fn merge(&mut self, other: Stats) {
        for (key, n) in other.counts {
            *self.counts.entry(key).or_default() += n;
        }
        self.valid_latency_us.extend(other.valid_latency_us);
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub(crate) fn by_kind(&self, keep: impl Fn(Kind) -> bool) -> BTreeMap<Kind, u64> {
        let mut out = BTreeMap::new();
        for ((kind, _), n) in &self.counts {
            if keep(*kind) {
                *out.entry(*kind).or_default() += n;
            }
        }
        out
    }
}

struct Ctx {
    addr: SocketAddr,
    h1: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
    deadline: Instant,
    budget: AtomicU64,
    max_requests: u64,
}

pub(crate) fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// Runs the mix for `duration` (or `max_requests`), fast and slow workers together.
pub(crate) async fn mix(
    options: &Options,
    addr: SocketAddr,
    duration: Duration,
    max_requests: u64,
) -> Stats {
    let ctx = Arc::new(Ctx {
        addr,
        h1: h1_client(),
        h2: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http(),
        deadline: Instant::now() + duration,
        budget: AtomicU64::new(0),
        max_requests,
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let mut workers = JoinSet::new();
    for i in 0..options.workers + options.slow_workers {
        let ctx = ctx.clone();
        let table = if i < options.workers {
            Kind::FAST
        } else {
            Kind::SLOW
        };
        let mut rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        workers.spawn(async move {
            let mut stats = Stats::default();
            while Instant::now() < ctx.deadline
                && ctx.budget.fetch_add(1, Ordering::Relaxed) < ctx.max_requests
            {
                let kind = Kind::pick(table, &mut rng);
                let started = Instant::now();
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, one(&ctx, kind, &mut rng))
                    .await
                    .unwrap_or(Outcome::Timeout);
                stats.record(kind, outcome, started.elapsed());
            }
            stats
        });
    }
    let mut stats = Stats::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(worker) = done {
            stats.merge(worker);
        }
    }
    stats
}

pub(crate) fn valid_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    ip: &str,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.method_mut() = method;
    *req.uri_mut() = format!("http://{addr}{path}")
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:1/"));
    let headers = req.headers_mut();
    if let Ok(cookie) = HeaderValue::from_str(&format!("theme=dark; auth_token=valid-{token}")) {
        headers.insert(COOKIE, cookie);
    }
    if let Ok(ip) = HeaderValue::from_str(ip) {
        headers.insert("x-forwarded-for", ip);
    }
    req
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    Status(u16),
    Length(u16, usize),
    Received(usize),
    Any,
}

pub(crate) async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
    check: Check,
) -> Outcome {
    let res = match client.request(req).await {
        Ok(res) => res,
        Err(err) => {
            return if err.is_connect() {
                Outcome::ClientError("connect".into())
            } else {
                Outcome::Closed
            };
        }
    };
    let status = res.status().as_u16();
    let received = res
        .headers()
        .get("x-received")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match res.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Outcome::Reset,
    };
    let right = match check {
        Check::Any => true,
        Check::Status(want) => status == want,
        Check::Length(want, len) => status == want && body.len() == len,
        Check::Received(len) => status == 201 && received == Some(len),
    };
    if (200..300).contains(&status) && !right {
        Outcome::WrongBody
    } else {
        Outcome::Status(status)
    }
}

/// One request of `kind`.
async fn one(ctx: &Ctx, kind: Kind, rng: &mut Rng) -> Outcome {
    let addr = ctx.addr;
    let token = (rng.below(1000)).to_string();
    let ip = rng.client_ip();
    match kind {
        Kind::ValidGet => {
            let req = valid_request(addr, Method::GET, "/api/items?tag=a&tag=b", &token, &ip);
            send(&ctx.h1, req, Check::Status(200)).await
        }
        Kind::ValidH2 => {
            let req = valid_request(addr, Method::GET, "/api/items?h2=1", &token, &ip);
            send(&ctx.h2, req, Check::Status(200)).await
        }
        Kind::ValidBig => {
            let req = valid_request(addr, Method::GET, "/api/big", &token, &ip);
            send(&ctx.h1, req, Check::Length(200, BIG)).await
        }
        Kind::ValidPost => {
            let len = 1 + usize::try_from(rng.below(16 * 1024)).unwrap_or(0);
            let mut req = valid_request(addr, Method::POST, "/api/items", &token, &ip);
            *req.body_mut() = Full::new(Bytes::from(vec![b'p'; len]));
            let headers = req.headers_mut();
            if let Ok(origin) = HeaderValue::from_str(&format!("http://{addr}")) {
                headers.insert(ORIGIN, origin);
            }
            headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            send(&ctx.h1, req, Check::Received(len)).await
        }
        Kind::HostConfusion => {
            let path = rng.pick(&[
                "/api/%5Cevil.example/x",
                "/api//evil.example/x",
                "/api/%2F%2Fevil.example/x",
            ]);
            let req = valid_request(addr, Method::GET, path, &token, &ip);
            send(&ctx.h1, req, Check::Status(200)).await
        }
        Kind::AbsoluteForm => {
            let head = format!(
                "GET http://evil.example/api/items HTTP/1.1\r\nHost: evil.example\r\n\
                 Cookie: auth_token=valid-{token}\r\nX-Forwarded-For: {ip}\r\nConnection: close\r\n\r\n"
            );
            raw_exchange(addr, head.as_bytes()).await
        }
        Kind::RateFlood => {
            let req = valid_request(addr, Method::GET, "/api/items", &token, "10.66.66.66");
            send(&ctx.h1, req, Check::Any).await
        }
        Kind::MissingCookie => {
            let mut req = valid_request(addr, Method::GET, "/api/items", &token, &ip);
            req.headers_mut().remove(COOKIE);
            send(&ctx.h1, req, Check::Any).await
        }
        Kind::DotSegment => {
            let path = rng.pick(&[
                "/api/..%2f..%2fadmin",
                "/api/%2e%2e/admin",
                "/api/%2E%2e%5cadmin",
                "/api/x/..;/..;/admin",
                "/api/;%/../admin",
                "/api/%%00",
                "/api/.%2E/admin",
                "/api/a/../../admin",
            ]);
            let req = valid_request(addr, Method::GET, path, &token, &ip);
            send(&ctx.h1, req, Check::Any).await
        }
        Kind::CrossSitePost | Kind::ForeignOrigin => {
            let mut req = valid_request(addr, Method::POST, "/api/items", &token, &ip);
            *req.body_mut() = Full::new(Bytes::from_static(b"{\"title\":\"csrf\"}"));
            let headers = req.headers_mut();
            headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
            if kind == Kind::CrossSitePost {
                headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
            }
            send(&ctx.h1, req, Check::Any).await
        }
        Kind::DupCookie => {
            let mut req = valid_request(addr, Method::GET, "/api/items", &token, &ip);
            if rng.below(2) == 0 {
                req.headers_mut().insert(
                    COOKIE,
                    HeaderValue::from_static("auth_token=valid-1; auth_token=tossed"),
                );
            } else {
                req.headers_mut()
                    .append(COOKIE, HeaderValue::from_static("auth_token=tossed"));
            }
            send(&ctx.h1, req, Check::Any).await
        }
        Kind::BadCookie => {
            let mut req = valid_request(addr, Method::GET, "/api/items", &token, &ip);
            let value: &[u8] = rng.pick(&[
                &b"auth_token=valid-1 x"[..],
                b"auth_token=valid-\xc3\xa9",
                b"auth_token=valid\\1",
                b"auth_token=\"valid-1",
            ]);
            if let Ok(value) = HeaderValue::from_bytes(value) {
                req.headers_mut().insert(COOKIE, value);
            }
            send(&ctx.h1, req, Check::Any).await
        }
        Kind::OversizedDeclared => {
            let head = format!(
                "POST /api/items HTTP/1.1\r\nHost: {addr}\r\nCookie: auth_token=valid-{token}\r\n\
                 X-Forwarded-For: {ip}\r\nContent-Length: {}\r\n\r\n",
                16 * MAX_BODY
            );
            let mut bytes = head.into_bytes();
            bytes.extend(std::iter::repeat_n(b'o', 4096));
            raw_exchange(addr, &bytes).await
        }
        Kind::OversizedChunked => oversized_chunked(addr, &token, &ip).await,
        Kind::Smuggling => {
            let heads = [
                "POST /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                "GET /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nX-Folded: a\r\n b\r\n\r\n",
                "POST /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
                "POST /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
                "POST /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                "POST /api/items HTTP/1.1\r\nHost: h\r\nCookie: auth_token=valid-1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            ];
            let head = rng.pick(&heads).replace(
                "Host: h\r\n",
                &format!("Host: h\r\nX-Forwarded-For: {ip}\r\n"),
            );
            raw_exchange(addr, head.as_bytes()).await
        }
        Kind::Garbage => {
            let mut bytes: Vec<u8> = (0..rng.below(200) + 1).map(|_| rng.next() as u8).collect();
            bytes.extend_from_slice(b"\r\n\r\n");
            raw_exchange(addr, &bytes).await
        }
        Kind::HugeHead => {
            let head = format!(
                "GET /api/items HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n",
                "b".repeat(MAX_HEADER_BYTES + 4096)
            );
            raw_exchange(addr, head.as_bytes()).await
        }
        Kind::ManyHeaders => {
            let mut head = format!("GET /api/items HTTP/1.1\r\nHost: {addr}\r\n");
            for i in 0..150 {
                let _ = write!(head, "X-H{i}: {i}\r\n");
            }
            head.push_str("\r\n");
            raw_exchange(addr, head.as_bytes()).await
        }
        Kind::ConnectTrace => {
            let head = if rng.below(2) == 0 {
                "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_string()
            } else {
                format!(
                    "TRACE /api/items HTTP/1.1\r\nHost: {addr}\r\nCookie: auth_token=valid-1\r\n\r\n"
                )
            };
            raw_exchange(addr, head.as_bytes()).await
        }
        Kind::SlowHead => slow_head(addr, rng).await,
        Kind::SlowBody => slow_body(addr, &token, &ip, rng).await,
        Kind::SilentConn | Kind::ConnFlood => silent(addr, Duration::from_secs(6)).await,
    }
}
