//! The built-in demo (being written).

use std::future::Future;
use std::net::SocketAddr;

/// Runs the demo API and the proxy in front of it until `shutdown` resolves.
///
/// # Errors
/// When a socket cannot be bound.
pub async fn run(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> Result<(), crate::error::BoxError> {
    let _ = (listen, shutdown);
    Err("the demo is not built yet".into())
}
