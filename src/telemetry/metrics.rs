//! Prometheus metrics (`[metrics]`): the registry, the handles the request path touches, and the
//! listener that serves `GET /metrics`.
//!
//! Everything lives in one [`Metrics`], created once by `main` and shared across config reloads.
//! The request path never looks a label set up: `Metrics::for_routes` resolves one
//! `RouteMetrics` per configured route (plus one for the token handler's endpoints and one for
//! requests that matched no route) when a route table is loaded, and a request only clones an
//! `Arc` and bumps atomics. Requests by method and status class are resolved lazily, on first
//! use, so series that never happened are not exported as zeros.
//!
//! No label carries a user, a session, a token, a path remainder or an address: `route` is the
//! configured prefix (or `auth`, or `none`), the others are small fixed sets.
//!
//! With `[metrics]` absent there is no `Metrics` at all (an `Option` in the state): the request
//! path does no work for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::routing::RouteTable;
use crate::upstream::UpstreamClient;

mod listener;

pub use listener::serve_metrics;

/// The `route` label of requests to the token handler's endpoints (login, callback, ...).
pub const AUTH_ROUTE: &str = "auth";
/// The `route` label of requests that matched no route (404s and refusals before routing).
pub const NO_ROUTE: &str = "none";

/// The method classes of `cookiegate_requests_total`: the methods cookiegate forwards, and
/// `other` for anything else (a bounded set whatever clients send).
const METHOD_CLASSES: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The status classes of `cookiegate_requests_total`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A method's class: its index in [`METHOD_CLASSES`].
pub(crate) fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A status's class: its index in [`STATUS_CLASSES`] (a status is always 100..=999; anything
/// from 600 up counts as `5xx`).
pub(crate) fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// Why an exchange with an upstream failed, as counted by `cookiegate_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made (DNS, TCP, TLS).
    Connect,
    /// No connection or no response head within `upstream_timeout`, or a body idle past
    /// `idle_timeout`.
    Timeout,
    /// The connection broke (closed or reset) before or during the answer.
    Reset,
    /// The upstream's bytes were not valid HTTP (or not a valid WebSocket handshake).
    Protocol,
}

impl UpstreamFailure {
    const ALL: [Self; 4] = [Self::Connect, Self::Timeout, Self::Reset, Self::Protocol];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }
}

/// The guard that refused a request, as counted by `cookiegate_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A method the route (or cookiegate) does not take.
    Method,
    /// No route for the path.
    Route,
    /// A path that would climb out of the upstream's base path, or a malformed request.
    Path,
    /// Request smuggling shapes, unsupported transfer codings.
    Framing,
    /// The CSRF guard.
    Csrf,
    /// A WebSocket handshake refused (origin, route).
    Websocket,
    /// The rate limit.
    RateLimit,
    /// Size and count limits: body size, body timeout, open sockets per session, connections.
    Limits,
    /// No usable session cookie, or a session that ended.
    Session,
    /// The token handler refused a login or a logout token.
    Login,
}

impl Refusal {
    const ALL: [Self; 10] = [
        Self::Method,
        Self::Route,
        Self::Path,
        Self::Framing,
        Self::Csrf,
        Self::Websocket,
        Self::RateLimit,
        Self::Limits,
        Self::Session,
        Self::Login,
    ];

    /// The `guard` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Route => "route",
            Self::Path => "path",
            Self::Framing => "framing",
            Self::Csrf => "csrf",
            Self::Websocket => "websocket",
            Self::RateLimit => "rate_limit",
            Self::Limits => "limits",
            Self::Session => "session",
            Self::Login => "login",
        }
    }
}

/// What kind of long-lived stream is open (`cookiegate_open_streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// A `text/event-stream` answer being relayed.
    Sse,
    /// A spliced WebSocket.
    WebSocket,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabel {
    guard: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    upstream: String,
    state: &'static str,
}

/// Every metric cookiegate exports, in one explicit registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    head: Family<RouteLabel, Timing>,
    duration: Family<RouteLabel, Timing>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    received: Family<RouteLabel, Counter>,
    sent: Family<RouteLabel, Counter>,
    connections: Gauge,
    streams: [Gauge; 2],
    pool: Family<PoolLabels, Gauge>,
    refusals: [Counter; Refusal::ALL.len()],
    /// Store calls that failed (`[store]`): answered 503 (`unavailable`), or by this
    /// instance's own state (`fallback`, `on_failure = "open"`).
    store_failures: [Counter; 2],
    /// The upstream client of the state loaded last, read at scrape time for the pool gauges.
    client: Mutex<Weak<UpstreamClient>>,
}

impl Metrics {
    /// A registry with every metric registered, and the process start time set to now.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("cookiegate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method class and status class",
            requests.clone(),
        );
        let head = Family::<RouteLabel, Timing>::default();
        registry.register_with_unit(
            "response_head",
            "Time from the request head to the response head, by route",
            Unit::Seconds,
            head.clone(),
        );
        let duration = Family::<RouteLabel, Timing>::default();
        registry.register_with_unit(
            "request_duration",
            "Time from the request head to the end of the response body, by route",
            Unit::Seconds,
            duration.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed exchanges with upstreams, by route and kind (connect, timeout, reset, protocol)",
            upstream_errors.clone(),
        );
        let received = Family::<RouteLabel, Counter>::default();
        registry.register_with_unit(
            "received",
            "Request body bytes received from clients, by route",
            Unit::Bytes,
            received.clone(),
        );
        let sent = Family::<RouteLabel, Counter>::default();
        registry.register_with_unit(
            "sent",
            "Response body bytes sent to clients, by route",
            Unit::Bytes,
            sent.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open",
            connections.clone(),
        );
        let streams_family = Family::<StreamLabel, Gauge>::default();
        registry.register(
            "open_streams",
            "Long-lived streams open: Server-Sent Events answers (sse) and WebSockets (websocket)",
            streams_family.clone(),
        );
        // One at a time: a family's read guard lives to the end of its statement, and a
        // second `get_or_create` in the same statement would wait for it forever.
        let sse = streams_family
            .get_or_create(&StreamLabel { kind: "sse" })
            .clone();
        let websocket = streams_family
            .get_or_create(&StreamLabel { kind: "websocket" })
            .clone();
        let streams = [sse, websocket];
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "upstream_pool_connections",
            "Upstream keep-alive connections, by upstream and state (idle in the pool, active in an exchange)",
            pool.clone(),
        );
        let refusals_family = Family::<GuardLabel, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused by cookiegate itself, by the guard that refused them",
            refusals_family.clone(),
        );
        let refusals = Refusal::ALL.map(|guard| {
            refusals_family
                .get_or_create(&GuardLabel {
                    guard: guard.as_str(),
                })
                .clone()
        });
        let store_family = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "store_failures",
            "Shared-store calls that failed, by what the request got instead: unavailable (a 503) or fallback (this instance's own state)",
            store_family.clone(),
        );
        let store_unavailable = store_family
            .get_or_create(&OutcomeLabel {
                outcome: "unavailable",
            })
            .clone();
        let store_fallback = store_family
            .get_or_create(&OutcomeLabel {
                outcome: "fallback",
            })
            .clone();
        let store_failures = [store_unavailable, store_fallback];
        let start: Gauge = Gauge::default();
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        registry.register_with_unit(
            "process_start_time",
            "When the process started, in seconds since the Unix epoch",
            Unit::Seconds,
            start,
        );
        Self {
            registry: root,
            requests,
            head,
            duration,
            upstream_errors,
            received,
            sent,
            connections,
            streams,
            pool,
            refusals,
            store_failures,
            client: Mutex::new(Weak::new()),
        }
    }

    /// The handles of a route table's routes, resolved once (at startup, and again for the
    /// table of a reloaded config). `client` is the state's upstream client, whose pool the
    /// scrape reports from now on.
    pub(crate) fn for_routes(
        self: &Arc<Self>,
        routes: &RouteTable,
        client: &Arc<UpstreamClient>,
    ) -> Observer {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(client);
        let mut by_index: Vec<Arc<RouteMetrics>> = Vec::new();
        let mut table = routes.in_file_order();
        table.sort_by_key(|r| r.index);
        for route in table {
            // `index` is the position in the file: 0..n with no gaps.
            by_index.push(Arc::new(self.route(route.prefix.as_str())));
        }
        Observer {
            routes: by_index,
            auth: Arc::new(self.route(AUTH_ROUTE)),
            none: Arc::new(self.route(NO_ROUTE)),
            metrics: self.clone(),
        }
    }

    fn route(self: &Arc<Self>, route: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: route.to_string(),
        };
        RouteMetrics {
            route: route.to_string(),
            requests: Default::default(),
            head: self.head.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
            upstream_errors: UpstreamFailure::ALL.map(|kind| {
                self.upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        route: route.to_string(),
                        kind: kind.as_str(),
                    })
                    .clone()
            }),
            received: self.received.get_or_create(&label).clone(),
            sent: self.sent.get_or_create(&label).clone(),
            metrics: Arc::downgrade(self),
        }
    }

    /// Counts a refusal by `guard`.
    /// Counts a failed store call: `fell_back` when this instance's own state answered.
    pub(crate) fn store_failed(&self, fell_back: bool) {
        self.store_failures[usize::from(fell_back)].inc();
    }

    /// Counts a refusal by `guard`.
    pub(crate) fn refused(&self, guard: Refusal) {
        if let Some(counter) = Refusal::ALL
            .iter()
            .position(|g| *g == guard)
            .and_then(|i| self.refusals.get(i))
        {
            counter.inc();
        }
    }

    /// Counts a client connection open until the returned guard is dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenGuard {
        self.connections.inc();
        OpenGuard(self.connections.clone())
    }

    /// Counts a stream open until the returned guard is dropped.
    pub(crate) fn stream_opened(&self, kind: StreamKind) -> OpenGuard {
        let gauge = &self.streams[kind as usize];
        gauge.inc();
        OpenGuard(gauge.clone())
    }

    /// The whole registry in the Prometheus text format (version 0.0.4), with the pool gauges
    /// read now.
    pub fn render(&self) -> String {
        self.pool.clear();
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        if let Some(client) = client {
            for (upstream, idle, active) in client.pool_counts() {
                for (state, n) in [("idle", idle), ("active", active)] {
                    self.pool
                        .get_or_create(&PoolLabels {
                            upstream: upstream.clone(),
                            state,
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements its gauge when dropped: an open connection or stream.
#[derive(Debug)]
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The handles of one route table: what the request path uses.
#[derive(Debug)]
pub(crate) struct Observer {
    routes: Vec<Arc<RouteMetrics>>,
    auth: Arc<RouteMetrics>,
    none: Arc<RouteMetrics>,
    metrics: Arc<Metrics>,
}

impl Observer {
    /// The handles of the route with this `index` (its place in the file).
    pub(crate) fn route(&self, index: usize) -> &Arc<RouteMetrics> {
        self.routes.get(index).unwrap_or(&self.none)
    }

    /// The handles of the token handler's endpoints.
    pub(crate) fn auth(&self) -> &Arc<RouteMetrics> {
        &self.auth
    }

    /// The handles of requests that matched no route.
    pub(crate) fn none(&self) -> &Arc<RouteMetrics> {
        &self.none
    }

    /// The shared metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// One route's handles, resolved once.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    route: String,
    /// By method class, then status class; resolved on first use.
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    head: Timing,
    duration: Timing,
    upstream_errors: [Counter; UpstreamFailure::ALL.len()],
    received: Counter,
    sent: Counter,
    metrics: Weak<Metrics>,
}

impl RouteMetrics {
    /// Records a finished request: its status, the time taken, the body bytes each way.
    pub(crate) fn finished(
        &self,
        method: usize,
        status: StatusCode,
        elapsed: Duration,
        received: u64,
        sent: u64,
    ) {
        let status = status_class(status);
        if let Some(cell) = self.requests.get(method).and_then(|row| row.get(status)) {
            let counter = cell.get_or_init(|| match self.metrics.upgrade() {
                Some(metrics) => metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        method: METHOD_CLASSES[method],
                        status: STATUS_CLASSES[status],
                    })
                    .clone(),
                None => Counter::default(),
            });
            counter.inc();
        }
        self.duration.observe(elapsed);
        if received > 0 {
            self.received.inc_by(received);
        }
        if sent > 0 {
            self.sent.inc_by(sent);
        }
    }

    /// Records the time to the response head.
    pub(crate) fn head(&self, elapsed: Duration) {
        self.head.observe(elapsed);
    }

    /// Counts a failed upstream exchange.
    pub(crate) fn upstream_failed(&self, kind: UpstreamFailure) {
        self.upstream_errors[kind as usize].inc();
    }
}

/// Bucket bounds of the timing histograms, in seconds: from 1 ms (a proxy's own overhead) to a
/// minute (a slow upstream).
const BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];
/// [`BOUNDS`] in nanoseconds.
const BOUNDS_NANOS: [u64; 14] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    60_000_000_000,
];

/// A histogram of durations made of atomics only: an observation is a short search and three
/// relaxed additions, no lock (prometheus-client's own `Histogram` takes a mutex).
#[derive(Debug, Clone, Default)]
pub(crate) struct Timing(Arc<TimingCells>);

#[derive(Debug, Default)]
struct TimingCells {
    /// Observations per bucket (not cumulative); over the last bound only `count` has them.
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Timing {
    /// Records one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS.partition_point(|bound| *bound < nanos);
        if let Some(bucket) = self.0.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl TypedMetric for Timing {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timing {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .zip(&self.0.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        // Read after the buckets: a concurrent observation shows in the count, never in a
        // bucket the count does not cover.
        let count = self.0.count.load(Ordering::Relaxed);
        let in_buckets: u64 = buckets.iter().map(|(_, n)| n).sum();
        let count = count.max(in_buckets);
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn methods_fall_in_their_class_and_the_rest_in_other() {
        let cases = [
            ("GET", "GET"),
            ("HEAD", "HEAD"),
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("PATCH", "PATCH"),
            ("DELETE", "DELETE"),
            ("OPTIONS", "OPTIONS"),
            ("PROPFIND", "other"),
            ("get", "other"),
            ("CONNECT", "other"),
        ];
        for (method, class) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(METHOD_CLASSES[method_class(&method)], class, "{method}");
        }
    }

    #[test]
    fn statuses_fall_in_their_hundred() {
        let cases = [
            (100, "1xx"),
            (101, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (499, "4xx"),
            (500, "5xx"),
            (504, "5xx"),
            (999, "5xx"),
        ];
        for (status, class) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(STATUS_CLASSES[status_class(status)], class, "{status}");
        }
    }

    proptest! {
        /// Every valid status has a class, and it is its hundred (600 and up count as 5xx).
        #[test]
        fn every_status_has_its_class(code in 100u16..1000) {
            let status = StatusCode::from_u16(code).unwrap();
            let class = status_class(status);
            prop_assert!(class < STATUS_CLASSES.len());
            if code < 600 {
                prop_assert_eq!(class, usize::from(code / 100) - 1);
            } else {
                prop_assert_eq!(class, 4);
            }
        }

        /// Any method, even an extension one, lands in a known class.
        #[test]
        fn every_method_has_a_class(name in "[A-Za-z]{1,12}") {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            let class = method_class(&method);
            prop_assert!(class < METHOD_CLASSES.len());
            prop_assert!(METHOD_CLASSES[class] == "other" || METHOD_CLASSES[class] == name);
        }
    }

    #[test]
    fn timing_buckets_hold_each_duration_under_its_first_bound_at_or_above() {
        let timing = Timing::default();
        timing.observe(Duration::from_micros(500));
        timing.observe(Duration::from_millis(1));
        timing.observe(Duration::from_millis(3));
        timing.observe(Duration::from_secs(120));
        let cells = &timing.0;
        assert_eq!(cells.buckets[0].load(Ordering::Relaxed), 2, "<= 1 ms");
        assert_eq!(cells.buckets[2].load(Ordering::Relaxed), 1, "<= 5 ms");
        assert_eq!(cells.count.load(Ordering::Relaxed), 4);
        let in_buckets: u64 = cells
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        assert_eq!(in_buckets, 3, "two minutes is only in +Inf");
    }

    #[test]
    fn the_scrape_names_routes_and_counts_requests() {
        let metrics = Arc::new(Metrics::new());
        let routes = crate::Config::from_toml_str(
            "[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9\"\n",
        )
        .unwrap()
        .routes;
        let client = Arc::new(
            crate::proxy::forward::build_client(&routes, None, Duration::from_secs(1)).unwrap(),
        );
        let observer = metrics.for_routes(&routes, &client);
        observer.route(0).finished(
            method_class(&Method::GET),
            StatusCode::OK,
            Duration::from_millis(2),
            0,
            42,
        );
        metrics.refused(Refusal::Csrf);
        let text = metrics.render();
        assert!(
            text.contains(
                "cookiegate_requests_total{route=\"/api\",method=\"GET\",status=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("cookiegate_sent_bytes_total{route=\"/api\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("cookiegate_refusals_total{guard=\"csrf\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cookiegate_response_head_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(
                "cookiegate_upstream_pool_connections{upstream=\"127.0.0.1:9\",state=\"idle\"} 0"
            ),
            "{text}"
        );
    }
}
