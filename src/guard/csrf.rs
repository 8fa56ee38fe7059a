//! Cross-site request forgery defence (pure decision + config types).
//!
//! A proxy that turns a cookie into a bearer token gives every cookie-carrying request the user's
//! full API power, so a page on another site that makes the browser POST here would act as the
//! user. Browsers say where a request comes from: `Sec-Fetch-Site` (Fetch Metadata) and
//! `Origin`, which they attach to every unsafe cross-origin request and which a page cannot
//! forge. This module decides from those, for unsafe methods on routes that send a token.
//!
//! Requests with neither header (curl, server-to-server) pass: they carry no ambient browser
//! cookies an attacker could ride on, so there is nothing to forge.

use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue, ORIGIN};

/// `Sec-Fetch-Site` (Fetch Metadata Request Headers, W3C).
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// How unsafe requests are checked.
#[derive(Debug, Clone)]
pub enum CsrfMode {
    /// Refuse cross-site requests by `Sec-Fetch-Site` and `Origin`.
    Origin,
    /// As `Origin`, and unsafe requests must also carry this header (any value): a browser
    /// cannot add a custom header cross-origin without a CORS preflight, which cookiegate never
    /// grants.
    Header(HeaderName),
    /// No check (for APIs that only accept non-browser clients, or that do their own).
    Off,
}

/// The CSRF policy: the mode and the extra origins allowed for unsafe methods.
#[derive(Debug, Clone)]
pub struct CsrfPolicy {
    /// The mode.
    pub mode: CsrfMode,
    /// Extra allowed origins, normalised to lowercase `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
}

impl Default for CsrfPolicy {
    fn default() -> Self {
        Self {
            mode: CsrfMode::Origin,
            allowed_origins: Vec::new(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfReject {
    /// `Sec-Fetch-Site: cross-site`.
    CrossSite,
    /// `Origin` is neither the request's own nor an allowed one.
    ForeignOrigin,
    /// `mode = "header"` and the header is missing.
    MissingHeader,
}

impl CsrfReject {
    /// A short reason for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrossSite => "sec-fetch-site is cross-site",
            Self::ForeignOrigin => "origin is not allowed",
            Self::MissingHeader => "csrf header missing",
        }
    }
}

/// Normalises an origin from the config: `scheme://host[:port]`, lowercase, no path.
///
/// # Errors
/// A message for the config problem list.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let lower = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, authority)) = lower.split_once("://") else {
        return Err(format!(
            "`{text}` must look like \"https://app.example.com\""
        ));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{text}` must use http or https"));
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "`{text}` must be scheme://host[:port] with no path"
        ));
    }
    Ok(lower)
}

/// RFC 9110 §9.2.1: GET, HEAD, OPTIONS and TRACE are safe; everything else may change state.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl CsrfPolicy {
    /// Decides one request. `host` is the host the client asked for (`Host` or `:authority`):
    /// an `Origin` whose `host[:port]` equals it is the request's own origin, whatever its
    /// scheme (TLS may end in front of cookiegate).
    ///
    /// # Errors
    /// The reason the request must be refused with 403.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        host: Option<&HeaderValue>,
    ) -> Result<(), CsrfReject> {
        if is_safe_method(method) {
            return Ok(());
        }
        match &self.mode {
            CsrfMode::Off => return Ok(()),
            CsrfMode::Header(name) => {
                if !headers.contains_key(name) {
                    return Err(CsrfReject::MissingHeader);
                }
            }
            CsrfMode::Origin => {}
        }
        if headers
            .get(&SEC_FETCH_SITE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return Err(CsrfReject::CrossSite);
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        if self.is_allowed_origin(origin.as_bytes(), host.map(HeaderValue::as_bytes)) {
            Ok(())
        } else {
            Err(CsrfReject::ForeignOrigin)
        }
    }

    fn is_allowed_origin(&self, origin: &[u8], host: Option<&[u8]>) -> bool {
        // `Origin: null` (sandboxed frames, some redirects) matches nothing.
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim();
        let own = origin
            .split_once("://")
            .filter(|(scheme, _)| {
                scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
            })
            .map(|(_, authority)| authority);
        if let (Some(authority), Some(host)) = (own, host) {
            if authority.as_bytes().eq_ignore_ascii_case(host) {
                return true;
            }
        }
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn check(
        policy: &CsrfPolicy,
        method: Method,
        pairs: &[(&str, &str)],
    ) -> Result<(), CsrfReject> {
        let host = HeaderValue::from_static("app.localhost:4000");
        policy.check(&method, &headers(pairs), Some(&host))
    }

    #[test]
    fn origin_mode_refuses_cross_site_and_foreign_origins() {
        let p = CsrfPolicy::default();
        assert_eq!(
            check(&p, Method::POST, &[("sec-fetch-site", "cross-site")]),
            Err(CsrfReject::CrossSite)
        );
        assert_eq!(
            check(
                &p,
                Method::DELETE,
                &[
                    ("origin", "http://evil.localhost:4000"),
                    ("sec-fetch-site", "same-site")
                ]
            ),
            Err(CsrfReject::ForeignOrigin)
        );
        assert_eq!(
            check(&p, Method::PUT, &[("origin", "null")]),
            Err(CsrfReject::ForeignOrigin)
        );
        assert_eq!(
            check(
                &p,
                Method::PATCH,
                &[("origin", "http://app.localhost:4001")]
            ),
            Err(CsrfReject::ForeignOrigin)
        );
    }

    #[test]
    fn origin_mode_lets_same_origin_safe_and_headerless_requests_through() {
        let p = CsrfPolicy::default();
        assert_eq!(
            check(
                &p,
                Method::POST,
                &[
                    ("origin", "http://app.localhost:4000"),
                    ("sec-fetch-site", "same-origin")
                ]
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &p,
                Method::POST,
                &[("origin", "https://APP.localhost:4000")]
            ),
            Ok(())
        );
        assert_eq!(check(&p, Method::POST, &[]), Ok(()));
        assert_eq!(
            check(&p, Method::GET, &[("sec-fetch-site", "cross-site")]),
            Ok(())
        );
        assert_eq!(
            check(&p, Method::HEAD, &[("origin", "http://evil.example")]),
            Ok(())
        );
    }

    #[test]
    fn allowed_origins_extend_the_own_origin() {
        let p = CsrfPolicy {
            mode: CsrfMode::Origin,
            allowed_origins: vec![parse_origin("https://admin.example.com/").unwrap()],
        };
        assert_eq!(
            check(&p, Method::POST, &[("origin", "https://admin.example.com")]),
            Ok(())
        );
        assert_eq!(
            check(&p, Method::POST, &[("origin", "http://admin.example.com")]),
            Err(CsrfReject::ForeignOrigin)
        );
    }

    #[test]
    fn header_mode_needs_the_header_too() {
        let p = CsrfPolicy {
            mode: CsrfMode::Header(HeaderName::from_static("x-csrf")),
            allowed_origins: vec![],
        };
        assert_eq!(check(&p, Method::POST, &[]), Err(CsrfReject::MissingHeader));
        assert_eq!(check(&p, Method::POST, &[("x-csrf", "1")]), Ok(()));
        assert_eq!(
            check(
                &p,
                Method::POST,
                &[("x-csrf", "1"), ("sec-fetch-site", "cross-site")]
            ),
            Err(CsrfReject::CrossSite)
        );
        assert_eq!(check(&p, Method::GET, &[]), Ok(()));
    }

    #[test]
    fn off_mode_allows_everything() {
        let p = CsrfPolicy {
            mode: CsrfMode::Off,
            allowed_origins: vec![],
        };
        assert_eq!(
            check(&p, Method::POST, &[("sec-fetch-site", "cross-site")]),
            Ok(())
        );
    }

    #[test]
    fn config_origins_are_validated() {
        assert_eq!(
            parse_origin("HTTPS://App.Example.com/").unwrap(),
            "https://app.example.com"
        );
        assert!(parse_origin("app.example.com").is_err());
        assert!(parse_origin("https://app.example.com/path").is_err());
        assert!(parse_origin("ftp://x").is_err());
    }

    proptest! {
        #[test]
        fn cross_site_unsafe_requests_never_pass_in_origin_mode(
            method in prop_oneof![Just(Method::POST), Just(Method::PUT), Just(Method::PATCH), Just(Method::DELETE)],
            origin in proptest::option::of("(https?://)?[a-z.]{1,12}(:[0-9]{1,4})?"),
        ) {
            let mut pairs = vec![("sec-fetch-site", "cross-site".to_string())];
            if let Some(o) = &origin { pairs.push(("origin", o.clone())); }
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            prop_assert_eq!(check(&CsrfPolicy::default(), method, &pairs), Err(CsrfReject::CrossSite));
        }

        #[test]
        fn a_foreign_origin_never_passes(host in "[a-z]{1,8}\\.example(:[0-9]{2,4})?") {
            prop_assume!(host != "app.localhost:4000");
            let origin = format!("http://{host}");
            prop_assert_eq!(check(&CsrfPolicy::default(), Method::POST, &[("origin", &origin)]), Err(CsrfReject::ForeignOrigin));
        }
    }
}
