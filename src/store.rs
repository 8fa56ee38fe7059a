//! State shared by every instance, on Valkey or Redis (`[store]`).
//!
//! One process keeps its rate-limit buckets, refresh locks and revocations in memory; several
//! instances behind a load balancer must share them, or a limit of 20/s becomes 20/s per
//! instance, two instances redeem the same rotating refresh token (and the IdP revokes the
//! grant), and a logout reaches only the instance that received it. This module is the store's
//! client, and every operation the proxy asks of it:
//!
//! - [`Store::rate_limit`]: one GCRA step in one atomic script, the same arithmetic as the
//!   in-process limiter (`governor`: emission interval `t`, tolerance `t * (burst - 1)`), on the
//!   store's clock (`TIME`), so instances with drifting clocks agree;
//! - [`Store::try_lock`] / [`Store::unlock`]: a per-session lock (`SET NX PX`, released by a
//!   compare-and-delete script, so a lock that expired and was taken by another instance is
//!   never released by the first), and [`Store::put`] / [`Store::get`] for the result the
//!   holder leaves for the others (the refresh's grace result);
//! - [`Store::revoke`] / [`Store::revoked`]: the revocation list, each entry expiring with the
//!   sessions it names.
//!
//! Keys. Every key starts with `key_prefix`; what names a session, a user or a client is a
//! SHA-256 of it ([`Store::key`]), never a cookie value, a token or an IP in plain text. The
//! part of a key between braces is its cluster hash tag: everything of one session (lock,
//! grace result, stored tokens) lands in one hash slot.
//!
//! Failure. Every call is bounded by `timeout`; the client reconnects by itself
//! (`ConnectionManager`, or the async cluster client, which also follows `MOVED`/`ASK`). A
//! failure is a [`StoreError`], never a refusal of the user's session: callers answer 503 or
//! fall back to per-process state (`on_failure`), and no caller clears a cookie because of it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, Script, Value};

/// Where the store is and how to talk to it (`[store]`, validated).
#[derive(Clone)]
pub struct StoreSettings {
    /// One node (`redis://` or `rediss://`), or the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are the nodes of a cluster.
    pub cluster: bool,
    /// The password, from the environment (`password_env`); `Debug` hides it.
    pub password: Option<String>,
    /// Prepended to every key.
    pub key_prefix: String,
    /// Per call; exceeded = a store failure.
    pub timeout: Duration,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a request that needs the store gets while the store fails (`on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// 503 JSON with `Retry-After`: no limit is bypassed, no revocation missed, no refresh
    /// token redeemed twice. Routes that need nothing from the store keep working.
    Closed,
    /// Per-process state (the limiter, revocations and refresh flights of this instance),
    /// logged once per incident: availability over the guarantees across instances.
    Open,
}

impl OnFailure {
    /// Parses `closed` or `open`.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "closed" => Ok(Self::Closed),
            "open" => Ok(Self::Open),
            other => Err(format!("`{other}` must be closed or open")),
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
        }
    }
}

/// Where the token handler keeps a session's tokens (`sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStorage {
    /// In the encrypted cookie (no store call to open a session).
    Cookie,
    /// In the store, encrypted with the session keys; the cookie holds a random id.
    Store,
}

impl SessionStorage {
    /// Parses `cookie` or `store`.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cookie" => Ok(Self::Cookie),
            "store" => Ok(Self::Store),
            other => Err(format!("`{other}` must be cookie or store")),
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::Store => "store",
        }
    }
}

/// Checks a store URL: `redis://` or `rediss://`, a host, no password (that comes from
/// `password_env`), and no database number for a cluster (a cluster has only database 0).
///
/// # Errors
/// What is wrong, without repeating the URL (it might hold a password).
pub fn check_url(url: &str, cluster: bool) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must be a URL like redis://127.0.0.1:6379/0".into());
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err(format!(
            "scheme `{scheme}` must be redis or rediss (TLS); Unix sockets are not supported"
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(
                "holds a password: put it in an environment variable and name that variable in \
                 store.password_env"
                    .into(),
            );
        }
    }
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("is not a usable store URL ({:?})", e.kind()))?;
    if cluster && info.redis_settings().db() != 0 {
        return Err("a cluster has only database 0: leave the /db part out".into());
    }
    Ok(())
}

/// A store URL for logs and `Debug`: any `user:password@` part is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://<credentials>@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Why a store call failed. Its `Display` never holds a key or a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within `timeout`.
    #[error("the store did not answer in time")]
    Timeout,
    /// The connection failed or the store answered with an error.
    #[error("store error: {0}")]
    Failed(String),
}

impl From<redis::ParsingError> for StoreError {
    fn from(err: redis::ParsingError) -> Self {
        // Not its text: it may quote the value.
        let _ = err;
        Self::Failed("an answer of an unexpected type".into())
    }
}

impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        if err.is_timeout() {
            return Self::Timeout;
        }
        // The kind and the server's message; redis-rs errors carry no argument values.
        Self::Failed(err.to_string())
    }
}

/// A store call's outcome.
pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The store's client: cheap to clone (one multiplexed connection per node, shared).
#[derive(Clone)]
pub struct Store {
    /// Made on first use, not at startup: a store that is down when cookiegate starts must not
    /// keep it from serving the routes that do not need it. Once made, the connection
    /// reconnects by itself.
    conn: std::sync::Arc<Connecting>,
    settings: std::sync::Arc<StoreSettings>,
    gcra: Script,
    unlock: Script,
    first_then_set: Script,
    replace_if: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The connection, once made, and the attempt making it.
#[derive(Default)]
struct Connecting {
    made: tokio::sync::OnceCell<Conn>,
    /// An attempt runs (in a task of its own).
    running: std::sync::atomic::AtomicBool,
    /// Signalled when an attempt ends.
    ended: tokio::sync::Notify,
    /// Why the last attempt failed.
    failure: std::sync::Mutex<Option<String>>,
}

/// How long an attempt to connect may take: longer than one call's `timeout` (a TLS handshake
/// and authentication across a network can take more), and never waited for by a request
/// beyond its own `timeout` (the attempt goes on in its own task).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One GCRA step. KEYS[1]: the bucket (its theoretical arrival time, microseconds on the
/// store's clock). ARGV[1]: the emission interval `t`, ARGV[2]: the tolerance `tau`, both in
/// microseconds. Returns 0 when the request conforms (and records it), else how many
/// microseconds until it would.
const GCRA: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = tonumber(stored) end
local earliest = tat - tau
if now < earliest then
  return math.ceil(earliest - now)
end
if tat < now then tat = now end
local nxt = tat + t
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return 0
";

/// Sets KEYS[1] (until ARGV[1], unix seconds) if it is not set, and then, only then, KEYS[2]
/// to ARGV[2] until ARGV[3]; returns 1 when it did. Both keys must share a hash slot.
const FIRST_THEN_SET: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'EXAT', ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[2], 'EXAT', ARGV[3])
  return 1
end
return 0
";

/// Sets KEYS[1] to ARGV[2] (for ARGV[3] ms) only if it still holds ARGV[1]; returns 1 when it
/// did.
const REPLACE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes KEYS[1] only if it still holds ARGV[1] (the holder's token).
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Store {
    /// The client, not connected yet: the first call connects.
    pub fn new(settings: &StoreSettings) -> Self {
        Self {
            conn: std::sync::Arc::default(),
            settings: std::sync::Arc::new(settings.clone()),
            gcra: Script::new(GCRA),
            unlock: Script::new(UNLOCK),
            first_then_set: Script::new(FIRST_THEN_SET),
            replace_if: Script::new(REPLACE_IF),
        }
    }

    /// The client, connected (and checked with `PING`): a wrong URL or password fails here
    /// with its reason.
    ///
    /// # Errors
    /// When the store cannot be reached within `timeout`, or refuses us.
    pub async fn connect(settings: &StoreSettings) -> StoreResult<Self> {
        let store = Self::new(settings);
        store.ping().await?;
        Ok(store)
    }

    /// `PING`: whether the store answers now.
    ///
    /// # Errors
    /// A store failure.
    pub async fn ping(&self) -> StoreResult<()> {
        let _: String = self.query(redis::cmd("PING")).await?;
        Ok(())
    }

    /// The connection. If it is not made yet, an attempt runs in a task of its own (bounded by
    /// [`CONNECT_TIMEOUT`]); the caller waits for it within its own `timeout` only.
    async fn conn(&self) -> StoreResult<&Conn> {
        use std::sync::atomic::Ordering;
        if let Some(conn) = self.conn.made.get() {
            return Ok(conn);
        }
        let ended = self.conn.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if let Some(conn) = self.conn.made.get() {
            return Ok(conn);
        }
        if !self.conn.running.swap(true, Ordering::SeqCst) {
            let store = self.clone();
            tokio::spawn(async move {
                let made = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    store.conn.made.get_or_try_init(|| store.open_connection()),
                )
                .await;
                let failure = match made {
                    Ok(Ok(_)) => None,
                    Ok(Err(err)) => Some(err.to_string()),
                    Err(_) => Some(format!("no connection within {CONNECT_TIMEOUT:?}")),
                };
                *store
                    .conn
                    .failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
                store.conn.running.store(false, Ordering::SeqCst);
                store.conn.ended.notify_waiters();
            });
        }
        ended.await;
        self.conn.made.get().ok_or_else(|| {
            let failure = self
                .conn
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            StoreError::Failed(failure.unwrap_or_else(|| "cannot connect".into()))
        })
    }

    /// One attempt to connect.
    async fn open_connection(&self) -> StoreResult<Conn> {
        let settings = &self.settings;
        if settings.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(settings.urls.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(settings.timeout);
            if let Some(password) = &settings.password {
                builder = builder.password(password.clone());
            }
            let client = builder.build()?;
            Ok::<_, StoreError>(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let mut info = redis::IntoConnectionInfo::into_connection_info(
                settings.urls.first().map_or("", String::as_str),
            )?;
            if let Some(password) = &settings.password {
                let redis_settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(redis_settings);
            }
            let client = redis::Client::open(info)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(settings.timeout))
                .set_max_delay(Duration::from_secs(2));
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
    }

    /// The bound on one call (`timeout`).
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Replaces the value of `key` with `new` (for `ttl`) only if it still is `old`: true when
    /// it did. A write that must not undo another instance's newer one.
    ///
    /// # Errors
    /// A store failure.
    pub async fn replace_if(
        &self,
        key: &str,
        old: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> StoreResult<bool> {
        let replaced: i64 = self
            .script(
                &self.replace_if,
                &[key],
                &[old, new, millis(ttl).to_string().as_bytes()],
            )
            .await?;
        Ok(replaced == 1)
    }

    /// The key for `kind` and the thing it names (a session id, a `sid`, a client key): the
    /// prefix, the kind, and a SHA-256 of `name` (128 bits, hex) as the cluster hash tag.
    pub fn key(&self, kind: &str, name: &[u8]) -> String {
        key(&self.settings.key_prefix, kind, name)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: Cmd) -> StoreResult<T> {
        let call = async {
            let value: Value = match self.conn().await? {
                Conn::Single(c) => c.clone().send_packed_command(&cmd).await?,
                Conn::Cluster(c) => {
                    redis::aio::ConnectionLike::req_packed_command(&mut c.clone(), &cmd).await?
                }
            };
            Ok::<T, StoreError>(redis::from_redis_value(value)?)
        };
        tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> StoreResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let call = async {
            Ok::<T, StoreError>(match self.conn().await? {
                Conn::Single(c) => invocation.invoke_async(&mut c.clone()).await?,
                Conn::Cluster(c) => invocation.invoke_async(&mut c.clone()).await?,
            })
        };
        tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// One request against the bucket `key` allowing `burst` at once and one per `interval`
    /// sustained: `Ok(None)` conforms (and is counted), `Ok(Some(wait))` is over the limit
    /// until `wait` has passed.
    ///
    /// # Errors
    /// A store failure (nothing was counted, or the answer was lost).
    pub async fn rate_limit(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> StoreResult<Option<Duration>> {
        let (t, tau) = gcra_params(interval, burst);
        let wait: u64 = self
            .script(
                &self.gcra,
                &[key],
                &[t.to_string().as_bytes(), tau.to_string().as_bytes()],
            )
            .await?;
        Ok((wait > 0).then(|| Duration::from_micros(wait)))
    }

    /// Takes the lock `key` for `ttl` with `token` (random, the holder's own): true when taken.
    ///
    /// # Errors
    /// A store failure: the lock may or may not be held (it expires after `ttl` either way).
    pub async fn try_lock(&self, key: &str, token: &[u8], ttl: Duration) -> StoreResult<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(token).arg("NX").arg("PX").arg(millis(ttl));
        let answer: Option<String> = self.query(cmd).await?;
        Ok(answer.is_some())
    }

    /// Releases the lock `key` if `token` still holds it; true when it did.
    ///
    /// # Errors
    /// A store failure (the lock then expires by itself).
    pub async fn unlock(&self, key: &str, token: &[u8]) -> StoreResult<bool> {
        let deleted: i64 = self.script(&self.unlock, &[key], &[token]).await?;
        Ok(deleted == 1)
    }

    /// Stores `value` under `key` for `ttl`.
    ///
    /// # Errors
    /// A store failure.
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(millis(ttl));
        let _: Value = self.query(cmd).await?;
        Ok(())
    }

    /// The value under `key`, if any.
    ///
    /// # Errors
    /// A store failure.
    pub async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query(cmd).await
    }

    /// Deletes `key`.
    ///
    /// # Errors
    /// A store failure.
    pub async fn delete(&self, key: &str) -> StoreResult<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let _: i64 = self.query(cmd).await?;
        Ok(())
    }

    /// Records a revocation under `key` (from [`Store::key`]): `at` is when it happened (unix
    /// seconds; sessions created later are not revoked by a `sid` or `sub` entry), kept until
    /// `until` (unix seconds), when the sessions it names would have expired anyway.
    ///
    /// # Errors
    /// A store failure: the revocation is not recorded, and the caller must say so.
    pub async fn revoke(&self, key: &str, at: u64, until: u64) -> StoreResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(at)
            .arg("EXAT")
            .arg(until.max(at.saturating_add(1)));
        let _: Value = self.query(cmd).await?;
        Ok(())
    }

    /// Marks `first` as seen (until `first_until`, unix seconds) and, atomically and only if
    /// it was not seen before, sets `key` to `at` until `until` (unix seconds): true when it
    /// was the first time. `first` and `key` must share a hash slot.
    ///
    /// # Errors
    /// A store failure: neither was set, or the answer was lost.
    pub async fn first_then_revoke(
        &self,
        first: &str,
        first_until: u64,
        key: &str,
        at: u64,
        until: u64,
    ) -> StoreResult<bool> {
        let set: i64 = self
            .script(
                &self.first_then_set,
                &[first, key],
                &[
                    first_until.max(at.saturating_add(1)).to_string().as_bytes(),
                    at.to_string().as_bytes(),
                    until.max(at.saturating_add(1)).to_string().as_bytes(),
                ],
            )
            .await?;
        Ok(set == 1)
    }

    /// When the revocation under `key` happened, if there is one.
    ///
    /// # Errors
    /// A store failure.
    pub async fn revoked(&self, key: &str) -> StoreResult<Option<u64>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query(cmd).await
    }
}

/// The store as the pipeline uses it: the client, the failure policy, and the incident log
/// (a failing store is logged when it starts failing and when it is back, not per request).
#[derive(Debug)]
pub(crate) struct SharedState {
    /// The client.
    pub(crate) store: Store,
    /// What a request that needs the store gets while it fails.
    pub(crate) on_failure: OnFailure,
    /// Where the token handler keeps sessions' tokens.
    pub(crate) sessions: SessionStorage,
    /// Whether the last call failed (an incident is open).
    failing: std::sync::atomic::AtomicBool,
    /// Calls answered by per-process state instead (`on_failure = "open"`).
    fallbacks: std::sync::atomic::AtomicU64,
    /// Where failures are counted (`cookiegate_store_failures_total`), when `[metrics]` is on.
    metrics: Option<std::sync::Arc<crate::telemetry::metrics::Metrics>>,
}

impl SharedState {
    /// The shared state for `[store]` (not connected until first used).
    pub(crate) fn new(
        config: &crate::config::StoreConfig,
        metrics: Option<std::sync::Arc<crate::telemetry::metrics::Metrics>>,
    ) -> Self {
        Self {
            store: Store::new(&config.settings),
            on_failure: config.on_failure,
            sessions: config.sessions,
            failing: std::sync::atomic::AtomicBool::new(false),
            fallbacks: std::sync::atomic::AtomicU64::new(0),
            metrics,
        }
    }

    /// A call's outcome as the pipeline acts on it: `Ok(Some(value))` when the store
    /// answered; when it failed, `Ok(None)` with `on_failure = "open"` (the caller falls back
    /// to per-process state) or the 503 with `on_failure = "closed"`. Never a reason to end
    /// a session. `what` names the step for the log.
    pub(crate) fn settle<T>(
        &self,
        what: &'static str,
        outcome: StoreResult<T>,
    ) -> Result<Option<T>, crate::error::ProxyError> {
        use std::sync::atomic::Ordering;
        match outcome {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        fallbacks = self.fallbacks.load(Ordering::Relaxed),
                        "the shared store answers again"
                    );
                }
                Ok(Some(value))
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        step = what,
                        error = %err,
                        on_failure = self.on_failure.as_str(),
                        "the shared store is failing: {}",
                        match self.on_failure {
                            OnFailure::Closed => "requests that need it get 503 until it is back",
                            OnFailure::Open => "this instance uses its own state until it is back",
                        }
                    );
                }
                if let Some(metrics) = &self.metrics {
                    metrics.store_failed(self.on_failure == OnFailure::Open);
                }
                match self.on_failure {
                    OnFailure::Closed => Err(crate::error::ProxyError::StoreUnavailable(err)),
                    OnFailure::Open => {
                        self.fallbacks.fetch_add(1, Ordering::Relaxed);
                        Ok(None)
                    }
                }
            }
        }
    }
}

impl SharedState {
    fn session_key(&self, id: &str) -> String {
        self.store.key("session", id.as_bytes())
    }

    /// Whether the store knows `session` as revoked (logged out on any instance, or
    /// back-channel logged out before it was created).
    pub(crate) async fn is_revoked(
        &self,
        session: crate::auth::revocation::SessionRef<'_>,
    ) -> StoreResult<bool> {
        let by_id = self.session_key(session.id) + ":revoked";
        let by_sid = session.sid.map(|sid| self.store.key("sid", sid.as_bytes()));
        let by_sub = self.store.key("sub", session.sub.as_bytes());
        let (id, sid, sub) = tokio::join!(
            self.store.revoked(&by_id),
            async {
                match &by_sid {
                    Some(key) => self.store.revoked(key).await,
                    None => Ok(None),
                }
            },
            self.store.revoked(&by_sub),
        );
        Ok(id?.is_some()
            || sid?.is_some_and(|at| session.issued_at <= at)
            || sub?.is_some_and(|at| session.issued_at <= at))
    }

    /// Records `revoke` for every instance.
    pub(crate) async fn revoke(
        &self,
        revoke: crate::auth::revocation::Revoke<'_>,
    ) -> StoreResult<()> {
        use crate::auth::revocation::Revoke;
        let now = crate::auth::oidc::now();
        match revoke {
            Revoke::Session { id, until } => {
                self.store
                    .revoke(&(self.session_key(id) + ":revoked"), now, until)
                    .await
            }
            Revoke::Sid { sid, at, until } => {
                self.store
                    .revoke(&self.store.key("sid", sid.as_bytes()), at, until)
                    .await
            }
            Revoke::Sub { sub, at, until } => {
                self.store
                    .revoke(&self.store.key("sub", sub.as_bytes()), at, until)
                    .await
            }
        }
    }

    /// A back-channel logout for every instance: the logout token's `jti` is marked seen and
    /// the `sid` or `sub` revoked in one atomic step, so a replay (on any instance) revokes
    /// nothing, and a failure leaves nothing half done (the IdP may send the token again).
    /// True when the `jti` was new.
    pub(crate) async fn backchannel_logout(
        &self,
        revoke: crate::auth::revocation::Revoke<'_>,
        jti: &str,
        jti_until: u64,
    ) -> StoreResult<bool> {
        use crate::auth::revocation::Revoke;
        use std::fmt::Write as _;
        let (key, at, until) = match revoke {
            Revoke::Sid { sid, at, until } => (self.store.key("sid", sid.as_bytes()), at, until),
            Revoke::Sub { sub, at, until } => (self.store.key("sub", sub.as_bytes()), at, until),
            Revoke::Session { id, until } => (
                self.session_key(id) + ":revoked",
                crate::auth::oidc::now(),
                until,
            ),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, jti.as_bytes());
        let mut seen = key.clone() + ":jti:";
        for byte in &digest.as_ref()[..16] {
            let _ = write!(seen, "{byte:02x}");
        }
        self.store
            .first_then_revoke(&seen, jti_until, &key, at, until)
            .await
    }

    fn handle_key(&self, handle: &str) -> String {
        self.store.key("handle", handle.as_bytes())
    }

    /// Stores the sealed session of `handle` until `until` (unix seconds).
    pub(crate) async fn put_session(
        &self,
        handle: &str,
        sealed: &str,
        until: u64,
    ) -> StoreResult<()> {
        let ttl = Duration::from_secs(until.saturating_sub(crate::auth::oidc::now()).max(1));
        self.store
            .put(&self.handle_key(handle), sealed.as_bytes(), ttl)
            .await
    }

    /// Seals `handle`'s session again (with the first key) only if the store still holds
    /// `old`: a refresh on another instance in between is never undone.
    pub(crate) async fn reseal_session(
        &self,
        handle: &str,
        old: &str,
        new: &str,
        until: u64,
    ) -> StoreResult<bool> {
        let ttl = Duration::from_secs(until.saturating_sub(crate::auth::oidc::now()).max(1));
        self.store
            .replace_if(
                &self.handle_key(handle),
                old.as_bytes(),
                new.as_bytes(),
                ttl,
            )
            .await
    }

    /// The sealed session of `handle`, if the store has it.
    pub(crate) async fn get_session(&self, handle: &str) -> StoreResult<Option<Vec<u8>>> {
        self.store.get(&self.handle_key(handle)).await
    }

    /// Deletes the session of `handle`.
    pub(crate) async fn delete_session(&self, handle: &str) -> StoreResult<()> {
        self.store.delete(&self.handle_key(handle)).await
    }

    /// The refresh lock of session `id`, and where its outcome for the refresh token hashed
    /// as `token_key` is left for the other instances (one hash slot: the session's).
    pub(crate) fn refresh_keys(&self, id: &str, token_key: &[u8; 32]) -> (String, String) {
        use std::fmt::Write as _;
        let session = self.session_key(id);
        let mut grace = session.clone() + ":refreshed:";
        for byte in &token_key[..16] {
            let _ = write!(grace, "{byte:02x}");
        }
        (session + ":refresh-lock", grace)
    }
}

/// `key_prefix` + `kind` + `:{` + hex of the first 128 bits of SHA-256(`name`) + `}`.
pub(crate) fn key(prefix: &str, kind: &str, name: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, name);
    let mut key = String::with_capacity(prefix.len() + kind.len() + 35);
    key.push_str(prefix);
    key.push_str(kind);
    key.push_str(":{");
    for byte in &digest.as_ref()[..16] {
        let _ = write!(key, "{byte:02x}");
    }
    key.push('}');
    key
}

/// The GCRA parameters in microseconds: the emission interval `t` and the tolerance
/// `tau = t * (burst - 1)`, as `governor` computes them.
fn gcra_params(interval: Duration, burst: u32) -> (u64, u64) {
    let t = u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    (t, t.saturating_mul(u64::from(burst.max(1) - 1)))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_what_they_name_and_tag_one_slot() {
        let a = key("cookiegate:", "s", b"session-1");
        assert!(a.starts_with("cookiegate:s:{") && a.ends_with('}'), "{a}");
        assert_eq!(a.len(), "cookiegate:s:{".len() + 32 + 1);
        assert!(!a.contains("session-1"));
        assert_eq!(a, key("cookiegate:", "s", b"session-1"));
        assert_ne!(a, key("cookiegate:", "s", b"session-2"));
        assert_ne!(a, key("cookiegate:", "rv", b"session-1"));
    }

    #[test]
    fn gcra_parameters_follow_governor() {
        // 20/s with a burst of 40: one every 50 ms, 39 intervals of tolerance.
        assert_eq!(
            gcra_params(Duration::from_millis(50), 40),
            (50_000, 50_000 * 39)
        );
        assert_eq!(gcra_params(Duration::from_millis(50), 1), (50_000, 0));
        assert_eq!(gcra_params(Duration::ZERO, 0), (1, 0));
    }

    #[test]
    fn store_urls_are_checked_without_repeating_them() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "rediss://cache.internal:6380",
            "redis://user@10.0.0.1:6379/2",
        ] {
            assert_eq!(check_url(good, false), Ok(()), "{good}");
        }
        assert_eq!(check_url("redis://10.0.0.1:7000", true), Ok(()));
        let bad = [
            ("127.0.0.1:6379", false, "must be a URL"),
            ("http://127.0.0.1:6379", false, "scheme `http`"),
            ("unix:///run/redis.sock", false, "scheme `unix`"),
            ("redis://:hunter2@10.0.0.1:6379", false, "holds a password"),
            (
                "redis://user:hunter2@10.0.0.1:6379",
                false,
                "holds a password",
            ),
            ("redis://10.0.0.1:7000/3", true, "only database 0"),
        ];
        for (url, cluster, expected) in bad {
            let problem = check_url(url, cluster).expect_err(url);
            assert!(problem.contains(expected), "{url}: {problem}");
            assert!(!problem.contains("hunter2"), "{url}: {problem}");
        }
    }

    #[test]
    fn failure_policies_and_session_storage_parse_their_spellings() {
        for policy in [OnFailure::Closed, OnFailure::Open] {
            assert_eq!(OnFailure::parse(policy.as_str()), Ok(policy));
        }
        for storage in [SessionStorage::Cookie, SessionStorage::Store] {
            assert_eq!(SessionStorage::parse(storage.as_str()), Ok(storage));
        }
        assert!(OnFailure::parse("fail-open").is_err());
        assert!(SessionStorage::parse("redis").is_err());
    }

    #[test]
    fn urls_lose_their_credentials_for_display() {
        assert_eq!(
            redact_url("redis://user:secret@10.0.0.1:6379/0"),
            "redis://<credentials>@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
