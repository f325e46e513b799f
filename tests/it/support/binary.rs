//! A program run by a test (the real `alb` binary, or a peer such as HAProxy): its stderr lines
//! collected as they come (and those of any process it starts that inherits them), killed when
//! dropped, and what it printed shown when the test fails.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::wait_until;

pub struct LoggedProcess {
    pub child: Child,
    pub pid: u32,
    name: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LoggedProcess {
    /// Starts `alb run --config config` with the access log off.
    pub fn alb(config: &Path) -> LoggedProcess {
        let config = config.to_str().expect("utf-8 path");
        LoggedProcess::spawn(
            "alb",
            Path::new(env!("CARGO_BIN_EXE_alb")),
            &["run", "--config", config],
            "info,alb::access=off",
        )
    }

    /// Starts `program args` with `RUST_LOG=rust_log`, stdout discarded.
    pub fn spawn(name: &str, program: &Path, args: &[&str], rust_log: &str) -> LoggedProcess {
        LoggedProcess::start(name, program, args, rust_log, false)
    }

    /// The same, with what it prints on stdout collected among the lines too (`alb demo` prints
    /// its addresses there).
    pub fn spawn_with_stdout(
        name: &str,
        program: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> LoggedProcess {
        LoggedProcess::start(name, program, args, rust_log, true)
    }

    fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        rust_log: &str,
        stdout: bool,
    ) -> LoggedProcess {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id().expect("a pid");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().expect("piped stderr"), &lines);
        if let Some(out) = child.stdout.take() {
            collect(out, &lines);
        }
        LoggedProcess {
            child,
            pid,
            name: name.to_string(),
            lines,
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines_where(|l| l.contains(needle))
    }

    fn lines_where(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| wanted(l)).cloned().collect()
    }

    /// Waits (at most `within`) for the n-th line containing `needle` (n from 1); returns it.
    pub async fn wait_line(&self, needle: &str, n: usize, within: Duration) -> String {
        self.wait_where(|l| l.contains(needle), n, within).await
    }

    /// Waits (at most `within`) for the n-th line for which `wanted` holds; returns it.
    pub async fn wait_where(
        &self,
        wanted: impl Fn(&str) -> bool,
        n: usize,
        within: Duration,
    ) -> String {
        wait_until(within, || self.lines_where(&wanted).len() >= n)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no line {n} as expected from {} within {within:?}:\n{}",
                    self.name,
                    self.log()
                )
            });
        self.lines_where(&wanted).swap_remove(n - 1)
    }

    /// Panics, with what it printed, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Kills the process and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
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
            Ok(status) => status.expect("wait for the process"),
            Err(_) => panic!(
                "{} did not exit within {within:?}:\n{}",
                self.name,
                self.log()
            ),
        }
    }
}

/// Appends each line `output` prints to `lines`, as it comes.
fn collect(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    lines: &Arc<Mutex<Vec<String>>>,
) {
    let mut reader = BufReader::new(output).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- stderr of {} ---\n{}", self.name, self.log());
        }
    }
}

/// The process an upgrade started: not a child of the test, so stopped by pid.
pub struct Replacement(pub u32);

impl Replacement {
    pub fn running(&self) -> bool {
        // Reparented to whatever reaps orphans here, it may linger as a zombie: that is gone.
        std::fs::read_to_string(format!("/proc/{}/stat", self.0)).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z')
        })
    }

    /// SIGTERM, then waits (up to 40 s: it drains first) until it is gone.
    pub async fn stop(&self) {
        LoggedProcess::signal(self.0, "-TERM");
        wait_until(Duration::from_secs(40), || !self.running())
            .await
            .expect("the new alb exits on SIGTERM");
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if self.running() {
            LoggedProcess::signal(self.0, "-KILL");
        }
    }
}
