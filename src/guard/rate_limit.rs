//! Per-client rate limits (GCRA via `governor`) and finding the client's IP behind trusted
//! proxies.
//!
//! `governor`'s keyed store never forgets a key by itself, so [`ClientLimiter::sweep`] runs on a
//! timer (owned by the server) and drops every key whose bucket has refilled: memory follows the
//! number of clients active in the last few seconds, not every client ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderMap;

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

/// An IP network in CIDR form (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an IP network (examples: \"10.0.0.0/8\", \"::1\")");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's IP: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Only the hops we
/// trust can have written the entries to their left, so the left-most entry (which the client
/// chooses) is never believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let fields: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    for field in fields.iter().rev() {
        for hop in field.rsplit(|&b| b == b',') {
            let Some(ip) = std::str::from_utf8(hop)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
            else {
                // Garbage in the chain: stop at the last hop we could read.
                return client;
            };
            client = ip;
            if !is_trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// The rate limiter shared by every route.
#[derive(Debug)]
pub struct ClientLimiter {
    limiter: RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, DefaultClock>,
    clock: DefaultClock,
    /// What the key is made of.
    pub key: KeyKind,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
}

impl ClientLimiter {
    /// `per_second` sustained, `burst` at once, per key.
    pub fn new(
        per_second: NonZeroU32,
        burst: NonZeroU32,
        key: KeyKind,
        trusted_proxies: Vec<Cidr>,
    ) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let clock = DefaultClock::default();
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            key,
            trusted_proxies,
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

/// `Retry-After` in whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn burst_then_refusal_per_key() {
        let limiter = ClientLimiter::new(nz(1), nz(3), KeyKind::Ip, vec![]);
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
        let limiter = ClientLimiter::new(nz(1000), nz(1), KeyKind::Ip, vec![]);
        for i in 0..200u32 {
            let _ = limiter.check(&ClientKey::Session(u64::from(i)));
        }
        assert_eq!(limiter.len(), 200);
        std::thread::sleep(Duration::from_millis(20));
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

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn client_ip_believes_only_trusted_hops() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer_untrusted: IpAddr = "203.0.113.9".parse().unwrap();
        let peer_trusted: IpAddr = "10.0.0.5".parse().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(peer_untrusted, &xff(&["1.2.3.4"]), &trusted),
            peer_untrusted
        );
        // Behind a trusted proxy: right-most untrusted hop, not the spoofable left-most one.
        let ip = client_ip(
            peer_trusted,
            &xff(&["6.6.6.6, 198.51.100.7", "10.0.0.9"]),
            &trusted,
        );
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        // No header: the proxy itself.
        assert_eq!(
            client_ip(peer_trusted, &HeaderMap::new(), &trusted),
            peer_trusted
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(peer_trusted, &xff(&["junk, 10.0.0.7"]), &trusted),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    proptest! {
        #[test]
        fn a_client_can_never_choose_its_ip_through_the_header(spoofed in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}") {
            let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
            let peer: IpAddr = "198.51.100.1".parse().unwrap();
            prop_assert_eq!(client_ip(peer, &xff(&[&spoofed]), &trusted), peer);
        }
    }
}
