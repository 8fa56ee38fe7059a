//! cookiegate: a backend-for-frontend proxy that turns an httpOnly session cookie into
//! `Authorization: Bearer <token>` and streams requests and responses between a browser and an
//! API, both ways, without buffering.
//!
//! # Layout
//! A request travels one way, and the modules follow it:
//!
//! - [`server`]: accept loop, connection settings, the request-head timeout, graceful
//!   shutdown (draining, readiness), TLS termination with certificate reload ([`server::tls`]),
//!   and the running state a reload swaps ([`server::Live`]; what survives a reload is in
//!   `proxy/state.rs`'s docs, [`proxy::Lasting`]);
//! - [`admission`]: the whole refusal order as one pure function, [`admission::admit`] (health, methods,
//!   origin-form, route, path mapping, framing, CSRF, rate limit, declared size, session),
//!   over [`routing`] (longest-prefix routes, upstream path mapping), [`trust`] (who the client
//!   is behind trusted proxies), [`guard`] (framing, CSRF, rate-limit decisions) and [`auth`]
//!   (a cookie minted elsewhere and the [`auth::SessionToken`] that never prints; the token
//!   handler: OIDC login, the encrypted session cookie, JWS/JWKS, single-flight refresh,
//!   revocations);
//! - `proxy`: one request end to end, admit -> forward -> relay, with the header policy
//!   ([`proxy::headers`], pure), the body limits and idle timer, and the streaming relay with its
//!   access log;
//! - [`upstream`]: the HTTP/1.1 client towards upstreams, apart from the pipeline: the wire
//!   format ([`upstream::h1`], pure), connections and TLS, the keep-alive pool (`is_reusable`),
//!   one exchange per request, and the resend rule (`may_resend`);
//! - [`store`]: the state instances share on Valkey/Redis (`[store]`): rate-limit buckets,
//!   the refresh lock and its outcome, revocations, stored sessions; taken by the pipeline
//!   right after admission and by the token handler;
//! - [`error`]: [`ProxyError`], its status, fault and JSON body, in one place;
//! - [`telemetry`]: logging setup (text or JSON), request ids (`X-Request-Id`), the refusal and
//!   upstream failure lines, and the Prometheus metrics with their own listener;
//! - [`config`]: the TOML file model and its validation; [`cli`] serves `main`;
//! - [`demo`]: the built-in demo API and page behind `cookiegate demo`.
//!
//! The public surface is what the binary, the benchmarks and the fuzz targets need; the rest is
//! crate-private.

pub mod admission;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod guard;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod upstream;

pub use config::{Config, ConfigError};
pub use error::ProxyError;
pub use proxy::AppState;
pub use server::serve;
