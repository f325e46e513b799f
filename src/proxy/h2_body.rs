//! A backend's response body arriving on an HTTP/2 stream: data and trailers as they come,
//! within `timeouts.upstream_idle` between pieces, settled like any response body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::access_log::Outcome;
use super::settlement::{ResponseBodyError, Settlement};
use crate::deadline::Deadline;
use crate::http2::RecvBody;

#[derive(Debug)]
pub struct H2UpstreamBody {
    body: RecvBody,
    settlement: Settlement,
    bytes: u64,
    idle_limit: Duration,
    /// `upstream_idle`, counted from when alb began waiting for the next piece.
    idle: Deadline,
    ended: bool,
}

impl H2UpstreamBody {
    pub(super) fn new(body: RecvBody, settlement: Settlement, idle_limit: Duration) -> Self {
        let mut this = H2UpstreamBody {
            body,
            settlement,
            bytes: 0,
            idle_limit,
            idle: Deadline::default(),
            ended: false,
        };
        if this.body.is_end_stream() {
            this.finish(Outcome::Complete);
        }
        this
    }

    pub fn is_end_stream(&self) -> bool {
        self.ended
    }

    pub fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }

    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => {
                let limit = self.idle_limit;
                if self.idle.waited_too_long(limit, cx) {
                    tracing::warn!(timeout = ?limit, "backend went silent mid-body: response cut");
                    self.finish(Outcome::UpstreamIdle);
                    return Poll::Ready(Some(Err(ResponseBodyError::Idle(limit))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                self.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.idle.progress();
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.body.is_end_stream() && frame.is_data() {
                    // Trailers may still follow a data frame; RecvBody says when none can.
                } else if frame.is_trailers() {
                    self.finish(Outcome::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "backend broke off a response body");
                self.finish(Outcome::UpstreamBroken);
                Poll::Ready(Some(Err(ResponseBodyError::Stream(e))))
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.ended = true;
        drop(self.settlement.settle(outcome, self.bytes));
    }
}

impl Drop for H2UpstreamBody {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(Outcome::ClientAborted);
        }
    }
}
