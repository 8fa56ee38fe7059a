//! The `guards` fuzz target's checks, run under proptest in `cargo test` (the "Proof" requirements).
//!
//! libFuzzer needs `cargo fuzz` (see `fuzz/README.md`); these run the same checks, from
//! `fuzz/checks.rs`, on every `cargo test`: tens of thousands of arbitrary byte strings decoded the
//! way the fuzz target decodes them, plus structured inputs weighted towards the bytes that matter
//! (dot segments, escapes, separators, quotes, duplicate cookies, cross-site headers, forged
//! `X-Forwarded-For` chains), and one property across whole configs: guard decisions do not
//! depend on the order routes are declared in (through `admit`, the whole refusal order).

#[path = "../fuzz/checks.rs"]
mod checks;

use std::net::IpAddr;
use std::sync::LazyLock;

use cookiegate::Config;
use cookiegate::admission::{Admitted, Facts, admit};
use cookiegate::guard::csrf::{CsrfMode, CsrfPolicy, CsrfReject, parse_origin};
use cookiegate::trust::{Proto, TrustedProxies, parse_cidr};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;

/// Bytes a path is built from, weighted towards what can climb, split or confuse a host.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("/".to_string()),
        2 => Just(".".to_string()),
        2 => Just("..".to_string()),
        6 => prop::sample::select(vec![
            "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", "%3b", "%3B", "%00", "%", "%%",
            "%2", "%u002e", "%c0%ae", "@", ":", "evil.example", "?", "#", "//", "~", "+",
        ])
        .prop_map(str::to_string),
        3 => "[a-zA-Z0-9_~-]{1,4}",
        1 => "%[0-9a-fA-F]{2}",
        1 => "[ -~]{1,2}",
    ]
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(path_piece(), 0..14).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn query_strategy() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-z=&%0-9.;/?#:@+ ]{0,16}")
}

/// One `Cookie` field: pairs of a name (often the route's, in odd spellings) and a value (often
/// hostile), joined by `;` with optional spaces.
fn cookie_field(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let pair_name = prop_oneof![
        4 => Just(name.to_string()),
        1 => Just(format!(" {name} ")),
        1 => Just(format!("{name}\t")),
        1 => Just(format!("x_{name}")),
        1 => Just(name.to_ascii_uppercase()),
        2 => "[a-z_]{0,6}",
    ];
    let value = prop_oneof![
        4 => "[A-Za-z0-9._~+/=-]{0,24}".prop_map(String::into_bytes),
        1 => "\"[A-Za-z0-9]{0,8}\"".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..12),
        1 => prop::sample::select(vec![
            &b"a b"[..], b"a\tb", b"\"", b"\"\"", b"a\\b", b"a,b", b"caf\xc3\xa9", b"\x7f", b"x\r\nX-Admin: 1",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    let pair = (pair_name, prop::option::of(value), any::<bool>()).prop_map(|(n, v, spaced)| {
        let mut out = n.into_bytes();
        if let Some(v) = v {
            out.push(b'=');
            if spaced {
                out.push(b' ');
            }
            out.extend(v);
        }
        out
    });
    (prop::collection::vec(pair, 0..5), any::<bool>())
        .prop_map(|(pairs, tight)| pairs.join(if tight { &b";"[..] } else { b"; " }))
}

fn method_strategy() -> impl Strategy<Value = Method> {
    prop_oneof![
        8 => prop::sample::select(vec![
            Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE, Method::POST, Method::PUT,
            Method::PATCH, Method::DELETE,
        ]),
        1 => "[A-Za-z]{1,8}".prop_filter_map("a method", |m| Method::from_bytes(m.as_bytes()).ok()),
    ]
}

fn unsafe_method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ])
}

const HOST: &str = "app.localhost:4000";

fn origin_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "http://app.localhost:4000",
            "https://app.localhost:4000",
            "HTTP://APP.localhost:4000",
            "http://app.localhost:4000/",
            "http://app.localhost:4001",
            "http://app.localhost",
            "http://evil.example",
            "https://admin.example.com",
            "null",
            "",
            " http://app.localhost:4000 ",
            "http://app.localhost:4000.evil.example",
            "http://evil.example#http://app.localhost:4000",
            "ftp://app.localhost:4000",
        ])
        .prop_map(str::to_string),
        "(https?://)?[a-z.]{1,12}(:[0-9]{1,4})?",
        "[ -~]{0,24}",
    ]
}

fn fetch_site_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "cross-site",
            "CROSS-SITE",
            "same-site",
            "same-origin",
            "none",
            " cross-site"
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
    ]
}

fn policy_strategy() -> impl Strategy<Value = CsrfPolicy> {
    let mode = prop_oneof![
        2 => Just(CsrfMode::Origin),
        1 => Just(CsrfMode::Header(HeaderName::from_static("x-csrf"))),
        1 => Just(CsrfMode::Off),
    ];
    let allowed = prop::collection::vec(
        prop_oneof![
            Just("https://admin.example.com".to_string()),
            Just("HTTP://Other.Example:8443/".to_string()),
            "(https?://)?[a-z.]{1,12}(:[0-9]{1,4})?",
        ],
        0..3,
    )
    .prop_map(|list| list.iter().filter_map(|o| parse_origin(o).ok()).collect());
    (mode, allowed).prop_map(|(mode, allowed_origins)| CsrfPolicy {
        mode,
        allowed_origins,
    })
}

fn header_map(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.append(HeaderName::from_static(name), value);
        }
    }
    map
}

fn ip_strategy() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        prop::sample::select(vec![
            "10.0.0.1",
            "10.255.0.9",
            "127.0.0.1",
            "192.168.1.2",
            "203.0.113.7",
            "198.51.100.1",
            "::1",
            "::ffff:10.0.0.3",
            "2001:db8::1",
        ])
        .prop_map(|s| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s}: {e}"))),
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn hop_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ip_strategy().prop_map(|ip| ip.to_string()),
        1 => ip_strategy().prop_map(|ip| format!(" {ip} ")),
        1 => ip_strategy().prop_map(|ip| format!("[{ip}]:443")),
        1 => prop::sample::select(vec!["unknown", "", "_hidden", "1.2.3", "1.2.3.4.5", "::g"])
            .prop_map(str::to_string),
        1 => "[ -~]{0,10}",
    ]
}

/// Three to four routes with different auth modes and one method-restricted route: every file
/// order of them, so any order dependence in routing or guards shows up as a disagreement.
static CONFIGS: LazyLock<Vec<Config>> = LazyLock::new(|| {
    let routes = [
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:3000\"\nauth = \"none\"\n",
        "[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:8000/v1\"\n",
        "[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"http://127.0.0.1:8001\"\nauth = \"optional\"\n",
        "[[routes]]\nprefix = \"/api/chatkit\"\nupstream = \"http://127.0.0.1:8002/chatkit\"\nmethods = [\"POST\"]\n",
    ];
    let mut configs = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let order = [a, b, c, d];
                    let mut seen = [false; 4];
                    if order.iter().any(|&i| std::mem::replace(&mut seen[i], true)) {
                        continue;
                    }
                    let text: String = order.iter().map(|&i| routes[i]).collect();
                    configs.push(
                        Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")),
                    );
                }
            }
        }
    }
    assert_eq!(configs.len(), 24);
    configs
});

/// the inputs that got past the path check before stray `%` bytes stopped swallowing
/// what follows them. The first is the `guards` fuzz target's crash file, byte for byte, so its
/// decoding is replayed exactly; the others are the same bug as request targets.
#[test]
fn path_check_bypasses_found_by_fuzzing_stay_fixed() {
    checks::run(b"(htt/%h(htt/%h%2tt%V%00i");
    let prefix = checks::prefix("/api/proxy");
    let base = checks::base("http://127.0.0.1:8000/base");
    for target in [
        "/api/proxy/;%/../admin",
        "/api/proxy/;x%/..%2fadmin",
        "/api/proxy/%%00",
        "/api/proxy/a%/../..",
    ] {
        checks::check_target_mapping(&prefix, &base, target.as_bytes());
        let rest = prefix.strip(target).unwrap();
        assert!(base.uri(rest, None).is_err(), "{target} must be refused");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Whatever libFuzzer could feed the target, proptest feeds it too: no check may fail.
    #[test]
    fn arbitrary_bytes_pass_every_check(data in prop::collection::vec(any::<u8>(), 0..300)) {
        checks::run(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn request_targets_map_inside_the_configured_upstream(
        prefix in 0..checks::PREFIXES.len(),
        base in 0..checks::BASES.len(),
        under_prefix in prop::bool::weighted(0.9),
        path in path_strategy(),
        query in query_strategy(),
    ) {
        let prefix_text = checks::PREFIXES[prefix];
        let route_prefix = checks::prefix(prefix_text);
        let upstream = checks::base(checks::BASES[base]);
        let mut target = match (under_prefix, prefix_text) {
            (true, "/") | (false, _) => path.clone(),
            (true, p) => format!("{p}{path}"),
        };
        if let Some(q) = &query {
            target.push('?');
            target.push_str(q);
        }
        checks::check_target_mapping(&route_prefix, &upstream, target.as_bytes());
        checks::check_raw_mapping(&route_prefix, &upstream, &target, query.as_deref());
    }

    #[test]
    fn cookie_headers_give_a_safe_token_or_a_refusal(
        name in 0..checks::COOKIE_NAMES.len(),
        fields in prop::collection::vec(cookie_field("auth_token"), 0..3),
        other in prop::collection::vec(cookie_field("__Host-session"), 0..2),
    ) {
        let fields: Vec<&[u8]> = fields.iter().chain(&other).map(Vec::as_slice).collect();
        checks::check_session(&fields, &checks::cookie_name(checks::COOKIE_NAMES[name]));
        checks::check_session(&fields, &checks::cookie_name("auth_token"));
    }

    #[test]
    fn csrf_decisions_hold_for_browser_shaped_requests(
        policy in policy_strategy(),
        method in method_strategy(),
        fetch_site in prop::option::of(fetch_site_strategy()),
        origin in prop::option::of(origin_strategy()),
        csrf_header in prop::option::of("[ -~]{0,4}"),
        host in prop::option::of(prop_oneof![3 => Just(HOST.to_string()), 1 => "[a-z.:0-9]{0,16}"]),
    ) {
        let mut pairs = Vec::new();
        pairs.extend(fetch_site.map(|v| ("sec-fetch-site", v)));
        pairs.extend(origin.map(|v| ("origin", v)));
        pairs.extend(csrf_header.map(|v| ("x-csrf", v)));
        let host = host.and_then(|h| HeaderValue::from_str(&h).ok());
        checks::check_csrf(&policy, &method, &header_map(&pairs), host.as_ref());
    }

    /// in origin mode an unsafe request a browser marks cross-site never passes, whatever
    /// else it carries (even its own site's Origin, an allowed Origin or the CSRF header).
    #[test]
    fn cross_site_unsafe_requests_are_always_refused_in_origin_mode(
        method in unsafe_method(),
        origin in prop::option::of(origin_strategy()),
        extra in prop::collection::vec(("[a-z-]{1,12}", "[ -~]{0,12}"), 0..4),
    ) {
        let policy = CsrfPolicy {
            mode: CsrfMode::Origin,
            allowed_origins: vec!["https://admin.example.com".into()],
        };
        let mut map = header_map(&[("sec-fetch-site", "cross-site".to_string())]);
        if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
            map.append("origin", origin);
        }
        for (name, value) in extra {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) else {
                continue;
            };
            if name != "sec-fetch-site" {
                map.append(name, value);
            }
        }
        let host = HeaderValue::from_static(HOST);
        prop_assert_eq!(policy.check(&method, &map, Some(&host)), Err(CsrfReject::CrossSite));
        checks::check_csrf(&policy, &method, &map, Some(&host));
    }

    #[test]
    fn client_ip_believes_only_hops_written_by_trusted_proxies(
        peer in ip_strategy(),
        trusted in prop::collection::vec(prop::sample::select(vec![
            "10.0.0.0/8", "127.0.0.1", "::1", "192.168.0.0/16", "::ffff:10.0.0.0/104", "0.0.0.0/0",
            "10.0.0.1/8",
            "2001:db8::/32", "203.0.113.7/32",
        ]), 0..3),
        fields in prop::collection::vec(prop::collection::vec(hop_strategy(), 0..5), 0..3),
    ) {
        // Non-canonical entries are refused by `check`, as they are here.
        let trusted = TrustedProxies::new(trusted.iter().filter_map(|c| parse_cidr(c).ok()).collect());
        let pairs: Vec<(&str, String)> =
            fields.iter().map(|hops| ("x-forwarded-for", hops.join(","))).collect();
        checks::check_client_ip(peer, &header_map(&pairs), &trusted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// the route a path lands on, its upstream URI and the guards' answer are the same
    /// whatever order the routes were declared in.
    #[test]
    fn guard_decisions_do_not_depend_on_route_order(
        path in prop_oneof![
            Just("/api/chatkit".to_string()),
            path_strategy().prop_map(|p| format!("/api{p}")),
            path_strategy(),
        ],
        method in method_strategy(),
        fetch_site in prop::option::of(fetch_site_strategy()),
        origin in prop::option::of(origin_strategy()),
        framing in prop::sample::select(vec![None, Some("both"), Some("length")]),
    ) {
        let mut pairs = Vec::new();
        pairs.extend(fetch_site.map(|v| ("sec-fetch-site", v)));
        pairs.extend(origin.map(|v| ("origin", v)));
        if let Some(framing) = framing {
            pairs.push(("content-length", "3".to_string()));
            if framing == "both" {
                pairs.push(("transfer-encoding", "chunked".to_string()));
            }
        }
        pairs.push(("host", HOST.to_string()));
        let headers = header_map(&pairs);
        let Ok(uri) = path.parse::<http::Uri>() else {
            // Not a request target hyper would hand us.
            return Ok(());
        };
        let outcomes: Vec<_> = CONFIGS
            .iter()
            .map(|config| {
                let guards = cookiegate::guard::Guards::new(config);
                let facts = Facts {
                    method: &method,
                    uri: &uri,
                    headers: &headers,
                    body_length: None,
                    raw_both_framings: false,
                    peer: IpAddr::from([192, 0, 2, 1]),
                    proto: Proto::Http,
                    now: 0,
                };
                match admit(config, &guards, &facts) {
                    Ok(Admitted::Forward(f)) => Ok((
                        f.route.prefix.as_str().to_string(),
                        f.uri.to_string(),
                        f.bearer.is_some(),
                    )),
                    Ok(Admitted::Health | Admitted::Ready) => Err(200),
                    Ok(Admitted::Auth(_)) => Err(0),
                    Err(err) => Err(err.status().as_u16()),
                }
            })
            .collect();
        prop_assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "{:?}", outcomes);
    }
}
