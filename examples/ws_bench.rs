//! The WebSocket load of bench/run.sh's scenario S8: an echo server and a client that measures
//! messages per second and round-trip latency through a proxy.
//!
//! ```text
//! ws_bench server PORT
//! ws_bench client URL CONNECTIONS SECONDS SIZE
//! ```
//!
//! `server` listens on 127.0.0.1:PORT. An upgrade request (`Upgrade: websocket` with a
//! `Sec-WebSocket-Key`) is answered `101` and every text or binary message is echoed back; any
//! other request (a health check) gets `200 ok`, on a keep-alive connection, so a proxy may send an
//! upgrade on a connection it pooled after a plain request. `GET /__requests` answers the number
//! of messages echoed so far and `GET /__stats` a JSON line with more counters.
//!
//! `client` opens CONNECTIONS WebSocket connections to URL (`ws://127.0.0.1:PORT/...`), then on
//! each sends a SIZE-byte binary message and waits for its echo, again and again, for SECONDS.
//! It prints one JSON line: messages echoed, messages per second, round-trip percentiles in ms
//! and errors (a connection that fails, an echo that does not match or takes more than 10 s, a
//! close that does not complete). Every wait is bounded.
//!
//! Both run on a current-thread runtime: one core, so that bench.py can pin them with taskset
//! like the other load tools.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{WebSocketStream, connect_async_with_config};

/// The longest a client waits for one echo, for its connection, or for its close.
const WAIT: Duration = Duration::from_secs(10);
/// The server's listen backlog, as bench/nginx.conf gives nginx (`listen ... backlog=4096`).
const BACKLOG: u32 = 4096;
/// The longest request head the server reads.
const MAX_HEAD: usize = 64 * 1024;

const USAGE: &str = "usage: ws_bench server PORT | ws_bench client URL CONNECTIONS SECONDS SIZE";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", port] => match port.parse() {
            Ok(port) => runtime.block_on(server(port)),
            Err(_) => usage(),
        },
        ["client", url, connections, seconds, size] => {
            match (connections.parse(), seconds.parse(), size.parse()) {
                (Ok(connections), Ok(seconds), Ok(size)) if connections > 0 => {
                    runtime.block_on(client(url.to_string(), connections, seconds, size))
                }
                _ => usage(),
            }
        }
        _ => usage(),
    };
    std::process::exit(code);
}

fn usage() -> i32 {
    eprintln!("{USAGE}");
    2
}

// ------------------------------------------------------------------------------------------------
// Server

#[derive(Default)]
struct Counters {
    /// Messages echoed.
    messages: AtomicU64,
    /// WebSocket connections accepted, open now, and ended by an error rather than a close.
    upgrades: AtomicU64,
    open: AtomicU64,
    ws_errors: AtomicU64,
    /// Plain HTTP requests answered.
    http: AtomicU64,
}

impl Counters {
    fn json(&self) -> String {
        format!(
            "{{\"messages\":{},\"upgrades\":{},\"open\":{},\"ws_errors\":{},\"http\":{}}}",
            self.messages.load(Ordering::Relaxed),
            self.upgrades.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed),
            self.ws_errors.load(Ordering::Relaxed),
            self.http.load(Ordering::Relaxed),
        )
    }
}

async fn server(port: u16) -> i32 {
    let listener = match listen(port) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("ws_bench server: bind 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    let counters = Arc::new(Counters::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, counters.clone()));
            }
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                eprintln!("ws_bench server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds 127.0.0.1:PORT with a listen backlog of [`BACKLOG`] (`TcpListener::bind` asks for 128,
/// which a proxy opening many upstream connections at once would overflow).
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(BACKLOG)
}

/// One connection: plain requests until one asks for a WebSocket, then an echo loop.
async fn serve(mut stream: TcpStream, counters: Arc<Counters>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let lower = head.to_ascii_lowercase();
        let field = |name: &str| {
            lower.lines().skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let upgrade = field("upgrade").is_some_and(|v| v.contains("websocket"));
        let close = field("connection").is_some_and(|v| v.contains("close"));
        // Skip a request body (a health check has none, but be exact about framing).
        let body: usize = field("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if !skip_body(&mut stream, &mut buf, body).await {
            return;
        }
        // The key's case matters: take it from the original head, not the lower-cased one.
        let key = head.lines().skip(1).find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim())
        });
        if let (true, Some(key)) = (upgrade, key) {
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                 sec-websocket-accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            echo(stream, std::mem::take(&mut buf), &counters).await;
            return;
        }
        counters.http.fetch_add(1, Ordering::Relaxed);
        let body = match path.as_str() {
            "/__requests" => format!("{}\n", counters.messages.load(Ordering::Relaxed)),
            "/__stats" => format!("{}\n", counters.json()),
            _ => "ok".to_string(),
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if stream.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

async fn echo(stream: TcpStream, read_ahead: Vec<u8>, counters: &Counters) {
    counters.upgrades.fetch_add(1, Ordering::Relaxed);
    counters.open.fetch_add(1, Ordering::Relaxed);
    let mut ws = WebSocketStream::from_partially_read(stream, read_ahead, Role::Server, None).await;
    loop {
        match ws.next().await {
            Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                if ws.send(message).await.is_err() {
                    counters.ws_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.messages.fetch_add(1, Ordering::Relaxed);
            }
            // tungstenite answers pings and closes itself; the stream ends after a close.
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                counters.ws_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            None => break,
        }
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// Reads one request head into a string, leaving what follows it in `buf`. None at the end of
/// the connection, on an error, or for a head longer than [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let mut searched = 0;
    loop {
        if let Some(at) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = searched + at + 4;
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            return Some(head);
        }
        searched = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn skip_body(stream: &mut TcpStream, buf: &mut Vec<u8>, mut len: usize) -> bool {
    let buffered = len.min(buf.len());
    buf.drain(..buffered);
    len -= buffered;
    let mut chunk = [0u8; 4096];
    while len > 0 {
        match stream.read(&mut chunk[..len.min(4096)]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => len -= n,
        }
    }
    true
}

// ------------------------------------------------------------------------------------------------
// Client

/// What one client connection did.
#[derive(Default)]
struct Outcome {
    /// Round trips completed, in microseconds.
    rtts_us: Vec<u32>,
    errors: BTreeMap<&'static str, u64>,
}

impl Outcome {
    fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

async fn client(url: String, connections: usize, seconds: f64, size: usize) -> i32 {
    let payload = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());

    // Open every connection first, so that the timed loop measures messages, not handshakes.
    let opening = Instant::now();
    let mut handshakes = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let url = url.clone();
        handshakes.spawn(async move {
            match timeout(WAIT, connect_async_with_config(url, None, true)).await {
                Ok(Ok((ws, _response))) => Ok(ws),
                Ok(Err(e)) => Err(format!("{e}")),
                Err(_) => Err("handshake timed out".to_string()),
            }
        });
    }
    let mut sockets = Vec::with_capacity(connections);
    let mut total = Outcome::default();
    let mut first_error = None;
    while let Some(joined) = handshakes.join_next().await {
        match joined {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => {
                total.error("connect");
                first_error.get_or_insert(e);
            }
            Err(_) => total.error("connect"),
        }
    }
    let open_ms = opening.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut loops = tokio::task::JoinSet::new();
    for mut ws in sockets {
        let payload = payload.clone();
        loops.spawn(async move {
            let mut out = Outcome::default();
            let mut last = start;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if ws.send(Message::Binary(payload.clone())).await.is_err() {
                    out.error("send");
                    return (out, last);
                }
                match timeout(WAIT, ws.next()).await {
                    Ok(Some(Ok(Message::Binary(echo)))) if echo == payload => {
                        last = Instant::now();
                        let rtt = last.duration_since(sent).as_micros();
                        out.rtts_us.push(u32::try_from(rtt).unwrap_or(u32::MAX));
                    }
                    Ok(Some(Ok(_))) => {
                        out.error("wrong echo");
                        return (out, last);
                    }
                    Ok(Some(Err(_))) => {
                        out.error("receive");
                        return (out, last);
                    }
                    Ok(None) => {
                        out.error("closed by peer");
                        return (out, last);
                    }
                    Err(_) => {
                        out.error("echo timed out");
                        return (out, last);
                    }
                }
            }
            // A clean close: send ours, read until the peer's close ends the stream.
            let closed = timeout(WAIT, async {
                ws.close(None).await.ok()?;
                while let Some(message) = ws.next().await {
                    message.ok()?;
                }
                Some(())
            })
            .await;
            if !matches!(closed, Ok(Some(()))) {
                out.error("close");
            }
            (out, last)
        });
    }
    let mut end = start;
    while let Some(joined) = loops.join_next().await {
        match joined {
            Ok((out, last)) => {
                end = end.max(last);
                total.rtts_us.extend(out.rtts_us);
                for (kind, n) in out.errors {
                    *total.errors.entry(kind).or_default() += n;
                }
            }
            Err(_) => total.error("task"),
        }
    }

    let elapsed = end.duration_since(start).as_secs_f64().max(1e-9);
    let messages = total.rtts_us.len();
    total.rtts_us.sort_unstable();
    let pct = |p: f64| {
        if messages == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * messages as f64).ceil() as usize;
        f64::from(total.rtts_us[i.clamp(1, messages) - 1]) / 1e3
    };
    let errors: u64 = total.errors.values().sum();
    let kinds: Vec<String> = total
        .errors
        .iter()
        .map(|(kind, n)| format!("\"{kind}\":{n}"))
        .collect();
    let first_error = first_error
        .map(|e| {
            format!(
                ",\"first_connect_error\":\"{}\"",
                e.replace(['"', '\\'], "'")
            )
        })
        .unwrap_or_default();
    println!(
        "{{\"connections\":{connections},\"size\":{size},\"open_ms\":{open_ms:.1},\
         \"seconds\":{elapsed:.3},\"messages\":{messages},\"msgs_per_s\":{:.1},\
         \"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\
         \"errors\":{errors},\"error_kinds\":{{{}}}{first_error}}}",
        messages as f64 / elapsed,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0),
        kinds.join(","),
    );
    i32::from(messages == 0)
}
