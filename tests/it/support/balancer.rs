//! alb in-process on 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use alb::{Config, Server};

use super::{TestBackend, wait_until};

/// A balancer running in-process on 127.0.0.1 port 0.
pub struct TestBalancer {
    pub addr: SocketAddr,
    /// The `[tls]` listener's address, when configured.
    pub tls_addr: Option<SocketAddr>,
    pub proxy: Arc<alb::proxy::Proxy>,
    /// What changes its configuration: reload, runtime changes.
    pub control: Arc<alb::control::ControlPlane>,
    admin: Arc<std::sync::OnceLock<SocketAddr>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBalancer {
    /// Starts a balancer from config text; `listen` is set to port 0 unless given.
    pub async fn start(toml: &str) -> TestBalancer {
        let mut toml = if toml.starts_with("listen") {
            toml.to_string()
        } else {
            format!("listen = \"127.0.0.1:0\"\n{toml}")
        };
        if !toml.contains("[admin]") {
            // Tests run side by side: no shared default admin port.
            toml.push_str("\n[admin]\nlisten = \"off\"\n");
        }
        let config = Config::from_toml(&toml, "test.toml").expect("valid test config");
        TestBalancer::start_config(config).await
    }

    pub async fn start_config(config: Config) -> TestBalancer {
        TestBalancer::start_server(config, None).await
    }

    /// Starts a balancer from a config file, which a reload re-reads.
    pub async fn start_file(path: &std::path::Path) -> TestBalancer {
        let config = Config::load(path).expect("valid test config file");
        TestBalancer::start_server(config, Some(path.to_path_buf())).await
    }

    async fn start_server(config: Config, source: Option<std::path::PathBuf>) -> TestBalancer {
        init_logs();
        let listener = TcpListener::bind(config.listen)
            .await
            .expect("bind balancer");
        let mut server = Server::from_listener(listener, config).expect("server");
        if let Some(path) = source {
            server = server.with_source(path);
        }
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let proxy = server.proxy().clone();
        let control = server.control().clone();
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server run");
        });
        TestBalancer {
            addr,
            tls_addr,
            proxy,
            control,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin listener's URL for `path`, once it is listening (config `[admin] listen`).
    pub async fn admin_url(&self, path: &str) -> String {
        wait_until(Duration::from_secs(5), || self.admin.get().is_some())
            .await
            .expect("admin listener started");
        format!("http://{}{}", self.admin.get().unwrap(), path)
    }

    /// Graceful stop; waits until the server has drained and returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// Waits until the balancer's view of `backend` is `healthy`, or panics after `within`.
    pub async fn wait_health(&self, backend: &SocketAddr, healthy: bool, within: Duration) {
        let url = format!("http://{backend}");
        let found = self
            .proxy
            .backends()
            .iter()
            .find(|b| b.url() == url)
            .unwrap_or_else(|| panic!("{url} is not a backend"))
            .clone();
        wait_until(within, || found.is_healthy() == healthy)
            .await
            .unwrap_or_else(|_| panic!("{url} did not become healthy={healthy} within {within:?}"));
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Config lines listing `backends` (the `backends = [...]` form).
pub fn backends_line(backends: &[&TestBackend]) -> String {
    let urls: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    format!("backends = [{}]\n", urls.join(", "))
}

/// alb's log lines (at info, without the access log's line per request; `RUST_LOG` overrides)
/// go to the output of the test whose balancer wrote them, shown when it fails. The subscriber is
/// the process's, so it is set once, by the first balancer started.
fn init_logs() {
    static LOGS: std::sync::Once = std::sync::Once::new();
    LOGS.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("alb=info,alb::access=off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
