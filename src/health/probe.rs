//! One health probe: `GET <path>` on a new connection, passing on a 2xx or 3xx status.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use crate::config::HealthCheckConfig;
use crate::http1::{UpstreamError, parse_response_head};
use crate::upstream::{Backend, ConnectError, UpstreamConn};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("request failed: {0}")]
    Request(#[from] UpstreamError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered with status {0}")]
    Status(u16),
}

/// Probes `backend` once within `config.timeout` (connection set-up included); the status it
/// answered when it passed.
pub async fn probe(backend: &Backend, config: &HealthCheckConfig) -> Result<u16, ProbeError> {
    match tokio::time::timeout(config.timeout, probe_once(backend, config)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(config.timeout)),
    }
}

async fn probe_once(backend: &Backend, config: &HealthCheckConfig) -> Result<u16, ProbeError> {
    let status = if backend.is_http2() {
        probe_h2(backend, config).await?
    } else {
        probe_h1(backend, config).await?
    };
    if status.is_success() || status.is_redirection() {
        Ok(status.as_u16())
    } else {
        Err(ProbeError::Status(status.as_u16()))
    }
}

/// `GET <path>` on a new HTTP/2 connection, as the backend's traffic is spoken: a backend that
/// answers HTTP/1.1 probes but not HTTP/2 must not be UP.
async fn probe_h2(
    backend: &Backend,
    config: &HealthCheckConfig,
) -> Result<http::StatusCode, ProbeError> {
    let conn = UpstreamConn::open(backend.addr(), backend.tls(), config.timeout).await?;
    let broken = |e: h2::Error| UpstreamError::Io(std::io::Error::other(format!("HTTP/2: {e}")));
    let (client, connection) = h2::client::handshake(conn.into_parts().0)
        .await
        .map_err(broken)?;
    let driving = tokio::spawn(connection);
    let scheme = if backend.tls().is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!(
        "{scheme}://{}{}",
        backend.host_header().to_str().unwrap_or("localhost"),
        config.path
    );
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "alb-health-check")
        .body(())
        .map_err(|e| UpstreamError::Io(std::io::Error::other(e)))?;
    let answer = async {
        let mut client = client.ready().await?;
        let (response, _) = client.send_request(request, true)?;
        response.await
    };
    let result = answer.await;
    driving.abort();
    Ok(result.map_err(broken)?.status())
}

async fn probe_h1(
    backend: &Backend,
    config: &HealthCheckConfig,
) -> Result<http::StatusCode, ProbeError> {
    let mut conn = UpstreamConn::open(backend.addr(), backend.tls(), config.timeout).await?;
    let mut request = BytesMut::with_capacity(128 + config.path.len());
    request.put_slice(b"GET ");
    request.put_slice(config.path.as_bytes());
    request.put_slice(b" HTTP/1.1\r\nhost: ");
    request.put_slice(backend.host_header().as_bytes());
    request.put_slice(b"\r\nuser-agent: alb-health-check\r\nconnection: close\r\n\r\n");
    // The whole probe runs under `config.timeout` (above); the write is bounded by it too.
    conn.write_all(&mut [std::io::IoSlice::new(&request)], config.timeout)
        .await
        .map_err(|partial| UpstreamError::from(partial.error))?;
    let head = loop {
        if let Some(head) =
            parse_response_head(&mut conn.buf, false, None).map_err(UpstreamError::from)?
        {
            break head;
        }
        if conn.fill().await.map_err(UpstreamError::from)? == 0 {
            return Err(UpstreamError::Closed.into());
        }
    };
    Ok(head.status)
}
