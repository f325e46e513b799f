//! A real HTTP/1.1 backend on loopback that counts hits, records what it received and can be
//! told to be slow, hang, fail or die.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::{ClosedPort, TestBody, full, pattern_body};

/// How a test backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Normal = 0,
    /// Read every request, health checks included, and never answer.
    Hang = 1,
    /// Answer every request, health checks included, with 500.
    Fail = 2,
    /// Answer health checks, never answer proxied requests.
    HangTraffic = 3,
    /// Answer health checks, close the connection on proxied requests without answering.
    DropTraffic = 4,
    /// Answer health checks, answer proxied requests with 500.
    FailTraffic = 5,
}

/// What a backend saw of the last request it received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

#[derive(Debug)]
struct State {
    name: String,
    hits: AtomicU64,
    probes: AtomicU64,
    connections: AtomicU64,
    delay_ms: AtomicU64,
    mode: AtomicU8,
    last: Mutex<Option<Seen>>,
}

/// A real HTTP/1.1 backend on loopback.
///
/// Paths: `/echo` streams the request body back; `/count` reads the whole body, then answers with
/// its length; `/bytes/N` streams N bytes in 64 KiB chunks;
/// `/status/N` answers with status N; anything else answers with the backend's name. Requests
/// whose user agent is alb's health check are not counted as hits.
pub struct TestBackend {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        TestBackend::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    /// Starts on a given address: how a test brings a stopped backend back on its old port.
    pub async fn start_on(addr: SocketAddr, name: &str) -> TestBackend {
        let state = Arc::new(State {
            name: name.to_string(),
            hits: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            mode: AtomicU8::new(Mode::Normal as u8),
            last: Mutex::new(None),
        });
        let listener = listen_on(addr).await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, state.clone(), stopped));
        TestBackend {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Health-check requests received.
    pub fn probes(&self) -> u64 {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Delays each proxied request by `delay` (health checks are answered at once).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn last_request(&self) -> Option<Seen> {
        self.state.last.lock().unwrap().clone()
    }

    /// Stops the backend like a crash: the listener closes and every open connection is cut.
    /// Its port stays taken (connects to it are refused) while the returned `ClosedPort` lives:
    /// no other test's server can land there, and `start_on` can bring the backend back on it.
    pub async fn stop(mut self) -> ClosedPort {
        let closed = ClosedPort::beside(self.addr);
        self.shutdown().await;
        closed
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let service = service_fn(move |req| answer(state.clone(), req));
                connections.spawn(async move {
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

type AnswerError = Box<dyn std::error::Error + Send + Sync>;

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, AnswerError> {
    let health_check = req
        .headers()
        .get("user-agent")
        .is_some_and(|v| v.as_bytes().starts_with(b"alb-health"));
    if health_check {
        state.probes.fetch_add(1, Ordering::SeqCst);
    } else {
        state.hits.fetch_add(1, Ordering::SeqCst);
        *state.last.lock().unwrap() = Some(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
        });
    }
    // Only proxied requests are delayed: a slow backend still passes its health checks (a test
    // wanting a probe to time out uses `Mode::Hang`), so a delay set before alb's first probe
    // cannot mark the backend DOWN halfway through a test.
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 && !health_check {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match state.mode.load(Ordering::SeqCst) {
        1 => std::future::pending::<()>().await,
        2 => {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failing on purpose",
                &state.name,
            ));
        }
        3 if !health_check => std::future::pending::<()>().await,
        // hyper closes the connection without a response when the service fails.
        4 if !health_check => return Err("dropping the connection on purpose".into()),
        5 if !health_check => {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failing traffic on purpose",
                &state.name,
            ));
        }
        _ => {}
    }
    if req.uri().path() == "/stall" {
        // One chunk, then silence: a backend that hangs mid-body.
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"first chunk")).await;
            std::future::pending::<()>().await;
            drop(tx);
        });
        let mut response = Response::new(body.boxed());
        response
            .headers_mut()
            .insert("x-backend", state.name.parse().unwrap());
        return Ok(response);
    }
    if req.uri().path() == "/count" {
        // Reads the whole body before answering, as most application servers do.
        let body = req.into_body().collect().await?.to_bytes();
        return Ok(text(StatusCode::OK, &body.len().to_string(), &state.name));
    }
    if req.uri().path() == "/hop" {
        let mut response = text(StatusCode::OK, "hop", &state.name);
        let h = response.headers_mut();
        h.insert("connection", "x-private".parse().unwrap());
        h.insert("x-private", "secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authenticate", "Basic realm=x".parse().unwrap());
        h.insert("x-public", "ok".parse().unwrap());
        return Ok(response);
    }
    let path = req.uri().path().to_string();
    if path == "/echo" {
        let body = req.into_body().map_err(std::io::Error::other).boxed();
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("x-backend", state.name.parse().unwrap());
        return Ok(response);
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        let mut response = Response::new(pattern_body(n));
        response
            .headers_mut()
            .insert("x-backend", state.name.parse().unwrap());
        return Ok(response);
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|n| n.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return Ok(text(status, &format!("status {code}"), &state.name));
    }
    Ok(text(StatusCode::OK, &state.name, &state.name))
}

fn text(status: StatusCode, body: &str, name: &str) -> Response<TestBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-backend", name.parse().unwrap());
    response
}

/// A backend's listener on `addr`, with SO_REUSEPORT so that a `ClosedPort` can hold its port
/// beside it and a revived backend can listen beside that `ClosedPort`.
pub async fn listen_on(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("bind test backend on {addr}: {e}"));
    socket.listen(1024).expect("listen")
}
