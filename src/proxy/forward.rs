//! Sending one attempt to one backend: a pooled connection (or a new one), the request head and
//! body, and the wait for the response head under `timeouts.response`. The exchange runs in the
//! request's own task: the head is one write, the answer is read where it lands.

use std::borrow::Cow;
use std::future::poll_fn;
use std::io::IoSlice;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;

use super::request_body::{BodyError, RequestBody};
use super::upload::{Upload, UploadError};
use super::{Failure, ProxyError, Routing};
use crate::http1::{ResponseHead, UpstreamError, WireError, parse_response_head};
use crate::upstream::{Backend, UpstreamConn};

/// Pooled connections tried per attempt before opening a new one: each may have been closed by the
/// backend just as it was picked.
const STALE_CONNECTION_TRIES: usize = 3;

/// The request as every attempt sends it.
pub(super) struct Attempt<'a> {
    pub(super) head: Cow<'a, [u8]>,
    pub(super) head_request: bool,
    pub(super) idempotent: bool,
}

impl Routing {
    /// Sends the request to `backend` and waits for the response head within `timeouts.response`.
    pub(super) async fn forward(
        &self,
        backend: &Backend,
        attempt: &Attempt<'_>,
        mut body: RequestBody,
    ) -> Result<Answer, Failure> {
        let mut stale_tries = 0;
        loop {
            let pooled = if stale_tries < STALE_CONNECTION_TRIES {
                backend.pool().checkout()
            } else {
                None
            };
            let mut conn = match pooled {
                Some(conn) => conn,
                // Boxed: opening a connection (a name lookup included) is a large future and a
                // rare one; inline, it would enlarge every request's state.
                None => match Box::pin(UpstreamConn::open(backend.addr(), self.timeouts.connect))
                    .await
                {
                    Ok(conn) => conn,
                    Err(e) => {
                        backend.request_recheck();
                        return Err(Failure {
                            error: e.into(),
                            body: Some(body),
                        });
                    }
                },
            };
            let reused = conn.is_reused();
            let replayable = !matches!(body, RequestBody::Client(_));
            conn.note_request();
            let exchanged = self
                .exchange(&mut conn, &attempt.head, &mut body, attempt.head_request)
                .await;
            let broken = match exchanged {
                Ok((response, upload)) => {
                    return Ok(Answer {
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
            if reused && (broken.unsent || (broken.no_answer && attempt.idempotent && replayable)) {
                stale_tries += 1;
                continue;
            }
            // `body` is still whole exactly when nothing was sent (the exchange hands a streamed
            // body back only then).
            return Err(Failure {
                error: broken.error,
                body: broken.unsent.then_some(body),
            });
        }
    }

    /// One request and its response head on `conn`, with the rest of the upload when the backend
    /// answered before the body was all sent.
    async fn exchange(
        &self,
        conn: &mut UpstreamConn,
        head: &[u8],
        body: &mut RequestBody,
        head_request: bool,
    ) -> Result<(ResponseHead, Option<Upload>), Broken> {
        let limit = self.timeouts.response;
        match body {
            RequestBody::Empty => conn
                .write_all(&mut [IoSlice::new(head)], self.timeouts.write)
                .await
                .map_err(Broken::unsent)?,
            RequestBody::Buffered(bytes) => {
                conn.write_all(
                    &mut [IoSlice::new(head), IoSlice::new(bytes)],
                    self.timeouts.write,
                )
                .await
                .map_err(Broken::unsent)?;
            }
            RequestBody::Client(_) => {
                let RequestBody::Client(streamed) = std::mem::replace(body, RequestBody::Empty)
                else {
                    unreachable!("matched above");
                };
                let head = Bytes::copy_from_slice(head);
                let mut upload = Some(Upload::new(head, streamed, self.timeouts.write));
                let result =
                    Box::pin(upload_and_await(conn, &mut upload, head_request, limit)).await;
                if let Err(broken) = &result
                    && broken.unsent
                    && let Some(streamed) = upload.and_then(Upload::into_unsent)
                {
                    *body = RequestBody::Client(streamed);
                }
                return result;
            }
        }
        let mut received = false;
        conn.deadline.set(limit);
        poll_fn(
            |cx| match poll_head(conn, head_request, &mut received, cx) {
                Poll::Ready(answer) => Poll::Ready(answer.map(|head| (head, None))),
                Poll::Pending if conn.deadline.poll_passed(cx) => {
                    Poll::Ready(Err(Broken::timeout(limit)))
                }
                Poll::Pending => Poll::Pending,
            },
        )
        .await
    }
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
    head_request: bool,
    limit: Duration,
) -> Result<(ResponseHead, Option<Upload>), Broken> {
    let mut write_failed = None;
    let mut armed = false;
    let mut received = false;
    poll_fn(|cx| {
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
        if let Poll::Ready(answer) = poll_head(conn, head_request, &mut received, cx) {
            return Poll::Ready(match answer {
                Ok(head) => {
                    let unfinished = upload.take();
                    Ok(match (&unfinished, &write_failed) {
                        (None, None) => (head, None),
                        _ => (head.last_on_connection(), unfinished),
                    })
                }
                Err(mut broken) => {
                    broken.unsent = upload.as_ref().is_some_and(Upload::is_unsent);
                    Err(broken)
                }
            });
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

/// A backend's response head and the connection it came on.
pub(super) struct Answer {
    pub(super) response: ResponseHead,
    pub(super) conn: UpstreamConn,
    /// The rest of the request body, when the backend answered before it was all sent.
    pub(super) upload: Option<Upload>,
}

/// A failed exchange and what is known of how far the request got.
struct Broken {
    error: ProxyError,
    /// The head could not be written: the backend cannot have acted on the request.
    unsent: bool,
    /// The connection ended before any byte of an answer.
    no_answer: bool,
}

impl Broken {
    fn unsent(error: std::io::Error) -> Broken {
        Broken {
            error: ProxyError::Upstream(error.into()),
            unsent: true,
            no_answer: true,
        }
    }

    fn timeout(limit: Duration) -> Broken {
        Broken {
            error: ProxyError::ResponseTimeout(limit),
            unsent: false,
            no_answer: false,
        }
    }

    fn upstream(error: UpstreamError, no_answer: bool) -> Broken {
        let error = match error {
            // Not retried: the backend did process the request.
            UpstreamError::Wire(WireError::Framing(problem)) => {
                ProxyError::UpstreamFraming(problem)
            }
            error => ProxyError::Upstream(error),
        };
        Broken {
            error,
            unsent: false,
            no_answer,
        }
    }

    fn client(error: BodyError) -> Broken {
        let error = match error {
            BodyError::Client(_) => ProxyError::BadRequest("the request body broke off"),
            error => error.into(),
        };
        Broken {
            error,
            unsent: false,
            no_answer: false,
        }
    }
}

/// Reads until a complete final response head is in the buffer, interim (1xx) ones skipped.
fn poll_head(
    conn: &mut UpstreamConn,
    head_request: bool,
    received: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, Broken>> {
    loop {
        if !conn.buf.is_empty() {
            *received = true;
            match parse_response_head(&mut conn.buf, head_request) {
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
