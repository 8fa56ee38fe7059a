//! The `cookiegate` binary: parse arguments, load the config, run, map the outcome to an exit
//! code (0 success, 1 runtime failure, 2 invalid config or usage).

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary talks to its user on stdout (check) and stderr (errors)"
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use cookiegate::cli::{Cli, Command, RunArgs};
use cookiegate::config::{Config, Env, Source};
use cookiegate::server::Listener;
use cookiegate::server::tls::ServerTls;

/// mimalloc instead of glibc's allocator: a proxied request makes a dozen short-lived
/// allocations (heads, header maps, buffers), and under load glibc's free lists cost about
/// 3.3k instructions per request against mimalloc's 1.4k (BENCHMARKS.md). Built with
/// `no_thp`, so it never backs its arenas with 2 MiB transparent huge pages, which would put
/// idle memory over the 8 MiB budget.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = cli.run_args();
    let problem = match &cli.command {
        Some(Command::Demo(_)) => args.demo_usage_error(),
        _ => args.usage_error(),
    };
    if let Some(problem) = problem {
        eprintln!("error: {problem}");
        return ExitCode::from(2);
    }
    match &cli.command {
        Some(Command::Check(_)) => check(&args),
        Some(Command::Demo(demo_args)) => {
            demo(demo_args.listen.as_deref().or(args.listen.as_deref()))
        }
        None => run(&args),
    }
}

/// Loads and validates the config, with `--listen` applied.
fn load(cli: &RunArgs) -> Result<(Source, Config), String> {
    let env = Env::from_process();
    let source =
        Source::choose(cli.config.clone(), cli.zero_config(), &env).map_err(|e| e.to_string())?;
    let mut config = source.load(&env).map_err(|e| e.to_string())?;
    if let Some(listen) = &cli.listen {
        config.listen = listen.parse().map_err(|_| {
            format!("--listen: `{listen}` must be an IP address and port, like \"127.0.0.1:4000\"")
        })?;
    }
    Ok((source, config))
}

fn check(cli: &RunArgs) -> ExitCode {
    match load(cli) {
        Ok((source, config)) => {
            println!("config ok: {}", source.describe());
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("error: {problems}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &RunArgs) -> ExitCode {
    let config = match load(cli) {
        Ok((_, config)) => config,
        Err(problems) => {
            eprintln!("error: {problems}");
            return ExitCode::from(2);
        }
    };
    exit_code(serve(config))
}

fn demo(listen: Option<&str>) -> ExitCode {
    let listen = match listen.unwrap_or("127.0.0.1:4000").parse() {
        Ok(addr) => addr,
        Err(_) => {
            eprintln!("error: --listen must be an IP address and port, like \"127.0.0.1:4000\"");
            return ExitCode::from(2);
        }
    };
    exit_code(run_runtime(0, "info", async move {
        cookiegate::demo::run(listen, shutdown_signal())
            .await
            .map_err(|e| anyhow::anyhow!(e).context("demo failed"))
    }))
}

fn serve(config: Config) -> anyhow::Result<()> {
    let workers = config.server.workers;
    let level = config.log_level.clone();
    run_runtime(workers, &level, async move {
        let listener = cookiegate::server::bind(config.listen)
            .map_err(|e| anyhow::anyhow!(cookiegate::server::bind_error(config.listen, &e)))?;
        let addr = listener.local_addr()?;
        let tls = config.tls.clone();
        let state = Arc::new(
            cookiegate::AppState::new(config)
                .map_err(|e| anyhow::anyhow!(e).context("cannot build the upstream client"))?,
        );
        let Some(tls) = tls else {
            tracing::info!(%addr, "cookiegate listening");
            cookiegate::serve(listener, state, shutdown_signal()).await;
            return Ok(());
        };
        let server_tls = Arc::new(ServerTls::new(&tls.loaded));
        // Registered before "listening" is logged: from then on a SIGHUP reloads instead of
        // ending the process (its default action).
        let reloads = reload_on_sighup(server_tls.clone(), tls.cert, tls.key)?;
        tracing::info!(%addr, tls = true, "cookiegate listening");
        let listener = Listener::with_tls(listener, server_tls);
        cookiegate::serve(listener, state, shutdown_signal()).await;
        reloads.abort();
        Ok(())
    })
}

/// Starts the task that re-reads the `[tls]` certificate and key on each SIGHUP;
/// [`ServerTls::reload`] logs each outcome and keeps the old certificate when the new files
/// are bad. Only these two files, at the paths the process started with. A reload of the whole
/// config on SIGHUP would take this task's place: validating the new file loads its `[tls]`
/// files ([`cookiegate::config::TlsSettings::loaded`]), which it then hands to
/// [`ServerTls::install`]. Turning TLS on or off still takes a restart. The caller aborts the
/// task on shutdown.
fn reload_on_sighup(
    tls: Arc<ServerTls>,
    cert: PathBuf,
    key: PathBuf,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let _ = tls.reload(&cert, &key);
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (tls, cert, key);
        Ok(tokio::spawn(async {}))
    }
}

/// Builds the runtime (`workers` = 1: single-threaded; 0: one worker per CPU), installs logging
/// and runs `main` on it.
fn run_runtime(
    workers: usize,
    level: &str,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Each proxied connection holds two descriptors (client and upstream); the usual soft limit
    // of 1024 would cap `server.max_connections` far below its default. Raise it to the hard
    // limit; if that fails, accept errors (EMFILE) are logged and retried.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    cookiegate::telemetry::init(level)
        .map_err(|e| anyhow::anyhow!(e).context("cannot set up logging"))?;
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if workers > 1 {
            builder.worker_threads(workers);
        }
        builder.enable_all().build()
    }
    .context("cannot start the runtime")?;
    runtime.block_on(main)
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}
