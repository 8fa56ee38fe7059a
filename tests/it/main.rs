//! Integration tests: the real proxy, real upstream servers, real clients, all on 127.0.0.1.

#![allow(unreachable_pub, missing_docs)]
// Test helpers outside #[test] functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod cli;
mod concurrency;
mod csrf;
mod demo;
mod errors;
mod forwarding;
mod harness;
mod logs;
mod metrics;
mod oidc;
mod oidc_mutation;
mod rate_limit;
mod reload;
mod secrets;
mod shared;
mod shutdown;
mod smoke;
mod store;
mod streaming;
mod support;
mod tls;
mod tls_listener;
mod trust;
mod upstream_h1;
mod websocket;
