//! Tracing: W3C trace context through alb to a real backend (the recorder, which keeps every
//! field it received), and the spans alb exports, read by an OTLP/HTTP collector built here from
//! the official protobuf definitions (`opentelemetry-proto`) on a hyper server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::support::recorder::Recorder;
use crate::support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector: every span of every export, in order, on a channel.
struct Collector {
    addr: SocketAddr,
    spans: mpsc::UnboundedReceiver<Span>,
    /// Each export's request target, content type and `service.name`.
    exports: Arc<Mutex<Vec<(String, String, String)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sink, spans) = mpsc::unbounded_channel();
        let exports = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let seen = exports.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (sink, seen) = (sink.clone(), seen.clone());
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (sink, seen) = (sink.clone(), seen.clone());
                    async move {
                        let target = req.uri().to_string();
                        let kind = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap_or("").to_string())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await?.to_bytes();
                        let export = ExportTraceServiceRequest::decode(body)
                            .expect("an ExportTraceServiceRequest");
                        for resource in export.resource_spans {
                            let service = resource
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .map(|kv| text(kv.value.as_ref()))
                                .unwrap_or_default();
                            seen.lock()
                                .unwrap()
                                .push((target.clone(), kind.clone(), service));
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    let _ = sink.send(span);
                                }
                            }
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            Bytes::from(answer),
                        )))
                    }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            connections.shutdown().await;
        });
        Collector {
            addr,
            spans,
            exports,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans of the next request exported: its attempts, then its own (alb queues them in
    /// that order, and the exporter keeps it).
    async fn next_request(&mut self) -> (Span, Vec<Span>) {
        let mut attempts = Vec::new();
        loop {
            let span = tokio::time::timeout(Duration::from_secs(10), self.spans.recv())
                .await
                .expect("a span within 10 s")
                .expect("collector running");
            if span.kind == SpanKind::Server as i32 {
                return (span, attempts);
            }
            attempts.push(span);
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// A span's attribute as text; panics when it is missing.
fn attr(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
        .unwrap_or_else(|| panic!("no attribute {key} on {span:#?}"))
}

fn has_attr(span: &Span, key: &str) -> bool {
    span.attributes.iter().any(|kv| kv.key == key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `traceparent` a backend received, split: trace-id, parent-id, flags.
fn received_traceparent(recorded: &recorder::Recorded) -> (String, String, String) {
    let values = recorded.values("traceparent");
    assert_eq!(values.len(), 1, "one traceparent: {:?}", recorded.fields);
    let parts: Vec<&str> = values[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{}", values[0]);
    assert_eq!(parts[0], "00");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

fn tracing_config(collector: &Collector, sampling: &str) -> String {
    format!(
        "[tracing]\nendpoint = \"{}\"\nsampling = {sampling}\nflush_interval = \"5ms\"\n\
         service_name = \"edge\"\n",
        collector.endpoint()
    )
}

async fn get_with(
    c: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
    url: &str,
    fields: &[(&str, &str)],
) -> u16 {
    let mut request = Request::get(url);
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    send(c, request.body(full(Bytes::new())).unwrap())
        .await
        .0
        .as_u16()
}

#[tokio::test]
async fn a_client_trace_reaches_the_backend_under_alb_s_span_and_its_spans_are_exported() {
    let _cpu = crate::support::cpu::shared().await;
    let mut collector = Collector::start().await;
    let recorder = Recorder::start().await;
    // Sampling 0: only the client's sampled flag can make this request recorded.
    let s = Scenario::new()
        .backend_url(recorder.url())
        .config(&tracing_config(&collector, "0"))
        .config("[[route]]\npath_prefix = \"/api\"\npool = \"default\"\n")
        .quiet_health()
        .start()
        .await;
    let c = client();
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let status = get_with(
        &c,
        &s.url("/api/users?id=7"),
        &[("traceparent", &parent), ("tracestate", state)],
    )
    .await;
    assert_eq!(status, 200);

    let seen = recorder.only("/api/users?id=7");
    let (trace_id, parent_id, flags) = received_traceparent(&seen);
    assert_eq!(trace_id, CLIENT_TRACE, "the client's trace goes on");
    assert_ne!(
        parent_id, CLIENT_PARENT,
        "alb's own span is the backend's parent"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        seen.values("tracestate"),
        [state],
        "tracestate passed as it came"
    );

    let (request, attempts) = collector.next_request().await;
    assert_eq!(hex(&request.trace_id), CLIENT_TRACE);
    assert_eq!(
        hex(&request.span_id),
        parent_id,
        "the backend's parent is the request span"
    );
    assert_eq!(hex(&request.parent_span_id), CLIENT_PARENT);
    assert_eq!(request.trace_state, state);
    assert_eq!(request.name, "GET /api");
    assert_eq!(attr(&request, "http.request.method"), "GET");
    assert_eq!(attr(&request, "url.path"), "/api/users");
    assert_eq!(attr(&request, "server.address"), "127.0.0.1");
    assert_eq!(attr(&request, "client.address"), "127.0.0.1");
    assert_eq!(attr(&request, "alb.route"), "route[0]");
    assert_eq!(attr(&request, "http.route"), "/api");
    assert_eq!(attr(&request, "alb.pool"), "default");
    assert_eq!(attr(&request, "http.response.status_code"), "200");
    assert_eq!(attr(&request, "alb.outcome"), "complete");
    assert_eq!(attr(&request, "alb.attempts"), "1");
    assert!(request.end_time_unix_nano >= request.start_time_unix_nano);

    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let attempt = &attempts[0];
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(hex(&attempt.trace_id), CLIENT_TRACE);
    assert_eq!(
        attempt.parent_span_id, request.span_id,
        "the attempt is the request's child"
    );
    assert_eq!(attr(attempt, "alb.backend"), recorder.url());
    assert_eq!(attr(attempt, "alb.attempt"), "1");
    assert_eq!(attr(attempt, "http.response.status_code"), "200");
    assert!(!has_attr(attempt, "alb.retry_reason"));
    assert!(attempt.start_time_unix_nano >= request.start_time_unix_nano);
    assert!(attempt.end_time_unix_nano <= request.end_time_unix_nano);

    let exports = collector.exports.lock().unwrap().clone();
    assert!(
        exports
            .iter()
            .all(|(target, kind, service)| target == "/v1/traces"
                && kind == "application/x-protobuf"
                && service == "edge"),
        "{exports:?}"
    );
    s.stop().await;
    recorder.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn a_retried_request_has_an_attempt_span_per_backend_with_the_retry_reason() {
    let _cpu = crate::support::cpu::shared().await;
    let mut collector = Collector::start().await;
    let recorder = Recorder::start().await;
    let dead = TestBackend::start("dead").await;
    let dead_url = dead.url();
    let s = Scenario::new()
        .backend_urls([dead.url(), recorder.url()])
        .algorithm("round_robin")
        .config("[passive_health]\nenabled = false\n")
        .config(&tracing_config(&collector, "1.0"))
        .quiet_health()
        .start()
        .await;
    // Its first probe passes, then it stops: its port refuses connections, and alb still
    // believes in it.
    wait_until(Duration::from_secs(2), || dead.probes() >= 1)
        .await
        .unwrap();
    s.lb.wait_health(&dead.addr, true, Duration::from_secs(1))
        .await;
    dead.stop().await;
    let c = client();
    // Round robin starts at either backend; the request that went to the dead one first
    // is the one looked at (the second request starts there if the first did not).
    let mut retried = None;
    for i in 0..2 {
        assert_eq!(get_with(&c, &s.url(&format!("/r{i}")), &[]).await, 200);
        let (request, attempts) = collector.next_request().await;
        if attempts.len() == 2 {
            retried = Some((i, request, attempts));
            break;
        }
    }
    let (i, request, attempts) = retried.expect("a request tried the dead backend first");
    // A new trace: alb's span is the root, and the backend sees it as parent.
    assert!(request.parent_span_id.is_empty());
    let (trace_id, parent_id, flags) = received_traceparent(&recorder.only(&format!("/r{i}")));
    assert_eq!(trace_id, hex(&request.trace_id));
    assert_eq!(parent_id, hex(&request.span_id));
    assert_eq!(flags, "01");
    assert_eq!(attr(&request, "alb.attempts"), "2");
    assert_eq!(attr(&request, "alb.route"), "none");
    assert_eq!(attr(&request, "http.response.status_code"), "200");

    let (first, second) = (&attempts[0], &attempts[1]);
    for attempt in [first, second] {
        assert_eq!(attempt.parent_span_id, request.span_id);
        assert_eq!(attempt.trace_id, request.trace_id);
    }
    assert_ne!(first.span_id, second.span_id);
    assert_eq!(attr(first, "alb.backend"), dead_url);
    assert_eq!(attr(first, "alb.attempt"), "1");
    let error = attr(first, "error.type");
    assert!(!error.is_empty());
    assert!(!has_attr(first, "http.response.status_code"));
    assert_eq!(attr(second, "alb.backend"), recorder.url());
    assert_eq!(attr(second, "alb.attempt"), "2");
    assert_eq!(
        attr(second, "alb.retry_reason"),
        error,
        "why the second attempt was made"
    );
    assert_eq!(attr(second, "http.response.status_code"), "200");
    s.stop().await;
    recorder.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn unsampled_requests_are_not_exported_and_only_a_client_trace_is_propagated() {
    let _cpu = crate::support::cpu::shared().await;
    let mut collector = Collector::start().await;
    let recorder = Recorder::start().await;
    let s = Scenario::new()
        .backend_url(recorder.url())
        .config(&tracing_config(&collector, "0"))
        .quiet_health()
        .start()
        .await;
    let c = client();
    // No traceparent at sampling 0: no trace is started, none is sent.
    assert_eq!(
        get_with(&c, &s.url("/none"), &[("tracestate", "a=1")]).await,
        200
    );
    let none = recorder.only("/none");
    assert!(none.values("traceparent").is_empty(), "{:?}", none.fields);
    assert_eq!(
        none.values("tracestate"),
        ["a=1"],
        "an end-to-end field, kept"
    );
    // The client's trace, not sampled: passed on (alb's span as parent, flags kept), not
    // exported.
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-00");
    assert_eq!(
        get_with(&c, &s.url("/unsampled"), &[("traceparent", &unsampled)]).await,
        200
    );
    let (trace_id, parent_id, flags) = received_traceparent(&recorder.only("/unsampled"));
    assert_eq!((trace_id.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    assert_ne!(parent_id, CLIENT_PARENT);
    // A sampled request after them: the first span the collector gets is its own, so the two
    // before it were not exported (the exporter keeps the order spans were finished in).
    let marker = "0af7651916cd43dd8448eb211c80319c";
    let sampled = format!("00-{marker}-b7ad6b7169203331-01");
    assert_eq!(
        get_with(&c, &s.url("/marker"), &[("traceparent", &sampled)]).await,
        200
    );
    let (request, attempts) = collector.next_request().await;
    assert_eq!(hex(&request.trace_id), marker);
    assert!(attempts.iter().all(|a| hex(&a.trace_id) == marker));
    s.stop().await;
    recorder.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn without_tracing_a_valid_client_trace_is_passed_on_and_an_invalid_one_dropped() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let s = Scenario::new()
        .backend_url(recorder.url())
        .quiet_health()
        .start()
        .await;
    let c = client();
    let valid = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    assert_eq!(
        get_with(
            &c,
            &s.url("/valid"),
            &[("traceparent", &valid), ("tracestate", "k=v")]
        )
        .await,
        200
    );
    let seen = recorder.only("/valid");
    let (trace_id, parent_id, flags) = received_traceparent(&seen);
    assert_eq!((trace_id.as_str(), flags.as_str()), (CLIENT_TRACE, "01"));
    assert_ne!(
        parent_id, CLIENT_PARENT,
        "alb is a hop of the trace even when not recording"
    );
    assert_eq!(seen.values("tracestate"), ["k=v"]);
    let invalid = [
        format!("00-{}-{CLIENT_PARENT}-01", CLIENT_TRACE.to_uppercase()),
        format!("00-{}-{CLIENT_PARENT}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE}-{}-01", "0".repeat(16)),
        format!("01-{CLIENT_TRACE}-{CLIENT_PARENT}-01"),
        format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01-"),
    ];
    for (i, value) in invalid.iter().enumerate() {
        let path = format!("/invalid{i}");
        assert_eq!(
            get_with(&c, &s.url(&path), &[("traceparent", value)]).await,
            200
        );
        let seen = recorder.only(&path);
        assert!(
            seen.values("traceparent").is_empty(),
            "{value}: {:?}",
            seen.fields
        );
    }
    // Two traceparent fields: which would the next hop read? Neither goes on.
    let twice = Request::get(s.url("/twice"))
        .header("traceparent", &valid)
        .header("traceparent", &valid)
        .body(full(Bytes::new()))
        .unwrap();
    assert_eq!(send(&c, twice).await.0, 200);
    assert!(recorder.only("/twice").values("traceparent").is_empty());
    s.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_no_request_its_time_and_drops_are_counted() {
    let _cpu = crate::support::cpu::shared().await;
    // Accepts connections and never reads or answers: the exporter's first POST hangs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                    held.push(stream);
                },
            }
        }
    });
    let s = Scenario::new()
        .backend("a")
        .config(&format!(
            "[tracing]\nendpoint = \"http://{endpoint}\"\nsampling = 1\nqueue_size = 1\n\
             max_batch = 1\nflush_interval = \"1ms\"\nexport_timeout = \"60s\"\n"
        ))
        .quiet_health()
        .admin("trace-token-0123456789")
        .start()
        .await;
    let c = client();
    // Three sampled requests are six spans: one in the hanging export and one in the queue at
    // most, so at least four are dropped, and every request is answered regardless.
    for _ in 0..3 {
        let answered =
            tokio::time::timeout(Duration::from_secs(5), get_with(&c, &s.url("/"), &[])).await;
        assert_eq!(
            answered.expect("answered without waiting for the collector"),
            200
        );
    }
    let (_, _, metrics) = get(&c, &s.lb.admin_url("/metrics").await).await;
    let metrics = String::from_utf8_lossy(&metrics);
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("alb_trace_spans_total{result=\"dropped\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no dropped-span counter:\n{metrics}"));
    assert!(dropped >= 4.0, "dropped {dropped}");
    // Its kept-alive connections closed, the admin listener stops without waiting for them.
    drop(c);
    s.stop().await;
    let _ = stop.send(());
    let _ = silent.await;
}

#[tokio::test]
async fn an_answer_alb_makes_itself_ends_its_span_with_that_status() {
    let _cpu = crate::support::cpu::shared().await;
    let mut collector = Collector::start().await;
    let closed = ClosedPort::new();
    let s = Scenario::new()
        .backend_url(format!("http://{closed}"))
        .config(&tracing_config(&collector, "1"))
        .quiet_health()
        .start()
        .await;
    let c = client();
    let status = get_with(&c, &s.url("/nobody"), &[]).await;
    assert!(status >= 500, "{status}");
    let (request, attempts) = collector.next_request().await;
    assert_eq!(
        attr(&request, "http.response.status_code"),
        status.to_string()
    );
    assert_eq!(attr(&request, "alb.outcome"), "local");
    assert_eq!(attr(&request, "alb.pool"), "default");
    let error = opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32;
    assert_eq!(request.status.as_ref().map(|s| s.code), Some(error));
    // Unless the health check took the backend out first, the refused attempt is there.
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id, request.span_id);
        assert!(has_attr(attempt, "error.type"), "{attempt:#?}");
    }
    s.stop().await;
    collector.stop().await;
}
