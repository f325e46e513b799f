//! The recording backend: a raw TCP server on 127.0.0.1:0 that reads what alb sends with the
//! test's own parser ([`super::wire`]), records every request, and answers each with `200`, a
//! Content-Length and a body naming the request's index (`request N`), keeping the connection
//! open. What it cannot read unambiguously is recorded as a desync, answered with `400` and
//! `connection: close`, and the connection closed, as RFC 9112 §6.3 has a server do.
//!
//! A victim request (one carrying `X-Victim`) is the last a case sends: its answer says
//! `connection: close` and the connection closes, so that the next case starts on a fresh upstream
//! connection and whatever a case left on its pooled connection is that case's finding.
//!
//! Each record is tagged with the case the test was running when it arrived (`set_case`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::wire::{self, Parsed, Request};

/// The health check path alb is configured with: requests for it are probes, not traffic.
pub const HEALTH_PATH: &str = "/__alb_probe";
/// Most bytes of a connection kept once it has desynchronised.
const KEPT_DESYNC_BYTES: usize = 2048;

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its index, named in the answer.
    pub seq: usize,
    /// The case running when it arrived.
    pub case: usize,
    /// The upstream connection it came on, and its place on it.
    pub conn: u64,
    pub nth: usize,
    pub request: Request,
}

/// Bytes the backend could not read as one request.
#[derive(Debug, Clone)]
pub struct Desync {
    pub case: usize,
    pub conn: u64,
    /// Requests read on that connection before.
    pub after: usize,
    pub why: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Log {
    records: Vec<Recorded>,
    desyncs: Vec<Desync>,
    probes: usize,
    /// Probes whose answer was written whole: cutting connections after that cannot fail one.
    probes_answered: usize,
}

pub struct RecordingBackend {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    case: Arc<AtomicUsize>,
    connections: Arc<AtomicU64>,
    /// The tasks serving open connections, so that they can be cut.
    open: Arc<Mutex<Vec<AbortHandle>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RecordingBackend {
    pub async fn start() -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let case = Arc::new(AtomicUsize::new(usize::MAX));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let open = Arc::new(Mutex::new(Vec::new()));
        let (task_log, task_case, task_conns) = (log.clone(), case.clone(), connections.clone());
        let task_open = open.clone();
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let id = task_conns.fetch_add(1, Ordering::SeqCst);
                        let handle = tasks.spawn(serve(stream, id, task_log.clone(), task_case.clone()));
                        task_open.lock().unwrap().push(handle);
                    }
                }
            }
            tasks.shutdown().await;
        });
        RecordingBackend {
            addr,
            log,
            case,
            connections,
            open,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tags what arrives from now on with case `id`.
    pub fn set_case(&self, id: usize) {
        self.case.store(id, Ordering::SeqCst);
    }

    /// Closes every open connection, as a backend may close an idle one at any time: the next
    /// case starts on a fresh upstream connection, whatever the last one left on its own.
    pub fn close_connections(&self) {
        for handle in self.open.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// Records and desyncs tagged with case `id`.
    pub fn of_case(&self, id: usize) -> (Vec<Recorded>, Vec<Desync>) {
        let log = self.log.lock().unwrap();
        (
            log.records
                .iter()
                .filter(|r| r.case == id)
                .cloned()
                .collect(),
            log.desyncs
                .iter()
                .filter(|d| d.case == id)
                .cloned()
                .collect(),
        )
    }

    pub fn record(&self, seq: usize) -> Option<Recorded> {
        self.log.lock().unwrap().records.get(seq).cloned()
    }

    /// Whether alb's first health probe has had its answer: until then, cutting connections
    /// (see [`Self::close_connections`]) could fail it, and alb would take the backend for DOWN.
    pub fn probed(&self) -> bool {
        self.log.lock().unwrap().probes_answered > 0
    }

    /// (requests recorded, desyncs, probes, upstream connections accepted)
    pub fn totals(&self) -> (usize, usize, usize, u64) {
        let log = self.log.lock().unwrap();
        (
            log.records.len(),
            log.desyncs.len(),
            log.probes,
            self.connections.load(Ordering::SeqCst),
        )
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn is_probe(request: &Request) -> bool {
    request.target == HEALTH_PATH.as_bytes()
        && request
            .value("user-agent")
            .is_some_and(|ua| ua.starts_with("alb-health"))
}

/// Reads requests off one upstream connection until it closes or desynchronises.
async fn serve(mut stream: TcpStream, conn: u64, log: Arc<Mutex<Log>>, case: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut nth = 0;
    loop {
        match wire::parse_request(&buf) {
            Parsed::Complete(request, used) => {
                buf.drain(..used);
                let head = request.method == b"HEAD";
                let close = request.value("x-victim").is_some()
                    || request.value("connection").is_some_and(|c| {
                        c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
                    });
                let probe = is_probe(&request);
                let answer = if probe {
                    log.lock().unwrap().probes += 1;
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
                } else {
                    let mut log = log.lock().unwrap();
                    let seq = log.records.len();
                    log.records.push(Recorded {
                        seq,
                        case: case.load(Ordering::SeqCst),
                        conn,
                        nth,
                        request,
                    });
                    nth += 1;
                    let body = format!("request {seq}");
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-recorded: {seq}\r\n{}\r\n",
                        body.len(),
                        if close { "connection: close\r\n" } else { "" }
                    )
                    .into_bytes();
                    if !head {
                        answer.extend_from_slice(body.as_bytes());
                    }
                    answer
                };
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
                if probe {
                    log.lock().unwrap().probes_answered += 1;
                }
                if close {
                    return;
                }
            }
            Parsed::Desync(why) => {
                log.lock().unwrap().desyncs.push(Desync {
                    case: case.load(Ordering::SeqCst),
                    conn,
                    after: nth,
                    why,
                    bytes: buf[..buf.len().min(KEPT_DESYNC_BYTES)].to_vec(),
                });
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 6\r\nx-desync: 1\r\n\
                          connection: close\r\n\r\ndesync",
                    )
                    .await;
                return;
            }
            Parsed::Incomplete => match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
}
