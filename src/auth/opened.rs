//! Sessions already opened, by their exact cookie value: a session route's request with the
//! same cookie as one before skips base64, AES-GCM and JSON (most of a session route's own
//! cost, `bench/session.sh`). A value is only ever found by comparing it whole, so a cookie
//! that differs by one byte is opened (and authenticated) afresh; expiry and revocation are
//! checked on every request all the same.
//!
//! Bounded: past [`MAX_OPENED`] entries the cache starts over (an active session is opened
//! again on its next request), and the periodic sweep drops sessions past their end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderValue;

use super::session::Session;

/// Entries kept; a few kilobytes each (the cookie value and the session).
pub(crate) const MAX_OPENED: usize = 2048;

/// An opened session and the bearer built from its access token.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The session.
    pub(crate) session: Session,
    /// `Bearer <access token>`, marked sensitive.
    pub(crate) bearer: HeaderValue,
}

/// Entries by the value's last 16 characters (they encode part of its GCM tag, different for
/// every seal): the whole value, to compare, and its session.
type Entries = HashMap<[u8; 16], (Box<str>, Arc<Opened>)>;

/// The cache.
#[derive(Debug, Default)]
pub(crate) struct OpenedCache {
    map: Mutex<Entries>,
}

fn key_of(value: &str) -> Option<[u8; 16]> {
    let bytes = value.as_bytes();
    let tail = bytes.get(bytes.len().checked_sub(16)?..)?;
    let mut key = [0u8; 16];
    key.copy_from_slice(tail);
    Some(key)
}

impl OpenedCache {
    /// The session opened from exactly this cookie value, if it was.
    pub(crate) fn get(&self, value: &str) -> Option<Arc<Opened>> {
        let key = key_of(value)?;
        let map = self.lock();
        let (stored, opened) = map.get(&key)?;
        (**stored == *value).then(|| opened.clone())
    }

    /// Remembers the session opened from `value`.
    pub(crate) fn insert(&self, value: &str, opened: Arc<Opened>) {
        let Some(key) = key_of(value) else {
            return;
        };
        let mut map = self.lock();
        if map.len() >= MAX_OPENED {
            map.clear();
        }
        map.insert(key, (value.into(), opened));
    }

    /// Forgets the session of `value` (gone from the shared store).
    pub(crate) fn remove(&self, value: &str) {
        if let Some(key) = key_of(value) {
            self.lock().remove(&key);
        }
    }

    /// Drops sessions whose absolute lifetime ended by `now`.
    pub(crate) fn sweep(&self, now: u64) {
        self.lock()
            .retain(|_, (_, opened)| !opened.session.is_expired(now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(id: &str, expires_at: u64) -> Arc<Opened> {
        Arc::new(Opened {
            session: Session {
                id: id.into(),
                sub: "s".into(),
                sid: None,
                id_token: "i".into(),
                access_token: "a".into(),
                access_expires_at: 10,
                refresh_token: None,
                issued_at: 1,
                expires_at,
            },
            bearer: HeaderValue::from_static("Bearer a"),
        })
    }

    #[test]
    fn only_the_exact_value_finds_its_session() {
        let cache = OpenedCache::default();
        let value = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMk";
        cache.insert(value, opened("one", 100));
        assert_eq!(cache.get(value).unwrap().session.id, "one");
        // Same tail, another value: not found (and never another session).
        let other = format!("X{}", &value[1..]);
        assert!(cache.get(&other).is_none());
        assert!(cache.get("short").is_none());
        cache.sweep(100);
        assert!(cache.get(value).is_none(), "expired sessions are swept");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = OpenedCache::default();
        for i in 0..(MAX_OPENED + 10) {
            cache.insert(&format!("value-{i:020}"), opened("x", 100));
        }
        assert!(cache.lock().len() <= MAX_OPENED);
    }
}
