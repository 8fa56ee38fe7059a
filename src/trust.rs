//! Who the client is, decided once per request for every consumer: the forwarding headers sent
//! upstream, the rate-limit key and the CSRF origin check all read the same [`Client`].
//!
//! The TCP peer is the client, unless the peer is one of `[server] trusted_proxies`. For a
//! trusted peer (a load balancer or an nginx in front), three of its headers are believed:
//! `X-Forwarded-For` (the right-most hop that is not itself trusted: only the hops we trust can
//! have written the entries to their left, so the left-most entry, which the client chooses, is
//! never believed), `X-Forwarded-Proto` (`http` or `https`: TLS ended in front) and
//! `X-Forwarded-Host` (the host the browser asked for, when the proxy rewrote `Host`). From
//! any other peer they are ignored and replaced.

use std::net::IpAddr;
use std::str::FromStr;

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The networks, already validated by [`parse_cidr`].
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is inside a trusted network (an IPv4-mapped IPv6 address counts as the
    /// IPv4 address it maps, as a dual-stack socket reports IPv4 peers that way).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Parses one `trusted_proxies` entry: `10.0.0.0/8`, `fd00::/8` or a bare address (one host).
/// Only canonical forms are taken, so what the file says is what is matched: no host bits
/// past the prefix (`10.0.0.1/8`) and no IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`,
/// which peers never match since they are compared as IPv4).
///
/// # Errors
/// A message for the config problem list, with the form to write instead when there is one.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match IpNet::from_str(text) {
        Ok(net) => net,
        Err(_) => match IpAddr::from_str(text) {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "`{text}` is not an IP network (examples: \"10.0.0.0/8\", \"::1\")"
                ));
            }
        },
    };
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            let hint = v6
                .prefix_len()
                .checked_sub(96)
                .and_then(|len| ipnet::Ipv4Net::new(v4, len).ok())
                .map(|n| format!(": write it as {}", n.trunc()))
                .unwrap_or_default();
            return Err(format!(
                "`{text}` is an IPv4-mapped IPv6 network, which no peer matches (IPv4 peers are \
                 compared as IPv4){hint}"
            ));
        }
    }
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has bits set past its prefix: write it as {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `http` or `https`: how the browser reached the first proxy it spoke to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain HTTP.
    Http,
    /// TLS (ended by cookiegate or by a trusted proxy in front).
    Https,
}

impl Proto {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The client as cookiegate believes it to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's IP.
    pub ip: IpAddr,
    /// How the browser reached us (or the trusted proxy in front).
    pub proto: Proto,
    /// The host the browser asked for: `X-Forwarded-Host` from a trusted proxy, else `Host`
    /// (or the HTTP/2 `:authority`).
    pub host: Option<HeaderValue>,
}

/// Decides who the client is: see the module docs. `proto` is how the TCP peer reached us,
/// `host` what the request's own `Host` (or `:authority`) says.
pub fn identify(
    peer: IpAddr,
    proto: Proto,
    host: Option<HeaderValue>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Client {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return Client {
            ip: peer,
            proto,
            host,
        };
    }
    let forwarded_proto = last_item(headers, "x-forwarded-proto").and_then(|p| {
        if p.eq_ignore_ascii_case(b"https") {
            Some(Proto::Https)
        } else if p.eq_ignore_ascii_case(b"http") {
            Some(Proto::Http)
        } else {
            None
        }
    });
    let forwarded_host = last_item(headers, "x-forwarded-host")
        .filter(|h| is_host(h))
        .and_then(|h| HeaderValue::from_bytes(h).ok());
    Client {
        ip: forwarded_ip(peer, headers, trusted),
        proto: forwarded_proto.unwrap_or(proto),
        host: forwarded_host.or(host),
    }
}

/// The right-most `X-Forwarded-For` hop that is not a trusted proxy, starting from a trusted
/// `peer`; garbage in the chain stops the walk at the last hop that could be read.
fn forwarded_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer;
    let fields: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    for field in fields.iter().rev() {
        for hop in field.rsplit(|&b| b == b',') {
            let Some(ip) = std::str::from_utf8(hop)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
            else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// The last comma-separated item of the last field `name`, trimmed.
fn last_item<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let field = headers.get_all(name).iter().next_back()?;
    let item = field.as_bytes().rsplit(|&b| b == b',').next()?.trim_ascii();
    (!item.is_empty()).then_some(item)
}

/// A `host[:port]` a proxy may tell us: letters, digits, `-`, `.`, `:`, `[`, `]` (IPv6).
fn is_host(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= 255
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| parse_cidr(n).unwrap()).collect())
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_are_canonical_or_refused_with_the_form_to_write() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr(" 192.0.2.7 ").unwrap().to_string(),
            "192.0.2.7/32"
        );
        let cases = [
            ("10.0.0.1/8", "write it as 10.0.0.0/8"),
            ("::ffff:10.0.0.0/104", "write it as 10.0.0.0/8"),
            ("::ffff:10.0.0.1", "write it as 10.0.0.1/32"),
            ("10.0.0.0/33", "is not an IP network"),
            ("ten", "is not an IP network"),
            ("fd00::1/8", "write it as fd00::/8"),
        ];
        for (text, message) in cases {
            let err = parse_cidr(text).unwrap_err();
            assert!(err.contains(message), "{text}: {err}");
        }
    }

    #[test]
    fn mapped_peers_match_ipv4_networks() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(trusted.contains(ip("::ffff:10.1.1.1")));
        assert!(!trusted.contains(ip("11.0.0.1")));
        assert!(nets(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
        assert!(!nets(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let host = HeaderValue::from_static("app.example");
        let client = identify(
            ip("203.0.113.9"),
            Proto::Http,
            Some(host.clone()),
            &headers,
            &trusted,
        );
        assert_eq!(
            client,
            Client {
                ip: ip("203.0.113.9"),
                proto: Proto::Http,
                host: Some(host.clone()),
            }
        );
        // Nothing trusted at all: the same.
        let client = identify(
            ip("10.0.0.5"),
            Proto::Http,
            Some(host.clone()),
            &headers,
            &TrustedProxies::default(),
        );
        assert_eq!(client.ip, ip("10.0.0.5"));
        assert_eq!(client.proto, Proto::Http);
    }

    #[test]
    fn a_trusted_proxy_is_believed_right_to_left() {
        let trusted = nets(&["10.0.0.0/8"]);
        let host = HeaderValue::from_static("internal:8080");
        let headers = map(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        let client = identify(
            ip("10.0.0.5"),
            Proto::Http,
            Some(host.clone()),
            &headers,
            &trusted,
        );
        assert_eq!(
            client.ip,
            ip("198.51.100.7"),
            "not the spoofable left-most hop"
        );
        assert_eq!(client.proto, Proto::Https);
        assert_eq!(client.host.unwrap(), "app.example.com");
        // No headers: the proxy itself, its own scheme and host.
        let client = identify(
            ip("10.0.0.5"),
            Proto::Http,
            Some(host.clone()),
            &HeaderMap::new(),
            &trusted,
        );
        assert_eq!(client.ip, ip("10.0.0.5"));
        assert_eq!(client.proto, Proto::Http);
        assert_eq!(client.host.unwrap(), "internal:8080");
        // Garbage stops the walk at the last good hop; bad proto and host are not believed.
        let headers = map(&[
            ("x-forwarded-for", "junk, 10.0.0.7"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "a b"),
        ]);
        let client = identify(
            ip("10.0.0.5"),
            Proto::Http,
            Some(host.clone()),
            &headers,
            &trusted,
        );
        assert_eq!(client.ip, ip("10.0.0.7"));
        assert_eq!(client.proto, Proto::Http);
        assert_eq!(client.host.unwrap(), "internal:8080");
    }

    proptest! {
        /// Whatever an untrusted peer writes in the forwarding headers, it is the client.
        #[test]
        fn an_untrusted_client_never_chooses_its_ip_scheme_or_host(
            spoofed_ip in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|10\\.[0-9]{1,3}\\.0\\.1",
            spoofed_host in "[a-z]{1,12}\\.example",
            peer in any::<[u8; 4]>(),
        ) {
            let trusted = nets(&["10.0.0.0/8"]);
            let peer = IpAddr::from(peer);
            prop_assume!(!trusted.contains(peer));
            let headers = map(&[
                ("x-forwarded-for", spoofed_ip.as_str()),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", spoofed_host.as_str()),
            ]);
            let client = identify(peer, Proto::Http, None, &headers, &trusted);
            prop_assert_eq!(client.ip, peer);
            prop_assert_eq!(client.proto, Proto::Http);
            prop_assert_eq!(client.host, None);
        }

        /// Behind trusted proxies the client is the right-most untrusted hop, never one to
        /// its left (which the client wrote itself).
        #[test]
        fn behind_trusted_proxies_the_right_most_untrusted_hop_wins(
            left in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
            real in any::<[u8; 4]>(),
            proxies in proptest::collection::vec(0u8..=255, 0..3),
        ) {
            let trusted = nets(&["10.0.0.0/8"]);
            let real = IpAddr::from(real);
            prop_assume!(!trusted.contains(real));
            let mut chain: Vec<String> = left.iter().map(|a| IpAddr::from(*a).to_string()).collect();
            chain.push(real.to_string());
            chain.extend(proxies.iter().map(|p| format!("10.1.2.{p}")));
            let headers = map(&[("x-forwarded-for", chain.join(", ").as_str())]);
            let client = identify(ip("10.0.0.1"), Proto::Http, None, &headers, &trusted);
            prop_assert_eq!(client.ip, real);
        }
    }
}
