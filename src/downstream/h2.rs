//! One HTTP/2 client connection. h2 drives the frames; every stream is one request through the
//! proxy, in a task of its own (a pick per request, not per connection), answered on its
//! stream. The connection task only accepts streams and decides when the connection ends:
//!
//! - shutdown or handover: GOAWAY (graceful: streams under way finish), then `timeouts.drain`;
//! - `timeouts.keepalive_idle` with no stream open: GOAWAY;
//! - more client resets per second than `http2.max_resets_per_second`: GOAWAY with
//!   ENHANCE_YOUR_CALM at once (rapid reset, CVE-2023-44487).
//!
//! Every wait has a deadline: the preface and SETTINGS within `timeouts.client_header`, each
//! stream's response within the proxy's timeouts, each wait for window within `timeouts.write`,
//! and a closing connection within `timeouts.drain`.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::connection::{ConnSettings, Seat, expects_continue};
use super::shutdown::Shutdown;
use crate::http1::RequestRules;
use crate::http2::{RecvBody, SendError, forwardable, grpc, response_fields, send_body};
use crate::proxy::{ClientInfo, Proxy, Reply};
use crate::upstream::{IncomingBody, METHOD_CLASSES};

/// Response bytes h2 may hold per stream beyond what the peer's window lets out.
const SEND_BUFFER: usize = 64 * 1024;
/// Streams a client may reset before alb even accepted them, at any one time (h2's own guard).
const PENDING_ACCEPT_RESETS: usize = 20;
/// How long a connection closed for abuse gets to flush its GOAWAY.
const ABUSE_LINGER: Duration = Duration::from_secs(1);

/// Serves an HTTP/2 connection (its TLS handshake done, or its h2c preface seen) until it ends.
pub async fn serve_h2<T>(
    io: T,
    proxy: Arc<Proxy>,
    client: ClientInfo,
    settings: Arc<ConnSettings>,
    shutdown: Arc<Shutdown>,
    _seat: Seat,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = settings.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_header_list_size(u32::try_from(settings.rules.max_head).unwrap_or(u32::MAX))
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS);
    let handshake = builder.handshake::<T, Bytes>(io);
    let mut conn = match tokio::time::timeout(settings.header_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(peer = %client.addr, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    proxy.stats().h2_connections.fetch_add(1, Ordering::Relaxed);
    let streams = Arc::new(Streams::new(limits.max_resets_per_second));
    let mut stopping = pin!(shutdown.notified());
    stopping.as_mut().enable();
    let mut closing: Option<Instant> = None;
    if shutdown.is_started() {
        conn.graceful_shutdown();
        closing = Some(Instant::now() + settings.drain);
    }
    let mut idle_since = Some(Instant::now());
    loop {
        let idle_at = idle_since.map(|since| since + settings.keepalive_timeout);
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    idle_since = None;
                    let open = streams.open();
                    let stream = StreamTask {
                        proxy: proxy.clone(),
                        client: client.clone(),
                        rules: settings.rules,
                        write_limit: settings.write_timeout,
                        streams: streams.clone(),
                    };
                    tokio::spawn(stream.serve(request, respond, open));
                }
                Some(Err(e)) => {
                    if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) && !e.is_remote() {
                        // h2's own guards: resets of streams not yet accepted, a header list far
                        // over the limit, a CONTINUATION flood.
                        proxy.stats().h2_abuse_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(peer = %client.addr, error = %e, "HTTP/2 connection closed: abusive framing");
                    } else {
                        tracing::debug!(peer = %client.addr, error = %e, "HTTP/2 connection failed");
                    }
                    break;
                }
                None => break,
            },
            () = streams.changed.notified() => {
                if streams.is_abusive() && !streams.calmed() {
                    proxy.stats().h2_reset_floods.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %client.addr, "HTTP/2 connection closed: too many stream resets");
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    closing = Some(Instant::now() + ABUSE_LINGER);
                }
                if streams.open_count() == 0 && idle_since.is_none() {
                    idle_since = Some(Instant::now());
                }
            }
            () = &mut stopping, if closing.is_none() => {
                conn.graceful_shutdown();
                closing = Some(Instant::now() + settings.drain);
            }
            () = sleep_until(idle_at), if idle_at.is_some() && closing.is_none() => {
                conn.graceful_shutdown();
                closing = Some(Instant::now() + settings.drain);
            }
            () = sleep_until(closing), if closing.is_some() => break,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// What the connection task knows of its streams: how many are open, and how fast the client
/// resets them.
struct Streams {
    open: AtomicUsize,
    max_resets: u32,
    /// Resets in the current one-second window, and when that window began (ms since `epoch`).
    resets: AtomicU32,
    window_start: AtomicU32,
    epoch: Instant,
    calmed: std::sync::atomic::AtomicBool,
    changed: Notify,
}

impl Streams {
    fn new(max_resets: u32) -> Streams {
        Streams {
            open: AtomicUsize::new(0),
            max_resets,
            resets: AtomicU32::new(0),
            window_start: AtomicU32::new(0),
            epoch: Instant::now(),
            calmed: std::sync::atomic::AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The client cancelled a stream alb was working on.
    fn note_reset(&self) {
        let now = u32::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u32::MAX);
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= 1000 {
            self.window_start.store(now, Ordering::Relaxed);
            self.resets.store(0, Ordering::Relaxed);
        }
        if self.resets.fetch_add(1, Ordering::Relaxed) + 1 > self.max_resets {
            self.changed.notify_one();
        }
    }

    fn is_abusive(&self) -> bool {
        self.resets.load(Ordering::Relaxed) > self.max_resets
    }

    /// True once the connection was told to calm down (asked once only).
    fn calmed(&self) -> bool {
        self.calmed.swap(true, Ordering::Relaxed)
    }
}

/// A stream counted open until dropped: **the open count is undone here and only here**, so a
/// stream task ending any way (finished, reset, panicked) frees its place.
struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.changed.notify_one();
        }
    }
}

/// One stream's request: what it needs of its connection.
struct StreamTask {
    proxy: Arc<Proxy>,
    client: ClientInfo,
    rules: RequestRules,
    write_limit: Duration,
    streams: Arc<Streams>,
}

impl StreamTask {
    async fn serve(
        self,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        _open: OpenStream,
    ) {
        let stats = self.proxy.stats().clone();
        stats.h2_requests.fetch_add(1, Ordering::Relaxed);
        let (mut parts, recv) = request.into_parts();
        let grpc = grpc::is_grpc(&parts.headers);
        let head_request = parts.method == Method::HEAD;
        let length = match forwardable(&mut parts, &self.rules) {
            Ok(length) => length,
            Err(rejected) => {
                tracing::debug!(status = %rejected.status, reason = rejected.reason, "HTTP/2 request refused");
                stats.record_local(METHOD_CLASSES.len() - 1, rejected.status.as_u16());
                let reply = Reply::local(rejected.status, rejected.reason);
                return self.answer(respond, reply, grpc, head_request).await;
            }
        };
        if !recv.is_end_stream() && expects_continue(&parts.headers) {
            // The client holds its body back until told to send it: at once, as nothing alb
            // decides depends on the body.
            let mut interim = Response::new(());
            *interim.status_mut() = http::StatusCode::CONTINUE;
            let _ = respond.send_informational(interim);
        }
        let request = Request::from_parts(parts, IncomingBody::Http2(RecvBody::new(recv, length)));
        let response = tokio::select! {
            response = self.proxy.handle(request, &self.client) => response,
            _ = poll_fn(|cx| respond.poll_reset(cx)) => {
                self.streams.note_reset();
                return;
            }
        };
        self.answer(respond, response, grpc, head_request).await;
    }

    /// Sends `response` on the stream. A gRPC call gets alb's own failures in gRPC's terms
    /// (trailers-only, grpc-status), and a backend breaking off mid-call ends it with
    /// UNAVAILABLE rather than a reset its client would read as INTERNAL.
    async fn answer(
        &self,
        mut respond: SendResponse<Bytes>,
        reply: Reply,
        grpc: bool,
        head_request: bool,
    ) {
        if grpc && reply.is_local() {
            let _ = respond.send_response(reply.grpc_trailers_only(), true);
            return;
        }
        let Reply {
            status,
            relayed,
            headers,
            mut body,
        } = reply;
        let fields = response_fields(
            status,
            headers,
            relayed.as_deref(),
            body.size_hint(),
            head_request,
        );
        let mut head = Response::new(());
        *head.status_mut() = status;
        *head.headers_mut() = fields;
        let end = head_request || body.is_end_stream();
        let Ok(mut send) = respond.send_response(head, end) else {
            return;
        };
        if end {
            return;
        }
        match send_body(&mut send, Pin::new(&mut body), self.write_limit).await {
            Ok(()) => {}
            Err(SendError::Peer(e)) => {
                if e.is_reset() && e.is_remote() {
                    self.streams.note_reset();
                }
            }
            Err(SendError::Stalled(limit)) => {
                tracing::debug!(peer = %self.client.addr, ?limit, "HTTP/2 stream closed: the client opened no window");
                send.send_reset(Reason::CANCEL);
            }
            Err(SendError::Body(e)) if grpc => {
                let trailers = grpc::status_trailers(grpc::UNAVAILABLE, &format!("alb: {e}"));
                if send.send_trailers(trailers).is_err() {
                    send.send_reset(Reason::INTERNAL_ERROR);
                }
            }
            Err(SendError::Body(_)) => send.send_reset(Reason::INTERNAL_ERROR),
        }
    }
}
