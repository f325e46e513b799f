//! `parse_client_request` on arbitrary bytes: no panic, and what it accepts is framed as
//! RFC 9112 §6.3 requires, judged by an independent reading of the head (`alb_fuzz::split_heads`).

#![no_main]

use alb::http1::{ClientRequest, Framing, RequestRules, Underscores, parse_client_request};
use alb_fuzz::{decimal_equals, is_decimal, list_elements, split_heads};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// The default `limits.max_header_bytes`.
const MAX_HEAD: usize = 32 * 1024;

fn rules(max_head: usize) -> RequestRules {
    RequestRules {
        max_head,
        underscores: Underscores::Drop,
    }
}

fuzz_target!(|input: &[u8]| {
    let mut buf = BytesMut::from(input);
    match parse_client_request(&mut buf, &rules(MAX_HEAD)) {
        Ok(None) => {
            assert_eq!(&buf[..], input, "an incomplete head must stay in the buffer");
            assert!(input.len() <= MAX_HEAD, "Ok(None) past max_head");
        }
        Err(_) => {}
        Ok(Some(request)) => {
            let consumed = input.len() - buf.len();
            check(input, consumed, &buf, &request);
            // The same head with a limit below its size: refused, never taken.
            if consumed > 1 {
                let limit = consumed - 1;
                let mut small = BytesMut::from(input);
                let again = parse_client_request(&mut small, &rules(limit));
                assert!(
                    again.is_err(),
                    "a {consumed}-byte head accepted with max_head = {limit}: {again:?}"
                );
            }
        }
    }
});

fn check(input: &[u8], consumed: usize, rest: &[u8], request: &ClientRequest) {
    // The head is taken from the front; the rest (the body, the next request) stays as it was.
    assert_eq!(rest, &input[consumed..], "the bytes left are not the input's tail");
    let heads = split_heads(&input[..consumed])
        .unwrap_or_else(|why| panic!("accepted head is not one head: {why}"));
    assert_eq!(heads.len(), 1, "a request takes exactly one head");
    let head = &heads[0];

    // RFC 9112 §5.1: "A server MUST reject, with a response status code of 400 (Bad Request), any
    // received request message that contains whitespace between a header field name and colon."
    for field in &head.fields {
        assert!(
            !field.space_before_colon,
            "accepted whitespace before the colon of {:?}",
            String::from_utf8_lossy(&field.name)
        );
    }

    let http10 = head.request_is_http10();
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    // request message that lacks a Host header field".
    if !http10 {
        assert!(head.has("host"), "accepted an HTTP/1.1 request without Host");
    }
    let has_te = head.has("transfer-encoding");
    let has_cl = head.has("content-length");

    // RFC 9112 §9.6: a server that receives "close" MUST close after its response; §9.3: an
    // HTTP/1.0 request without "keep-alive" does not persist.
    if head.connection_option("close") {
        assert!(request.close, "Connection: close, but close == false");
    }
    if http10 && !head.connection_option("keep-alive") {
        assert!(request.close, "HTTP/1.0 without keep-alive, but close == false");
    }

    if has_te {
        // §6.3 item 3: both fields: "the server MUST close the connection after responding".
        if has_cl {
            assert!(request.close, "Content-Length and Transfer-Encoding, but close == false");
        }
        // §6.1: HTTP/1.0 with Transfer-Encoding: faulty framing, close after it.
        if http10 {
            assert!(request.close, "HTTP/1.0 with Transfer-Encoding, but close == false");
        }
        // §6.3 item 4: chunked not final: "the server MUST respond with 400 ... and then close".
        let last = head.final_coding();
        assert_eq!(
            last.as_deref(),
            Some(&b"chunked"[..]),
            "accepted a Transfer-Encoding whose final coding is not chunked"
        );
        // §6.3 item 3: Transfer-Encoding overrides Content-Length.
        assert_eq!(request.framing, Framing::Chunked, "Transfer-Encoding, chunked last");
    } else if has_cl {
        // §6.3 item 5: an invalid Content-Length (not digits, or differing values) without
        // Transfer-Encoding: "the server MUST respond with a 400 ... and then close".
        let values: Vec<&[u8]> = head
            .named("content-length")
            .flat_map(|f| list_elements(&f.value))
            .collect();
        assert!(
            !values.is_empty() && values.iter().all(|v| is_decimal(v)),
            "accepted an invalid Content-Length: {values:?}"
        );
        // §6.3 item 6: the length is the value given (all of them, when repeated).
        let n = match request.framing {
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
    } else {
        // §6.3 item 7: neither field: the body is empty.
        assert_eq!(request.framing, Framing::Empty, "no Content-Length nor Transfer-Encoding");
    }
    // Requests are never close-delimited (§6.3 item 7).
    assert_ne!(request.framing, Framing::Close);
}
