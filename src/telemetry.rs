//! Logging setup.
//!
//! Logs go to stderr through `tracing`. The filter comes from `RUST_LOG` when set, else from the
//! config's `[log] level`. Access lines use the target `cookiegate::access`, so they can be
//! filtered on their own (`RUST_LOG=info,cookiegate::access=off`).
//!
//! Redaction is by construction, not by filtering: no code logs a header map, a cookie string,
//! a query string or a `SessionToken` (whose `Debug` is redacted anyway), and hyper is built
//! without its `tracing` feature.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`.
///
/// # Errors
/// When `RUST_LOG` or `level` is not a valid filter, or a subscriber is already installed.
pub fn init(level: &str) -> Result<(), crate::error::BoxError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env)?,
        _ => EnvFilter::try_new(level)?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
}
