//! A property of the whole request path's framing: a client request with random framing fields
//! (lengths, codings, both, repeats, look-alikes), random `Connection` lists and targets in every
//! form goes through alb's real head parser, hop-by-hop removal and head encoder; the bytes alb
//! would send are then read back by a parser written from RFC 9112 alone (`differential/wire.rs`,
//! nothing of alb's). Whatever the client wrote, what a backend reads is exactly one request with
//! exactly one framing, carrying the content the RFC says the client sent, followed by the next
//! request and nothing else; and its Host is the client's.

use super::differential::wire;

use alb::http1::{BodyFraming, Framing, RequestRules, Underscores, parse_client_request};
use alb::proxy::Scheme;
use bytes::BytesMut;
use http::HeaderValue;
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// What follows every request on the upstream connection: it must arrive as itself.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nhost: next.example\r\n\r\n";
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: victim\r\n\r\n";

/// The least share of cases alb accepts, in percent (it accepted 44 % of 2,048 in a run; the
/// RFC requires accepting about 13 %).
const ACCEPTED_PERCENT: u32 = 30;

/// How the client frames its content.
#[derive(Debug, Clone)]
enum ClientFraming {
    None,
    Length,
    LengthTwice,
    Chunked(Vec<usize>),
    /// Both: by RFC 9112 §6.3 the coding wins; the length is anything.
    ChunkedWithLength(u64),
    /// A coding list split over two lines.
    ChunkedOnSecondLine,
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    target: &'static str,
    host: Option<&'static str>,
    framing: ClientFraming,
    connection: Vec<&'static str>,
    lookalikes: Vec<&'static str>,
    content: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "DELETE", "PATCH"]);
    let target = prop::sample::select(vec![
        "/p?q=1",
        "/",
        "http://abs.example:8080/a",
        "http://abs.example",
        "HTTP://abs.example/b",
        "*",
        "evil.example:80",
        "http://u@evil.example/",
    ]);
    let host = prop::option::weighted(
        0.9,
        prop::sample::select(vec!["good.example", "good.example:81", "[::1]:8080", ""]),
    );
    let framing = prop_oneof![
        Just(ClientFraming::None),
        Just(ClientFraming::Length),
        Just(ClientFraming::LengthTwice),
        prop::collection::vec(1usize..20, 0..4).prop_map(ClientFraming::Chunked),
        (0u64..100).prop_map(ClientFraming::ChunkedWithLength),
        Just(ClientFraming::ChunkedOnSecondLine),
    ];
    let connection = prop::collection::vec(
        prop::sample::select(vec![
            "close",
            "keep-alive",
            "content-length",
            "Transfer-Encoding",
            "host",
            "x-a",
            "te",
            "upgrade",
        ]),
        0..3,
    );
    let lookalikes = prop::collection::vec(
        prop::sample::select(vec![
            "Transfer_Encoding: chunked",
            "Content_Length: 3",
            "Transfer___Encoding: chunked",
            "X_A: 1",
        ]),
        0..2,
    );
    let content = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        Just(SMUGGLED.as_bytes().to_vec()),
    ];
    (
        method, target, host, framing, connection, lookalikes, content,
    )
        .prop_map(
            |(method, target, host, framing, connection, lookalikes, content)| Case {
                method,
                target,
                host,
                framing,
                connection,
                lookalikes,
                content,
            },
        )
}

fn chunked(content: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = content;
    for &size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
        if rest.is_empty() {
            break;
        }
        let n = size.min(rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The client's bytes, and the content they carry by RFC 9112 §6.3.
fn client_bytes(case: &Case) -> (Vec<u8>, Vec<u8>) {
    let mut head = format!("{} {} HTTP/1.1\r\n", case.method, case.target);
    if let Some(host) = case.host {
        head += &format!("Host: {host}\r\n");
    }
    for field in &case.lookalikes {
        head += &format!("{field}\r\n");
    }
    if !case.connection.is_empty() {
        head += &format!("Connection: {}\r\n", case.connection.join(", "));
    }
    head += "X-A: a\r\nTE: trailers\r\n";
    let content = &case.content;
    let body = match &case.framing {
        ClientFraming::None => {
            return (format!("{head}\r\n").into_bytes(), Vec::new());
        }
        ClientFraming::Length => {
            head += &format!("Content-Length: {}\r\n", content.len());
            content.clone()
        }
        ClientFraming::LengthTwice => {
            head += &format!(
                "Content-Length: {0}\r\nContent-Length: {0}\r\n",
                content.len()
            );
            content.clone()
        }
        ClientFraming::Chunked(sizes) => {
            head += "Transfer-Encoding: chunked\r\n";
            chunked(content, sizes)
        }
        ClientFraming::ChunkedWithLength(n) => {
            head += &format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n");
            chunked(content, &[])
        }
        ClientFraming::ChunkedOnSecondLine => {
            head += "Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n";
            chunked(content, &[3])
        }
    };
    let mut bytes = format!("{head}\r\n").into_bytes();
    bytes.extend_from_slice(&body);
    (bytes, content.clone())
}

/// Whether RFC 9112 leaves a server no choice but to accept the request: a target in origin or
/// absolute form (`*` with OPTIONS), a Host with a name, framed by nothing, one Content-Length or
/// chunked alone, and a Connection list of options that name no field a proxy must keep. (Left to
/// the server: no Host, an empty one, a repeated Content-Length, both framings, an empty
/// coding, authority form, userinfo, Connection naming Host, framing fields or Upgrade.)
fn mandated(case: &Case) -> bool {
    let target = match case.target {
        "/p?q=1"
        | "/"
        | "http://abs.example:8080/a"
        | "http://abs.example"
        | "HTTP://abs.example/b" => true,
        "*" => case.method == "OPTIONS",
        _ => false,
    };
    let host = case.host.is_some_and(|h| !h.is_empty());
    let framing = matches!(
        case.framing,
        ClientFraming::None | ClientFraming::Length | ClientFraming::Chunked(_)
    );
    let connection = case
        .connection
        .iter()
        .all(|c| matches!(*c, "close" | "keep-alive" | "te" | "x-a"));
    target && host && framing && connection
}

/// Cases run: enough that every kind of field comes up many times.
const CASES: u32 = 2048;

#[test]
fn what_a_backend_reads_is_one_request_framed_as_the_client_meant() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (accepted, mandated_cases) = (Cell::new(0u32), Cell::new(0u32));
    runner
        .run(&case(), |case| {
            let was_accepted = check(&case)?;
            if mandated(&case) {
                prop_assert!(
                    was_accepted,
                    "refused, though RFC 9112 requires accepting it"
                );
                mandated_cases.set(mandated_cases.get() + 1);
            }
            accepted.set(accepted.get() + u32::from(was_accepted));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // A parser refusing everything would pass every check above but the mandated ones: these
    // must have come up, and a good share of all cases must have reached the backend's side.
    let (accepted, mandated_cases) = (accepted.get(), mandated_cases.get());
    println!("{accepted} of {CASES} cases accepted, {mandated_cases} of them required by the RFC");
    assert!(
        mandated_cases >= CASES / 20,
        "only {mandated_cases} of {CASES} cases are ones the RFC requires accepting"
    );
    assert!(
        accepted >= CASES * ACCEPTED_PERCENT / 100,
        "only {accepted} of {CASES} cases accepted"
    );
}

/// Runs one case through alb's parser, hop-by-hop removal and encoder and checks what a backend
/// reads; returns whether alb accepted the request.
fn check(case: &Case) -> Result<bool, TestCaseError> {
    {
        let (bytes, content) = client_bytes(case);
        let rules = RequestRules {
            max_head: 32 * 1024,
            underscores: Underscores::Drop,
        };
        let mut buf = BytesMut::from(&bytes[..]);
        let Ok(Some(request)) = parse_client_request(&mut buf, &rules) else {
            // Refused: nothing reaches a backend, nothing to check here.
            return Ok(false);
        };
        // What alb reads as the body is what the RFC says the client sent.
        let framing = match request.framing {
            Framing::Empty => {
                prop_assert!(content.is_empty(), "content {content:?} framed as empty");
                BodyFraming::None
            }
            Framing::Length(n) => {
                prop_assert_eq!(n, content.len() as u64);
                prop_assert!(matches!(
                    case.framing,
                    ClientFraming::Length | ClientFraming::LengthTwice
                ));
                BodyFraming::Length(n)
            }
            Framing::Chunked => {
                prop_assert!(matches!(
                    case.framing,
                    ClientFraming::Chunked(_)
                        | ClientFraming::ChunkedWithLength(_)
                        | ClientFraming::ChunkedOnSecondLine
                ));
                BodyFraming::Chunked
            }
            Framing::Close => return Err(TestCaseError::fail("a request framed by close")),
        };
        let mut parts = request.parts;
        alb::proxy::remove_hop_by_hop(&mut parts.headers);
        let mut wire_bytes = crate::support::encode::request_head(
            &parts,
            &HeaderValue::from_static("192.0.2.1"),
            Scheme::Http,
            framing,
            &HeaderValue::from_static("backend.example:9000"),
        );
        match framing {
            BodyFraming::Chunked => wire_bytes.extend_from_slice(&chunked(&content, &[7])),
            BodyFraming::Length(_) => wire_bytes.extend_from_slice(&content),
            BodyFraming::None => {}
        }
        wire_bytes.extend_from_slice(NEXT);

        let (sent, used) = match wire::parse_request(&wire_bytes) {
            wire::Parsed::Complete(sent, used) => (sent, used),
            other => {
                return Err(TestCaseError::fail(format!(
                    "a backend cannot read what alb sends: {other:?}\n{}",
                    wire::show(&wire_bytes)
                )));
            }
        };
        // Exactly one framing, carrying the client's content.
        let framing_fields =
            sent.values("content-length").len() + sent.values("transfer-encoding").len();
        prop_assert!(framing_fields <= 1, "{}", wire::show(&sent.head));
        prop_assert_eq!(&sent.body, &content);
        prop_assert!(
            sent.fields.iter().all(|(name, _)| !name.contains(&b'_')),
            "{}",
            wire::show(&sent.head)
        );
        // And then the next request, as itself: nothing was smuggled in between.
        match wire::parse_request(&wire_bytes[used..]) {
            wire::Parsed::Complete(next, rest) => {
                prop_assert_eq!(next.target, b"/next".to_vec());
                prop_assert_eq!(used + rest, wire_bytes.len());
            }
            other => return Err(TestCaseError::fail(format!("after the request: {other:?}"))),
        }
        // Host: the absolute-form target's authority, else the client's Host.
        let expected = match case.target {
            t if t.to_ascii_lowercase().starts_with("http://") => {
                t[7..].split('/').next().unwrap_or("").to_string()
            }
            _ => case.host.unwrap_or("").to_string(),
        };
        prop_assert_eq!(sent.values("host"), vec![expected.as_bytes()]);
    }
    Ok(true)
}
