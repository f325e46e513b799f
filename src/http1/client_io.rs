//! The one place where a client connection's transport is chosen: plain TCP or TLS. Everything
//! above reads a [`ClientReadHalf`] and writes a [`ClientWriteHalf`] and does not know which.
//!
//! A plain connection splits with `TcpStream::into_split` (two owned halves, no lock: what alb
//! did before TLS, and as fast); a TLS session has one state for both directions, so it splits
//! with `tokio::io::split`, whose halves share it behind a small lock. Either pair joins back
//! into a [`ClientStream`] for an upgraded connection's tunnel.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A TLS session over TCP. The TCP side may carry bytes read before the handshake (the rest of
/// a PROXY protocol header's packet: the start of the ClientHello).
pub type TlsClientStream = tokio_rustls::server::TlsStream<Prefixed>;

/// A client connection.
#[derive(Debug)]
pub enum ClientStream {
    Plain(TcpStream),
    /// Boxed: a TLS session's state is large, and most connections of a mixed load are plain.
    Tls(Box<TlsClientStream>),
}

impl ClientStream {
    /// Splits into the halves the connection reads and writes through.
    pub fn split(self) -> (ClientReadHalf, ClientWriteHalf) {
        match self {
            ClientStream::Plain(stream) => {
                let (read, write) = stream.into_split();
                (ClientReadHalf::Plain(read), ClientWriteHalf::Plain(write))
            }
            ClientStream::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ClientReadHalf::Tls(read), ClientWriteHalf::Tls(write))
            }
        }
    }

    /// The TCP connection under it (socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(stream) => stream,
            ClientStream::Tls(stream) => &stream.get_ref().0.inner,
        }
    }
}

#[derive(Debug)]
pub enum ClientReadHalf {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsClientStream>),
}

#[derive(Debug)]
pub enum ClientWriteHalf {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsClientStream>),
}

/// Two halves of different connections, or of different kinds: never joined.
#[derive(Debug, thiserror::Error)]
#[error("the two halves are not of the same connection")]
pub struct NotAPair;

impl ClientReadHalf {
    /// Joins the halves back into the connection.
    pub fn reunite(self, write: ClientWriteHalf) -> Result<ClientStream, NotAPair> {
        match (self, write) {
            (ClientReadHalf::Plain(read), ClientWriteHalf::Plain(write)) => read
                .reunite(write)
                .map(ClientStream::Plain)
                .map_err(|_| NotAPair),
            (ClientReadHalf::Tls(read), ClientWriteHalf::Tls(write)) => {
                if read.is_pair_of(&write) {
                    Ok(ClientStream::Tls(Box::new(read.unsplit(write))))
                } else {
                    Err(NotAPair)
                }
            }
            _ => Err(NotAPair),
        }
    }

    /// Waits until the socket has something to read, where that can be known without reading:
    /// an idle plain connection then holds no buffer. A TLS session may hold decrypted bytes
    /// the socket does not show, so it is always ready (and reads into a buffer).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ClientReadHalf::Plain(half) => half.as_ref().poll_read_ready(cx),
            ClientReadHalf::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for ClientReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientReadHalf::Plain(half) => Pin::new(half).poll_read(cx, buf),
            ClientReadHalf::Tls(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(half) => Pin::new(half).poll_write(cx, buf),
            ClientWriteHalf::Tls(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(half) => Pin::new(half).poll_write_vectored(cx, bufs),
            ClientWriteHalf::Tls(half) => Pin::new(half).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientWriteHalf::Plain(half) => half.is_write_vectored(),
            ClientWriteHalf::Tls(half) => half.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(half) => Pin::new(half).poll_flush(cx),
            ClientWriteHalf::Tls(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(half) => Pin::new(half).poll_shutdown(cx),
            ClientWriteHalf::Tls(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(stream) => stream.is_write_vectored(),
            ClientStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TCP connection with bytes already read from it in front: what the TLS session reads first.
#[derive(Debug)]
pub struct Prefixed {
    prefix: BytesMut,
    inner: TcpStream,
    /// Under a TLS session: where its records start, to refuse a TLS 1.2 renegotiation.
    records: Option<RecordWatch>,
}

impl Prefixed {
    pub fn new(prefix: BytesMut, inner: TcpStream) -> Prefixed {
        Prefixed {
            prefix,
            inner,
            records: None,
        }
    }

    /// The same, under a TLS session: its records are followed from the first byte (the
    /// ClientHello), so that once the handshake is done a renegotiation can be seen.
    pub fn for_tls(prefix: BytesMut, inner: TcpStream) -> Prefixed {
        Prefixed {
            records: Some(RecordWatch::default()),
            ..Prefixed::new(prefix, inner)
        }
    }

    /// Called when a TLS 1.2 handshake is done: from now on a handshake record from the client
    /// is a renegotiation (TLS 1.2 has no other post-handshake message from a client), and the
    /// read fails, so that the connection closes at once. rustls itself only answers a
    /// `no_renegotiation` warning, queued until alb next writes: a client waiting for its
    /// ServerHello would wait out the idle timeout (testssl's renegotiation probe did).
    pub fn refuse_renegotiation(&mut self) {
        if let Some(watch) = self.records.as_mut() {
            watch.refusing = true;
        }
    }

    /// Called when a TLS 1.3 handshake is done: every record is `application_data` on the wire
    /// from then on, so there is nothing to watch.
    pub fn stop_watching(&mut self) {
        self.records = None;
    }
}

/// TLS record boundaries in the bytes read (RFC 5246 §6.2.1: a 5-byte header of type, version
/// and length, then that many bytes): a few comparisons per record of up to 16 KiB.
#[derive(Debug, Default)]
struct RecordWatch {
    header: [u8; 5],
    /// Bytes of `header` read so far.
    have: usize,
    /// Bytes of the current record's body still to come.
    body_left: usize,
    refusing: bool,
}

/// The record type of handshake messages.
const HANDSHAKE_RECORD: u8 = 22;

impl RecordWatch {
    /// Follows `data`; an error once a handshake record arrives while refusing.
    fn follow(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(data.len());
                self.body_left -= skip;
                data = &data[skip..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have == self.header.len() {
                self.have = 0;
                if self.refusing && self.header[0] == HANDSHAKE_RECORD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS renegotiation refused",
                    ));
                }
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
        Ok(())
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = BytesMut::new();
            }
        } else {
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        match this.records.as_mut() {
            Some(watch) => Poll::Ready(watch.follow(&buf.filled()[before..])),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `kind` with a body of `len` bytes.
    fn record(kind: u8, len: u16) -> Vec<u8> {
        let mut bytes = vec![kind, 3, 3];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0xAA, usize::from(len)));
        bytes
    }

    #[test]
    fn handshake_records_pass_until_refusing_then_fail_wherever_the_reads_cut() {
        let mut stream = record(HANDSHAKE_RECORD, 300);
        stream.extend(record(23, 20));
        let mut watch = RecordWatch::default();
        // Bodies may hold the byte 22 anywhere: only headers count.
        for piece in stream.chunks(7) {
            watch.follow(piece).expect("before the handshake is done");
        }
        watch.refusing = true;
        watch.follow(&record(23, 5)).expect("application data");
        watch.follow(&record(21, 2)).expect("an alert");
        let renegotiation = record(HANDSHAKE_RECORD, 40);
        watch.follow(&renegotiation[..3]).expect("half a header");
        assert!(watch.follow(&renegotiation[3..]).is_err());
    }
}
