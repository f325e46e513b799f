//! The real `alb` binary: `check`, `run` and `demo`, driven as an operator would, with loopback
//! backends from `support` (or the demo's own) behind it.
//!
//! check.rs: `alb check` and bad files; run.rs: `run` and `demo`, signals, health in the log;
//! logs_and_memory.rs: streaming memory, JSON logs, the access log.
//!
//! Every child process is held by an [`Alb`] guard that SIGKILLs it on drop, so a failing test never
//! leaves a balancer behind; the normal path stops it with SIGTERM and checks the exit status.
//! Synchronisation is on events: lines the child prints (read with a deadline), counters of the
//! test backends, exit of the process.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::support::*;

mod check;
mod json;
mod logs_and_memory;
mod run;

const ALB: &str = env!("CARGO_BIN_EXE_alb");
/// Longest wait for anything a test expects to happen (a line, an exit); far above the usual.
const PATIENCE: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------------------
// Harness: the child process guard (the JSON checker is json.rs, temp dirs are in support)
// ---------------------------------------------------------------------------------------------

/// A running `alb` child. Its stderr is read line by line by a task into a channel; every line
/// read so far is kept in `log` (and printed if the test fails). Dropping the guard SIGKILLs the
/// process if it still runs.
struct Alb {
    child: Child,
    pid: u32,
    lines: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
    stdout: Option<ChildStdout>,
}

impl Alb {
    fn spawn(args: &[&str]) -> Alb {
        let mut child = Command::new(ALB)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn alb");
        let pid = child.id().expect("child pid");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout = child.stdout.take();
        Alb {
            child,
            pid,
            lines,
            log: Vec::new(),
            stdout,
        }
    }

    /// `alb [global args] run --config <path>`, waiting for its `alb listening on ADDR` line.
    async fn run(global: &[&str], config: &Path) -> (Alb, SocketAddr) {
        let mut args = global.to_vec();
        args.extend(["run", "--config", config.to_str().unwrap()]);
        let mut alb = Alb::spawn(&args);
        let line = alb.wait_line(|l| l.contains("alb listening on ")).await;
        let addr = address_after(&line, "alb listening on ");
        (alb, addr)
    }

    /// Reads stderr until a line satisfies `wanted`; panics at EOF or after [`PATIENCE`].
    async fn wait_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!("alb closed stderr before the expected line"),
                Err(_) => panic!("no expected line from alb within {PATIENCE:?}"),
            }
        }
    }

    /// Reads stderr to its end (the process closed it, normally by exiting).
    async fn read_to_eof(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.log.push(line),
                Ok(None) => return,
                Err(_) => panic!("alb did not close stderr within {PATIENCE:?}"),
            }
        }
    }

    /// Sends SIGTERM, as a service manager would.
    fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("alb (pid {}) did not exit within {PATIENCE:?}", self.pid))
            .expect("wait for alb")
    }

    /// SIGTERM, then the whole of stderr, then the exit status.
    async fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        self.read_to_eof().await;
        self.wait_exit().await
    }

    /// Peak resident set size of the process so far, in KiB (`VmHWM` in /proc/PID/status).
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM line");
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .expect("VmHWM value in kB")
    }

    fn count(&self, needle: &str) -> usize {
        self.log.iter().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Alb {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- stderr of alb (pid {}) ---", self.pid);
            for line in &self.log {
                eprintln!("{line}");
            }
        }
    }
}

/// The `IP:port` right after `prefix` in `line` (up to a space, quote or parenthesis).
fn address_after(line: &str, prefix: &str) -> SocketAddr {
    let start = line
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not in {line:?}"))
        + prefix.len();
    let rest = &line[start..];
    let end = rest.find([' ', '"', '(', ',']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
}

/// Runs `alb` to completion with a deadline; returns status, stdout, stderr.
async fn alb_output(args: &[&str]) -> (ExitStatus, String, String) {
    let output = tokio::time::timeout(
        PATIENCE,
        Command::new(ALB)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("alb exits")
    .expect("run alb");
    (
        output.status,
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}
