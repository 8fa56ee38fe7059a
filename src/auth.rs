//! Where a request's bearer token comes from: the route's session cookie.
//!
//! The token is held in [`SessionToken`], which cannot be printed: its `Debug` is redacted, it
//! has no `Display`, and its only way out is [`SessionToken::authorization`], which builds the
//! header value already marked sensitive (so HPACK never indexes it and `Debug` hides it).
//!
//! `jwt` checks what the IdP signs (ID and back-channel logout tokens) against its JWKS, for the
//! OIDC flow in `oidc`.

pub mod cookie;
pub(crate) mod jwt;
pub(crate) mod oidc;
pub(crate) mod opened;
pub(crate) mod refresh;
pub(crate) mod revocation;
pub(crate) mod session;

use bytes::{BufMut, BytesMut};
use http::HeaderValue;

pub use cookie::{SessionError, extract_session};

/// How a route treats the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No cookie -> 401; the upstream never sees an unauthenticated request.
    Required,
    /// The bearer is added when the cookie is there; otherwise the request goes without one.
    Optional,
    /// Plain pass-through: no bearer, the client's own `Authorization` is kept.
    None,
    /// The bearer is the access token of the user's session (`[session]`, `[oidc]`), refreshed
    /// as needed; no valid session -> 401.
    Session,
}

impl AuthMode {
    /// Parses `required`, `optional` or `none`.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "required" => Ok(Self::Required),
            "optional" => Ok(Self::Optional),
            "none" => Ok(Self::None),
            "session" => Ok(Self::Session),
            other => Err(format!(
                "`{other}` must be one of required, optional, none, session"
            )),
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
            Self::None => "none",
            Self::Session => "session",
        }
    }
}

/// A cookie name: an RFC 9110 token (RFC 6265 §4.1.1 `cookie-name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieName(Box<str>);

impl CookieName {
    /// Validates a cookie name.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || !text.bytes().all(is_token_byte) {
            return Err(format!("`{text}` is not a valid cookie name"));
        }
        Ok(Self(text.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A session token taken from a cookie. Never printed.
pub struct SessionToken(bytes::Bytes);

impl SessionToken {
    /// Wraps bytes already checked to be RFC 6265 `cookie-octet`s (so they are a valid header
    /// value and cannot inject a header).
    pub(crate) fn from_checked(bytes: bytes::Bytes) -> Self {
        Self(bytes)
    }

    /// `Bearer <token>`, marked sensitive.
    pub fn authorization(&self) -> HeaderValue {
        let mut value = BytesMut::with_capacity(7 + self.0.len());
        value.put_slice(b"Bearer ");
        value.put_slice(&self.0);
        // The token's bytes were checked to be visible ASCII, so this cannot fail; should it,
        // the request goes without a bearer rather than with a broken one.
        let mut header = HeaderValue::from_maybe_shared(value.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        header.set_sensitive(true);
        header
    }

    /// SHA-256 of the token: the same in every instance, for keys in the shared store (which
    /// hash it again with what else names the key).
    pub(crate) fn digest(&self) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// A stable, non-reversible fingerprint, for rate limiting by session and for tests.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // Keyed per process, so the value cannot be precomputed from a known token.
        static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let mut hasher = KEY.get_or_init(Default::default).build_hasher();
        hasher.write(&self.0);
        hasher.finish()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted_and_header_is_sensitive() {
        let token = SessionToken::from_checked(bytes::Bytes::from_static(b"s3cret"));
        assert_eq!(format!("{token:?}"), "SessionToken(<redacted>)");
        let header = token.authorization();
        assert_eq!(header, "Bearer s3cret");
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("s3cret"));
    }

    #[test]
    fn auth_modes_and_cookie_names() {
        assert_eq!(AuthMode::parse("optional"), Ok(AuthMode::Optional));
        assert!(AuthMode::parse("Required").is_err());
        assert!(CookieName::parse("taskflow_id_token").is_ok());
        assert!(CookieName::parse("__Host-session").is_ok());
        assert!(CookieName::parse("a b").is_err());
        assert!(CookieName::parse("a=b").is_err());
        assert!(CookieName::parse("").is_err());
    }
}
