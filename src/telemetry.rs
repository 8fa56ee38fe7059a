//! Logging setup, metrics ([`metrics`]) and request ids ([`request_id`]).
//!
//! Logs go to stderr through `tracing`, as text or as one JSON object per line (`[log] format`).
//! The filter comes from `RUST_LOG` when set, else from the config's `[log] level`. Access lines
//! use the target `cookiegate::access`, so they can be filtered on their own
//! (`RUST_LOG=info,cookiegate::access=off`); `[log] access = false` turns them off too.
//!
//! JSON lines have the fields `timestamp`, `level`, `target`, then the event's own fields
//! flattened beside them (`message`, `request_id`, `route`, `method`, `path`, `status`, ...;
//! the README lists them). Span data is left out: every line of a request carries its
//! `request_id` as a field of its own.
//!
//! Redaction is by construction, not by filtering: no code logs a header map, a cookie string,
//! a query string or a `SessionToken` (whose `Debug` is redacted anyway), and hyper is built
//! without its `tracing` feature.

mod failure;
pub mod metrics;
pub mod request_id;

pub(crate) use failure::{Failed, count_failure, log_failure};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
///
/// # Errors
/// When `RUST_LOG` or `level` is not a valid filter, or a subscriber is already installed.
pub fn init(level: &str, format: LogFormat) -> Result<(), crate::error::BoxError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env)?,
        _ => EnvFilter::try_new(level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    }
}
