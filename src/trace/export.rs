//! The OTLP/HTTP exporter: a bounded queue that requests only ever `try_send` to, and one task
//! that gathers spans into batches and POSTs them as protobuf (`/v1/traces`) on a kept-alive
//! connection. A slow or absent collector fills the queue, and then spans are dropped and
//! counted: a request never waits for its span to be taken.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::mpsc;

use super::TraceStats;
use crate::config::TracingConfig;

/// The largest answer read from a collector (a partial-success message at most).
const MAX_ANSWER: usize = 64 * 1024;

/// Where a request's finished spans go.
#[derive(Debug)]
pub struct Exporter {
    config: TracingConfig,
    queue: mpsc::Sender<Span>,
    stats: Arc<TraceStats>,
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot connect to the collector: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the collector answered {0}")]
    Status(http::StatusCode),
    #[error("no answer within tracing.export_timeout")]
    Timeout,
    #[error("the collector's answer broke off or was too large")]
    Answer,
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
}

impl Exporter {
    /// Starts the export task on the current runtime; none outside one (nothing could send).
    pub fn start(config: TracingConfig, stats: Arc<TraceStats>) -> Option<Arc<Exporter>> {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(_) => {
                tracing::warn!("tracing: no runtime to export spans on; none will be recorded");
                return None;
            }
        };
        let (queue, spans) = mpsc::channel(config.queue_size);
        runtime.spawn(run(config.clone(), spans, stats.clone()));
        Some(Arc::new(Exporter {
            config,
            queue,
            stats,
        }))
    }

    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// Queues `spans` without waiting; what does not fit is dropped and counted.
    pub(super) fn send(&self, spans: Vec<Span>) {
        for span in spans {
            if self.queue.try_send(span).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The export task: ends when every [`Exporter`] holding its queue is gone (the config that made
/// it was replaced and its last request ended), after sending what was queued.
async fn run(config: TracingConfig, mut spans: mpsc::Receiver<Span>, stats: Arc<TraceStats>) {
    let mut conn = None;
    let mut failing = false;
    let mut batch = Vec::with_capacity(config.max_batch);
    loop {
        if spans.recv_many(&mut batch, config.max_batch).await == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + config.flush_interval;
        while batch.len() < config.max_batch {
            let room = config.max_batch - batch.len();
            match tokio::time::timeout_at(until, spans.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let count = batch.len() as u64;
        let body = encode(&config, std::mem::take(&mut batch));
        let sent = tokio::time::timeout(config.export_timeout, post(&config, &mut conn, body))
            .await
            .unwrap_or(Err(ExportError::Timeout));
        match sent {
            Ok(()) => {
                stats.exported.fetch_add(count, Ordering::Relaxed);
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("tracing: exporting spans again");
                }
            }
            Err(error) => {
                conn = None;
                stats.failed.fetch_add(count, Ordering::Relaxed);
                // Said once per outage, not once per batch.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(endpoint = %config.endpoint.authority, %error, "tracing: export failed, spans lost");
                }
            }
        }
    }
}

/// The export request: every span under one resource (`service.name`) and one scope (alb).
fn encode(config: &TracingConfig, spans: Vec<Span>) -> Bytes {
    let service = KeyValue {
        key: "service.name".to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(config.service_name.clone())),
        }),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![service],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "alb".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}

async fn post(
    config: &TracingConfig,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    body: Bytes,
) -> Result<(), ExportError> {
    let sender = match conn {
        Some(sender) if !sender.is_closed() => sender,
        _ => conn.insert(connect(config).await?),
    };
    sender.ready().await?;
    let request = http::Request::post(config.endpoint.path.as_str())
        .header(http::header::HOST, config.endpoint.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))?;
    let answer = sender.send_request(request).await?;
    let status = answer.status();
    Limited::new(answer.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| ExportError::Answer)?;
    if !status.is_success() {
        return Err(ExportError::Status(status));
    }
    Ok(())
}

async fn connect(config: &TracingConfig) -> Result<SendRequest<Full<Bytes>>, ExportError> {
    let endpoint = &config.endpoint;
    let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(ExportError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the collector closes; either way the next export
        // opens a new connection.
        let _ = connection.await;
    });
    Ok(sender)
}
