//! A broken HTTP/2 connection preface on the plain port (h2c by prior knowledge): the bytes a
//! conformance tool (h2spec 3.5) sends, written by hand, and the frames alb answers re-parsed.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// The frames in `bytes`: (type, stream id, payload); a torn last frame is left out.
fn frames(bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        if rest.len() < 9 + length {
            break;
        }
        found.push((rest[3], stream, rest[9..9 + length].to_vec()));
        rest = &rest[9 + length..];
    }
    found
}

#[tokio::test]
async fn a_broken_h2c_preface_gets_a_goaway_with_protocol_error_and_a_close() {
    let s = Scenario::new()
        .backend("a")
        .config("[http2]\ncleartext = true\n")
        .quiet_health()
        .start()
        .await;
    // The preface's request line, then the wrong bytes; and a whole preface with one byte wrong.
    for opening in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r"[..],
        &b"PRI * HTTP/2.0 junk and more junk"[..],
    ] {
        let mut stream = TcpStream::connect(s.lb.addr).await.expect("connect");
        stream.write_all(opening).await.expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
        )
        .await;
        assert!(read.is_ok(), "alb closes the connection at once");
        assert!(
            !answer.starts_with(b"HTTP/1.1"),
            "no HTTP/1.1 answer: {}",
            String::from_utf8_lossy(&answer)
        );
        let frames = frames(&answer);
        let goaway = frames
            .iter()
            .find(|(kind, _, _)| *kind == 0x7)
            .unwrap_or_else(|| panic!("a GOAWAY among {frames:?}"));
        assert_eq!(goaway.1, 0, "GOAWAY is on stream 0");
        let payload = &goaway.2;
        assert!(payload.len() >= 8, "{payload:?}");
        let last_stream = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        assert_eq!(last_stream & 0x7fff_ffff, 0, "no stream was processed");
        assert_eq!(code, 0x1, "PROTOCOL_ERROR");
        // The server's preface (SETTINGS) is the first frame, as RFC 9113 §3.4 asks.
        assert_eq!(frames.first().map(|f| f.0), Some(0x4), "{frames:?}");
    }
    // An HTTP/1.1 request still gets an HTTP/1.1 answer on the same port.
    let mut stream = TcpStream::connect(s.lb.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.stop().await;
}
