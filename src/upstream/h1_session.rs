//! The session with an HTTP/1.1 backend for one request: a pooled connection (or a new one), the
//! request head (encoded once per request, [`super::Outbound::http1_head`]) and body, and the wait for
//! the response head. The exchange runs in the request's own task: the head is one write, the
//! answer is read where it lands.

use std::borrow::Cow;
use std::future::poll_fn;
use std::io::IoSlice;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;

use super::request_body::{BodyError, RequestBody};
use super::session::{Answer, Progress, SessionError, SessionRequest, Unanswered};
use super::upload::{Upload, UploadError};
use super::{Backend, UpstreamConn};
use crate::config::Timeouts;
use crate::http1::{PartialWrite, ResponseHead, UpstreamError, WireError, parse_response_head};

/// Pooled connections tried per attempt before opening a new one: each may have been closed by the
/// backend just as it was picked.
const STALE_CONNECTION_TRIES: usize = 3;

/// What an HTTP/1.1 exchange needs of the request: its head for this backend, and what the
/// answer is read against.
struct Http1Request<'a> {
    head: Cow<'a, [u8]>,
    head_request: bool,
    idempotent: bool,
    /// The protocols the request offers to switch to: a `101` to one of them is its answer.
    upgrade: Option<&'a http::HeaderValue>,
}

/// One attempt on an HTTP/1.1 `backend`: sends the request and waits for the response head.
pub(super) async fn exchange_h1(
    backend: &Backend,
    request: SessionRequest<'_>,
    mut body: RequestBody,
    timeouts: &Timeouts,
) -> Result<Answer, Unanswered> {
    let outbound = request.outbound;
    let request = &Http1Request {
        head: outbound.http1_head().for_backend(backend.host_header()),
        head_request: outbound.is_head(),
        idempotent: outbound.idempotent,
        upgrade: outbound.upgrade.as_ref(),
    };
    let mut stale_tries = 0;
    loop {
        let pooled = if stale_tries < STALE_CONNECTION_TRIES {
            // A request that may not be sent twice gets a connection known to be open now: if
            // it broke after the request was written, the request would fail, not go again.
            backend.pool().checkout(!request.idempotent)
        } else {
            None
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            // Boxed: opening a connection (a name lookup included) is a large future and a
            // rare one; inline, it would enlarge every request's state.
            None => match Box::pin(UpstreamConn::open(
                backend.addr(),
                backend.tls(),
                timeouts.connect,
            ))
            .await
            {
                Ok(conn) => conn,
                Err(e) => {
                    backend.request_recheck();
                    return Err(Unanswered {
                        error: e.into(),
                        progress: Progress::Unsent(body),
                    });
                }
            },
        };
        let reused = conn.is_reused();
        let replayable = !matches!(body, RequestBody::Client(_));
        conn.note_request();
        let exchanged = exchange_on(&mut conn, request, &mut body, timeouts).await;
        let broken = match exchanged {
            Ok((response, upload)) => {
                return Ok(Answer::Http1 {
                    response,
                    conn,
                    upload,
                });
            }
            Err(broken) => broken,
        };
        // A reused connection the backend closed as it was picked: the request never reached
        // it (nothing was written; the body is still whole) or, for an idempotent one with a
        // kept body, may be sent again.
        let silent = matches!(broken.progress, Reached::NoHead { silent: true });
        let unsent = matches!(broken.progress, Reached::Nothing);
        if reused && (unsent || (silent && request.idempotent && replayable)) {
            stale_tries += 1;
            continue;
        }
        let progress = match broken.progress {
            // `body` is still whole exactly when nothing was sent (the exchange hands a
            // streamed body back only then).
            Reached::Nothing => Progress::Unsent(body),
            Reached::NoHead { .. } => Progress::NoAnswer,
            Reached::NoHeadInTime => Progress::NoAnswerInTime,
            Reached::Final => Progress::Final,
        };
        return Err(Unanswered {
            error: broken.error,
            progress,
        });
    }
}

/// One request and its response head on `conn`, with the rest of the upload when the backend
/// answered before the body was all sent.
async fn exchange_on(
    conn: &mut UpstreamConn,
    request: &Http1Request<'_>,
    body: &mut RequestBody,
    timeouts: &Timeouts,
) -> Result<(ResponseHead, Option<Upload>), Broken> {
    let (head, limit) = (&request.head, timeouts.response);
    let written = match body {
        RequestBody::Empty => {
            conn.write_all(&mut [IoSlice::new(head)], timeouts.write)
                .await
        }
        RequestBody::Buffered(bytes) => {
            conn.write_all(
                &mut [IoSlice::new(head), IoSlice::new(bytes)],
                timeouts.write,
            )
            .await
        }
        RequestBody::Client(_) => {
            let RequestBody::Client(streamed) = std::mem::replace(body, RequestBody::Empty) else {
                unreachable!("matched above");
            };
            let head = Bytes::copy_from_slice(head);
            let mut upload = Some(Upload::new(head, streamed, timeouts.write));
            let result = Box::pin(upload_and_await(conn, &mut upload, request, limit)).await;
            if let Err(broken) = &result
                && matches!(broken.progress, Reached::Nothing)
                && let Some(streamed) = upload.and_then(Upload::into_unsent)
            {
                *body = RequestBody::Client(streamed);
            }
            return result;
        }
    };
    // Nothing written: the backend got nothing. Part of it written: the backend may have acted
    // on it and may answer (a 413 before reading the rest, say): the answer is taken if it
    // comes, and the connection ends with it.
    let partly = match written {
        Ok(()) => false,
        Err(PartialWrite { error, written: 0 }) => return Err(Broken::unsent(error)),
        Err(PartialWrite { error, .. }) => {
            tracing::debug!(%error, "request write broke off; waiting for an answer");
            true
        }
    };
    let mut received = false;
    conn.deadline.set(limit);
    poll_fn(|cx| match poll_head(conn, request, &mut received, cx) {
        Poll::Ready(Ok(head)) if partly => Poll::Ready(Ok((head.last_on_connection(), None))),
        Poll::Ready(answer) => Poll::Ready(answer.map(|head| (head, None))),
        Poll::Pending if conn.deadline.poll_passed(cx) => Poll::Ready(Err(Broken::timeout(limit))),
        Poll::Pending => Poll::Pending,
    })
    .await
}

/// Streams the body while watching for the answer. The response timeout starts when the upload
/// ends: the clock measures the backend's thinking time, not the client's upload speed. An early
/// answer is taken as it comes, the upload going on beside the response body.
///
/// The connection may end while the head still waits for the body's first bytes (a pooled
/// connection the backend closed, keep-alive over, as the client was about to send): nothing was
/// sent, and the failure says so; `upload` is left in place for the caller to take the body back.
async fn upload_and_await(
    conn: &mut UpstreamConn,
    upload: &mut Option<Upload>,
    request: &Http1Request<'_>,
    limit: Duration,
) -> Result<(ResponseHead, Option<Upload>), Broken> {
    let mut write_failed = None;
    let mut armed = false;
    let mut received = false;
    poll_fn(|cx| {
        // Before the first byte goes out, the connection is asked for its state: a pooled one the
        // backend closed while alb waited for the client's first body bytes reads as ended, and
        // the request is still whole for a fresh connection. Written first, it would be lost.
        if upload.as_ref().is_some_and(Upload::is_unsent)
            && let Poll::Ready(answer) = poll_head(conn, request, &mut received, cx)
        {
            return Poll::Ready(settle(answer, upload, &write_failed));
        }
        if let Some(sending) = upload.as_mut() {
            match sending.poll_send(conn, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => *upload = None,
                Poll::Ready(Err(UploadError::Client(e))) => {
                    return Poll::Ready(Err(Broken::client(e)));
                }
                // The backend may have stopped reading because it answered: wait for its answer.
                Poll::Ready(Err(UploadError::Upstream(e))) => {
                    *upload = None;
                    write_failed = Some(e);
                }
            }
        }
        if let Poll::Ready(answer) = poll_head(conn, request, &mut received, cx) {
            return Poll::Ready(settle(answer, upload, &write_failed));
        }
        if upload.is_none() {
            if !armed {
                armed = true;
                conn.deadline.set(limit);
            }
            if conn.deadline.poll_passed(cx) {
                return Poll::Ready(Err(match write_failed.take() {
                    Some(e) => Broken::upstream(e.into(), !received),
                    None => Broken::timeout(limit),
                }));
            }
        }
        Poll::Pending
    })
    .await
}

/// What a response head (or the connection's end) means for an upload that may be unfinished.
fn settle(
    answer: Result<ResponseHead, Broken>,
    upload: &mut Option<Upload>,
    write_failed: &Option<std::io::Error>,
) -> Result<(ResponseHead, Option<Upload>), Broken> {
    let unsent = upload.as_ref().is_some_and(Upload::is_unsent);
    match answer {
        // An answer on a connection that has carried nothing of this request yet is not its
        // answer (a stray or late response): the attempt never happened.
        Ok(_) if unsent => Err(Broken {
            error: SessionError::Framing("a response before the request was sent"),
            progress: Reached::Nothing,
        }),
        Ok(head) => {
            let unfinished = upload.take();
            Ok(match (&unfinished, write_failed) {
                (None, None) => (head, None),
                _ => (head.last_on_connection(), unfinished),
            })
        }
        Err(mut broken) => {
            if unsent {
                broken.progress = Reached::Nothing;
            }
            Err(broken)
        }
    }
}

/// How far an exchange on one connection got before it failed.
#[derive(Debug, Clone, Copy)]
enum Reached {
    Nothing,
    /// Sent; the connection ended, or sent what is not a response head, before a whole head.
    /// `silent`: not one byte came back.
    NoHead {
        silent: bool,
    },
    NoHeadInTime,
    Final,
}

/// A failed exchange on one connection.
struct Broken {
    error: SessionError,
    progress: Reached,
}

impl Broken {
    /// The head (and kept body) could not be written: the backend cannot have acted on a
    /// request it did not get whole.
    fn unsent(error: std::io::Error) -> Broken {
        Broken {
            error: SessionError::Broken(error.into()),
            progress: Reached::Nothing,
        }
    }

    fn timeout(limit: Duration) -> Broken {
        Broken {
            error: SessionError::Timeout(limit),
            progress: Reached::NoHeadInTime,
        }
    }

    /// The connection failed; `no_answer`: before any byte of an answer.
    fn upstream(error: UpstreamError, no_answer: bool) -> Broken {
        match error {
            // Not retried: the backend did process the request.
            UpstreamError::Wire(WireError::Framing(problem)) => Broken {
                error: SessionError::Framing(problem),
                progress: Reached::Final,
            },
            error => Broken {
                error: SessionError::Broken(error),
                progress: Reached::NoHead { silent: no_answer },
            },
        }
    }

    fn client(error: BodyError) -> Broken {
        Broken {
            error: SessionError::Client(error),
            progress: Reached::Final,
        }
    }
}

/// Reads until a complete final response head is in the buffer, interim (1xx) ones skipped (a
/// `101` to an offered upgrade is final: see [`parse_response_head`]).
fn poll_head(
    conn: &mut UpstreamConn,
    request: &Http1Request<'_>,
    received: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, Broken>> {
    loop {
        if !conn.buf.is_empty() {
            *received = true;
            match parse_response_head(&mut conn.buf, request.head_request, request.upgrade) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(Broken::upstream(e.into(), false))),
            }
        }
        match ready!(conn.poll_fill(cx, 0)) {
            Ok(0) => return Poll::Ready(Err(Broken::upstream(UpstreamError::Closed, !*received))),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Broken::upstream(e.into(), !*received))),
        }
    }
}
