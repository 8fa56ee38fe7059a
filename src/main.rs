//! The `cookiegate` binary: parse arguments, load the config, run, map the outcome to an exit
//! code (0 success, 1 runtime failure, 2 invalid config or usage).

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary talks to its user on stdout (check) and stderr (errors)"
)]

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use cookiegate::cli::{Cli, Command};
use cookiegate::config::{Config, Env, LogFormat, Source};
use cookiegate::telemetry::metrics::Metrics;

/// mimalloc instead of glibc's allocator: a proxied request makes a dozen short-lived
/// allocations (heads, header maps, buffers), and under load glibc's free lists cost about
/// 3.3k instructions per request against mimalloc's 1.4k (BENCHMARKS.md). Built with
/// `no_thp`, so it never backs its arenas with 2 MiB transparent huge pages, which would put
/// idle memory over the 8 MiB budget.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(problem) = cli.usage_error() {
        eprintln!("error: {problem}");
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Check) => check(&cli),
        Some(Command::Demo) => demo(&cli),
        None => run(&cli),
    }
}

/// Loads and validates the config, with `--listen` applied.
fn load(cli: &Cli) -> Result<(Source, Config), String> {
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

fn check(cli: &Cli) -> ExitCode {
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

fn run(cli: &Cli) -> ExitCode {
    let config = match load(cli) {
        Ok((_, config)) => config,
        Err(problems) => {
            eprintln!("error: {problems}");
            return ExitCode::from(2);
        }
    };
    exit_code(serve(config))
}

fn demo(cli: &Cli) -> ExitCode {
    let listen = match cli.listen.as_deref().unwrap_or("127.0.0.1:4000").parse() {
        Ok(addr) => addr,
        Err(_) => {
            eprintln!("error: --listen must be an IP address and port, like \"127.0.0.1:4000\"");
            return ExitCode::from(2);
        }
    };
    exit_code(run_runtime(0, "info", LogFormat::Text, async move {
        cookiegate::demo::run(listen, shutdown_signal())
            .await
            .map_err(|e| anyhow::anyhow!(e).context("demo failed"))
    }))
}

fn serve(config: Config) -> anyhow::Result<()> {
    let workers = config.server.workers;
    let level = config.log_level.clone();
    let format = config.log.format;
    run_runtime(workers, &level, format, async move {
        let listener = cookiegate::server::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        // Metrics live as long as the process, across config reloads; their listener is
        // bound before serving, so a taken port fails the start.
        let metrics = match config.metrics {
            Some(settings) => {
                let listener = cookiegate::server::bind(settings.listen).with_context(|| {
                    format!("cannot listen on {} for [metrics]", settings.listen)
                })?;
                Some((listener, Arc::new(Metrics::new())))
            }
            None => None,
        };
        let mut state = cookiegate::AppState::new(config)
            .map_err(|e| anyhow::anyhow!(e).context("cannot build the upstream client"))?;
        // The public listener's line comes first: tools (and tests) take the first `addr`.
        tracing::info!(%addr, "cookiegate listening");
        let (stop_metrics, stopped) = tokio::sync::watch::channel(false);
        let mut metrics_task = None;
        if let Some((listener, metrics)) = metrics {
            state = state.with_metrics(&metrics);
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let mut stopped = stopped;
            metrics_task = Some(tokio::spawn(cookiegate::telemetry::metrics::serve_metrics(
                listener,
                metrics,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            )));
        }
        cookiegate::serve(listener, Arc::new(state), shutdown_signal()).await;
        // Scrapes go on during the shutdown grace; the listener stops with the server.
        let _ = stop_metrics.send(true);
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        Ok(())
    })
}

/// Builds the runtime (`workers` = 1: single-threaded; 0: one worker per CPU), installs logging
/// and runs `main` on it.
fn run_runtime(
    workers: usize,
    level: &str,
    format: LogFormat,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Each proxied connection holds two descriptors (client and upstream); the usual soft limit
    // of 1024 would cap `server.max_connections` far below its default. Raise it to the hard
    // limit; if that fails, accept errors (EMFILE) are logged and retried.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    cookiegate::telemetry::init(level, format)
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
