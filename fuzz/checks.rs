//! The checks behind the `guards` fuzz target and `tests/fuzz_props.rs`, in one place.
//!
//! Both include this file with `#[path]`: libFuzzer feeds it bytes through
//! `fuzz/fuzz_targets/guards.rs`, proptest feeds it bytes and structured strings in `cargo test`.
//! It lives outside the library on purpose: it is test code (an oracle), so it stays out of the
//! shipped binary and the public API, needs no cargo feature, and is written against the public
//! API only, so it checks what callers can see. It is linted with the rest of the crate through
//! the test binary.
//!
//! Every check takes plain values, calls the real function and asserts an invariant with
//! `assert!`: a panic is the finding, for libFuzzer and proptest alike. The oracles here are
//! written independently of the code under test (their own percent-decoder, their own
//! `cookie-octet` table), so a bug shared by both is unlikely.

use std::net::IpAddr;

use cookiegate::auth::{CookieName, SessionError, extract_session};
use cookiegate::guard::csrf::{CsrfMode, CsrfPolicy, CsrfReject, is_safe_method, parse_origin};
use cookiegate::routing::{RoutePrefix, UpstreamBase};
use cookiegate::trust::{Proto, TrustedProxies, identify, parse_cidr};
use http::header::{COOKIE, ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// Route prefixes the decoder picks from (valid by construction).
pub(crate) const PREFIXES: &[&str] = &["/api/proxy", "/", "/api", "/api/chatkit", "/a-b/c.d"];

/// Upstream bases the decoder picks from: root and non-root base paths, IPv6, https, odd ports.
pub(crate) const BASES: &[&str] = &[
    "http://127.0.0.1:8000",
    "http://127.0.0.1:8000/base",
    "https://api.example.com/v1/chatkit",
    "http://[::1]:9000/x",
    "http://backend",
];

/// Cookie names the decoder picks from.
pub(crate) const COOKIE_NAMES: &[&str] =
    &["auth_token", "__Host-session", "a", "taskflow_id_token"];

/// Header names that matter to the CSRF decision, plus one that must not.
const CSRF_HEADERS: &[&str] = &["origin", "sec-fetch-site", "x-csrf", "referer"];

/// Methods the decoder picks from when the bytes do not form one.
const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Runs one check chosen by the first byte, on values decoded from the rest. Never panics unless
/// an invariant is broken.
pub(crate) fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 5 {
        0 => {
            let (prefix, base) = route(&mut input);
            check_target_mapping(&prefix, &base, input.rest());
        }
        1 => {
            let (prefix, base) = route(&mut input);
            let path = String::from_utf8_lossy(input.chunk()).into_owned();
            let query = (input.byte() & 1 == 1)
                .then(|| String::from_utf8_lossy(input.chunk()).into_owned());
            check_raw_mapping(&prefix, &base, &path, query.as_deref());
        }
        2 => {
            let name = match CookieName::parse(&String::from_utf8_lossy(input.chunk())) {
                Ok(name) if input.byte() & 1 == 1 => name,
                _ => cookie_name(input.pick(COOKIE_NAMES)),
            };
            let fields: Vec<&[u8]> = (0..input.byte() % 5).map(|_| input.chunk()).collect();
            check_session(&fields, &name);
        }
        3 => {
            let policy = csrf_policy(&mut input);
            let method = Method::from_bytes(input.chunk())
                .unwrap_or_else(|_| METHODS[usize::from(input.byte()) % METHODS.len()].clone());
            let host = match input.byte() % 3 {
                0 => None,
                _ => HeaderValue::from_bytes(input.chunk()).ok(),
            };
            let mut headers = HeaderMap::new();
            for _ in 0..input.byte() % 6 {
                let name = match input.byte() % 5 {
                    4 => HeaderName::from_bytes(input.chunk()).ok(),
                    i => HeaderName::from_bytes(CSRF_HEADERS[usize::from(i)].as_bytes()).ok(),
                };
                if let (Some(name), Ok(value)) = (name, HeaderValue::from_bytes(input.chunk())) {
                    headers.append(name, value);
                }
            }
            check_csrf(&policy, &method, &headers, host.as_ref());
        }
        _ => {
            let peer = ip(&mut input);
            let trusted = TrustedProxies::new(
                (0..input.byte() % 4)
                    .filter_map(|_| {
                        let net = ip(&mut input);
                        let prefix = input.byte() % 129;
                        // Canonical forms only, as `check` takes them.
                        let net = ipnet::IpNet::new(net, prefix).ok()?.trunc();
                        parse_cidr(&net.to_string()).ok()
                    })
                    .collect(),
            );
            let mut headers = HeaderMap::new();
            for _ in 0..input.byte() % 4 {
                let value = if input.byte() & 1 == 1 {
                    // A list of real addresses, so the walk gets past the first hop.
                    let hops: Vec<String> = (0..input.byte() % 5)
                        .map(|_| ip(&mut input).to_string())
                        .collect();
                    HeaderValue::from_str(&hops.join(", ")).ok()
                } else {
                    HeaderValue::from_bytes(input.chunk()).ok()
                };
                if let Some(value) = value {
                    headers.append("x-forwarded-for", value);
                }
            }
            check_client_ip(peer, &headers, &trusted);
        }
    }
}

/// A cursor over fuzz bytes: single bytes, length-prefixed chunks, and picks from lists. Reads
/// past the end give zeros and empty chunks, so every input decodes to something.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps the bytes.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, 0 when exhausted.
    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A chunk: one length byte, then up to that many bytes.
    pub(crate) fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.data.len());
        let (chunk, rest) = self.data.split_at(len);
        self.data = rest;
        chunk
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// One item of a non-empty list.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
}

/// A route prefix and upstream: a fuzzed one when it parses (and the input asks for it), else
/// one from the fixed lists.
fn route(input: &mut Input<'_>) -> (RoutePrefix, UpstreamBase) {
    let choice = input.byte();
    let fixed_prefix = prefix(input.pick(PREFIXES));
    let fixed_base = base(input.pick(BASES));
    let prefix = match choice & 1 {
        1 => RoutePrefix::parse(&String::from_utf8_lossy(input.chunk())).unwrap_or(fixed_prefix),
        _ => fixed_prefix,
    };
    let base = match choice & 2 {
        2 => UpstreamBase::parse(&String::from_utf8_lossy(input.chunk())).unwrap_or(fixed_base),
        _ => fixed_base,
    };
    (prefix, base)
}

fn csrf_policy(input: &mut Input<'_>) -> CsrfPolicy {
    let allowed_origins = match input.byte() & 1 {
        1 => parse_origin(&String::from_utf8_lossy(input.chunk()))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    let mode = match input.byte() % 4 {
        0 | 1 => CsrfMode::Origin,
        2 => CsrfMode::Header(HeaderName::from_static("x-csrf")),
        _ => CsrfMode::Off,
    };
    CsrfPolicy {
        mode,
        allowed_origins,
    }
}

/// An IPv4 or IPv6 address from the next 5 or 17 bytes.
fn ip(input: &mut Input<'_>) -> IpAddr {
    if input.byte() & 1 == 0 {
        IpAddr::from([input.byte(), input.byte(), input.byte(), input.byte()])
    } else {
        let mut octets = [0u8; 16];
        for octet in &mut octets {
            *octet = input.byte();
        }
        IpAddr::from(octets)
    }
}

/// A prefix from the fixed list (valid by construction; an invalid entry is a bug here).
pub(crate) fn prefix(text: &str) -> RoutePrefix {
    match RoutePrefix::parse(text) {
        Ok(prefix) => prefix,
        Err(e) => panic!("fixed prefix {text:?} does not parse: {e}"),
    }
}

/// An upstream from the fixed list.
pub(crate) fn base(text: &str) -> UpstreamBase {
    match UpstreamBase::parse(text) {
        Ok(base) => base,
        Err(e) => panic!("fixed upstream {text:?} does not parse: {e}"),
    }
}

/// A cookie name from the fixed list.
pub(crate) fn cookie_name(text: &str) -> CookieName {
    match CookieName::parse(text) {
        Ok(name) => name,
        Err(e) => panic!("fixed cookie name {text:?} does not parse: {e}"),
    }
}

/// Path mapping for a request target as a client sends it (the bytes after the method).
///
/// The target goes through `http::Uri` as hyper parses it; one that does not parse, or whose path
/// does not start with `/`, never reaches routing. For the rest: the prefix matches on a segment
/// boundary, and a mapped URI keeps the upstream's scheme, host and port, its path is exactly the
/// base path followed by the remainder, its query is the client's byte for byte, and nothing in
/// the path lets an upstream that decodes it once climb above the base path.
pub(crate) fn check_target_mapping(prefix: &RoutePrefix, base: &UpstreamBase, target: &[u8]) {
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    // Absolute-form targets use only their path (the proxy does the same).
    let path = uri.path();
    if !path.starts_with('/') {
        return;
    }
    let Some(rest) = prefix.strip(path) else {
        if prefix.as_str() != "/" {
            let under = format!("{}/", prefix.as_str());
            assert!(
                path != prefix.as_str() && !path.starts_with(&under),
                "{path:?} is under {prefix:?} but did not match"
            );
        }
        return;
    };
    assert!(
        rest.is_empty() || rest.starts_with('/'),
        "remainder {rest:?}"
    );
    if prefix.as_str() == "/" {
        assert_eq!(rest, path);
    } else {
        assert_eq!(format!("{}{rest}", prefix.as_str()), path);
    }
    match base.uri(rest, uri.query()) {
        Ok(mapped) => {
            assert_same_upstream(&mapped, base);
            let mut want = format!("{}{rest}", base.base_path());
            if want.is_empty() {
                want.push('/');
            }
            assert_eq!(mapped.path(), want, "target {target:?}");
            assert!(mapped.path().starts_with(base.base_path()));
            assert_eq!(mapped.query(), uri.query(), "query changed for {target:?}");
            assert!(
                stays_under_base(rest.as_bytes()),
                "{rest:?} climbs out of {:?} once decoded",
                base.base_path()
            );
        }
        Err(_) => assert!(
            rest.bytes().any(|b| matches!(b, b'.' | b'%' | 0)),
            "{rest:?} refused though it holds no dot, escape or NUL"
        ),
    }
}

/// Path mapping for any strings, valid targets or not: no panic, and whatever comes out goes to
/// the configured scheme, host and port.
pub(crate) fn check_raw_mapping(
    prefix: &RoutePrefix,
    base: &UpstreamBase,
    path: &str,
    query: Option<&str>,
) {
    if let Some(rest) = prefix.strip(path) {
        if let Ok(mapped) = base.uri(rest, query) {
            assert_same_upstream(&mapped, base);
            assert!(mapped.path().starts_with(base.base_path()));
        }
    }
}

fn assert_same_upstream(mapped: &Uri, base: &UpstreamBase) {
    let scheme = if base.is_https() { "https" } else { "http" };
    assert_eq!(mapped.scheme_str(), Some(scheme));
    assert_eq!(mapped.authority(), Some(base.authority()));
    assert_eq!(mapped.host(), Some(base.authority().host()));
    assert_eq!(mapped.port_u16(), base.authority().port_u16());
}

/// Whether an upstream that percent-decodes `path` once (valid `%XX` only; a stray `%` stays
/// literal), splits segments at `/` and `\`, ignores `;params`, merges empty segments and then
/// applies dot segments, stays at or below where it started, and sees no NUL.
///
/// This is the property the routing guard exists for, written from the upstream's side rather
/// than copied from `routing::is_safe_remainder`.
pub(crate) fn stays_under_base(path: &[u8]) -> bool {
    let decoded = percent_decode(path);
    if decoded.contains(&0) {
        return false;
    }
    let mut depth = 0usize;
    for segment in decoded.split(|&b| b == b'/' || b == b'\\') {
        let name = segment.split(|&b| b == b';').next().unwrap_or_default();
        match name {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Cookie extraction from `Cookie` fields (each used when it is a valid header value, as hyper
/// would deliver it): a token is non-empty and made only of RFC 6265 `cookie-octet`s (so it can
/// never inject a header), is a piece of what the client sent, becomes a sensitive
/// `Bearer <token>` value, and never prints; two or more cookies of the name are always
/// refused as ambiguous, one never is.
pub(crate) fn check_session(fields: &[&[u8]], name: &CookieName) {
    let mut headers = HeaderMap::new();
    for field in fields {
        if let Ok(value) = HeaderValue::from_bytes(field) {
            headers.append(COOKIE, value);
        }
    }
    let named = count_named(&headers, name.as_str().as_bytes());
    match extract_session(&headers, name) {
        Ok(Some(token)) => {
            assert_eq!(named, 1);
            assert_eq!(format!("{token:?}"), "SessionToken(<redacted>)");
            let header = token.authorization();
            assert!(header.is_sensitive());
            assert_eq!(format!("{header:?}"), "Sensitive");
            let value = header.as_bytes();
            assert!(value.starts_with(b"Bearer "), "{value:?}");
            let token = &value[7..];
            assert!(!token.is_empty());
            assert!(
                token.iter().all(|&b| is_cookie_octet(b)),
                "token {token:?} holds a byte outside cookie-octet"
            );
            assert!(
                headers
                    .get_all(COOKIE)
                    .iter()
                    .any(|f| f.as_bytes().windows(token.len()).any(|w| w == token)),
                "token {token:?} is not in what the client sent"
            );
        }
        Ok(None) | Err(SessionError::Unusable) => assert!(named <= 1, "{named} cookies named"),
        Err(SessionError::Ambiguous) => assert!(named >= 2, "ambiguous with {named} cookies"),
    }
    if named >= 2 {
        assert!(matches!(
            extract_session(&headers, name),
            Err(SessionError::Ambiguous)
        ));
    }
}

/// How many `name=value` pairs across all fields carry `name` (RFC 6265 §5.4: pairs split by
/// `;`, name before the first `=`, surrounding spaces and tabs ignored).
fn count_named(headers: &HeaderMap, name: &[u8]) -> usize {
    // A header value holds no CR, LF, FF or VT, so ASCII trimming removes exactly spaces and tabs.
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|field| field.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| pair.iter().position(|&b| b == b'=').map(|eq| &pair[..eq]))
        .filter(|n| n.trim_ascii() == name)
        .count()
}

/// RFC 6265 §4.1.1: `%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`, spelled out as the
/// excluded bytes so this table is not a copy of the one in `auth::cookie`.
fn is_cookie_octet(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"\",;\\".contains(&b)
}

/// The CSRF decision: no panic; safe methods and `mode = "off"` always pass; otherwise an unsafe
/// request that a browser marked `Sec-Fetch-Site: cross-site` is always refused, `mode =
/// "header"` refuses a request without its header, and an unsafe request that passes carries no
/// `Origin` or the request's own or an allowed one.
pub(crate) fn check_csrf(
    policy: &CsrfPolicy,
    method: &Method,
    headers: &HeaderMap,
    host: Option<&HeaderValue>,
) {
    let decision = policy.check(method, headers, host);
    if is_safe_method(method) || matches!(policy.mode, CsrfMode::Off) {
        assert_eq!(decision, Ok(()), "{method} with mode {:?}", policy.mode);
        return;
    }
    if let CsrfMode::Header(name) = &policy.mode {
        if !headers.contains_key(name) {
            assert_eq!(decision, Err(CsrfReject::MissingHeader));
            return;
        }
    }
    // A browser sends exactly one Sec-Fetch-Site and a page cannot set or add it (a forbidden
    // header name); several fields can only come from a non-browser client, which carries no
    // ambient cookies to forge with.
    let mut fetch_site = headers.get_all("sec-fetch-site").iter();
    if let (Some(only), None) = (fetch_site.next(), fetch_site.next()) {
        if only.as_bytes().eq_ignore_ascii_case(b"cross-site") {
            assert_eq!(decision, Err(CsrfReject::CrossSite), "{method} cross-site");
            return;
        }
    }
    if decision.is_ok() {
        if let Some(origin) = headers.get(ORIGIN) {
            assert!(
                is_own_origin(origin.as_bytes(), host) || is_listed(origin.as_bytes(), policy),
                "{method} passed with a foreign Origin {origin:?} (host {host:?})"
            );
        }
    }
}

/// Whether `Origin` names the host the request was sent to, under `http` or `https` (TLS may end
/// in front of cookiegate). Surrounding whitespace is tolerated, as the guard does.
fn is_own_origin(origin: &[u8], host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(host)) = (std::str::from_utf8(origin), host) else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    let host = host.as_bytes().to_ascii_lowercase();
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.as_bytes() == host)
    })
}

fn is_listed(origin: &[u8], policy: &CsrfPolicy) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    policy
        .allowed_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim()))
}

/// The client IP ([`identify`]): no panic; an untrusted peer is always its own client; and
/// an address taken from `X-Forwarded-For` was written by a trusted hop, that is, every entry to
/// its right (and the peer) is a trusted proxy. The client's own left-most entries are never
/// believed past an untrusted or unreadable hop.
pub(crate) fn check_client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) {
    let is_trusted = |ip: IpAddr| trusted.contains(ip);
    let peer = peer.to_canonical();
    let chosen = identify(peer, Proto::Http, None, headers, trusted).ip;
    if chosen == peer {
        return;
    }
    assert!(
        is_trusted(peer),
        "{chosen} believed from an untrusted peer {peer}"
    );
    let hops: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|field| field.as_bytes().split(|&b| b == b','))
        .map(|hop| {
            std::str::from_utf8(hop)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .map(|ip| ip.to_canonical())
        })
        .collect();
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if *ip == chosen => return,
            Some(ip) if is_trusted(*ip) => {}
            _ => break,
        }
    }
    panic!("{chosen} chosen, but an untrusted or unreadable hop stands to its right: {hops:?}");
}
