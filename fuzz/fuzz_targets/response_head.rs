//! `parse_response_head` on arbitrary bytes, as the answer to a GET and to a HEAD request: no
//! panic; the framing and reuse it decides are those RFC 9112 §6.3 and §9 require; the fields it
//! passes on are the final head's, less Connection and the fields Connection names (RFC 9110
//! §7.6.1), and write out as clean field lines.

#![no_main]

use alb::http1::{Framing, ResponseHead, parse_response_head};
use alb_fuzz::{Head, decimal_equals, is_decimal, split_heads, trim};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    for head_request in [false, true] {
        let mut buf = BytesMut::from(input);
        match parse_response_head(&mut buf, head_request) {
            // Interim heads before an incomplete one may have been taken: only a suffix is left.
            Ok(None) => assert!(input.ends_with(&buf), "the bytes left are not the input's tail"),
            Err(_) => {}
            Ok(Some(response)) => {
                let consumed = input.len() - buf.len();
                assert_eq!(&buf[..], &input[consumed..], "the bytes left are not the input's tail");
                check(&input[..consumed], head_request, &response);
            }
        }
    }
});

fn check(consumed: &[u8], head_request: bool, response: &ResponseHead) {
    let heads = split_heads(consumed)
        .unwrap_or_else(|why| panic!("accepted bytes are not a sequence of heads: {why}"));
    let (last, interim) = heads.split_last().expect("at least one head");
    // 1xx heads are skipped (RFC 9110 §15.2); the final one is what was returned.
    for head in interim {
        let code = head.status_code();
        assert!(
            code.is_some_and(|c| (100..200).contains(&c) && c != 101),
            "skipped a head that is not interim: {:?}",
            String::from_utf8_lossy(&head.start_line)
        );
    }
    let code = last.status_code().expect("the final head has a status code");
    assert_eq!(response.status.as_u16(), code, "status differs from the final status line");
    assert!(code >= 200, "returned an interim response");

    check_framing(last, code, head_request, response);
    check_reuse(last, response);
    check_fields(last, response);
}

/// RFC 9112 §6.3, items 1 to 8, as they apply to a response.
fn check_framing(head: &Head, code: u16, head_request: bool, response: &ResponseHead) {
    let framing = response.framing;
    if head.has("transfer-encoding") {
        // Item 3 (and §6.1 for an intermediary): Content-Length is removed before forwarding.
        assert_eq!(
            response.fields.content_length(),
            None,
            "a Content-Length passed on beside Transfer-Encoding"
        );
    }
    // Item 1: no body after HEAD, 1xx, 204 or 304, whatever the fields say.
    if head_request || code == 204 || code == 304 {
        assert_eq!(framing, Framing::Empty, "HEAD / 204 / 304 with a body");
        return;
    }
    if head.has("transfer-encoding") {
        // Item 4: chunked final: chunked; otherwise read until the connection closes.
        let last = head.final_coding();
        if last.as_deref() == Some(&b"chunked"[..]) {
            assert_eq!(framing, Framing::Chunked, "Transfer-Encoding with chunked last");
            // §6.1: a recipient that decodes a transfer coding makes "corresponding changes to
            // the Transfer-Encoding field value". alb decodes chunked and passes no
            // Transfer-Encoding on, so any other coding listed would reach the client still
            // applied yet no longer declared: only chunked may be listed.
            let codings = head.elements("transfer-encoding");
            assert!(
                codings.iter().all(|c| c.eq_ignore_ascii_case(b"chunked")),
                "body de-chunked and passed on without its other codings: {:?}",
                codings
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
            );
        } else {
            assert_eq!(
                framing,
                Framing::Close,
                "chunked is not the final coding ({:?}) yet the body is {framing:?}",
                last.map(|c| String::from_utf8_lossy(&c).into_owned())
            );
        }
        return;
    }
    if head.has("content-length") {
        // Item 5: an invalid Content-Length is an unrecoverable error (a proxy answers 502).
        let values = head.elements("content-length");
        assert!(
            !values.is_empty() && values.iter().all(|v| is_decimal(v)),
            "accepted an invalid Content-Length: {values:?}"
        );
        // Item 6: the body is that long.
        let n = match framing {
            Framing::Length(n) => n,
            Framing::Empty => 0,
            other => panic!("Content-Length without Transfer-Encoding framed as {other:?}"),
        };
        for v in &values {
            assert!(
                decimal_equals(v, n),
                "framed as {n} bytes, but Content-Length says {:?}",
                String::from_utf8_lossy(v)
            );
        }
        return;
    }
    // Item 8: otherwise the body runs to the end of the connection.
    assert_eq!(framing, Framing::Close, "no Content-Length nor Transfer-Encoding");
}

/// RFC 9112 §9.3, §9.6 and §6.1: when the connection to the backend must not carry another
/// request.
fn check_reuse(head: &Head, response: &ResponseHead) {
    if !response.reusable {
        return;
    }
    assert_ne!(response.framing, Framing::Close, "reusable after a close-delimited body");
    assert!(!head.connection_option("close"), "reusable after Connection: close");
    if head.response_is_http10() {
        assert!(
            head.connection_option("keep-alive"),
            "reusable after an HTTP/1.0 response without keep-alive"
        );
        // §6.1: "A server or client that receives an HTTP/1.0 message containing a
        // Transfer-Encoding header field MUST treat the message as if the framing is faulty, even
        // if a Content-Length is present, and close the connection after processing the message."
        assert!(
            !head.has("transfer-encoding"),
            "reusable after an HTTP/1.0 response with Transfer-Encoding"
        );
    }
}

/// The fields passed on: in order, each a field of the final head, none of Connection and the
/// fields it names; written out as `name: value` CRLF lines with nothing else in between.
fn check_fields(head: &Head, response: &ResponseHead) {
    let options = head.elements("connection");
    let passed: Vec<(&[u8], &[u8])> = response.fields.iter().collect();
    let mut source = head.fields.iter();
    for &(name, value) in &passed {
        // A subsequence of the head's fields, name as sent and value without its whitespace.
        assert!(
            source.any(|f| f.name == name && f.value == value),
            "passed on a field that is not in the head, or out of order: {:?}: {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        );
        assert!(
            !name.eq_ignore_ascii_case(b"connection"),
            "passed on Connection"
        );
        assert!(
            !options.iter().any(|o| o.eq_ignore_ascii_case(name)),
            "passed on {:?}, which Connection names",
            String::from_utf8_lossy(name)
        );
        // §5.1: a proxy MUST remove whitespace between name and colon before forwarding.
        assert_eq!(trim(name), name, "a field name with whitespace");
        assert!(!name.is_empty(), "an empty field name");
        // Content-Length is written from `content_length()`, never passed as a field.
        assert!(!name.eq_ignore_ascii_case(b"content-length"), "passed on Content-Length");
    }

    let mut out = BytesMut::new();
    response.fields.write_to(&mut out);
    let mut written: Vec<&[u8]> = out[..].split(|&b| b == b'\n').collect();
    assert_eq!(written.pop(), Some(&b""[..]), "write_to output does not end with a line end");
    assert_eq!(written.len(), passed.len(), "write_to wrote other lines than iter() gives");
    for (line, (name, value)) in written.iter().zip(&passed) {
        let line = line.strip_suffix(b"\r").unwrap_or_else(|| {
            panic!("a bare LF in the written fields: {:?}", String::from_utf8_lossy(&out))
        });
        assert!(!line.contains(&b'\r'), "a bare CR in the written fields");
        let rest = line.strip_prefix(*name).expect("written line starts with the name");
        let rest = rest.strip_prefix(b":").expect("and a colon after it");
        assert_eq!(trim(rest), *value, "written value differs from iter()'s");
    }
}
