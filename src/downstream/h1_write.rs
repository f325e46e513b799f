//! The writing side of an HTTP/1.1 client connection: a response head and its body framed as
//! the head promised (length, chunked, or to the close), written in as few system calls as the
//! socket allows under the write deadline; and alb's last answer before a connection closes.

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::deadline::Deadline;
use crate::http1::{
    BodyWrite, CHUNK_END, ClientWriteHalf, LAST_CHUNK, ReadSide, encode_response_head,
    put_chunk_head, write_all_within,
};
use crate::proxy::{Reply, ResponseBody};

/// What a response's buffer starts with: a typical head and a small body.
const RESPONSE_BUFFER: usize = 1024;
/// Bodies up to this size are copied next to their head (one write); larger ones go as they are.
const COALESCE_BYTES: usize = 16 * 1024;
/// After answering with `connection: close`, how long unread client bytes are drained, so that
/// closing does not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// The writing side of a client connection, with its write deadline.
pub(super) struct ClientWrite<'a> {
    pub half: &'a mut ClientWriteHalf,
    /// The connection's one timer: head reads and writes never wait at the same time.
    pub deadline: &'a mut Deadline,
    pub limit: Duration,
}

impl ClientWrite<'_> {
    async fn write_all(&mut self, parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
        Ok(write_all_within(self.half, parts, self.deadline, self.limit).await?)
    }
}

/// Writes alb's own answer to a request it could not read, then closes.
pub(super) async fn answer_and_close(
    mut write: ClientWriteHalf,
    side: Option<ReadSide>,
    answer: Vec<u8>,
    limit: Duration,
) {
    let mut parts = [IoSlice::new(&answer)];
    let mut timer = Deadline::default();
    let _ = write_all_within(&mut write, &mut parts, &mut timer, limit).await;
    linger(write, side).await;
}

/// Writes the head and streams the body. Returns whether the connection can carry another
/// request.
pub(super) async fn write_response(
    write: &mut ClientWrite<'_>,
    out: &mut BytesMut,
    response: Reply,
    head_request: bool,
    version: Version,
    keep_alive: bool,
) -> bool {
    let Reply {
        status,
        relayed,
        headers,
        body,
    } = response;
    // One allocation for the head and a small body (the buffer is let go between requests).
    out.reserve(RESPONSE_BUFFER);
    let plan = encode_response_head(
        out,
        status,
        &headers,
        relayed.as_deref(),
        body.size_hint(),
        head_request,
        version,
        keep_alive,
    );
    drop((relayed, headers));
    if plan.body == BodyWrite::None {
        drop(body);
        return flush(write, out, None).await.is_ok() && plan.keep_alive;
    }
    let chunked = plan.body == BodyWrite::Chunked;
    let mut body = pin!(body);
    let mut sent: u64 = 0;
    loop {
        // Take what is ready now; write out what is buffered before waiting for more.
        let ready = poll_fn(|cx| Poll::Ready(poll_now(body.as_mut(), cx))).await;
        let frame = match ready {
            Some(frame) => frame,
            None => {
                if flush(write, out, None).await.is_err() {
                    return false;
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(_)) => {
                // The backend broke off: pass on what came, then cut the connection, so the
                // client sees a truncated body and never a complete-looking one.
                let _ = flush(write, out, None).await;
                return false;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if chunked {
            put_chunk_head(out, data.len());
        }
        if data.len() <= COALESCE_BYTES {
            out.put_slice(&data);
        } else if flush(write, out, Some(data)).await.is_err() {
            return false;
        }
        if chunked {
            out.put_slice(CHUNK_END);
        }
    }
    if chunked {
        out.put_slice(LAST_CHUNK);
    }
    let complete = match plan.body {
        BodyWrite::Length(n) => sent == n,
        _ => true,
    };
    flush(write, out, None).await.is_ok() && complete && plan.keep_alive
}

/// The next frame if it is ready without waiting.
fn poll_now(
    body: Pin<&mut ResponseBody>,
    cx: &mut Context<'_>,
) -> Option<Option<Result<http_body::Frame<Bytes>, crate::proxy::ResponseBodyError>>> {
    match body.poll_frame(cx) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// Writes `out` (then `data`) in as few system calls as the socket allows, and empties `out`.
pub(super) async fn flush(
    write: &mut ClientWrite<'_>,
    out: &mut BytesMut,
    data: Option<Bytes>,
) -> std::io::Result<()> {
    let data = data.unwrap_or_default();
    write
        .write_all(&mut [IoSlice::new(out), IoSlice::new(&data)])
        .await?;
    out.clear();
    Ok(())
}

/// alb's own answer ([`Reply::local`]) to a request head it could not take, as the bytes to
/// write before the connection closes.
pub(super) fn last_answer(status: StatusCode, message: &str) -> Vec<u8> {
    let mut reply = Reply::local(status, message);
    let mut out = BytesMut::with_capacity(256);
    let size = reply.body.size_hint();
    encode_response_head(
        &mut out,
        reply.status,
        &reply.headers,
        None,
        size,
        false,
        Version::HTTP_11,
        false,
    );
    if let Some(text) = reply.take_local_text() {
        out.put_slice(&text);
    }
    out.to_vec()
}

/// Closes after a last answer: the write side first, then what the client still sends is read
/// and dropped for a moment, so the answer is not lost to a reset.
pub(super) async fn linger(mut write: ClientWriteHalf, side: Option<ReadSide>) {
    let _ = write.shutdown().await;
    let Some(mut side) = side else {
        return;
    };
    let drain = async {
        // On the heap: in the future's state it would weigh on every connection, idle or not.
        let mut scratch = vec![0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match side.half.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
