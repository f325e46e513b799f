//! The built-in demo: a tiny HTTP backend (`alb backend`) and a one-command setup of the balancer in
//! front of two of them (`alb demo`), so alb can be tried with nothing else installed.
//!
//! Each backend has fault knobs ([`Knobs`]) that can be turned while it serves: killed (its
//! listening socket and open connections closed; revived on the same port), added latency (a fixed
//! part plus uniform jitter) and an error rate (that share of requests answered 500). Health checks
//! meet the same faults as traffic: a dead, slow or failing backend fails them as a real one would.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What a demo backend answers with, and its faults when it starts.
#[derive(Debug, Clone, Default)]
pub struct DemoBackend {
    pub name: String,
    /// Added before each answer: `latency` plus a uniform draw in `-jitter..=jitter` (not below 0).
    pub latency: Duration,
    pub jitter: Duration,
    /// Share of requests (0 to 1) answered 500.
    pub error_rate: f64,
    /// Answer every request with this many bytes instead of the greeting (for benchmarks).
    pub body_bytes: Option<usize>,
}

/// Path that answers with the number of other requests served so far. It is an instrument, not
/// traffic: latency and errors leave it alone (a killed backend answers nothing, of course).
pub const REQUESTS_PATH: &str = "/__requests";

/// Longest latency the knobs take (a minute), as for `?delay_ms=N`.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// Error rates are kept in parts per million.
const PPM: f64 = 1_000_000.0;

/// A demo backend's live fault knobs. Every knob is its own atomic read once per request, and no
/// other data is published through them, so `Relaxed` is enough; `killed` is a watch channel
/// because the serving loop waits for it to change.
#[derive(Debug)]
pub struct Knobs {
    latency_ms: AtomicU64,
    jitter_ms: AtomicU64,
    error_ppm: AtomicU32,
    /// What the knob asks for.
    killed: watch::Sender<bool>,
    /// What the serving loop did: whether it has a listening socket.
    listening: watch::Sender<bool>,
    /// The socket `revive` bound, for the serving loop to take.
    revived: Mutex<Option<TcpListener>>,
    /// Requests answered (not counting [`REQUESTS_PATH`]).
    requests: AtomicU64,
    /// Whether a serving loop runs (kill and revive wait for it only then).
    serving: AtomicBool,
}

/// The knobs as the admin API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KnobsView {
    pub killed: bool,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub error_rate: f64,
    pub requests: u64,
}

/// Why a knob could not be turned.
#[derive(Debug, thiserror::Error)]
pub enum KnobError {
    #[error("error rate must be a number from 0 to 1, not {0}")]
    Rate(f64),
    #[error("latency must be at most {MAX_LATENCY_MS} ms")]
    Latency,
    #[error("cannot listen on {addr} again: {source}")]
    Rebind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the backend did not {0} within a second (is it still serving?)")]
    Stuck(&'static str),
}

impl Knobs {
    fn new(backend: &DemoBackend) -> Knobs {
        let knobs = Knobs {
            latency_ms: AtomicU64::new(0),
            jitter_ms: AtomicU64::new(0),
            error_ppm: AtomicU32::new(0),
            killed: watch::Sender::new(false),
            listening: watch::Sender::new(false),
            revived: Mutex::new(None),
            requests: AtomicU64::new(0),
            serving: AtomicBool::new(false),
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let _ = knobs.set_latency(
            ms(backend.latency).min(MAX_LATENCY_MS),
            ms(backend.jitter).min(MAX_LATENCY_MS),
        );
        let _ = knobs.set_error_rate(backend.error_rate.clamp(0.0, 1.0));
        knobs
    }

    pub fn view(&self) -> KnobsView {
        KnobsView {
            killed: *self.killed.borrow(),
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            jitter_ms: self.jitter_ms.load(Ordering::Relaxed),
            error_rate: f64::from(self.error_ppm.load(Ordering::Relaxed)) / PPM,
            requests: self.requests.load(Ordering::Relaxed),
        }
    }

    /// Latency `ms` plus a uniform draw in `-jitter_ms..=jitter_ms` per request.
    pub fn set_latency(&self, ms: u64, jitter_ms: u64) -> Result<(), KnobError> {
        if ms > MAX_LATENCY_MS || jitter_ms > MAX_LATENCY_MS {
            return Err(KnobError::Latency);
        }
        self.latency_ms.store(ms, Ordering::Relaxed);
        self.jitter_ms.store(jitter_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Answer this share of requests (0 to 1) with 500.
    pub fn set_error_rate(&self, rate: f64) -> Result<(), KnobError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(KnobError::Rate(rate));
        }
        // In range and rounded: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ppm = (rate * PPM).round() as u32;
        self.error_ppm.store(ppm, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the listening socket and every open connection; returns once they are closed.
    pub async fn kill(&self) -> Result<(), KnobError> {
        self.killed.send_replace(true);
        self.settled(false, "close its socket").await
    }

    /// Listens on the same address again; returns once it accepts. Reviving a live backend is a
    /// no-op.
    pub async fn revive(&self, addr: SocketAddr) -> Result<(), KnobError> {
        if !*self.killed.borrow() {
            return Ok(());
        }
        let listener = crate::downstream::listen(addr, 1024)
            .map_err(|source| KnobError::Rebind { addr, source })?;
        *self.revived.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
        self.killed.send_replace(false);
        self.settled(true, "listen again").await
    }

    async fn settled(&self, listening: bool, what: &'static str) -> Result<(), KnobError> {
        if !self.serving.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.listening.subscribe();
        match tokio::time::timeout(Duration::from_secs(1), state.wait_for(|l| *l == listening))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(KnobError::Stuck(what)),
        }
    }

    /// This request's added latency.
    fn latency(&self) -> Duration {
        let ms = self.latency_ms.load(Ordering::Relaxed);
        let jitter = self.jitter_ms.load(Ordering::Relaxed);
        let ms = if jitter == 0 {
            ms
        } else {
            (ms + fastrand::u64(0..=2 * jitter)).saturating_sub(jitter)
        };
        Duration::from_millis(ms)
    }

    /// Whether this request is to fail.
    fn fails(&self) -> bool {
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        ppm > 0 && fastrand::u32(0..1_000_000) < ppm
    }
}

/// A demo backend while it serves.
#[derive(Debug)]
struct Serving {
    name: HeaderValue,
    greeting: String,
    fixed: Option<Bytes>,
    knobs: Arc<Knobs>,
}

impl Serving {
    fn new(backend: &DemoBackend, knobs: Arc<Knobs>) -> Serving {
        Serving {
            name: HeaderValue::from_str(&backend.name)
                .unwrap_or_else(|_| HeaderValue::from_static("demo")),
            greeting: format!("Hello from {}", backend.name),
            fixed: backend.body_bytes.map(|n| Bytes::from(vec![b'x'; n])),
            knobs,
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == REQUESTS_PATH {
            let count = self.knobs.requests.load(Ordering::Relaxed);
            return self.response(StatusCode::OK, Bytes::from(format!("{count}\n")));
        }
        let delay = requested_delay(&req).unwrap_or_else(|| self.knobs.latency());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.knobs.requests.fetch_add(1, Ordering::Relaxed);
        if self.knobs.fails() {
            let body = format!("{}: injected error\n", self.greeting);
            return self.response(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(body));
        }
        let body = match &self.fixed {
            Some(fixed) => fixed.clone(),
            None => Bytes::from(format!(
                "{}: {} {}\n",
                self.greeting,
                req.method(),
                req.uri().path()
            )),
        };
        self.response(StatusCode::OK, body)
    }

    fn response(&self, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-backend", self.name.clone());
        response
    }
}

/// Accepts on `listener` if there is one; never completes otherwise (a killed backend).
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

impl DemoBackend {
    /// Its knobs, set from its starting faults; pass them to [`DemoBackend::serve_with`].
    pub fn knobs(&self) -> Arc<Knobs> {
        Arc::new(Knobs::new(self))
    }

    /// Serves every path on `listener` until `shutdown` completes, then closes its connections.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let knobs = self.knobs();
        self.serve_with(listener, knobs, shutdown).await;
    }

    /// As [`DemoBackend::serve`], with its faults turned through `knobs` meanwhile.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        knobs: Arc<Knobs>,
        shutdown: impl Future<Output = ()>,
    ) {
        let backend = Arc::new(Serving::new(&self, knobs.clone()));
        let mut killed = knobs.killed.subscribe();
        let mut listener = Some(listener);
        // Each connection is a task here, so that a kill can cut them all; the graceful watcher
        // inside lets a shutdown finish the requests in flight instead.
        let mut connections = JoinSet::new();
        let graceful = GracefulShutdown::new();
        let mut shutdown = pin!(shutdown);
        knobs.serving.store(true, Ordering::Release);
        loop {
            let kill = *killed.borrow_and_update();
            if kill && listener.is_some() {
                listener = None;
                connections.abort_all();
                tracing::info!("demo backend {}: killed", self.name);
            } else if !kill && listener.is_none() {
                let revived = knobs
                    .revived
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                listener = revived;
                if listener.is_some() {
                    tracing::info!("demo backend {}: revived", self.name);
                }
            }
            knobs.listening.send_replace(listener.is_some());
            tokio::select! {
                () = &mut shutdown => break,
                // The sender lives in `knobs`, held here: this never fails.
                _ = killed.changed() => {}
                accepted = accept(listener.as_ref()) => {
                    let Ok(stream) = accepted else { continue };
                    while connections.try_join_next().is_some() {}
                    let backend = backend.clone();
                    let service = service_fn(move |req: Request<Incoming>| {
                        let backend = backend.clone();
                        async move { Ok::<_, Infallible>(backend.respond(req).await) }
                    });
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    connections.spawn(graceful.watch(connection));
                }
            }
        }
        knobs.serving.store(false, Ordering::Release);
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        connections.shutdown().await;
    }
}

/// The demo's backends as the admin listener turns their knobs (`/api/demo/...`).
#[derive(Debug, Default)]
pub struct DemoBackends {
    backends: Vec<DemoHandle>,
}

/// One of [`DemoBackends`].
#[derive(Debug)]
pub struct DemoHandle {
    pub name: String,
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
}

/// A demo backend as `GET /api/demo/backends` lists it.
#[derive(Debug, Serialize)]
pub struct DemoView {
    /// Its number in `/api/demo/backends/{n}/...` (1 for demo-1).
    pub n: usize,
    pub name: String,
    pub url: String,
    #[serde(flatten)]
    pub knobs: KnobsView,
}

impl DemoBackends {
    pub fn push(&mut self, name: String, addr: SocketAddr, knobs: Arc<Knobs>) {
        self.backends.push(DemoHandle { name, addr, knobs });
    }

    /// Backend `n`, counted from 1.
    pub fn get(&self, n: usize) -> Option<&DemoHandle> {
        n.checked_sub(1).and_then(|i| self.backends.get(i))
    }

    pub fn view(&self, n: usize) -> Option<DemoView> {
        let handle = self.get(n)?;
        Some(DemoView {
            n,
            name: handle.name.clone(),
            url: format!("http://{}", handle.addr),
            knobs: handle.knobs.view(),
        })
    }

    pub fn views(&self) -> Vec<DemoView> {
        (1..=self.backends.len())
            .filter_map(|n| self.view(n))
            .collect()
    }
}

/// Longest delay a request may ask for with `?delay_ms=N`.
const MAX_REQUESTED_DELAY: Duration = Duration::from_secs(60);

/// A delay asked for by the request (`?delay_ms=N`, at most a minute), so that a test or a
/// newcomer can hold a request in flight on purpose; it is logged, since whoever asked for it is
/// usually waiting to see it arrive.
fn requested_delay(req: &Request<Incoming>) -> Option<Duration> {
    let query = req.uri().query()?;
    let ms = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay_ms="))?
        .parse::<u64>()
        .ok()?;
    let delay = Duration::from_millis(ms).min(MAX_REQUESTED_DELAY);
    tracing::info!(
        "holding {} {} for {delay:?}",
        req.method(),
        req.uri().path()
    );
    Some(delay)
}

/// Addresses of the demo's balancer and its backends: backends take the ports right after the
/// balancer's (8081 and 8082 for the default 8080), or ephemeral ports when the balancer's is 0.
pub fn backend_addrs(listen: SocketAddr, count: u16) -> Vec<SocketAddr> {
    (1..=count)
        .map(|i| {
            let port = if listen.port() == 0 {
                0
            } else {
                listen.port().saturating_add(i)
            };
            SocketAddr::new(listen.ip(), port)
        })
        .collect()
}
