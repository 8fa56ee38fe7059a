//! Keep-alive HTTP/1.1 connections to the upstreams, reused request after request, and the one
//! rule that decides whether a connection may be reused ([`is_reusable`]).
//!
//! One idle list per upstream (`scheme://authority`), built at startup from the routes, so
//! finding it is a short scan with no hashing. Lists are LIFO (the warmest connection first),
//! never hand out a connection idle for longer than [`POOL_IDLE`], and check that an idle
//! connection has nothing to read (the upstream did not close it) before lending it.
//!
//! A lent connection travels as a [`Pooled`] handle that knows its home: when its exchange is
//! over, the handle gives itself back ([`Pooled::release`]) if [`is_reusable`] allows, and is
//! closed otherwise. The exchange never needs to know the pool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};
use tokio::time::Instant;

use super::connect::Conn;

/// How long an idle pooled upstream connection is kept. Shorter than the usual 60 s+ keep-alive
/// of upstream servers (uvicorn 5 s is the exception; a request that meets a connection closed
/// under it may be sent on another one, see [`super::may_resend`]).
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per upstream; more are closed when their response ends.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// How an exchange on a connection ended, as far as the connection's future is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ending {
    /// The response head allowed keep-alive (HTTP/1.1 without `Connection: close`, or 1.0 with
    /// `keep-alive`), and its framing was unambiguous and not "until close".
    pub(crate) head_allows_reuse: bool,
    /// The response body was read to its framed end.
    pub(crate) body_finished: bool,
    /// The whole request (head and body) was written.
    pub(crate) request_sent: bool,
    /// A write failed (the upstream closed its reading side).
    pub(crate) write_failed: bool,
    /// Bytes read past the end of the response (never asked for).
    pub(crate) stray_bytes: usize,
}

/// Whether a connection may carry another request after `end`. Any doubt about where the
/// last message ended means no: a reused connection with one byte out of step would hand one
/// user's answer to the next request (response desynchronisation).
pub(crate) fn is_reusable(end: &Ending) -> bool {
    end.head_allows_reuse
        && end.body_finished
        && end.request_sent
        && !end.write_failed
        && end.stray_bytes == 0
}

/// The idle lists of every upstream the routes name.
#[derive(Debug)]
pub(crate) struct Pool {
    upstreams: Vec<Arc<Upstream>>,
}

/// One upstream's idle connections.
pub(crate) struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for requests to it, built once.
    host: HeaderValue,
    idle: Mutex<VecDeque<Idle>>,
    /// Connections lent to an exchange (the metrics' `active`).
    lent: AtomicUsize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    /// A pool for the given upstreams (`scheme`, `authority` pairs; duplicates are merged).
    pub(crate) fn new(upstreams: impl IntoIterator<Item = (Scheme, Authority)>) -> Self {
        let mut list: Vec<Arc<Upstream>> = Vec::new();
        for (scheme, authority) in upstreams {
            if list
                .iter()
                .any(|u| u.scheme == scheme && u.authority == authority)
            {
                continue;
            }
            // An authority is always a valid header value.
            let Ok(host) = HeaderValue::from_str(authority.as_str()) else {
                continue;
            };
            list.push(Arc::new(Upstream {
                scheme,
                authority,
                host,
                idle: Mutex::new(VecDeque::new()),
                lent: AtomicUsize::new(0),
            }));
        }
        Self { upstreams: list }
    }

    /// The idle list for `uri`'s scheme and authority, when the routes name it.
    pub(crate) fn find(&self, uri: &Uri) -> Option<&Arc<Upstream>> {
        let (scheme, authority) = (uri.scheme()?, uri.authority()?);
        self.upstreams
            .iter()
            .find(|u| u.authority == *authority && u.scheme == *scheme)
    }

    /// Per upstream: its authority, its idle connections and its lent ones.
    pub(crate) fn counts(&self) -> Vec<(String, usize, usize)> {
        self.upstreams
            .iter()
            .map(|u| {
                let idle = u.idle.lock().unwrap_or_else(|e| e.into_inner()).len();
                (
                    u.authority.to_string(),
                    idle,
                    u.lent.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Closes idle connections past [`POOL_IDLE`] or already closed by the upstream.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        for upstream in &self.upstreams {
            upstream.sweep(now);
        }
    }
}

impl Upstream {
    /// `Host` for requests to this upstream.
    pub(crate) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The most recently used idle connection that is still usable.
    pub(crate) fn checkout(self: &Arc<Self>) -> Option<Pooled> {
        let now = Instant::now();
        loop {
            let entry = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let entry = idle.pop_back()?;
                if now.saturating_duration_since(entry.since) > POOL_IDLE {
                    // Everything before it is older still.
                    idle.clear();
                    return None;
                }
                entry
            };
            // Probed outside the lock: it may take a system call.
            let mut conn = entry.conn;
            if conn.is_idle_alive() {
                return Some(Pooled {
                    conn,
                    lent: Some(Lent::new(self.clone())),
                    reused: true,
                });
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.since) > POOL_IDLE)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push_back(Idle { conn, since: now });
        }
    }

    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(|e| {
            now.saturating_duration_since(e.since) <= POOL_IDLE && e.conn.is_idle_alive()
        });
    }
}

/// A connection lent to one exchange, which knows the pool it came from (or would join).
#[derive(Debug)]
pub(crate) struct Pooled {
    pub(super) conn: Conn,
    /// The home it returns to, counted as lent while this handle lives.
    lent: Option<Lent>,
    reused: bool,
}

/// A connection of `home` lent out: counted in its `lent` until dropped.
#[derive(Debug)]
struct Lent(Arc<Upstream>);

impl Lent {
    fn new(home: Arc<Upstream>) -> Self {
        home.lent.fetch_add(1, Ordering::Relaxed);
        Self(home)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.lent.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pooled {
    /// A new connection, which joins `home`'s idle list when its first exchange ends cleanly
    /// (`None`: an upstream the routes do not name; it is closed after one exchange).
    pub(crate) fn fresh(conn: Conn, home: Option<Arc<Upstream>>) -> Self {
        Self {
            conn,
            lent: home.map(Lent::new),
            reused: false,
        }
    }

    /// Whether the connection carried an earlier exchange.
    pub(crate) fn is_reused(&self) -> bool {
        self.reused
    }

    /// Ends the exchange: the connection goes back to its idle list when [`is_reusable`]
    /// allows, and is closed (dropped) otherwise.
    pub(crate) fn release(self, end: &Ending) {
        let stray = Ending {
            stray_bytes: self.conn.buf.len(),
            ..*end
        };
        if let (true, Some(lent)) = (is_reusable(&stray), &self.lent) {
            lent.0.checkin(self.conn);
        }
    }

    /// Takes the raw connection out of the pool's reach for good (after a `101`): the bytes
    /// already read are the new protocol's first bytes.
    pub(crate) fn into_conn(self) -> Conn {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clean() -> Ending {
        Ending {
            head_allows_reuse: true,
            body_finished: true,
            request_sent: true,
            write_failed: false,
            stray_bytes: 0,
        }
    }

    #[test]
    fn only_a_clean_end_is_reusable() {
        assert!(is_reusable(&clean()));
        let cases = [
            (
                "connection: close or close-delimited",
                Ending {
                    head_allows_reuse: false,
                    ..clean()
                },
            ),
            (
                "body not read to its end",
                Ending {
                    body_finished: false,
                    ..clean()
                },
            ),
            (
                "request body not sent whole",
                Ending {
                    request_sent: false,
                    ..clean()
                },
            ),
            (
                "a write failed",
                Ending {
                    write_failed: true,
                    ..clean()
                },
            ),
            (
                "one stray byte",
                Ending {
                    stray_bytes: 1,
                    ..clean()
                },
            ),
        ];
        for (why, end) in cases {
            assert!(!is_reusable(&end), "{why}");
        }
    }

    proptest! {
        /// Never reuse after stray bytes or an unfinished body, whatever else holds.
        #[test]
        fn stray_bytes_or_an_unfinished_body_are_never_reused(
            head in any::<bool>(),
            finished in any::<bool>(),
            sent in any::<bool>(),
            failed in any::<bool>(),
            stray in 0usize..4,
        ) {
            let end = Ending {
                head_allows_reuse: head,
                body_finished: finished,
                request_sent: sent,
                write_failed: failed,
                stray_bytes: stray,
            };
            if stray > 0 || !finished || !sent || failed || !head {
                prop_assert!(!is_reusable(&end));
            } else {
                prop_assert!(is_reusable(&end));
            }
        }
    }
}
