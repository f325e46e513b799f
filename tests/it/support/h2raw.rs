//! HTTP/2 written and read frame by frame (RFC 9113 §4, §6), for the patterns a well-behaved
//! client library will not send: resets in a storm, CONTINUATION floods, HPACK blocks built by
//! hand (RFC 7541: integers, literals without Huffman coding, indexed fields). Also a tap for a
//! well-formed client's socket, so a test can see the frames the server sent it (GOAWAY,
//! RST_STREAM, SETTINGS) while the `h2` crate decodes the messages.
//!
//! Every read has a deadline: a server that keeps a connection open where it should close it
//! fails the test instead of hanging it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// One frame: the 9-byte header (length, type, flags, stream) and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 1 << 24);
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// HEADERS with END_HEADERS (and END_STREAM when `end_stream`).
pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// An HPACK header block built field by field (RFC 7541 §6), no Huffman coding.
#[derive(Default, Clone)]
pub struct Block(pub Vec<u8>);

impl Block {
    pub fn new() -> Block {
        Block(Vec::new())
    }

    /// An indexed field (§6.1): static table 1..=61, dynamic table from 62.
    pub fn indexed(mut self, index: usize) -> Block {
        integer(&mut self.0, 0x80, 7, index);
        self
    }

    /// A literal without indexing, new name (§6.2.2).
    pub fn literal(mut self, name: &str, value: &[u8]) -> Block {
        self.0.push(0x00);
        string(&mut self.0, name.as_bytes());
        string(&mut self.0, value);
        self
    }

    /// A literal without indexing whose name is `index` in the tables (§6.2.2).
    pub fn literal_name(mut self, index: usize, value: &[u8]) -> Block {
        integer(&mut self.0, 0x00, 4, index);
        string(&mut self.0, value);
        self
    }

    /// A literal with incremental indexing, new name (§6.2.1): it enters the dynamic table.
    pub fn literal_indexed(mut self, name: &str, value: &[u8]) -> Block {
        self.0.push(0x40);
        string(&mut self.0, name.as_bytes());
        string(&mut self.0, value);
        self
    }

    /// `:method`, `:scheme` http, `:path`, `:authority`, in that order.
    pub fn request(method: &str, path: &str, authority: &str) -> Block {
        let block = match method {
            "GET" => Block::new().indexed(2),
            "POST" => Block::new().indexed(3),
            other => Block::new().literal_name(2, other.as_bytes()),
        };
        let block = block.indexed(6);
        let block = if path == "/" {
            block.indexed(4)
        } else {
            block.literal_name(4, path.as_bytes())
        };
        block.literal_name(1, authority.as_bytes())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An HPACK integer with an `n`-bit prefix (§5.1), the prefix's other bits `first`.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// An HPACK string literal (§5.2), not Huffman coded.
fn string(out: &mut Vec<u8>, value: &[u8]) {
    integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

/// A frame as received.
#[derive(Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().unwrap()))
    }

    /// A GOAWAY's last stream id.
    pub fn last_stream(&self) -> Option<u32> {
        (self.kind == GOAWAY)
            .then(|| u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff)
    }

    /// A GOAWAY's debug data, as text.
    pub fn debug_data(&self) -> String {
        if self.kind == GOAWAY && self.payload.len() > 8 {
            String::from_utf8_lossy(&self.payload[8..]).into_owned()
        } else {
            String::new()
        }
    }

    /// The parameters of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    /// The `:status` of a response HEADERS frame, read from the first field of its block when
    /// that is the status: indexed from the static table (200, 204, 206, 304, 400, 404, 500), or
    /// a literal with `:status`'s name index and a plain or Huffman-coded value. `None` for
    /// anything else (a status indexed from the dynamic table, say).
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        let block = self.block();
        let first = *block.first()?;
        match first {
            0x88 => return Some(200),
            0x89 => return Some(204),
            0x8a => return Some(206),
            0x8b => return Some(304),
            0x8c => return Some(400),
            0x8d => return Some(404),
            0x8e => return Some(500),
            _ => {}
        }
        // Literal with incremental indexing (0x40 | 8), without indexing (0x08), never indexed
        // (0x18), all with the name of static entry 8 (`:status`).
        if first != 0x48 && first != 0x08 && first != 0x18 {
            return None;
        }
        let length = *block.get(1)?;
        let huffman = length & 0x80 != 0;
        let value = block.get(2..2 + usize::from(length & 0x7f))?;
        let text = if huffman {
            huffman_digits(value)?
        } else {
            String::from_utf8(value.to_vec()).ok()?
        };
        text.parse().ok()
    }

    /// The header block fragment of a HEADERS frame (padding and priority taken off).
    pub fn block(&self) -> &[u8] {
        let mut data = &self.payload[..];
        let mut pad = 0;
        if self.flags & 0x8 != 0 {
            pad = usize::from(data[0]);
            data = &data[1..];
        }
        if self.flags & 0x20 != 0 {
            data = &data[5..];
        }
        &data[..data.len() - pad]
    }

    pub fn describe(&self) -> String {
        let kind = match self.kind {
            DATA => "DATA",
            HEADERS => "HEADERS",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PING => "PING",
            GOAWAY => "GOAWAY",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            CONTINUATION => "CONTINUATION",
            _ => "other",
        };
        let mut text = format!(
            "{kind}(stream {}, flags {:#x}, {} bytes",
            self.stream,
            self.flags,
            self.payload.len()
        );
        if let Some(code) = self.error_code() {
            text.push_str(&format!(", error {code:#x}"));
        }
        if let Some(last) = self.last_stream() {
            text.push_str(&format!(", last stream {last}"));
            let debug = self.debug_data();
            if !debug.is_empty() {
                text.push_str(&format!(", debug {debug:?}"));
            }
        }
        if self.kind == HEADERS {
            text.push_str(&format!(", status {:?}", self.status()));
        }
        if self.kind == SETTINGS {
            text.push_str(&format!(", {:?}", self.settings()));
        }
        text.push(')');
        text
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B: '0'..'2' are the
/// 5-bit codes 0..2, '3'..'9' the 6-bit codes 0x19..0x1f; padding is all ones).
fn huffman_digits(value: &[u8]) -> Option<String> {
    let mut bits = Vec::with_capacity(value.len() * 8);
    for byte in value {
        for k in (0..8).rev() {
            bits.push((byte >> k) & 1);
        }
    }
    let mut out = String::new();
    let mut at = 0;
    while at < bits.len() {
        let rest = &bits[at..];
        if rest.len() < 5 || rest.iter().all(|&b| b == 1) {
            break;
        }
        let five = rest[..5].iter().fold(0u8, |acc, &b| acc << 1 | b);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
            continue;
        }
        let six = rest.get(..6)?.iter().fold(0u8, |acc, &b| acc << 1 | b);
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + six - 0x19));
            at += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

/// Splits received bytes into frames; returns them and how many bytes they used.
pub fn parse_frames(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 9 {
        let head = &bytes[at..at + 9];
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        if bytes.len() - at < 9 + len {
            break;
        }
        frames.push(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload: bytes[at + 9..at + 9 + len].to_vec(),
        });
        at += 9 + len;
    }
    (frames, at)
}

/// What reading a frame came to.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the deadline.
    Timeout,
}

/// The reading half of a raw HTTP/2 client connection. SETTINGS from the server are
/// acknowledged as they are read (through the shared writer), as a client must.
pub struct RawReader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
    writer: RawWriter,
    /// Every frame read so far, for the failure messages.
    pub seen: Vec<Frame>,
}

/// The writing half, shareable between tasks.
#[derive(Clone)]
pub struct RawWriter(Arc<tokio::sync::Mutex<OwnedWriteHalf>>);

impl RawWriter {
    /// Writes `bytes` within `limit`; false when the connection is gone or the write stalled.
    pub async fn send_within(&self, bytes: &[u8], limit: Duration) -> bool {
        let mut write = self.0.lock().await;
        matches!(
            tokio::time::timeout(limit, write.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Writes `bytes`; false when the connection is gone (or the write stalled for 5 s).
    pub async fn send(&self, bytes: &[u8]) -> bool {
        self.send_within(bytes, Duration::from_secs(5)).await
    }
}

/// Connects, sends the preface and a SETTINGS frame with `settings`.
pub async fn connect(addr: SocketAddr, settings_values: &[(u16, u32)]) -> (RawReader, RawWriter) {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the balancer");
    stream.set_nodelay(true).unwrap();
    let (read, write) = stream.into_split();
    let writer = RawWriter(Arc::new(tokio::sync::Mutex::new(write)));
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&settings(settings_values));
    assert!(writer.send(&hello).await, "preface written");
    let reader = RawReader {
        read,
        buf: Vec::new(),
        writer: writer.clone(),
        seen: Vec::new(),
    };
    (reader, writer)
}

impl RawReader {
    /// The next frame, within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (mut frames, used) = parse_frames(&self.buf);
            if let Some(frame) = frames.drain(..).next() {
                let len = 9 + frame.payload.len();
                debug_assert!(used >= len);
                self.buf.drain(..len);
                if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                    self.writer.send(&settings_ack()).await;
                }
                self.seen.push(frame.clone());
                return Next::Frame(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.read.read(&mut chunk)).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until `wanted` holds for one (returned), the connection closes or `limit`
    /// passes (`None`, with what ended it).
    pub async fn until(
        &mut self,
        limit: Duration,
        mut wanted: impl FnMut(&Frame) -> bool,
    ) -> Result<Frame, Next> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Frame(frame) if wanted(&frame) => return Ok(frame),
                Next::Frame(_) => {}
                end => return Err(end),
            }
        }
    }

    /// Reads until the connection closes or `limit` passes; returns whether it closed.
    pub async fn until_closed(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Frame(_) => {}
                Next::Closed => return true,
                Next::Timeout => return false,
            }
        }
    }

    /// The frames seen so far, one per line.
    pub fn transcript(&self) -> String {
        let mut text = String::new();
        let shown = self.seen.len().min(60);
        for frame in &self.seen[self.seen.len() - shown..] {
            text.push_str(&frame.describe());
            text.push('\n');
        }
        if self.seen.len() > shown {
            text = format!("({} earlier frames)\n{text}", self.seen.len() - shown);
        }
        text
    }
}

/// A socket that keeps a copy of every byte it reads: the server's frames, as they came.
pub struct Tap<T> {
    inner: T,
    read: Arc<Mutex<Vec<u8>>>,
}

/// The bytes a [`Tap`] read, parsed on demand.
#[derive(Clone)]
pub struct Tapped(Arc<Mutex<Vec<u8>>>);

impl<T> Tap<T> {
    pub fn new(inner: T) -> (Tap<T>, Tapped) {
        let read = Arc::new(Mutex::new(Vec::new()));
        (
            Tap {
                inner,
                read: read.clone(),
            },
            Tapped(read),
        )
    }
}

impl Tapped {
    /// Every whole frame read so far.
    pub fn frames(&self) -> Vec<Frame> {
        parse_frames(&self.0.lock().unwrap()).0
    }

    pub fn transcript(&self) -> String {
        self.frames()
            .iter()
            .map(|f| f.describe() + "\n")
            .collect::<String>()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled()[before..].to_vec();
            self.read.lock().unwrap().extend_from_slice(&new);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// VmRSS and VmHWM (peak) of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_rfc7541_c1() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn huffman_digits_decode() {
        // "302" as RFC 7541 C.6.1 codes it: 0x6402.
        assert_eq!(huffman_digits(&[0x64, 0x02]).as_deref(), Some("302"));
    }
}
