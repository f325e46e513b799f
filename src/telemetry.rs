//! Log output: human-readable text or one JSON object per line, filtered by `RUST_LOG`
//! (default `info`). Access-log lines use the target `alb::access`.
//!
//! **No request waits on a log write.** Lines are formatted where they happen and handed to one
//! writer thread over a channel; it writes them to stderr through a buffer, flushed whenever the
//! channel runs dry, so a busy balancer makes one system call for many lines instead of one per
//! line (which cost small requests 20-40 % of their CPU). The channel never drops a line: when
//! it is full (a stalled stderr) callers wait, as they would have on a direct write. Lines keep
//! their order, and the guard [`init`] returns flushes them all at exit.

use std::io::{BufWriter, IsTerminal, Write};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer thread before loggers wait for it. The channel's slots are
/// allocated (and touched) up front, 40 bytes each: a few thousand cover any burst the writer
/// cannot keep up with for a moment, without megabytes of resident memory.
const QUEUED_LINES: usize = 4 * 1024;
/// The writer thread's buffer: one write per this much, or per lull.
const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Keeps the writer thread; dropping it writes out every line still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the global subscriber; logs go to stderr so stdout stays free for command output.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("alb-log")
        .finish(BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
    let _ = ACCESS_SINK.set(AccessSink {
        writer: writer.clone(),
        format,
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogGuard(guard)
}

/// Where access-log lines go when the binary set up logging: straight to the writer thread,
/// formatted by `proxy::access_log` in the subscriber's own layout, without tracing's field
/// visitors (a third of a small request's CPU went there). Lines still obey `RUST_LOG` for the
/// target `alb::access`, and keep their order with every other line (one channel).
pub struct AccessSink {
    writer: NonBlocking,
    pub format: LogFormat,
}

static ACCESS_SINK: OnceLock<AccessSink> = OnceLock::new();

impl AccessSink {
    /// The sink, when the binary installed one and access lines are enabled.
    pub fn get() -> Option<&'static AccessSink> {
        let sink = ACCESS_SINK.get()?;
        tracing::enabled!(target: "alb::access", tracing::Level::INFO).then_some(sink)
    }

    /// Hands one whole line (with its newline) to the writer thread.
    pub fn write(&self, line: &[u8]) {
        let _ = self.writer.clone().write_all(line);
    }
}
