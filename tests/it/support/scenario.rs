//! The one way a test sets up backends and a balancer in front of them:
//!
//! ```ignore
//! let s = Scenario::new().backends(["a", "b"]).algorithm("round_robin").quiet_health().start().await;
//! let (status, _, _) = get(&client(), &s.url("/")).await;
//! ```
//!
//! `start` brings up the named test backends on port 0, then alb in-process on port 0 with a
//! config listing them (and any backend URL served by something else: a recorder, a gRPC or
//! WebSocket server), followed by the scenario's own config text. The running scenario stops the
//! balancer first and the backends after it, when dropped or when `stop` is awaited.

use super::{TestBackend, TestBalancer};

/// Backends, a config and a balancer, not yet started.
#[derive(Default)]
pub struct Scenario {
    names: Vec<String>,
    urls: Vec<String>,
    weights: Vec<u32>,
    algorithm: Option<String>,
    config: String,
    quiet_health: bool,
    admin_token: Option<String>,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// Test backends with these names (each answers with its name in `x-backend`).
    pub fn backends<I, S>(mut self, names: I) -> Scenario
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.names.extend(names.into_iter().map(Into::into));
        self
    }

    /// One test backend with this name.
    pub fn backend(self, name: &str) -> Scenario {
        self.backends([name])
    }

    /// A backend that something other than a test backend serves (listed after the named ones).
    pub fn backend_url(mut self, url: impl Into<String>) -> Scenario {
        self.urls.push(url.into());
        self
    }

    /// Backends that something other than a test backend serves.
    pub fn backend_urls<I, S>(mut self, urls: I) -> Scenario
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Weights of the named backends, in order (the config then lists them as `[[backend]]`
    /// tables).
    pub fn weights(mut self, weights: impl IntoIterator<Item = u32>) -> Scenario {
        self.weights.extend(weights);
        self
    }

    /// The default pool's algorithm.
    pub fn algorithm(mut self, name: &str) -> Scenario {
        self.algorithm = Some(name.to_string());
        self
    }

    /// Config text placed after the backends and the algorithm: top-level keys first, then any
    /// tables. Calls add up in order.
    pub fn config(mut self, toml: &str) -> Scenario {
        self.config.push_str(toml);
        if !toml.ends_with('\n') {
            self.config.push('\n');
        }
        self
    }

    /// Health checks once a minute: backends stay up unless the test itself takes them down.
    pub fn quiet_health(mut self) -> Scenario {
        self.quiet_health = true;
        self
    }

    /// The admin listener on port 0 with this bearer token.
    pub fn admin(mut self, token: &str) -> Scenario {
        self.admin_token = Some(token.to_string());
        self
    }

    /// The config text alb is started with, for `backends`.
    fn toml(&self, backends: &[TestBackend]) -> String {
        let urls: Vec<String> = backends
            .iter()
            .map(TestBackend::url)
            .chain(self.urls.iter().cloned())
            .collect();
        let mut toml = String::new();
        if self.weights.is_empty() {
            let quoted: Vec<String> = urls.iter().map(|url| format!("\"{url}\"")).collect();
            toml.push_str(&format!("backends = [{}]\n", quoted.join(", ")));
        }
        if let Some(algorithm) = &self.algorithm {
            toml.push_str(&format!("algorithm = \"{algorithm}\"\n"));
        }
        toml.push_str(&self.config);
        if self.quiet_health {
            assert!(
                !self.config.contains("[health_check]"),
                "the config has its own [health_check]: set its interval there"
            );
            toml.push_str("[health_check]\ninterval = \"60s\"\n");
        }
        if !self.weights.is_empty() {
            for (i, url) in urls.iter().enumerate() {
                let weight = self.weights.get(i).copied().unwrap_or(1);
                toml.push_str(&format!(
                    "[[backend]]\nurl = \"{url}\"\nweight = {weight}\n"
                ));
            }
        }
        if let Some(token) = &self.admin_token {
            toml.push_str(&format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"
            ));
        }
        toml
    }

    pub async fn start(self) -> Running {
        let mut backends = Vec::with_capacity(self.names.len());
        for name in &self.names {
            backends.push(TestBackend::start(name).await);
        }
        let lb = TestBalancer::start(&self.toml(&backends)).await;
        Running { lb, backends }
    }
}

/// A started scenario. Fields drop in order: the balancer, then the backends.
pub struct Running {
    pub lb: TestBalancer,
    pub backends: Vec<TestBackend>,
}

impl Running {
    /// The backend of this name.
    pub fn backend(&self, name: &str) -> &TestBackend {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .unwrap_or_else(|| panic!("no backend named {name}"))
    }

    /// The balancer's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        self.lb.url(path)
    }

    /// Stops the balancer gracefully (it drains), then the backends.
    pub async fn stop(self) {
        self.lb.stop().await;
        for backend in self.backends {
            backend.stop().await;
        }
    }
}
