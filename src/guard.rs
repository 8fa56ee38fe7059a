//! The guards a routed request passes before its token is used, each a pure decision:
//! request smuggling shapes and transfer codings ([`check_framing`], with `framing` watching
//! the raw bytes hyper hides), CSRF ([`csrf`]) and per-client rate limits ([`rate_limit`]).
//!
//! Their order, with routing before and the session after, lives in one place:
//! [`crate::admission::admit`]. Every route goes through it, whichever way it was declared, so
//! no route can skip a guard (Duende BFF shipped advisories because config-declared routes
//! skipped its CSRF check).

pub mod csrf;
pub(crate) mod framing;
pub mod rate_limit;

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HeaderMap, TRANSFER_ENCODING};

use crate::config::Config;
use csrf::CsrfPolicy;
use rate_limit::ClientLimiter;

/// The guards' state, built from one config (a reload carries parts of it over, see
/// [`crate::proxy::Lasting`]).
#[derive(Debug)]
pub struct Guards {
    /// CSRF policy.
    pub csrf: CsrfPolicy,
    /// The rate limiter, when `[rate_limit]` is configured.
    pub limiter: Option<Arc<ClientLimiter>>,
    /// Sessions logged out before their cookie expired (outlives reloads).
    pub(crate) revocations: Arc<crate::auth::revocation::Revocations>,
    /// Open WebSockets (the per-session cap, shutdown; outlives reloads).
    pub(crate) sockets: Arc<crate::proxy::websocket::Sockets>,
    /// Sessions already opened, by cookie value.
    pub(crate) opened: Arc<crate::auth::opened::OpenedCache>,
}

impl Guards {
    /// Builds the guards from the config.
    pub fn new(config: &Config) -> Self {
        Self::carry(config, &crate::proxy::Lasting::default(), None)
    }

    /// Builds the guards for `config` on the long-lived parts of `lasting`. With the
    /// `previous` config and guards (a reload), the rate-limit buckets are kept when the limit
    /// is unchanged, and the opened sessions when the session settings are (`same_session`).
    pub(crate) fn carry(
        config: &Config,
        lasting: &crate::proxy::Lasting,
        previous: Option<(&Config, &Guards, bool)>,
    ) -> Self {
        let limiter = match (&config.rate_limit, previous) {
            (Some(new), Some((old, guards, _))) if old.rate_limit.as_ref() == Some(new) => {
                guards.limiter.clone()
            }
            (Some(r), _) => Some(Arc::new(ClientLimiter::new(r.per_second, r.burst, r.key))),
            (None, _) => None,
        };
        let opened = match previous {
            Some((_, guards, true)) => guards.opened.clone(),
            _ => Arc::default(),
        };
        Self {
            csrf: config.csrf.clone(),
            limiter,
            revocations: lasting.revocations.clone(),
            sockets: lasting.sockets.clone(),
            opened,
        }
    }
}

/// Why [`check_framing`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingReject {
    /// Both `Content-Length` and `Transfer-Encoding` (400).
    BothFramings,
    /// A transfer coding besides `chunked` (501).
    UnsupportedCoding,
}

/// Refuses the request-smuggling shapes and codings we cannot pass on:
///
/// - both `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3: "ought to be handled as an
///   error"), as the headers show them or, for HTTP/1, as the connection's raw bytes showed
///   them (`raw_both`, from `framing::FramingWatch`): hyper frames such a request by
///   `Transfer-Encoding` and drops `Content-Length` before we see the headers -> 400;
/// - a transfer coding besides `chunked` (`gzip, chunked`): hyper removes the chunked framing
///   but not the gzip coding, and dropping `Transfer-Encoding` as hop-by-hop would send the
///   upstream gzip bytes as if plain (RFC 9112 §6.1) -> 501, as nginx answers.
///
/// hyper already refuses differing duplicated `Content-Length`s, obs-folded fields and a
/// `Transfer-Encoding` whose last coding is not `chunked`; HTTP/2 forbids the field.
///
/// # Errors
/// The [`FramingReject`]; the admission turns it into its answer.
pub fn check_framing(headers: &HeaderMap, raw_both: bool) -> Result<(), FramingReject> {
    if raw_both || (headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH))
    {
        return Err(FramingReject::BothFramings);
    }
    for field in headers.get_all(TRANSFER_ENCODING) {
        let only_chunked = field.as_bytes().split(|&b| b == b',').all(|coding| {
            let coding = coding.trim_ascii();
            coding.is_empty() || coding.eq_ignore_ascii_case(b"chunked")
        });
        if !only_chunked {
            return Err(FramingReject::UnsupportedCoding);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn te(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(TRANSFER_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn only_the_chunked_coding_is_passed_on() {
        assert!(check_framing(&te(&["chunked"]), false).is_ok());
        assert!(check_framing(&te(&["Chunked "]), false).is_ok());
        assert!(check_framing(&HeaderMap::new(), false).is_ok());
        for codings in [
            &["gzip, chunked"][..],
            &["gzip", "chunked"],
            &["deflate,chunked"],
            &["chunked, identity"],
        ] {
            assert!(
                check_framing(&te(codings), false) == Err(FramingReject::UnsupportedCoding),
                "{codings:?}"
            );
        }
    }

    #[test]
    fn both_framings_are_refused_from_headers_or_raw_bytes() {
        let mut both = te(&["chunked"]);
        both.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(
            check_framing(&both, false),
            Err(FramingReject::BothFramings)
        );
        assert_eq!(
            check_framing(&HeaderMap::new(), true),
            Err(FramingReject::BothFramings)
        );
    }
}
