//! WebSocket through alb, with a real WebSocket library on both ends (tokio-tungstenite): the
//! client connects to alb, the backends are WebSocket servers on loopback. What is checked is
//! what the client and the backends see (RFC 6455 frames intact, the handshake's fields at the
//! backend), and alb's own account of its tunnels (in flight, open, bytes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Scenario, TestBalancer, wait_until};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket echo server on loopback that also answers plain HTTP (alb's health checks).
///
/// A handshake is answered with `101` and, in the same write, a text message `hello NAME`: the
/// first frame of the new protocol arrives with the head, as servers that speak first send it.
/// Then every text or binary message is echoed. Paths: `/refuse` answers an upgrade request
/// with `403` (and the connection stays HTTP), `/wrong-switch` switches to `h2c` instead,
/// `/flood` sends 64 KiB messages without pause instead of echoing. A plain
/// request gets `200` with the head it received as its body.
struct WsBackend {
    addr: SocketAddr,
    /// WebSocket connections open now, and in all.
    open: Arc<AtomicUsize>,
    upgrades: Arc<AtomicUsize>,
    /// The head of the last handshake received.
    last_handshake: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl WsBackend {
    async fn start(name: &str) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let upgrades = Arc::new(AtomicUsize::new(0));
        let last_handshake = Arc::new(Mutex::new(String::new()));
        let state = (
            name.to_string(),
            open.clone(),
            upgrades.clone(),
            last_handshake.clone(),
        );
        let task = tokio::spawn(async move {
            // Dropped with this task: every connection dies with the server.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { return };
                        connections.spawn(serve(stream, state.clone()));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        WsBackend {
            addr,
            open,
            upgrades,
            last_handshake,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Kills the server and every connection it has, without a WebSocket close.
    fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type State = (
    String,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<Mutex<String>>,
);

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(mut stream: TcpStream, (name, open, upgrades, last): State) {
    let mut buf = Vec::new();
    loop {
        let Some((head, rest)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        buf = rest;
        let lower = head.to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let key = lower
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-key:"))
            .map(|k| head[lower.find(k).unwrap()..][..k.len()].trim().to_string());
        let wants_ws = lower.contains("upgrade: websocket");
        if path == "/refuse" && wants_ws {
            let _ = stream
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno")
                .await;
            continue;
        }
        if path == "/wrong-switch" {
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n")
                .await;
            continue;
        }
        let (true, Some(key)) = (wants_ws, key) else {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}",
                head.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            continue;
        };
        *last.lock().unwrap() = head.clone();
        upgrades.fetch_add(1, Ordering::SeqCst);
        open.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(open.clone());
        let greeting = format!("hello {name}");
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        // An unmasked text frame, short enough for a one-byte length.
        out.extend_from_slice(&[0x81, greeting.len() as u8]);
        out.extend_from_slice(greeting.as_bytes());
        if stream.write_all(&out).await.is_err() {
            return;
        }
        let mut ws = WebSocketStream::from_partially_read(stream, buf, Role::Server, None).await;
        if path == "/flood" {
            // As fast as the tunnel takes it, until it breaks.
            while ws.send(Message::binary(vec![0u8; 64 * 1024])).await.is_ok() {}
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            let echoed = match message {
                Message::Text(_) | Message::Binary(_) => ws.send(message).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if echoed.is_err() {
                break;
            }
        }
        return;
    }
}

/// Reads one request head; returns it and what came after it.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn balancer(backends: &[&WsBackend], extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_urls(backends.iter().map(|b| b.url()))
        .config(extra)
        .quiet_health()
        .start()
        .await
        .lb
}

/// Connects through alb and reads the backend's greeting: returns the client and the name of
/// the backend it reached.
async fn connect(lb: &TestBalancer, path: &str) -> (Client, String) {
    let url = format!("ws://{}{path}", lb.addr);
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(response.status(), 101);
    let connection = response.headers()["connection"].to_str().unwrap();
    assert!(connection.eq_ignore_ascii_case("upgrade"), "{connection}");
    let hello = next_message(&mut ws).await;
    let Some(Message::Text(hello)) = hello else {
        panic!("expected a greeting, got {hello:?}");
    };
    let name = hello
        .as_str()
        .strip_prefix("hello ")
        .expect("greeting")
        .to_string();
    (ws, name)
}

async fn next_message(ws: &mut Client) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message or the end within 5 s")
        .and_then(Result::ok)
}

/// Sends `message` and expects it back.
async fn echo(ws: &mut Client, message: Message) {
    ws.send(message.clone()).await.expect("send");
    assert_eq!(next_message(ws).await, Some(message));
}

fn tunnels_open(lb: &TestBalancer) -> i64 {
    lb.proxy.stats().tunnels_open.load(Ordering::SeqCst)
}

#[tokio::test]
async fn text_binary_and_a_one_mebibyte_message_pass_intact() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "").await;
    let (mut ws, name) = connect(&lb, "/chat?room=1").await;
    assert_eq!(name, "b1");
    echo(&mut ws, Message::text("héllo, wörld")).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 0xff, 0x81, 0x00])).await;
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    echo(&mut ws, Message::binary(big)).await;
    // Ping is answered by the backend's library, through the tunnel.
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    assert_eq!(
        next_message(&mut ws).await,
        Some(Message::Pong(b"p".to_vec().into()))
    );

    // The backend saw the handshake with alb's forwarding fields and the client's Host.
    let head = backend.last_handshake.lock().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /chat?room=1 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-version: 13\r\n"), "{head}");
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nhost: {}\r\n", lb.addr)),
        "{head}"
    );

    // Open, it is in flight on its backend and counted; closed, neither.
    let b = lb.proxy.backends()[0].clone();
    assert_eq!(b.in_flight(), 1);
    assert_eq!(tunnels_open(&lb), 1);
    ws.close(None).await.unwrap();
    while next_message(&mut ws).await.is_some() {}
    drop(ws);
    wait_until(Duration::from_secs(5), || {
        b.in_flight() == 0 && tunnels_open(&lb) == 0
    })
    .await
    .expect("the tunnel is released when it closes");
    let stats = lb.proxy.stats();
    let up = stats.tunnel_bytes_to_backends.load(Ordering::SeqCst);
    let down = stats.tunnel_bytes_to_clients.load(Ordering::SeqCst);
    assert!(
        up > 1024 * 1024 && down > 1024 * 1024,
        "{up} up, {down} down"
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_tunnels_are_spread_evenly_and_all_echo() {
    let _cpu = crate::support::cpu::shared().await;
    let (a, b) = (WsBackend::start("a").await, WsBackend::start("b").await);
    let lb = balancer(&[&a, &b], "").await;
    let clients = 200;
    let all_open = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (all_open, release) = (all_open.clone(), release.clone());
        let url = format!("ws://{}/c{i}", lb.addr);
        tasks.spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            assert!(matches!(
                next_message(&mut ws).await,
                Some(Message::Text(_))
            ));
            let released = release.notified();
            all_open.wait().await;
            released.await;
            for n in 0..3 {
                echo(&mut ws, Message::text(format!("client {i} message {n}"))).await;
            }
            ws.close(None).await.expect("close");
        });
    }
    all_open.wait().await;
    // Every handshake is in, so every tunnel is open: the balancer counts them all.
    wait_until(Duration::from_secs(5), || {
        tunnels_open(&lb) == clients as i64
    })
    .await
    .unwrap_or_else(|_| panic!("{} tunnels open", tunnels_open(&lb)));
    let (on_a, on_b) = (a.open(), b.open());
    assert_eq!(on_a + on_b, clients);
    assert!(on_a.abs_diff(on_b) <= 2, "least_conn split {on_a} / {on_b}");
    release.notify_waiters();
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
    wait_until(Duration::from_secs(5), || tunnels_open(&lb) == 0)
        .await
        .expect("all tunnels closed");
    lb.stop().await;
}

/// Least connections counts a tunnel for as long as it is open: after closing ten tunnels on
/// one backend, the next ten all go there.
#[tokio::test]
async fn least_conn_counts_open_tunnels_not_handshakes() {
    let _cpu = crate::support::cpu::shared().await;
    let (a, b) = (WsBackend::start("a").await, WsBackend::start("b").await);
    let lb = balancer(&[&a, &b], "").await;
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(connect(&lb, "/").await);
    }
    assert_eq!((a.open(), b.open()), (10, 10));
    // Plain requests in between leave no trace once answered.
    for _ in 0..5 {
        let (status, _, _) =
            crate::support::get(&crate::support::client(), &lb.url("/plain")).await;
        assert_eq!(status, 200);
    }
    let (on_a, rest): (Vec<_>, Vec<_>) = open.into_iter().partition(|(_, name)| name == "a");
    for (mut ws, _) in on_a {
        ws.close(None).await.unwrap();
        while next_message(&mut ws).await.is_some() {}
    }
    wait_until(Duration::from_secs(5), || {
        a.open() == 0 && tunnels_open(&lb) == 10
    })
    .await
    .expect("a's tunnels closed");
    let mut again = Vec::new();
    for _ in 0..10 {
        let (ws, name) = connect(&lb, "/").await;
        assert_eq!(name, "a", "the backend with no open tunnel is picked");
        again.push(ws);
    }
    assert_eq!((a.open(), b.open()), (10, 10));
    drop((rest, again));
    lb.stop().await;
}

#[tokio::test]
async fn a_backend_dying_mid_tunnel_closes_the_clients_connection() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "").await;
    let (mut ws, _) = connect(&lb, "/").await;
    echo(&mut ws, Message::text("before")).await;
    backend.kill();
    let started = Instant::now();
    // The connection ends (no close frame could come from a dead server): the stream yields
    // an error or its end, well within the test's patience.
    assert_eq!(next_message(&mut ws).await, None);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(ws);
    let b = lb.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(5), || {
        tunnels_open(&lb) == 0 && b.in_flight() == 0
    })
    .await
    .expect("the tunnel is released");
    lb.stop().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_idle_and_a_busy_one_is_not() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "[timeouts]\ntunnel_idle = \"400ms\"").await;
    // Busy: a message every 100 ms for 1.2 s, three times the idle limit.
    let (mut busy, _) = connect(&lb, "/").await;
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        echo(&mut busy, Message::text(format!("tick {i}"))).await;
    }
    // Idle: closed by alb once 400 ms pass without a byte.
    let (mut idle, _) = connect(&lb, "/").await;
    let started = Instant::now();
    assert_eq!(next_message(&mut idle).await, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    drop(busy);
    lb.stop().await;
}

/// A client that stops reading while its backend keeps sending: the write to it makes no
/// progress, and `timeouts.write` later the tunnel is closed both ways and its slot freed.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_tunnel_after_the_write_timeout() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "[timeouts]\nwrite = \"500ms\"").await;
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let handshake = "GET /flood HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                     sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 101");
    // From here on the client reads nothing.
    wait_until(Duration::from_secs(2), || tunnels_open(&lb) == 1)
        .await
        .expect("the tunnel is open");
    let started = Instant::now();
    let b = lb.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(10), || {
        tunnels_open(&lb) == 0 && b.in_flight() == 0 && backend.open() == 0
    })
    .await
    .expect("the stalled tunnel is closed and its backend released");
    // Filling the socket buffers first takes a moment; then the 500 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    drop(stream);
    lb.stop().await;
}

/// Writes `request` on a fresh connection to alb and reads one response (head and a body of
/// Content-Length bytes); the connection is handed back for more.
async fn raw_exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (head, mut rest) =
        tokio::time::timeout(Duration::from_secs(5), read_head(stream, &mut buf))
            .await
            .expect("an answer in time")
            .expect("an answer");
    let length: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while rest.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the body was cut");
        rest.extend_from_slice(&chunk[..n]);
    }
    format!("{head}{}", String::from_utf8_lossy(&rest))
}

#[tokio::test]
async fn a_refused_upgrade_is_a_normal_response_and_the_connection_stays_http() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "").await;
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let handshake = "GET /refuse HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                     sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let answer = raw_exchange(&mut stream, handshake).await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nno"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("upgrade"), "{answer}");
    let answer = raw_exchange(&mut stream, "GET /plain HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(tunnels_open(&lb), 0);
    lb.stop().await;
}

#[tokio::test]
async fn h2c_is_not_tunnelled_and_upgrade_is_stripped_without_connection_upgrade() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "").await;
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    for request in [
        "GET /plain HTTP/1.1\r\nhost: x\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\n\
         http2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET /plain HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n",
    ] {
        let answer = raw_exchange(&mut stream, request).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        // The body is the head the backend received: no upgrade asked of it.
        let seen = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .to_ascii_lowercase();
        assert!(seen.starts_with("get /plain http/1.1"), "{seen}");
        assert!(!seen.contains("upgrade"), "{seen}");
        assert!(!seen.contains("http2-settings"), "{seen}");
    }
    assert_eq!(backend.upgrades.load(Ordering::SeqCst), 0);
    lb.stop().await;
}

#[tokio::test]
async fn a_switch_to_a_protocol_not_offered_is_a_502() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = WsBackend::start("b1").await;
    let lb = balancer(&[&backend], "").await;
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let handshake = "GET /wrong-switch HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n\
                     upgrade: websocket\r\n\r\n";
    let answer = raw_exchange(&mut stream, handshake).await;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert_eq!(tunnels_open(&lb), 0);
    lb.stop().await;
}

/// A handshake that never left alb (its backend is at `max_connections`, with no queue) goes
/// to another backend, like any request that was never sent.
#[tokio::test]
async fn a_handshake_never_sent_is_retried_on_another_backend() {
    let _cpu = crate::support::cpu::shared().await;
    let (full, free) = (
        WsBackend::start("full").await,
        WsBackend::start("free").await,
    );
    let lb = TestBalancer::start(&format!(
        "algorithm = \"round_robin\"\n[limits]\nbackend_queue = 0\n\
         [[backend]]\nurl = \"{}\"\nmax_connections = 1\n[[backend]]\nurl = \"{}\"\n\
         [health_check]\ninterval = \"60s\"\n",
        full.url(),
        free.url()
    ))
    .await;
    let mut open = Vec::new();
    for _ in 0..6 {
        open.push(connect(&lb, "/").await);
    }
    assert_eq!(
        full.upgrades.load(Ordering::SeqCst),
        1,
        "its one slot is taken"
    );
    assert_eq!(free.upgrades.load(Ordering::SeqCst), 5);
    assert!(lb.proxy.retries() >= 2, "the full backend was tried");
    drop(open);
    lb.stop().await;
}

/// A tunnel to a backend that a reload removed is closed `timeouts.drain` later; one to a
/// backend that stays goes on.
#[tokio::test]
async fn a_removed_backends_tunnels_are_closed_after_the_drain_time() {
    let _cpu = crate::support::cpu::shared().await;
    let (a, b) = (WsBackend::start("a").await, WsBackend::start("b").await);
    let lb = balancer(&[&a, &b], "[timeouts]\ndrain = \"500ms\"").await;
    let (first, first_name) = connect(&lb, "/").await;
    let (second, _) = connect(&lb, "/").await;
    let (mut on_a, mut on_b) = if first_name == "a" {
        (first, second)
    } else {
        (second, first)
    };
    lb.control.remove_backend(&a.url()).expect("removed");
    let removed = Instant::now();
    // Still carried during the drain time.
    echo(&mut on_a, Message::text("still here")).await;
    assert_eq!(next_message(&mut on_a).await, None);
    let waited = removed.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    echo(&mut on_b, Message::text("b stays")).await;
    drop(on_b);
    lb.stop().await;
}

/// The real binary: one access-log line per tunnel when it ends, and on SIGTERM an open tunnel
/// goes on through the drain time, then is closed, and alb exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_each_tunnel_and_drains_tunnels_on_sigterm() {
    let _cpu = crate::support::cpu::shared().await;
    use crate::support::TempDir;
    use crate::support::binary::LoggedProcess;
    let backend = WsBackend::start("b1").await;
    let dir = TempDir::new("websocket");
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nbackends = [\"{}\"]\naccess_log = true\n\
             [timeouts]\ndrain = \"1s\"\n[health_check]\ninterval = \"60s\"\n\
             [admin]\nlisten = \"off\"\n",
            backend.url()
        ),
    );
    let mut alb = LoggedProcess::spawn(
        "alb",
        std::path::Path::new(env!("CARGO_BIN_EXE_alb")),
        &["run", "--config", config.to_str().unwrap()],
        "info",
    );
    let wait = Duration::from_secs(10);
    let line = alb.wait_line("alb listening on ", 1, wait).await;
    let addr = line
        .split("alb listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address")
        .to_string();
    let url = format!("ws://{addr}/room");

    // A tunnel the client closes: one line, when it ends, with what it carried.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert!(matches!(
        next_message(&mut ws).await,
        Some(Message::Text(_))
    ));
    echo(&mut ws, Message::binary(vec![7u8; 1000])).await;
    ws.close(None).await.unwrap();
    while next_message(&mut ws).await.is_some() {}
    drop(ws);
    let logged = alb.wait_line("101 tunnel", 1, wait).await;
    for field in [
        "status=101",
        "path=/room",
        "outcome=\"backend_closed\"",
        "tunnel_ms=",
        "duration_ms=",
    ] {
        assert!(logged.contains(field), "{field} in {logged}");
    }
    let number = |key: &str| -> u64 {
        let at = logged
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {logged}"))
            + key.len();
        logged[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number after {key} in {logged}"))
    };
    // 1,000 bytes each way, plus framing (and the greeting towards the client).
    assert!(
        (1000..1100).contains(&number(" bytes_to_backend=")),
        "{logged}"
    );
    assert!((1000..1100).contains(&number(" bytes=")), "{logged}");

    // A tunnel open at SIGTERM: still carried during the drain, closed when it ends.
    let (mut open, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert!(matches!(
        next_message(&mut open).await,
        Some(Message::Text(_))
    ));
    LoggedProcess::signal(alb.pid, "-TERM");
    alb.wait_line("shutting down", 1, wait).await;
    echo(&mut open, Message::text("during the drain")).await;
    let signalled = Instant::now();
    assert_eq!(next_message(&mut open).await, None);
    assert!(signalled.elapsed() < Duration::from_secs(3));
    assert!(alb.exit_status(wait).await.success(), "{}", alb.log());
}
