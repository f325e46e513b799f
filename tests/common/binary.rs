//! The real `alb` binary run by a test: `alb run --config FILE`, its stderr lines collected as they
//! come (and those of any process it starts that inherits them), killed when dropped.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::wait_until;

pub struct AlbProcess {
    pub child: Child,
    pub pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
}

impl AlbProcess {
    /// Starts `alb run --config config` with the access log off.
    pub fn run(config: &Path) -> AlbProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_alb"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,alb::access=off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start alb");
        let pid = child.id().expect("a pid");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut reader = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        AlbProcess { child, pid, lines }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits (at most `within`) for the n-th line containing `needle` (n from 1); returns it.
    pub async fn wait_line(&self, needle: &str, n: usize, within: Duration) -> String {
        wait_until(within, || self.lines_with(needle).len() >= n)
            .await
            .unwrap_or_else(|_| panic!("no line {n} with {needle:?}:\n{}", self.log()));
        self.lines_with(needle).swap_remove(n - 1)
    }

    /// Sends a signal (`-HUP`, `-TERM`, ...) to `pid`.
    pub fn signal(pid: u32, name: &str) {
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} {pid}");
    }

    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for alb"),
            Err(_) => panic!("alb did not exit within {within:?}:\n{}", self.log()),
        }
    }
}
