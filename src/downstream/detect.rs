//! The detector: what a client connection speaks, before any request is read. A PROXY protocol
//! header first when the listener requires one (its source becomes the client for the life of
//! the connection), then, with `http2.cleartext`, the HTTP/2 preface (h2c by prior knowledge);
//! the connection goes to the HTTP/2 room or the HTTP/1.1 one. Over TLS, ALPN chose already
//! (see [`super::tls`]) and only HTTP/1.1 connections come here.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::connection::{ConnSettings, Connection, Seat};
use super::h1_write::linger;
use super::proxy_protocol::{HeaderFailure, Source, read_header};
use super::shutdown::Shutdown;
use super::{h1, h2};
use crate::deadline::Deadline;
use crate::http1::{ClientStream, Prefixed, ReadSide, write_all_within};
use crate::proxy::{ClientInfo, Proxy};

/// The connection preface every HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface's request line: bytes that begin with it are an HTTP/2 client's, whatever
/// follows (no HTTP/1.1 client sends the method `PRI` with the version `HTTP/2.0`).
const H2_PREFACE_LINE: usize = b"PRI * HTTP/2.0".len();

/// What the first bytes of a plain connection say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// The HTTP/2 preface, whole (h2c by prior knowledge).
    Http2,
    /// Anything that is not the HTTP/2 preface's request line: HTTP/1.1's room reads it.
    Http1,
    /// The preface's request line, then other bytes: an HTTP/2 client with a broken preface,
    /// owed a GOAWAY with PROTOCOL_ERROR (RFC 9113 §3.4), not an HTTP/1.1 answer.
    BrokenPreface,
}

/// Serves one client connection, plain or TLS (its handshake done), until it closes.
///
/// **An idle connection's task is this future, and its size is the cost of every idle client**:
/// it is a plain function around an `async move` block because an `async fn` keeps each
/// argument twice (as passed and as bound); the connection's parts come in one box, moved whole
/// into the room that serves it, so that the detector's state holds a pointer and not a second
/// copy of them.
#[allow(clippy::manual_async_fn)] // see above: the state's size
pub fn serve_connection(
    stream: ClientStream,
    proxy: Arc<Proxy>,
    client: ClientInfo,
    settings: Arc<ConnSettings>,
    shutdown: Arc<Shutdown>,
    seat: Seat,
) -> impl Future<Output = ()> + Send {
    // Responses are written whole; Nagle would only delay the last segment.
    let _ = stream.tcp().set_nodelay(true);
    // Over TLS, the PROXY header came before the handshake (see `tls`).
    let proxy_header = settings.proxy_header && matches!(stream, ClientStream::Plain(_));
    let (read, write) = stream.split();
    let conn = Box::new(Connection {
        proxy,
        client: Box::new(client),
        settings,
        shutdown,
        seat,
        side: Some(ReadSide {
            half: read,
            buf: BytesMut::new(),
        }),
        write,
    });
    async move {
        let mut conn = conn;
        if proxy_header && !Box::pin(take_proxy_header(&mut conn)).await {
            return;
        }
        if conn.settings.http2.cleartext
            && let Some(reader) = conn.side.as_mut()
        {
            match Box::pin(starts_with_preface(reader, conn.settings.header_timeout)).await {
                None => return,
                Some(Opening::Http1) => {}
                Some(Opening::BrokenPreface) => {
                    let Connection {
                        settings,
                        side,
                        mut write,
                        ..
                    } = *conn;
                    let mut timer = Deadline::default();
                    let frames = &mut [std::io::IoSlice::new(&BROKEN_PREFACE_ANSWER)];
                    let sent =
                        write_all_within(&mut write, frames, &mut timer, settings.write_timeout);
                    if sent.await.is_ok() {
                        linger(write, side).await;
                    }
                    return;
                }
                Some(Opening::Http2) => {
                    let Connection {
                        proxy,
                        client,
                        settings,
                        shutdown,
                        seat,
                        side,
                        write,
                    } = *conn;
                    let h2 = side.and_then(|reader| match reader.half.reunite(write) {
                        Ok(ClientStream::Plain(tcp)) => {
                            let stream = Prefixed::new(reader.buf, tcp);
                            Some(Box::pin(h2::serve_h2(
                                stream, proxy, *client, settings, shutdown, seat,
                            )))
                        }
                        _ => None,
                    });
                    if let Some(h2) = h2 {
                        h2.await;
                    }
                    return;
                }
            }
        }
        h1::serve(*conn).await
    }
}

/// Reads the PROXY protocol header, within `timeouts.client_header`; its source becomes the
/// client. `false`: the connection is to be closed (counted and logged).
async fn take_proxy_header(conn: &mut Connection) -> bool {
    let Some(reader) = conn.side.as_mut() else {
        return false;
    };
    let mut timer = Deadline::default();
    let mut stopping = pin!(conn.shutdown.notified());
    stopping.as_mut().enable();
    let header = read_header(
        reader,
        &mut timer,
        conn.settings.header_timeout,
        &conn.shutdown,
        stopping.as_mut(),
    )
    .await;
    match header {
        Ok(header) => {
            if let Source::Client(addr) = header.source {
                *conn.client = ClientInfo::new(addr).over(conn.client.scheme);
            }
            true
        }
        Err(failure) => {
            refuse_header(&conn.proxy, &conn.client, &failure);
            false
        }
    }
}

/// The answer to a broken preface: the server's preface (an empty SETTINGS frame, which must be
/// the first frame a server sends, RFC 9113 §3.4), then GOAWAY with last stream 0 and
/// PROTOCOL_ERROR (0x1), as h2spec's "invalid connection preface" case expects.
const BROKEN_PREFACE_ANSWER: [u8; 9 + 9 + 8] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, length 0, stream 0
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, length 8, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 0x1, // PROTOCOL_ERROR
];

/// What the client opened with, read within `limit`: the HTTP/2 preface (h2c by prior
/// knowledge), a broken one, or something else; what was read stays in the buffer for
/// whichever protocol it is. `None`: the client closed or said nothing in time.
async fn starts_with_preface(reader: &mut ReadSide, limit: Duration) -> Option<Opening> {
    let sniff = async {
        loop {
            let n = reader.buf.len().min(H2_PREFACE.len());
            if reader.buf[..n] != H2_PREFACE[..n] {
                let line = n.min(H2_PREFACE_LINE);
                return Some(
                    if n > H2_PREFACE_LINE && reader.buf[..line] == H2_PREFACE[..line] {
                        Opening::BrokenPreface
                    } else {
                        Opening::Http1
                    },
                );
            }
            if n == H2_PREFACE.len() {
                return Some(Opening::Http2);
            }
            match poll_fn(|cx| reader.poll_fill(cx, H2_PREFACE.len() - n)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, sniff).await.ok().flatten()
}

/// Counts and logs a connection closed for want of a good PROXY protocol header. Logged at
/// info: the source is a trusted balancer, so this is a misconfiguration worth seeing.
pub(super) fn refuse_header(proxy: &Proxy, client: &ClientInfo, failure: &HeaderFailure) {
    if let Some(reason) = failure.refusal() {
        proxy.stats().record_header_refused(reason);
        tracing::info!(peer = %client.addr, reason = reason.name(), "connection closed: {failure}");
    }
}
