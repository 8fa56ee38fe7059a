//! Refreshing a session's access token exactly once, however many requests and tabs race.
//!
//! With rotating refresh tokens (RFC 9700 §4.14.2, what oidc-provider and most IdPs do),
//! redeeming a refresh token a second time revokes the whole grant: the user is logged out.
//! So a refresh token is redeemed at most once per process:
//!
//! - requests that need a refresh of the same refresh token while one is running wait for it
//!   (single flight, keyed by a hash of the refresh token, never the token);
//! - the refresh runs in its own task, so the request that started it may go away without
//!   cancelling it (a cancelled refresh whose answer is lost would have consumed the token);
//! - its outcome is kept for [`GRACE`]: a request still carrying the pre-refresh cookie (another
//!   tab, a request that was in flight) gets the new tokens without another grant.
//!
//! An IdP failure (unreachable, slow, 5xx) is not kept: the next request tries again, and the
//! session is left as it was.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::session::Session;

/// How long a refresh's outcome answers requests that still carry the old cookie.
pub(crate) const GRACE: Duration = Duration::from_secs(60);

/// What a refresh came to.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// New tokens: the session to use and to set as the cookie.
    Refreshed(Arc<Session>),
    /// The IdP no longer knows the grant (`invalid_grant`): the session is over.
    Expired,
    /// The IdP failed; the status to answer with (502, 503 or 504). Not kept.
    Failed(u16),
    /// The shared store failed with `on_failure = "closed"`: no refresh was tried (without
    /// the lock, another instance might redeem the same token). Not kept.
    StoreFailed,
}

/// A refresh token, as its SHA-256: the key of the flight and of the grace entry.
pub(crate) type TokenKey = [u8; 32];

/// The key for `refresh_token`.
pub(crate) fn key_of(refresh_token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, refresh_token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The single-flight table and the grace entries. A clone shares them (a reload that keeps the
/// IdP keeps its refreshes in flight).
#[derive(Debug, Default, Clone)]
pub(crate) struct Refresher {
    /// Shared with the refresh tasks, which record their outcome when they land.
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    flying: HashMap<TokenKey, watch::Receiver<Option<Outcome>>>,
    landed: HashMap<TokenKey, (Outcome, Instant)>,
}

impl Refresher {
    /// The outcome of refreshing the token `key`: a recent one, the one in flight, or a new
    /// one that `run` produces in a task of its own.
    ///
    /// A waiter gives up after `wait` (504) without stopping the flight: a slow IdP's late
    /// answer still lands and is kept, so the next request uses it instead of redeeming the
    /// (by then consumed) refresh token again.
    pub(crate) async fn refresh<F, Fut>(&self, key: TokenKey, wait: Duration, run: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let mut rx = {
            let mut table = lock(&self.table);
            if let Some((outcome, until)) = table.landed.get(&key) {
                if Instant::now() < *until {
                    return outcome.clone();
                }
            }
            if let Some(rx) = table.flying.get(&key) {
                rx.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                table.flying.insert(key, rx.clone());
                let flight = run();
                let shared = self.table.clone();
                // Detached on purpose: a refresh outlives the request that started it (its
                // answer would be lost with a consumed refresh token). It is bounded by the
                // IdP call's own timeout, and its outcome reaches every waiter.
                tokio::spawn(async move {
                    // Whatever happens to this task (a panic included), the flight ends.
                    let mut landing = Landing {
                        table: shared.clone(),
                        key,
                        landed: false,
                    };
                    let outcome = flight.await;
                    {
                        // One lock: the flight and its outcome swap places, so no request
                        // can find neither and redeem the token a second time.
                        let mut table = lock(&shared);
                        table.flying.remove(&key);
                        landing.landed = true;
                        if !matches!(outcome, Outcome::Failed(_) | Outcome::StoreFailed) {
                            table
                                .landed
                                .insert(key, (outcome.clone(), Instant::now() + GRACE));
                        }
                    }
                    let _ = tx.send(Some(outcome));
                });
                rx
            }
        };
        let waiting = async {
            loop {
                if let Some(outcome) = rx.borrow_and_update().clone() {
                    return outcome;
                }
                if rx.changed().await.is_err() {
                    // The task ended without an outcome (it panicked): as an IdP failure.
                    return Outcome::Failed(502);
                }
            }
        };
        tokio::time::timeout(wait, waiting)
            .await
            .unwrap_or(Outcome::Failed(504))
    }

    /// Forgets outcomes past their grace.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        lock(&self.table)
            .landed
            .retain(|_, (_, until)| *until > now);
    }
}

/// How often an instance waiting for another's refresh looks for its outcome.
const POLL: Duration = Duration::from_millis(20);

/// How long an outcome stays in the shared store: longer than [`GRACE`], since with sessions in
/// the store a store failure right after a refresh can leave the old tokens under the session's
/// handle; until this runs out, the next refresh finds the new ones here instead of redeeming
/// the consumed token (sealed like the session, so nothing readable is kept longer).
const KEPT_IN_STORE: Duration = Duration::from_secs(600);

/// What an outcome left in the store for the other instances says about an ended grant.
const EXPIRED: &[u8] = b"expired";

/// A refresh that every instance takes part in (`[store]`): this instance's flight (one per
/// process, [`Refresher`]) first takes the session's lock in the store, so one grant is
/// redeemed across all instances, and leaves its outcome there for [`GRACE`].
///
/// 1. An outcome another instance left for this refresh token: taken, no grant.
/// 2. The lock (`SET NX PX`, for `hold`, longer than the IdP call can take): taken, the store
///    is read again (the holder before us may have landed just now), then `run` redeems the
///    token, the outcome is left in the store (sealed with the session keys, like the
///    cookie), and the lock released (only if still ours).
/// 3. Held by another instance: wait for its outcome, looking every [`POLL`]; if the lock
///    goes away without one (that instance died or its IdP call failed), try to take it.
///
/// A store failure is settled by `on_failure`: `closed` gives [`Outcome::StoreFailed`]
/// (nothing redeemed; the session is left as it was), `open` runs the refresh with this
/// process's single flight only.
pub(crate) async fn across_instances<F, Fut>(
    shared: Arc<crate::store::SharedState>,
    seal: Sealer,
    session_id: String,
    token_key: TokenKey,
    hold: Duration,
    run: F,
) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let (lock_key, outcome_key) = shared.refresh_keys(&session_id, &token_key);
    let store = &shared.store;
    let mut token = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token).is_err() {
        return Outcome::Failed(502);
    }
    let deadline = Instant::now() + hold;
    let fallback = |err| match shared.settle("token refresh", Err::<(), _>(err)) {
        Err(_) => None,
        Ok(_) => Some(()),
    };
    loop {
        match store.get(&outcome_key).await {
            Ok(Some(left)) => return seal.read(&left),
            Ok(None) => {}
            Err(err) => {
                return match fallback(err) {
                    Some(()) => run().await,
                    None => Outcome::StoreFailed,
                };
            }
        }
        match store.try_lock(&lock_key, &token, hold).await {
            Ok(true) => {
                let left = store.get(&outcome_key).await;
                if let Ok(Some(left)) = left {
                    let _ = store.unlock(&lock_key, &token).await;
                    return seal.read(&left);
                }
                let outcome = run().await;
                let keep = match &outcome {
                    Outcome::Refreshed(session) => seal.write(session),
                    Outcome::Expired => Some(EXPIRED.to_vec()),
                    Outcome::Failed(_) | Outcome::StoreFailed => None,
                };
                if let Some(keep) = keep {
                    // Lost, the others would wait for the lock to go and then redeem the
                    // consumed token: say so loudly (the grant may be revoked).
                    if let Err(err) = store.put(&outcome_key, &keep, KEPT_IN_STORE).await {
                        tracing::error!(error = %err, "a refresh's outcome could not be left in the shared store");
                    }
                }
                let _ = store.unlock(&lock_key, &token).await;
                return outcome;
            }
            Ok(false) => {}
            Err(err) => {
                // The lock may have been taken all the same (an answer lost to the timeout):
                // release it if it is ours, or every refresh of this session waits it out.
                let _ = store.unlock(&lock_key, &token).await;
                return match fallback(err) {
                    Some(()) => run().await,
                    None => Outcome::StoreFailed,
                };
            }
        }
        if Instant::now() >= deadline {
            return Outcome::Failed(504);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Seals a refresh's outcome for the store with the session keys (the cookie's own sealing:
/// the store never holds a token in the clear), and opens it.
#[derive(Clone)]
pub(crate) struct Sealer {
    pub(crate) keys: Arc<super::session::SessionKeys>,
    pub(crate) cookie: super::CookieName,
}

impl Sealer {
    fn write(&self, session: &Session) -> Option<Vec<u8>> {
        session
            .seal(&self.keys, &self.cookie)
            .ok()
            .map(|sealed| sealed.as_str().as_bytes().to_vec())
    }

    fn read(&self, left: &[u8]) -> Outcome {
        if left == EXPIRED {
            return Outcome::Expired;
        }
        match std::str::from_utf8(left)
            .ok()
            .and_then(|text| Session::open(&self.keys, &self.cookie, text).ok())
        {
            Some(session) => Outcome::Refreshed(Arc::new(session)),
            // Sealed with a key no longer configured: as a failed refresh (tried again).
            None => Outcome::Failed(502),
        }
    }
}

/// Removes a flight from the table if its task ends without landing (a panic), so later
/// requests do not wait on a flight that will never land.
struct Landing {
    table: Arc<Mutex<Table>>,
    key: TokenKey,
    landed: bool,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if !self.landed {
            lock(&self.table).flying.remove(&self.key);
        }
    }
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn session() -> Arc<Session> {
        Arc::new(Session {
            id: "s".into(),
            sub: "alice".into(),
            sid: None,
            id_token: "id".into(),
            access_token: "new".into(),
            access_expires_at: 100,
            refresh_token: Some("r2".into()),
            issued_at: 1,
            expires_at: 1000,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_refreshes_of_one_token_make_one_call_and_share_it() {
        let refresher = Arc::new(Refresher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = watch::channel(false);
        let mut waiters = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (refresher, calls, mut release) =
                (refresher.clone(), calls.clone(), release_rx.clone());
            waiters.spawn(async move {
                refresher
                    .refresh(key_of("r1"), Duration::from_secs(30), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|go| *go).await;
                        Outcome::Refreshed(session())
                    })
                    .await
            });
        }
        // Let every waiter join the flight before it lands.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        release_tx.send(true).unwrap();
        while let Some(outcome) = waiters.join_next().await {
            assert!(matches!(outcome.unwrap(), Outcome::Refreshed(s) if s.access_token == "new"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Within the grace: the same outcome, no call.
        let again = refresher
            .refresh(key_of("r1"), Duration::from_secs(30), || async {
                Outcome::Failed(500)
            })
            .await;
        assert!(matches!(again, Outcome::Refreshed(_)));
        // After it: a new flight.
        tokio::time::advance(GRACE + Duration::from_secs(1)).await;
        refresher.sweep();
        let later = refresher
            .refresh(key_of("r1"), Duration::from_secs(30), || async {
                Outcome::Expired
            })
            .await;
        assert!(matches!(later, Outcome::Expired));
    }

    #[tokio::test]
    async fn a_refresh_goes_on_when_the_request_that_started_it_goes_away() {
        let refresher = Arc::new(Refresher::default());
        let (release_tx, release_rx) = watch::channel(false);
        let calls = Arc::new(AtomicUsize::new(0));
        let started = {
            let (refresher, calls, mut release) =
                (refresher.clone(), calls.clone(), release_rx.clone());
            tokio::spawn(async move {
                refresher
                    .refresh(key_of("r1"), Duration::from_secs(30), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|go| *go).await;
                        Outcome::Refreshed(session())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        started.abort();
        let _ = started.await;
        release_tx.send(true).unwrap();
        // A later request gets the landed outcome, with no second call.
        let outcome = refresher
            .refresh(key_of("r1"), Duration::from_secs(30), || async {
                Outcome::Failed(500)
            })
            .await;
        assert!(matches!(outcome, Outcome::Refreshed(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_are_not_kept_and_other_tokens_fly_apart() {
        let refresher = Refresher::default();
        let failed = refresher
            .refresh(key_of("r1"), Duration::from_secs(30), || async {
                Outcome::Failed(503)
            })
            .await;
        assert!(matches!(failed, Outcome::Failed(503)));
        let retried = refresher
            .refresh(key_of("r1"), Duration::from_secs(30), || async {
                Outcome::Refreshed(session())
            })
            .await;
        assert!(matches!(retried, Outcome::Refreshed(_)));
        let other = refresher
            .refresh(key_of("r9"), Duration::from_secs(30), || async {
                Outcome::Expired
            })
            .await;
        assert!(matches!(other, Outcome::Expired));
        assert_ne!(key_of("r1"), key_of("r9"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_refresh_times_its_waiters_out_but_still_lands() {
        let refresher = Refresher::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let first = refresher
            .refresh(key_of("r1"), Duration::from_secs(1), move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
                Outcome::Refreshed(session())
            })
            .await;
        assert!(matches!(first, Outcome::Failed(504)), "the waiter gave up");
        // The IdP's late answer lands; the next request takes it, no second redemption.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let later = refresher
            .refresh(key_of("r1"), Duration::from_secs(1), || async {
                Outcome::Expired
            })
            .await;
        assert!(matches!(later, Outcome::Refreshed(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
