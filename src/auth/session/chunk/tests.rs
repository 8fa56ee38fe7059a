//! Splitting, reassembly and the `Set-Cookie` values, checked against a small cookie jar that
//! keeps what a browser keeps.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::auth::session::{SessionKeys, seal};

fn name(text: &str) -> CookieName {
    CookieName::parse(text).unwrap()
}

/// A sealed-looking value of exactly `len` base64url characters.
fn sealed(len: usize, seed: u8) -> Sealed {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let text = (0..len)
        .map(|i| ALPHABET[(i * 7 + usize::from(seed)) % 64] as char)
        .collect();
    Sealed(text)
}

fn cookie_headers(fields: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for field in fields {
        map.append(COOKIE, HeaderValue::from_str(field).unwrap());
    }
    map
}

const LAX: CookieAttrs = CookieAttrs {
    same_site: SameSite::Lax,
    secure: true,
    max_age: Duration::from_secs(28_800),
};

/// What a browser keeps from `Set-Cookie` values: name -> value, `Max-Age=0` deletes.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn store(&mut self, headers: &[HeaderValue]) {
        for header in headers {
            let line = header.to_str().unwrap();
            assert!(line.len() <= 4096, "{} bytes", line.len());
            let (pair, attributes) = line.split_once("; ").unwrap();
            let (cookie, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0;") {
                self.0.remove(cookie);
            } else {
                self.0.insert(cookie.to_owned(), value.to_owned());
            }
        }
    }

    /// The `Cookie` fields a request carries: the pairs in the order `order` picks, spread over
    /// `fields` fields (as HTTP/2 clients may), with an unrelated cookie in between.
    fn request(&self, order: &[usize], fields: usize) -> HeaderMap {
        let mut pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.push("theme=dark".into());
        let mut shuffled = Vec::new();
        for &i in order {
            if !pairs.is_empty() {
                shuffled.push(pairs.remove(i % pairs.len()));
            }
        }
        shuffled.append(&mut pairs);
        let per_field = shuffled.len().div_ceil(fields.max(1));
        let mut map = HeaderMap::new();
        for group in shuffled.chunks(per_field.max(1)) {
            map.append(COOKIE, HeaderValue::from_str(&group.join("; ")).unwrap());
        }
        map
    }
}

/// The sealed lengths at which the cookie count changes, for `name`: the largest single cookie,
/// then the largest value of 2, 3, ... chunks.
fn boundaries(cookie: &CookieName, up_to: usize) -> Vec<usize> {
    let mut sizes = vec![COOKIE_BUDGET - cookie.as_str().len() - 1];
    let mut total = 0;
    for index in 0..up_to {
        total += COOKIE_BUDGET - format!("{}.{index}", cookie.as_str()).len() - 1;
        if index >= 1 {
            sizes.push(total);
        }
    }
    sizes
}

fn round_trip(
    cookie: &CookieName,
    value: &Sealed,
    order: &[usize],
    fields: usize,
) -> Vec<CookieChunk> {
    let chunks = split(cookie, value);
    for chunk in &chunks {
        assert!(chunk.name().len() + 1 + chunk.value().len() <= COOKIE_BUDGET);
    }
    let mut jar = Jar::default();
    jar.store(&set_cookie_headers(&chunks, &LAX));
    let request = jar.request(order, fields);
    assert_eq!(
        assemble(&request, cookie),
        Ok(Some(value.as_str().to_owned()))
    );
    chunks
}

#[test]
fn the_cookie_count_changes_exactly_at_the_boundaries() {
    for cookie in [
        "__Host-cookiegate",
        "s",
        "a-rather-long-session-cookie-name",
    ] {
        let cookie = name(cookie);
        for (count, &size) in boundaries(&cookie, 6).iter().enumerate() {
            let count = count + 1;
            for (size, expected) in [(size - 1, count), (size, count), (size + 1, count + 1)] {
                let value = sealed(size, 3);
                let chunks = round_trip(&cookie, &value, &[2, 0, 1], 2);
                assert_eq!(chunks.len(), expected, "{cookie:?} at {size} bytes");
                if expected == 1 {
                    assert_eq!(chunks[0].name(), cookie.as_str());
                } else {
                    let names: Vec<String> = (0..expected)
                        .map(|i| format!("{}.{i}", cookie.as_str()))
                        .collect();
                    let got: Vec<&str> = chunks.iter().map(CookieChunk::name).collect();
                    assert_eq!(got, names);
                    // Every chunk but the last is filled to the budget.
                    for chunk in &chunks[..expected - 1] {
                        assert_eq!(chunk.name().len() + 1 + chunk.value().len(), COOKIE_BUDGET);
                    }
                }
            }
        }
    }
}

#[test]
fn small_and_empty_values_are_one_cookie() {
    let cookie = name("__Host-cookiegate");
    for size in [0, 1, 44] {
        let chunks = split(&cookie, &sealed(size, 0));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].name(), "__Host-cookiegate");
    }
}

#[test]
fn assemble_accepts_whole_or_contiguous_chunks_only() {
    let cookie = name("sess");
    /// A case's name, its `Cookie` fields and the value (or refusal) they give.
    type Case = (
        &'static str,
        &'static [&'static str],
        Result<Option<&'static str>, OpenError>,
    );
    let cases: &[Case] = &[
        ("no cookie at all", &[], Ok(None)),
        (
            "only other cookies",
            &["theme=dark; sess.x=1; sessx=2; sess.=3"],
            Ok(None),
        ),
        ("whole", &["theme=dark; sess=abc"], Ok(Some("abc"))),
        ("whole with spaces", &[" sess = abc ;"], Ok(Some("abc"))),
        (
            "chunks in order",
            &["sess.0=ab; sess.1=cd; sess.2=e"],
            Ok(Some("abcde")),
        ),
        (
            "chunks out of order",
            &["sess.2=e; sess.0=ab; sess.1=cd"],
            Ok(Some("abcde")),
        ),
        (
            "chunks over fields",
            &["sess.1=cd", "x=1; sess.0=ab"],
            Ok(Some("abcd")),
        ),
        ("one chunk", &["sess.0=ab"], Ok(Some("ab"))),
        (
            "whole twice",
            &["sess=a; sess=b"],
            Err(OpenError::Ambiguous),
        ),
        (
            "whole twice, same value",
            &["sess=a", "sess=a"],
            Err(OpenError::Ambiguous),
        ),
        (
            "chunk twice",
            &["sess.0=a; sess.1=b; sess.0=a"],
            Err(OpenError::Ambiguous),
        ),
        (
            "whole beside chunks",
            &["sess=a; sess.0=b"],
            Err(OpenError::Ambiguous),
        ),
        (
            "whole beside later chunk",
            &["sess.0=b; sess.1=c", "sess=a"],
            Err(OpenError::Ambiguous),
        ),
        ("gap", &["sess.0=a; sess.2=c"], Err(OpenError::Incomplete)),
        ("no first chunk", &["sess.1=b"], Err(OpenError::Incomplete)),
        (
            "leading zero",
            &["sess.0=a; sess.01=b"],
            Err(OpenError::Malformed),
        ),
        (
            "zero spelled twice",
            &["sess.00=a"],
            Err(OpenError::Malformed),
        ),
        (
            "index past usize",
            &["sess.0=a; sess.99999999999999999999999=b"],
            Err(OpenError::Malformed),
        ),
        (
            "a name without a value is ignored",
            &["sess; theme=dark"],
            Ok(None),
        ),
    ];
    for (case, fields, expected) in cases {
        let got = assemble(&cookie_headers(fields), &cookie);
        let expected = expected.map(|value| value.map(String::from));
        assert_eq!(got, expected, "{case}");
    }
}

#[test]
fn assemble_refuses_a_value_that_is_not_text() {
    let mut map = HeaderMap::new();
    map.append(COOKIE, HeaderValue::from_bytes(b"sess=caf\xc3").unwrap());
    assert_eq!(assemble(&map, &name("sess")), Err(OpenError::Malformed));
    // Another cookie's bytes are not ours to judge.
    let mut map = HeaderMap::new();
    map.append(
        COOKIE,
        HeaderValue::from_bytes(b"other=caf\xc3; sess=ok").unwrap(),
    );
    assert_eq!(assemble(&map, &name("sess")), Ok(Some("ok".into())));
}

#[test]
fn set_cookie_carries_every_attribute() {
    let cookie = name("__Host-cookiegate");
    let chunks = split(&cookie, &sealed(10, 0));
    let headers = set_cookie_headers(&chunks, &LAX);
    assert_eq!(
        headers,
        [format!(
            "__Host-cookiegate={}; Path=/; Max-Age=28800; HttpOnly; Secure; SameSite=Lax",
            sealed(10, 0).as_str()
        )]
    );
    assert!(headers[0].is_sensitive());
    let plain = CookieAttrs {
        same_site: SameSite::Strict,
        secure: false,
        max_age: Duration::from_millis(61_999),
    };
    assert_eq!(
        set_cookie_headers(&split(&name("s"), &sealed(3, 0)), &plain),
        [format!(
            "s={}; Path=/; Max-Age=61; HttpOnly; SameSite=Strict",
            sealed(3, 0).as_str()
        )]
    );
}

#[test]
fn clearing_deletes_stale_chunks_and_keeps_the_new_ones() {
    let cookie = name("__Host-s");
    let request = cookie_headers(&[
        "__Host-s.0=a; __Host-s.1=b; __Host-s.2=c; theme=dark",
        "__Host-s.3=d; __Host-s=old; __Host-s.x=not-ours; __Host-s.03=odd",
    ]);
    let clear = |keep: &[CookieChunk]| -> Vec<String> {
        clear_cookie_headers(&request, &cookie, keep, &LAX)
            .iter()
            .map(|h| {
                assert!(h.is_sensitive());
                h.to_str().unwrap().to_owned()
            })
            .collect()
    };
    let deletion = |n: &str| format!("{n}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax");
    // A new session of two chunks: the whole cookie and chunks 2, 3 (and the odd spelling) go.
    let two = split(&cookie, &sealed(5000, 0));
    assert_eq!(two.len(), 2);
    assert_eq!(
        clear(&two),
        ["__Host-s", "__Host-s.03", "__Host-s.2", "__Host-s.3"].map(deletion)
    );
    // A new session in one cookie: every chunk goes, the whole cookie is overwritten.
    let one = split(&cookie, &sealed(100, 0));
    assert_eq!(
        clear(&one),
        [
            "__Host-s.0",
            "__Host-s.03",
            "__Host-s.1",
            "__Host-s.2",
            "__Host-s.3"
        ]
        .map(deletion)
    );
    // Logout: everything of the family goes, nothing else.
    assert_eq!(
        clear(&[]),
        [
            "__Host-s",
            "__Host-s.0",
            "__Host-s.03",
            "__Host-s.1",
            "__Host-s.2",
            "__Host-s.3"
        ]
        .map(deletion)
    );
    assert!(clear_cookie_headers(&HeaderMap::new(), &cookie, &[], &LAX).is_empty());
}

#[test]
fn a_shrinking_session_leaves_no_stale_chunk_in_the_jar() {
    let cookie = name("__Host-cookiegate");
    let mut jar = Jar::default();
    for size in [13_000, 5_000, 100, 9_000, 0] {
        let value = sealed(size, 1);
        let chunks = split(&cookie, &value);
        let mut headers = set_cookie_headers(&chunks, &LAX);
        headers.extend(clear_cookie_headers(
            &jar.request(&[], 1),
            &cookie,
            &chunks,
            &LAX,
        ));
        jar.store(&headers);
        assert_eq!(jar.0.len(), chunks.len(), "after {size} bytes");
        assert_eq!(
            assemble(&jar.request(&[1, 1], 3), &cookie),
            Ok(Some(value.as_str().to_owned()))
        );
    }
    jar.store(&clear_cookie_headers(
        &jar.request(&[], 1),
        &cookie,
        &[],
        &LAX,
    ));
    assert!(jar.0.is_empty());
}

#[test]
fn cookie_names_and_secure_are_checked_together() {
    let cases: &[(&str, bool, Result<(), &str>)] = &[
        ("__Host-cookiegate", true, Ok(())),
        ("cookiegate", false, Ok(())),
        ("cookiegate", true, Ok(())),
        (
            "__Host-cookiegate",
            false,
            Err(
                "session cookie `__Host-cookiegate` starts with `__Host-`, which browsers accept \
                 only with Secure: serve the session over https or use a name without the prefix",
            ),
        ),
        (
            "__host-cookiegate",
            false,
            Err(
                "session cookie `__host-cookiegate` starts with `__Host-`, which browsers accept \
                 only with Secure: serve the session over https or use a name without the prefix",
            ),
        ),
        (
            "__Secure-s",
            false,
            Err(
                "session cookie `__Secure-s` starts with `__Secure-`, which browsers accept \
                 only with Secure: serve the session over https or use a name without the prefix",
            ),
        ),
        ("__Secure-s", true, Ok(())),
        ("__Hos", false, Ok(())),
    ];
    for (cookie, secure, expected) in cases {
        assert_eq!(
            check_name_and_secure(&name(cookie), *secure),
            expected.map_err(String::from),
            "{cookie} secure={secure}"
        );
    }
    let long = "n".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        check_name_and_secure(&name(&long), true),
        Err(format!(
            "session cookie name is 201 bytes, at most {MAX_NAME_LEN}"
        ))
    );
    assert_eq!(check_name_and_secure(&name(&long[1..]), true), Ok(()));
}

#[test]
fn same_site_parses_lowercase_names() {
    assert_eq!(SameSite::parse("lax"), Ok(SameSite::Lax));
    assert_eq!(SameSite::parse("strict"), Ok(SameSite::Strict));
    assert_eq!(
        SameSite::parse("none"),
        Err("`none` must be one of lax, strict".into())
    );
    assert!(SameSite::parse("Lax").is_err());
}

#[test]
fn chunk_debug_hides_the_value() {
    let chunks = split(&name("s"), &sealed(10, 0));
    assert_eq!(format!("{:?}", chunks[0]), "CookieChunk(s, <10 bytes>)");
}

/// Sizes that land on and beside the boundaries, mixed with any size up to 20 KiB.
fn size_strategy() -> impl Strategy<Value = usize> {
    let near = boundaries(&name("__Host-cookiegate"), 6);
    prop_oneof![
        0usize..20 * 1024,
        (prop::sample::select(near), -1isize..=1).prop_map(|(b, d)| b.saturating_add_signed(d)),
    ]
}

#[test]
fn size_generator_lands_on_the_boundaries() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = size_strategy();
    let sizes: Vec<usize> = (0..500)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    for boundary in boundaries(&name("__Host-cookiegate"), 6) {
        assert!(sizes.contains(&boundary), "never exactly {boundary}");
        assert!(sizes.contains(&(boundary + 1)), "never {boundary} + 1");
    }
    assert!(sizes.iter().any(|&s| s < 1000) && sizes.iter().any(|&s| s > 16_000));
}

proptest! {
    #[test]
    fn split_and_assemble_round_trip(
        size in size_strategy(),
        seed in any::<u8>(),
        order in prop::collection::vec(any::<usize>(), 0..8),
        fields in 1usize..4,
    ) {
        round_trip(&name("__Host-cookiegate"), &sealed(size, seed), &order, fields);
    }

    #[test]
    fn every_set_cookie_fits_in_4096_bytes(
        cookie in "[A-Za-z0-9_-]{1,200}",
        size in 0usize..30_000,
        strict in any::<bool>(),
        secure in any::<bool>(),
        max_age in any::<u64>(),
    ) {
        let cookie = name(&cookie);
        let attrs = CookieAttrs {
            same_site: if strict { SameSite::Strict } else { SameSite::Lax },
            secure,
            max_age: Duration::from_secs(max_age),
        };
        let chunks = split(&cookie, &sealed(size, 0));
        let mut headers = set_cookie_headers(&chunks, &attrs);
        // Clearing as many stale chunks again as the session has.
        let stale: Vec<String> = (0..2 * chunks.len()).map(|i| format!("{}.{i}=x", cookie.as_str())).collect();
        headers.extend(clear_cookie_headers(&cookie_headers(&[&stale.join("; ")]), &cookie, &chunks, &attrs));
        for header in &headers {
            prop_assert!(header.len() <= 4096, "{} bytes", header.len());
        }
    }

    #[test]
    fn any_cookie_fields_give_an_answer_not_a_panic(fields in prop::collection::vec("[ -~]{0,60}", 0..4)) {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let _ = assemble(&cookie_headers(&fields), &name("s"));
    }
}

#[test]
fn a_session_survives_the_whole_trip_through_a_browser() {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let keys = SessionKeys::parse(&key).unwrap();
    let cookie = name("__Host-cookiegate");
    for size in [10, 3_000, 9_000] {
        let plaintext = vec![b'x'; size];
        let value = seal(&keys, &cookie, &plaintext).unwrap();
        let mut jar = Jar::default();
        jar.store(&set_cookie_headers(&split(&cookie, &value), &LAX));
        let assembled = assemble(&jar.request(&[3, 1], 2), &cookie)
            .unwrap()
            .unwrap();
        let opened = crate::auth::session::open(&keys, &cookie, &assembled).unwrap();
        assert_eq!(&opened[..], &plaintext[..]);
    }
}
