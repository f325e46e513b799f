//! A request (or response) body arriving on an HTTP/2 stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The data and trailers of one stream. Flow-control credit goes back to the peer for each
/// piece as it is handed on, not as it arrives: what the proxy has not taken yet stays counted
/// against the stream's and the connection's windows, and the peer must wait.
#[derive(Debug)]
pub struct RecvBody {
    stream: h2::RecvStream,
    /// The declared Content-Length (h2 checks the data against it).
    length: Option<u64>,
    data_done: bool,
}

impl RecvBody {
    pub fn new(stream: h2::RecvStream, length: Option<u64>) -> RecvBody {
        RecvBody {
            stream,
            length,
            data_done: false,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is gone, when no credit is owed.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None if self.stream.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
