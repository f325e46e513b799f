//! The `alb` command line: parse arguments, load the config, run.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use alb::demo::{DemoBackend, backend_addrs};
use alb::telemetry::{self, LogFormat};
use alb::{Config, Server};

#[derive(Debug, Parser)]
#[command(name = "alb", version, about = "An asynchronous HTTP load balancer")]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the balancer.
    Run {
        #[arg(long, short, default_value = "alb.toml")]
        config: PathBuf,
        /// Turn the per-request access log off, whatever the config says.
        #[arg(long)]
        no_access_log: bool,
    },
    /// Validate a config file: exit 0 if it is valid, else print every problem and exit 1.
    Check {
        #[arg(long, short, default_value = "alb.toml")]
        config: PathBuf,
    },
    /// Run the balancer with two built-in demo backends.
    Demo {
        /// The balancer's address; the backends take the next two ports.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run one demo backend: answers every path with a short text naming itself.
    Backend {
        #[arg(long)]
        port: u16,
        /// Its name in answers; by default the host's name (a container's id under Docker).
        #[arg(long)]
        name: Option<String>,
        /// Wait this long before answering each request.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Answer with this many bytes instead of the greeting (for benchmarks).
        #[arg(long)]
        body_bytes: Option<usize>,
        /// Address to bind (0.0.0.0 inside a container).
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return check(config);
    }
    telemetry::init(cli.log_format);
    // `run` reads its config first: it sizes the runtime, and a bad file must not start anything.
    let (command, workers) = match cli.command {
        Command::Run {
            config,
            no_access_log,
        } => match Config::load(&config).map(|c| (c, config)) {
            Ok((mut config, path)) => {
                config.access_log &= !no_access_log;
                let workers = config.workers;
                (
                    Launch::Balancer(Box::new(config), path, no_access_log),
                    workers,
                )
            }
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::FAILURE;
            }
        },
        other => (Launch::Other(other), 0),
    };
    let runtime = match alb::runtime::build(workers) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let proxy_protocol = &config.proxy_protocol;
            let trusted = if proxy_protocol.enabled {
                let nets: Vec<String> = proxy_protocol
                    .trusted
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                format!(", PROXY protocol required from {}", nets.join(", "))
            } else {
                String::new()
            };
            println!(
                "{}: OK: {} backend(s), {}, listening on {}{trusted}",
                path.display(),
                config.backends.len(),
                config.algorithm.name(),
                config.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// What `main` starts once the runtime is up.
enum Launch {
    /// The config, its file (re-read on reload), and whether `--no-access-log` was given.
    Balancer(Box<Config>, PathBuf, bool),
    Other(Command),
}

async fn run(launch: Launch) -> anyhow::Result<()> {
    // Registered before anything listens: a supervisor may send SIGTERM as soon as it sees the
    // listening line, and that must drain, not kill.
    let shutdown = shutdown_signal()?;
    let command = match launch {
        Launch::Balancer(config, path, no_access_log) => {
            let server = Server::bind(*config).await?.with_source(path);
            let proxy = server.proxy().clone();
            if no_access_log {
                proxy.force_access_log_off();
            }
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot watch SIGHUP")?;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("received SIGHUP: reloading the configuration");
                    // A refused reload is logged by `reload` itself; the old config keeps serving.
                    let _ = proxy.reload();
                }
            });
            server.run(shutdown).await?;
            return Ok(());
        }
        Launch::Other(command) => command,
    };
    match command {
        Command::Run { .. } => unreachable!("launched as Launch::Balancer"),
        Command::Demo { listen } => demo(listen, shutdown).await?,
        Command::Backend {
            port,
            name,
            delay_ms,
            body_bytes,
            host,
        } => {
            let addr = SocketAddr::new(host, port);
            let name = name.unwrap_or_else(host_name);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(
                "demo backend {name} listening on {}",
                listener.local_addr()?
            );
            let delay = Duration::from_millis(delay_ms);
            DemoBackend {
                name,
                delay,
                body_bytes,
            }
            .serve(listener, shutdown)
            .await;
        }
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

async fn demo(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (stop_backends, stopped) = tokio::sync::watch::channel(false);
    let mut urls = Vec::new();
    let mut tasks = Vec::new();
    for (i, addr) in backend_addrs(listen, 2).into_iter().enumerate() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for a demo backend"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let backend = DemoBackend {
            name: format!("demo-{}", i + 1),
            ..DemoBackend::default()
        };
        println!("  backend {} at {url}", backend.name);
        urls.push(url);
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(backend.serve(listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    let server = Server::bind(Config::with_backends(listen, &urls)?).await?;
    let addr = server.local_addr();
    println!("alb demo: balancer on http://{addr} (least_conn over the backends above)");
    println!("try: curl -i http://{addr}/");
    println!("dashboard: http://127.0.0.1:9090/ (metrics at /metrics, API at /api/backends)");
    println!("stop with Ctrl-C");
    server.run(shutdown).await?;
    let _ = stop_backends.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// This machine's (or container's) host name, read where Linux keeps it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "backend".to_string())
}

/// A future completing on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed here, before the
/// future is first polled.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    })
}
