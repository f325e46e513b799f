//! The built-in demo: a tiny HTTP backend (`alb backend`) and a one-command setup of the balancer in
//! front of two of them (`alb demo`), so alb can be tried with nothing else installed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// What a demo backend answers with.
#[derive(Debug, Clone, Default)]
pub struct DemoBackend {
    pub name: String,
    pub delay: Duration,
    /// Answer every request with this many bytes instead of the greeting (for benchmarks).
    pub body_bytes: Option<usize>,
}

/// Path that answers with the number of other requests served so far.
pub const REQUESTS_PATH: &str = "/__requests";

/// A demo backend while it serves.
#[derive(Debug)]
struct Serving {
    name: HeaderValue,
    greeting: String,
    fixed: Option<Bytes>,
    requests: AtomicU64,
}

impl Serving {
    fn new(backend: &DemoBackend) -> Serving {
        Serving {
            name: HeaderValue::from_str(&backend.name)
                .unwrap_or_else(|_| HeaderValue::from_static("demo")),
            greeting: format!("Hello from {}", backend.name),
            fixed: backend.body_bytes.map(|n| Bytes::from(vec![b'x'; n])),
            requests: AtomicU64::new(0),
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let body = if req.uri().path() == REQUESTS_PATH {
            Bytes::from(format!("{}\n", self.requests.load(Ordering::Relaxed)))
        } else {
            self.requests.fetch_add(1, Ordering::Relaxed);
            match &self.fixed {
                Some(fixed) => fixed.clone(),
                None => Bytes::from(format!(
                    "{}: {} {}\n",
                    self.greeting,
                    req.method(),
                    req.uri().path()
                )),
            }
        };
        let mut response = Response::new(Full::new(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-backend", self.name.clone());
        response
    }
}

impl DemoBackend {
    /// Serves every path on `listener` until `shutdown` completes, then closes its connections.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let delay = self.delay;
        let backend = Arc::new(Serving::new(&self));
        let graceful = GracefulShutdown::new();
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let backend = backend.clone();
                    let service = service_fn(move |req: Request<Incoming>| {
                        let backend = backend.clone();
                        async move {
                            let delay = requested_delay(&req).unwrap_or(delay);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(backend.answer(&req))
                        }
                    });
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::spawn(graceful.watch(connection));
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
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
