//! Header policy in both directions (pure functions over a `HeaderMap`).
//!
//! Towards the upstream: hop-by-hop headers and every name listed in `Connection` are dropped
//! (RFC 9110 §7.6.1); `Host` is replaced by the upstream's own; the client's `Authorization` is
//! replaced by the session's bearer; `Cookie` is dropped unless the route forwards cookies (then
//! several `Cookie` fields, as HTTP/2 clients send them, are joined into one); and
//! client-sent forwarding headers are replaced with our own truthful values, so a client cannot
//! pretend to be another IP. Everything else (end-to-end headers, `x-*`) goes through untouched.
//!
//! Towards the client: hop-by-hop headers dropped, everything else (Set-Cookie, ETag,
//! Content-Encoding, Content-Disposition, Location, …) kept byte for byte.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::upstream::h1::is_hop_by_hop_name;

/// Request headers that say who the client is or how it reached us. Clients can forge them, so
/// they are always replaced by values cookiegate saw itself (RFC 7239 §8.1 for `Forwarded`).
static CLIENT_FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-real-ip"),
];

/// `x-accel-buffering: no` tells an nginx in front not to buffer an event stream.
static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

use crate::telemetry::request_id::X_REQUEST_ID;

/// What the upstream request's headers must say, decided by the route and the session.
#[derive(Debug)]
pub struct UpstreamHeaders<'a> {
    /// The bearer to send (`Authorization: Bearer …`), when the session had one.
    pub bearer: Option<HeaderValue>,
    /// Keep the client's own `Authorization` (only on `auth = "none"` routes).
    pub keep_client_authorization: bool,
    /// Keep the client's `Cookie` header.
    pub forward_cookies: bool,
    /// The client's address as cookiegate saw it (the TCP peer).
    pub client_ip: &'a HeaderValue,
    /// The host the client asked for (`Host`, or the HTTP/2 `:authority`).
    pub host: Option<&'a HeaderValue>,
    /// `http` or `https`: how the client reached cookiegate.
    pub proto: &'static str,
    /// A WebSocket handshake: `Upgrade` goes on, with `Connection: upgrade` written anew
    /// (RFC 6455 §4.1: the upgrade is hop-by-hop, so each hop asks for it again).
    pub websocket: bool,
}

/// Decides the request header policy for one request, without touching the client's fields
/// (but joining several `Cookie` fields into one where cookies are forwarded): which of them
/// go on, and the fields cookiegate adds. The upstream request head is written straight from
/// [`UpstreamFields::iter`], so no field is removed from or inserted into a map. This is the
/// policy's only form: tests check the head it writes.
pub fn upstream_fields(headers: &mut HeaderMap, policy: UpstreamHeaders<'_>) -> UpstreamFields {
    if policy.forward_cookies {
        join_cookie_fields(headers);
    }
    let host = policy.host.filter(|h| is_plain_host(h.as_bytes())).cloned();
    let forwarded = forwarded_value(policy.client_ip, host.as_ref(), policy.proto);
    UpstreamFields {
        connection: headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect(),
        drop_authorization: !policy.keep_client_authorization || policy.bearer.is_some(),
        forward_cookies: policy.forward_cookies,
        websocket: policy.websocket,
        added: AddedFields {
            connection: policy
                .websocket
                .then(|| HeaderValue::from_static("upgrade")),
            authorization: policy.bearer,
            client_ip: policy.client_ip.clone(),
            proto: HeaderValue::from_static(policy.proto),
            host,
            forwarded,
            request_id: None,
        },
    }
}

/// The request header policy, decided for one request (see [`upstream_fields`]).
#[derive(Debug, Clone)]
pub struct UpstreamFields {
    /// The client's `Connection` values: the names they list are hop-by-hop too.
    connection: Vec<HeaderValue>,
    drop_authorization: bool,
    forward_cookies: bool,
    /// A WebSocket handshake: the client's `Upgrade` goes on (`admit` checked that it asks for
    /// `websocket`; the upstream's 101 must name `websocket` too).
    websocket: bool,
    added: AddedFields,
}

impl UpstreamFields {
    /// Sends `id` as the request's `X-Request-Id`, in place of any the client sent.
    #[must_use]
    pub fn with_request_id(mut self, id: HeaderValue) -> Self {
        self.added.request_id = Some(id);
        self
    }

    /// Whether a client field of this name goes upstream.
    pub fn keeps(&self, name: &HeaderName) -> bool {
        let text = name.as_str();
        if self.websocket && text == "upgrade" {
            return true;
        }
        !(is_hop_by_hop(text, &self.connection)
            || is_client_forwarding(text)
            // `Expect: 100-continue` is answered by our own HTTP server; the upstream gets the
            // body as soon as it arrives.
            || matches!(text, "host" | "expect")
            || (text == "x-request-id" && self.added.request_id.is_some())
            || (text == "cookie" && !self.forward_cookies)
            || (text == "authorization" && self.drop_authorization))
    }

    /// The fields that go upstream: the client's that are kept, in their order, then the ones
    /// cookiegate adds ([`AddedFields::iter`]). No name of the second group is in the first.
    pub fn iter<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        headers
            .iter()
            .filter(|(name, _)| self.keeps(name))
            .chain(self.added.iter())
    }
}

/// The fields the request policy adds: the bearer and the forwarding fields, with values
/// cookiegate saw itself.
#[derive(Debug, Clone)]
pub struct AddedFields {
    connection: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
    client_ip: HeaderValue,
    proto: HeaderValue,
    host: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
}

impl AddedFields {
    /// The fields, in the order they are written: `Connection` (a WebSocket handshake only),
    /// `Authorization`, `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
    /// `Forwarded`, `X-Request-Id` (when set, [`UpstreamFields::with_request_id`]).
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            (&header::CONNECTION, self.connection.as_ref()),
            (&header::AUTHORIZATION, self.authorization.as_ref()),
            (&CLIENT_FORWARDING[1], Some(&self.client_ip)),
            (&CLIENT_FORWARDING[4], Some(&self.client_ip)),
            (&CLIENT_FORWARDING[3], Some(&self.proto)),
            (&CLIENT_FORWARDING[2], self.host.as_ref()),
            (&header::FORWARDED, self.forwarded.as_ref()),
            (&X_REQUEST_ID, self.request_id.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }
}

/// Applies the response header policy in place.
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    let is_event_stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| starts_with_ignore_case(ct.as_bytes(), b"text/event-stream"));
    if is_event_stream {
        headers.insert(&X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
}

/// Drops the hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |name, connection| {
        is_hop_by_hop(name.as_str(), connection)
    });
}

/// Whether the field `name` is hop-by-hop: one of `h1::HOP_BY_HOP` or listed in a `Connection`
/// field (`connection` holds the map's `Connection` values).
fn is_hop_by_hop(name: &str, connection: &[HeaderValue]) -> bool {
    is_hop_by_hop_name(name)
        || connection.iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        })
}

/// [`CLIENT_FORWARDING`] as a `match` (one length comparison for most names).
fn is_client_forwarding(name: &str) -> bool {
    matches!(
        name,
        "forwarded" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto" | "x-real-ip"
    )
}

/// Removes every field whose name `drop(name, connection_values)` picks.
///
/// One pass over the names present, then one removal per name found: a request carries a
/// handful of fields and most names the policy drops are absent, so this is far cheaper than
/// removing each listed name in turn (a hash and a probe each).
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName, &[HeaderValue]) -> bool) {
    // `Connection` is rare on requests (HTTP/1.1 keeps alive by default) and one field on
    // responses: neither case allocates.
    let first = headers.get(header::CONNECTION).cloned();
    let all: Vec<HeaderValue>;
    let connection: &[HeaderValue] = match &first {
        None => &[],
        Some(one) if headers.get_all(header::CONNECTION).iter().nth(1).is_none() => {
            std::slice::from_ref(one)
        }
        Some(_) => {
            all = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            &all
        }
    };
    loop {
        let mut doomed: [Option<HeaderName>; 8] = [const { None }; 8];
        let mut found = 0;
        for name in headers.keys() {
            if drop(name, connection) {
                doomed[found] = Some(name.clone());
                found += 1;
                if found == doomed.len() {
                    break;
                }
            }
        }
        for name in doomed.iter().flatten() {
            headers.remove(name);
        }
        if found < doomed.len() {
            return;
        }
    }
}

/// Joins several `Cookie` fields into one, separated by `; `. HTTP/2 clients may send each
/// cookie in its own field, and those must be joined before going on over HTTP/1.1 (RFC 9113
/// §8.2.3), where only one `Cookie` header is allowed (RFC 6265 §5.4).
fn join_cookie_fields(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (fields.next(), fields.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    let mut sensitive = first.is_sensitive();
    for field in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(field.as_bytes());
        sensitive |= field.is_sensitive();
    }
    // Valid field values joined by "; " are a valid field value.
    if let Ok(mut value) = HeaderValue::from_bytes(&joined) {
        value.set_sensitive(sensitive);
        headers.insert(header::COOKIE, value);
    }
}

/// The client IP as a header value.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    // An IP's text form is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// `Forwarded: for=…;host="…";proto=…` (RFC 7239 §4; IPv6 in quotes and brackets, §6).
fn forwarded_value(
    client_ip: &HeaderValue,
    host: Option<&HeaderValue>,
    proto: &str,
) -> Option<HeaderValue> {
    let ip = client_ip.as_bytes();
    let host = host.map(HeaderValue::as_bytes);
    let mut out = Vec::with_capacity(32 + ip.len() + host.map_or(0, <[u8]>::len));
    if ip.contains(&b':') {
        out.extend_from_slice(b"for=\"[");
        out.extend_from_slice(ip);
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(b"for=");
        out.extend_from_slice(ip);
    }
    if let Some(host) = host {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    // Taken over without a copy; still checked to be a valid field value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
}

/// Whether a `Host` value is a plain `host[:port]` we can repeat in `X-Forwarded-Host` and inside
/// the quoted `Forwarded` host (no quotes, backslashes, spaces or commas to smuggle fields with).
fn is_plain_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(b))
}

fn starts_with_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack[..needle.len()].eq_ignore_ascii_case(needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::h1;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    /// What ships: the policy's fields written into a request head by the upstream codec, and
    /// read back. The codec writes `Host` (the upstream's) and the framing fields itself; the
    /// client's `Content-Length` comes back as the length the codec writes.
    fn shipped(headers: &mut HeaderMap, policy: UpstreamHeaders<'_>) -> HeaderMap {
        let fields = upstream_fields(headers, policy);
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let framing = h1::RequestFraming::of(length.is_none(), length, length.is_some());
        let mut head = bytes::BytesMut::new();
        let upstream_host = HeaderValue::from_static("upstream.internal:8000");
        h1::encode_request_head(
            &mut head,
            &http::Method::POST,
            "/",
            &upstream_host,
            fields.iter(headers),
            framing,
        );
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut parsed);
        assert!(req.parse(&head).unwrap().is_complete());
        let mut out = HeaderMap::new();
        for field in req.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes()).unwrap();
            if name == header::HOST {
                assert_eq!(field.value, b"upstream.internal:8000");
                continue;
            }
            out.append(name, HeaderValue::from_bytes(field.value).unwrap());
        }
        out
    }

    fn policy<'a>(ip: &'a HeaderValue, host: Option<&'a HeaderValue>) -> UpstreamHeaders<'a> {
        UpstreamHeaders {
            bearer: Some(HeaderValue::from_static("Bearer tok")),
            keep_client_authorization: false,
            forward_cookies: false,
            client_ip: ip,
            host,
            proto: "http",
            websocket: false,
        }
    }

    #[test]
    fn name_matches_agree_with_the_lists() {
        for name in &h1::HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name.as_str()), "{name}");
            assert!(!is_client_forwarding(name.as_str()), "{name}");
        }
        for name in &CLIENT_FORWARDING {
            assert!(is_client_forwarding(name.as_str()), "{name}");
            assert!(!is_hop_by_hop_name(name.as_str()), "{name}");
        }
        for other in [
            "accept",
            "cookie",
            "x-forwarded",
            "tes",
            "t",
            "upgrade-insecure-requests",
        ] {
            assert!(
                !is_hop_by_hop_name(other) && !is_client_forwarding(other),
                "{other}"
            );
        }
    }

    #[test]
    fn many_fields_to_drop_are_all_dropped() {
        let listed: Vec<String> = (0..20).map(|i| format!("x-hop-{i}")).collect();
        let mut pairs = vec![("connection".to_string(), listed.join(", "))];
        pairs.extend(listed.iter().map(|n| (n.clone(), "1".to_string())));
        pairs.push(("accept".into(), "*/*".into()));
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut headers = map(&pairs);
        to_client(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["accept"], "*/*");
    }

    #[test]
    fn request_policy_strips_replaces_and_keeps() {
        let mut headers = map(&[
            ("host", "app.example:4000"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer forged"),
            ("cookie", "auth_token=tok; theme=dark"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "https"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
            ("accept-language", "de"),
            ("content-type", "multipart/form-data; boundary=xyz"),
            ("if-none-match", "\"v1\""),
            ("range", "bytes=0-1"),
            ("user-agent", "ua"),
            ("x-request-id", "r1"),
            ("x-request-id", "r2"),
            ("content-length", "12"),
        ]);
        let ip = ip_header_value("203.0.113.7".parse().unwrap());
        let host = HeaderValue::from_static("app.example:4000");
        let headers = shipped(&mut headers, policy(&ip, Some(&host)));
        for gone in [
            "host",
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
            "cookie",
            "expect",
        ] {
            assert!(headers.get(gone).is_none(), "{gone} should be stripped");
        }
        assert_eq!(headers["authorization"], "Bearer tok");
        assert_eq!(headers.get_all("authorization").iter().count(), 1);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7");
        assert_eq!(headers["x-real-ip"], "203.0.113.7");
        assert_eq!(headers["x-forwarded-host"], "app.example:4000");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(
            headers["forwarded"],
            "for=203.0.113.7;host=\"app.example:4000\";proto=http"
        );
        for kept in [
            "accept",
            "accept-language",
            "if-none-match",
            "range",
            "user-agent",
            "content-length",
        ] {
            assert!(headers.get(kept).is_some(), "{kept} should be kept");
        }
        assert_eq!(headers["content-type"], "multipart/form-data; boundary=xyz");
        assert_eq!(
            headers.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["r1", "r2"]
        );
    }

    #[test]
    fn the_request_id_replaces_every_one_the_client_sent() {
        let mut headers = map(&[("x-request-id", "spoofed"), ("x-request-id", "twice")]);
        let ip = ip_header_value("127.0.0.1".parse().unwrap());
        let fields = upstream_fields(&mut headers, policy(&ip, None))
            .with_request_id(HeaderValue::from_static("ours"));
        let sent: Vec<_> = fields
            .iter(&headers)
            .filter(|(name, _)| *name == "x-request-id")
            .map(|(_, value)| value.clone())
            .collect();
        assert_eq!(sent, ["ours"]);
    }

    #[test]
    fn pass_through_routes_keep_client_authorization_and_cookies() {
        let mut headers = map(&[("authorization", "Basic abc"), ("cookie", "a=1")]);
        let ip = ip_header_value("::1".parse().unwrap());
        let p = UpstreamHeaders {
            bearer: None,
            keep_client_authorization: true,
            forward_cookies: true,
            ..policy(&ip, None)
        };
        let headers = shipped(&mut headers, p);
        assert_eq!(headers["authorization"], "Basic abc");
        assert_eq!(headers["cookie"], "a=1");
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=http");
        assert!(headers.get("x-forwarded-host").is_none());
    }

    #[test]
    fn split_cookie_fields_are_joined_when_forwarded() {
        let mut headers = map(&[("cookie", "a=1"), ("cookie", "b=2; c=3"), ("cookie", "d=4")]);
        let ip = ip_header_value("127.0.0.1".parse().unwrap());
        let p = UpstreamHeaders {
            forward_cookies: true,
            ..policy(&ip, None)
        };
        let headers = shipped(&mut headers, p);
        assert_eq!(
            headers.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2; c=3; d=4"]
        );
    }

    #[test]
    fn optional_route_without_session_sends_no_authorization() {
        let mut headers = map(&[("authorization", "Bearer forged")]);
        let ip = ip_header_value("127.0.0.1".parse().unwrap());
        let p = UpstreamHeaders {
            bearer: None,
            ..policy(&ip, None)
        };
        let headers = shipped(&mut headers, p);
        assert!(headers.get("authorization").is_none());
    }

    #[test]
    fn odd_hosts_are_not_repeated() {
        let mut headers = HeaderMap::new();
        let ip = ip_header_value("127.0.0.1".parse().unwrap());
        let host = HeaderValue::from_static("a\";for=1.2.3.4");
        let headers = shipped(&mut headers, policy(&ip, Some(&host)));
        assert!(headers.get("x-forwarded-host").is_none());
        assert_eq!(headers["forwarded"], "for=127.0.0.1;proto=http");
    }

    #[test]
    fn response_policy_keeps_end_to_end_headers() {
        let mut headers = map(&[
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=1; HttpOnly"),
            ("set-cookie", "b=2"),
            ("etag", "\"abc\""),
            ("cache-control", "private"),
            ("content-disposition", "attachment; filename=\"r.pdf\""),
            ("location", "/next"),
            ("content-encoding", "gzip"),
            ("content-length", "10"),
        ]);
        to_client(&mut headers);
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-internal").is_none());
        assert!(headers.get("transfer-encoding").is_none());
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
        for kept in [
            "etag",
            "cache-control",
            "content-disposition",
            "location",
            "content-encoding",
            "content-length",
        ] {
            assert!(headers.get(kept).is_some(), "{kept}");
        }
        assert!(headers.get("x-accel-buffering").is_none());
    }

    #[test]
    fn event_streams_get_x_accel_buffering_no() {
        let mut headers = map(&[("content-type", "Text/Event-Stream; charset=utf-8")]);
        to_client(&mut headers);
        assert_eq!(headers["x-accel-buffering"], "no");
    }

    proptest! {
        #[test]
        fn upstream_headers_never_hold_client_forgeries(
            names in proptest::collection::vec(prop_oneof![
                Just("authorization"), Just("cookie"), Just("x-forwarded-for"), Just("forwarded"),
                Just("x-real-ip"), Just("host"), Just("connection"), Just("x-custom"), Just("accept"),
            ], 0..10),
            value in "[a-zA-Z0-9=;,. -]{0,20}",
        ) {
            let mut headers = HeaderMap::new();
            for name in &names {
                headers.append(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
            }
            let ip = ip_header_value("10.1.2.3".parse().unwrap());
            let headers = shipped(&mut headers, policy(&ip, None));
            prop_assert_eq!(headers.get_all("authorization").iter().collect::<Vec<_>>(), vec!["Bearer tok"]);
            prop_assert!(headers.get("cookie").is_none());
            prop_assert!(headers.get("host").is_none());
            prop_assert!(headers.get("connection").is_none());
            prop_assert_eq!(headers.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), vec!["10.1.2.3"]);
            prop_assert_eq!(headers.get_all("forwarded").iter().count(), 1);
        }
    }
}
