//! HTTP/2 from clients, seen from the wire: curl and h2load (nghttp2), the `h2` crate as a
//! well-formed client (its socket tapped, so the frames alb sent can be checked), and raw frames
//! written by hand for what no client library sends: reset storms, HPACK bombs, CONTINUATION
//! floods, connection-specific fields, more streams than allowed.
//!
//! Behind alb, the backends are the HTTP/1.1 test backends of `support`, which record what
//! reached them. The memory bounds are read from the real binary's /proc/PID/status, where no
//! other test shares the process.

mod caps_and_shutdown;
mod defences;
mod h2c_and_alpn;
mod malformed_fields;
mod streams_and_bodies;
mod upstream;

use crate::support::h2raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::support::binary::LoggedProcess;
use crate::support::pki::{Pki, curl, port_after, write_leaf};
use crate::support::{
    ClosedPort, Scenario, TempDir, TestBackend, TestBalancer, backends_line, pattern_byte,
    wait_until,
};
use h2raw::{Block, Frame, Next, Tap, Tapped};

const QUIET_HEALTH: &str = "[health_check]\ninterval = \"60s\"\n";
/// What any single exchange may take before the test gives up on the balancer.
const DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A well-formed client: the h2 crate over a tapped socket
// ---------------------------------------------------------------------------------------------

struct H2 {
    send: SendRequest<Bytes>,
    /// What alb sent on the connection, frame by frame.
    tapped: Tapped,
    /// The connection task: ends when the connection does.
    conn: JoinHandle<Result<(), h2::Error>>,
}

async fn h2c(addr: SocketAddr) -> H2 {
    h2c_with(addr, &h2::client::Builder::new()).await
}

async fn h2c_with(addr: SocketAddr, builder: &h2::client::Builder) -> H2 {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the balancer");
    let (tap, tapped) = Tap::new(tcp);
    let (send, conn) = tokio::time::timeout(DEADLINE, builder.handshake::<_, Bytes>(tap))
        .await
        .expect("HTTP/2 handshake in time")
        .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    H2 { send, tapped, conn }
}

/// A whole response.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (with `body`, if any, as one piece) and reads the whole response.
async fn exchange(
    send: &SendRequest<Bytes>,
    request: Request<()>,
    body: Option<Bytes>,
) -> Result<Answer, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, body.is_none())?;
    if let Some(body) = body {
        stream.send_data(body, true)?;
    }
    let response = response.await?;
    let (parts, recv) = response.into_parts();
    let (body, trailers) = read_all(recv).await?;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        trailers,
    })
}

async fn read_all(mut recv: h2::RecvStream) -> Result<(Bytes, Option<HeaderMap>), h2::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await?;
    Ok((body.freeze(), trailers))
}

async fn get(h2: &H2, addr: SocketAddr, path: &str) -> Answer {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    tokio::time::timeout(DEADLINE, exchange(&h2.send, request, None))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer in time\n{}", h2.tapped.transcript()))
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", h2.tapped.transcript()))
}

/// A balancer with h2c on its plain listener, and `extra` config lines (sections allowed).
async fn h2c_balancer(backends: &[&TestBackend], extra: &str) -> TestBalancer {
    let extra = if extra.contains("[http2]") {
        extra.replace("[http2]\n", "[http2]\ncleartext = true\n")
    } else {
        format!("{extra}\n[http2]\ncleartext = true\n")
    };
    Scenario::new()
        .backend_urls(backends.iter().map(|b| b.url()))
        .config(&extra)
        .quiet_health()
        .start()
        .await
        .lb
}

/// Asserts a fresh connection to `addr` gets 200 at once.
async fn assert_others_served(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    let h2 = h2c(addr).await;
    let answer = get(&h2, addr, "/").await;
    assert_eq!(answer.status, 200, "another client during {what}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another client waited {:?} during {what}",
        started.elapsed()
    );
}
