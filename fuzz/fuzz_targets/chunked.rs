//! The chunked body decoder (`BodyDecoder::new(Framing::Chunked)`), fed the same bytes in pieces
//! of fuzzer-chosen sizes, in one piece, and byte by byte: the outcome must not depend on how the
//! bytes arrived, no more data may come out than went in, and a body it accepts must decode to
//! what a literal reading of RFC 9112 §7.1 gives.
//!
//! Input layout: the first byte's low 3 bits are a count `k`; the next `k` bytes are piece sizes
//! (each byte + 1), used in turn, over and over; everything after them is the wire.

#![no_main]

use alb::http1::{BodyDecoder, Decoded, Framing};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body ended after this many wire bytes.
    Done { consumed: usize },
    /// The wire ran out first; `end_of_stream` said so.
    Cut,
    /// Refused, with the decoder's message.
    Refused(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    end: End,
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let k = usize::from(control & 7).min(rest.len());
    let (sizes, wire) = rest.split_at(k);
    let sizes: Vec<usize> = if sizes.is_empty() {
        vec![wire.len().max(1)]
    } else {
        sizes.iter().map(|&s| usize::from(s) + 1).collect()
    };

    let split = decode(wire, &sizes);
    let whole = decode(wire, &[wire.len().max(1)]);
    assert_eq!(split, whole, "the outcome depends on where the input was split ({sizes:?})");
    if wire.len() <= 4096 {
        let bytewise = decode(wire, &[1]);
        assert_eq!(bytewise, whole, "the outcome differs when fed one byte at a time");
    }

    match &whole.end {
        End::Done { consumed } => {
            // Framing takes at least the last chunk "0\r\n\r\n" on top of the data.
            assert!(
                whole.data.len() + 5 <= *consumed,
                "{} bytes of data from {consumed} bytes of wire",
                whole.data.len()
            );
            let reference = reference(wire).unwrap_or_else(|why| {
                panic!("accepted a body that RFC 9112 §7.1 does not allow: {why}")
            });
            assert_eq!(
                (&reference.0[..], reference.1),
                (&whole.data[..], *consumed),
                "decoded differently from RFC 9112 §7.1 (data, bytes taken)"
            );
        }
        End::Cut | End::Refused(_) => {
            assert!(whole.data.len() <= wire.len(), "more data out than bytes in");
        }
    }
});

/// Feeds `wire` to a fresh chunked decoder in pieces of `sizes` bytes (cycled), decoding after
/// each piece until it needs more, ends or refuses; then reports the end of the stream.
fn decode(wire: &[u8], sizes: &[usize]) -> Outcome {
    let mut decoder = BodyDecoder::new(Framing::Chunked);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    let mut size = sizes.iter().copied().cycle();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(bytes)) => {
                assert!(!bytes.is_empty(), "an empty Data step");
                data.extend_from_slice(&bytes);
                assert!(data.len() <= fed, "{} bytes of data from {fed} bytes fed", data.len());
            }
            Ok(Decoded::Done) => {
                assert!(decoder.is_done());
                // Bytes after the body stay in the buffer, and stay there.
                let consumed = fed - buf.len();
                assert_eq!(decoder.decode(&mut buf).ok(), Some(Decoded::Done));
                assert_eq!(fed - buf.len(), consumed, "decoding after Done took bytes");
                assert!(decoder.end_of_stream().is_ok(), "end_of_stream after Done");
                return Outcome {
                    data,
                    end: End::Done { consumed },
                };
            }
            Ok(Decoded::NeedMore) => {
                assert!(!decoder.is_done());
                if fed == wire.len() {
                    assert!(
                        decoder.end_of_stream().is_err(),
                        "end_of_stream accepted a body that is not complete"
                    );
                    return Outcome { data, end: End::Cut };
                }
                let n = size.next().unwrap_or(1).min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            Err(e) => {
                return Outcome {
                    data,
                    end: End::Refused(e.to_string()),
                };
            }
        }
    }
}

/// A literal reading of RFC 9112 §7.1, lenient where alb may be strict (any bytes but CR and LF
/// in chunk extensions and trailer lines, any number of size digits): the data and the number of
/// bytes the body takes, or why it is not a chunked body.
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-size   = 1*HEXDIG
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
fn reference(wire: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut at = 0;
    let mut data = Vec::new();
    // Up to CRLF, which must be there, with no CR or LF before it; returns the line.
    let line = |at: &mut usize| -> Result<&[u8], String> {
        let start = *at;
        let end = wire[start..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map(|i| start + i)
            .ok_or("no line end")?;
        if wire.get(end..end + 2) != Some(b"\r\n") {
            return Err(format!("a line at {start} does not end in CRLF"));
        }
        *at = end + 2;
        Ok(&wire[start..end])
    };
    loop {
        let size_line = line(&mut at)?;
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 {
            return Err("a chunk size without digits".into());
        }
        let after = &size_line[digits..];
        // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ): anything
        // after the size starts with optional whitespace and then ";" (here: or is empty).
        let ext = alb_fuzz::trim(after);
        if !ext.is_empty() && ext[0] != b';' {
            return Err(format!("{after:?} after a chunk size is no extension"));
        }
        let mut size: u128 = 0;
        for &d in &size_line[..digits] {
            let digit = (d as char).to_digit(16).unwrap_or(0);
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u128::from(digit)))
                .ok_or("chunk size beyond u128")?;
        }
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| "chunk size beyond usize")?;
        let end = at.checked_add(size).ok_or("chunk size overflow")?;
        let chunk = wire.get(at..end).ok_or("chunk data cut")?;
        data.extend_from_slice(chunk);
        at = end;
        if wire.get(at..at + 2) != Some(b"\r\n") {
            return Err("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
    // trailer-section = *( field-line CRLF ), then CRLF.
    loop {
        if line(&mut at)?.is_empty() {
            return Ok((data, at));
        }
    }
}
