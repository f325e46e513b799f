//! Distributed tracing: W3C Trace Context passed on to backends ([`context`]), and, with
//! `[tracing]`, one span per request and one per attempt exported over OTLP/HTTP ([`export`]).
//!
//! The cost is paid only by what is recorded. A request that is not sampled holds a [`Trace`]
//! of a few ids on the stack and allocates nothing but the `traceparent` it forwards; a sampled
//! one carries a boxed [`SpanRecord`] that becomes protobuf spans when the request ends, handed
//! to the exporter with a `try_send` that never waits.

pub mod context;
mod export;
mod span;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub use context::{SAMPLED, SpanId, TraceId, TraceParent};
pub use export::Exporter;
pub use span::{AttemptEnd, SpanRecord};

use crate::config::TracingConfig;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Exporter counters, kept across reloads (exporters come and go with configs).
#[derive(Debug, Default)]
pub struct TraceStats {
    /// Spans sent to the collector and accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the export queue was full: the collector is slower than the
    /// traffic, or away.
    pub dropped: AtomicU64,
    /// Spans lost in an export that failed (connection, timeout, a refusal by the collector).
    pub failed: AtomicU64,
}

/// The tracing of one configuration: whether spans are recorded, at what ratio, and where they
/// go. Without `[tracing]` it still passes trace context on.
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    exporter: Option<Arc<Exporter>>,
    sampling: f64,
}

impl Tracer {
    /// The tracer for `config`: the exporter of `previous` is kept when its settings are the
    /// same, so that a reload neither loses queued spans nor opens a new connection.
    pub fn new(
        config: Option<&TracingConfig>,
        previous: Option<&Tracer>,
        stats: &Arc<TraceStats>,
    ) -> Tracer {
        let Some(config) = config else {
            return Tracer::default();
        };
        let kept = previous
            .and_then(|p| p.exporter.as_ref())
            .filter(|e| e.config() == config)
            .cloned();
        let exporter = kept.or_else(|| Exporter::start(config.clone(), stats.clone()));
        Tracer {
            exporter,
            sampling: config.sampling,
        }
    }

    /// Starts the trace of a request: continues the client's valid `traceparent` (sampled as
    /// the client says), or starts a new trace when tracing is on and the ratio draws it.
    pub fn begin(
        &self,
        req: &http::Request<impl Sized>,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Trace {
        let headers = req.headers();
        let mut values = headers.get_all(&TRACEPARENT).iter();
        // Two `traceparent` fields are as good as none: which one would the next hop read?
        let (parent, sent) = match (values.next(), values.next()) {
            (None, _) => (None, false),
            (Some(value), None) => (TraceParent::parse(value.as_bytes()), true),
            (Some(_), Some(_)) => (None, true),
        };
        let outgoing = match (parent, &self.exporter) {
            (Some(parent), _) => Some(TraceParent {
                parent_id: SpanId::random(),
                ..parent
            }),
            (None, Some(_)) => {
                let trace_id = TraceId::random();
                let sampled = trace_id.within_ratio(self.sampling);
                sampled.then(|| TraceParent {
                    trace_id,
                    parent_id: SpanId::random(),
                    flags: SAMPLED,
                })
            }
            (None, None) => None,
        };
        let record = match (&self.exporter, outgoing) {
            (Some(exporter), Some(ours)) if ours.sampled() => Some(SpanRecord::start(
                exporter.clone(),
                ours,
                parent.map(|p| p.parent_id),
                req,
                client,
                scheme,
            )),
            _ => None,
        };
        Trace {
            outgoing,
            client_sent: sent,
            record,
            status: 0,
        }
    }
}

/// One request's trace: what goes to the backend, and the span being recorded if sampled. A
/// span still held when the request's handling ends or is dropped (alb's own answers, a
/// client that went away) is finished then, by `Drop`.
#[derive(Debug)]
pub struct Trace {
    /// The `traceparent` sent on (alb's span id as parent-id); none: none is sent.
    outgoing: Option<TraceParent>,
    /// The client sent a `traceparent` (valid or not), to be taken out.
    client_sent: bool,
    record: Option<Box<SpanRecord>>,
    /// The status alb answered with itself (0: none yet).
    status: u16,
}

impl Trace {
    /// The fields for the next hop: the client's `traceparent` out of `fields`, alb's own in
    /// `added`. `tracestate` is an end-to-end field and stays as the client sent it. **The one
    /// place that writes the outgoing `traceparent`.** A request that brought none and gets none
    /// costs nothing here: no lookup in `fields`.
    pub fn propagate(&self, fields: &mut HeaderMap, added: &mut crate::upstream::AddedFields) {
        if self.client_sent {
            fields.remove(&TRACEPARENT);
        }
        if let Some(ours) = self.outgoing
            && let Ok(value) = HeaderValue::from_bytes(&ours.encode())
        {
            added.push((&TRACEPARENT, value));
        }
    }

    /// Notes the route (its place in the config) and the pool chosen.
    pub fn route(&mut self, route: Option<(usize, &crate::config::RouteConfig)>, pool: &str) {
        if let Some(record) = self.record.as_mut() {
            let route =
                route.map(|(index, r)| (index, r.path.as_deref().or(r.path_prefix.as_deref())));
            record.set_route(route, pool);
        }
    }

    /// Notes one attempt on `backend`, begun at `sent`, and how it ended.
    pub fn attempt(
        &mut self,
        backend: &str,
        number: u32,
        sent: std::time::Instant,
        end: AttemptEnd<'_>,
    ) {
        if let Some(record) = self.record.as_mut() {
            record.attempt(backend, number, sent, end);
        }
    }

    /// The span, handed to whatever finishes the response (the body's settlement).
    pub fn take(&mut self) -> Option<Box<SpanRecord>> {
        self.record.take()
    }

    /// The status of an answer alb made itself; the span ends when the trace drops.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            match self.status {
                0 => record.finish(None, "cancelled", 0),
                status => record.finish(Some(status), "local", 0),
            }
        }
    }
}
