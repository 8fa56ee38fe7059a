//! Signed tokens from the IdP: JWKS keys, compact JWS verification over `ring`, and the claim
//! rules for ID tokens (OpenID Connect Core 1.0 §3.1.3.7) and back-channel logout tokens
//! (OpenID Connect Back-Channel Logout 1.0 §2.6), with the `jti` memory that stops a logout
//! token from being replayed.
//!
//! Everything here is pure: the caller fetches discovery and the JWKS, re-fetches the JWKS
//! (rate-limited) when [`JwtError::is_key_miss`] says the set may be stale, stores the nonce, and
//! passes the clock in as `now` (unix seconds). What a logout token revokes is the session
//! layer's business.
//!
//! Decisions a reviewer should know:
//! - Only asymmetric algorithms exist in [`Alg`]. `none` and the HMAC family cannot even be
//!   named, so a token that says `alg: none`, or `HS256` "signed" with the IdP's public key as the
//!   HMAC secret (the classic key-confusion attack), fails before any key is looked at. The IdP's
//!   advertised `id_token_signing_alg_values_supported` narrows the set further ([`AlgSet`]).
//! - Keys come only from the JWKS the caller fetched from the IdP's `jwks_uri`. The `jwk`, `jku`,
//!   `x5u` and `x5c` headers would let the token name its own key; they are ignored, never trusted.
//! - `crit` is refused: we implement no JWS extension, and RFC 7515 §4.1.11 requires rejecting a
//!   token whose critical extensions are not understood (`b64: false` among them).
//! - Base64url is decoded strictly (no padding, no stray trailing bits), so every token has one
//!   spelling and a changed character never decodes to the same bytes.
//! - The payload is parsed as JSON only after its signature verified.
//! - [`JwtError`]'s texts are fixed: they never carry the token or a claim's value.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde_json::{Map, Value};

/// Longest token accepted, in bytes: well above real ID tokens (a few KiB even with group
/// claims), small enough that a hostile one costs nothing to refuse.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Longest JWKS document accepted, in bytes. Real ones hold a handful of keys, each with an
/// optional certificate chain (`x5c`, ~2 KiB per certificate).
pub(crate) const MAX_JWKS_LEN: usize = 256 * 1024;

/// The event a back-channel logout token must carry (Back-Channel Logout 1.0 §2.4).
pub(crate) const BACKCHANNEL_LOGOUT_EVENT: &str =
    "http://schemas.openid.net/event/backchannel-logout";

/// Why a token or a key set was refused. The texts are fixed and name no value from the token,
/// so they are safe in logs and error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("token is too large")]
    TooLarge,
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token header is malformed")]
    BadHeader,
    #[error("token header names a critical extension")]
    CriticalHeader,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token type is not allowed here")]
    WrongType,
    #[error("token key id is not in the key set")]
    UnknownKey,
    #[error("token has no key id and several keys fit")]
    AmbiguousKey,
    #[error("no key in the key set fits the token algorithm")]
    NoKey,
    #[error("the key named by the token does not fit its algorithm")]
    KeyMismatch,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token payload is not a JSON object")]
    BadPayload,
    /// A required claim is absent (the name is ours, never the token's).
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type.
    #[error("token claim {0} has the wrong type")]
    InvalidClaim(&'static str),
    #[error("token issuer does not match")]
    IssuerMismatch,
    #[error("token audience does not include this client")]
    AudienceMismatch,
    #[error("token authorized party is not this client")]
    AuthorizedPartyMismatch,
    #[error("token has expired")]
    Expired,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token was issued too long ago")]
    TooOld,
    #[error("token nonce does not match")]
    NonceMismatch,
    #[error("logout token carries a nonce")]
    UnexpectedNonce,
    #[error("logout token lacks the back-channel logout event")]
    MissingLogoutEvent,
    #[error("logout token names neither a session nor a subject")]
    NoLogoutSubject,
    #[error("key set is not a JWKS document")]
    BadKeySet,
    #[error("key set is too large")]
    KeySetTooLarge,
}

impl JwtError {
    /// True when the key set may be stale: the token names a key id we do not have, or no key
    /// fits its algorithm (the IdP rotated its keys). The caller may re-fetch the JWKS, at a
    /// limited rate since the token's sender picks the `kid`, and try once more.
    pub(crate) fn is_key_miss(self) -> bool {
        matches!(self, Self::UnknownKey | Self::NoKey)
    }
}

/// A JWS algorithm we verify (RFC 7518 §3.1 names). Only asymmetric ones: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    /// Every algorithm we support.
    pub(crate) const ALL: [Self; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// The algorithm with this exact (case-sensitive, RFC 7515 §4.1.1) name, if we support it.
    /// `none` and `HS*` give `None`.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    /// The JOSE name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The algorithms a token may use: ours intersected with what the IdP advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlgSet(u16);

impl AlgSet {
    /// All of [`Alg::ALL`].
    pub(crate) fn all() -> Self {
        Self(Alg::ALL.into_iter().fold(0, |bits, alg| bits | alg.bit()))
    }

    #[cfg(test)]
    /// Just one algorithm (a client registered with `id_token_signed_response_alg`).
    pub(crate) fn only(alg: Alg) -> Self {
        Self(alg.bit())
    }

    /// The IdP's advertised names (discovery's `id_token_signing_alg_values_supported`)
    /// intersected with ours: `none`, `HS*` and unknown names drop out. An empty result means
    /// no token can verify; the caller should refuse such an IdP at startup.
    pub(crate) fn from_advertised<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            names
                .into_iter()
                .filter_map(Alg::from_name)
                .fold(0, |bits, alg| bits | alg.bit()),
        )
    }

    /// Whether `alg` is allowed.
    pub(crate) fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }

    /// Whether nothing is allowed.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The public half of a signing key, in the form `ring` verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    /// Big-endian modulus and exponent, leading zeros stripped (`ring` wants them so).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point, `04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    /// The 32-byte public key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Whether the key's type can verify `alg` at all.
    fn fits(&self, alg: Alg) -> bool {
        use Alg::*;
        matches!(
            (self, alg),
            (
                Self::Rsa { .. },
                Rs256 | Rs384 | Rs512 | Ps256 | Ps384 | Ps512
            ) | (Self::P256(_), Es256)
                | (Self::P384(_), Es384)
                | (Self::Ed25519(_), EdDsa)
        )
    }

    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        let rsa = |n: &[u8], e: &[u8], params: &'static signature::RsaParameters| {
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        };
        // ECDSA signatures in JWS are the fixed-width `R || S` (RFC 7518 §3.4), not DER.
        let raw = |key: &[u8], params: &'static dyn signature::VerificationAlgorithm| {
            signature::UnparsedPublicKey::new(params, key)
                .verify(message, sig)
                .is_ok()
        };
        match (self, alg) {
            (Self::Rsa { n, e }, Alg::Rs256) => rsa(n, e, &signature::RSA_PKCS1_2048_8192_SHA256),
            (Self::Rsa { n, e }, Alg::Rs384) => rsa(n, e, &signature::RSA_PKCS1_2048_8192_SHA384),
            (Self::Rsa { n, e }, Alg::Rs512) => rsa(n, e, &signature::RSA_PKCS1_2048_8192_SHA512),
            (Self::Rsa { n, e }, Alg::Ps256) => rsa(n, e, &signature::RSA_PSS_2048_8192_SHA256),
            (Self::Rsa { n, e }, Alg::Ps384) => rsa(n, e, &signature::RSA_PSS_2048_8192_SHA384),
            (Self::Rsa { n, e }, Alg::Ps512) => rsa(n, e, &signature::RSA_PSS_2048_8192_SHA512),
            (Self::P256(point), Alg::Es256) => raw(point, &signature::ECDSA_P256_SHA256_FIXED),
            (Self::P384(point), Alg::Es384) => raw(point, &signature::ECDSA_P384_SHA384_FIXED),
            (Self::Ed25519(key), Alg::EdDsa) => raw(key, &signature::ED25519),
            _ => false,
        }
    }
}

/// One usable key of a JWKS (RFC 7517 §4), with the members that decide what it may verify.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    /// When present, the only algorithm this key may verify (RFC 7517 §4.4).
    alg: Option<String>,
    /// When present, must be `sig` (RFC 7517 §4.2): an encryption key never verifies a token.
    key_use: Option<String>,
    key: PublicKey,
}

impl Jwk {
    fn fits(&self, alg: Alg) -> bool {
        self.key.fits(alg)
            && self.alg.as_deref().is_none_or(|name| name == alg.as_str())
            && self
                .key_use
                .as_deref()
                .is_none_or(|key_use| key_use == "sig")
    }

    /// The key, or `None` when it is of a kind we do not support or its members are malformed.
    /// Private members (`d`, `p`, `q`, ...) are never read.
    fn parse(member: &Value) -> Option<Self> {
        let object = member.as_object()?;
        let text = |name: &str| object.get(name).and_then(Value::as_str);
        let bytes = |name: &str| text(name).and_then(|value| URL_SAFE_NO_PAD.decode(value).ok());
        // A metadata member of the wrong type makes the key unusable rather than unrestricted.
        let optional = |name: &str| match object.get(name) {
            None => Some(None),
            Some(Value::String(value)) => Some(Some(value.clone())),
            Some(_) => None,
        };
        let key = match text("kty")? {
            "RSA" => {
                let n = strip_leading_zeros(bytes("n")?);
                let e = strip_leading_zeros(bytes("e")?);
                // ring verifies 2048..=8192-bit moduli; a smaller key is unsupported, not an error.
                if !(2048..=8192).contains(&bit_length(&n)) || e.is_empty() {
                    return None;
                }
                PublicKey::Rsa { n, e }
            }
            "EC" => {
                let (size, wrap): (usize, fn(Vec<u8>) -> PublicKey) = match text("crv")? {
                    "P-256" => (32, PublicKey::P256),
                    "P-384" => (48, PublicKey::P384),
                    _ => return None,
                };
                let (x, y) = (bytes("x")?, bytes("y")?);
                // RFC 7518 §6.2.1.2: the coordinates are full-length octet strings.
                if x.len() != size || y.len() != size {
                    return None;
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                wrap(point)
            }
            "OKP" if text("crv")? == "Ed25519" => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return None;
                }
                PublicKey::Ed25519(x)
            }
            _ => return None,
        };
        Some(Self {
            kid: optional("kid")?,
            alg: optional("alg")?,
            key_use: optional("use")?,
            key,
        })
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn bit_length(bytes: &[u8]) -> usize {
    bytes.first().map_or(0, |&first| {
        (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize)
    })
}

/// The IdP's signing keys: the usable members of a JWKS document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document (RFC 7517 §5). Keys of unsupported types or curves (`oct`, P-521,
    /// Ed448, RSA under 2048 bits) and malformed keys are skipped, so one odd key does not take
    /// the whole set down.
    ///
    /// # Errors
    /// [`JwtError::KeySetTooLarge`] past [`MAX_JWKS_LEN`]; [`JwtError::BadKeySet`] when the
    /// document is not a JSON object with a `keys` array.
    pub(crate) fn parse(document: &[u8]) -> Result<Self, JwtError> {
        if document.len() > MAX_JWKS_LEN {
            return Err(JwtError::KeySetTooLarge);
        }
        let value: Value = serde_json::from_slice(document).map_err(|_| JwtError::BadKeySet)?;
        let Some(Value::Array(members)) = value.get("keys") else {
            return Err(JwtError::BadKeySet);
        };
        Ok(Self {
            keys: members.iter().filter_map(Jwk::parse).collect(),
        })
    }

    #[cfg(test)]
    /// How many usable keys the set holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    /// Whether the set holds no usable key (every token will fail with [`JwtError::NoKey`] or
    /// [`JwtError::UnknownKey`]).
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token with this header.
    ///
    /// With a `kid`, the keys of that id (normally one); without, the one key that fits the
    /// algorithm. Several candidates without a `kid` are refused rather than tried in turn: the
    /// IdP must say which key it used once it publishes more than one (conformance test
    /// `rp-id_token-kid-absent-multiple-jwks` allows either choice).
    fn candidates(&self, alg: Alg, kid: Option<&str>) -> Result<Vec<&Jwk>, JwtError> {
        match kid {
            Some(kid) => {
                let named: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(JwtError::UnknownKey);
                }
                let fitting: Vec<&Jwk> = named.into_iter().filter(|key| key.fits(alg)).collect();
                if fitting.is_empty() {
                    return Err(JwtError::KeyMismatch);
                }
                Ok(fitting)
            }
            None => {
                let fitting: Vec<&Jwk> = self.keys.iter().filter(|key| key.fits(alg)).collect();
                match fitting.len() {
                    0 => Err(JwtError::NoKey),
                    1 => Ok(fitting),
                    _ => Err(JwtError::AmbiguousKey),
                }
            }
        }
    }
}

/// A token whose signature verified: its `typ` header and its claims.
struct Verified {
    typ: Option<String>,
    claims: Map<String, Value>,
}

/// Checks a compact JWS (RFC 7515 §7.1) against the key set and returns its claims.
fn verify(token: &str, jwks: &Jwks, algs: AlgSet) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload_part), Some(sig_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed)
    };
    let header_bytes = decode(header_part)?;
    let payload_bytes = decode(payload_part)?;
    let sig = decode(sig_part)?;

    let Ok(Value::Object(header)) = serde_json::from_slice(&header_bytes) else {
        return Err(JwtError::BadHeader);
    };
    if header.contains_key("crit") {
        return Err(JwtError::CriticalHeader);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::from_name(name).ok_or(JwtError::AlgorithmNotAllowed)?,
        _ => return Err(JwtError::BadHeader),
    };
    if !algs.contains(alg) {
        return Err(JwtError::AlgorithmNotAllowed);
    }
    let optional = |name: &str| match header.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.as_str())),
        Some(_) => Err(JwtError::BadHeader),
    };
    let (kid, typ) = (optional("kid")?, optional("typ")?);

    // The signing input is the first two parts exactly as sent (RFC 7515 §5.2 step 8).
    let signing_input = &token.as_bytes()[..header_part.len() + 1 + payload_part.len()];
    let candidates = jwks.candidates(alg, kid)?;
    if !candidates
        .iter()
        .any(|key| key.key.verify(alg, signing_input, &sig))
    {
        return Err(JwtError::BadSignature);
    }

    let Ok(Value::Object(claims)) = serde_json::from_slice(&payload_bytes) else {
        return Err(JwtError::BadPayload);
    };
    Ok(Verified {
        typ: typ.map(str::to_owned),
        claims,
    })
}

/// Whether a `typ` value names `media` (RFC 7515 §4.1.9: case-insensitive, `application/` may
/// be left out).
fn is_type(typ: &str, media: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(media)
}

/// The claims of a validated ID token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IdToken {
    /// The subject: the user's stable id at the IdP (non-empty).
    pub(crate) sub: String,
    /// The IdP session id, which back-channel logout names.
    pub(crate) sid: Option<String>,
    /// Expiry, unix seconds.
    pub(crate) exp: u64,
    /// Every claim, as sent.
    pub(crate) claims: Map<String, Value>,
}

/// The facts of a validated back-channel logout token. At least one of `sid` and `sub` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogoutToken {
    /// The IdP session to end.
    pub(crate) sid: Option<String>,
    /// The user whose sessions to end (all of them when `sid` is absent).
    pub(crate) sub: Option<String>,
    /// The token's id, for [`JtiCache`].
    pub(crate) jti: String,
    /// Unix seconds after which this token is refused anyway (past `exp` or too old), so its
    /// `jti` need not be remembered longer.
    pub(crate) acceptable_until: u64,
}

/// What an ID or logout token must say to be accepted: built once from the configuration and the
/// IdP's discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenPolicy {
    issuer: String,
    client_id: String,
    algs: AlgSet,
    leeway_secs: u64,
    logout_max_age_secs: u64,
}

impl TokenPolicy {
    /// Clock skew tolerated on `exp` and `iat`.
    pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
    /// How old (by `iat`) a logout token may be: the IdP sends it as the session ends.
    pub(crate) const DEFAULT_LOGOUT_MAX_AGE: Duration = Duration::from_secs(300);

    /// Expects tokens from `issuer` (compared byte for byte) for `client_id`, signed with one of
    /// `algs`, with the default leeway and logout-token age.
    pub(crate) fn new(issuer: &str, client_id: &str, algs: AlgSet) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            algs,
            leeway_secs: Self::DEFAULT_LEEWAY.as_secs(),
            logout_max_age_secs: Self::DEFAULT_LOGOUT_MAX_AGE.as_secs(),
        }
    }

    #[cfg(test)]
    /// Replaces the clock-skew leeway.
    pub(crate) fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway_secs = leeway.as_secs();
        self
    }

    #[cfg(test)]
    /// Replaces how old a logout token may be.
    pub(crate) fn with_logout_max_age(mut self, max_age: Duration) -> Self {
        self.logout_max_age_secs = max_age.as_secs();
        self
    }

    /// Validates an ID token from the token endpoint (OpenID Connect Core 1.0 §3.1.3.7):
    /// signature by a JWKS key with an allowed algorithm, `iss` exactly ours, `aud` naming our
    /// client (and `azp` naming it when there are several audiences, or when present), `exp` not
    /// past, `iat` present and not in the future, `nonce` equal to the one sent with this login,
    /// `sub` a non-empty string.
    ///
    /// # Errors
    /// The first rule broken; [`JwtError::is_key_miss`] tells when a JWKS re-fetch may help.
    pub(crate) fn validate_id_token(
        &self,
        token: &str,
        jwks: &Jwks,
        nonce: &str,
        now: u64,
    ) -> Result<IdToken, JwtError> {
        let Verified { typ, claims } = verify(token, jwks, self.algs)?;
        // A token explicitly typed as something else is not an ID token, whatever it claims.
        if typ.is_some_and(|typ| is_type(&typ, "logout+jwt") || is_type(&typ, "at+jwt")) {
            return Err(JwtError::WrongType);
        }
        self.check_issuer_and_audience(&claims)?;
        let exp = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
        self.check_not_expired(exp, now)?;
        let iat = numeric_date(&claims, "iat")?.ok_or(JwtError::MissingClaim("iat"))?;
        self.check_not_future(iat, now)?;
        // The nonce binds the token to this login (replay of another login's token).
        match string_claim(&claims, "nonce")? {
            None => return Err(JwtError::MissingClaim("nonce")),
            Some(sent) if sent != nonce => return Err(JwtError::NonceMismatch),
            Some(_) => {}
        }
        let sub = match string_claim(&claims, "sub")? {
            Some(sub) if !sub.is_empty() => sub.to_owned(),
            Some(_) => return Err(JwtError::InvalidClaim("sub")),
            None => return Err(JwtError::MissingClaim("sub")),
        };
        let sid = string_claim(&claims, "sid")?.map(str::to_owned);
        Ok(IdToken {
            sub,
            sid,
            exp,
            claims,
        })
    }

    /// Validates a back-channel logout token (Back-Channel Logout 1.0 §2.6): signature and
    /// algorithm as for ID tokens; `typ`, when present, `logout+jwt` (or the generic `JWT`);
    /// `iss` and `aud`/`azp` as for ID tokens; `iat` present, not in the future and not older than
    /// the logout max age; `exp`, when present, not past; an `events` object holding the
    /// back-channel logout event as an object; no `nonce`; `sid` and/or `sub`; a `jti`.
    /// Replay is the caller's check, with [`JtiCache`].
    ///
    /// # Errors
    /// The first rule broken.
    pub(crate) fn validate_logout_token(
        &self,
        token: &str,
        jwks: &Jwks,
        now: u64,
    ) -> Result<LogoutToken, JwtError> {
        let Verified { typ, claims } = verify(token, jwks, self.algs)?;
        // §2.4 recommends explicit typing; absent and the generic `JWT` are still accepted for
        // IdPs that predate it. Any other explicit type (`at+jwt`, ...) is another kind of token.
        if typ.is_some_and(|typ| !is_type(&typ, "logout+jwt") && !is_type(&typ, "JWT")) {
            return Err(JwtError::WrongType);
        }
        self.check_issuer_and_audience(&claims)?;
        let iat = numeric_date(&claims, "iat")?.ok_or(JwtError::MissingClaim("iat"))?;
        self.check_not_future(iat, now)?;
        let mut acceptable_until = iat
            .saturating_add(self.logout_max_age_secs)
            .saturating_add(self.leeway_secs);
        if now > acceptable_until {
            return Err(JwtError::TooOld);
        }
        if let Some(exp) = numeric_date(&claims, "exp")? {
            self.check_not_expired(exp, now)?;
            acceptable_until = acceptable_until.min(exp.saturating_add(self.leeway_secs));
        }
        match claims.get("events") {
            Some(Value::Object(events)) => match events.get(BACKCHANNEL_LOGOUT_EVENT) {
                Some(Value::Object(_)) => {}
                _ => return Err(JwtError::MissingLogoutEvent),
            },
            Some(_) => return Err(JwtError::InvalidClaim("events")),
            None => return Err(JwtError::MissingClaim("events")),
        }
        // §2.4: a nonce is forbidden, so an ID token can never pass as a logout token.
        if claims.contains_key("nonce") {
            return Err(JwtError::UnexpectedNonce);
        }
        let sid = string_claim(&claims, "sid")?.map(str::to_owned);
        let sub = string_claim(&claims, "sub")?.map(str::to_owned);
        if sid.is_none() && sub.is_none() {
            return Err(JwtError::NoLogoutSubject);
        }
        let jti = match string_claim(&claims, "jti")? {
            Some(jti) if !jti.is_empty() => jti.to_owned(),
            Some(_) => return Err(JwtError::InvalidClaim("jti")),
            None => return Err(JwtError::MissingClaim("jti")),
        };
        Ok(LogoutToken {
            sid,
            sub,
            jti,
            acceptable_until,
        })
    }

    /// Core §3.1.3.7 items 2-5: the exact issuer; our client among the audiences; with several
    /// audiences an `azp`, and any `azp` naming us (a token issued to another client that merely
    /// lists us must not log anyone in here).
    fn check_issuer_and_audience(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        match string_claim(claims, "iss")? {
            None => return Err(JwtError::MissingClaim("iss")),
            Some(iss) if iss != self.issuer => return Err(JwtError::IssuerMismatch),
            Some(_) => {}
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            None => return Err(JwtError::MissingClaim("aud")),
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().ok_or(JwtError::InvalidClaim("aud")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(JwtError::InvalidClaim("aud")),
        };
        if !audiences.contains(&self.client_id.as_str()) {
            return Err(JwtError::AudienceMismatch);
        }
        match string_claim(claims, "azp")? {
            None if audiences.len() > 1 => Err(JwtError::MissingClaim("azp")),
            Some(azp) if azp != self.client_id => Err(JwtError::AuthorizedPartyMismatch),
            _ => Ok(()),
        }
    }

    /// `now` must be before `exp` (Core §3.1.3.7 item 9), give or take the leeway.
    fn check_not_expired(&self, exp: u64, now: u64) -> Result<(), JwtError> {
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(JwtError::Expired);
        }
        Ok(())
    }

    /// A token from the future means a broken clock or a forged lifetime (Core §3.1.3.7
    /// item 10 lets the client bound `iat`).
    fn check_not_future(&self, iat: u64, now: u64) -> Result<(), JwtError> {
        if iat > now.saturating_add(self.leeway_secs) {
            return Err(JwtError::IssuedInFuture);
        }
        Ok(())
    }
}

/// A string claim: `None` when absent.
fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds, fractions allowed and dropped): `None` when
/// absent; a negative or non-numeric value is invalid.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(|secs| secs as u64)
    });
    seconds.map(Some).ok_or(JwtError::InvalidClaim(name))
}

/// The `jti`s of logout tokens already acted on, each kept until its token would be refused
/// anyway, in a bounded map. Not synchronized: the caller holds it behind its own lock.
#[derive(Debug)]
pub(crate) struct JtiCache {
    seen: HashMap<Box<str>, u64>,
    capacity: usize,
}

impl JtiCache {
    /// A cache of at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time a token's `jti` is seen; false for a replay while the first is
    /// remembered. When the cache is full, expired entries go first; if none has expired, the
    /// entry closest to expiry is dropped: only a validly signed logout token gets here, and
    /// refusing a fresh logout would be worse than shortening an old token's replay window.
    pub(crate) fn check_and_insert(&mut self, token: &LogoutToken, now: u64) -> bool {
        if self
            .seen
            .get(token.jti.as_str())
            .is_some_and(|&until| until >= now)
        {
            return false;
        }
        if self.seen.len() >= self.capacity && !self.seen.contains_key(token.jti.as_str()) {
            self.seen.retain(|_, until| *until >= now);
            if self.seen.len() >= self.capacity {
                let soonest = self
                    .seen
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(jti, _)| jti.clone());
                if let Some(jti) = soonest {
                    self.seen.remove(&jti);
                }
            }
        }
        self.seen
            .insert(token.jti.as_str().into(), token.acceptable_until);
        true
    }

    #[cfg(test)]
    /// How many `jti`s are remembered.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests;
