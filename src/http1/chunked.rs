//! The chunked coding (RFC 9112 §7.1), both ways. Decoding is byte-exact and strict: a framing
//! that a different parser could read differently (bare LF, a size with a sign or spaces inside,
//! an oversized size) is refused, since a mismatch between two parsers is how requests get
//! smuggled. Encoding writes the one plain form: the size in lowercase hex, no extensions, no
//! trailers; the same for responses to clients and requests to backends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WireError;

/// What ends a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk, with no trailers: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the line that opens a chunk of `len` bytes: its size in hex, CRLF.
pub fn put_chunk_head(out: &mut impl BufMut, len: usize) {
    let mut line = [0u8; 18];
    let n = chunk_head(len, &mut line);
    out.put_slice(&line[..n]);
}

/// The chunk-size line for `len` written into `line`; how many bytes it took.
fn chunk_head(len: usize, line: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in line[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xf];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

/// Most bytes of chunk extensions (ignored) accepted per body.
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Most bytes of trailer fields (dropped) accepted per body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the size, before an extension or the line end.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read, then what is left of it.
    size: u64,
    digits: u8,
    extension_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of chunk data out of `buf`, consuming framing on the way.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Data => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = buf
                        .len()
                        .min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                _ => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Step::NeedMore);
                    };
                    buf.advance(1);
                    self.state = self.next(byte)?;
                }
            }
        }
    }

    /// The state after one framing byte.
    fn next(&mut self, byte: u8) -> Result<State, WireError> {
        use State::*;
        let bad = |why| Err(WireError::Chunked(why));
        Ok(match (self.state, byte) {
            (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                if self.digits == 16 {
                    return bad("chunk size too large");
                }
                self.digits += 1;
                let digit = (byte as char).to_digit(16).unwrap_or(0);
                self.size = self.size << 4 | u64::from(digit);
                Size
            }
            (Size, _) if self.digits == 0 => return bad("missing chunk size"),
            (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
            (Size | SizeSpace, b';') => Extension,
            (Size | SizeSpace | Extension, b'\r') => SizeLf,
            (Extension, b'\n') => return bad("bare LF in a chunk extension"),
            (Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return bad("chunk extensions too long");
                }
                Extension
            }
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.digits = 0;
                Size
            }
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | Trailer, b'\n') => return bad("bare LF in the trailer section"),
            (Trailer, b'\r') => TrailerLf,
            (TrailerStart | Trailer, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return bad("trailer section too long");
                }
                Trailer
            }
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (Size | SizeSpace, _) => return bad("invalid chunk size"),
            _ => return bad("invalid chunk framing"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_head_is_the_size_in_lowercase_hex_and_crlf() {
        for (len, line) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0x1234abcd, "1234abcd\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut out = BytesMut::new();
            put_chunk_head(&mut out, len);
            assert_eq!(&out[..], line.as_bytes(), "{len}");
        }
    }

    #[test]
    fn what_the_encoder_writes_the_decoder_reads_back() {
        let mut wire = BytesMut::new();
        for piece in [&b"hello"[..], &[b'x'; 300][..]] {
            put_chunk_head(&mut wire, piece.len());
            wire.put_slice(piece);
            wire.put_slice(CHUNK_END);
        }
        wire.put_slice(LAST_CHUNK);
        let mut decoder = ChunkedDecoder::default();
        let mut body = Vec::new();
        while !decoder.is_done() {
            match decoder.decode(&mut wire).unwrap() {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::NeedMore => panic!("the whole body was there"),
                Step::Done => {}
            }
        }
        assert_eq!(body.len(), 305);
        assert!(wire.is_empty());
    }

    /// Decodes `wire` fed in pieces of `step` bytes: the body, or the error.
    fn decode(wire: &[u8], step: usize) -> Result<Vec<u8>, WireError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut pieces = wire.chunks(step);
        loop {
            match decoder.decode(&mut buf)? {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::Done => return Ok(body),
                Step::NeedMore => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Err(WireError::BodyCut),
                },
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let wire = b"5\r\nhello\r\nA;name=value\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(
                decode(wire, step).unwrap(),
                b"hello0123456789",
                "step {step}"
            );
        }
        assert_eq!(decode(b"0 \t;x\r\n\r\n", 3).unwrap(), b"");
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nx-t: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                matches!(decode(wire, 64), Err(WireError::Chunked(_))),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn a_cut_body_is_not_an_end() {
        assert!(matches!(decode(b"5\r\nhel", 64), Err(WireError::BodyCut)));
    }
}
