//! A backend that records every request exactly as it arrived on the wire, read by a request
//! parser of its own (not alb's, not httparse): what a backend downstream of alb would see.
//!
//! Its parser is strict in the way a victim server must be for a test to mean something: a head
//! with two framing fields or a body it cannot frame is recorded as ambiguous, and the connection
//! is dropped there, since a lenient server could have read those bytes differently. Field names
//! are kept as sent, so a test can look for look-alikes (`Content_Length`) that other servers
//! would take for framing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub target: String,
    /// Every field line in order, name as sent.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The values of `name` (case-insensitive), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.values(name).first().copied()
    }
}

#[derive(Debug, Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Heads the parser could not frame unambiguously, with why.
    ambiguous: Vec<(String, String)>,
    /// Connections the recorder closed because they were idle for its idle limit.
    idle_closed: u64,
}

pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        Recorder::with_idle_limit(Duration::from_secs(5)).await
    }

    /// A recorder that closes a connection idle for `idle` between requests (a backend's
    /// keep-alive timeout).
    pub async fn with_idle_limit(idle: Duration) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    conn = listener.accept() => {
                        let Ok((stream, _)) = conn else { continue };
                        connections.spawn(serve(stream, idle, task_log.clone()));
                    }
                }
            }
            connections.shutdown().await;
        });
        Recorder {
            addr,
            log,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every proxied request (health checks left out), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().requests.clone()
    }

    pub fn ambiguous(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().ambiguous.clone()
    }

    pub fn idle_closed(&self) -> u64 {
        self.log.lock().unwrap().idle_closed
    }

    /// The recorded request for `target`; panics unless there is exactly one.
    pub fn only(&self, target: &str) -> Recorded {
        let found: Vec<Recorded> = self
            .requests()
            .into_iter()
            .filter(|r| r.target == target)
            .collect();
        assert_eq!(found.len(), 1, "{target}: {:?}", self.requests());
        found[0].clone()
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

/// The bytes of one connection and the reads that fill them.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    idle: Duration,
    timed_out: bool,
}

impl Wire {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(self.idle, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => {
                self.timed_out = true;
                false
            }
            _ => false,
        }
    }

    /// The next CRLF-terminated line (without CRLF); a bare LF or CR is an error.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err("bare CR, LF or NUL in a line".into());
                }
                return Ok(Some(line));
            }
            if !self.fill().await {
                return Ok(None);
            }
        }
    }

    async fn exactly(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill().await {
                return Err(format!(
                    "connection ended {} bytes into a {n}-byte body",
                    self.buf.len()
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

async fn serve(stream: TcpStream, idle: Duration, log: Arc<Mutex<Log>>) {
    let mut wire = Wire {
        stream,
        buf: Vec::new(),
        idle,
        timed_out: false,
    };
    loop {
        let request = match read_request(&mut wire).await {
            Ok(Some(request)) => request,
            Ok(None) => {
                let idle_close = wire.timed_out && wire.buf.is_empty();
                // Closed before it is counted: a test that waits for the count may rely on
                // the close having been sent.
                drop(wire);
                if idle_close {
                    log.lock().unwrap().idle_closed += 1;
                }
                return;
            }
            Err((head, why)) => {
                log.lock().unwrap().ambiguous.push((head, why));
                return;
            }
        };
        let probe = request
            .header("user-agent")
            .is_some_and(|ua| ua.contains("alb-health-check"));
        let close = request
            .values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        let body = if probe {
            "ok".to_string()
        } else {
            let mut log = log.lock().unwrap();
            log.requests.push(request.clone());
            format!("request {} {}", log.requests.len() - 1, request.target)
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nserver: recorder\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if wire.stream.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads one request by RFC 9112, refusing whatever a server could frame two ways.
async fn read_request(wire: &mut Wire) -> Result<Option<Recorded>, (String, String)> {
    let fail = |head: &str, why: String| (head.to_string(), why);
    let line = match wire.line().await {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(None),
        Err(why) => return Err(fail("", why)),
    };
    let request_line = String::from_utf8_lossy(&line).to_string();
    let mut parts = request_line.split(' ');
    let (Some(_method), Some(target), Some("HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail(&request_line, "bad request line".into()));
    };
    let mut fields = Vec::new();
    loop {
        let line = match wire.line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(fail(&request_line, "head cut".into())),
            Err(why) => return Err(fail(&request_line, why)),
        };
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let Some((name, value)) = text.split_once(':') else {
            return Err(fail(
                &request_line,
                format!("field without colon: {text:?}"),
            ));
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(fail(&request_line, format!("bad field name {name:?}")));
        }
        fields.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let mut record = Recorded {
        target: target.to_string(),
        fields,
        body: Vec::new(),
    };
    let lengths = record.values("content-length");
    let codings = record.values("transfer-encoding");
    record.body = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Vec::new(),
        ([length], []) => {
            if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) || length.len() > 15
            {
                return Err(fail(
                    &request_line,
                    format!("bad Content-Length {length:?}"),
                ));
            }
            let n: usize = length.parse().unwrap();
            wire.exactly(n)
                .await
                .map_err(|why| fail(&request_line, why))?
        }
        ([], ["chunked"]) => read_chunked(wire)
            .await
            .map_err(|why| fail(&request_line, why))?,
        _ => {
            return Err(fail(
                &request_line,
                format!("framing fields: length {lengths:?}, coding {codings:?}"),
            ));
        }
    };
    Ok(Some(record))
}

async fn read_chunked(wire: &mut Wire) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = wire.line().await?.ok_or("chunked body cut")?;
        let size = String::from_utf8_lossy(&line);
        let size = size.split(';').next().unwrap_or("");
        if size.is_empty() || size.len() > 12 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad chunk size {size:?}"));
        }
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            // Trailer section, then the end.
            loop {
                let line = wire.line().await?.ok_or("trailers cut")?;
                if line.is_empty() {
                    return Ok(body);
                }
            }
        }
        body.extend(wire.exactly(n).await?);
        if wire.exactly(2).await? != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
    }
}
