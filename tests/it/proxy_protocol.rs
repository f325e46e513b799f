//! PROXY protocol on the client listener (`[proxy_protocol]`), over real loopback sockets.
//!
//! Headers are written by hand from HAProxy's specification (`proxy-protocol.txt`), byte by
//! byte, never with the code under test: what is checked is that alb reads the protocol, not
//! that it agrees with itself. Then real HAProxy in TCP mode, `send-proxy` and `send-proxy-v2`,
//! in front of the real binary: the client's address reaches the backend's `X-Forwarded-For`
//! and alb's access log. Without haproxy installed those two print SKIPPED, except under CI
//! (env `CI`), where they fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alb::proxy::HeaderRefusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::binary::LoggedProcess;
use crate::support::*;

/// Longest wait for anything a test expects to happen; far above the usual.
const PATIENCE: Duration = Duration::from_secs(8);
const ALB: &str = env!("CARGO_BIN_EXE_alb");

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

const GET: &[u8] = b"GET /who HTTP/1.1\r\nhost: app\r\n\r\n";
const GET_CLOSE: &[u8] = b"GET /who HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n";

/// A v2 header: signature, version 2 with `command` (0 LOCAL, 1 PROXY), family and transport
/// byte, the block's length (big-endian), the block.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// A balancer in front of `backend` that requires a header from `trusted` (TOML list items).
async fn balancer(backend: &TestBackend, trusted: &str, extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_url(backend.url())
        .config(extra)
        .config(&format!(
            "[proxy_protocol]\nenabled = true\ntrusted = [{trusted}]\n"
        ))
        .start()
        .await
        .lb
}

/// Writes each part (a write per part) and reads until alb closes; returns what came back. A
/// reset counts as the end, with what was read before it.
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect to alb");
    exchange_on(stream, parts).await
}

async fn exchange_on(mut stream: TcpStream, parts: &[&[u8]]) -> Vec<u8> {
    for part in parts {
        // A write refused because alb already closed is what some tests look for.
        if stream.write_all(part).await.is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("alb closed the connection in time");
    got
}

fn responses(got: &[u8]) -> usize {
    String::from_utf8_lossy(got)
        .matches("HTTP/1.1 200 OK\r\n")
        .count()
}

fn forwarded_for(backend: &TestBackend) -> String {
    let seen = backend.last_request().expect("the backend saw a request");
    let values: Vec<_> = seen
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    values.join(", ")
}

fn refused(lb: &TestBalancer, reason: HeaderRefusal) -> u64 {
    lb.proxy.stats().header_refused(reason)
}

#[tokio::test]
async fn v1_header_gives_the_client_address_and_the_request_after_it_is_kept() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = balancer(&backend, "\"127.0.0.1/32\"", "").await;

    // Header and two pipelined requests in one write: nothing after the header may be lost.
    let all = [
        &b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n"[..],
        GET,
        GET_CLOSE,
    ]
    .concat();
    let got = exchange(lb.addr, &[&all]).await;
    assert_eq!(responses(&got), 2, "{}", String::from_utf8_lossy(&got));
    assert_eq!(backend.hits(), 2);
    assert_eq!(forwarded_for(&backend), "203.0.113.7");

    // IPv6, the header in a write of its own.
    let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 80\r\n";
    let got = exchange(lb.addr, &[six, GET_CLOSE]).await;
    assert_eq!(responses(&got), 1, "{}", String::from_utf8_lossy(&got));
    assert_eq!(forwarded_for(&backend), "2001:db8::7");

    // UNKNOWN: the connection's own peer.
    let got = exchange(lb.addr, &[b"PROXY UNKNOWN\r\n", GET_CLOSE]).await;
    assert_eq!(responses(&got), 1);
    assert_eq!(forwarded_for(&backend), "127.0.0.1");
    for reason in HeaderRefusal::ALL {
        assert_eq!(refused(&lb, reason), 0, "{reason:?}");
    }
    lb.stop().await;
}

#[tokio::test]
async fn v2_header_gives_the_client_address_and_tlvs_are_skipped() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = balancer(&backend, "\"127.0.0.1\", \"::1/128\"", "").await;

    // TCP over IPv4 (0x11): 198.51.100.9:50000 -> 10.0.0.1:443, then a NOOP TLV (type 0x04)
    // and a made-up one (0xE0) of 300 bytes.
    let mut block = vec![198, 51, 100, 9, 10, 0, 0, 1, 0xC3, 0x50, 0x01, 0xBB];
    block.extend_from_slice(&[0x04, 0x00, 0x02, 0xAA, 0xBB]);
    block.extend_from_slice(&[0xE0, 0x01, 0x2C]);
    block.extend_from_slice(&[0x55; 300]);
    let header = v2(1, 0x11, &block);
    let all = [&header[..], GET_CLOSE].concat();
    let got = exchange(lb.addr, &[&all]).await;
    assert_eq!(responses(&got), 1, "{}", String::from_utf8_lossy(&got));
    assert_eq!(forwarded_for(&backend), "198.51.100.9");

    // TCP over IPv6 (0x21): 2001:db8::42 port 8080, split in two writes mid-address.
    let mut block = vec![
        0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42,
    ];
    block.extend_from_slice(&[
        0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
    ]);
    block.extend_from_slice(&[0x1F, 0x90, 0x01, 0xBB]);
    let header = v2(1, 0x21, &block);
    let got = exchange(lb.addr, &[&header[..20], &header[20..], GET_CLOSE]).await;
    assert_eq!(responses(&got), 1, "{}", String::from_utf8_lossy(&got));
    assert_eq!(forwarded_for(&backend), "2001:db8::42");

    // LOCAL (a balancer's own health check), even with an address block: the socket's peer.
    let header = v2(0, 0x11, &[192, 0, 2, 1, 10, 0, 0, 1, 0, 1, 0, 2]);
    let got = exchange(lb.addr, &[&header, GET_CLOSE]).await;
    assert_eq!(responses(&got), 1);
    assert_eq!(forwarded_for(&backend), "127.0.0.1");
    // PROXY with AF_UNSPEC: no address to take, the socket's peer.
    let got = exchange(lb.addr, &[&v2(1, 0x00, &[]), GET_CLOSE]).await;
    assert_eq!(responses(&got), 1);
    assert_eq!(forwarded_for(&backend), "127.0.0.1");
    lb.stop().await;
}

#[tokio::test]
async fn an_untrusted_source_is_closed_without_a_response() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = balancer(
        &backend,
        "\"10.0.0.0/8\"",
        "[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .await;

    // A well-formed header from 127.0.0.1, outside 10.0.0.0/8: refused, header or not.
    let line = b"PROXY TCP4 10.1.2.3 10.0.0.1 1000 80\r\n";
    let got = exchange(lb.addr, &[line, GET_CLOSE]).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let got = exchange(lb.addr, &[GET_CLOSE]).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(backend.hits(), 0);
    assert_eq!(refused(&lb, HeaderRefusal::Untrusted), 2);

    let (status, _, body) = get(&client(), &lb.admin_url("/metrics").await).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("alb_proxy_protocol_rejected_total{reason=\"untrusted\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("alb_proxy_protocol_rejected_total{reason=\"malformed\"} 0\n"),
        "{text}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_missing_or_malformed_header_from_a_trusted_source_is_closed() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = balancer(&backend, "\"127.0.0.0/8\"", "").await;

    // Plain HTTP where the header should be.
    let got = exchange(lb.addr, &[GET_CLOSE]).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(refused(&lb, HeaderRefusal::Missing), 1);

    let long_v2 = {
        let mut header = v2(1, 0x11, &[0; 12]);
        header[14..16].copy_from_slice(&5000u16.to_be_bytes());
        header
    };
    let malformed: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n".to_vec(),
        b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
        [&b"PROXY UNKNOWN "[..], &[b'x'; 120]].concat(),
        // Version 1 in the binary format's version nibble.
        [&SIGNATURE[..], &[0x11, 0x11, 0x00, 0x0C], &[0; 12]].concat(),
        // Command 0x2 is unassigned.
        v2(2, 0x11, &[0; 12]),
        // Family 0x4 is unassigned.
        v2(1, 0x41, &[0; 12]),
        // TCP over IPv4 with 8 address bytes instead of 12.
        v2(1, 0x11, &[0; 8]),
        // A length past alb's limit: refused from the fixed part alone.
        long_v2,
    ];
    for header in &malformed {
        let got = exchange(lb.addr, &[header, GET_CLOSE]).await;
        assert!(
            got.is_empty(),
            "{header:?}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(
        refused(&lb, HeaderRefusal::Malformed),
        malformed.len() as u64
    );
    assert_eq!(backend.hits(), 0);
    lb.stop().await;
}

#[tokio::test]
async fn a_slow_or_silent_sender_is_closed_at_the_header_timeout() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = balancer(
        &backend,
        "\"127.0.0.1/32\"",
        "[timeouts]\nclient_header = \"300ms\"",
    )
    .await;

    for start in [&b""[..], b"PROXY TCP4 203.0.113.7", &SIGNATURE[..8]] {
        let began = Instant::now();
        let got = exchange(lb.addr, &[start]).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        assert!(
            began.elapsed() >= Duration::from_millis(300),
            "closed before the timeout"
        );
    }
    assert_eq!(refused(&lb, HeaderRefusal::Timeout), 3);
    assert_eq!(backend.hits(), 0);
    lb.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_header_is_counted_as_closed() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = balancer(&backend, "\"127.0.0.1/32\"", "").await;
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream.write_all(b"PROXY TCP4 203.0.").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(rest.is_empty());
    assert_eq!(refused(&lb, HeaderRefusal::Closed), 1);
    lb.stop().await;
}

#[tokio::test]
async fn without_the_section_a_header_is_just_bad_http() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = TestBalancer::start(&backends_line(&[&backend])).await;
    let got = exchange(
        lb.addr,
        &[b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n", GET_CLOSE],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(backend.hits(), 0);
    lb.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Real HAProxy in front of the real binary
// ---------------------------------------------------------------------------------------------

/// The haproxy binary, or None (with SKIPPED printed) where it is not installed; under CI its
/// absence fails the test.
fn haproxy(test: &str) -> Option<PathBuf> {
    crate::support::prerequisite::program(
        test,
        &["haproxy", "/usr/sbin/haproxy"],
        "haproxy is not installed (apt-get install haproxy)",
    )
}

/// `alb run` behind which `backend` serves, requiring a header from 127.0.0.1 only.
async fn alb_binary(dir: &TempDir, backend: &TestBackend) -> (LoggedProcess, SocketAddr) {
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}[admin]\nlisten = \"off\"\n\
             [proxy_protocol]\nenabled = true\ntrusted = [\"127.0.0.1/32\"]\n",
            backends_line(&[backend])
        ),
    );
    // The access log on: the test reads the client address there.
    let alb = LoggedProcess::spawn(
        "alb",
        Path::new(ALB),
        &["run", "--config", config.to_str().unwrap()],
        "info",
    );
    let line = alb.wait_line("alb listening on ", 1, PATIENCE).await;
    let rest = &line[line.find("alb listening on ").unwrap() + "alb listening on ".len()..];
    let end = rest.find([' ', '"']).unwrap_or(rest.len());
    let addr = rest[..end].parse().expect("listening address");
    (alb, addr)
}

/// HAProxy in TCP mode on `port`, passing connections to `alb` with `send`
/// (`send-proxy` or `send-proxy-v2`).
fn start_haproxy(
    dir: &TempDir,
    program: &Path,
    alb: SocketAddr,
    send: &str,
    port: &ReservedPort,
) -> (LoggedProcess, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port.port()));
    let config = dir.write(
        "haproxy.cfg",
        &format!(
            "global\n    maxconn 64\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n\
             frontend fe\n    bind {addr}\n    default_backend be\n\
             backend be\n    server s1 {alb} {send}\n"
        ),
    );
    let haproxy = LoggedProcess::spawn(
        "haproxy",
        program,
        &["-f", config.to_str().unwrap(), "-db"],
        "info",
    );
    (haproxy, addr)
}

/// Connects from 127.0.0.2 to `addr` once haproxy listens there. Haproxy prints nothing when
/// ready, so the connect is retried while refused (checking that haproxy still runs).
async fn connect_from_127_0_0_2(haproxy: &mut LoggedProcess, addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        match socket.connect(addr).await {
            Ok(stream) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                haproxy.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen on {addr}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("connect to haproxy: {e}"),
        }
    }
}

async fn through_haproxy(test: &str, send: &str) {
    let Some(program) = haproxy(test) else {
        return;
    };
    let backend = TestBackend::start("b").await;
    let dir = TempDir::new(&format!("haproxy-{send}"));
    let (mut alb, alb_addr) = alb_binary(&dir, &backend).await;
    // HAProxy is told its port: one kept bound (not listening) until it listens there.
    let port = ReservedPort::new();
    let (mut haproxy, addr) = start_haproxy(&dir, &program, alb_addr, send, &port);

    let stream = connect_from_127_0_0_2(&mut haproxy, addr).await;
    drop(port);
    let client = stream.local_addr().unwrap();
    let got = exchange_on(stream, &[GET_CLOSE]).await;
    assert_eq!(responses(&got), 1, "{}", String::from_utf8_lossy(&got));
    // Haproxy reaches alb from 127.0.0.1; the client was 127.0.0.2, port and all.
    assert_eq!(forwarded_for(&backend), "127.0.0.2");
    let access = alb
        .wait_where(
            |l| l.contains("alb::access") && l.contains("GET /who 200"),
            1,
            PATIENCE,
        )
        .await;
    assert!(
        access.contains(&format!("client={client}")),
        "access log without client {client}: {access}"
    );
    haproxy.kill().await;
    alb.kill().await;
}

#[tokio::test]
async fn haproxy_send_proxy_v1_passes_the_client_address() {
    let _cpu = crate::support::cpu::shared().await;
    through_haproxy(
        "haproxy_send_proxy_v1_passes_the_client_address",
        "send-proxy",
    )
    .await;
}

#[tokio::test]
async fn haproxy_send_proxy_v2_passes_the_client_address() {
    let _cpu = crate::support::cpu::shared().await;
    through_haproxy(
        "haproxy_send_proxy_v2_passes_the_client_address",
        "send-proxy-v2",
    )
    .await;
}
