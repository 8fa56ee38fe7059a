//! Which route a request belongs to, and where upstream it goes.
//!
//! Everything here is pure and works on the raw bytes of the request path: nothing is ever
//! resolved as a URL, so no byte sequence in a path can change the scheme, host or port the
//! request is sent to (the seed's `new URL(path, BACKEND_URL)` let `/%5Cevil.example/x` pick the
//! host). The remainder after the prefix is appended to the upstream's base path exactly as sent;
//! the only thing we do to it is refuse it when the upstream, decoding it once, would see a dot
//! segment and climb out of the base path.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};

use crate::auth::{AuthMode, CookieName};
use crate::config::units::ByteSize;

/// A route prefix: starts with `/`, no trailing `/` (except the root prefix `/` itself), no dot
/// segments, no query or fragment, only characters that need no percent-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePrefix(std::sync::Arc<str>);

impl RoutePrefix {
    /// Validates a prefix; a trailing `/` is dropped (`/api/` and `/api` are the same prefix).
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("`{text}` must start with '/'"));
        }
        let trimmed = text.trim_end_matches('/');
        let prefix = if trimmed.is_empty() { "/" } else { trimmed };
        if let Some(bad) = prefix
            .bytes()
            .find(|b| !(b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(b)))
        {
            return Err(format!(
                "`{text}` contains {:?}; a prefix may hold only unreserved characters",
                char::from(bad)
            ));
        }
        if prefix.contains("//") {
            return Err(format!("`{text}` contains an empty segment"));
        }
        if !is_safe_remainder(prefix.as_bytes()) {
            return Err(format!("`{text}` contains a '.' or '..' segment"));
        }
        Ok(Self(prefix.into()))
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix text, shared (for log lines that outlive the request's borrow).
    pub fn shared(&self) -> std::sync::Arc<str> {
        self.0.clone()
    }

    /// If `path` is under this prefix on a segment boundary, the remainder after it.
    ///
    /// The remainder is empty or starts with `/`. For the root prefix it is the whole path.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = self.as_str();
        if prefix == "/" {
            return path.starts_with('/').then_some(path);
        }
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// Where a route's requests go: scheme, authority and a base path that every remainder is
/// appended to. Parsed once at startup; the parts are cheap to clone per request.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    scheme: Scheme,
    authority: Authority,
    /// Empty or `/x[/y…]`, never ending in `/`.
    base_path: Box<str>,
}

impl UpstreamBase {
    /// Validates an upstream URL: `http` or `https`, a host, no user info, no query or fragment,
    /// no dot segments in the path.
    ///
    /// # Errors
    /// A message for the config problem list.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains('#') {
            return Err("must not contain a fragment ('#')".into());
        }
        let uri: Uri = text
            .parse()
            .map_err(|_| format!("`{text}` is not a URL (example: \"http://127.0.0.1:8000\")"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(_) => return Err("scheme must be http or https".into()),
            None => return Err(format!("`{text}` needs a scheme: http:// or https://")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{text}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(
                "must not carry user info ('user@'); credentials come from the cookie".into(),
            );
        }
        if authority.host().is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        if uri.query().is_some() {
            return Err("must not have a query string ('?')".into());
        }
        let path = uri.path().trim_end_matches('/');
        if !is_safe_remainder(path.as_bytes()) {
            return Err("path must not contain '.' or '..' segments".into());
        }
        Ok(Self {
            scheme,
            authority,
            base_path: path.into(),
        })
    }

    /// Whether requests to this upstream use TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The upstream's authority (`host[:port]`).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The base path every remainder is appended to (empty for the upstream's root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a request whose path left `remainder` after the prefix.
    ///
    /// Scheme and authority always come from the config; only the path and query vary.
    ///
    /// # Errors
    /// [`UriError::Refused`] when the remainder could climb out of the base path;
    /// [`UriError::Invalid`] when the mapped path is not a valid URI path (it came from a
    /// parsed request target and a validated base, so that would be our bug).
    pub fn uri(&self, remainder: &str, query: Option<&str>) -> Result<Uri, UriError> {
        let path_and_query =
            map_path(&self.base_path, remainder, query).map_err(|_| UriError::Refused)?;
        let path_and_query =
            PathAndQuery::try_from(path_and_query).map_err(|_| UriError::Invalid)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| UriError::Invalid)
    }
}

impl std::fmt::Display for UpstreamBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// Why [`UpstreamBase::uri`] gave no URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    /// The remainder could climb out of the base path ([`PathRefused`]).
    Refused,
    /// The mapped path is not a valid URI path.
    Invalid,
}

/// The remainder of a path was refused: once decoded it holds a dot segment or NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRefused;

/// Joins `base_path` and `remainder` and appends `?query` byte for byte.
///
/// `remainder` is what [`RoutePrefix::strip`] left: empty or starting with `/`. It is appended
/// exactly as sent (`%2F` stays `%2F`, a trailing `/` stays); an empty result becomes `/`.
///
/// ```
/// use cookiegate::routing::{map_path, PathRefused};
///
/// assert_eq!(map_path("/chatkit", "", None).as_deref(), Ok("/chatkit"));
/// assert_eq!(map_path("", "/a%2Fb/", Some("tag=a&tag=b")).as_deref(), Ok("/a%2Fb/?tag=a&tag=b"));
/// assert_eq!(map_path("/v1", "/..%2Fadmin", None), Err(PathRefused));
/// ```
///
/// # Errors
/// [`PathRefused`] when [`is_safe_remainder`] says no.
pub fn map_path(
    base_path: &str,
    remainder: &str,
    query: Option<&str>,
) -> Result<String, PathRefused> {
    if !is_safe_remainder(remainder.as_bytes()) {
        return Err(PathRefused);
    }
    let query_len = query.map_or(0, |q| q.len() + 1);
    let mut out = String::with_capacity(base_path.len() + remainder.len().max(1) + query_len);
    out.push_str(base_path);
    out.push_str(remainder);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Whether a path (or remainder) is free of anything that lets it climb out of a base path once
/// an upstream decodes it: `.` and `..` segments, raw or percent-encoded in any case, where a
/// segment ends at `/`, `\`, `%2F` or `%5C` (servers differ on which they split on, so all count),
/// and whose name part ends at `;` (Tomcat and others read `..;x` as `..`); and NUL, raw or `%00`.
pub fn is_safe_remainder(path: &[u8]) -> bool {
    // Per segment: how many dots its name holds, whether it holds anything else, and whether a
    // `;` already ended the name part.
    let mut dots = 0usize;
    let mut other = false;
    let mut in_params = false;
    let mut i = 0;
    loop {
        let (token, width) = classify(&path[i..]);
        match token {
            Token::End | Token::Separator => {
                if !other && (dots == 1 || dots == 2) {
                    return false;
                }
                if token == Token::End {
                    return true;
                }
                dots = 0;
                other = false;
                in_params = false;
            }
            Token::Nul => return false,
            Token::Params => in_params = true,
            Token::Dot if !in_params => dots += 1,
            Token::Other if !in_params => other = true,
            Token::Dot | Token::Other => {}
        }
        i += width;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    Separator,
    Dot,
    Nul,
    Params,
    Other,
}

/// The path token at the start of `rest` and how many bytes it spans.
fn classify(rest: &[u8]) -> (Token, usize) {
    match rest {
        [] => (Token::End, 0),
        [b'/' | b'\\', ..] => (Token::Separator, 1),
        [b'.', ..] => (Token::Dot, 1),
        [b';', ..] => (Token::Params, 1),
        [0, ..] => (Token::Nul, 1),
        // Only a real escape (two hex digits) is one token. A stray `%` is a plain byte: taking
        // the next two bytes with it would hide a separator or an escape behind it (`;%/../x`
        // and `%%00` slipped through that way; found by the `guards` fuzz checks).
        [b'%', hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
            match (hi.to_ascii_lowercase(), lo.to_ascii_lowercase()) {
                (b'2', b'f') | (b'5', b'c') => (Token::Separator, 3),
                (b'2', b'e') => (Token::Dot, 3),
                (b'0', b'0') => (Token::Nul, 3),
                (b'3', b'b') => (Token::Params, 3),
                _ => (Token::Other, 3),
            }
        }
        _ => (Token::Other, 1),
    }
}

/// The set of methods a route allows. Empty in the file means every method but CONNECT and
/// TRACE, which cookiegate never forwards.
#[derive(Debug, Clone)]
pub struct MethodSet {
    /// `None` = all (but CONNECT and TRACE).
    allowed: Option<Vec<Method>>,
    /// Ready-made `Allow` header value for 405 answers.
    allow_header: http::HeaderValue,
}

/// Methods answered on a route with `methods = []`, for the `Allow` header.
const ALL_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl MethodSet {
    /// Builds the set; `GET` implies `HEAD` (RFC 9110 §9.3.2: HEAD is GET without the body).
    ///
    /// # Errors
    /// A message naming the first unusable method.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        if names.is_empty() {
            return Ok(Self {
                allowed: None,
                allow_header: http::HeaderValue::from_static(ALL_METHODS),
            });
        }
        let mut allowed = Vec::new();
        for name in names {
            let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("`{name}` is not an HTTP method"))?;
            if method == Method::CONNECT || method == Method::TRACE {
                return Err(format!("`{name}` is never forwarded"));
            }
            if !allowed.contains(&method) {
                allowed.push(method);
            }
        }
        if allowed.contains(&Method::GET) && !allowed.contains(&Method::HEAD) {
            allowed.push(Method::HEAD);
        }
        let joined = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let allow_header = http::HeaderValue::from_str(&joined)
            .map_err(|_| "methods are not valid tokens".to_string())?;
        Ok(Self {
            allowed: Some(allowed),
            allow_header,
        })
    }

    /// Whether `method` may be forwarded on this route.
    pub fn allows(&self, method: &Method) -> bool {
        match &self.allowed {
            None => is_forwardable(method),
            Some(list) => list.contains(method),
        }
    }

    /// The `Allow` header for a 405 answer.
    pub fn allow_header(&self) -> &http::HeaderValue {
        &self.allow_header
    }

    /// `all` or the comma-separated list, for the route table.
    pub fn describe(&self) -> String {
        match &self.allowed {
            None => "all".into(),
            Some(list) => list
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// CONNECT turns the proxy into a tunnel and TRACE echoes the request (cookies included) back:
/// neither is ever forwarded (RFC 9110 §9.3.6, §9.3.8).
pub fn is_forwardable(method: &Method) -> bool {
    method != Method::CONNECT && method != Method::TRACE
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the config file, for messages (`routes[1]`).
    pub index: usize,
    /// Path prefix.
    pub prefix: RoutePrefix,
    /// Where requests go.
    pub upstream: UpstreamBase,
    /// The session cookie's name.
    pub cookie: CookieName,
    /// Whether the cookie is required.
    pub auth: AuthMode,
    /// Allowed methods.
    pub methods: MethodSet,
    /// Request body limit.
    pub max_body: ByteSize,
    /// Whether the browser's `Cookie` header goes upstream.
    pub forward_cookies: bool,
    /// Whether the route carries WebSockets.
    pub websocket: bool,
}

/// All routes, searched longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Sorted by prefix length, longest first, so the first match is the longest.
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table. Prefixes are assumed distinct (config validation checks that).
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.prefix
                .as_str()
                .len()
                .cmp(&a.prefix.as_str().len())
                .then(a.index.cmp(&b.index))
        });
        Self { routes }
    }

    /// The route with the longest prefix that `path` is under (on a segment boundary), and the
    /// remainder of the path after that prefix.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Route, &'p str)> {
        self.routes
            .iter()
            .find_map(|route| route.prefix.strip(path).map(|rest| (route, rest)))
    }

    /// The routes in config-file order.
    pub fn in_file_order(&self) -> Vec<&Route> {
        let mut routes: Vec<&Route> = self.routes.iter().collect();
        routes.sort_by_key(|r| r.index);
        routes
    }

    /// Whether any route carries WebSockets.
    pub fn has_websocket(&self) -> bool {
        self.routes.iter().any(|r| r.websocket)
    }

    /// Whether any route goes to an `https` upstream.
    pub fn has_https(&self) -> bool {
        self.routes.iter().any(|r| r.upstream.is_https())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix(text: &str) -> RoutePrefix {
        RoutePrefix::parse(text).unwrap()
    }

    fn route(index: usize, p: &str) -> Route {
        Route {
            index,
            prefix: prefix(p),
            upstream: UpstreamBase::parse("http://127.0.0.1:8000").unwrap(),
            cookie: CookieName::parse("auth_token").unwrap(),
            auth: AuthMode::Required,
            methods: MethodSet::parse(&[]).unwrap(),
            max_body: ByteSize(1),
            forward_cookies: false,
            websocket: false,
        }
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        let p = prefix("/api/proxy");
        assert_eq!(p.strip("/api/proxy"), Some(""));
        assert_eq!(p.strip("/api/proxy/"), Some("/"));
        assert_eq!(p.strip("/api/proxy/x/y"), Some("/x/y"));
        assert_eq!(p.strip("/api/proxyx"), None);
        assert_eq!(p.strip("/api/proxy%2Fx"), None);
        assert_eq!(p.strip("/api"), None);
        assert_eq!(prefix("/").strip("/anything"), Some("/anything"));
        assert_eq!(prefix("/").strip("*"), None);
    }

    #[test]
    fn prefixes_are_normalised_and_validated() {
        assert_eq!(prefix("/api/").as_str(), "/api");
        assert_eq!(prefix("/").as_str(), "/");
        assert!(RoutePrefix::parse("api").is_err());
        assert!(RoutePrefix::parse("/a/../b").is_err());
        assert!(RoutePrefix::parse("/a//b").is_err());
        assert!(RoutePrefix::parse("/a?b").is_err());
        assert!(RoutePrefix::parse("/a%2Fb").is_err());
    }

    #[test]
    fn longest_prefix_wins_whatever_the_file_order() {
        let table = RouteTable::new(vec![
            route(0, "/"),
            route(1, "/api"),
            route(2, "/api/proxy"),
        ]);
        assert_eq!(table.find("/api/proxy/x").unwrap().0.index, 2);
        assert_eq!(table.find("/api/other").unwrap().0.index, 1);
        assert_eq!(table.find("/apix").unwrap().0.index, 0);
        let table = RouteTable::new(vec![route(0, "/api")]);
        assert!(table.find("/elsewhere").is_none());
    }

    #[test]
    fn upstream_base_parses_and_refuses() {
        let base = UpstreamBase::parse("http://127.0.0.1:8000/chatkit/").unwrap();
        assert_eq!(base.base_path(), "/chatkit");
        assert_eq!(base.to_string(), "http://127.0.0.1:8000/chatkit");
        assert!(
            UpstreamBase::parse("https://api.example")
                .unwrap()
                .is_https()
        );
        assert_eq!(
            UpstreamBase::parse("ftp://x").unwrap_err(),
            "scheme must be http or https"
        );
        assert!(UpstreamBase::parse("127.0.0.1:8000").is_err());
        assert!(UpstreamBase::parse("http://user:pw@host").is_err());
        assert!(UpstreamBase::parse("http://host/?q=1").is_err());
        assert!(UpstreamBase::parse("http://host/#f").is_err());
        assert!(UpstreamBase::parse("http://host/a/../b").is_err());
    }

    #[test]
    fn mapping_keeps_remainder_and_query_exactly() {
        let cases = [
            ("", "", None, "/"),
            ("", "/", None, "/"),
            (
                "",
                "/api/tasks",
                Some("tag=a&tag=b"),
                "/api/tasks?tag=a&tag=b",
            ),
            ("/chatkit", "", None, "/chatkit"),
            ("/chatkit", "/", None, "/chatkit/"),
            ("/v1", "/a%2Fb/c%20d/", Some(""), "/v1/a%2Fb/c%20d/?"),
            ("", "/x", Some("q=%2e%2e&a=1;b"), "/x?q=%2e%2e&a=1;b"),
            ("", "/%5Cevil.example/x", None, "/%5Cevil.example/x"),
            ("", "//evil.example/x", None, "//evil.example/x"),
            ("", "/file.tar.gz", None, "/file.tar.gz"),
            ("", "/...", None, "/..."),
            ("", "/.well-known/x", None, "/.well-known/x"),
        ];
        for (base, rest, query, want) in cases {
            assert_eq!(
                map_path(base, rest, query).as_deref(),
                Ok(want),
                "{base} {rest}"
            );
        }
    }

    #[test]
    fn climbing_remainders_are_refused() {
        let refused = [
            "/..",
            "/../admin",
            "/.",
            "/./x",
            "/a/..",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2E/admin",
            "/%2e./admin",
            "/%2e",
            "/..%2Fadmin",
            "/..%2fadmin",
            "/..%5Cadmin",
            "/a%2F..%2Fadmin",
            "/..\\admin",
            "/x/..;/admin",
            "/..%3Bx/admin",
            "/a%00b",
            "/a\0b",
            "/x/%2e%2e%5c",
            "/.;",
            // a stray `%` must not swallow the separator or escape after it.
            "/;%/../admin",
            "/;x%/..%2fadmin",
            "/%%00",
            "/a%/..",
        ];
        for rest in refused {
            assert_eq!(map_path("/base", rest, None), Err(PathRefused), "{rest:?}");
        }
    }

    #[test]
    fn seed_exploits_keep_the_configured_host() {
        // Regression: the seed sent the bearer token to evil.example for these.
        let base = UpstreamBase::parse("http://127.0.0.1:8000").unwrap();
        for rest in [
            "/%5Cevil.example/x",
            "/%2F%2Fevil.example/x",
            "//evil.example/x",
            "/\\evil.example/x",
        ] {
            let uri = base.uri(rest, None).unwrap();
            assert_eq!(uri.host(), Some("127.0.0.1"), "{rest}");
            assert_eq!(uri.port_u16(), Some(8000));
            assert_eq!(uri.scheme_str(), Some("http"));
        }
    }

    #[test]
    fn method_sets() {
        let all = MethodSet::parse(&[]).unwrap();
        assert!(all.allows(&Method::PATCH));
        assert!(!all.allows(&Method::TRACE));
        assert!(!all.allows(&Method::CONNECT));
        let get = MethodSet::parse(&["get".into(), "POST".into()]).unwrap();
        assert!(get.allows(&Method::HEAD));
        assert!(!get.allows(&Method::DELETE));
        assert_eq!(get.allow_header(), "GET, POST, HEAD");
        assert!(MethodSet::parse(&["TRACE".into()]).is_err());
        assert!(MethodSet::parse(&["GE T".into()]).is_err());
    }

    /// Path characters a client can send, weighted towards the ones that matter here.
    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%5C".to_string()),
            Just("\\".to_string()),
            Just("@".to_string()),
            Just(":".to_string()),
            Just(";".to_string()),
            Just("evil.example".to_string()),
            "[a-zA-Z0-9_~-]{1,4}",
            "%[0-9a-fA-F]{2}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #[test]
        fn mapped_uri_keeps_scheme_host_port_and_base(path in path_strategy(), query in proptest::option::of("[a-z=&%0-9.;/?]{0,16}")) {
            let base = UpstreamBase::parse("http://127.0.0.1:8000/base").unwrap();
            let route_prefix = prefix("/api/proxy");
            let full = format!("/api/proxy{path}");
            let rest = route_prefix.strip(&full).unwrap();
            match base.uri(rest, query.as_deref()) {
                Ok(uri) => {
                    prop_assert_eq!(uri.scheme_str(), Some("http"));
                    prop_assert_eq!(uri.host(), Some("127.0.0.1"));
                    prop_assert_eq!(uri.port_u16(), Some(8000));
                    prop_assert!(uri.path().starts_with("/base"));
                    prop_assert_eq!(&uri.path()["/base".len()..], rest);
                    prop_assert_eq!(uri.query(), query.as_deref());
                    prop_assert!(is_safe_remainder(rest.as_bytes()));
                }
                Err(UriError::Refused) => prop_assert!(!is_safe_remainder(rest.as_bytes())),
                Err(UriError::Invalid) => prop_assert!(false, "a parsed path always maps to a URI"),
            }
        }

        #[test]
        fn safe_remainders_never_hold_a_decoded_dot_segment(path in path_strategy()) {
            if is_safe_remainder(path.as_bytes()) {
                // Decode once the way an upstream would, treating every separator as '/'.
                let decoded = path
                    .replace("%2e", ".").replace("%2E", ".")
                    .replace("%2f", "/").replace("%2F", "/")
                    .replace("%5c", "/").replace("%5C", "/")
                    .replace('\\', "/");
                for segment in decoded.split('/') {
                    let name = segment.split(';').next().unwrap_or("");
                    prop_assert!(name != "." && name != "..", "{path} -> {decoded}");
                }
            }
        }

        #[test]
        fn prefix_never_matches_half_a_segment(p in "(/[a-z]{1,3}){1,3}", path in "(/[a-z]{1,4}){0,4}") {
            let route_prefix = prefix(&p);
            if let Some(rest) = route_prefix.strip(&path) {
                prop_assert!(path.starts_with(&p));
                prop_assert!(rest.is_empty() || rest.starts_with('/'));
                prop_assert_eq!(format!("{p}{rest}"), path);
            } else {
                let under = format!("{}/", p);
                prop_assert!(path != p && !path.starts_with(&under));
            }
        }

        #[test]
        fn longest_prefix_always_wins(prefixes in proptest::collection::btree_set("(/[ab]{1,2}){1,3}", 1..6), path in "(/[ab]{1,2}){0,5}") {
            let routes: Vec<Route> = prefixes.iter().enumerate().map(|(i, p)| route(i, p)).collect();
            let table = RouteTable::new(routes.clone());
            let best = routes.iter().filter(|r| r.prefix.strip(&path).is_some()).map(|r| r.prefix.as_str().len()).max();
            prop_assert_eq!(table.find(&path).map(|(r, _)| r.prefix.as_str().len()), best);
        }

        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = is_safe_remainder(&bytes);
        }
    }
}
