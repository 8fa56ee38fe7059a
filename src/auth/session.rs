//! The encrypted session cookie (pure): the keys, sealing and opening a value, and the
//! [`Session`] it carries. Cutting a sealed value into cookies and reading it back from a
//! request is [`chunk`]'s job; the OIDC flow (login, refresh, logout) that fills a session is
//! left to `auth/oidc.rs` and `auth/refresh.rs`.
//!
//! # Cookie format (version 1)
//!
//! The value is base64url without padding (RFC 4648 §5; only `cookie-octet`s) of:
//!
//! ```text
//! offset  size  field
//!      0     1  version, 0x01
//!      1     4  key id: SHA-256("cookiegate session key id" 0x00 key)[0..4]
//!      5    12  nonce: 96 random bits from the system generator
//!     17     n  ciphertext: AES-256-GCM of the payload (n = payload length)
//!   17+n    16  GCM tag
//! ```
//!
//! The associated data is the first 17 bytes followed by the cookie name, so a value moved to
//! another cookie name, or given another version or key id, fails authentication instead of
//! being read (RFC 10017 says a BFF SHOULD encrypt its cookie; GCM also makes it tamper-proof).
//! Only the 17-byte header is in the clear and none of it derives from the payload, so no part
//! of a cookie decodes to a token.
//!
//! # Keys
//!
//! `COOKIEGATE_SESSION_KEYS` holds comma-separated base64 32-byte keys: the first seals, every
//! key opens, so a key is rotated by putting a new one first and dropping the old one once the
//! sessions it sealed have expired (`max_age`). The key id picks the key to try; two keys with
//! the same id (a 2^-32 accident) are both tried. Random 96-bit nonces keep one key safe for
//! 2^32 seals (NIST SP 800-38D §8.3): rotate well before that many logins and refreshes.

pub(crate) mod chunk;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

use super::CookieName;

/// The format byte every value starts with.
const VERSION: u8 = 1;
/// Bytes of the key id.
const KEY_ID_LEN: usize = 4;
/// Version, key id and nonce: the part of a value in the clear.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// The GCM tag.
const TAG_LEN: usize = 16;
/// A key's length: AES-256.
const KEY_LEN: usize = 32;
/// Domain separation for the key id, so it is not the plain hash of the key.
const KEY_ID_LABEL: &[u8] = b"cookiegate session key id\0";

/// The session keys: the first seals, all open. Built once at startup from
/// `COOKIEGATE_SESSION_KEYS`; never printed.
pub(crate) struct SessionKeys {
    /// Seals every new value (and opens too).
    first: SessionKey,
    /// Older keys, still accepted for opening.
    rest: Vec<SessionKey>,
}

struct SessionKey {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

impl SessionKeys {
    /// Whether both hold the same keys in the same order (compared by key id, a keyed hash of
    /// the key).
    pub(crate) fn is_same(&self, other: &SessionKeys) -> bool {
        let ids = |keys: &SessionKeys| {
            std::iter::once(keys.first.id)
                .chain(keys.rest.iter().map(|k| k.id))
                .collect::<Vec<_>>()
        };
        ids(self) == ids(other)
    }

    /// Parses comma-separated base64 keys of 32 bytes each (standard or URL-safe alphabet,
    /// padding optional; whitespace around a key is ignored). `openssl rand -base64 32` makes one.
    ///
    /// # Errors
    /// Every problem, `; `-separated, for the config problem list, naming keys by position
    /// (`key 2 is 16 bytes, needs 32`). Messages never contain key material, not even the
    /// offending character of a bad key.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err(
                "no session keys: expected comma-separated base64 keys of 32 bytes \
                 each (make one with `openssl rand -base64 32`)"
                    .into(),
            );
        }
        let mut keys = Vec::new();
        let mut seen: Vec<(usize, Zeroizing<Vec<u8>>)> = Vec::new();
        let mut problems = Vec::new();
        for (index, part) in text.split(',').enumerate() {
            let position = index + 1;
            let part = part.trim();
            if part.is_empty() {
                problems.push(format!("key {position} is empty"));
                continue;
            }
            // The decoder's own message names the offending character: never passed on.
            let Some(bytes) = decode_key(part) else {
                problems.push(format!(
                    "key {position} is not base64 (standard or URL-safe alphabet)"
                ));
                continue;
            };
            if bytes.len() != KEY_LEN {
                problems.push(format!(
                    "key {position} is {} bytes, needs {KEY_LEN} (make one with \
                     `openssl rand -base64 32`)",
                    bytes.len()
                ));
                continue;
            }
            // The same key twice is a copy-and-paste slip, most likely during a rotation: it
            // would work, but it says the intended new key is missing.
            if let Some((first, _)) = seen.iter().find(|(_, other)| *other == bytes) {
                problems.push(format!("key {position} repeats key {first}"));
                continue;
            }
            let Ok(unbound) = UnboundKey::new(&AES_256_GCM, &bytes) else {
                // ring refuses only a wrong length, checked above.
                problems.push(format!("key {position} is not a valid AES-256 key"));
                continue;
            };
            keys.push(SessionKey {
                id: key_id(&bytes),
                aead: LessSafeKey::new(unbound),
            });
            seen.push((position, bytes));
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let mut keys = keys.into_iter();
        match keys.next() {
            Some(first) => Ok(Self {
                first,
                rest: keys.collect(),
            }),
            // Not reachable: a non-blank text has at least one part, and each part is either a
            // key or a problem. Kept as an error rather than a panic.
            None => Err("no session keys".into()),
        }
    }

    /// Whether `sealed` (from [`seal`]) was sealed with the first key: when not, it opens
    /// with an older key and should be sealed again before that key is dropped.
    pub(crate) fn sealed_with_first(&self, sealed: &str) -> bool {
        let head = sealed.get(..8).unwrap_or("");
        URL_SAFE_NO_PAD
            .decode(head)
            .is_ok_and(|bytes| bytes.len() == 6 && bytes[1..1 + KEY_ID_LEN] == self.first.id)
    }

    /// How many keys there are (the first seals).
    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    fn all(&self) -> impl Iterator<Item = &SessionKey> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys(<{} redacted>)", self.len())
    }
}

/// Decodes a key in either alphabet, padding optional; `None` for anything else.
fn decode_key(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let unpadded = text
        .strip_suffix("==")
        .or_else(|| text.strip_suffix('='))
        .unwrap_or(text);
    let engine = if unpadded.contains(['-', '_']) {
        &URL_SAFE_NO_PAD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(unpadded).ok().map(Zeroizing::new)
}

/// The key id: a labelled hash, so the cookie carries no plain hash of the key.
fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(KEY_ID_LABEL);
    context.update(key);
    let digest = context.finish();
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
    id
}

/// Sealing failed: the system random generator gave no nonce, or the payload could not be
/// written. A server error, never the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The payload could not be written: the session failed to serialize (it holds strings and
    /// integers only) or passed GCM's size limit (2^36 bytes). Neither happens in practice.
    #[error("the session payload could not be sealed")]
    Payload,
}

/// A session cookie that cannot be used. One type for every reason, so callers answer them all
/// alike (401, cookie cleared); the variant is for the log only, and no variant carries any
/// part of the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// Several cookies with one name, or a whole cookie beside chunks: a sibling site may have
    /// tossed in a cookie of its own, so none is picked.
    #[error("session cookie is ambiguous")]
    Ambiguous,
    /// Chunks do not run `NAME.0`, `NAME.1`, ... without a gap.
    #[error("session cookie is incomplete")]
    Incomplete,
    /// Not base64url, too short, or an unknown version.
    #[error("session cookie is malformed")]
    Malformed,
    /// Sealed by a key that is not (or no longer) configured.
    #[error("session cookie was sealed with an unknown key")]
    UnknownKey,
    /// Authentication failed: tampered, truncated, or sealed under another cookie name.
    #[error("session cookie failed authentication")]
    Forged,
    /// Authentic, but the payload is not a session this version reads.
    #[error("session cookie payload is unreadable")]
    Payload,
}

/// A sealed value: base64url, so every byte is an RFC 6265 `cookie-octet` and the value can go
/// into a `Set-Cookie` header as is. Only [`seal`] makes one. Its `Debug` gives the length only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sealed(String);

impl Sealed {
    /// The cookie value.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(<{} bytes>)", self.0.len())
    }
}

/// Seals `plaintext` for the cookie `name` with the first key, under a fresh random nonce.
///
/// # Errors
/// [`SealError::Random`] when the system random generator fails.
pub(crate) fn seal(
    keys: &SessionKeys,
    name: &CookieName,
    plaintext: &[u8],
) -> Result<Sealed, SealError> {
    let key = &keys.first;
    let mut nonce = [0; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Random)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&key.id);
    bytes.extend_from_slice(&nonce);
    let aad = associated_data(&bytes, name);
    bytes.extend_from_slice(plaintext);
    let tag = key
        .aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut bytes[HEADER_LEN..],
        )
        // ring refuses only inputs past GCM's 2^36-byte limit; a cookie is far below it.
        .map_err(|_| SealError::Payload)?;
    bytes.extend_from_slice(tag.as_ref());
    Ok(Sealed(URL_SAFE_NO_PAD.encode(&bytes)))
}

/// Opens a value sealed by [`seal`] for the cookie `name` with any of `keys`.
///
/// # Errors
/// [`OpenError`] for anything but an authentic value of this format for this name.
pub(crate) fn open(
    keys: &SessionKeys,
    name: &CookieName,
    value: &str,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    // The engine refuses padding and non-zero trailing bits, so one byte string has exactly
    // one accepted spelling.
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| OpenError::Malformed)?;
    if bytes.len() < HEADER_LEN + TAG_LEN || bytes[0] != VERSION {
        return Err(OpenError::Malformed);
    }
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let mut nonce = [0; NONCE_LEN];
    nonce.copy_from_slice(&header[1 + KEY_ID_LEN..]);
    let aad = associated_data(header, name);
    let mut known = false;
    for key in keys
        .all()
        .filter(|key| key.id[..] == header[1..1 + KEY_ID_LEN])
    {
        known = true;
        // A failed open leaves its buffer unspecified, so each key gets a fresh copy.
        let mut buffer = Zeroizing::new(sealed.to_vec());
        if let Ok(plaintext) = key.aead.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut buffer,
        ) {
            let len = plaintext.len();
            buffer.truncate(len);
            return Ok(buffer);
        }
    }
    Err(if known {
        OpenError::Forged
    } else {
        OpenError::UnknownKey
    })
}

/// The header in the clear followed by the cookie name: binds both to the ciphertext.
fn associated_data(header: &[u8], name: &CookieName) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + name.as_str().len());
    aad.extend_from_slice(&header[..HEADER_LEN]);
    aad.extend_from_slice(name.as_str().as_bytes());
    aad
}

/// What the session cookie carries: who the user is and their tokens. Its `Debug` redacts every
/// token, it has no `Display`, and the tokens are wiped from memory when it is dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// 128 random bits, hex: names the session in the revocation list and the refresh
    /// single-flight, without being a secret.
    pub(crate) id: String,
    /// The ID token's `sub`.
    pub(crate) sub: String,
    /// The ID token's `sid`, for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sid: Option<String>,
    /// The raw ID token, kept for `id_token_hint` at logout.
    pub(crate) id_token: String,
    /// The bearer sent upstream.
    pub(crate) access_token: String,
    /// When the access token expires, unix seconds: refresh is decided by this, not by the
    /// cookie's age.
    pub(crate) access_expires_at: u64,
    /// Present when the IdP issued one (`offline_access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<String>,
    /// When the user logged in, unix seconds.
    pub(crate) issued_at: u64,
    /// The absolute end of the session (`issued_at + max_age`), unix seconds; refreshing does
    /// not move it.
    pub(crate) expires_at: u64,
}

/// Length of a session handle: 32 bytes in base64url without padding.
const HANDLE_LEN: usize = 43;

/// A fresh session handle for `[store] sessions = "store"`: the cookie's whole value, naming
/// the session's entry in the store. 256 bits from the system random generator, base64url, so
/// it is a cookie-octet string and cannot be guessed; unlike [`Session::id`] it is a secret
/// (the cookie), and only its hash is ever used as a store key.
///
/// # Errors
/// [`SealError::Random`] when the system random generator fails.
pub(crate) fn new_handle() -> Result<String, SealError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(&mut *bytes)
        .map_err(|_| SealError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(*bytes))
}

/// Whether a session cookie's value is a handle (43 base64url characters) rather than a sealed
/// session, which is always longer (its header and tag alone are 44 characters).
pub(crate) fn is_handle(value: &str) -> bool {
    value.len() == HANDLE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Session {
    /// A fresh session id: 128 bits from the system random generator, lowercase hex.
    ///
    /// # Errors
    /// [`SealError::Random`] when the system random generator fails.
    pub(crate) fn new_id() -> Result<String, SealError> {
        let mut bytes = [0u8; 16];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether the session's absolute lifetime has run out at `now` (unix seconds). A cookie
    /// replayed after its `Max-Age` is refused by this, not by the browser.
    pub(crate) fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// The session sealed for the cookie `name` (JSON inside, see the module docs).
    ///
    /// # Errors
    /// [`SealError`] when the random generator fails.
    pub(crate) fn seal(&self, keys: &SessionKeys, name: &CookieName) -> Result<Sealed, SealError> {
        // Sized up front so the buffer holding the tokens is not reallocated (leaving unwiped
        // copies behind) while it is written.
        let estimate = 256
            + self.sub.len()
            + self.sid.as_ref().map_or(0, String::len)
            + 2 * (self.id_token.len()
                + self.access_token.len()
                + self.refresh_token.as_ref().map_or(0, String::len));
        let mut json = Zeroizing::new(Vec::with_capacity(estimate));
        serde_json::to_writer(&mut *json, self).map_err(|_| SealError::Payload)?;
        seal(keys, name, &json)
    }

    /// Opens a session sealed by [`Session::seal`] for the cookie `name`. Does not check
    /// [`Session::is_expired`]: that needs a clock, and is the caller's next step.
    ///
    /// # Errors
    /// [`OpenError`] for a value that is not an authentic session for this name.
    pub(crate) fn open(
        keys: &SessionKeys,
        name: &CookieName,
        value: &str,
    ) -> Result<Self, OpenError> {
        let json = open(keys, name, value)?;
        serde_json::from_slice(&json).map_err(|_| OpenError::Payload)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.id_token.zeroize();
        self.access_token.zeroize();
        self.refresh_token.zeroize();
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("sub", &self.sub)
            .field("sid", &self.sid)
            .field("id_token", &Redacted)
            .field("access_token", &Redacted)
            .field("access_expires_at", &self.access_expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| Redacted),
            )
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
