//! One access-log line per request (tracing target `alb::access`), written when the response has
//! been streamed to its end, or when it was cut short.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::Method;

use crate::telemetry::{AccessSink, LogFormat};

thread_local! {
    /// The line being written, reused: no allocation per request but the channel's copy.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// `YYYY-MM-DDTHH:MM:SS.` of the current second, made once a second per thread.
    static CLOCK: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// What the access-log line needs from the request, captured before the request is forwarded.
#[derive(Debug)]
pub struct AccessRecord {
    method: Method,
    path: String,
    client: SocketAddr,
    started: Instant,
    attempts: u32,
    /// The X-Request-Id the backend got, and a verified client certificate's subject.
    request_id: Option<http::HeaderValue>,
    subject: Option<std::sync::Arc<str>>,
}

/// How a response ended, as written in the log line.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Complete,
    /// The client went away before the body was streamed to its end.
    ClientAborted,
    /// The backend broke the body off.
    UpstreamBroken,
    /// The backend went silent mid-body for longer than `timeouts.upstream_idle`.
    UpstreamIdle,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientAborted => "client_aborted",
            Outcome::UpstreamBroken => "upstream_broken",
            Outcome::UpstreamIdle => "upstream_idle_timeout",
        }
    }
}

impl AccessRecord {
    pub fn new(method: &Method, path: &str, client: SocketAddr, started: Instant) -> AccessRecord {
        AccessRecord {
            method: method.clone(),
            path: path.to_owned(),
            client,
            started,
            attempts: 1,
            request_id: None,
            subject: None,
        }
    }

    /// Who the request is: its id, and the subject of the client's certificate.
    pub fn identify(
        &mut self,
        request_id: Option<&http::HeaderValue>,
        subject: Option<std::sync::Arc<str>>,
    ) {
        self.request_id = request_id.cloned();
        self.subject = subject;
    }

    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// How many backends were tried (retries included).
    pub fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// The line of an upgraded connection, when its tunnel ends: how long it was open (from
    /// the request's arrival) and the bytes it carried each way.
    pub fn finish_tunnel(
        &self,
        backend: &str,
        to_backend: u64,
        to_client: u64,
        open: std::time::Duration,
        end: &str,
    ) {
        tracing::info!(
            target: "alb::access",
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status = 101,
            backend,
            duration_ms = format_args!("{:.3}", self.started.elapsed().as_secs_f64() * 1000.0),
            tunnel_ms = format_args!("{:.3}", open.as_secs_f64() * 1000.0),
            bytes = to_client,
            bytes_to_backend = to_backend,
            attempts = self.attempts,
            request_id = self.request_id(),
            outcome = end,
            "{} {} 101 tunnel",
            self.method,
            self.path,
        );
    }

    pub fn finish(&self, status: u16, backend: Option<&str>, bytes: u64, outcome: Outcome) {
        let backend = backend.unwrap_or("-");
        if let Some(sink) = AccessSink::get() {
            let line = Line {
                record: self,
                status,
                backend,
                bytes,
                outcome,
            };
            LINE.with_borrow_mut(|out| {
                out.clear();
                match sink.format {
                    LogFormat::Text => line.text(out),
                    LogFormat::Json => line.json(out),
                }
                sink.write(out);
            });
            return;
        }
        tracing::info!(
            target: "alb::access",
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status,
            backend,
            duration_ms = format_args!("{:.3}", self.started.elapsed().as_secs_f64() * 1000.0),
            bytes,
            attempts = self.attempts,
            request_id = self.request_id(),
            tls_client_subject = self.subject.as_deref(),
            outcome = outcome.as_str(),
            "{} {} {}",
            self.method,
            self.path,
            status
        );
    }
}

/// One request's access line, written in the layout of the log subscriber (`telemetry`): the
/// same text (`... INFO alb::access: GET /p 200 client=... outcome="complete"`) or JSON object
/// (`{"timestamp":...,"target":"alb::access"}`) that tracing would write, field for field, so
/// that what reads the log cannot tell the difference. Only the cost differs.
struct Line<'a> {
    record: &'a AccessRecord,
    status: u16,
    backend: &'a str,
    bytes: u64,
    outcome: Outcome,
}

impl Line<'_> {
    fn text(&self, out: &mut Vec<u8>) {
        let r = self.record;
        timestamp(out);
        out.extend_from_slice(b"  INFO alb::access: ");
        self.message(out);
        let _ = write!(
            out,
            " client={} method={} path={} status={}",
            r.client, r.method, r.path, self.status
        );
        out.extend_from_slice(b" backend=\"");
        for &b in self.backend.as_bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\" duration_ms=");
        self.duration(out);
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b" bytes=");
        out.extend_from_slice(n.format(self.bytes).as_bytes());
        out.extend_from_slice(b" attempts=");
        out.extend_from_slice(n.format(r.attempts).as_bytes());
        out.extend_from_slice(b" request_id=");
        out.extend_from_slice(r.request_id().as_bytes());
        if let Some(subject) = &r.subject {
            out.extend_from_slice(b" tls_client_subject=");
            json_string(out, subject);
        }
        out.extend_from_slice(b" outcome=\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.extend_from_slice(b"\"\n");
    }

    fn json(&self, out: &mut Vec<u8>) {
        let r = self.record;
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
        let mut message = Vec::with_capacity(64);
        self.message(&mut message);
        json_string(out, &String::from_utf8_lossy(&message));
        let _ = write!(out, ",\"client\":\"{}\",\"method\":", r.client);
        json_string(out, r.method.as_str());
        out.extend_from_slice(b",\"path\":");
        json_string(out, &r.path);
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(n.format(self.status).as_bytes());
        out.extend_from_slice(b",\"backend\":");
        json_string(out, self.backend);
        out.extend_from_slice(b",\"duration_ms\":\"");
        self.duration(out);
        out.extend_from_slice(b"\",\"bytes\":");
        out.extend_from_slice(n.format(self.bytes).as_bytes());
        out.extend_from_slice(b",\"attempts\":");
        out.extend_from_slice(n.format(r.attempts).as_bytes());
        out.extend_from_slice(b",\"request_id\":");
        json_string(out, r.request_id());
        if let Some(subject) = &r.subject {
            out.extend_from_slice(b",\"tls_client_subject\":");
            json_string(out, subject);
        }
        out.extend_from_slice(b",\"outcome\":\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.extend_from_slice(b"\",\"target\":\"alb::access\"}\n");
    }

    /// `GET /path 200`
    fn message(&self, out: &mut Vec<u8>) {
        let r = self.record;
        out.extend_from_slice(r.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(r.path.as_bytes());
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
    }

    /// Milliseconds since the request arrived, three decimals.
    fn duration(&self, out: &mut Vec<u8>) {
        let micros = self.record.started.elapsed().as_micros();
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(n.format(micros / 1000).as_bytes());
        out.push(b'.');
        let frac = micros % 1000;
        if frac < 100 {
            out.push(b'0');
        }
        if frac < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(n.format(frac).as_bytes());
    }
}

fn json_string(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

/// RFC 3339 in UTC with microseconds (`2026-12-02T10:45:30.304592Z`), as the subscriber writes.
fn timestamp(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let second = now.as_secs();
    CLOCK.with_borrow_mut(|(cached, prefix)| {
        if *cached != second {
            *cached = second;
            *prefix = civil(second);
        }
        out.extend_from_slice(prefix);
    });
    let micros = now.subsec_micros();
    let digits = itoa::Buffer::new().format(micros).len();
    out.extend(std::iter::repeat_n(b'0', 6 - digits.min(6)));
    out.extend_from_slice(itoa::Buffer::new().format(micros).as_bytes());
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time (the proleptic Gregorian calendar, days to civil).
fn civil(unix: u64) -> [u8; 20] {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = [0u8; 20];
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    let _ = write!(
        cursor,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_instants() {
        assert_eq!(&civil(0), b"1970-01-01T00:00:00.");
        assert_eq!(&civil(951_782_400), b"2000-02-29T00:00:00.");
        assert_eq!(&civil(1_796_207_130), b"2026-12-02T10:25:30.");
        assert_eq!(&civil(4_107_542_399), b"2100-02-28T23:59:59.");
    }
}
