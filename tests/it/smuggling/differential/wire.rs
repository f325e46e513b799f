//! An HTTP/1.1 request parser written for this test from RFC 9112 alone (no httparse, nothing of
//! alb's): it reads a message only when its framing has exactly one reading, and otherwise says
//! why it cannot ("desync"). The recording backend reads everything alb sends with it, and the
//! case generator checks its own cases against it.
//!
//! Strict where the RFC leaves room for a reader to guess: lines end in CRLF (a bare CR or bare LF
//! is refused, §2.2), no obs-fold (§5.2), no whitespace before a field's colon (§5.1), at most one
//! Content-Length field line, digits only (§6.3, RFC 9110 §8.6), Transfer-Encoding a list of codings
//! ending in a single `chunked` and never with Content-Length (§6.1, §6.3), chunked framing exactly
//! as its ABNF (§7.1), and no field name that a CGI-style gateway would read as a framing field.

/// How a message's content was delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// No Content-Length and no Transfer-Encoding: a request without content (§6.3 rule 7).
    None,
    Length(u128),
    Chunked,
}

/// A request read unambiguously.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    /// Every field line as received: the name as written, the value without its surrounding OWS.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The head's bytes, final CRLF included.
    pub head: Vec<u8>,
    pub framing: Framing,
    /// The content, chunked coding removed.
    pub body: Vec<u8>,
}

impl Request {
    /// The values of every field line named `name` (case-insensitively), in order.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of `name` as text, if any.
    pub fn value(&self, name: &str) -> Option<String> {
        self.values(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// What the front of a buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole message yet, and nothing wrong so far.
    Incomplete,
    /// A message and the number of bytes it took.
    Complete(Request, usize),
    /// The bytes cannot be read as one request without guessing.
    Desync(String),
}

/// Longest head read; more is refused.
const MAX_HEAD: usize = 64 * 1024;

pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_ows(*first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_ows(*last)
    {
        s = rest;
    }
    s
}

/// A field name a gateway mapping `-` to `_` (CGI's `HTTP_*` variables, RFC 3875 §4.1.18) would
/// read as Content-Length or Transfer-Encoding, though it is not spelled so.
pub fn is_framing_lookalike(name: &[u8]) -> bool {
    if !name.contains(&b'_') {
        return false;
    }
    let squashed: Vec<u8> = name
        .iter()
        .filter(|&&b| b != b'-' && b != b'_')
        .map(u8::to_ascii_lowercase)
        .collect();
    squashed == b"contentlength" || squashed == b"transferencoding"
}

/// The line starting at `at`: `(end of its content, start of the next line)`, or `None` when its
/// CRLF has not arrived yet. Any CR not followed by LF, and any LF not preceded by CR, is refused.
fn next_line(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, String> {
    let mut i = at;
    while i < buf.len() {
        match buf[i] {
            b'\n' => return Err(format!("bare LF at byte {i}")),
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((i, i + 2))),
                    Some(_) => Err(format!("bare CR at byte {i}")),
                };
            }
            _ => i += 1,
        }
    }
    Ok(None)
}

/// Checks one `name: value` field line (header or trailer), returning the name and trimmed value.
fn field_line(line: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    if line.first().copied().is_some_and(is_ows) {
        return Err("a field line starting with whitespace (obs-fold)".into());
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(format!("a field line without a colon: {}", show(line)));
    };
    let name = &line[..colon];
    if name.last().copied().is_some_and(is_ows) {
        return Err(format!("whitespace before the colon: {}", show(line)));
    }
    if !is_token(name) {
        return Err(format!("invalid field name: {}", show(name)));
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.contains(&0) {
        return Err(format!("NUL in the value of {}", show(name)));
    }
    Ok((name.to_vec(), value.to_vec()))
}

/// Parses one request at the front of `buf`.
pub fn parse_request(buf: &[u8]) -> Parsed {
    match parse(buf) {
        Ok(Some((request, used))) => Parsed::Complete(request, used),
        Ok(None) if buf.len() > MAX_HEAD && !contains(buf, b"\r\n\r\n") => {
            Parsed::Desync("head longer than 64 KiB".into())
        }
        Ok(None) => Parsed::Incomplete,
        Err(why) => Parsed::Desync(why),
    }
}

fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, String> {
    let Some((end, mut at)) = next_line(buf, 0)? else {
        return Ok(None);
    };
    let line = &buf[..end];
    if line.is_empty() {
        return Err("an empty line where a request line belongs".into());
    }
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!(
            "request line not `method SP target SP version`: {}",
            show(line)
        ));
    };
    if !is_token(method) {
        return Err(format!("invalid method: {}", show(method)));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(format!("invalid request target: {}", show(target)));
    }
    let valid_version = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if !valid_version {
        return Err(format!("invalid version: {}", show(version)));
    }
    let mut fields = Vec::new();
    loop {
        let Some((end, next)) = next_line(buf, at)? else {
            return Ok(None);
        };
        let line = &buf[at..end];
        at = next;
        if line.is_empty() {
            break;
        }
        fields.push(field_line(line)?);
    }
    let head = buf[..at].to_vec();
    let framing = framing(&fields, version)?;
    let (body, used) = match framing {
        Framing::None => (Vec::new(), at),
        Framing::Length(n) => {
            let have = (buf.len() - at) as u128;
            if have < n {
                return Ok(None);
            }
            let n = n as usize;
            (buf[at..at + n].to_vec(), at + n)
        }
        Framing::Chunked => match chunked(buf, at)? {
            Some(done) => done,
            None => return Ok(None),
        },
    };
    let request = Request {
        method: method.to_vec(),
        target: target.to_vec(),
        fields,
        head,
        framing,
        body,
    };
    Ok(Some((request, used)))
}

/// How the content is delimited (RFC 9112 §6.3), or why that has more than one answer.
fn framing(fields: &[(Vec<u8>, Vec<u8>)], version: &[u8]) -> Result<Framing, String> {
    if let Some((name, _)) = fields.iter().find(|(n, _)| is_framing_lookalike(n)) {
        return Err(format!("framing look-alike field {}", show(name)));
    }
    let lengths: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let codings: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"))
        .map(|(_, v)| v.as_slice())
        .collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        if version == b"HTTP/1.0" {
            return Err("Transfer-Encoding in an HTTP/1.0 message".into());
        }
        let list: Vec<&[u8]> = codings
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|c| !c.is_empty())
            .collect();
        for coding in &list {
            if !is_token(coding) {
                return Err(format!("invalid transfer coding {}", show(coding)));
            }
        }
        let chunked = list
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count();
        let last_chunked = list
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if chunked != 1 || !last_chunked {
            return Err(format!(
                "Transfer-Encoding {} does not end in a single chunked",
                show(&codings.join(&b","[..]))
            ));
        }
        return Ok(Framing::Chunked);
    }
    match lengths[..] {
        [] => Ok(Framing::None),
        [value] => {
            if value.is_empty() || value.len() > 38 || !value.iter().all(u8::is_ascii_digit) {
                return Err(format!("invalid Content-Length {}", show(value)));
            }
            let n = value
                .iter()
                .fold(0u128, |n, &d| n * 10 + u128::from(d - b'0'));
            Ok(Framing::Length(n))
        }
        _ => Err(format!("{} Content-Length field lines", lengths.len())),
    }
}

/// Decodes a chunked body starting at `at` (RFC 9112 §7.1): the content and where the message
/// ends, `None` while incomplete.
fn chunked(buf: &[u8], mut at: usize) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    loop {
        let Some((end, next)) = next_line(buf, at)? else {
            return Ok(None);
        };
        let line = &buf[at..end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(format!("chunk size missing: {}", show(line)));
        }
        let mut size: u64 = 0;
        for &d in &line[..digits] {
            let digit = u64::from((d as char).to_digit(16).unwrap_or(0));
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or_else(|| format!("chunk size overflows 64 bits: {}", show(line)))?;
        }
        chunk_extensions(&line[digits..])
            .map_err(|why| format!("{why} in chunk line {}", show(line)))?;
        at = next;
        if size == 0 {
            loop {
                let Some((end, next)) = next_line(buf, at)? else {
                    return Ok(None);
                };
                let line = &buf[at..end];
                at = next;
                if line.is_empty() {
                    return Ok(Some((body, at)));
                }
                field_line(line).map_err(|why| format!("trailer: {why}"))?;
            }
        }
        let Some(data_end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Ok(None);
        };
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(format!(
                "chunk data of {size} bytes not followed by CRLF: {}",
                show(&buf[data_end..(data_end + 8).min(buf.len())])
            ));
        }
        body.extend_from_slice(&buf[at..data_end]);
        at = data_end + 2;
    }
}

/// `*( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`.
fn chunk_extensions(mut s: &[u8]) -> Result<(), &'static str> {
    fn skip_ows(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| is_ows(b)).count();
        &s[n..]
    }
    fn token(s: &[u8]) -> Result<&[u8], &'static str> {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 {
            return Err("missing token");
        }
        Ok(&s[n..])
    }
    while !s.is_empty() {
        s = skip_ows(s);
        let [b';', rest @ ..] = s else {
            return Err("bytes after the chunk size that are not an extension");
        };
        s = token(skip_ows(rest))?;
        let after_name = skip_ows(s);
        if let [b'=', rest @ ..] = after_name {
            let value = skip_ows(rest);
            s = if let [b'"', rest @ ..] = value {
                quoted_rest(rest)?
            } else {
                token(value)?
            };
        } else {
            s = after_name;
        }
    }
    Ok(())
}

/// The bytes after a quoted-string whose opening quote was already taken.
fn quoted_rest(mut s: &[u8]) -> Result<&[u8], &'static str> {
    let qdtext = |b: u8| {
        b == b'\t'
            || b == b' '
            || b == 0x21
            || ((0x23..=0x7e).contains(&b) && b != b'\\')
            || b >= 0x80
    };
    loop {
        match s {
            [b'"', rest @ ..] => return Ok(rest),
            [b'\\', c, rest @ ..] if *c == b'\t' || (0x20..0x7f).contains(c) || *c >= 0x80 => {
                s = rest
            }
            [c, rest @ ..] if qdtext(*c) => s = rest,
            _ => return Err("invalid quoted string"),
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bytes as text with everything unprintable escaped, for reports.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(text: &[u8]) -> (Request, usize) {
        match parse_request(text) {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("{}: {other:?}", show(text)),
        }
    }

    fn desync(text: &[u8]) {
        assert!(
            matches!(parse_request(text), Parsed::Desync(_)),
            "{} was read as a request",
            show(text)
        );
    }

    #[test]
    fn reads_the_three_framings() {
        let first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let (r, n) = complete(&[&first[..], b"GET /b"].concat());
        assert_eq!(
            (r.target.as_slice(), r.framing, n),
            (&b"/a"[..], Framing::None, first.len())
        );
        let (r, _) = complete(b"POST / HTTP/1.1\r\nContent-Length:  005 \r\n\r\nhello");
        assert_eq!(
            (r.framing, r.body.as_slice()),
            (Framing::Length(5), &b"hello"[..])
        );
        let wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip ,, Chunked\r\n\r\n\
                     5 ;a=b;c=\"q;\\\"x\"\r\nhello\r\nA\r\n0123456789\r\n0;z\r\nT: 1\r\n\r\nX";
        let (r, n) = complete(wire);
        assert_eq!(r.body, b"hello0123456789");
        assert_eq!(n, wire.len() - 1);
    }

    #[test]
    fn incomplete_until_the_end() {
        for text in [
            &b"GET / HTTP/1.1\r\nHost: x\r"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhell",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab",
        ] {
            assert!(
                matches!(parse_request(text), Parsed::Incomplete),
                "{}",
                show(text)
            );
        }
    }

    #[test]
    fn refuses_every_ambiguous_framing() {
        for text in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer_Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent__Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n",
        ] {
            desync(text);
        }
    }

    #[test]
    fn lookalikes() {
        for name in [
            "Transfer_Encoding",
            "content_length",
            "Transfer___Encoding",
            "_Content-Length",
        ] {
            assert!(is_framing_lookalike(name.as_bytes()), "{name}");
        }
        for name in [
            "Transfer-Encoding",
            "Content-Length",
            "X_Content",
            "ContentLength",
        ] {
            assert!(!is_framing_lookalike(name.as_bytes()), "{name}");
        }
    }
}
