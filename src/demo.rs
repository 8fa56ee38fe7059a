//! `cookiegate demo`: the real proxy in front of a small built-in API, with a page to try it.
//!
//! [`run`] starts two servers in one process:
//!
//! - the demo API (`demo/api.rs`) on a loopback port chosen by the OS: it hands out an httpOnly
//!   session cookie at `/login`, serves the page, and answers `/api/*` and `/chatkit` only to
//!   requests carrying `Authorization: Bearer <token>`;
//! - cookiegate itself on `listen`, built exactly as production builds it: a
//!   [`FileConfig`] validated by [`Config::from_file`], an [`AppState`], and
//!   [`crate::server::serve`]. Nothing in the proxy knows it is a demo.
//!
//! The routes it configures:
//!
//! | prefix         | upstream                | auth     |
//! | -------------- | ----------------------- | -------- |
//! | `/api/proxy`   | `http://<api>`          | required |
//! | `/api/chatkit` | `http://<api>/chatkit`  | required, `POST` only |
//! | `/`            | `http://<api>`          | none (the page, `/login`, `/logout`) |
//!
//! So the browser only ever talks to cookiegate: the cookie set by `/login` comes back on every
//! `fetch`, cookiegate turns it into a bearer token, and the page's script never sees the token.

mod api;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::config::file::{FileConfig, RouteFile, ServerFile};
use crate::error::BoxError;
use crate::proxy::AppState;

/// The session cookie the demo API sets and cookiegate reads.
const COOKIE: &str = "auth_token";

/// Binds `listen`, then runs the demo API and the proxy in front of it until `shutdown`
/// resolves.
///
/// # Errors
/// When a socket cannot be bound, or (a bug) the demo's own configuration is refused.
pub async fn run(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
    let listener =
        crate::server::bind(listen).map_err(|e| crate::server::bind_error(listen, &e))?;
    start(listener, shutdown).await
}

/// How the demo behaves where a test may want it to differ; [`Default`] is what
/// `cookiegate demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// The pause between two words of the assistant's streamed reply. Zero sends each word as
    /// soon as the one before has been taken (tests use it to stream without waiting).
    pub word_pause: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            word_pause: api::WORD_PAUSE,
        }
    }
}

/// Runs the demo on an already bound listener (tests bind port 0) until `shutdown` resolves.
/// The demo API's tasks end before this returns.
///
/// # Errors
/// As [`run`], minus binding `listener`.
pub async fn start(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    start_with(listener, DemoOptions::default(), shutdown).await
}

/// [`start`] with these options.
///
/// # Errors
/// As [`start`].
pub async fn start_with(
    listener: TcpListener,
    options: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let addr = listener.local_addr()?;
    // Dropping `api` (on every way out of this function) stops the API and its streams.
    let api = api::DemoApi::start(options.word_pause).await?;
    let config = Config::from_file(
        file_config(addr, api.addr()),
        &crate::config::Env::default(),
    )?;
    let state = Arc::new(AppState::new(config)?);
    tracing::info!(api = %api.addr(), "demo API listening");
    tracing::info!("demo ready: open http://{}/", browsable(addr));
    crate::server::serve(listener, state, shutdown).await;
    drop(api);
    Ok(())
}

/// The demo's configuration, as a file would spell it.
fn file_config(listen: SocketAddr, api: SocketAddr) -> FileConfig {
    let route = |prefix: &str, upstream: String| RouteFile {
        prefix: Some(prefix.into()),
        upstream: Some(upstream),
        cookie: Some(COOKIE.into()),
        ..RouteFile::default()
    };
    FileConfig {
        listen: Some(listen.to_string()),
        server: ServerFile {
            // The page keeps an SSE feed open; Ctrl-C should not wait the default 30 s for it.
            shutdown_grace: Some("1s".into()),
            ..ServerFile::default()
        },
        routes: vec![
            route("/api/proxy", format!("http://{api}")),
            RouteFile {
                methods: Some(vec!["POST".into()]),
                ..route("/api/chatkit", format!("http://{api}/chatkit"))
            },
            RouteFile {
                auth: Some("none".into()),
                ..route("/", format!("http://{api}"))
            },
        ],
        ..FileConfig::default()
    }
}

/// The address to put in a browser: `0.0.0.0` and `[::]` listen everywhere but are no place
/// to browse to, so loopback stands in for them.
fn browsable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMode;

    #[test]
    fn demo_config_is_valid_and_routes_as_documented() {
        let api: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let config = Config::from_file(
            file_config("127.0.0.1:4000".parse().unwrap(), api),
            &crate::config::Env::default(),
        )
        .unwrap();
        let (route, rest) = config.routes.find("/api/proxy/api/items").unwrap();
        assert_eq!((route.prefix.as_str(), rest), ("/api/proxy", "/api/items"));
        assert_eq!(route.auth, AuthMode::Required);
        assert_eq!(route.cookie.as_str(), COOKIE);
        let (route, _) = config.routes.find("/api/chatkit").unwrap();
        assert_eq!(route.upstream.base_path(), "/chatkit");
        assert!(!route.methods.allows(&http::Method::GET));
        let (route, _) = config.routes.find("/login").unwrap();
        assert_eq!(route.auth, AuthMode::None);
    }

    #[test]
    fn unspecified_listen_address_is_shown_as_loopback() {
        assert_eq!(
            browsable("0.0.0.0:4000".parse().unwrap()).to_string(),
            "127.0.0.1:4000"
        );
        assert_eq!(
            browsable("10.1.2.3:80".parse().unwrap()).to_string(),
            "10.1.2.3:80"
        );
    }
}
