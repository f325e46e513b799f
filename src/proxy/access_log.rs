//! One access-log line per request (tracing target `alb::access`), written when the response has
//! been streamed to its end, or when it was cut short.

use std::net::SocketAddr;
use std::time::Instant;

use http::Method;

/// What the access-log line needs from the request, captured before the request is forwarded.
#[derive(Debug)]
pub struct AccessRecord {
    method: Method,
    path: String,
    client: SocketAddr,
    started: Instant,
    attempts: u32,
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
        }
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
            outcome = end,
            "{} {} 101 tunnel",
            self.method,
            self.path,
        );
    }

    pub fn finish(&self, status: u16, backend: Option<&str>, bytes: u64, outcome: Outcome) {
        tracing::info!(
            target: "alb::access",
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status,
            backend = backend.unwrap_or("-"),
            duration_ms = format_args!("{:.3}", self.started.elapsed().as_secs_f64() * 1000.0),
            bytes,
            attempts = self.attempts,
            outcome = outcome.as_str(),
            "{} {} {}",
            self.method,
            self.path,
            status
        );
    }
}
