//! A real `redis-server` (Debian's package) for a test: its own process on a free loopback port,
//! nothing saved to disk, stopped when dropped. It can be killed and started again on the same
//! port (the port stays reserved for the test meanwhile).

use std::path::PathBuf;
use std::time::Duration;

use super::ReservedPort;
use super::binary::LoggedProcess;
use super::prerequisite;

pub struct RedisServer {
    program: PathBuf,
    port: ReservedPort,
    process: Option<LoggedProcess>,
}

impl RedisServer {
    /// Starts one for `test`; None (after `prerequisite::missing` said why) when the machine has
    /// no redis-server: under CI that fails the test.
    pub async fn start(test: &str) -> Option<RedisServer> {
        let program = prerequisite::program(
            test,
            &["redis-server", "/usr/bin/redis-server"],
            "redis-server is not installed (apt-get install redis-server)",
        )?;
        let mut server = RedisServer {
            program,
            port: ReservedPort::new(),
            process: None,
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port.port())
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let port = self.port.port().to_string();
        let process = LoggedProcess::spawn_with_stdout(
            "redis-server",
            &self.program,
            &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
                "--loglevel",
                "notice",
            ],
            "",
        );
        process
            .wait_line("Ready to accept connections", 1, Duration::from_secs(10))
            .await;
        self.process = Some(process);
    }

    /// Kills the server (SIGKILL: a crash, no goodbye to its clients) and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }
}
