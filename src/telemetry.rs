//! Log output: human-readable text or one JSON object per line, filtered by `RUST_LOG`
//! (default `info`). Access-log lines use the target `alb::access`.
//!
//! **No request waits on a log write, and no log line wakes a thread.** Lines are formatted
//! where they happen and appended, under a lock held for a copy, to one shared buffer; a writer
//! thread of its own takes the buffer every [`WRITE_EVERY`] and writes it to stderr in one
//! system call. A busy balancer thus makes one write per many lines, and a line costs its
//! formatting and a copy: handing each line to a sleeping writer (a channel) cost a wake-up and a
//! context switch per request, a fifth of a small request's CPU. Nothing is dropped: when the
//! buffer is full (a stalled stderr) callers wait, as they would have on a direct write. Lines
//! keep the order in which they were appended, and the guard [`init`] returns writes them all
//! out at exit.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer before it is written.
pub const WRITE_EVERY: Duration = Duration::from_millis(20);
/// Bytes the buffer holds before loggers wait for the writer (a stalled stderr): at a few
/// hundred bytes a line, thousands of lines, far more than [`WRITE_EVERY`] brings at any rate
/// alb serves.
const MAX_PENDING: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The lines not written yet.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The guard was dropped: the writer writes what is left and stops.
    closed: bool,
}

/// What the loggers and the writer thread share.
#[derive(Default)]
struct LogBuffer {
    pending: Mutex<Pending>,
    /// Signalled when the writer took the buffer (a logger waiting for room goes on).
    taken: Condvar,
}

impl LogBuffer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one whole line (or lines), waiting while the buffer is full.
    fn append(&self, line: &[u8], writer: &std::thread::Thread) {
        let mut pending = self.lock();
        while !pending.closed
            && !pending.bytes.is_empty()
            && pending.bytes.len() + line.len() > MAX_PENDING
        {
            writer.unpark();
            pending = self
                .taken
                .wait_timeout(pending, WRITE_EVERY)
                .map_or_else(|p| p.into_inner().0, |(p, _)| p);
        }
        pending.bytes.extend_from_slice(line);
    }
}

/// The writer thread: takes the buffer every [`WRITE_EVERY`] (sooner when a logger waits for
/// room or the guard is dropped) and writes it out, swapping two buffers so that a steady
/// stream of lines allocates nothing.
fn write_out(buffer: &LogBuffer) {
    let mut spare = Vec::new();
    loop {
        std::thread::park_timeout(WRITE_EVERY);
        let closed = {
            let mut pending = buffer.lock();
            std::mem::swap(&mut pending.bytes, &mut spare);
            pending.closed
        };
        buffer.taken.notify_all();
        if !spare.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&spare);
            let _ = stderr.flush();
            spare.clear();
        }
        if closed && buffer.lock().bytes.is_empty() {
            return;
        }
    }
}

/// Where every log line goes: the shared buffer, and the thread to wake when it is full.
#[derive(Clone)]
pub struct LogSink {
    buffer: Arc<LogBuffer>,
    writer: std::thread::Thread,
}

impl LogSink {
    /// Hands one whole line (with its newline) to the writer.
    fn write_line(&self, line: &[u8]) {
        self.buffer.append(line, &self.writer);
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> LogSink {
        self.clone()
    }
}

/// Keeps the writer thread; dropping it writes out every line still buffered.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    buffer: Arc<LogBuffer>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.buffer.lock().closed = true;
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Installs the global subscriber; logs go to stderr so stdout stays free for command output.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let buffer = Arc::new(LogBuffer::default());
    let for_thread = buffer.clone();
    let thread = std::thread::Builder::new()
        .name("alb-log".into())
        .spawn(move || write_out(&for_thread));
    let thread = match thread {
        Ok(thread) => thread,
        // No thread to write with: each line goes to stderr as it is made.
        Err(_) => return fallback(format, filter),
    };
    let sink = LogSink {
        buffer: buffer.clone(),
        writer: thread.thread().clone(),
    };
    let _ = ACCESS_SINK.set(AccessSink {
        sink: sink.clone(),
        format,
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(sink);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogGuard {
        buffer,
        thread: Some(thread),
    }
}

/// Logging straight to stderr, for a process that cannot start a thread.
fn fallback(format: LogFormat, filter: EnvFilter) -> LogGuard {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogGuard {
        buffer: Arc::default(),
        thread: None,
    }
}

/// Where access-log lines go when the binary set up logging: straight to the log buffer,
/// formatted by `proxy::access_log` in the subscriber's own layout, without tracing's field
/// visitors (a third of a small request's CPU went there). Lines still obey `RUST_LOG` for the
/// target `alb::access`, and keep their order with every other line (one buffer).
pub struct AccessSink {
    sink: LogSink,
    pub format: LogFormat,
}

static ACCESS_SINK: OnceLock<AccessSink> = OnceLock::new();

impl AccessSink {
    /// The sink, when the binary installed one and access lines are enabled.
    pub fn get() -> Option<&'static AccessSink> {
        let sink = ACCESS_SINK.get()?;
        tracing::enabled!(target: "alb::access", tracing::Level::INFO).then_some(sink)
    }

    /// Hands one whole line (with its newline) to the writer.
    pub fn write(&self, line: &[u8]) {
        self.sink.write_line(line);
    }
}
