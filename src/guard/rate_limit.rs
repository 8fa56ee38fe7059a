//! Per-client rate limits (GCRA via `governor`). Who the client is comes from
//! [`crate::trust`], the one trust decision every consumer shares.
//!
//! `governor`'s keyed store never forgets a key by itself, so [`ClientLimiter::sweep`] runs on a
//! timer (owned by the server) and drops every key whose bucket has refilled: memory follows the
//! number of clients active in the last few seconds, not every client ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// What identifies a client for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The client IP (behind trusted proxies, the first untrusted `X-Forwarded-For` hop).
    Ip,
    /// A keyed hash of the session cookie's value (never the value itself); requests without a
    /// session fall back to their IP.
    Session,
    /// Both together.
    IpSession,
}

impl KeyKind {
    /// Parses `ip`, `session` or `ip+session`.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "ip" => Ok(Self::Ip),
            "session" => Ok(Self::Session),
            "ip+session" => Ok(Self::IpSession),
            other => Err(format!("`{other}` must be one of ip, session, ip+session")),
        }
    }
}

/// A rate-limit key. Sessions appear only as a keyed, non-reversible fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// By IP.
    Ip(IpAddr),
    /// By session fingerprint.
    Session(u64),
    /// By both.
    IpSession(IpAddr, u64),
}

impl KeyKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Session => "session",
            Self::IpSession => "ip+session",
        }
    }

    /// The key for a client at `ip` with an optional session fingerprint.
    pub fn key(self, ip: IpAddr, session: Option<u64>) -> ClientKey {
        match (self, session) {
            (Self::Ip, _) | (_, None) => ClientKey::Ip(ip),
            (Self::Session, Some(s)) => ClientKey::Session(s),
            (Self::IpSession, Some(s)) => ClientKey::IpSession(ip, s),
        }
    }
}

/// The rate limiter shared by every route. Generic over its clock so tests can move time
/// themselves instead of sleeping.
#[derive(Debug)]
pub struct ClientLimiter<C: Clock = DefaultClock> {
    limiter:
        RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// What the key is made of.
    pub key: KeyKind,
}

impl ClientLimiter {
    /// `per_second` sustained, `burst` at once, per key.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, key: KeyKind) -> Self {
        Self::with_clock(per_second, burst, key, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ClientLimiter<C> {
    /// [`ClientLimiter::new`] on another clock.
    pub fn with_clock(per_second: NonZeroU32, burst: NonZeroU32, key: KeyKind, clock: C) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            key,
        }
    }

    /// Takes one request from `key`'s bucket.
    ///
    /// # Errors
    /// How long until the next request would be allowed.
    pub fn check(&self, key: &ClientKey) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose bucket is full again (they would be recreated identical).
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn burst_then_refusal_per_key() {
        let limiter = ClientLimiter::new(nz(1), nz(3), KeyKind::Ip);
        let a = ClientKey::Ip("10.0.0.1".parse().unwrap());
        let b = ClientKey::Ip("10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limiter.check(&a).is_ok());
        }
        let wait = limiter.check(&a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limiter.check(&b).is_ok(), "other clients are not affected");
    }

    #[test]
    fn sweep_forgets_refilled_keys() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(nz(1000), nz(1), KeyKind::Ip, clock.clone());
        for i in 0..200u32 {
            let _ = limiter.check(&ClientKey::Session(u64::from(i)));
        }
        assert_eq!(limiter.len(), 200);
        // Not refilled yet: kept.
        limiter.sweep();
        assert_eq!(limiter.len(), 200);
        clock.advance(Duration::from_millis(20));
        limiter.sweep();
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn keys_combine_ip_and_session() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(KeyKind::Ip.key(ip, Some(7)), ClientKey::Ip(ip));
        assert_eq!(KeyKind::Session.key(ip, Some(7)), ClientKey::Session(7));
        assert_eq!(KeyKind::Session.key(ip, None), ClientKey::Ip(ip));
        assert_eq!(
            KeyKind::IpSession.key(ip, Some(7)),
            ClientKey::IpSession(ip, 7)
        );
        assert!(KeyKind::parse("cookie").is_err());
    }
}
