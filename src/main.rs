//! The `alb` command line: parse arguments, load the config, run.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use alb::app::handover::SOCKET_ENV;
use alb::app::{Inherited, Program, upgrade};
use alb::config::EXPIRY_WARNING_DAYS;
use alb::demo::{DemoBackend, DemoBackends, backend_addrs};
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
    /// Ask a running alb to upgrade (the same as `kill -USR2 PID`): it starts its binary anew,
    /// hands over its listeners and drains. With `--wait`, exit 0 once the old process is gone
    /// (the new one serves), 1 if it still runs by then (the upgrade failed: see its log).
    Upgrade {
        #[arg(long)]
        pid: i32,
        /// How long to wait for the old process to exit, e.g. "60s"; 0 does not wait.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Validate a config file: exit 0 if it is valid, else print every problem and exit 1.
    Check {
        #[arg(long, short, default_value = "alb.toml")]
        config: PathBuf,
        /// Then resolve every backend name, probe each address with its pool's health check and
        /// print what was found; exit 1 if a pool would have no healthy backend.
        #[arg(long)]
        live: bool,
    },
    /// Run the balancer with two built-in demo backends, whose faults the admin listener turns
    /// (`POST /api/demo/backends/1/kill`, `/revive`, `/latency?ms=200`, `/errors?rate=0.3`).
    Demo {
        /// The balancer's address; the backends take the next two ports (ephemeral ones for 0).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The admin listener's address (dashboard, API, demo knobs); 127.0.0.1:9090 by default.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Run one demo backend: answers every path with a short text naming itself.
    Backend {
        #[arg(long)]
        port: u16,
        /// Its name in answers; by default the host's name (a container's id under Docker).
        #[arg(long)]
        name: Option<String>,
        /// Wait this long before answering each request (`--delay-ms` is the old name).
        #[arg(long, alias = "delay-ms", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=alb::demo::MAX_LATENCY_MS))]
        latency_ms: u64,
        /// Add a uniform draw in -N..=N ms to each request's latency (not below zero).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=alb::demo::MAX_LATENCY_MS))]
        latency_jitter_ms: u64,
        /// Answer this share of requests (0 to 1) with 500.
        #[arg(long, default_value_t = 0.0, value_parser = error_rate)]
        error_rate: f64,
        /// Answer with this many bytes instead of the greeting (for benchmarks).
        #[arg(long)]
        body_bytes: Option<usize>,
        /// Address to bind (0.0.0.0 inside a container).
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
    },
}

fn main() -> ExitCode {
    // Read before anything else: a binary replaced on disk later is what an upgrade starts.
    let program = Program::current();
    let cli = Cli::parse();
    match &cli.command {
        Command::Check { config, live } => return check(config, *live),
        Command::Upgrade { pid, wait } => return request_upgrade(*pid, *wait),
        _ => {}
    }
    let _log = telemetry::init(cli.log_format);
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
                    Launch::Balancer(Box::new(config), path, no_access_log, program),
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

fn check(path: &std::path::Path, live: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) if live => {
            print_check(path, &config);
            check_live(&config)
        }
        Ok(config) => {
            print_check(path, &config);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `alb check --live`: one line per backend address, then the verdict.
fn check_live(config: &Config) -> ExitCode {
    let runtime = match alb::runtime::build(1) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = runtime.block_on(alb::control::live_check(config));
    println!(
        "{:<12} {:<28} {:<28} {:<9} {:<8} {:>10}  detail",
        "pool", "backend", "found as", "reachable", "healthy", "latency"
    );
    for r in &results {
        let tls = r
            .tls_name
            .as_ref()
            .map_or(String::new(), |name| format!(" (TLS, verified as {name})"));
        println!(
            "{:<12} {:<28} {:<28} {:<9} {:<8} {:>8.1}ms  {}{tls}",
            r.pool,
            r.url,
            r.dns_name.as_deref().unwrap_or("-"),
            if r.reachable { "yes" } else { "no" },
            if r.healthy { "yes" } else { "no" },
            r.latency.as_secs_f64() * 1000.0,
            r.detail
        );
    }
    let empty = alb::control::pools_without_healthy(config, &results);
    if empty.is_empty() {
        println!("every pool has a healthy backend");
        ExitCode::SUCCESS
    } else {
        for pool in &empty {
            eprintln!("pool {pool}: no healthy backend: its requests would get 503");
        }
        ExitCode::FAILURE
    }
}

/// What `alb check` prints of a valid config.
fn print_check(path: &std::path::Path, config: &Config) {
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
    let pools = config.all_pools();
    let backends: usize = pools.iter().map(|p| p.backends.len()).sum();
    let shape = if pools.len() == 1 && config.routes.is_empty() {
        format!("{backends} backend(s), {}", pools[0].algorithm.name())
    } else {
        format!(
            "{backends} backend(s) in {} pools, {} route(s)",
            pools.len(),
            config.routes.len()
        )
    };
    println!(
        "{}: OK: {shape}, listening on {}{trusted}",
        path.display(),
        config.listen
    );
    for pool in pools.iter().filter(|_| pools.len() > 1) {
        println!(
            "  pool {}: {} backend(s), {}",
            pool.name,
            pool.backends.len(),
            pool.algorithm.name()
        );
    }
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    if let Some(tls) = &config.tls {
        print_tls(tls);
    }
}

/// What `alb check` says of `[tls]`: each certificate with its names and expiry, and a warning
/// for one that expires within [`EXPIRY_WARNING_DAYS`] (an expired one failed the check above).
fn print_tls(tls: &alb::config::TlsConfig) {
    println!(
        "TLS on {}{}",
        tls.listen,
        if tls.redirect_http {
            ", plain HTTP redirected to https"
        } else {
            ""
        }
    );
    for cert in tls.certificates.certificates() {
        let names = if cert.names.is_empty() {
            "(no DNS names: only for clients without SNI)".to_string()
        } else {
            cert.names.join(", ")
        };
        let days = cert.days_left();
        println!(
            "  {}: {} (key {}): {}; subject {}; expires {} ({days} days)",
            cert.key,
            cert.cert_file.display(),
            cert.key_file.display(),
            names,
            cert.subject,
            alb::config::date(cert.not_after),
        );
        if let Some(auth) = &cert.client_auth {
            println!(
                "    client certificates {} (CA {})",
                auth.policy.mode.name(),
                auth.policy.ca_file.display()
            );
        }
        if days < EXPIRY_WARNING_DAYS {
            println!(
                "  warning: {}: {}: expires in {days} days",
                cert.key,
                cert.cert_file.display()
            );
        }
    }
}

/// `alb upgrade --pid N`: SIGUSR2, then optionally wait for the old process to go.
fn request_upgrade(pid: i32, wait: Duration) -> ExitCode {
    if let Err(e) = upgrade::request(pid) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    if wait.is_zero() {
        println!("asked pid {pid} to upgrade");
        return ExitCode::SUCCESS;
    }
    let deadline = std::time::Instant::now() + wait;
    while upgrade::is_running(pid) {
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "pid {pid} still runs after {wait:?}: the upgrade failed or is still draining"
            );
            return ExitCode::FAILURE;
        }
        // Not a child of this process: there is no exit to wait on, only to look for.
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("pid {pid} has exited: the new process serves");
    ExitCode::SUCCESS
}

/// What `main` starts once the runtime is up.
enum Launch {
    /// The config, its file (re-read on reload), whether `--no-access-log` was given, and this
    /// binary (for an upgrade).
    Balancer(Box<Config>, PathBuf, bool, std::io::Result<Program>),
    Other(Command),
}

async fn run(launch: Launch) -> anyhow::Result<()> {
    // Registered before anything listens: a supervisor may send SIGTERM as soon as it sees the
    // listening line, and that must drain, not kill.
    let shutdown = shutdown_signal()?;
    let command = match launch {
        Launch::Balancer(config, path, no_access_log, program) => {
            for warning in &config.warnings {
                tracing::warn!("{}: {warning}", path.display());
            }
            // Started by an upgrade: take the old process's listeners instead of binding.
            let server = match std::env::var_os(SOCKET_ENV) {
                Some(socket) => {
                    let inherited = Inherited::receive(std::path::Path::new(&socket))
                        .await
                        .context("upgrade: cannot take over the listeners")?;
                    Server::from_inherited(*config, inherited).await?
                }
                None => Server::bind(*config).await?,
            }
            .with_source(path);
            watch_upgrade(&server, program)?;
            let control = server.control().clone();
            if no_access_log {
                control.force_access_log_off();
            }
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot watch SIGHUP")?;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("received SIGHUP: reloading the configuration");
                    // A refused reload is logged by `reload` itself; the old config keeps serving.
                    let _ = control.reload();
                }
            });
            server.run(shutdown).await?;
            return Ok(());
        }
        Launch::Other(command) => command,
    };
    match command {
        Command::Run { .. } => unreachable!("launched as Launch::Balancer"),
        Command::Demo { listen, admin } => demo(listen, admin, shutdown).await?,
        Command::Backend {
            port,
            name,
            latency_ms,
            latency_jitter_ms,
            error_rate,
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
            DemoBackend {
                name,
                latency: Duration::from_millis(latency_ms),
                jitter: Duration::from_millis(latency_jitter_ms),
                error_rate,
                body_bytes,
            }
            .serve(listener, shutdown)
            .await;
        }
        Command::Check { .. } | Command::Upgrade { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(())
}

/// `--error-rate`: a number from 0 to 1.
fn error_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

async fn demo(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_backends, stopped) = tokio::sync::watch::channel(false);
    let mut urls = Vec::new();
    let mut tasks = Vec::new();
    let mut handles = DemoBackends::default();
    for (i, addr) in backend_addrs(listen, 2).into_iter().enumerate() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for a demo backend"))?;
        let bound = listener.local_addr()?;
        let url = format!("http://{bound}");
        let backend = DemoBackend {
            name: format!("demo-{}", i + 1),
            ..DemoBackend::default()
        };
        println!("  backend {} at {url}", backend.name);
        urls.push(url);
        let knobs = backend.knobs();
        handles.push(backend.name.clone(), bound, knobs.clone());
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(backend.serve_with(
            listener,
            knobs,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }
    let mut config = Config::with_backends(listen, &urls)?;
    // Checked every second, so that a kill or a revive shows within about two.
    config.health_check.interval = Duration::from_secs(1);
    config.health_check.timeout = Duration::from_secs(1);
    if let Some(admin) = admin {
        config.admin.listen = Some(admin);
        config.admin.explicit = true;
    }
    let admin = config.admin.listen;
    let server = Server::bind(config).await?.with_demo(Arc::new(handles));
    let addr = server.local_addr();
    println!("alb demo: balancer on http://{addr} (least_conn over the backends above)");
    println!("try: curl -i http://{addr}/");
    match admin {
        Some(admin) if admin.port() != 0 => {
            println!("dashboard: http://{admin}/ (metrics at /metrics, API at /api/backends)");
            println!("break things: curl -X POST http://{admin}/api/demo/backends/1/kill");
            println!("  then .../1/revive, .../1/latency?ms=200, .../1/errors?rate=0.3;");
            println!("  every knob: curl http://{admin}/api/demo/backends");
        }
        // An ephemeral port is known once `run` binds it: its `admin listening on` line says it.
        _ => {
            println!("dashboard, API and demo knobs (/api/demo/backends): see `admin listening on`")
        }
    }
    println!("stop with Ctrl-C");
    server.run(shutdown).await?;
    let _ = stop_backends.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// SIGUSR2 starts a binary upgrade; a failed one is logged and this process keeps serving.
fn watch_upgrade(server: &Server, program: std::io::Result<Program>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?;
    let upgrade = server.upgrade();
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            tracing::info!("received SIGUSR2: upgrading");
            let program = match &program {
                Ok(program) => program,
                Err(e) => {
                    tracing::error!(
                        "upgrade refused: this binary's path was not known at start: {e}"
                    );
                    continue;
                }
            };
            match upgrade.start(program).await {
                Ok(pid) => {
                    tracing::info!("upgrade: pid {pid} serves; this process drains and exits")
                }
                Err(e) => tracing::error!("upgrade failed: {e}"),
            }
        }
    });
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
