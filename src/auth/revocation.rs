//! Sessions that ended before their cookie did: logged out here, or logged out at the IdP
//! (back-channel logout). A replayed cookie of such a session is refused.
//!
//! Entries are kept until the sessions they name would have expired anyway (`max_age` after
//! the revocation), then dropped by [`Revocations::sweep`], so memory follows the logouts of
//! the last `max_age`. In-process in this version: another instance does not see them.

use std::collections::HashMap;
use std::sync::Mutex;

/// The revocation list.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    inner: Mutex<Lists>,
}

#[derive(Debug, Default)]
struct Lists {
    /// Session ids logged out here -> until when to remember them.
    sessions: HashMap<String, u64>,
    /// IdP session ids (`sid`) logged out at the IdP -> (revoked at, remember until).
    sids: HashMap<String, (u64, u64)>,
    /// Subjects logged out everywhere (a logout token without `sid`) -> (at, until).
    subs: HashMap<String, (u64, u64)>,
}

/// What a session is known by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionRef<'a> {
    /// cookiegate's session id.
    pub(crate) id: &'a str,
    /// The IdP's session id, when the ID token carried one.
    pub(crate) sid: Option<&'a str>,
    /// The user.
    pub(crate) sub: &'a str,
    /// When the session was created (unix seconds).
    pub(crate) issued_at: u64,
}

/// One revocation, as recorded here and in the shared store.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Revoke<'a> {
    /// Session `id` (cookiegate's), until its absolute expiry.
    Session { id: &'a str, until: u64 },
    /// Every session of IdP session `sid` created up to `at`.
    Sid { sid: &'a str, at: u64, until: u64 },
    /// Every session of user `sub` created up to `at`.
    Sub { sub: &'a str, at: u64, until: u64 },
}

impl Revocations {
    /// Records `revoke`.
    pub(crate) fn apply(&self, revoke: Revoke<'_>) {
        match revoke {
            Revoke::Session { id, until } => self.revoke_session(id, until),
            Revoke::Sid { sid, at, until } => self.revoke_sid(sid, at, until),
            Revoke::Sub { sub, at, until } => self.revoke_sub(sub, at, until),
        }
    }

    /// Ends session `id`; remembered until `until` (its absolute expiry).
    pub(crate) fn revoke_session(&self, id: &str, until: u64) {
        self.lock().sessions.insert(id.to_string(), until);
    }

    /// Ends every session of IdP session `sid` created up to `now`.
    pub(crate) fn revoke_sid(&self, sid: &str, now: u64, until: u64) {
        self.lock().sids.insert(sid.to_string(), (now, until));
    }

    /// Ends every session of user `sub` created up to `now`.
    pub(crate) fn revoke_sub(&self, sub: &str, now: u64, until: u64) {
        self.lock().subs.insert(sub.to_string(), (now, until));
    }

    /// Whether `session` was ended. A session created after a back-channel logout of its
    /// `sid` or `sub` (the user logged in again) is not.
    pub(crate) fn is_revoked(&self, session: SessionRef<'_>) -> bool {
        let lists = self.lock();
        if lists.sessions.is_empty() && lists.sids.is_empty() && lists.subs.is_empty() {
            return false;
        }
        lists.sessions.contains_key(session.id)
            || session
                .sid
                .and_then(|sid| lists.sids.get(sid))
                .is_some_and(|&(at, _)| session.issued_at <= at)
            || lists
                .subs
                .get(session.sub)
                .is_some_and(|&(at, _)| session.issued_at <= at)
    }

    /// Forgets entries whose sessions have all expired by `now`.
    pub(crate) fn sweep(&self, now: u64) {
        let mut lists = self.lock();
        lists.sessions.retain(|_, until| *until > now);
        lists.sids.retain(|_, (_, until)| *until > now);
        lists.subs.retain(|_, (_, until)| *until > now);
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let lists = self.lock();
        lists.sessions.len() + lists.sids.len() + lists.subs.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session<'a>(id: &'a str, sid: Option<&'a str>, sub: &'a str, at: u64) -> SessionRef<'a> {
        SessionRef {
            id,
            sid,
            sub,
            issued_at: at,
        }
    }

    #[test]
    fn a_logged_out_session_stays_out_until_it_would_have_expired() {
        let list = Revocations::default();
        let s = session("s1", Some("idp-1"), "alice", 100);
        assert!(!list.is_revoked(s));
        list.revoke_session("s1", 500);
        assert!(list.is_revoked(s));
        assert!(!list.is_revoked(session("s2", Some("idp-1"), "alice", 100)));
        list.sweep(499);
        assert!(list.is_revoked(s));
        list.sweep(500);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn a_back_channel_logout_ends_every_earlier_session_of_its_sid_or_sub() {
        let list = Revocations::default();
        list.revoke_sid("idp-1", 200, 900);
        assert!(list.is_revoked(session("a", Some("idp-1"), "alice", 150)));
        assert!(list.is_revoked(session("b", Some("idp-1"), "alice", 200)));
        // Logged in again afterwards: a new session.
        assert!(!list.is_revoked(session("c", Some("idp-1"), "alice", 201)));
        assert!(!list.is_revoked(session("d", Some("idp-2"), "alice", 150)));
        assert!(!list.is_revoked(session("e", None, "alice", 150)));
        list.revoke_sub("bob", 300, 900);
        assert!(list.is_revoked(session("f", Some("idp-9"), "bob", 299)));
        assert!(list.is_revoked(session("g", None, "bob", 10)));
        assert!(!list.is_revoked(session("h", None, "bob", 301)));
        assert!(!list.is_revoked(session("i", None, "alice", 10)));
    }
}
