//! A tiny authoritative DNS server on 127.0.0.1 (UDP and TCP on one free port) for discovery
//! tests, written from RFC 1035 §4 rather than with the resolver's own crates: A queries for a
//! name get the addresses the test set (or NXDOMAIN), everything else an empty answer. An answer
//! too long for UDP (512 bytes) is sent truncated (TC), and whole over TCP. It counts A queries.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;

/// What a name answers: addresses with a TTL, or NXDOMAIN (None).
type Zone = HashMap<String, Option<(Vec<Ipv4Addr>, u32)>>;

/// Names whose queries get no reply at all (a server that went silent).
const SILENT_TTL: u32 = u32::MAX;

pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    task: JoinHandle<()>,
    tcp_task: JoinHandle<()>,
}

impl TestDns {
    pub async fn start() -> TestDns {
        // A UDP port whose TCP twin is free too.
        let (socket, tcp) = loop {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
            if let Ok(tcp) = TcpListener::bind(socket.local_addr().unwrap()).await {
                break (socket, tcp);
            }
        };
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::new()));
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(socket, zone.clone(), queries.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, zone.clone(), queries.clone()));
        TestDns {
            addr,
            zone,
            queries,
            task,
            tcp_task,
        }
    }

    /// `name` answers `addrs` with `ttl` seconds.
    pub fn set(&self, name: &str, addrs: &[Ipv4Addr], ttl: u32) {
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), Some((addrs.to_vec(), ttl)));
    }

    /// Queries for `name` get no reply.
    pub fn silence(&self, name: &str) {
        self.set(name, &[], SILENT_TTL);
    }

    /// `name` answers NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), None);
    }

    /// A queries seen so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
        self.tcp_task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>, queries: Arc<AtomicU64>) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some((mut reply, question_end)) = answer(&buf[..n], &zone, &queries) {
            if reply.len() > 512 {
                // Header and question only, TC set: the client asks again over TCP.
                reply.truncate(question_end);
                reply[2] |= 0x02;
                reply[6..8].copy_from_slice(&[0, 0]);
            }
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// DNS over TCP: each message behind its two-byte length (RFC 1035 §4.2.2).
async fn serve_tcp(listener: TcpListener, zone: Arc<Mutex<Zone>>, queries: Arc<AtomicU64>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (zone, queries) = (zone.clone(), queries.clone());
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some((reply, _)) = answer(&query, &zone, &queries) else {
                    return;
                };
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The reply to one query message and where its question ends, or None for what is not a query
/// with one question.
fn answer(query: &[u8], zone: &Mutex<Zone>, queries: &AtomicU64) -> Option<(Vec<u8>, usize)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to the zero octet, then QTYPE and QCLASS.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");
    let entry = zone.lock().unwrap().get(&name).cloned();
    if matches!(&entry, Some(Some((_, SILENT_TTL)))) {
        return None;
    }
    let (rcode, records): (u8, Vec<Ipv4Addr>) = match (&entry, qtype) {
        (None, _) | (Some(None), _) => (3, Vec::new()),
        (Some(Some((addrs, _))), TYPE_A) => (0, addrs.clone()),
        (Some(Some(_)), _) => (0, Vec::new()),
    };
    if qtype == TYPE_A {
        queries.fetch_add(1, Ordering::SeqCst);
    }
    let ttl = entry.flatten().map(|(_, ttl)| ttl).unwrap_or(0);
    let mut reply = Vec::with_capacity(question_end + records.len() * 16);
    reply.extend_from_slice(&query[0..2]); // the query's ID
    // QR=1, opcode 0, AA=1, RD copied; RA=0; RCODE.
    reply.push(0x84 | (query[2] & 0x01));
    reply.push(rcode);
    reply.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes()); // ANCOUNT
    reply.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    reply.extend_from_slice(question);
    for ip in records {
        reply.extend_from_slice(&[0xC0, 12]); // the name: a pointer to the question's
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes()); // class IN
        reply.extend_from_slice(&ttl.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some((reply, question_end))
}
