//! Sending one attempt to one backend: a pooled connection (or a new one), the request, and the
//! wait for the response head under `timeouts.response`.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use super::headers::{HopScan, has_foreign_transfer_coding, hop_scan};
use super::request_body::{BodyError, RequestBody};
use super::{Failure, ProxyError, Routing};
use crate::upstream::{Backend, UpstreamSender, connect};

/// Pooled connections tried per attempt before opening a new one: each may have been closed by the
/// backend while idle, which hyper reports by handing the unsent request back.
const STALE_CONNECTION_TRIES: usize = 3;

impl Routing {
    /// Sends `request` to `backend` and waits for the response head within `timeouts.response`.
    pub(super) async fn forward(
        &self,
        backend: &Backend,
        mut request: Request<RequestBody>,
    ) -> Result<Answer, Failure> {
        let mut stale_tries = 0;
        loop {
            let pooled = if stale_tries < STALE_CONNECTION_TRIES {
                backend.pool().checkout()
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => match connect(backend.addr(), self.timeouts.connect).await {
                    Ok(sender) => sender,
                    Err(e) => {
                        backend.request_recheck();
                        return Err(Failure {
                            error: e.into(),
                            request: Some(request),
                        });
                    }
                },
            };
            let uploaded = request.body_mut().watch_sent();
            let sent = within_response_timeout(
                sender.try_send_request(request),
                uploaded,
                self.timeouts.response,
            )
            .await;
            match sent {
                Ok(Ok(response)) => {
                    let hop = hop_scan(response.headers());
                    return match framing_problem(&response, hop) {
                        None => Ok(Answer {
                            response,
                            sender,
                            hop,
                        }),
                        // Not retried: the backend did process the request.
                        Some(problem) => Err(Failure {
                            error: ProxyError::UpstreamFraming(problem),
                            request: None,
                        }),
                    };
                }
                Err(_elapsed) => {
                    return Err(Failure {
                        error: ProxyError::ResponseTimeout(self.timeouts.response),
                        request: None,
                    });
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if reused => {
                        stale_tries += 1;
                        request = unsent;
                    }
                    unsent => {
                        return Err(Failure {
                            error: classify(e.into_error()),
                            request: unsent,
                        });
                    }
                },
            }
        }
    }
}

/// A backend's response head, the connection it came on, and what one scan of its field names
/// found (used again when the response is passed on).
pub(super) struct Answer {
    pub(super) response: Response<Incoming>,
    pub(super) sender: UpstreamSender,
    pub(super) hop: HopScan,
}

/// What makes a backend's response impossible to forward faithfully.
fn framing_problem(response: &Response<Incoming>, hop: HopScan) -> Option<&'static str> {
    (hop.transfer_encoding && has_foreign_transfer_coding(response.headers()))
        .then_some("a transfer coding other than chunked")
}

/// The client's own body failing (too large, stalled, cut) shows up as hyper's send error; it is
/// the client's doing, not the backend's, and is answered as such.
fn classify(error: hyper::Error) -> ProxyError {
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(body) = cause.downcast_ref::<BodyError>() {
            return match body {
                BodyError::TooLarge(max) => BodyError::TooLarge(*max).into(),
                BodyError::Idle(limit) => BodyError::Idle(*limit).into(),
                BodyError::Client(_) => ProxyError::BadRequest("the request body broke off"),
            };
        }
        source = cause.source();
    }
    ProxyError::Upstream(error)
}

/// Awaits the response head, allowing `limit` once the request body has been sent: the clock of
/// `timeouts.response` measures the backend's thinking time, not the client's upload speed. An
/// early answer (before the upload ends) is taken as it comes.
async fn within_response_timeout<T>(
    response: impl Future<Output = T>,
    uploaded: Option<tokio::sync::oneshot::Receiver<()>>,
    limit: Duration,
) -> Result<T, tokio::time::error::Elapsed> {
    let mut response = std::pin::pin!(response);
    if let Some(uploaded) = uploaded {
        tokio::select! {
            answer = &mut response => return Ok(answer),
            _ = uploaded => {}
        }
    }
    tokio::time::timeout(limit, response).await
}
