//! Command-line arguments: run (default), `check`, `demo`, and the zero-config flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ZeroConfig;

/// cookiegate: turns an httpOnly session cookie into `Authorization: Bearer` and streams requests
/// to your API.
#[derive(Debug, Parser)]
#[command(name = "cookiegate", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a command, cookiegate runs the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file [default: $COOKIEGATE_CONFIG, then ./cookiegate.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Zero-config mode: the one upstream to proxy to [default: $BACKEND_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub upstream: Option<String>,
    /// Address to listen on [default: 127.0.0.1:4000]; overrides the config file's `listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Zero-config mode: the session cookie's name [default: auth_token].
    #[arg(long, global = true, value_name = "NAME")]
    pub cookie: Option<String>,
    /// Zero-config mode: the path prefix to proxy [default: /api/proxy].
    #[arg(long, global = true, value_name = "PATH")]
    pub prefix: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print the route table; exit 2 listing every problem.
    Check,
    /// Run the proxy with a built-in demo API and page on 127.0.0.1:4000.
    Demo,
}

impl Cli {
    /// The zero-config flags.
    pub fn zero_config(&self) -> ZeroConfig {
        ZeroConfig {
            upstream: self.upstream.clone(),
            listen: self.listen.clone(),
            cookie: self.cookie.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// A usage problem with the flags given, if any.
    pub fn usage_error(&self) -> Option<&'static str> {
        let zero_config_only =
            self.upstream.is_some() || self.cookie.is_some() || self.prefix.is_some();
        if self.config.is_some() && zero_config_only {
            return Some(
                "--upstream, --cookie and --prefix build a one-route config; they cannot be combined with --config",
            );
        }
        None
    }
}
