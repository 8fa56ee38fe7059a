//! Finding the session cookie in a request's `Cookie` headers (pure).
//!
//! Parsing follows RFC 6265 §5.4 as browsers send it: pairs separated by `;`, optional
//! whitespace, name and value split at the first `=`. HTTP/2 clients may split cookies across
//! several `Cookie` fields (RFC 9113 §8.2.3), so every field is read.

use http::HeaderMap;
use http::header::COOKIE;

use super::{CookieName, SessionToken};

/// Why a present cookie cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The cookie holds bytes that are not RFC 6265 `cookie-octet`s (controls, spaces, `"`,
    /// `,`, `;`, `\`, non-ASCII): never turned into a header, so it cannot inject one.
    Unusable,
    /// Several cookies carry the route's name. A sibling subdomain can set a second cookie of the
    /// same name (cookie tossing), so picking one would let it choose whose token is sent.
    Ambiguous,
}

/// The route's session token, `Ok(None)` when no cookie of that name (or only an empty one) is
/// present.
///
/// # Errors
/// [`SessionError`] when the cookie is present but cannot be used.
pub fn extract_session(
    headers: &HeaderMap,
    name: &CookieName,
) -> Result<Option<SessionToken>, SessionError> {
    let name = name.as_str().as_bytes();
    let mut found: Option<(&http::HeaderValue, std::ops::Range<usize>)> = None;
    for field in headers.get_all(COOKIE) {
        let bytes = field.as_bytes();
        let mut start = 0;
        for pair in bytes.split(|&b| b == b';') {
            let pair_start = start;
            start += pair.len() + 1;
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != name {
                continue;
            }
            if found.is_some() {
                return Err(SessionError::Ambiguous);
            }
            let value_start = pair_start + eq + 1;
            let value = value_range(bytes, value_start, pair_start + pair.len());
            found = Some((field, value));
        }
    }
    let Some((field, range)) = found else {
        return Ok(None);
    };
    let value = &field.as_bytes()[range.clone()];
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    if value.is_empty() {
        return Ok(None);
    }
    if !value.iter().all(|&b| is_cookie_octet(b)) {
        return Err(SessionError::Unusable);
    }
    Ok(Some(SessionToken::from_checked(
        bytes::Bytes::copy_from_slice(value),
    )))
}

/// The value's byte range with surrounding whitespace removed.
fn value_range(bytes: &[u8], mut start: usize, mut end: usize) -> std::ops::Range<usize> {
    while start < end && is_ows(bytes[start]) {
        start += 1;
    }
    while end > start && is_ows(bytes[end - 1]) {
        end -= 1;
    }
    start..end
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 6265 §4.1.1 `cookie-octet`: visible US-ASCII except `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(fields: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for field in fields {
            map.append(COOKIE, HeaderValue::from_bytes(field).unwrap());
        }
        map
    }

    fn bearer(fields: &[&[u8]]) -> Result<Option<String>, SessionError> {
        let name = CookieName::parse("auth_token").unwrap();
        extract_session(&headers(fields), &name)
            .map(|t| t.map(|t| String::from_utf8(t.authorization().as_bytes().to_vec()).unwrap()))
    }

    #[test]
    fn finds_the_named_cookie_among_others() {
        assert_eq!(
            bearer(&[b"theme=dark; auth_token=abc.def-ghi_; other=1"]),
            Ok(Some("Bearer abc.def-ghi_".into()))
        );
        assert_eq!(
            bearer(&[b"auth_token=\"quoted\""]),
            Ok(Some("Bearer quoted".into()))
        );
        assert_eq!(
            bearer(&[b"a=1", b" auth_token = t ;"]),
            Ok(Some("Bearer t".into()))
        );
        assert_eq!(bearer(&[b"x_auth_token=nope"]), Ok(None));
        assert_eq!(bearer(&[b"auth_token="]), Ok(None));
        assert_eq!(bearer(&[b"auth_token"]), Ok(None));
        assert_eq!(bearer(&[]), Ok(None));
    }

    #[test]
    fn bad_values_are_unusable_not_injected() {
        assert_eq!(bearer(&[b"auth_token=a\tb"]), Err(SessionError::Unusable));
        assert_eq!(bearer(&[b"auth_token=a b"]), Err(SessionError::Unusable));
        assert_eq!(bearer(&[b"auth_token=a\\b"]), Err(SessionError::Unusable));
        assert_eq!(bearer(&[b"auth_token=a,b"]), Err(SessionError::Unusable));
        assert_eq!(
            bearer(&[b"auth_token=caf\xc3\xa9"]),
            Err(SessionError::Unusable)
        );
        assert_eq!(bearer(&[b"auth_token=a\"b"]), Err(SessionError::Unusable));
    }

    #[test]
    fn duplicate_names_are_ambiguous() {
        assert_eq!(
            bearer(&[b"auth_token=a; auth_token=b"]),
            Err(SessionError::Ambiguous)
        );
        assert_eq!(
            bearer(&[b"auth_token=a", b"auth_token=a"]),
            Err(SessionError::Ambiguous)
        );
    }

    proptest! {
        #[test]
        fn any_cookie_field_gives_a_safe_answer(field in proptest::collection::vec(0x20u8..0xff, 0..80)) {
            let Ok(value) = HeaderValue::from_bytes(&field) else { return Ok(()); };
            let mut map = HeaderMap::new();
            map.append(COOKIE, value);
            let name = CookieName::parse("auth_token").unwrap();
            if let Ok(Some(token)) = extract_session(&map, &name) {
                let header = token.authorization();
                prop_assert!(header.as_bytes()[7..].iter().all(|&b| is_cookie_octet(b)));
            }
        }

        #[test]
        fn a_valid_token_always_comes_through(token in "[A-Za-z0-9._~+/=-]{1,64}", before in "[a-z]{1,5}=[a-z]{0,5}") {
            let field = format!("{before}; auth_token={token}");
            prop_assert_eq!(bearer(&[field.as_bytes()]), Ok(Some(format!("Bearer {token}"))));
        }
    }
}
