//! Request ids (`X-Request-Id`): taken from a trusted proxy when sane, generated otherwise;
//! sent upstream, returned to the client on every answer, and written in every log line of the
//! request.
//!
//! A generated id is 128 bits as 32 lowercase hex digits. It is a process-wide counter passed
//! through a keyed permutation (a four-round Feistel network over two 64-bit halves, keys drawn
//! once from the system's random generator): unique within a process by construction (a
//! permutation never maps two counters to one id), without a pattern an observer could read a
//! request rate from, and without a system call or a lock per request. It is an identifier, not
//! a secret: nothing is authorised by knowing one.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::trust::TrustedProxies;

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a proxy: enough for any UUID or trace id, short enough to log.
pub const MAX_LEN: usize = 128;

/// Whether a client's id may be used as it is: 1 to [`MAX_LEN`] bytes of visible ASCII (no
/// spaces, no control bytes, nothing a log line or a header could be bent by).
pub fn is_acceptable(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Generates request ids; see the module docs.
#[derive(Debug)]
pub struct RequestIds {
    /// The fixed left half of every block, and the four round keys.
    keys: [u64; 5],
    counter: AtomicU64,
}

impl RequestIds {
    /// A generator with fresh random keys.
    ///
    /// # Errors
    /// When the system's random generator fails.
    pub fn new() -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; 40];
        SystemRandom::new().fill(&mut bytes)?;
        let mut keys = [0u64; 5];
        for (key, chunk) in keys.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *key = u64::from_le_bytes(word);
        }
        Ok(Self::with_keys(keys))
    }

    /// A generator with these keys (tests).
    pub(crate) fn with_keys(keys: [u64; 5]) -> Self {
        Self {
            keys,
            counter: AtomicU64::new(0),
        }
    }

    /// The next generated id.
    pub fn generate(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = permute(&self.keys, n);
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(id.to_be_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
        // Owned by one shared allocation: the id is cloned for the upstream, the failure line
        // and the answer, each a reference count. Hex digits are always a valid header value.
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }

    /// The request's id: the client's `X-Request-Id` when the peer is a trusted proxy and the
    /// value is acceptable (and alone), a generated one otherwise.
    pub(crate) fn for_request(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        trusted: &TrustedProxies,
    ) -> HeaderValue {
        // Without trusted proxies (the common case) the map is not even searched.
        if trusted.is_empty() {
            return self.generate();
        }
        if let Some(given) = headers.get(&X_REQUEST_ID) {
            if is_acceptable(given.as_bytes())
                && trusted.contains(peer)
                && headers.get_all(&X_REQUEST_ID).iter().nth(1).is_none()
            {
                return given.clone();
            }
        }
        self.generate()
    }
}

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    pairs
};

/// The keyed permutation: four Feistel rounds over (`keys[0]`, `n`).
fn permute(keys: &[u64; 5], n: u64) -> u128 {
    let (mut left, mut right) = (keys[0], n);
    for key in &keys[1..] {
        let next = left ^ round(*key, right);
        left = right;
        right = next;
    }
    (u128::from(left) << 64) | u128::from(right)
}

/// The round function: a keyed multiply-fold (as in wyhash), cheap and well mixing.
fn round(key: u64, x: u64) -> u64 {
    let product = u128::from(x ^ key) * u128::from(0x9e37_79b9_7f4a_7c15_u64 ^ key.rotate_left(32));
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn trusted(cidr: &str) -> TrustedProxies {
        TrustedProxies::new(vec![crate::trust::parse_cidr(cidr).unwrap()])
    }

    fn with_id(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn acceptable_ids_are_short_visible_ascii() {
        let cases: [(&[u8], bool); 9] = [
            (b"abc-123", true),
            (b"0f8e1c2a-6b1d-4c7e-9a4f-1b2c3d4e5f60", true),
            (&[b'a'; MAX_LEN], true),
            (&[b'a'; MAX_LEN + 1], false),
            (b"", false),
            (b"has space", false),
            (b"tab\there", false),
            (b"caf\xc3\xa9", false),
            (b"del\x7f", false),
        ];
        for (value, ok) in cases {
            assert_eq!(
                is_acceptable(value),
                ok,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_unique() {
        let ids = RequestIds::new().unwrap();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = ids.generate();
            let text = id.to_str().unwrap().to_string();
            assert_eq!(text.len(), 32);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(seen.insert(text), "a repeated id");
        }
    }

    #[test]
    fn two_generators_give_different_ids() {
        let (a, b) = (RequestIds::new().unwrap(), RequestIds::new().unwrap());
        assert_ne!(a.generate(), b.generate());
    }

    #[test]
    fn a_trusted_proxys_sane_id_is_kept_and_anything_else_replaced() {
        let ids = RequestIds::with_keys([1, 2, 3, 4, 5]);
        let proxy: IpAddr = "10.0.0.7".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        let nets = trusted("10.0.0.0/8");
        let given = with_id("from-the-proxy");
        assert_eq!(ids.for_request(&given, proxy, &nets), "from-the-proxy");
        assert_ne!(ids.for_request(&given, stranger, &nets), "from-the-proxy");
        assert_ne!(
            ids.for_request(&given, proxy, &TrustedProxies::default()),
            "from-the-proxy"
        );
        let long = with_id(&"x".repeat(MAX_LEN + 1));
        assert_eq!(ids.for_request(&long, proxy, &nets).len(), 32);
        let mut twice = with_id("one");
        twice.append(&X_REQUEST_ID, HeaderValue::from_static("two"));
        assert_eq!(ids.for_request(&twice, proxy, &nets).len(), 32);
    }

    proptest! {
        /// The permutation never maps two counters to one id (for any keys).
        #[test]
        fn distinct_counters_give_distinct_ids(keys in any::<[u64; 5]>(), a in any::<u64>(), b in any::<u64>()) {
            prop_assume!(a != b);
            prop_assert_ne!(permute(&keys, a), permute(&keys, b));
        }

        /// Whatever bytes a client sends, an id taken is acceptable, so a log line holds no
        /// control bytes or spaces from it.
        #[test]
        fn a_kept_id_is_always_acceptable(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ids = RequestIds::with_keys([9; 5]);
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                headers.insert(&X_REQUEST_ID, v);
            }
            let id = ids.for_request(&headers, "10.1.2.3".parse().unwrap(), &trusted("10.0.0.0/8"));
            prop_assert!(is_acceptable(id.as_bytes()));
        }
    }
}
