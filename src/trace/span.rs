//! A sampled request's span while the request runs, and the OTLP spans it becomes: the
//! request's own (kind SERVER) and one child per attempt (kind CLIENT). Attribute names follow
//! OpenTelemetry's HTTP semantic conventions where one exists, `alb.*` for the rest.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};

use super::context::{SpanId, TraceParent};
use super::export::Exporter;

/// How an attempt ended.
#[derive(Clone, Copy)]
pub enum AttemptEnd<'a> {
    /// The backend answered with this status, which is passed to the client.
    Answered(u16),
    /// The backend answered with this status, and the request goes to another backend.
    RetriedStatus(u16),
    /// No answer: why.
    Failed(&'a dyn Display),
}

#[derive(Debug)]
struct Attempt {
    span_id: SpanId,
    start: u64,
    end: u64,
    backend: String,
    number: u32,
    status: Option<u16>,
    error: Option<String>,
    /// Why this attempt was made: what the one before it got.
    retry_reason: Option<String>,
}

/// The request span of a sampled request, filled in as the request goes.
#[derive(Debug)]
pub struct SpanRecord {
    exporter: Arc<Exporter>,
    ours: TraceParent,
    parent: Option<SpanId>,
    /// Wall-clock start for the export; durations come from the monotonic `started`.
    start: u64,
    started: Instant,
    method: http::Method,
    path: String,
    host: Option<String>,
    scheme: &'static str,
    client: SocketAddr,
    trace_state: Option<String>,
    route: Option<(usize, Option<String>)>,
    pool: Option<String>,
    attempts: Vec<Attempt>,
    /// What the last failed attempt got: the reason of the next one.
    pending_reason: Option<String>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl SpanRecord {
    pub(super) fn start(
        exporter: Arc<Exporter>,
        ours: TraceParent,
        parent: Option<SpanId>,
        req: &http::Request<impl Sized>,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Box<SpanRecord> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().host())
            .map(|h| strip_port(h).to_string());
        let trace_state = parent
            .and_then(|_| req.headers().get(&super::TRACESTATE))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::new(SpanRecord {
            exporter,
            ours,
            parent,
            start: unix_nanos(),
            started: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            host,
            scheme,
            client,
            trace_state,
            route: None,
            pool: None,
            attempts: Vec::new(),
            pending_reason: None,
        })
    }

    pub(super) fn set_route(&mut self, route: Option<(usize, Option<&str>)>, pool: &str) {
        self.route = route.map(|(index, prefix)| (index, prefix.map(str::to_string)));
        self.pool = Some(pool.to_string());
    }

    fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.start.saturating_add(elapsed)
    }

    pub(super) fn attempt(&mut self, backend: &str, number: u32, sent: Instant, end: AttemptEnd) {
        let before = u64::try_from(sent.saturating_duration_since(self.started).as_nanos())
            .unwrap_or(u64::MAX);
        let (status, error, reason) = match end {
            AttemptEnd::Answered(status) => (Some(status), None, None),
            AttemptEnd::RetriedStatus(status) => {
                (Some(status), None, Some(format!("status {status}")))
            }
            AttemptEnd::Failed(why) => {
                let why = why.to_string();
                (None, Some(why.clone()), Some(why))
            }
        };
        let retry_reason = self.pending_reason.take();
        self.pending_reason = reason;
        self.attempts.push(Attempt {
            span_id: SpanId::random(),
            start: self.start.saturating_add(before),
            end: self.now(),
            backend: backend.to_string(),
            number,
            status,
            error,
            retry_reason,
        });
    }

    /// Ends the request span with the status the client got and how its response ended, and
    /// hands it and its attempts to the exporter (dropped and counted if its queue is full).
    pub fn finish(self: Box<Self>, status: Option<u16>, outcome: &str, bytes: u64) {
        let end = self.now();
        let mut spans = Vec::with_capacity(1 + self.attempts.len());
        let trace_id = self.ours.trace_id.0.to_vec();
        let own = self.ours.parent_id;
        for attempt in &self.attempts {
            let mut attributes = vec![
                string("alb.backend", &attempt.backend),
                int("alb.attempt", i64::from(attempt.number)),
                string("http.request.method", self.method.as_str()),
            ];
            if attempt.number > 1 {
                attributes.push(int(
                    "http.request.resend_count",
                    i64::from(attempt.number - 1),
                ));
            }
            if let Some(status) = attempt.status {
                attributes.push(int("http.response.status_code", i64::from(status)));
            }
            if let Some(error) = &attempt.error {
                attributes.push(string("error.type", error));
            }
            if let Some(reason) = &attempt.retry_reason {
                attributes.push(string("alb.retry_reason", reason));
            }
            let failed = attempt.error.is_some() || attempt.status.is_some_and(|s| s >= 500);
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: attempt.span_id.0.to_vec(),
                parent_span_id: own.0.to_vec(),
                flags: u32::from(self.ours.flags) | HAS_IS_REMOTE,
                name: self.method.as_str().to_string(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: attempt.start,
                end_time_unix_nano: attempt.end,
                attributes,
                status: status_of(failed, attempt.error.as_deref()),
                ..Default::default()
            });
        }
        let mut attributes = vec![
            string("http.request.method", self.method.as_str()),
            string("url.path", &self.path),
            string("url.scheme", self.scheme),
            string("client.address", &self.client.ip().to_string()),
            int("client.port", i64::from(self.client.port())),
            string("alb.outcome", outcome),
            int("alb.attempts", self.attempts.len() as i64),
        ];
        if let Some(host) = &self.host {
            attributes.push(string("server.address", host));
        }
        let mut name = self.method.as_str().to_string();
        match &self.route {
            Some((index, prefix)) => {
                attributes.push(string("alb.route", &format!("route[{index}]")));
                if let Some(prefix) = prefix {
                    attributes.push(string("http.route", prefix));
                    name = format!("{} {prefix}", self.method);
                }
            }
            None => attributes.push(string("alb.route", "none")),
        }
        if let Some(pool) = &self.pool {
            attributes.push(string("alb.pool", pool));
        }
        if let Some(status) = status {
            attributes.push(int("http.response.status_code", i64::from(status)));
        }
        if bytes > 0 {
            attributes.push(int(
                "http.response.body.size",
                i64::try_from(bytes).unwrap_or(i64::MAX),
            ));
        }
        // A server span is an error for a 5xx (4xx is the client's doing), a response the
        // backend broke off, or a request dropped before any answer.
        let failed = status.is_none_or(|s| s >= 500)
            || matches!(
                outcome,
                "upstream_broken" | "upstream_idle_timeout" | "cancelled"
            );
        let remote = if self.parent.is_some() {
            HAS_IS_REMOTE | IS_REMOTE
        } else {
            HAS_IS_REMOTE
        };
        spans.push(Span {
            trace_id,
            span_id: own.0.to_vec(),
            parent_span_id: self.parent.map_or_else(Vec::new, |p| p.0.to_vec()),
            trace_state: self.trace_state.clone().unwrap_or_default(),
            flags: u32::from(self.ours.flags) | remote,
            name,
            kind: SpanKind::Server as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: end,
            attributes,
            status: status_of(failed, failed.then_some(outcome)),
            ..Default::default()
        });
        self.exporter.send(spans);
    }
}

/// OTLP span flags: bit 8 says whether bit 9 is known, bit 9 that the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

fn status_of(failed: bool, message: Option<&str>) -> Option<Status> {
    failed.then(|| Status {
        message: message.unwrap_or_default().to_string(),
        code: StatusCode::Error as i32,
    })
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// `host` of `host:port` (and of `[v6]:port`).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}
