//! Test harness: real HTTP backends on 127.0.0.1 port 0 that count hits, record what they received
//! and can be told to be slow, hang, fail or die (`backend`); alb started in-process on port 0
//! (`balancer`), both set up together by a `Scenario`; ports held for a test (`ports`); bodies
//! (`body`); and a plain HTTP client. Every server started here is stopped by the test that
//! started it.

pub mod binary;
pub mod cpu;
pub mod dns;
pub mod encode;
pub mod h2raw;
pub mod kube_api;
mod load;
pub mod pki;
pub mod prerequisite;
pub mod recorder;
pub mod redis;
mod scenario;
pub use load::SteadyLoad;
pub use scenario::{Running, Scenario};

mod backend;
mod balancer;
mod body;
mod ports;
pub use backend::*;
pub use balancer::*;
pub use body::*;
pub use ports::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

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

/// `n` sequential GETs of `url`, each answered 200: how many each backend answered.
pub async fn answers_by_backend(url: &str, n: usize) -> std::collections::HashMap<String, usize> {
    let client = client();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..n {
        let (status, headers, _) = get(&client, url).await;
        assert_eq!(status, 200);
        *counts.entry(backend_of(&headers)).or_insert(0) += 1;
    }
    counts
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
