//! The HTTP/1.1 room of the client side: read a request head, hand the request to the proxy,
//! write the response, and again while the connection is kept alive. Everything happens in the
//! connection's own task.
//!
//! Timeouts: a client gets `timeouts.client_header` to send a whole head once it started one, or
//! from the moment it connected (slowloris guard: 408 and close), and `timeouts.keepalive_idle`
//! between requests (closed quietly). No timer runs while a request is served: the request has
//! timeouts of its own. An idle connection holds no buffers.

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request, StatusCode};
use http_body::SizeHint;

use crate::deadline::Deadline;
use crate::http1::poll_write_within;
use crate::http1::{
    BodyDecoder, ClientBody, ClientRequest, ClientWriteHalf, Framing, ReadSide, ReadSlot, Rejected,
    encode_response_head, parse_client_request,
};
use crate::proxy::{ClientInfo, Proxy, Reply, ResponseBody};
use crate::upstream::{IncomingBody, METHOD_CLASSES};

use super::connection::{ConnSettings, Connection};
use super::h1_write::{ClientWrite, answer_and_close, flush, last_answer, linger, write_response};
use super::shutdown::Shutdown;

/// Why no request came.
enum NoRequest {
    /// The client closed, went idle too long, or alb is shutting down: close quietly.
    Closed,
    /// The head was too slow: 408.
    TooSlow,
    Rejected(Rejected),
}

/// Serves an HTTP/1.1 connection the detector handed over: request after request while it is
/// kept alive.
///
/// The connection's task is this future once the detector is done: a plain function around an
/// `async move` block holding each part once, everything a request needs boxed apart
/// (`serve_request`).
#[allow(clippy::manual_async_fn)] // see above: the state's size
pub(super) fn serve(conn: Connection) -> impl Future<Output = ()> + Send {
    let Connection {
        proxy,
        client,
        settings,
        shutdown,
        seat,
        mut side,
        mut write,
    } = conn;
    async move {
        let _seat = seat;
        let mut timer = Deadline::default();
        let mut stopping = pin!(shutdown.notified());
        stopping.as_mut().enable();
        proxy.stats().h1_connections.fetch_add(1, Ordering::Relaxed);
        let mut fresh = true;
        loop {
            let Some(reader) = side.as_mut() else {
                return;
            };
            let wait = if fresh {
                settings.header_timeout
            } else {
                settings.keepalive_timeout
            };
            // The head is read, and the request's future boxed, in a block of their own.
            // The block is the scrutinee so that what it made dies with the `match`, before
            // the request is awaited (a `let` would keep it in every later state).
            #[allow(clippy::blocks_in_conditions)]
            let step = match {
                let next = read_head(
                    reader,
                    &mut timer,
                    wait,
                    fresh,
                    &settings,
                    &shutdown,
                    stopping.as_mut(),
                )
                .await;
                match next {
                    Ok(request) => Step::Serve(Box::pin(serve_request(
                        request,
                        Exchange {
                            proxy: &proxy,
                            client: &client,
                            settings: &settings,
                            shutdown: &shutdown,
                            timer: &mut timer,
                        },
                        write,
                        side,
                    ))),
                    Err(failure) => match refusal_for(&proxy, &settings, failure) {
                        Some(answer) => {
                            let limit = settings.write_timeout;
                            Step::Refuse(Box::pin(answer_and_close(write, side, answer, limit)))
                        }
                        None => return,
                    },
                }
            } {
                Step::Serve(served) => served,
                Step::Refuse(refused) => return refused.await,
            };
            fresh = false;
            match step.await {
                Served::KeepAlive(w, s) => (write, side) = (w, s),
                Served::Close(w, s) => return Box::pin(linger(w, s)).await,
                Served::Gone => return,
            }
        }
    }
}

/// What comes after a request head was awaited.
enum Step<S, R> {
    Serve(Pin<Box<S>>),
    /// alb's own answer to a head it could not take, then the connection closes.
    Refuse(Pin<Box<R>>),
}

/// alb's answer when no request came (`None`: close quietly), counted and logged.
fn refusal_for(proxy: &Proxy, settings: &ConnSettings, failure: NoRequest) -> Option<Vec<u8>> {
    match failure {
        NoRequest::Closed => None,
        NoRequest::TooSlow => {
            tracing::info!(timeout = ?settings.header_timeout, "client too slow to send a request head: 408");
            Some(last_answer(
                StatusCode::REQUEST_TIMEOUT,
                "the request head did not arrive in time",
            ))
        }
        NoRequest::Rejected(rejected) => {
            tracing::debug!(status = %rejected.status, reason = rejected.reason, "request refused");
            // Counted with the methods alb does not name: the head may not even have one.
            let other = METHOD_CLASSES.len() - 1;
            proxy.stats().record_local(other, rejected.status.as_u16());
            Some(last_answer(rejected.status, rejected.reason))
        }
    }
}

/// What one request's exchange needs of its connection.
struct Exchange<'a> {
    proxy: &'a Arc<Proxy>,
    client: &'a ClientInfo,
    settings: &'a ConnSettings,
    shutdown: &'a Shutdown,
    timer: &'a mut Deadline,
}

/// How the connection goes on after a request: its halves come back unless it has ended.
enum Served {
    KeepAlive(ClientWriteHalf, Option<ReadSide>),
    /// Answered with the connection closing: drain what the client still sends, then close.
    Close(ClientWriteHalf, Option<ReadSide>),
    /// Gone: broken, or become a tunnel that has ended.
    Gone,
}

/// One request, from its head to the end of its response. A future of its own, boxed by the
/// caller: a connection's task is as large as the largest state it can be in, and **an idle
/// keep-alive connection must not pay for a request's** (one allocation per request buys a
/// connection task of a few hundred bytes between requests).
/// (A plain function around an `async move` block: an `async fn` would hold its arguments
/// twice, and this future is copied into its box once per request.)
#[allow(clippy::manual_async_fn)] // see above: the state's size
fn serve_request(
    request: ClientRequest,
    conn: Exchange<'_>,
    mut write: ClientWriteHalf,
    mut side: Option<ReadSide>,
) -> impl Future<Output = Served> + Send + '_ {
    async move {
        let Exchange {
            proxy,
            client,
            settings,
            shutdown,
            timer,
        } = conn;
        // The response's buffer: one request's, so an idle connection holds none.
        let mut out = BytesMut::new();
        proxy.stats().h1_requests.fetch_add(1, Ordering::Relaxed);
        let ClientRequest {
            parts,
            framing,
            close,
            expects_continue,
        } = request;
        let head_request = parts.method == Method::HEAD;
        let version = parts.version;
        let wants_continue = expects_continue.then(|| Arc::new(AtomicBool::new(false)));
        // Where a body hands the connection's reader back when it ends: made for requests with a
        // body only, so that neither a body-less request nor an idle connection pays for it.
        let mut slot = None;
        let body = IncomingBody::Http1(match framing {
            Framing::Empty | Framing::Length(0) => ClientBody::empty(),
            _ => match side.take() {
                Some(reader) => ClientBody::new(
                    reader,
                    BodyDecoder::new(framing),
                    slot.insert(ReadSlot::default()).clone(),
                    wants_continue.clone(),
                ),
                None => return Served::Gone,
            },
        });
        let request = Request::from_parts(parts, body);
        let mut client_write = ClientWrite {
            half: &mut write,
            deadline: timer,
            limit: settings.write_timeout,
        };
        let (response, writable) = handle(
            proxy,
            request,
            client,
            &mut client_write,
            wants_continue.as_deref(),
        )
        .await;
        if !writable {
            drop(response);
            return Served::Gone;
        }
        if let ResponseBody::Tunnel(_) = response.body {
            // The connection leaves HTTP: the 101, then bytes both ways until either side ends.
            let Reply {
                status,
                relayed,
                headers,
                body: ResponseBody::Tunnel(tunnel),
            } = response
            else {
                return Served::Gone;
            };
            encode_response_head(
                &mut out,
                status,
                &headers,
                relayed.as_deref(),
                SizeHint::with_exact(0),
                false,
                version,
                false,
            );
            if flush(&mut client_write, &mut out, None).await.is_err() {
                return Served::Gone;
            }
            // An upgrade request has no body: its reader is still here, with any bytes the
            // client sent past the head, which belong to the new protocol.
            let Some(reader) = side.take() else {
                return Served::Gone;
            };
            if let Ok(stream) = reader.half.reunite(write) {
                tunnel.run(stream, reader.buf).await;
            }
            return Served::Gone;
        }
        // A body not read to its end by now (a local answer, or an early one while the upload
        // goes on) may leave the connection unusable: say so in the head rather than close
        // without warning.
        let unread = side.is_none()
            && !slot.as_ref().is_some_and(|slot| {
                slot.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|(_, decoder)| decoder.is_done())
            });
        let keep = !close && !unread && !shutdown.is_started();
        let kept = write_response(
            &mut client_write,
            &mut out,
            response,
            head_request,
            version,
            keep,
        )
        .await;
        if side.is_none() {
            // The body handed its reader back: usable only if the body was read to its end.
            let back = slot.and_then(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take());
            side = back.and_then(|(reader, decoder)| decoder.is_done().then_some(reader));
        }
        if !kept || side.is_none() {
            return Served::Close(write, side);
        }
        // **A connection waiting for its next request holds no buffer**: the response's went
        // with this future, the read side's is let go here (it takes a new one once the
        // socket is readable, see `ReadSide`), so an idle keep-alive connection costs its task
        // and socket alone. Bytes of a pipelined request already read stay.
        if let Some(reader) = side.as_mut()
            && reader.buf.is_empty()
        {
            reader.buf = BytesMut::new();
        }
        Served::KeepAlive(write, side)
    }
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Runs the proxy on `request`, sending `100 Continue` as soon as the body is first asked for,
/// beside the proxy's work and under the write deadline. An interim answer once started is
/// finished before the final one; one that cannot be written (the client is not reading) breaks
/// the connection: the second value is then false and nothing more may be written on it.
/// (A plain function around an `async move` block, holding the request once.)
#[allow(clippy::manual_async_fn)] // see above: the state's size
fn handle<'a>(
    proxy: &'a Proxy,
    request: Request<IncomingBody>,
    client: &'a ClientInfo,
    write: &'a mut ClientWrite<'_>,
    wants_continue: Option<&'a AtomicBool>,
) -> impl Future<Output = (Reply, bool)> + Send + 'a {
    async move {
        let mut handling = pin!(proxy.handle(request, client));
        let Some(flag) = wants_continue else {
            return (handling.await, true);
        };
        let mut done = None;
        let mut interim: &[u8] = &[];
        let mut writable = true;
        poll_fn(|cx| {
            if done.is_none()
                && let Poll::Ready(response) = handling.as_mut().poll(cx)
            {
                done = Some(response);
            }
            if flag.swap(false, Ordering::AcqRel) && done.is_none() {
                interim = CONTINUE;
            }
            if done.is_some() && interim.len() == CONTINUE.len() {
                interim = &[]; // not begun, and no longer of use
            }
            while writable && !interim.is_empty() {
                let half = Pin::new(&mut *write.half);
                let parts = [IoSlice::new(interim)];
                match poll_write_within(half, &parts, write.deadline, write.limit, cx) {
                    Poll::Ready(Ok(n)) => interim = &interim[n..],
                    Poll::Ready(Err(_)) => writable = false,
                    Poll::Pending => return Poll::Pending,
                }
            }
            match done.take() {
                Some(response) => Poll::Ready((response, writable)),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// Waits for a complete request head. `wait` bounds the time until its first byte (a new
/// connection's head timeout, or the keep-alive timeout), then `client_header` the whole head.
/// A new connection is in its head from the start: silence there is too slow, not idle.
///
/// This is what an idle keep-alive connection waits in, so it is a bare `poll_fn` set up here,
/// holding a few references and flags and nothing twice.
fn read_head<'a>(
    reader: &'a mut ReadSide,
    timer: &'a mut Deadline,
    wait: Duration,
    fresh: bool,
    settings: &'a ConnSettings,
    shutdown: &'a Shutdown,
    mut stopping: Pin<&'a mut tokio::sync::futures::Notified<'_>>,
) -> impl Future<Output = Result<ClientRequest, NoRequest>> + 'a {
    let mut started = !reader.buf.is_empty();
    timer.set(if started {
        settings.header_timeout
    } else {
        wait
    });
    // Bytes looked at for the end of the head: a head trickled in small pieces is parsed when
    // it may be complete (and once at its start, so garbage is refused at once), not from its
    // first byte again after every read.
    let mut scanned: usize = 0;
    // On a last call (see `Shutdown::start_with_last_call`), the short wait it allows has begun.
    let mut last_call = false;
    poll_fn(move |cx| {
        loop {
            let buf = &reader.buf;
            let worth_parsing = !buf.is_empty()
                && (scanned == 0 || buf.len() > settings.rules.max_head || {
                    let tail = &buf[scanned.saturating_sub(3)..];
                    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
                });
            scanned = buf.len();
            if worth_parsing {
                match parse_client_request(&mut reader.buf, &settings.rules) {
                    Ok(Some(request)) => return Poll::Ready(Ok(request)),
                    Ok(None) if !started => {
                        started = true;
                        timer.set(settings.header_timeout);
                    }
                    Ok(None) => {}
                    Err(rejected) => return Poll::Ready(Err(NoRequest::Rejected(rejected))),
                }
            }
            match reader.poll_fill(cx, 0) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(NoRequest::Closed));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        if !started && (shutdown.is_started() || stopping.as_mut().poll(cx).is_ready()) {
            match shutdown.last_call() {
                None => return Poll::Ready(Err(NoRequest::Closed)),
                Some(grace) if !last_call => {
                    last_call = true;
                    timer.set(grace);
                }
                Some(_) => {}
            }
        }
        if timer.poll_passed(cx) {
            // Silence through a last call is no fault of the client: close quietly.
            return Poll::Ready(Err(if last_call && !started {
                NoRequest::Closed
            } else if started || fresh {
                NoRequest::TooSlow
            } else {
                NoRequest::Closed
            }));
        }
        Poll::Pending
    })
}
