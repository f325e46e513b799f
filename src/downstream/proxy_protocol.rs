//! The PROXY protocol header (versions 1 and 2, as HAProxy's specification `proxy-protocol.txt`
//! defines them) that an L4 balancer sends first on each connection to tell who the client is.
//!
//! A small strict parser of our own rather than a crate: what matters here is where it stops
//! (a v1 line is at most 107 bytes, a v2 block at most [`V2_MAX_PAYLOAD`]), that it decides as
//! early as the bytes allow (a sender that is not speaking the protocol is closed at once, not
//! at the timeout), and that it takes nothing but the source address (TLVs are skipped). Those
//! bounds would have to be written around a crate anyway, and the rest is a page.
//!
//! The header is read into the connection's own read buffer, so the bytes that came with it
//! (the start of the first request) are where the HTTP reader looks next; a buffer left empty
//! is released, so a connection idle after its header holds none.

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::sync::futures::Notified;

use super::shutdown::Shutdown;
use crate::deadline::Deadline;
use crate::http1::ReadSide;
use crate::proxy::HeaderRefusal;

/// Longest v1 line, CRLF included (the specification's worst case, `PROXY UNKNOWN` with two
/// full IPv6 addresses and ports).
pub const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and transport, length.
const V2_FIXED: usize = 16;
/// Most address and TLV bytes taken after the fixed part. Addresses need at most 216 (two UNIX
/// paths); balancers add a few small TLVs (AWS: the VPC endpoint). The field allows 64 KiB,
/// which no connection should make alb buffer before it knows who sent it.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// Whose address the header gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's, as the balancer saw it.
    Client(SocketAddr),
    /// None that applies (v2 `LOCAL`, such as a balancer's health check; v1 `UNKNOWN`; a family
    /// other than TCP over IP): the connection's own peer stands, as the specification says.
    Peer,
}

/// A complete header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub source: Source,
    /// Bytes the header takes; what follows belongs to the connection's protocol.
    pub len: usize,
}

/// A buffer that cannot be the start of a valid header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
}

/// Parses the header at the start of `buf`: `Ok(None)` while the bytes so far may still begin
/// one (read more), an error as soon as they cannot.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let starts = |magic: &[u8]| {
        let n = buf.len().min(magic.len());
        buf[..n] == magic[..n]
    };
    if first == V2_SIGNATURE[0] && starts(V2_SIGNATURE) {
        parse_v2(buf)
    } else if first == V1_PREFIX[0] && starts(V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(HeaderError::Missing)
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN ...\r\n`, every separator one
/// space, no leading zeros, the addresses of the family named.
fn parse_v1(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        // Refuse at once what no more bytes can mend: a byte outside printable ASCII (a lone
        // CR or LF included), or a full window without an end of line.
        let (last, body) = window
            .split_last()
            .map_or((None, window), |(l, b)| (Some(*l), b));
        if body.iter().any(|&b| !is_v1_text(b))
            || last.is_some_and(|b| b != b'\r' && !is_v1_text(b))
        {
            return Err(HeaderError::V1(
                "a byte other than printable ASCII before CRLF",
            ));
        }
        if window.len() == V1_MAX {
            return Err(HeaderError::V1("no CRLF within 107 bytes"));
        }
        return Ok(None);
    };
    let line = &window[V1_PREFIX.len()..end];
    if !line.iter().all(|&b| is_v1_text(b)) {
        return Err(HeaderError::V1(
            "a byte other than printable ASCII before CRLF",
        ));
    }
    // Printable ASCII is UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    let source = match fields.next() {
        // The rest of the line is to be ignored.
        Some("UNKNOWN") => Source::Peer,
        Some(family @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(HeaderError::V1(
                    "expected exactly: source and destination address, source and destination port",
                ));
            };
            let v4 = family == "TCP4";
            let src = v1_addr(src, v4)?;
            v1_addr(dst, v4)?;
            let sport = v1_port(sport)?;
            v1_port(dport)?;
            Source::Client(SocketAddr::new(src, sport))
        }
        _ => return Err(HeaderError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(Header {
        version: 1,
        source,
        len: end + 2,
    }))
}

fn is_v1_text(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

fn v1_addr(text: &str, v4: bool) -> Result<IpAddr, HeaderError> {
    // The standard parsers take exactly dotted quads (no leading zeros) and RFC 4291 text.
    if v4 {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| HeaderError::V1("not an IPv4 address in a TCP4 line"))
    } else {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| HeaderError::V1("not an IPv6 address in a TCP6 line"))
    }
}

fn v1_port(text: &str) -> Result<u16, HeaderError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse::<u16>() {
        Ok(port) if digits && !leading_zero => Ok(port),
        _ => Err(HeaderError::V1(
            "a port is not a number from 0 to 65535 without leading zeros",
        )),
    }
}

/// Signature, then version 2 and a command (`LOCAL` or `PROXY`), family and transport, the
/// length of what follows, the addresses (source first), TLVs (skipped).
fn parse_v2(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    if buf.len() <= V2_SIGNATURE.len() {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(HeaderError::V2("version is not 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::V2("command is neither LOCAL nor PROXY")),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // Values the specification leaves unassigned are refused, except under LOCAL, whose
    // family is to be ignored.
    if !local && (family >> 4 > 3 || family & 0x0f > 2) {
        return Err(HeaderError::V2("unknown address family or transport"));
    }
    let Some(length) = buf.get(14..16) else {
        return Ok(None);
    };
    let payload = usize::from(u16::from_be_bytes([length[0], length[1]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(HeaderError::V2("longer than the 4096 bytes alb takes"));
    }
    let Some(block) = buf.get(V2_FIXED..V2_FIXED + payload) else {
        return Ok(None);
    };
    let source = match (local, family) {
        (true, _) => Source::Peer,
        // TCP over IPv4: source, destination (4 bytes each), source port, destination port.
        (false, 0x11) => {
            let a = block
                .get(..12)
                .ok_or(HeaderError::V2("too short for TCP over IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Source::Client(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        // TCP over IPv6: the same with 16-byte addresses.
        (false, 0x21) => {
            let a = block
                .get(..36)
                .ok_or(HeaderError::V2("too short for TCP over IPv6 addresses"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Source::Client(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        // UNSPEC, UDP, UNIX: no TCP client address to take; the specification lets a receiver
        // fall back to the connection's own endpoints.
        (false, _) => Source::Peer,
    };
    Ok(Some(Header {
        version: 2,
        source,
        len: V2_FIXED + payload,
    }))
}

/// Why no header was taken.
#[derive(Debug, thiserror::Error)]
pub enum HeaderFailure {
    #[error(transparent)]
    Invalid(#[from] HeaderError),
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before a complete PROXY protocol header")]
    Closed,
    #[error("alb is shutting down")]
    Stopping,
}

impl HeaderFailure {
    /// The metric's reason; none for a shutdown, which refuses nothing.
    pub fn refusal(&self) -> Option<HeaderRefusal> {
        Some(match self {
            HeaderFailure::Invalid(HeaderError::Missing) => HeaderRefusal::Missing,
            HeaderFailure::Invalid(_) => HeaderRefusal::Malformed,
            HeaderFailure::Timeout(_) => HeaderRefusal::Timeout,
            HeaderFailure::Closed => HeaderRefusal::Closed,
            HeaderFailure::Stopping => return None,
        })
    }
}

/// Reads the header that must start the connection, within `limit` (`timeouts.client_header`:
/// a slow or silent sender is closed like a slow request head). On success the header is gone
/// from `reader.buf` and whatever followed it is still there. A shutdown ends the wait (nothing
/// has been asked of alb yet), except on a handover's last call.
pub(super) async fn read_header(
    reader: &mut ReadSide,
    timer: &mut Deadline,
    limit: Duration,
    shutdown: &Shutdown,
    mut stopping: Pin<&mut Notified<'_>>,
) -> Result<Header, HeaderFailure> {
    timer.set(limit);
    let header = poll_fn(|cx| {
        loop {
            if let Some(header) = parse(&reader.buf)? {
                return Poll::Ready(Ok(header));
            }
            match reader.poll_fill(cx, 0) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(HeaderFailure::Closed));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        // On a last call the header still has its own time limit: the request behind it is
        // served, as on any connection a handover leaves behind.
        if (shutdown.is_started() || stopping.as_mut().poll(cx).is_ready())
            && shutdown.last_call().is_none()
        {
            return Poll::Ready(Err(HeaderFailure::Stopping));
        }
        if timer.poll_passed(cx) {
            return Poll::Ready(Err(HeaderFailure::Timeout(limit)));
        }
        Poll::Pending
    })
    .await?;
    reader.buf.advance(header.len);
    if reader.buf.is_empty() {
        reader.buf = BytesMut::new();
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn client(text: &str) -> Source {
        Source::Client(text.parse().unwrap())
    }

    /// Every proper prefix of a good header asks for more.
    fn prefixes_wait(header: &[u8]) {
        for n in 0..header.len() {
            assert_eq!(parse(&header[..n]), Ok(None), "prefix of {n} bytes");
        }
    }

    #[test]
    fn v1_headers_give_the_source_and_leave_what_follows() {
        let text = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let header = parse(text).unwrap().unwrap();
        assert_eq!(header.source, client("203.0.113.7:56324"));
        assert_eq!(&text[header.len..], b"GET / HTTP/1.1\r\n");
        prefixes_wait(&text[..header.len]);

        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 0 65535\r\n";
        let header = parse(six).unwrap().unwrap();
        assert_eq!(header.source, client("[2001:db8::7]:0"));
        assert_eq!(header.len, six.len());

        for unknown in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN anything at all\r\n",
        ] {
            let header = parse(unknown).unwrap().unwrap();
            assert_eq!((header.source, header.len), (Source::Peer, unknown.len()));
        }
        // The specification's longest line, 107 bytes with its CRLF.
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX);
        assert_eq!(parse(longest.as_bytes()).unwrap().unwrap().len, V1_MAX);
    }

    #[test]
    fn v1_lines_off_the_specification_are_refused() {
        for line in [
            &b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
        ] {
            let shown = String::from_utf8_lossy(line);
            assert!(
                matches!(parse(line), Err(HeaderError::V1(_))),
                "{shown:?}: {:?}",
                parse(line)
            );
        }
        let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(
            parse(&endless),
            Err(HeaderError::V1("no CRLF within 107 bytes"))
        );
        assert_eq!(parse(&endless[..V1_MAX - 1]), Ok(None));
    }

    #[test]
    fn anything_else_first_is_a_missing_header() {
        for start in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"proxy TCP4",
            b"PROXYTCP4",
            b"P\r",
            b"\r\n\r\nX",
            b"\0",
        ] {
            assert_eq!(parse(start), Err(HeaderError::Missing), "{start:?}");
        }
    }

    #[test]
    fn v2_headers_give_the_source_and_skip_tlvs() {
        let mut block = vec![198, 51, 100, 9, 10, 0, 0, 1, 0xc3, 0x50, 0x01, 0xbb];
        block.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c']); // a NOOP TLV
        let mut bytes = v2(1, 0x11, &block);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"GET /");
        let header = parse(&bytes).unwrap().unwrap();
        assert_eq!(header.source, client("198.51.100.9:50000"));
        assert_eq!((header.version, header.len), (2, header_len));
        prefixes_wait(&bytes[..header_len]);

        let mut six = [0u8; 36];
        six[0] = 0x20;
        six[1] = 0x01;
        six[2] = 0x0d;
        six[3] = 0xb8;
        six[15] = 7;
        six[32..34].copy_from_slice(&8080u16.to_be_bytes());
        let header = parse(&v2(1, 0x21, &six)).unwrap().unwrap();
        assert_eq!(header.source, client("[2001:db8::7]:8080"));

        // LOCAL (whatever the family, addresses present or not), UNSPEC, UDP, UNIX: the peer.
        for (command, family, block) in [
            (0, 0x00, &[][..]),
            (0, 0x11, &block[..12]),
            (0, 0xff, &[][..]),
            (1, 0x00, &[][..]),
            (1, 0x12, &block[..12]),
            (1, 0x31, &[0u8; 216][..]),
        ] {
            let bytes = v2(command, family, block);
            let header = parse(&bytes).unwrap().unwrap();
            assert_eq!((header.source, header.len), (Source::Peer, bytes.len()));
        }
    }

    #[test]
    fn v2_headers_off_the_specification_are_refused() {
        let four = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        let mut bad_version = v2(1, 0x11, &four);
        bad_version[12] = 0x11;
        let mut cases = vec![
            bad_version,
            v2(2, 0x11, &four),
            v2(0xf, 0x11, &four),
            v2(1, 0x41, &four),
            v2(1, 0x13, &four),
            v2(1, 0x11, &four[..11]),
            v2(1, 0x21, &[0u8; 35]),
        ];
        // Too long is refused from the length field alone.
        let mut long = v2(1, 0x11, &four);
        long[14..16].copy_from_slice(&(V2_MAX_PAYLOAD as u16 + 1).to_be_bytes());
        cases.push(long[..16].to_vec());
        for bytes in cases {
            assert!(
                matches!(parse(&bytes), Err(HeaderError::V2(_))),
                "{bytes:?}: {:?}",
                parse(&bytes)
            );
        }
        let most = v2(1, 0x11, &[0u8; V2_MAX_PAYLOAD]);
        assert_eq!(parse(&most).unwrap().unwrap().len, 16 + V2_MAX_PAYLOAD);
    }

    proptest::proptest! {
        /// Any bytes: no panic, a header never longer than the input, never past the limits.
        #[test]
        fn any_input_is_judged_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            signature in proptest::bool::ANY,
        ) {
            let input = if signature { [&V2_SIGNATURE[..], &bytes].concat() } else { bytes };
            if let Ok(Some(header)) = parse(&input) {
                proptest::prop_assert!(header.len <= input.len());
                proptest::prop_assert!(header.len <= V2_FIXED + V2_MAX_PAYLOAD);
            }
        }
    }
}
