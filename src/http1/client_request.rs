//! Parsing a client's request head, strictly: anything two HTTP parsers could read differently
//! (conflicting lengths, a transfer coding list that does not end in chunked, Transfer-Encoding in
//! HTTP/1.0, obs-fold, stray whitespace) is refused, since request smuggling lives in those gaps.
//!
//! Two rules hold for every request this returns, and nothing downstream has to re-check them:
//! - **Framing is not a field.** `Content-Length` and `Transfer-Encoding` are read into
//!   [`ClientRequest::framing`] and left out of the header map, so no later step (a `Connection`
//!   list, a copy loop) can forward, drop or duplicate them: the head encoder writes the framing
//!   of the body it actually sends.
//! - **Host is the client's Host.** The target is origin-form (or `*` for OPTIONS); an
//!   absolute-form target's authority (never user info) becomes Host, as RFC 9112 §3.2.2 says; an
//!   authority-form target on anything but CONNECT, an HTTP/1.1 request without Host, and a Host
//!   that is not an authority are refused.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version, request};
use smallvec::SmallVec;

use super::response_head::Framing;
use super::target::{Target, is_authority};
use super::{Rejected, bad, parse_length};

/// Most fields in a request head (as hyper and nginx: a client needing more is broken).
const MAX_FIELDS: usize = 100;

/// What to do with a field whose name holds an underscore. Some servers read `_` as `-`
/// (`Transfer_Encoding` as `Transfer-Encoding`, CGI-style gateways turn both into `HTTP_…`): such
/// a name is a second, hidden framing field or Host when alb and a backend disagree about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Underscores {
    /// Leave the field out of what is forwarded (nginx's default).
    #[default]
    Drop,
    /// Answer 400.
    Refuse,
    /// Forward it, unless it reads as one of the fields alb writes or decides by (framing,
    /// Connection, Host, X-Forwarded-*) once `_` is `-`: those are still dropped, since a lenient
    /// backend would act on them and nothing alb does afterwards can undo that.
    Allow,
}

/// How client request heads are read.
#[derive(Debug, Clone, Copy)]
pub struct RequestRules {
    /// Request line and fields; 431 above.
    pub max_head: usize,
    pub underscores: Underscores,
}

/// A request head and what the connection must do with it.
#[derive(Debug)]
pub struct ClientRequest {
    /// Origin-form (or `*`) target, Host as the client meant it, no framing field.
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

/// Parses the request head at the front of `buf` and removes it. `Ok(None)`: not complete yet
/// (and within `max_head` bytes so far).
pub fn parse_client_request(
    buf: &mut BytesMut,
    rules: &RequestRules,
) -> Result<Option<ClientRequest>, Rejected> {
    let max_head = rules.max_head;
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
    let target = Target::of(
        &method,
        head.slice(target_span.0 as usize..target_span.1 as usize),
    )?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut fields = FramingFields::default();
    for &((ns, ne), (vs, ve)) in &spans {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let raw_name = &head[ns..ne];
        if !keeps_field(raw_name, rules)? {
            continue;
        }
        let name = HeaderName::from_bytes(raw_name).map_err(|_| bad("invalid field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| bad("invalid field value"))?;
        if fields.note(&name, &value)? == Kept::Framing {
            continue;
        }
        headers.append(name, value);
    }
    let framing = fields.framing(version)?;
    // RFC 9112 §3.2: any HTTP/1.1 request without Host is refused, whatever its target says.
    if version == Version::HTTP_11 && !fields.host_seen {
        return Err(bad("HTTP/1.1 request without Host"));
    }
    let uri = match target {
        Target::Origin(uri) => uri,
        Target::Absolute { authority, origin } => {
            // RFC 9112 §3.2.2: the target's authority replaces any Host the client sent.
            headers.insert(header::HOST, authority);
            origin
        }
    };
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

/// Whether a field named `name` is forwarded under [`RequestRules::underscores`] (`Ok(false)`:
/// left out), for requests of either HTTP version: the one place that rule is applied.
///
/// A name with a run of `-` or a `-` at an end (`Transfer--Encoding`) is dropped when it reads as
/// one of alb's fields once the runs collapse, whatever the rule: no client needs such a name,
/// and a server that collapses them would take it for the real one.
pub fn keeps_field(name: &[u8], rules: &RequestRules) -> Result<bool, Rejected> {
    if !is_unusual_name(name) {
        return Ok(true);
    }
    #[allow(clippy::manual_contains)]
    let underscore = name.iter().any(|&b| b == b'_');
    if !underscore {
        return Ok(!reads_as_alb_field(name));
    }
    match rules.underscores {
        Underscores::Drop => Ok(false),
        Underscores::Refuse => Err(bad("underscore in a field name")),
        Underscores::Allow => Ok(!reads_as_alb_field(name)),
    }
}

/// Whether `name`, read by a server that takes `_` for `-` and ignores case, repeats of either
/// and either at the ends, is one of the fields that frame a request, route it, or that alb
/// writes for this hop.
fn reads_as_alb_field(name: &[u8]) -> bool {
    let mut folded: SmallVec<[u8; 24]> = SmallVec::new();
    for &b in name {
        let b = if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        };
        if !(b == b'-' && matches!(folded.last(), Some(b'-') | None)) {
            folded.push(b);
        }
    }
    while folded.last() == Some(&b'-') {
        folded.pop();
    }
    std::str::from_utf8(&folded).is_ok_and(super::forwarding::is_alb_field)
}

/// Whether a field name holds an `_`, a run of `-` or a `-` at an end: the names that some server
/// could read as another field, which [`keeps_field`] looks at closer. Most names are none of
/// these and pass this alone.
pub fn is_unusual_name(name: &[u8]) -> bool {
    // One early-exit pass: names are short and almost all are plain, so the common case is one
    // compare per byte and a second per `-` (a memchr call per field costs more, callgrind).
    name.first() == Some(&b'-')
        || name
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'_' || (b == b'-' && name.get(i + 1).is_none_or(|&n| n == b'-')))
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

/// Whether a field goes into the header map or was taken as framing.
#[derive(PartialEq, Eq)]
enum Kept {
    Field,
    Framing,
}

impl FramingFields {
    /// Takes in one field. Repeated equal Content-Length lines are one length (RFC 9110 §8.6
    /// lets a recipient merge them); either way the field itself is not kept.
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<Kept, Rejected> {
        let bytes = value.as_bytes();
        if name == header::CONTENT_LENGTH {
            // One value, digits only: a list, even of equal values, is refused.
            let n = parse_length(bytes).ok_or(bad("invalid Content-Length"))?;
            if self.length.is_some_and(|seen| seen != n) {
                return Err(bad("conflicting Content-Length fields"));
            }
            self.length = Some(n);
            return Ok(Kept::Framing);
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
            return Ok(Kept::Framing);
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
            if !is_authority(bytes) {
                return Err(bad("invalid Host"));
            }
            self.host_seen = true;
        } else if name == header::EXPECT {
            self.expects_continue |= bytes.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(Kept::Field)
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
        let rules = RequestRules {
            max_head: 8192,
            underscores: Underscores::Drop,
        };
        parse_client_request(&mut BytesMut::from(text), &rules)
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
        let r = parse(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.framing, r.close), (Framing::Chunked, true));
        let r =
            parse("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
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
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ] {
            assert_eq!(parse(text).unwrap_err().status.as_u16(), status, "{text}");
        }
        for (text, why) in [
            (
                "GET evil.example HTTP/1.1\r\nHost: good\r\n\r\n",
                "authority-form",
            ),
            (
                "GET evil.example:80 HTTP/1.1\r\nHost: good\r\n\r\n",
                "authority-form",
            ),
            (
                "GET a@evil.example HTTP/1.1\r\nHost: good\r\n\r\n",
                "authority-form",
            ),
            (
                "GET http://a@evil.example/ HTTP/1.1\r\nHost: good\r\n\r\n",
                "user info",
            ),
            (
                "GET ftp://evil.example/ HTTP/1.1\r\nHost: good\r\n\r\n",
                "scheme",
            ),
            (
                "GET * HTTP/1.1\r\nHost: good\r\n\r\n",
                "asterisk without OPTIONS",
            ),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host"),
            ("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", "Host with user info"),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "Host with a path"),
            (
                "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n",
                "Host with a bad port",
            ),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", "empty Host"),
            ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", "Host without a host"),
            (
                "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n",
                "Host with a bad escape",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
                "Host that reads as a list",
            ),
            ("GET / HTTP/1.1\r\nHost: []\r\n\r\n", "empty IP literal"),
            (
                "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
                "absolute form, no host",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err().status, 400, "{why}: {text}");
        }
        let many: String = (0..101).map(|i| format!("X-{i}: a\r\n")).collect();
        let err = parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn framing_fields_are_kept_out_of_the_map() {
        let r =
            parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(r.framing, Framing::Length(3));
        assert!(!r.parts.headers.contains_key(header::CONTENT_LENGTH));
        let r = parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.parts.headers.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn targets_become_origin_form_with_the_right_host() {
        let r = parse("GET http://Good.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.uri, "/p?q");
        assert_eq!(r.parts.headers[header::HOST], "Good.example:8080");
        let r = parse("GET http://good.example HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.uri, "/");
        let r = parse("OPTIONS http://good.example HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.uri, "*");
        let r = parse("OPTIONS http://good.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.uri, "/");
        let without_host = parse("GET http://good.example/ HTTP/1.1\r\n\r\n");
        assert_eq!(without_host.unwrap_err().status, 400);
        let r = parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.uri, "*");
        let r = parse("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.headers[header::HOST], "[::1]:80");
        assert!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn underscore_names_follow_the_rule() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\nX_A: 1\r\n\r\n";
        let with = |underscores| {
            let rules = RequestRules {
                max_head: 8192,
                underscores,
            };
            parse_client_request(&mut BytesMut::from(text), &rules)
        };
        let dropped = with(Underscores::Drop).unwrap().unwrap();
        assert_eq!(
            dropped.parts.headers.len(),
            1,
            "{:?}",
            dropped.parts.headers
        );
        assert_eq!(with(Underscores::Refuse).unwrap_err().status, 400);
        let allowed = with(Underscores::Allow).unwrap().unwrap();
        let names: Vec<&str> = allowed.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x_a"]);
        for name in [
            &b"Transfer___Encoding"[..],
            b"content_length",
            b"_Content_Length_",
            b"X_Forwarded_For",
            b"x_forwarded__host",
            b"HOST_",
            b"X_Real_IP",
            b"x_request_id",
            b"True_Client_IP",
            b"X_Forwarded_Ssl",
        ] {
            assert!(
                reads_as_alb_field(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(!reads_as_alb_field(b"x_content_length"));
        assert!(!reads_as_alb_field(b"x_api_key"));
    }

    #[test]
    fn names_with_runs_of_dashes_that_read_as_framing_are_dropped_under_every_rule() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\ntransfer---encoding: chunked\r\n\
                    Content-Length-: 5\r\nx--trace: 1\r\n-host: evil\r\n\r\n";
        for underscores in [Underscores::Drop, Underscores::Refuse, Underscores::Allow] {
            let rules = RequestRules {
                max_head: 8192,
                underscores,
            };
            let parsed = parse_client_request(&mut BytesMut::from(text), &rules);
            let parsed = parsed.unwrap().unwrap();
            let names: Vec<&str> = parsed.parts.headers.keys().map(|n| n.as_str()).collect();
            assert_eq!(names, ["host", "x--trace"], "{underscores:?}");
        }
    }
}
