//! Keys, sealing and opening, and the session payload. A file of its own: the properties and
//! their generator checks outgrow the bottom of `session.rs`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;

use super::*;

fn name(text: &str) -> CookieName {
    CookieName::parse(text).unwrap()
}

fn keys_of(raw: &[[u8; 32]]) -> SessionKeys {
    let text: Vec<String> = raw.iter().map(|key| STANDARD.encode(key)).collect();
    SessionKeys::parse(&text.join(",")).unwrap()
}

fn key(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn decode(value: &Sealed) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(value.as_str()).unwrap()
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn session(access_token: &str, refresh_token: Option<&str>, id_token: &str) -> Session {
    Session {
        id: Session::new_id().unwrap(),
        sub: "user-1".into(),
        sid: Some("sid-1".into()),
        id_token: id_token.into(),
        access_token: access_token.into(),
        access_expires_at: 1_700_000_300,
        refresh_token: refresh_token.map(Into::into),
        issued_at: 1_700_000_000,
        expires_at: 1_700_028_800,
    }
}

// ---- keys ----

#[test]
fn key_list_problems_are_named_by_position() {
    let k1 = STANDARD.encode(key(1));
    let k2 = URL_SAFE.encode(key(2));
    let short = STANDARD.encode([7u8; 16]);
    let long = STANDARD.encode([7u8; 33]);
    let cases: &[(&str, String, Result<usize, &str>)] = &[
        ("one standard key", k1.clone(), Ok(1)),
        (
            "two keys, both alphabets, spaces and no padding",
            format!(" {k1} ,{}", k2.trim_end_matches('=')),
            Ok(2),
        ),
        (
            "empty list",
            String::new(),
            Err(
                "no session keys: expected comma-separated base64 keys of 32 bytes each \
                 (make one with `openssl rand -base64 32`)",
            ),
        ),
        (
            "blank list",
            "  ".into(),
            Err(
                "no session keys: expected comma-separated base64 keys of 32 bytes each \
                 (make one with `openssl rand -base64 32`)",
            ),
        ),
        (
            "short key second",
            format!("{k1},{short}"),
            Err("key 2 is 16 bytes, needs 32 (make one with `openssl rand -base64 32`)"),
        ),
        (
            "long key",
            long,
            Err("key 1 is 33 bytes, needs 32 (make one with `openssl rand -base64 32`)"),
        ),
        (
            "not base64",
            format!("{k1},{}$", &k2[..20]),
            Err("key 2 is not base64 (standard or URL-safe alphabet)"),
        ),
        (
            "alphabets mixed in one key",
            format!("{}+-{}", &k1[..20], &k1[22..]),
            Err("key 1 is not base64 (standard or URL-safe alphabet)"),
        ),
        (
            "empty entries",
            format!(",{k1},"),
            Err("key 1 is empty; key 3 is empty"),
        ),
        (
            "the same key twice",
            format!("{k1},{k2},{}", STANDARD_NO_PAD.encode(key(1))),
            Err("key 3 repeats key 1"),
        ),
        (
            "every problem at once",
            format!("{short},,nope!"),
            Err(
                "key 1 is 16 bytes, needs 32 (make one with `openssl rand -base64 32`); \
                 key 2 is empty; key 3 is not base64 (standard or URL-safe alphabet)",
            ),
        ),
    ];
    for (case, text, expected) in cases {
        let got = SessionKeys::parse(text).map(|keys| keys.len());
        assert_eq!(got, expected.map_err(String::from), "{case}");
        if let Err(message) = got {
            for part in text.split(',').map(str::trim).filter(|p| p.len() >= 4) {
                assert!(!message.contains(part), "{case}: message echoes a key");
                // Nor any run of 6 characters of it (a decoder error would name one).
                for window in part.as_bytes().windows(6) {
                    let window = std::str::from_utf8(window).unwrap();
                    assert!(
                        !message.contains(window),
                        "{case}: message echoes `{window}`"
                    );
                }
            }
        }
    }
}

#[test]
fn keys_debug_shows_the_count_only() {
    let keys = keys_of(&[key(1), key(2)]);
    let shown = format!("{keys:?}");
    assert_eq!(shown, "SessionKeys(<2 redacted>)");
}

#[test]
fn key_id_is_a_labelled_hash_not_the_plain_one() {
    let plain = ring::digest::digest(&ring::digest::SHA256, &key(1));
    assert_ne!(key_id(&key(1))[..], plain.as_ref()[..KEY_ID_LEN]);
    assert_ne!(key_id(&key(1)), key_id(&key(2)));
}

proptest! {
    #[test]
    fn a_bad_key_is_never_echoed(raw in any::<[u8; 32]>(), cut in 1usize..32, at in 0usize..43, bad in "[$%!*.]") {
        // A key spoiled three ways: shortened, given a foreign character, both.
        let good = STANDARD.encode(raw);
        let spoiled = [
            STANDARD.encode(&raw[..cut]),
            format!("{}{bad}{}", &good[..at], &good[at + 1..]),
            format!("{}{bad}", &STANDARD.encode(&raw[..cut])),
        ];
        for text in spoiled {
            let text = text.trim();
            let message = SessionKeys::parse(text).unwrap_err();
            for window in text.as_bytes().windows(8) {
                let window = std::str::from_utf8(window).unwrap();
                prop_assert!(!message.contains(window), "`{}` in `{}`", window, message);
            }
        }
    }
}

// ---- seal and open ----

#[test]
fn layout_is_version_key_id_nonce_ciphertext_tag() {
    let keys = keys_of(&[key(1)]);
    let plaintext = b"twelve bytes";
    let sealed = seal(&keys, &name("s"), plaintext).unwrap();
    let bytes = decode(&sealed);
    assert_eq!(bytes.len(), 1 + 4 + 12 + plaintext.len() + 16);
    assert_eq!(bytes[0], VERSION);
    assert_eq!(bytes[1..5], key_id(&key(1)));
    assert!(
        !bytes
            .windows(plaintext.len())
            .any(|window| window == plaintext)
    );
    assert_eq!(
        &open(&keys, &name("s"), sealed.as_str()).unwrap()[..],
        plaintext
    );
    assert_eq!(
        format!("{sealed:?}"),
        format!("Sealed(<{} bytes>)", sealed.as_str().len())
    );
}

#[test]
fn every_seal_takes_a_fresh_nonce() {
    let keys = keys_of(&[key(1)]);
    let a = decode(&seal(&keys, &name("s"), b"same").unwrap());
    let b = decode(&seal(&keys, &name("s"), b"same").unwrap());
    assert_ne!(a[5..17], b[5..17]);
    assert_ne!(a, b);
}

#[test]
fn every_single_bit_flip_is_refused_exhaustively() {
    let keys = keys_of(&[key(1)]);
    for size in [0, 1, 24] {
        let sealed = seal(&keys, &name("s"), &vec![0x5a; size]).unwrap();
        let bytes = decode(&sealed);
        for position in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[position] ^= 1 << bit;
                let got = open(&keys, &name("s"), &encode(&flipped));
                assert_eq!(
                    got.err(),
                    Some(expected_refusal(position)),
                    "byte {position} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn every_truncation_is_refused_exhaustively() {
    let keys = keys_of(&[key(1)]);
    for size in [0, 1, 40] {
        let sealed = seal(&keys, &name("s"), &vec![0x5a; size]).unwrap();
        let bytes = decode(&sealed);
        for len in 0..bytes.len() {
            assert!(
                open(&keys, &name("s"), &encode(&bytes[..len])).is_err(),
                "{len} bytes"
            );
        }
        let text = sealed.as_str();
        for len in 0..text.len() {
            assert!(
                open(&keys, &name("s"), &text[..len]).is_err(),
                "{len} characters"
            );
        }
    }
}

#[test]
fn values_that_are_not_sealed_are_malformed() {
    let keys = keys_of(&[key(1)]);
    let sealed = seal(&keys, &name("s"), b"x").unwrap();
    for value in [
        "",
        "not base64!",
        "AAAA",
        &format!("{}=", sealed.as_str()),
        &format!(" {}", sealed.as_str()),
        &sealed.as_str().replace('-', "+").replace('_', "/"),
    ] {
        if value == sealed.as_str() {
            continue;
        }
        assert_eq!(
            open(&keys, &name("s"), value).err(),
            Some(OpenError::Malformed),
            "{value}"
        );
    }
}

/// Which refusal a flipped bit at `position` of a value must give.
fn expected_refusal(position: usize) -> OpenError {
    match region_of(position) {
        Region::Version => OpenError::Malformed,
        Region::KeyId => OpenError::UnknownKey,
        Region::Nonce | Region::Ciphertext | Region::Tag => OpenError::Forged,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    Version,
    KeyId,
    Nonce,
    Ciphertext,
    Tag,
}

/// The region of a byte position; past the nonce it says ciphertext, and the caller, who knows
/// the length, tells the tag (the last 16 bytes) apart.
fn region_of(position: usize) -> Region {
    match position {
        0 => Region::Version,
        1..5 => Region::KeyId,
        5..17 => Region::Nonce,
        _ => Region::Ciphertext,
    }
}

/// A plaintext size, a region and a byte position in it, and a bit: spread so that each region
/// is hit as often as the others, not in proportion to its size.
fn flip_strategy() -> impl Strategy<Value = (usize, Region, usize, u8)> {
    (
        1usize..300,
        prop_oneof![
            Just(Region::Version),
            Just(Region::KeyId),
            Just(Region::Nonce),
            Just(Region::Ciphertext),
            Just(Region::Tag),
        ],
        any::<prop::sample::Index>(),
        0u8..8,
    )
        .prop_map(|(size, region, index, bit)| {
            let (start, len) = match region {
                Region::Version => (0, 1),
                Region::KeyId => (1, 4),
                Region::Nonce => (5, 12),
                Region::Ciphertext => (17, size),
                Region::Tag => (17 + size, 16),
            };
            (size, region, start + index.index(len), bit)
        })
}

#[test]
fn flip_generator_reaches_every_region() {
    let mut runner = TestRunner::deterministic();
    let strategy = flip_strategy();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (size, region, position, _) = strategy.new_tree(&mut runner).unwrap().current();
        let total = HEADER_LEN + size + TAG_LEN;
        assert!(position < total);
        let actual = if position >= total - TAG_LEN {
            Region::Tag
        } else {
            region_of(position)
        };
        assert_eq!(actual, region);
        seen.insert(region);
    }
    assert_eq!(seen.len(), 5, "regions reached: {seen:?}");
}

fn cookie_name() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_-]{1,40}", "__Host-[a-z0-9.]{1,20}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_for_any_plaintext_and_name(
        plaintext in prop::collection::vec(any::<u8>(), 0..20 * 1024),
        cookie in cookie_name(),
    ) {
        let keys = keys_of(&[key(1), key(2)]);
        let cookie = name(&cookie);
        let sealed = seal(&keys, &cookie, &plaintext).unwrap();
        prop_assert!(sealed.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(sealed.as_str().len(), (4 * (HEADER_LEN + plaintext.len() + TAG_LEN)).div_ceil(3));
        let opened = open(&keys, &cookie, sealed.as_str()).unwrap();
        prop_assert_eq!(&opened[..], &plaintext[..]);
    }

    #[test]
    fn any_flipped_bit_is_refused((size, region, position, bit) in flip_strategy(), fill in any::<u8>()) {
        let keys = keys_of(&[key(1)]);
        let mut bytes = decode(&seal(&keys, &name("s"), &vec![fill; size]).unwrap());
        bytes[position] ^= 1 << bit;
        let expected = match region {
            Region::Version => OpenError::Malformed,
            Region::KeyId => OpenError::UnknownKey,
            Region::Nonce | Region::Ciphertext | Region::Tag => OpenError::Forged,
        };
        prop_assert_eq!(open(&keys, &name("s"), &encode(&bytes)).err(), Some(expected));
    }

    #[test]
    fn any_changed_character_is_refused(
        plaintext in prop::collection::vec(any::<u8>(), 0..200),
        at in any::<prop::sample::Index>(),
        to in "[A-Za-z0-9_-]",
    ) {
        let keys = keys_of(&[key(1)]);
        let sealed = seal(&keys, &name("s"), &plaintext).unwrap();
        let text = sealed.as_str();
        let at = at.index(text.len());
        prop_assume!(&text[at..=at] != to.as_str());
        // Also covers the last character, whose spare low bits the decoder requires to be zero.
        let changed = format!("{}{to}{}", &text[..at], &text[at + 1..]);
        prop_assert!(open(&keys, &name("s"), &changed).is_err());
    }

    #[test]
    fn any_truncation_is_refused(plaintext in prop::collection::vec(any::<u8>(), 0..2000), cut in any::<prop::sample::Index>()) {
        let keys = keys_of(&[key(1)]);
        let sealed = seal(&keys, &name("s"), &plaintext).unwrap();
        let bytes = decode(&sealed);
        let len = cut.index(bytes.len());
        prop_assert!(open(&keys, &name("s"), &encode(&bytes[..len])).is_err());
        let text = sealed.as_str();
        prop_assert!(open(&keys, &name("s"), &text[..cut.index(text.len())]).is_err());
    }

    #[test]
    fn a_value_moved_to_another_cookie_name_is_refused(
        plaintext in prop::collection::vec(any::<u8>(), 0..200),
        from in cookie_name(),
        to in cookie_name(),
    ) {
        prop_assume!(from != to);
        let keys = keys_of(&[key(1)]);
        let sealed = seal(&keys, &name(&from), &plaintext).unwrap();
        prop_assert_eq!(open(&keys, &name(&to), sealed.as_str()).err(), Some(OpenError::Forged));
    }

    #[test]
    fn keys_rotate(
        old in any::<[u8; 32]>(),
        new in any::<[u8; 32]>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        prop_assume!(old != new);
        let cookie = name("__Host-cookiegate");
        let sealed_old = seal(&keys_of(&[old]), &cookie, &plaintext).unwrap();
        // The new key first, the old one still accepted: old cookies open.
        let rotated = keys_of(&[new, old]);
        prop_assert_eq!(&open(&rotated, &cookie, sealed_old.as_str()).unwrap()[..], &plaintext[..]);
        // The old key dropped: old cookies are refused.
        prop_assert_eq!(
            open(&keys_of(&[new]), &cookie, sealed_old.as_str()).err(),
            Some(OpenError::UnknownKey)
        );
        // New seals use the new key: the new key alone opens them, the old alone does not.
        let sealed_new = seal(&rotated, &cookie, &plaintext).unwrap();
        prop_assert_eq!(&decode(&sealed_new)[1..5], &key_id(&new)[..]);
        prop_assert_eq!(&open(&keys_of(&[new]), &cookie, sealed_new.as_str()).unwrap()[..], &plaintext[..]);
        prop_assert_eq!(
            open(&keys_of(&[old]), &cookie, sealed_new.as_str()).err(),
            Some(OpenError::UnknownKey)
        );
    }
}

/// A key under a chosen id, to force what happens once in 2^32 key pairs.
fn key_with_id(bytes: [u8; 32], id: [u8; KEY_ID_LEN]) -> SessionKey {
    SessionKey {
        id,
        aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).unwrap()),
    }
}

#[test]
fn keys_sharing_an_id_are_all_tried() {
    let shared = key_id(&key(1));
    let keys = SessionKeys {
        first: key_with_id(key(1), shared),
        rest: vec![key_with_id(key(2), shared)],
    };
    let by_second = SessionKeys {
        first: key_with_id(key(2), shared),
        rest: Vec::new(),
    };
    let sealed = seal(&by_second, &name("s"), b"payload").unwrap();
    assert_eq!(
        &open(&keys, &name("s"), sealed.as_str()).unwrap()[..],
        b"payload"
    );
    let by_stranger = SessionKeys {
        first: key_with_id(key(3), shared),
        rest: Vec::new(),
    };
    let sealed = seal(&by_stranger, &name("s"), b"payload").unwrap();
    assert_eq!(
        open(&keys, &name("s"), sealed.as_str()).err(),
        Some(OpenError::Forged)
    );
}

// ---- the session ----

#[test]
fn session_round_trips_through_its_cookie() {
    let keys = keys_of(&[key(1)]);
    let cookie = name("__Host-cookiegate");
    for refresh in [Some("refresh-secret"), None] {
        let original = session("access-secret", refresh, "id-token-secret");
        let sealed = original.seal(&keys, &cookie).unwrap();
        assert_eq!(
            Session::open(&keys, &cookie, sealed.as_str()).unwrap(),
            original
        );
    }
}

#[test]
fn session_debug_redacts_every_token() {
    let shown = format!(
        "{:?}",
        session("access-secret", Some("refresh-secret"), "id-token-secret")
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("access_token: <redacted>"), "{shown}");
    assert!(shown.contains("refresh_token: Some(<redacted>)"), "{shown}");
    assert!(shown.contains("sub: \"user-1\""), "{shown}");
    let shown = format!("{:?}", session("access-secret", None, "id-token-secret"));
    assert!(shown.contains("refresh_token: None"), "{shown}");
}

#[test]
fn session_ids_are_fresh_128_bit_hex() {
    let a = Session::new_id().unwrap();
    let b = Session::new_id().unwrap();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_ne!(a, b);
}

#[test]
fn session_expiry_is_absolute() {
    let s = session("a", None, "i");
    assert!(!s.is_expired(s.expires_at - 1));
    assert!(s.is_expired(s.expires_at));
    assert!(s.is_expired(s.expires_at + 1));
}

#[test]
fn an_authentic_value_that_is_no_session_is_refused() {
    let keys = keys_of(&[key(1)]);
    let sealed = seal(&keys, &name("s"), br#"{"sub":"x"}"#).unwrap();
    assert_eq!(
        Session::open(&keys, &name("s"), sealed.as_str()).err(),
        Some(OpenError::Payload)
    );
}

/// Base64 spellings of `token` as it would look inside any base64 text, at each of the three
/// alignments, without the edge characters that depend on neighbouring bytes.
fn base64_spellings(token: &str) -> Vec<String> {
    let mut spellings = Vec::new();
    for skip in 0..3 {
        let Some(tail) = token.as_bytes().get(skip..) else {
            continue;
        };
        let whole = tail.len() / 3 * 3;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&tail[..whole]);
            if encoded.len() >= 8 {
                spellings.push(encoded);
            }
        }
    }
    spellings
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_token_appears_in_the_cookie(
        access in "[A-Za-z0-9._-]{16,400}",
        refresh in "[A-Za-z0-9._-]{16,100}",
        id_token in "[A-Za-z0-9._-]{16,2000}",
    ) {
        let keys = keys_of(&[key(1)]);
        let cookie = name("__Host-cookiegate");
        let sealed = session(&access, Some(&refresh), &id_token).seal(&keys, &cookie).unwrap();
        let text = sealed.as_str();
        let bytes = decode(&sealed);
        for token in [&access, &refresh, &id_token] {
            prop_assert!(!text.contains(token.as_str()));
            prop_assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
            for spelling in base64_spellings(token) {
                prop_assert!(!text.contains(&spelling));
            }
        }
        // The same holds for the cookies it is carried in.
        for chunk in chunk::split(&cookie, &sealed) {
            for token in [&access, &refresh, &id_token] {
                prop_assert!(!chunk.value().contains(token.as_str()));
            }
        }
    }
}

#[test]
fn handles_are_random_cookie_octets_and_never_look_like_a_sealed_session() {
    let a = new_handle().unwrap();
    let b = new_handle().unwrap();
    assert_ne!(a, b);
    assert!(is_handle(&a) && is_handle(&b));
    let keys = keys_of(&[[7; 32]]);
    let sealed = seal(&keys, &name("cg"), b"").unwrap();
    assert!(
        !is_handle(sealed.as_str()),
        "even an empty payload seals longer"
    );
    assert!(!is_handle(&a[..42]));
    assert!(!is_handle(&format!("{}=", &a[..42])));
}

#[test]
fn a_value_sealed_with_an_older_key_is_told_apart() {
    let old = keys_of(&[[1; 32]]);
    let rotated = keys_of(&[[2; 32], [1; 32]]);
    let by_old = seal(&old, &name("cg"), b"session").unwrap();
    let by_new = seal(&rotated, &name("cg"), b"session").unwrap();
    assert!(old.sealed_with_first(by_old.as_str()));
    assert!(!rotated.sealed_with_first(by_old.as_str()));
    assert!(rotated.sealed_with_first(by_new.as_str()));
    assert!(!rotated.sealed_with_first("garbage"));
    assert!(!rotated.sealed_with_first(""));
}
