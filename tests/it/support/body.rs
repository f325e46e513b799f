//! Bodies: whole ones, and generated patterns checked without being stored.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};

pub type TestBody = BoxBody<Bytes, std::io::Error>;

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

/// The byte at offset `i` of every generated body: lets a receiver check content without storing it.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// A body of `n` pattern bytes, produced in 64 KiB chunks as the reader pulls them (each chunk a
/// zero-copy slice of one precomputed buffer).
pub fn pattern_body(n: u64) -> TestBody {
    const CHUNK: u64 = 64 * 1024;
    let source = Bytes::from((0..CHUNK + 251).map(pattern_byte).collect::<Vec<u8>>());
    let chunks = (0..n.div_ceil(CHUNK)).map(move |c| {
        let start = c * CHUNK;
        let len = (start + CHUNK).min(n) - start;
        let offset = (start % 251) as usize;
        Ok::<_, std::io::Error>(Frame::data(source.slice(offset..offset + len as usize)))
    });
    StreamBody::new(futures_stream(chunks)).boxed()
}

/// An iterator as a `Stream`, without pulling in a stream crate.
fn futures_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// Reads a body to its end, checking it against the pattern; returns its length.
pub async fn read_pattern(mut body: Incoming) -> u64 {
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            for (k, byte) in data.iter().enumerate() {
                assert_eq!(
                    *byte,
                    pattern_byte(offset + k as u64),
                    "byte {} differs",
                    offset + k as u64
                );
            }
            offset += data.len() as u64;
        }
    }
    offset
}
