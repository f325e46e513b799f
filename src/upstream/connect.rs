//! Opening a new HTTP/1.1 connection to a backend.

use std::io;
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::BackendAddr;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

/// Connects with a deadline and spawns the task that drives the connection. The task ends when the
/// connection closes, which is what [`http1::SendRequest::is_closed`] later reports.
pub async fn connect<B>(
    addr: &BackendAddr,
    timeout: Duration,
) -> Result<http1::SendRequest<B>, ConnectError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::time::timeout(timeout, tcp_connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    // Requests and responses are written whole by hyper; Nagle would only add latency.
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn tcp_connect(addr: &BackendAddr) -> io::Result<TcpStream> {
    match addr {
        BackendAddr::Ip(sa) => TcpStream::connect(sa).await,
        BackendAddr::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await,
    }
}
