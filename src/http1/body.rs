//! Taking a response body out of the bytes read from a backend, by its framing.

use bytes::{Bytes, BytesMut};
use http_body::SizeHint;

use super::WireError;
use super::chunked::{ChunkedDecoder, Step};
use super::response_head::Framing;

/// What the next look at the read buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// Read more from the connection.
    NeedMore,
    /// The body is complete.
    Done,
}

#[derive(Debug)]
pub struct BodyDecoder {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let kind = match framing {
            Framing::Empty | Framing::Length(0) => Kind::Done,
            Framing::Length(n) => Kind::Length(n),
            Framing::Chunked => Kind::Chunked(ChunkedDecoder::default()),
            Framing::Close => Kind::Close,
        };
        BodyDecoder { kind }
    }

    /// Takes the next piece of body out of `buf`. Bytes after the end of the body stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        match &mut self.kind {
            Kind::Done => Ok(Decoded::Done),
            Kind::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    self.kind = Kind::Done;
                }
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Kind::Chunked(chunked) => {
                let step = chunked.decode(buf)?;
                if chunked.is_done() {
                    self.kind = Kind::Done;
                }
                Ok(match step {
                    Step::Data(data) => Decoded::Data(data),
                    Step::NeedMore => Decoded::NeedMore,
                    Step::Done => Decoded::Done,
                })
            }
            Kind::Close if buf.is_empty() => Ok(Decoded::NeedMore),
            Kind::Close => Ok(Decoded::Data(buf.split().freeze())),
        }
    }

    /// The connection ended: the natural end of a close-delimited body, a cut one otherwise.
    pub fn end_of_stream(&mut self) -> Result<(), WireError> {
        match self.kind {
            Kind::Close | Kind::Done => {
                self.kind = Kind::Done;
                Ok(())
            }
            Kind::Length(_) | Kind::Chunked(_) => Err(WireError::BodyCut),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Done => SizeHint::with_exact(0),
            Kind::Length(n) => SizeHint::with_exact(n),
            Kind::Chunked(_) | Kind::Close => SizeHint::default(),
        }
    }

    /// How much is worth reading next.
    pub fn want(&self) -> usize {
        match self.kind {
            Kind::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Kind::Chunked(_) | Kind::Close => usize::MAX,
            Kind::Done => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_body_stops_at_its_length() {
        let mut decoder = BodyDecoder::new(Framing::Length(5));
        let mut buf = BytesMut::from(&b"helloHTTP"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from("hello"))
        );
        assert!(decoder.is_done());
        assert_eq!(&buf[..], b"HTTP");
        let mut cut = BodyDecoder::new(Framing::Length(5));
        assert!(cut.end_of_stream().is_err());
        let mut close = BodyDecoder::new(Framing::Close);
        assert!(close.end_of_stream().is_ok() && close.is_done());
    }
}
