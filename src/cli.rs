//! Command-line arguments: run (default), `check`, `demo`, and the zero-config flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ZeroConfig;

/// cookiegate: turns an httpOnly session cookie into `Authorization: Bearer` and streams requests
/// to your API.
#[derive(Debug, Parser)]
#[command(name = "cookiegate", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a command, cookiegate runs the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Where the config comes from, for running the proxy (and `check`, which takes the same
    /// flags after its name).
    #[command(flatten)]
    pub run: RunArgs,
}

/// The flags that say which config to run: a file, or the zero-config flags. Taken by the
/// proxy itself and by `check`; not by `demo`, which builds its own config.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Config file [default: $COOKIEGATE_CONFIG, then ./cookiegate.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Zero-config mode: the one upstream to proxy to [default: $BACKEND_URL].
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Address to listen on [default: 127.0.0.1:4000]; overrides the config file's `listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Zero-config mode: the session cookie's name [default: auth_token].
    #[arg(long, value_name = "NAME")]
    pub cookie: Option<String>,
    /// Zero-config mode: the path prefix to proxy [default: /api/proxy].
    #[arg(long, value_name = "PATH")]
    pub prefix: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print the route table; exit 2 listing every problem.
    Check(RunArgs),
    /// Run the proxy with a built-in demo API and page on 127.0.0.1:4000.
    Demo(DemoArgs),
}

/// `demo`'s only flag: it builds its own config.
#[derive(Debug, Clone, Default, Args)]
pub struct DemoArgs {
    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

impl Cli {
    /// The run flags in effect: `check`'s own (`cookiegate check --config x`) over those given
    /// before the command (`cookiegate --config x check`), which both work.
    pub fn run_args(&self) -> RunArgs {
        match &self.command {
            Some(Command::Check(own)) => RunArgs {
                config: own.config.clone().or_else(|| self.run.config.clone()),
                upstream: own.upstream.clone().or_else(|| self.run.upstream.clone()),
                listen: own.listen.clone().or_else(|| self.run.listen.clone()),
                cookie: own.cookie.clone().or_else(|| self.run.cookie.clone()),
                prefix: own.prefix.clone().or_else(|| self.run.prefix.clone()),
            },
            _ => self.run.clone(),
        }
    }
}

impl RunArgs {
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

    /// A usage problem with flags given to `demo`, which builds its own config: only
    /// `--listen` applies.
    pub fn demo_usage_error(&self) -> Option<&'static str> {
        let ignored = self.config.is_some()
            || self.upstream.is_some()
            || self.cookie.is_some()
            || self.prefix.is_some();
        ignored.then_some(
            "demo runs its own API and config: of the flags, only --listen applies to it",
        )
    }
}
