//! One health probe: `GET <path>` on a new connection, passing on a 2xx or 3xx status.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::Empty;

use crate::config::HealthCheckConfig;
use crate::upstream::{Backend, ConnectError, connect};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("request failed: {0}")]
    Request(#[source] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered with status {0}")]
    Status(u16),
    #[error("bad health check request: {0}")]
    Build(#[from] http::Error),
}

/// Probes `backend` once within `config.timeout` (connection set-up included).
pub async fn probe(backend: &Backend, config: &HealthCheckConfig) -> Result<(), ProbeError> {
    match tokio::time::timeout(config.timeout, probe_once(backend, config)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(config.timeout)),
    }
}

async fn probe_once(backend: &Backend, config: &HealthCheckConfig) -> Result<(), ProbeError> {
    let mut sender = connect::<Empty<Bytes>>(backend.addr(), config.timeout).await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(config.path.as_str())
        .header(header::HOST, backend.host_header())
        .header(
            header::USER_AGENT,
            HeaderValue::from_static("alb-health-check"),
        )
        .header(header::CONNECTION, HeaderValue::from_static("close"))
        .body(Empty::new())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(ProbeError::Request)?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(ProbeError::Status(status.as_u16()))
    }
}
