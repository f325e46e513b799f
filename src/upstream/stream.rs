//! The byte stream of one upstream connection: plain TCP, or TLS over it (an `https://`
//! backend). Everything above reads and writes through this one type, so a protocol to backends
//! plugs in here and nowhere else.
//!
//! **TLS records alb has produced always leave.** rustls may keep the tail of a write when the
//! socket is full, and alb then goes on to read (the answer, the other side of a tunnel): so
//! every read first pushes out what is pending. A connection that waits for input therefore
//! also waits for the socket to take that tail.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and most backends are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(tcp) => tcp,
            UpstreamStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether an idle connection can no longer carry a request: the backend closed it or sent
    /// bytes nobody asked for. `look`: read the socket even when the reactor has not reported
    /// it readable (a close that arrived an instant ago; one system call). On TLS, records that
    /// carry no data (a TLS 1.3 session ticket) are taken and do not count.
    pub fn is_stale(&mut self, look: bool) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let readable = !matches!(self.tcp().poll_read_ready(&mut cx), Poll::Pending);
        match self {
            UpstreamStream::Plain(tcp) => {
                if readable {
                    let mut probe = [0u8; 1];
                    return !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
                }
                if !look {
                    return false;
                }
                let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                match socket2::SockRef::from(&*tcp).peek(&mut probe) {
                    Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                    // End of stream, or bytes nobody asked for.
                    Ok(_) => true,
                }
            }
            UpstreamStream::Tls(tls) => {
                if !readable && !look {
                    return false;
                }
                let mut byte = [0u8; 1];
                let mut probe = ReadBuf::new(&mut byte);
                // Data, the end of the stream or an error: stale. Pending: nothing but
                // records for the session itself.
                Pin::new(&mut **tls)
                    .poll_read(&mut cx, &mut probe)
                    .is_ready()
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            UpstreamStream::Tls(tls) => {
                if tls.get_ref().1.wants_write() {
                    // Pending: woken when the socket takes more (see the module docs).
                    if let Poll::Ready(Err(e)) = Pin::new(&mut **tls).poll_flush(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                Pin::new(&mut **tls).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(tcp) => tcp.is_write_vectored(),
            UpstreamStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            UpstreamStream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            UpstreamStream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
