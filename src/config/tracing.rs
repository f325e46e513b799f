//! `[tracing]`: spans exported over OTLP (HTTP/protobuf). Without the section alb still passes
//! a client's W3C `traceparent` on with its own span id in it (see `trace`), but records
//! nothing and starts no trace.

use std::time::Duration;

use super::raw::RawTracing;
use super::values::{Problems, count, positive_duration};

/// Where and how spans are exported. Equal configs keep the running exporter across a reload
/// (its queue and connection), so that a reload loses no span.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    pub endpoint: OtlpEndpoint,
    /// Share of new traces recorded (0..=1); a client's `traceparent` decides for its own
    /// trace (parent-based sampling).
    pub sampling: f64,
    /// `service.name` of the resource every span is exported under.
    pub service_name: String,
    /// Spans waiting for export at most; beyond it new ones are dropped and counted, so that a
    /// slow or absent collector costs memory up to this bound and never a request's time.
    pub queue_size: usize,
    /// Spans in one export request at most.
    pub max_batch: usize,
    /// How long the exporter gathers spans before it sends what it has: fewer, larger requests
    /// to the collector under load.
    pub flush_interval: Duration,
    /// How long one export may take before it is given up (its spans counted as failed).
    pub export_timeout: Duration,
}

/// The collector's OTLP/HTTP address, split once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// `host` or `host:port` as written (the Host field of every export).
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// The request target: `/v1/traces` unless the URL gave a path of its own.
    pub path: String,
}

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";

pub(super) fn tracing(raw: RawTracing, problems: &mut Problems) -> TracingConfig {
    let endpoint = endpoint(
        raw.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT),
        problems,
    );
    let sampling = match raw.sampling {
        None => 1.0,
        Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
        Some(ratio) => {
            problems.add(
                "tracing.sampling",
                format!("must be a ratio between 0 and 1 (0.01 is 1 %), got {ratio}"),
            );
            1.0
        }
    };
    let service_name = raw.service_name.unwrap_or_else(|| "alb".to_string());
    if service_name.trim().is_empty() {
        problems.add("tracing.service_name", "must not be empty");
    }
    let count = |key: &str, value, default, max, problems: &mut Problems| {
        count(&format!("tracing.{key}"), value, default, 1, max, problems) as usize
    };
    TracingConfig {
        endpoint,
        sampling,
        service_name,
        queue_size: count("queue_size", raw.queue_size, 2048, 1_000_000, problems),
        max_batch: count("max_batch", raw.max_batch, 512, 100_000, problems),
        flush_interval: positive_duration(
            "tracing.flush_interval",
            raw.flush_interval,
            Duration::from_secs(1),
            problems,
        ),
        export_timeout: positive_duration(
            "tracing.export_timeout",
            raw.export_timeout,
            Duration::from_secs(10),
            problems,
        ),
    }
}

fn endpoint(text: &str, problems: &mut Problems) -> OtlpEndpoint {
    let fallback = || OtlpEndpoint {
        authority: "127.0.0.1:4318".to_string(),
        host: "127.0.0.1".to_string(),
        port: 4318,
        path: "/v1/traces".to_string(),
    };
    let key = "tracing.endpoint";
    let uri: http::Uri = match text.parse() {
        Ok(uri) => uri,
        Err(e) => {
            problems.add(key, format!("{text:?} is not a URL ({e})"));
            return fallback();
        }
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            problems.add(
                key,
                format!(
                    "{text:?}: only http:// is supported (OTLP/HTTP to a collector or agent \
                     on a trusted network)"
                ),
            );
            return fallback();
        }
        _ => {
            problems.add(
                key,
                format!("{text:?} needs http://, e.g. \"{DEFAULT_ENDPOINT}\""),
            );
            return fallback();
        }
    }
    let Some(authority) = uri.authority() else {
        problems.add(key, format!("{text:?} names no host"));
        return fallback();
    };
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/v1/traces".to_string(),
        Some(path) => path.to_string(),
    };
    let host = authority.host();
    OtlpEndpoint {
        authority: authority.as_str().to_string(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: authority.port_u16().unwrap_or(80),
        path,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(tracing: &str) -> Result<Config, Vec<String>> {
        let text = format!("backends = [\"http://127.0.0.1:9\"]\n[tracing]\n{tracing}");
        Config::from_toml(&text, "t.toml")
            .map_err(|e| e.problems().iter().map(|p| p.key.clone()).collect())
    }

    #[test]
    fn an_empty_section_exports_everything_to_a_local_collector() {
        let config = load("").expect("valid");
        let tracing = config.tracing.expect("[tracing] given");
        assert_eq!(tracing.endpoint.authority, "127.0.0.1:4318");
        assert_eq!(tracing.endpoint.path, "/v1/traces");
        assert_eq!(tracing.sampling, 1.0);
        assert_eq!(tracing.service_name, "alb");
        assert_eq!((tracing.queue_size, tracing.max_batch), (2048, 512));
        let none = Config::from_toml("backends = [\"http://127.0.0.1:9\"]\n", "t.toml");
        assert!(none.expect("valid").tracing.is_none());
    }

    #[test]
    fn an_endpoint_with_a_path_is_used_as_written() {
        let config = load(
            "endpoint = \"http://otel-collector:4318/otlp/v1/traces\"\nsampling = 0.01\n\
             service_name = \"edge\"\nqueue_size = 100\nflush_interval = \"200ms\"\n",
        )
        .expect("valid");
        let tracing = config.tracing.expect("[tracing] given");
        assert_eq!(tracing.endpoint.host, "otel-collector");
        assert_eq!(tracing.endpoint.port, 4318);
        assert_eq!(tracing.endpoint.path, "/otlp/v1/traces");
        assert_eq!(tracing.sampling, 0.01);
        assert_eq!(tracing.queue_size, 100);
        assert_eq!(
            tracing.flush_interval,
            std::time::Duration::from_millis(200)
        );
    }

    #[test]
    fn mistakes_name_their_key_and_refuse_to_start() {
        for (text, key) in [
            ("sampling = 1.5", "tracing.sampling"),
            ("sampling = -0.1", "tracing.sampling"),
            ("endpoint = \"https://collector:4318\"", "tracing.endpoint"),
            ("endpoint = \"collector:4318\"", "tracing.endpoint"),
            ("endpoint = \"grpc://collector:4317\"", "tracing.endpoint"),
            ("service_name = \" \"", "tracing.service_name"),
            ("queue_size = 0", "tracing.queue_size"),
            ("max_batch = 0", "tracing.max_batch"),
            ("flush_interval = \"0s\"", "tracing.flush_interval"),
            ("export_timeout = \"soon\"", "tracing.export_timeout"),
        ] {
            let keys = load(text).expect_err(text);
            assert_eq!(keys, [key], "{text}");
        }
        assert!(load("ratio = 0.5").is_err(), "unknown keys are refused");
    }
}
