//! What RFC 9113 §8.2.1 and §8.3.1 call malformed, and what HTTP/1.1's parser already refuses,
//! refused over HTTP/2 as well: whitespace around a field value, a `:path` that is no
//! origin-form target, CONNECT (405 over both versions, as the README says). Raw frames, so that
//! no client library tidies the request first.

use super::*;

/// Sends `block` as stream `stream` and returns the status of its answer.
async fn status_of(
    reader: &mut h2raw::RawReader,
    writer: &h2raw::RawWriter,
    stream: u32,
    block: Block,
) -> Option<u16> {
    assert!(
        writer
            .send(&h2raw::headers(stream, block.bytes(), true))
            .await
    );
    let answer = reader
        .until(DEADLINE, |f| {
            f.kind == h2raw::GOAWAY
                || (f.stream == stream && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM))
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    answer.status()
}

#[tokio::test]
async fn malformed_requests_get_400_or_405_on_h2_as_on_http1_and_reach_no_backend() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "").await;
    let (mut reader, writer) = h2raw::connect(lb.addr, &[]).await;
    let cases = [
        (
            "a value with a leading space",
            Block::request("GET", "/", "site.test").literal("x-a", b" padded"),
            400,
        ),
        (
            "a value with a trailing tab",
            Block::request("GET", "/", "site.test").literal("x-a", b"padded\t"),
            400,
        ),
        ("`*` on GET", Block::request("GET", "*", "site.test"), 400),
        (
            "a query without a path",
            Block::request("GET", "?x=1", "site.test"),
            400,
        ),
        (
            "CONNECT",
            Block::new()
                .literal_name(2, b"CONNECT")
                .literal_name(1, b"site.test:443"),
            405,
        ),
    ];
    let mut stream = 1;
    for (what, block, want) in cases {
        let got = status_of(&mut reader, &writer, stream, block).await;
        assert_eq!(got, Some(want), "{what}\n{}", reader.transcript());
        stream += 2;
    }
    // The connection serves on, and only this request reached the backend.
    let got = status_of(
        &mut reader,
        &writer,
        stream,
        Block::request("GET", "/ok", "site.test"),
    )
    .await;
    assert_eq!(got, Some(200), "{}", reader.transcript());
    assert_eq!(backend.hits(), 1);

    // HTTP/1.1 answers CONNECT the same way, with the methods there are.
    let mut tcp = TcpStream::connect(lb.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"CONNECT site.test:443 HTTP/1.1\r\nHost: site.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 405"), "{text}");
    assert!(text.contains("\r\nallow: get, head"), "{text}");
    assert_eq!(backend.hits(), 1);
}
