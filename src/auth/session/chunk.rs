//! Carrying a sealed session in cookies (pure): cutting it into `NAME`, or `NAME.0`, `NAME.1`,
//! ... when it is too big for one cookie, reading it back from a request's `Cookie` fields, and
//! the `Set-Cookie` values that set and clear it. Sealing is the parent module's job.
//!
//! Browsers keep a cookie only when its name, value and attributes fit in 4096 bytes
//! (RFC 6265 §6.1 sets that as the minimum they must store; Chrome and Firefox refuse more), so
//! each `NAME=value` stays within [`COOKIE_BUDGET`] and the attributes, under 100 bytes, fit in
//! what is left. A session of `n` chunks costs about `4 KB × n` in every request's head, which
//! `server.max_header_bytes` must allow.
//!
//! Reading is strict, because a sibling subdomain can set cookies this host receives (cookie
//! tossing; `__Host-` names prevent it, other names do not): two cookies of one name, a whole
//! `NAME` beside chunks, or chunks with a gap are refused rather than resolved by picking one.

use std::collections::BTreeSet;
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use super::{OpenError, Sealed};
use crate::auth::CookieName;

/// The most bytes of `NAME=value` in one cookie; the attributes stay under 96 more, keeping every
/// `Set-Cookie` within 4096 bytes.
pub(crate) const COOKIE_BUDGET: usize = 4000;

/// The longest session cookie name [`check_name_and_secure`] accepts: chunk names add a few
/// bytes, and every chunk must keep most of [`COOKIE_BUDGET`] for its value.
pub(crate) const MAX_NAME_LEN: usize = 200;

/// The `SameSite` attribute (RFC 6265bis §4.1.2.7). `None` is not offered: the session cookie
/// is never sent on cross-site subrequests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SameSite {
    /// Sent on top-level cross-site navigations (following a link in), not on subrequests.
    Lax,
    /// Never sent cross-site.
    Strict,
}

impl SameSite {
    /// Parses `lax` or `strict`.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "lax" => Ok(Self::Lax),
            "strict" => Ok(Self::Strict),
            other => Err(format!("`{other}` must be one of lax, strict")),
        }
    }

    /// The attribute's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Lax => "Lax",
            Self::Strict => "Strict",
        }
    }
}

/// The attributes of every session cookie. `Path=/` and `HttpOnly` are always set and `Domain`
/// never is: that is what a `__Host-` name requires, and the session belongs to this host only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CookieAttrs {
    /// `SameSite`.
    pub(crate) same_site: SameSite,
    /// Whether `Secure` is set (required by `__Host-` and `__Secure-` names).
    pub(crate) secure: bool,
    /// `Max-Age`, in whole seconds: the session's remaining lifetime.
    pub(crate) max_age: Duration,
}

/// One cookie of a sealed session: a name (`NAME` or `NAME.k`) and a slice of the sealed value.
/// Only [`split`] makes one, so both are always valid in a header.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CookieChunk {
    name: String,
    value: String,
}

impl CookieChunk {
    #[cfg(test)]
    /// The cookie's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[cfg(test)]
    /// The cookie's value.
    pub(crate) fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for CookieChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CookieChunk({}, <{} bytes>)",
            self.name,
            self.value.len()
        )
    }
}

/// The cookies that carry `sealed`: `NAME` alone when `NAME=value` fits in [`COOKIE_BUDGET`],
/// else `NAME.0`, `NAME.1`, ... each filled up to the budget.
/// The one cookie holding a session handle (`[store] sessions = "store"`): short, never split.
pub(crate) fn handle(name: &CookieName, handle: &str) -> Vec<CookieChunk> {
    vec![CookieChunk {
        name: name.as_str().to_owned(),
        value: handle.to_owned(),
    }]
}

pub(crate) fn split(name: &CookieName, sealed: &Sealed) -> Vec<CookieChunk> {
    let name = name.as_str();
    let mut rest = sealed.as_str();
    if name.len() + 1 + rest.len() <= COOKIE_BUDGET {
        return vec![CookieChunk {
            name: name.to_owned(),
            value: rest.to_owned(),
        }];
    }
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let chunk_name = format!("{name}.{}", chunks.len());
        // A name within MAX_NAME_LEN leaves ~3800 bytes; the floor only keeps an unchecked
        // absurd name from looping forever.
        let room = COOKIE_BUDGET
            .saturating_sub(chunk_name.len() + 1)
            .max(64)
            .min(rest.len());
        // `Sealed` is ASCII, so every index is a character boundary.
        let (value, tail) = rest.split_at(room);
        chunks.push(CookieChunk {
            name: chunk_name,
            value: value.to_owned(),
        });
        rest = tail;
    }
    chunks
}

/// The sealed value of the cookie `name` in a request, from every `Cookie` field (HTTP/2
/// clients may send several, RFC 9113 §8.2.3): `NAME` alone, or `NAME.0` to `NAME.n` joined in
/// index order, whatever order they arrive in. `Ok(None)` when there is no such cookie.
///
/// # Errors
/// [`OpenError::Ambiguous`] for a name seen twice or `NAME` beside chunks,
/// [`OpenError::Incomplete`] for chunks with a gap or without `NAME.0`, and
/// [`OpenError::Malformed`] for a chunk index with leading zeros or out of range, or a value
/// that is not text.
pub(crate) fn assemble(
    headers: &HeaderMap,
    name: &CookieName,
) -> Result<Option<String>, OpenError> {
    let mut whole: Option<&[u8]> = None;
    let mut chunks: Vec<(usize, &[u8])> = Vec::new();
    for (cookie, value) in cookies(headers) {
        match family_member(cookie, name) {
            None => {}
            Some(Member::Whole) => {
                if whole.is_some() {
                    return Err(OpenError::Ambiguous);
                }
                whole = Some(value);
            }
            Some(Member::Chunk(index)) => {
                chunks.push((parse_index(index).ok_or(OpenError::Malformed)?, value));
            }
        }
    }
    let value = match (whole, chunks.is_empty()) {
        (None, true) => return Ok(None),
        (Some(_), false) => return Err(OpenError::Ambiguous),
        (Some(value), true) => value.to_vec(),
        (None, false) => {
            chunks.sort_unstable_by_key(|&(index, _)| index);
            let mut joined = Vec::new();
            for (expected, &(index, value)) in chunks.iter().enumerate() {
                if index < expected {
                    return Err(OpenError::Ambiguous);
                }
                if index > expected {
                    return Err(OpenError::Incomplete);
                }
                joined.extend_from_slice(value);
            }
            joined
        }
    };
    String::from_utf8(value)
        .map(Some)
        .map_err(|_| OpenError::Malformed)
}

/// `Set-Cookie` values that set `chunks`, marked sensitive (never indexed by HPACK, hidden
/// from `Debug`).
pub(crate) fn set_cookie_headers(chunks: &[CookieChunk], attrs: &CookieAttrs) -> Vec<HeaderValue> {
    chunks
        .iter()
        .map(|chunk| set_cookie(&chunk.name, &chunk.value, attrs, attrs.max_age.as_secs()))
        .collect()
}

/// `Set-Cookie` values (`Max-Age=0`) that delete every cookie of the `name` family the request
/// carries (`NAME` and any `NAME.k`) except those in `keep`: with `keep` the chunks just set,
/// this clears what a bigger previous session left behind (or the whole `NAME` a now-chunked
/// one replaces); with nothing kept, it logs out. The attributes match the ones used to set,
/// which a `__Host-` cookie needs for the deletion to be accepted.
pub(crate) fn clear_cookie_headers(
    request: &HeaderMap,
    name: &CookieName,
    keep: &[CookieChunk],
    attrs: &CookieAttrs,
) -> Vec<HeaderValue> {
    let present: BTreeSet<&[u8]> = cookies(request)
        .filter(|&(cookie, _)| family_member(cookie, name).is_some())
        .map(|(cookie, _)| cookie)
        .collect();
    present
        .into_iter()
        .filter(|cookie| !keep.iter().any(|chunk| chunk.name.as_bytes() == *cookie))
        .filter_map(|cookie| std::str::from_utf8(cookie).ok())
        .map(|cookie| set_cookie(cookie, "", attrs, 0))
        .collect()
}

/// Whether a session cookie name suits the `Secure` setting, for config validation: a `__Host-`
/// or `__Secure-` name (prefixes match case-insensitively, RFC 6265bis §4.1.3) is dropped by
/// browsers without `Secure`, which would silently log nobody in.
///
/// # Errors
/// A message for the config problem list.
pub(crate) fn check_name_and_secure(name: &CookieName, secure: bool) -> Result<(), String> {
    let name = name.as_str();
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "session cookie name is {} bytes, at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if secure {
        return Ok(());
    }
    for prefix in ["__Host-", "__Secure-"] {
        if name
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        {
            return Err(format!(
                "session cookie `{name}` starts with `{prefix}`, which browsers accept only with \
                 Secure: serve the session over https or use a name without the prefix"
            ));
        }
    }
    Ok(())
}

/// How a cookie relates to the session cookie `NAME`.
enum Member<'a> {
    /// `NAME` itself.
    Whole,
    /// `NAME.` followed by these digits.
    Chunk(&'a [u8]),
}

/// `Some` for `NAME` and for `NAME.` followed by one or more ASCII digits; other cookies, such
/// as `NAME.x`, are someone else's.
fn family_member<'a>(cookie: &'a [u8], name: &CookieName) -> Option<Member<'a>> {
    let rest = cookie.strip_prefix(name.as_str().as_bytes())?;
    if rest.is_empty() {
        return Some(Member::Whole);
    }
    let digits = rest.strip_prefix(b".")?;
    (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some(Member::Chunk(digits))
}

/// A chunk index in its one canonical spelling: no leading zeros, within `usize`. `NAME.01`
/// beside `NAME.1` would otherwise be two spellings of one chunk.
fn parse_index(digits: &[u8]) -> Option<usize> {
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Every `name=value` pair of every `Cookie` field, split as RFC 6265 §5.4 browsers send them:
/// pairs separated by `;`, name and value at the first `=`, surrounding whitespace dropped.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.get_all(COOKIE).iter().flat_map(|field| {
        field.as_bytes().split(|&b| b == b';').filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((trim(&pair[..eq]), trim(&pair[eq + 1..])))
        })
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// One `Set-Cookie` value. `name` is a cookie name or a chunk name (token characters) and
/// `value` base64url or empty, so the header is visible ASCII by construction.
#[expect(
    clippy::expect_used,
    reason = "names are RFC 9110 tokens (CookieName) plus `.digits`, values base64url (Sealed): \
              always a valid header value"
)]
fn set_cookie(name: &str, value: &str, attrs: &CookieAttrs, max_age: u64) -> HeaderValue {
    let secure = if attrs.secure { "; Secure" } else { "" };
    let line = format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly{secure}; SameSite={}",
        attrs.same_site.as_str()
    );
    let mut header = HeaderValue::try_from(line)
        .expect("a cookie name and a base64url value always make a valid header value");
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests;
