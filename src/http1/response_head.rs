//! Parsing a backend's response head, and deciding from it how the body is framed and whether the
//! connection can carry another request.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, Version};
use smallvec::SmallVec;

use super::upgrade::switch_was_offered;
use super::{WireError, parse_length};

/// Largest response head accepted (status line and fields). Heads are small; a backend that sends
/// more is broken or hostile.
pub const MAX_HEAD_BYTES: usize = 60 * 1024;
/// Most fields in a response head.
const MAX_FIELDS: usize = 128;

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a HEAD request, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Up to the end of the connection.
    Close,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub framing: Framing,
    /// Whether the connection may carry another request once this body has been read.
    pub reusable: bool,
    /// The fields to pass on to the client.
    pub fields: RawFields,
    /// A `101`'s `Upgrade` value: the protocol the connection now speaks, to be tunnelled.
    pub switched: Option<Bytes>,
}

impl ResponseHead {
    /// Marks the connection as done after this response (a request half sent, say).
    pub fn last_on_connection(mut self) -> ResponseHead {
        self.reusable = false;
        self
    }
}

/// A response's end-to-end fields as the backend sent them, kept as spans of its head: passing
/// them on is a copy, with no header map built and dropped per response. Hop-by-hop fields (and
/// those the Connection field names) are left out at parse time, and so is Content-Length, which
/// the client side writes from [`RawFields::content_length`].
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    spans: SmallVec<[FieldSpan; 12]>,
    content_length: Option<u64>,
    has_date: bool,
}

/// Offsets into the head: 16 bits are enough, since a head is at most [`MAX_HEAD_BYTES`] long.
#[derive(Debug, Clone, Copy)]
struct FieldSpan {
    name: (u16, u16),
    value: (u16, u16),
}

impl RawFields {
    /// Every field passed on, in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|f| {
            (
                &self.head[f.name.0 as usize..f.name.1 as usize],
                &self.head[f.value.0 as usize..f.value.1 as usize],
            )
        })
    }

    /// The values of `name` (compared without regard to case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Leaves out every field named `name` (compared without regard to case): a response rule
    /// removed or replaced it.
    pub fn remove(&mut self, name: &str) {
        let head = &self.head;
        self.spans.retain(|f| {
            !head[f.name.0 as usize..f.name.1 as usize].eq_ignore_ascii_case(name.as_bytes())
        });
        if name.eq_ignore_ascii_case("date") {
            self.has_date = false;
        }
    }

    /// Writes every field passed on as `name: value` lines. Fields that follow each other in the
    /// head go as one copy of their lines.
    pub fn write_to(&self, out: &mut BytesMut) {
        let mut run: Option<(usize, usize)> = None;
        for f in &self.spans {
            let (start, end) = (usize::from(f.name.0), usize::from(f.value.1));
            run = match run {
                Some((s, e)) if self.head.get(e..start) == Some(b"\r\n".as_slice()) => {
                    Some((s, end))
                }
                Some((s, e)) => {
                    out.extend_from_slice(&self.head[s..e]);
                    out.extend_from_slice(b"\r\n");
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((s, e)) = run {
            out.extend_from_slice(&self.head[s..e]);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The length the backend declared (valid and without Transfer-Encoding), for the client.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    pub fn has_date(&self) -> bool {
        self.has_date
    }
}

/// What a field name means to the hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    /// Another field that only concerns one connection (RFC 9110 §7.6.1).
    HopByHop,
    Date,
    Other,
}

/// Classifies `name`, looking at its length first: most names are compared with nothing.
fn classify(name: &[u8]) -> FieldKind {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        14 if is(b"content-length") => FieldKind::ContentLength,
        17 if is(b"transfer-encoding") => FieldKind::TransferEncoding,
        10 if is(b"connection") => FieldKind::Connection,
        4 if is(b"date") => FieldKind::Date,
        2 if is(b"te") => FieldKind::HopByHop,
        7 if is(b"upgrade") => FieldKind::Upgrade,
        10 if is(b"keep-alive") => FieldKind::HopByHop,
        16 if is(b"proxy-connection") => FieldKind::HopByHop,
        18 if is(b"proxy-authenticate") => FieldKind::HopByHop,
        19 if is(b"proxy-authorization") => FieldKind::HopByHop,
        _ => FieldKind::Other,
    }
}

/// What the fields that frame the message said.
#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    length_invalid: bool,
    transfer_encoding: bool,
    /// Codings named across every Transfer-Encoding line: chunked, and anything else.
    chunked: u32,
    other_codings: bool,
    close: bool,
    keep_alive: bool,
}

/// Parses the head at the front of `buf` and removes it. `Ok(None)`: the head is not complete yet.
/// Interim (1xx) responses are skipped: the client gets the final one, or a `101` when the
/// request `offered` an upgrade and the backend switched to one of those protocols (what
/// follows its head on the connection is then the new protocol's, left in `buf`).
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
    offered: Option<&HeaderValue>,
) -> Result<Option<ResponseHead>, WireError> {
    loop {
        let Some(head) = parse_one(buf, head_request)? else {
            return Ok(None);
        };
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            return match offered {
                None => Err(WireError::Framing("a protocol switch alb did not ask for")),
                Some(offered) if switch_was_offered(head.switched.as_deref(), offered) => {
                    Ok(Some(head.last_on_connection()))
                }
                Some(_) => Err(WireError::Framing(
                    "a switch to a protocol the request did not offer",
                )),
            };
        }
        if head.status.is_informational() {
            continue;
        }
        return Ok(Some(head));
    }
}

fn parse_one(buf: &mut BytesMut, head_request: bool) -> Result<Option<ResponseHead>, WireError> {
    // Uninitialised: zeroing a few KiB of field slots per response cost more than the parsing.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    )? {
        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => {
            return Err(WireError::HeadTooLarge(MAX_HEAD_BYTES));
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) if len > MAX_HEAD_BYTES => {
            return Err(WireError::HeadTooLarge(MAX_HEAD_BYTES));
        }
        httparse::Status::Complete(len) => len,
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| WireError::Field)?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    // Within the head, whose length was checked above: the offsets fit in 16 bits.
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        (start as u16, (start + part.len()) as u16)
    };
    let mut framing = FramingFields::default();
    let mut spans: SmallVec<[FieldSpan; 12]> = SmallVec::new();
    let mut listed: SmallVec<[&[u8]; 4]> = SmallVec::new();
    let mut has_date = false;
    let mut switched: Option<Vec<u8>> = None;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let kind = classify(name);
        framing.note(kind, field.value);
        match kind {
            FieldKind::Upgrade if status == StatusCode::SWITCHING_PROTOCOLS => {
                // Lines of one field are one list (RFC 9110 §5.3).
                let list = switched.get_or_insert_with(Vec::new);
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(field.value);
            }
            FieldKind::Connection => listed.extend(
                field
                    .value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty()),
            ),
            FieldKind::Date => has_date = true,
            _ => {}
        }
        // Content-Length is written by the client side from the framing.
        if matches!(kind, FieldKind::Date | FieldKind::Other) {
            spans.push(FieldSpan {
                name: span(name),
                value: span(field.value),
            });
        }
    }
    if !listed.is_empty() {
        // Fields the Connection field names are for this hop only, too.
        spans.retain(|f| {
            let name = &buf[f.name.0 as usize..f.name.1 as usize];
            !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
        });
    }
    drop(listed);
    let body = framing.body(status, head_request)?;
    // After a HEAD, a backend that wrongly sends a body anyway (a known bug class) would have it
    // read as the next client's response: such a connection carries nothing more.
    let reusable = body != Framing::Close
        && !head_request
        && !(framing.transfer_encoding && framing.length.is_some())
        && if version == Version::HTTP_10 {
            // Transfer-Encoding in an HTTP/1.0 message: the connection closes after it
            // (RFC 9112 §6.1), whatever keep-alive says.
            framing.keep_alive && !framing.close && !framing.transfer_encoding
        } else {
            !framing.close
        };
    let content_length = if framing.transfer_encoding {
        None
    } else {
        framing.length
    };
    let head = buf.split_to(len).freeze();
    Ok(Some(ResponseHead {
        status,
        framing: body,
        reusable,
        fields: RawFields {
            head,
            spans,
            content_length,
            has_date,
        },
        switched: switched.map(Bytes::from),
    }))
}

impl FramingFields {
    fn note(&mut self, kind: FieldKind, value: &[u8]) {
        match kind {
            FieldKind::ContentLength => {
                // A list of equal values ("5, 5") is one length (RFC 9110 §8.6).
                for item in value.split(|&b| b == b',') {
                    match parse_length(item.trim_ascii()) {
                        Some(n) if self.length.is_none_or(|seen| seen == n) => {
                            self.length = Some(n);
                        }
                        _ => self.length_invalid = true,
                    }
                }
            }
            FieldKind::TransferEncoding => {
                self.transfer_encoding = true;
                // The codings of every line add up (RFC 9110 §5.3: lines are one list), so
                // `gzip` on one line and `chunked` on the next is gzip, then chunked.
                for coding in value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty())
                {
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        self.chunked += 1;
                    } else {
                        self.other_codings = true;
                    }
                }
            }
            FieldKind::Connection => {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
        }
    }

    fn body(&self, status: StatusCode, head_request: bool) -> Result<Framing, WireError> {
        if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational()
        {
            return Ok(Framing::Empty);
        }
        if self.transfer_encoding {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. alb decodes chunked,
            // applied once, and nothing else.
            return if self.chunked == 1 && !self.other_codings {
                Ok(Framing::Chunked)
            } else {
                Err(WireError::Framing("a transfer coding other than chunked"))
            };
        }
        if self.length_invalid {
            return Err(WireError::Framing(
                "an invalid or conflicting Content-Length",
            ));
        }
        Ok(match self.length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<Option<ResponseHead>, WireError> {
        let mut buf = BytesMut::from(text);
        parse_response_head(&mut buf, head_request, None)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                Framing::Length(2),
                true,
            ),
        ];
        for (text, framing, reusable) in cases {
            let head = parse(text, false).unwrap().unwrap();
            assert_eq!((head.framing, head.reusable), (framing, reusable), "{text}");
        }
        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(head.unwrap().unwrap().framing, Framing::Empty);
    }

    /// A backend that sends a body after a HEAD answer anyway would have it read as the next
    /// request's answer: the connection carries nothing more after a HEAD.
    #[test]
    fn a_head_answer_is_the_last_on_its_connection() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n";
        let head = parse(text, true).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Empty);
        assert!(!head.reusable);
        assert!(parse(text, false).unwrap().unwrap().reusable);
    }

    #[test]
    fn http10_with_transfer_encoding_is_the_last_on_its_connection() {
        let text =
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n";
        let head = parse(text, false).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.reusable);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            // An empty list is no coding at all, not chunked.
            "HTTP/1.1 200 OK\r\ntransfer-encoding: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: ,\r\n\r\n",
            // Two lines are one list: the gzip coding must not be lost.
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad field: x\r\n\r\n",
        ] {
            assert!(parse(text, false).is_err(), "{text}");
        }
    }

    #[test]
    fn a_switch_to_an_offered_protocol_is_the_answer_and_the_rest_is_the_tunnels() {
        let offered = HeaderValue::from_static("websocket");
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: k\r\n\r\n\x81\x02hi"[..],
        );
        let head = parse_response_head(&mut buf, false, Some(&offered))
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(head.switched.as_deref(), Some(&b"WebSocket"[..]));
        assert!(!head.reusable);
        let passed: Vec<_> = head.fields.iter().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(passed, vec![b"Sec-WebSocket-Accept".to_vec()]);
        assert_eq!(
            &buf[..],
            b"\x81\x02hi",
            "the first frame stays for the tunnel"
        );
        for refused in [
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(refused);
            assert!(
                parse_response_head(&mut buf, false, Some(&offered)).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn only_end_to_end_fields_pass() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nx-a: 1\r\nConnection: x-secret, keep-alive\r\nx-b:2\r\n\
             X-Secret: s\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\nx-c: 3  \r\n\
             Date: today\r\nx-d: 4\r\n\r\n",
        );
        let head = parse_response_head(&mut buf, false, None).unwrap().unwrap();
        let mut out = BytesMut::new();
        head.fields.write_to(&mut out);
        assert_eq!(
            &out[..],
            b"x-a: 1\r\nx-b:2\r\nx-c: 3\r\nDate: today\r\nx-d: 4\r\n"
        );
        assert_eq!(head.fields.content_length(), Some(0));
        assert!(head.fields.has_date());
    }

    #[test]
    fn partial_heads_wait_and_values_share_the_buffer() {
        assert!(
            parse("HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\n\r\nbody");
        let head = parse_response_head(&mut buf, false, None).unwrap().unwrap();
        let values: Vec<_> = head.fields.get_all("x-a").collect();
        assert_eq!(values, [b"1", b"2"]);
        assert_eq!(&buf[..], b"body");
    }
}
