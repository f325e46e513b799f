//! Parsing a client's request head, strictly: anything two HTTP parsers could read differently
//! (conflicting lengths, a transfer coding list that does not end in chunked, Transfer-Encoding in
//! HTTP/1.0, obs-fold, stray whitespace) is refused, since request smuggling lives in those gaps.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version, request};
use smallvec::SmallVec;

use super::parse_length;
use super::response_head::Framing;

/// Most fields in a request head (as hyper and nginx: a client needing more is broken).
const MAX_FIELDS: usize = 100;

/// A request head and what the connection must do with it.
#[derive(Debug)]
pub struct ClientRequest {
    pub parts: request::Parts,
    /// How the body is delimited: `Empty`, `Length` or `Chunked` (requests are never
    /// close-delimited).
    pub framing: Framing,
    /// The client asked for the connection to end after this exchange, or the exchange makes it
    /// unsafe to read another request from it (both Content-Length and Transfer-Encoding).
    pub close: bool,
    /// `Expect: 100-continue`: the client waits for an interim answer before sending the body.
    pub expects_continue: bool,
}

/// Why a request head was refused, and the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn bad(reason: &'static str) -> Rejected {
    Rejected {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

/// Parses the request head at the front of `buf` and removes it. `Ok(None)`: not complete yet
/// (and within `max_head` bytes so far).
pub fn parse_client_request(
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<Option<ClientRequest>, Rejected> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let status = parsed.parse_with_uninit_headers(buf, &mut fields);
    let len = match status {
        Ok(httparse::Status::Complete(len)) if len > max_head => return Err(too_large()),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(_) => return Err(bad("malformed request head")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let target = parsed.path.unwrap_or("");
    let base = buf.as_ptr() as usize;
    let target_span = span(base, target.as_bytes());
    let spans: FieldSpans = parsed
        .headers
        .iter()
        .map(|f| (span(base, f.name.as_bytes()), span(base, f.value)))
        .collect();
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_span.0 as usize..target_span.1 as usize))
        .map_err(|_| bad("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut fields = FramingFields::default();
    for &((ns, ne), (vs, ve)) in &spans {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| bad("invalid field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| bad("invalid field value"))?;
        fields.note(&name, &value)?;
        headers.append(name, value);
    }
    let framing = fields.framing(version)?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(ClientRequest {
        close: fields.close
            || (version == Version::HTTP_10 && !fields.keep_alive)
            || (fields.transfer_encoding && fields.length.is_some()),
        expects_continue: fields.expects_continue && framing != Framing::Empty,
        parts,
        framing,
    }))
}

fn too_large() -> Rejected {
    Rejected {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason: "request head too large",
    }
}

/// Where a field's name and value sit in the head (heads are far below 4 GiB): on the stack for
/// up to 16 fields.
type FieldSpans = SmallVec<[((u32, u32), (u32, u32)); 16]>;

/// Where `part` sits in the buffer starting at `base`.
fn span(base: usize, part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base;
    (start as u32, (start + part.len()) as u32)
}

#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    transfer_encoding: bool,
    /// The last coding seen so far is chunked.
    chunked_last: bool,
    /// A coding besides chunked (gzip, say) was named.
    foreign_coding: bool,
    close: bool,
    keep_alive: bool,
    expects_continue: bool,
    host_seen: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Rejected> {
        let bytes = value.as_bytes();
        if name == header::CONTENT_LENGTH {
            // One value, digits only: a list, even of equal values, is refused.
            let n = parse_length(bytes).ok_or(bad("invalid Content-Length"))?;
            if self.length.is_some_and(|seen| seen != n) {
                return Err(bad("conflicting Content-Length fields"));
            }
            self.length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            for coding in bytes.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                if self.chunked_last {
                    return Err(bad("chunked is not the last transfer coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    self.chunked_last = true;
                } else if is_token(coding) && !coding.eq_ignore_ascii_case(b"identity") {
                    self.foreign_coding = true;
                } else {
                    return Err(bad("invalid transfer coding"));
                }
            }
        } else if name == header::CONNECTION {
            for token in bytes.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::HOST {
            // Two Host fields: which one names the target depends on who reads them.
            if self.host_seen {
                return Err(bad("more than one Host field"));
            }
            self.host_seen = true;
        } else if name == header::EXPECT {
            self.expects_continue |= bytes.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    fn framing(&self, version: Version) -> Result<Framing, Rejected> {
        if self.transfer_encoding {
            if version == Version::HTTP_10 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if !self.chunked_last {
                return Err(bad("the last transfer coding is not chunked"));
            }
            if self.foreign_coding {
                return Err(Rejected {
                    status: StatusCode::NOT_IMPLEMENTED,
                    reason: "transfer codings other than chunked",
                });
            }
            // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length; the connection closes
            // after this exchange (see `close`).
            return Ok(Framing::Chunked);
        }
        Ok(match self.length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

fn is_token(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<ClientRequest>, Rejected> {
        parse_client_request(&mut BytesMut::from(text), 8192)
    }

    #[test]
    fn frames_and_flags() {
        let r = parse("POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!((r.framing, r.close), (Framing::Length(3), false));
        assert_eq!(r.parts.uri, "/a?b");
        let r = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(r.close);
        let r = parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.framing, r.close), (Framing::Chunked, true));
        let r = parse("PUT / HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.expects_continue);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        for (text, status) in [
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ] {
            assert_eq!(parse(text).unwrap_err().status.as_u16(), status, "{text}");
        }
        let many: String = (0..101).map(|i| format!("X-{i}: a\r\n")).collect();
        let err = parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
