//! Test harness: real HTTP backends on 127.0.0.1 port 0 that count hits, record what they received
//! and can be told to be slow, hang, fail or die; a balancer started in-process on port 0; and a
//! plain HTTP client. Every server started here is stopped by the test that started it.

pub mod binary;
pub mod dns;
pub mod encode;
pub mod h2raw;
mod load;
pub mod pki;
pub mod prerequisite;
pub mod recorder;
mod scenario;
pub use load::SteadyLoad;
pub use scenario::Scenario;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use alb::{Config, Server};

pub type TestBody = BoxBody<Bytes, std::io::Error>;

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
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
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

/// A loopback address where connects are refused, for as long as this lives: a socket bound to
/// the port and never listening. Unlike a port freed after use, no other test can take it (the
/// socket has no SO_REUSEADDR, so no bind to port 0 lands there), and unlike a listener that
/// never accepts, the kernel refuses connects at once.
pub struct ClosedPort {
    addr: SocketAddr,
    _socket: TcpSocket,
}

impl ClosedPort {
    /// A fresh closed port.
    pub fn new() -> ClosedPort {
        ClosedPort::bind("127.0.0.1:0".parse().unwrap(), false)
    }

    /// Holds the port of a listening backend, so that it stays taken once the backend stops.
    fn beside(addr: SocketAddr) -> ClosedPort {
        ClosedPort::bind(addr, true)
    }

    fn bind(addr: SocketAddr, reuseport: bool) -> ClosedPort {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseport(reuseport).expect("SO_REUSEPORT");
        socket
            .bind(addr)
            .unwrap_or_else(|e| panic!("hold {addr}: {e}"));
        let addr = socket.local_addr().expect("bound address");
        ClosedPort {
            addr,
            _socket: socket,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// A free loopback port for a server that is told a port number instead of being handed a
/// listener (alb's TLS listener with `redirect_http`, chromedriver, HAProxy): a socket bound to
/// it with SO_REUSEADDR and never listening. The server, binding with SO_REUSEADDR too, can
/// listen there; a bind to port 0 elsewhere does not land there. Keep it until the server
/// listens.
pub struct ReservedPort {
    port: u16,
    _socket: TcpSocket,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind a free port");
        let port = socket.local_addr().expect("bound address").port();
        ReservedPort {
            port,
            _socket: socket,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::ops::Deref for ClosedPort {
    type Target = SocketAddr;
    fn deref(&self) -> &SocketAddr {
        &self.addr
    }
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

/// The byte at offset `i` of every generated body: lets a receiver check content without storing it.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// A body of `n` pattern bytes, produced in 64 KiB chunks as the reader pulls them (each chunk a
/// zero-copy slice of one precomputed buffer).
pub fn pattern_body(n: u64) -> TestBody {
    const CHUNK: u64 = 64 * 1024;
    let source = Bytes::from((0..CHUNK + 251).map(pattern_byte).collect::<Vec<u8>>());
    let chunks = (0..n.div_ceil(CHUNK)).map(move |c| {
        let start = c * CHUNK;
        let len = (start + CHUNK).min(n) - start;
        let offset = (start % 251) as usize;
        Ok::<_, std::io::Error>(Frame::data(source.slice(offset..offset + len as usize)))
    });
    StreamBody::new(futures_stream(chunks)).boxed()
}

/// An iterator as a `Stream`, without pulling in a stream crate.
fn futures_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// Reads a body to its end, checking it against the pattern; returns its length.
pub async fn read_pattern(mut body: Incoming) -> u64 {
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            for (k, byte) in data.iter().enumerate() {
                assert_eq!(
                    *byte,
                    pattern_byte(offset + k as u64),
                    "byte {} differs",
                    offset + k as u64
                );
            }
            offset += data.len() as u64;
        }
    }
    offset
}

/// A balancer running in-process on 127.0.0.1 port 0.
pub struct TestBalancer {
    pub addr: SocketAddr,
    /// The `[tls]` listener's address, when configured.
    pub tls_addr: Option<SocketAddr>,
    pub proxy: Arc<alb::proxy::Proxy>,
    admin: Arc<std::sync::OnceLock<SocketAddr>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBalancer {
    /// Starts a balancer from config text; `listen` is set to port 0 unless given.
    pub async fn start(toml: &str) -> TestBalancer {
        let mut toml = if toml.starts_with("listen") {
            toml.to_string()
        } else {
            format!("listen = \"127.0.0.1:0\"\n{toml}")
        };
        if !toml.contains("[admin]") {
            // Tests run side by side: no shared default admin port.
            toml.push_str("\n[admin]\nlisten = \"off\"\n");
        }
        let config = Config::from_toml(&toml, "test.toml").expect("valid test config");
        TestBalancer::start_config(config).await
    }

    pub async fn start_config(config: Config) -> TestBalancer {
        TestBalancer::start_server(config, None).await
    }

    /// Starts a balancer from a config file, which a reload re-reads.
    pub async fn start_file(path: &std::path::Path) -> TestBalancer {
        let config = Config::load(path).expect("valid test config file");
        TestBalancer::start_server(config, Some(path.to_path_buf())).await
    }

    async fn start_server(config: Config, source: Option<std::path::PathBuf>) -> TestBalancer {
        let listener = TcpListener::bind(config.listen)
            .await
            .expect("bind balancer");
        let mut server = Server::from_listener(listener, config).expect("server");
        if let Some(path) = source {
            server = server.with_source(path);
        }
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let proxy = server.proxy().clone();
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server run");
        });
        TestBalancer {
            addr,
            tls_addr,
            proxy,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin listener's URL for `path`, once it is listening (config `[admin] listen`).
    pub async fn admin_url(&self, path: &str) -> String {
        wait_until(Duration::from_secs(5), || self.admin.get().is_some())
            .await
            .expect("admin listener started");
        format!("http://{}{}", self.admin.get().unwrap(), path)
    }

    /// Graceful stop; waits until the server has drained and returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// Waits until the balancer's view of `backend` is `healthy`, or panics after `within`.
    pub async fn wait_health(&self, backend: &SocketAddr, healthy: bool, within: Duration) {
        let url = format!("http://{backend}");
        let found = self
            .proxy
            .backends()
            .iter()
            .find(|b| b.url() == url)
            .unwrap_or_else(|| panic!("{url} is not a backend"))
            .clone();
        wait_until(within, || found.is_healthy() == healthy)
            .await
            .unwrap_or_else(|_| panic!("{url} did not become healthy={healthy} within {within:?}"));
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Config lines listing `backends` (the `backends = [...]` form).
pub fn backends_line(backends: &[&TestBackend]) -> String {
    let urls: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    format!("backends = [{}]\n", urls.join(", "))
}

/// Polls `condition` every 5 ms until it holds or `within` passes: for state that has no event to
/// await (health flags flipped by a background task).
pub async fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A GET; returns status, headers and the whole body.
pub async fn get(
    client: &Client<HttpConnector, TestBody>,
    url: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::get(url).body(full(Bytes::new())).unwrap();
    send(client, request).await
}

pub async fn send(
    client: &Client<HttpConnector, TestBody>,
    request: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    let response = client
        .request(request)
        .await
        .expect("request through the balancer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    (parts.status, parts.headers, body)
}

/// The backend name a response came from.
pub fn backend_of(headers: &HeaderMap) -> String {
    headers
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A directory under the system temp dir, unique to this process and `name`, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        // Every test of the crate shares one process: a counter keeps two tests' directories of
        // one name apart.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("alb-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Writes `text` to `file` in the directory and returns its path.
    pub fn write(&self, file: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads until the peer closes or `within` passes; returns what came and whether it closed.
pub async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}
