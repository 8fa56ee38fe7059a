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

    /// RFC 6265 `cookie-octet`, spelled independently of [`is_cookie_octet`] for the model.
    fn octet(b: u8) -> bool {
        b.is_ascii_graphic() && !b"\",;\\".contains(&b)
    }

    /// One `name=value` pair of a generated `Cookie` field, and what cookiegate should read
    /// from it.
    #[derive(Debug, Clone)]
    struct Pair {
        /// Starts a new `Cookie` field (HTTP/2 clients split cookies across fields).
        new_field: bool,
        text: Vec<u8>,
        /// Whether it names the route's cookie: `auth_token` once trimmed, with an `=`.
        session: bool,
        /// Its value as RFC 6265 reads it: whitespace trimmed, one pair of quotes removed.
        value: Vec<u8>,
    }

    /// Pairs whose names are often the route's cookie (or near misses: a prefix, a suffix,
    /// other case, no `=`) and whose values hold any byte a header value can carry except `;`,
    /// cookie-octets more often than not.
    fn pair() -> impl Strategy<Value = Pair> {
        let name = prop_oneof![
            4 => Just((&b"auth_token"[..], true)),
            1 => Just((&b" auth_token\t"[..], true)),
            1 => Just((&b"x_auth_token"[..], false)),
            1 => Just((&b"auth_tokens"[..], false)),
            1 => Just((&b"Auth_Token"[..], false)),
            1 => Just((&b"theme"[..], false)),
        ];
        let octets: Vec<u8> = (0x20..=0x7e).filter(|&b| octet(b)).collect();
        let byte = prop_oneof![
            8 => proptest::sample::select(octets),
            1 => proptest::sample::select(vec![b' ', b'\t', b'"', b',', b'\\']),
            1 => 0x80u8..=0xff,
        ];
        let ows = proptest::sample::select(vec![&b""[..], b"", b" ", b"\t "]);
        (
            any::<bool>(),
            name,
            proptest::bool::weighted(0.9),
            ows.clone(),
            any::<bool>(),
            proptest::collection::vec(byte, 0..6),
            ows,
        )
            .prop_map(
                |(new_field, (name, named), has_eq, lead, quoted, core, trail)| {
                    let mut text = name.to_vec();
                    if !has_eq {
                        return Pair {
                            new_field,
                            text,
                            session: false,
                            value: Vec::new(),
                        };
                    }
                    let quote: &[u8] = if quoted { b"\"" } else { b"" };
                    let raw = [lead, quote, &core, quote, trail].concat();
                    text.push(b'=');
                    text.extend_from_slice(&raw);
                    let mut value = raw.trim_ascii();
                    if let [b'"', inner @ .., b'"'] = value {
                        value = inner;
                    }
                    Pair {
                        new_field,
                        text,
                        session: named,
                        value: value.to_vec(),
                    }
                },
            )
    }

    /// What cookiegate must answer for these pairs, decided from how they were made.
    fn expected(pairs: &[Pair]) -> Result<Option<String>, SessionError> {
        let sessions: Vec<&Pair> = pairs.iter().filter(|p| p.session).collect();
        match sessions.as_slice() {
            [] => Ok(None),
            [one] if one.value.is_empty() => Ok(None),
            [one] if one.value.iter().all(|&b| octet(b)) => Ok(Some(format!(
                "Bearer {}",
                String::from_utf8(one.value.clone()).unwrap()
            ))),
            [_] => Err(SessionError::Unusable),
            _ => Err(SessionError::Ambiguous),
        }
    }

    /// How often each answer came up.
    #[derive(Debug, Default)]
    struct Answers {
        token: u32,
        unusable: u32,
        ambiguous: u32,
        none: u32,
    }

    /// Any mix of pairs across one or more `Cookie` fields gets exactly the answer the pairs
    /// call for, and a token only ever holds cookie-octets. The run counts its answers and
    /// fails unless every kind came up often: the generator demonstrably reaches session
    /// cookies with invalid bytes, duplicates and near-miss names.
    #[test]
    fn any_cookie_field_gives_the_exact_safe_answer() {
        let config = proptest::test_runner::Config {
            cases: 1024,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        };
        let answers = std::cell::RefCell::new(Answers::default());
        let result = proptest::test_runner::TestRunner::new(config).run(
            &proptest::collection::vec(pair(), 0..6),
            |pairs| {
                let mut fields: Vec<Vec<u8>> = Vec::new();
                for pair in &pairs {
                    match fields.last_mut() {
                        Some(field) if !pair.new_field => {
                            field.extend_from_slice(b"; ");
                            field.extend_from_slice(&pair.text);
                        }
                        _ => fields.push(pair.text.clone()),
                    }
                }
                let fields: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
                let got = bearer(&fields);
                prop_assert_eq!(&got, &expected(&pairs), "fields {:?}", fields);
                if let Ok(Some(header)) = &got {
                    prop_assert!(header.as_bytes()[7..].iter().all(|&b| octet(b)));
                }
                let mut answers = answers.borrow_mut();
                match got {
                    Ok(Some(_)) => answers.token += 1,
                    Err(SessionError::Unusable) => answers.unusable += 1,
                    Err(SessionError::Ambiguous) => answers.ambiguous += 1,
                    Ok(None) => answers.none += 1,
                }
                Ok(())
            },
        );
        if let Err(err) = result {
            panic!("{err}");
        }
        let answers = answers.into_inner();
        assert!(
            [
                answers.token,
                answers.unusable,
                answers.ambiguous,
                answers.none
            ]
            .iter()
            .all(|&n| n >= 50),
            "every kind of answer must come up: {answers:?}"
        );
    }

    proptest! {
        #[test]
        fn a_valid_token_always_comes_through(token in "[A-Za-z0-9._~+/=-]{1,64}", before in "[a-z]{1,5}=[a-z]{0,5}") {
            let field = format!("{before}; auth_token={token}");
            prop_assert_eq!(bearer(&[field.as_bytes()]), Ok(Some(format!("Bearer {token}"))));
        }
    }
}
