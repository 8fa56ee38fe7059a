//! cookiegate: a backend-for-frontend proxy that turns an httpOnly session cookie into
//! `Authorization: Bearer <token>` and streams requests and responses between a browser and an
//! API, both ways, without buffering.
//!
//! # Layout
//! A request travels one way, and the modules follow it:
//!
//! - [`server`]: accept loop, connection settings, the request-head timeout, graceful
//!   shutdown;
//! - [`routing`]: longest-prefix route lookup and upstream path mapping (pure);
//! - [`guard`]: the checks every routed request passes, in one order: request smuggling
//!   shapes, CSRF ([`guard::csrf`]), rate limits ([`guard::rate_limit`]);
//! - [`auth`]: the session cookie and the [`auth::SessionToken`] that never prints;
//! - [`proxy`]: one request end to end, with [`proxy::headers`] (header policy, pure),
//!   [`proxy::body`] (size limit, idle timer), [`proxy::forward`] (sending upstream, the wait
//!   for the response head), [`proxy::pool`] (keep-alive upstream connections),
//!   [`proxy::exchange`] (one request and its answer on one connection) over [`proxy::h1`]
//!   (the HTTP/1.1 wire format towards upstreams, pure) and [`proxy::relay`] (streaming back,
//!   access log);
//! - [`error`]: [`ProxyError`], its status and its JSON body, in one place;
//! - [`config`]: the TOML file model and its validation; [`cli`] and [`telemetry`] serve `main`;
//! - [`demo`]: the built-in demo API and page behind `cookiegate demo`.

pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod guard;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use error::ProxyError;
pub use proxy::AppState;
pub use server::serve;
