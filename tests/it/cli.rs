//! The real `alb` binary: `check`, `run` and `demo`, driven as an operator would, with loopback
//! backends from `tests/common` (or the demo's own) behind it.
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

const ALB: &str = env!("CARGO_BIN_EXE_alb");
/// Longest wait for anything a test expects to happen (a line, an exit); far above the usual.
const PATIENCE: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------------------
// Harness: the child process guard, a tiny JSON checker (temp dirs are in tests/common)
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

/// A minimal JSON reader, enough to tell that a log line is one well-formed object and to look at
/// its top-level fields.
mod json {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }
    }

    pub fn parse(text: &str) -> Result<Value, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let value = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at {}", p.i));
        }
        Ok(value)
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && b" \t\r\n".contains(&self.s[self.i]) {
                self.i += 1;
            }
        }

        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }

        fn expect(&mut self, c: u8) -> Result<(), String> {
            if self.peek() == Some(c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", c as char, self.i))
            }
        }

        fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(value)
            } else {
                Err(format!("bad literal at {}", self.i))
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            match self.peek().ok_or("unexpected end")? {
                b'{' => {
                    self.i += 1;
                    let mut fields = Vec::new();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Value::Object(fields));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.expect(b':')?;
                        fields.push((key, self.value()?));
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Object(fields));
                            }
                            _ => return Err(format!("expected , or }} at {}", self.i)),
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    let mut items = Vec::new();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value()?);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Array(items));
                            }
                            _ => return Err(format!("expected , or ] at {}", self.i)),
                        }
                    }
                }
                b'"' => self.string().map(Value::String),
                b't' => self.literal("true", Value::Bool(true)),
                b'f' => self.literal("false", Value::Bool(false)),
                b'n' => self.literal("null", Value::Null),
                _ => self.number(),
            }
        }

        fn number(&mut self) -> Result<Value, String> {
            let start = self.i;
            while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                self.i += 1;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
            text.parse()
                .map(Value::Number)
                .map_err(|_| format!("bad number {text:?} at {start}"))
        }

        fn string(&mut self) -> Result<String, String> {
            if self.s.get(self.i) != Some(&b'"') {
                return Err(format!("expected a string at {}", self.i));
            }
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let c = *self.s.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match c {
                    b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                    b'\\' => {
                        let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                        self.i += 1;
                        match e {
                            b'"' | b'\\' | b'/' => out.push(e),
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            b'r' => out.push(b'\r'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'u' => {
                                let hex =
                                    self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                                let code =
                                    u32::from_str_radix(std::str::from_utf8(hex).unwrap(), 16)
                                        .map_err(|e| e.to_string())?;
                                self.i += 4;
                                let c = char::from_u32(code).unwrap_or('\u{fffd}');
                                out.extend_from_slice(c.to_string().as_bytes());
                            }
                            _ => return Err(format!("bad escape at {}", self.i)),
                        }
                    }
                    c if c < 0x20 => {
                        return Err(format!("control character in a string at {}", self.i));
                    }
                    c => out.push(c),
                }
            }
        }
    }
}

const GOOD_CONFIG: &str = r#"
listen = "127.0.0.1:0"
algorithm = "round_robin"
backends = ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]

[health_check]
path = "/health"
interval = "2s"
"#;

/// Three problems: `algorithm`, `backends[0]`, `health_check.interval`; `listen` is fine.
const BAD_CONFIG: &str = r#"
listen = "127.0.0.1:0"
algorithm = "fastest"
backends = ["ftp://127.0.0.1:8081"]

[health_check]
interval = "5"
"#;
const BAD_KEYS: [&str; 3] = ["algorithm", "backends[0]", "health_check.interval"];

// ---------------------------------------------------------------------------------------------
// alb check / alb run on bad files
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn check_accepts_a_valid_config() {
    let dir = TempDir::new("check-ok");
    let path = dir.write("good.toml", GOOD_CONFIG);
    let (status, stdout, stderr) = alb_output(&["check", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "{}: OK: 2 backend(s), round_robin",
            path.display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.is_empty(),
        "nothing on stderr for a valid file: {stderr}"
    );
}

#[tokio::test]
async fn check_reports_every_problem_and_fails() {
    let dir = TempDir::new("check-bad");
    let path = dir.write("bad.toml", BAD_CONFIG);
    let (status, stdout, stderr) = alb_output(&["check", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    for key in BAD_KEYS {
        let named = stderr
            .lines()
            .any(|l| l.contains(&format!("{}: {key}: ", path.display())));
        assert!(named, "{key} not named on stderr:\n{stderr}");
    }
}

#[tokio::test]
async fn check_shows_the_proxy_protocol_sources_and_names_a_bad_one() {
    let dir = TempDir::new("check-pp");
    let section = "[proxy_protocol]\nenabled = true\n";
    let good = dir.write(
        "good.toml",
        &format!("{GOOD_CONFIG}{section}trusted = [\"10.0.0.0/8\", \"::1\"]\n"),
    );
    let (status, stdout, stderr) = alb_output(&["check", "--config", good.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains(", PROXY protocol required from 10.0.0.0/8, ::1/128"),
        "{stdout}"
    );
    let bad = dir.write(
        "bad.toml",
        &format!("{GOOD_CONFIG}{section}trusted = [\"10.0.0.1/8\"]\n"),
    );
    let (status, _, stderr) = alb_output(&["check", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: proxy_protocol.trusted[0]: \"10.0.0.1/8\": has bits set past the /8 prefix",
            bad.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_names_a_missing_file() {
    let dir = TempDir::new("check-missing");
    let path = dir.0.join("does-not-exist.toml");
    let (status, stdout, stderr) = alb_output(&["check", "--config", path.to_str().unwrap()]).await;
    assert!(!status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

#[tokio::test]
async fn run_refuses_to_start_on_a_bad_config() {
    let dir = TempDir::new("run-bad");
    let path = dir.write("bad.toml", BAD_CONFIG);
    let (status, stdout, stderr) = alb_output(&["run", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        !stderr.contains("alb listening"),
        "it must not listen:\n{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    for key in BAD_KEYS {
        assert!(
            stderr.contains(&format!("{}: {key}: ", path.display())),
            "{key} not named:\n{stderr}"
        );
    }

    let missing = dir.0.join("missing.toml");
    let (status, _, stderr) = alb_output(&["run", "--config", missing.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(!stderr.contains("alb listening"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// alb demo
// ---------------------------------------------------------------------------------------------

/// `curl -si URL`: status code, the x-backend header, the body.
async fn curl(url: &str) -> (u16, String, String) {
    let output = Command::new("/usr/bin/curl")
        .args(["-si", "--max-time", "5", url])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let backend = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("x-backend"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    (status, backend, body.to_string())
}

#[tokio::test]
async fn demo_balances_over_both_backends_and_exits_cleanly_on_sigterm() {
    let mut alb = Alb::spawn(&["demo", "--listen", "127.0.0.1:0"]);
    let mut stdout = BufReader::new(alb.stdout.take().unwrap()).lines();
    let mut backend_urls = Vec::new();
    let addr = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = stdout
                .next_line()
                .await
                .expect("read stdout")
                .expect("demo stdout ended early");
            if let Some(rest) = line.trim().strip_prefix("backend demo-") {
                backend_urls.push(rest.split_once(" at ").expect("backend line").1.to_string());
            }
            if line.contains("alb demo: balancer on http://") {
                return address_after(&line, "balancer on http://");
            }
        }
    })
    .await
    .expect("demo prints its address");
    assert_eq!(backend_urls.len(), 2, "two demo backends announced");
    assert_ne!(backend_urls[0], backend_urls[1]);
    assert!(
        !backend_urls
            .iter()
            .any(|u| u.ends_with(&format!(":{}", addr.port())))
    );

    let url = format!("http://{addr}/");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, backend, body) = curl(&url).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            backend == "demo-1" || backend == "demo-2",
            "x-backend: {backend:?}"
        );
        assert_eq!(body, format!("Hello from {backend}: GET /\n"));
        seen.push(backend);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["demo-1", "demo-2"],
        "two consecutive requests reach both demo backends"
    );

    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0), "demo exits 0 on SIGTERM");
    assert_eq!(alb.count("received SIGTERM"), 1);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_and_refuses_new_connections() {
    let backend = TestBackend::start("slow").await;
    backend.set_delay(Duration::from_millis(1500));
    let dir = TempDir::new("graceful");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&[], &config).await;

    let url = format!("http://{addr}/slow");
    let request = tokio::spawn(async move {
        let client = client();
        let started = Instant::now();
        let (status, headers, body) = get(&client, &url).await;
        (status, backend_of(&headers), body, started.elapsed())
    });
    wait_until(PATIENCE, || backend.hits() == 1)
        .await
        .expect("the request reaches the backend");

    alb.sigterm();
    alb.wait_line(|l| l.contains("shutting down")).await;
    match TcpStream::connect(addr).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted after shutdown began"),
    }

    let (status, from, body, took) = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the in-flight request completes")
        .expect("request task");
    assert_eq!(status, 200);
    assert_eq!(from, "slow");
    assert_eq!(&body[..], b"slow", "the full body arrives");
    assert!(
        took >= Duration::from_millis(1400),
        "it really waited for the slow backend: {took:?}"
    );

    let status = alb.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after a graceful shutdown"
    );
    alb.read_to_eof().await;
    assert_eq!(alb.count("drained: all connections closed"), 1);
    assert_eq!(alb.count("drain timeout passed"), 0);
    assert_eq!(backend.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// Health transitions in the log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_transitions_are_logged_once_each() {
    let steady = TestBackend::start("steady").await;
    let flaky = TestBackend::start("flaky").await;
    let dir = TempDir::new("health");
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}\n[health_check]\ninterval = \"200ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n",
            backends_line(&[&steady, &flaky])
        ),
    );
    let (mut alb, _) = Alb::run(&[], &config).await;
    let url = flaky.url();
    let down = format!("backend {url} is DOWN: ");
    let up = format!("backend {url} is UP again");

    let addr = flaky.stop().await;
    let down_line = alb.wait_line(|l| l.contains(&down)).await;

    // Keep it down for a few more probes, counted: a listener on its address that hangs up on
    // every connection, so each probe fails (differently) and must not log DOWN again.
    let probes = Arc::new(AtomicU64::new(0));
    let listener = listen_on(*addr).await;
    let counter = probes.clone();
    let hang_up = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    });
    let waited = wait_until(PATIENCE, || probes.load(Ordering::SeqCst) >= 3).await;
    hang_up.abort();
    let _ = hang_up.await; // the listener is closed once the task is gone
    waited.expect("three more failing probes");

    let flaky = TestBackend::start_on(*addr, "flaky").await;
    alb.wait_line(|l| l.contains(&up)).await;
    // Three more passing probes must not log UP again. Probes of one backend run one after the
    // other, so once the fourth has arrived the first three have been judged (and logged).
    wait_until(PATIENCE, || flaky.probes() >= 4)
        .await
        .expect("three more passing probes");

    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(alb.count(&down), 1, "one DOWN line for {url}");
    assert_eq!(alb.count(&up), 1, "one UP line for {url}");
    assert_eq!(
        alb.count(&format!("backend {} is", steady.url())),
        0,
        "the steady backend never changed"
    );

    // `backend http://127.0.0.1:PORT is DOWN: <reason>`, as a warning, with the reason also as a field.
    assert!(down_line.contains(" WARN "), "{down_line}");
    let reason = down_line.split_once(&down).unwrap().1;
    let reason = reason
        .split_once(" backend=")
        .map_or(reason, |(r, _)| r)
        .trim();
    assert!(!reason.is_empty(), "no reason in {down_line:?}");
    assert!(
        down_line.contains(&format!("reason={reason}")),
        "{down_line}"
    );
    let up_line = alb.log.iter().find(|l| l.contains(&up)).unwrap();
    assert!(up_line.contains(" INFO "), "{up_line}");
    drop(flaky);
}

// ---------------------------------------------------------------------------------------------
// Memory while streaming
// ---------------------------------------------------------------------------------------------

/// `len` bytes of `b'x'` in 64 KiB chunks, all sharing one buffer, with an exact size hint (so the
/// request has a Content-Length).
struct Generated {
    chunk: Bytes,
    left: u64,
}

impl Generated {
    fn new(len: u64) -> Generated {
        Generated {
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            left: len,
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Reads a response body to its end without keeping it; returns its length.
async fn discard(mut body: hyper::body::Incoming) -> u64 {
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("body frame").data_ref() {
            total += data.len() as u64;
        }
    }
    total
}

/// 256 MiB each way: over six times the RSS limit, so a proxy that buffered a body would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_large_bodies_each_way_keeps_memory_bounded() {
    const DOWNLOAD: u64 = 256 * 1024 * 1024;
    const UPLOAD: u64 = 256 * 1024 * 1024;
    const LIMIT_KIB: u64 = 40 * 1024;
    let backend = TestBackend::start("bulk").await;
    let dir = TempDir::new("memory");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&[], &config).await;
    let client = client();
    let baseline = alb.peak_rss_kib();

    let started = Instant::now();
    let request = Request::get(format!("http://{addr}/bytes/{DOWNLOAD}"))
        .body(full(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.expect("download through alb");
    assert_eq!(response.status(), 200);
    assert_eq!(
        discard(response.into_body()).await,
        DOWNLOAD,
        "downloaded length"
    );
    let download = started.elapsed();
    let after_download = alb.peak_rss_kib();

    let started = Instant::now();
    let request = Request::post(format!("http://{addr}/echo"))
        .body(Generated::new(UPLOAD).boxed())
        .unwrap();
    let response = client.request(request).await.expect("upload through alb");
    assert_eq!(response.status(), 200);
    assert_eq!(discard(response.into_body()).await, UPLOAD, "echoed length");
    let upload = started.elapsed();
    let after_upload = alb.peak_rss_kib();

    eprintln!(
        "alb peak RSS: {baseline} KiB at start, {after_download} KiB after the {} MiB download ({download:?}), \
         {after_upload} KiB after the {} MiB upload+echo ({upload:?})",
        DOWNLOAD >> 20,
        UPLOAD >> 20
    );
    assert!(
        after_download < LIMIT_KIB,
        "peak RSS {after_download} KiB after the download"
    );
    assert!(
        after_upload < LIMIT_KIB,
        "peak RSS {after_upload} KiB after the upload"
    );
    assert_eq!(backend.hits(), 2);

    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// JSON logs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let backend = TestBackend::start("one").await;
    let dir = TempDir::new("json");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&["--log-format", "json"], &config).await;

    let (status, _, _) = get(&client(), &format!("http://{addr}/hello")).await;
    assert_eq!(status, 200);
    let access = alb.wait_line(|l| l.contains("alb::access")).await;
    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));

    assert!(
        alb.log.len() >= 4,
        "listening, access, SIGTERM, shutdown lines: {:#?}",
        alb.log
    );
    for line in &alb.log {
        let value = json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(
            matches!(value, json::Value::Object(_)),
            "not an object: {line}"
        );
        for field in ["timestamp", "level", "message", "target"] {
            assert!(
                value.get(field).and_then(json::Value::as_str).is_some(),
                "no string {field:?} in {line}"
            );
        }
    }
    let listening = alb
        .log
        .iter()
        .find(|l| l.contains("alb listening on"))
        .unwrap();
    let listening = json::parse(listening).unwrap();
    assert_eq!(
        listening.get("message").and_then(|m| m.as_str()),
        Some(format!("alb listening on {addr}").as_str())
    );
    assert_eq!(
        listening.get("level").and_then(|m| m.as_str()),
        Some("INFO")
    );
    let access = json::parse(&access).unwrap();
    assert_eq!(
        access.get("message").and_then(|m| m.as_str()),
        Some("GET /hello 200")
    );
    assert_eq!(access.get("status"), Some(&json::Value::Number(200.0)));
    assert_eq!(
        access.get("backend").and_then(|m| m.as_str()),
        Some(backend.url().as_str())
    );
    assert_eq!(
        access.get("outcome").and_then(|m| m.as_str()),
        Some("complete")
    );
}

// ---------------------------------------------------------------------------------------------
// Start-up edges
// ---------------------------------------------------------------------------------------------

/// A supervisor may send SIGTERM as soon as it sees the readiness line: the signal handlers must
/// already be installed then, so alb drains and exits 0 instead of dying by the signal. Before the
/// fix this failed in about 40 % of tries; ten tries make a miss unlikely.
#[tokio::test]
async fn sigterm_right_after_the_listening_line_is_graceful() {
    let backend = TestBackend::start("one").await;
    let dir = TempDir::new("early-sigterm");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    for attempt in 1..=10 {
        let (mut alb, _) = Alb::run(&[], &config).await;
        let status = alb.stop().await;
        assert_eq!(status.code(), Some(0), "attempt {attempt}: {status}");
    }
}

/// With `--log-format json`, a start-up error is logged as JSON (src/main.rs:81) and then printed
/// again as plain text (src/main.rs:82), so stderr is no longer one JSON object per line (and in
/// text mode the whole problem list appears twice).
#[tokio::test]
async fn json_log_format_also_covers_start_up_errors() {
    let dir = TempDir::new("json-bad");
    let path = dir.write("bad.toml", BAD_CONFIG);
    let (status, _, stderr) = alb_output(&[
        "--log-format",
        "json",
        "run",
        "--config",
        path.to_str().unwrap(),
    ])
    .await;
    assert_eq!(status.code(), Some(1));
    for line in stderr.lines() {
        let value = json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(
            matches!(value, json::Value::Object(_)),
            "not an object: {line}"
        );
    }
}

#[tokio::test]
async fn check_lists_pools_refuses_a_shadowed_route_and_warns_of_an_unused_pool() {
    let dir = TempDir::new("check-routes");
    let good = dir.write(
        "routes.toml",
        "backends = [\"http://127.0.0.1:8081\"]\n\
         [pools.api]\nbackends = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"]\n\
         algorithm = \"p2c\"\n\
         [pools.spare]\nbackends = [\"http://127.0.0.1:9101\"]\n\
         [[route]]\nhost = \"api.example.com\"\npool = \"api\"\n",
    );
    let (status, stdout, stderr) = alb_output(&["check", "--config", good.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("OK: 4 backend(s) in 3 pools, 1 route(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("pool api: 2 backend(s), p2c"), "{stdout}");
    assert!(
        stdout.contains("warning: pools.spare: no route sends requests to this pool"),
        "{stdout}"
    );
    let bad = dir.write(
        "shadowed.toml",
        "backends = [\"http://127.0.0.1:8081\"]\n\
         [pools.api]\nbackends = [\"http://127.0.0.1:9001\"]\n\
         [[route]]\npath_prefix = \"/api\"\npool = \"api\"\n\
         [[route]]\npath_prefix = \"/api/v2/\"\nmethods = [\"GET\"]\npool = \"api\"\n\
         [[route]]\npool = \"nope\"\n",
    );
    let (status, _, stderr) = alb_output(&["check", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("route[1]: can never match: route[0] comes first"),
        "{stderr}"
    );
    assert!(
        stderr.contains("route[2].pool: no pool \"nope\" (there are: api, default)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_live_probes_every_backend_and_fails_when_a_pool_has_no_healthy_one() {
    let up = TestBackend::start("up").await;
    let failing = TestBackend::start("failing").await;
    failing.set_mode(Mode::Fail);
    let gone = TestBackend::start("gone").await.stop().await;
    let dir = TempDir::new("check-live");
    let good = dir.write(
        "good.toml",
        &format!(
            "backends = [\"{}\", \"{}\"]\n[health_check]\npath = \"/health\"\n",
            up.url(),
            failing.url()
        ),
    );
    let (status, stdout, stderr) =
        alb_output(&["check", "--live", "--config", good.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let row = |url: &str| row_of(&stdout, url);
    let ok = row(&up.url());
    assert_eq!(ok[0], "default");
    assert_eq!((ok[3].as_str(), ok[4].as_str()), ("yes", "yes"), "{ok:?}");
    assert_eq!(ok.last().unwrap(), "200", "{ok:?}");
    let bad = row(&failing.url());
    assert_eq!((bad[3].as_str(), bad[4].as_str()), ("yes", "no"), "{bad:?}");
    assert!(stdout.contains("answered with status 500"), "{stdout}");
    assert!(
        stdout.contains("every pool has a healthy backend"),
        "{stdout}"
    );
    assert_eq!(up.probes(), 1, "one probe each");

    let broken = dir.write(
        "broken.toml",
        &format!(
            "backends = [\"{}\"]\n[pools.dead]\nbackends = [\"http://{gone}\"]\n\
             [[route]]\nhost = \"dead.example\"\npool = \"dead\"\n",
            up.url()
        ),
    );
    let (status, stdout, stderr) =
        alb_output(&["check", "--live", "--config", broken.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let dead = row_of(&stdout, &format!("http://{gone}"));
    assert_eq!(
        (dead[0].as_str(), dead[3].as_str()),
        ("dead", "no"),
        "{dead:?}"
    );
    assert!(stderr.contains("pool dead: no healthy backend"), "{stderr}");
    up.stop().await;
    failing.stop().await;
}

fn row_of(stdout: &str, url: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|l| l.contains(url))
        .unwrap_or_else(|| panic!("no row for {url}:\n{stdout}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The access log is written by a thread of its own, fed by every connection: what was logged
/// must still all be there when alb has exited on SIGTERM right after its last answer. Eight
/// clients at once send GETs and POSTs, some answered 404: the logged (method, path, status)
/// are exactly those sent and answered, and each client's requests are logged in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_in_order_by_exit() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250;
    let backend = TestBackend::start("one").await;
    let dir = TempDir::new("access-order");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&[], &config).await;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            tokio::spawn(async move {
                let c = client();
                let mut sent = Vec::with_capacity(PER_CLIENT);
                for i in 0..PER_CLIENT {
                    let (method, path) = match i % 4 {
                        3 => ("GET", "/status/404".to_string()),
                        1 => ("POST", format!("/seq/{k}/{i}")),
                        _ => ("GET", format!("/seq/{k}/{i}")),
                    };
                    let request = Request::builder()
                        .method(method)
                        .uri(format!("http://{addr}{path}"))
                        .body(full(Bytes::new()))
                        .unwrap();
                    let (status, _, _) = send(&c, request).await;
                    sent.push((method.to_string(), path, status.as_u16()));
                }
                sent
            })
        })
        .collect();
    let mut sent = Vec::new();
    for client in clients {
        sent.extend(client.await.unwrap());
    }
    assert!(sent.iter().any(|(_, _, s)| *s == 404) && sent.iter().any(|(_, _, s)| *s == 200));
    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));
    let field = |line: &str, name: &str| -> String {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    let logged: Vec<(String, String, u16)> = alb
        .log
        .iter()
        .filter(|l| l.contains("alb::access"))
        .map(|l| {
            let status = field(l, "status").parse().expect("a status");
            (field(l, "method"), field(l, "path"), status)
        })
        .collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    let mut logged_sorted = logged.clone();
    logged_sorted.sort();
    assert_eq!(
        logged_sorted.len(),
        CLIENTS * PER_CLIENT,
        "access lines lost or added"
    );
    assert!(
        logged_sorted == sent_sorted,
        "the access log differs from what was sent and answered"
    );
    for k in 0..CLIENTS {
        let prefix = format!("/seq/{k}/");
        let order: Vec<usize> = logged
            .iter()
            .filter_map(|(_, path, _)| path.strip_prefix(&prefix)?.parse().ok())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "client {k}'s access lines out of order"
        );
    }
}
