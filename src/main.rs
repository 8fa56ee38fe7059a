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
use cookiegate::cli::{Cli, Command, RunArgs};
use cookiegate::config::{Config, ConfigError, Env, LogFormat, Source};
use cookiegate::server::Listener;
use cookiegate::server::tls::ServerTls;
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
        None => run(args),
    }
}

/// Loads and validates the config, with `--listen` applied.
fn load(cli: &RunArgs) -> Result<(Source, Config), String> {
    let env = Env::from_process();
    let source =
        Source::choose(cli.config.clone(), cli.zero_config(), &env).map_err(|e| e.to_string())?;
    let config = load_from(cli, &source, &env).map_err(|e| describe_error(&source, e))?;
    Ok((source, config))
}

/// Loads and validates `source` (again, at a reload), with `--listen` applied.
fn load_from(cli: &RunArgs, source: &Source, env: &Env) -> Result<Config, ConfigError> {
    let mut config = source.load(env)?;
    if let Some(listen) = &cli.listen {
        config.listen = listen.parse().map_err(|_| {
            ConfigError::Invalid(vec![format!(
                "--listen: `{listen}` must be an IP address and port, like \"127.0.0.1:4000\""
            )])
        })?;
    }
    Ok(config)
}

fn describe_error(source: &Source, err: ConfigError) -> String {
    match err {
        // Every problem, one a line, under where the config came from.
        ConfigError::Invalid(problems) => format!(
            "{} problem{} in config from {}:\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            source.describe(),
            problems.join("\n  ")
        ),
        other => other.to_string(),
    }
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

fn run(cli: RunArgs) -> ExitCode {
    let (source, config) = match load(&cli) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("error: {problems}");
            return ExitCode::from(2);
        }
    };
    exit_code(serve(cli, source, config))
}

fn demo(listen: Option<&str>) -> ExitCode {
    let listen = match listen.unwrap_or("127.0.0.1:4000").parse() {
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

fn serve(cli: RunArgs, source: Source, config: Config) -> anyhow::Result<()> {
    let workers = config.server.workers;
    let level = config.log_level.clone();
    let format = config.log.format;
    run_runtime(workers, &level, format, async move {
        // Signal handlers first: from here on SIGHUP, SIGTERM and SIGINT no longer end the
        // process by their default action.
        let signals = Signals::new();
        let hangups = hangups();
        let listener = cookiegate::server::bind(config.listen)
            .map_err(|e| anyhow::anyhow!(cookiegate::server::bind_error(config.listen, &e)))?;
        let addr = listener.local_addr()?;
        // Metrics live as long as the process, across config reloads; their listener is
        // bound before serving, so a taken port fails the start.
        let metrics = match &config.metrics {
            Some(settings) => {
                let listener = cookiegate::server::bind(settings.listen).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {} for metrics: {e}: choose another address in \
                         [metrics] listen",
                        settings.listen
                    )
                })?;
                Some((listener, Arc::new(Metrics::new())))
            }
            None => None,
        };
        // Long-lived shared things are made here, once, and outlive every reload: the TLS
        // listener's certificate (a reload installs the new files in it) and the metrics.
        let server_tls = config
            .tls
            .as_ref()
            .map(|tls| Arc::new(ServerTls::new(&tls.loaded)));
        let mut lasting = match &server_tls {
            Some(tls) => cookiegate::proxy::Lasting::with_tls(tls.clone()),
            None => cookiegate::proxy::Lasting::default(),
        };
        if let Some((_, metrics)) = &metrics {
            lasting = lasting.with_metrics(metrics.clone());
        }
        let state = Arc::new(
            cookiegate::AppState::with_lasting(config, Arc::new(lasting))
                .map_err(|e| anyhow::anyhow!(e).context("cannot build the upstream client"))?,
        );
        let live = cookiegate::server::Live::new(state);
        // The public listener's line comes first: tools (and tests) take the first `addr`.
        tracing::info!(%addr, tls = server_tls.is_some(), "cookiegate listening");
        let listener = match server_tls {
            Some(tls) => Listener::with_tls(listener, tls),
            None => Listener::from(listener),
        };
        let (stop_metrics, stopped) = tokio::sync::watch::channel(false);
        let mut metrics_task = None;
        if let Some((listener, metrics)) = metrics {
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
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = first_rx.await;
        };
        let served = tokio::select! {
            () = cookiegate::serve(listener, live.clone(), shutdown) => Ok(()),
            () = reload_on_hangup(hangups, &cli, &source, &live) => Ok(()),
            () = second_signal(signals, first_tx) => {
                // The drain is abandoned: what is still in flight is cut.
                Err(anyhow::anyhow!("a second signal cut the graceful shutdown short"))
            }
        };
        // Scrapes go on during the shutdown grace; the listener stops with the server.
        let _ = stop_metrics.send(true);
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        served
    })
}

/// Resolves on the second SIGTERM or SIGINT: the first starts the graceful drain
/// (`first`), a second one during it means "now" (an operator pressing Ctrl-C twice).
async fn second_signal(mut signals: Signals, first: tokio::sync::oneshot::Sender<()>) {
    signals.next().await;
    tracing::info!("shutdown signal received");
    let _ = first.send(());
    signals.next().await;
    tracing::warn!("second signal: exiting now");
}

/// SIGHUP re-reads the config file (and the environment, for its secrets) and applies it to
/// new requests; an invalid file keeps the running config ([`cookiegate::server::Live::reload`]).
/// Without a file (flags, `$BACKEND_URL`) there is nothing to re-read: a process's environment
/// cannot change from outside, so a change there takes a restart, and that is logged.
async fn reload_on_hangup(
    hangups: Option<Hangups>,
    cli: &RunArgs,
    source: &Source,
    live: &cookiegate::server::Live,
) {
    #[cfg(unix)]
    {
        let Some(mut hangups) = hangups else {
            tracing::warn!("cannot listen for SIGHUP: reloading is off");
            return std::future::pending().await;
        };
        while hangups.recv().await.is_some() {
            match source {
                Source::File(path) => {
                    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
                    live.reload(load_from(cli, source, &Env::from_process()));
                }
                Source::Flags(_) => tracing::warn!(
                    "SIGHUP: no config file to re-read (the config comes from flags and the \
                     environment, fixed at start); restart to change it"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (hangups, cli, source, live);
    std::future::pending().await
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

/// The SIGHUP stream (`None` where it cannot be had).
fn hangups() -> Option<Hangups> {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
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

/// SIGTERM and SIGINT (Ctrl-C), one after the other.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => {}
                () = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    Signals::new().next().await;
    tracing::info!("shutdown signal received");
}
