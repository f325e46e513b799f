//! The hostile requests, generated from the grammar of RFC 9112 and RFC 9110, each with what the
//! RFCs allow a server to do with it.
//!
//! Every case is one request on its own connection, tagged `X-Case: <id>`. A request the RFCs let
//! a server accept ends exactly where its framing says (no bytes after it that a correct reader
//! would take as a second, pipelined request); bytes after the framed end appear only where the
//! RFC makes the server refuse the message or close the connection after answering it. So a
//! request for `/smuggled` reaching the backend is never something a correct proxy could have
//! passed on.

/// A complete second request a smuggling attempt tries to slip past the balancer. Its
/// X-Forwarded-For is not alb's: a backend seeing it unchanged saw a request alb never parsed.
pub const SMUGGLED: &str =
    "GET /smuggled HTTP/1.1\r\nHost: victim\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
pub const CLIENT_HOST: &str = "client.example";

/// What the RFCs allow for a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A plain valid request (a control): forwarded with exactly this content.
    Forward(Vec<u8>),
    /// The RFC says the server MUST refuse it: one of these statuses (empty: any 4xx or 5xx),
    /// the connection closed, nothing forwarded.
    Reject(&'static [u16]),
    /// Refusing is allowed; forwarded, the backend gets exactly this content.
    RejectOr(Vec<u8>),
    /// Refusing is allowed, and so is forwarding (its content is not fixed by the RFC); only the
    /// general oracles apply.
    RejectOrAny,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = super::wire::show;
        match self {
            Expect::Forward(body) => write!(f, "must be forwarded with content {}", show(body)),
            Expect::Reject([]) => write!(f, "must be refused (4xx/5xx)"),
            Expect::Reject(codes) => write!(f, "must be refused with {codes:?}"),
            Expect::RejectOr(body) => {
                write!(f, "refused, or forwarded with content {}", show(body))
            }
            Expect::RejectOrAny => write!(f, "refused, or forwarded"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub id: usize,
    pub family: &'static str,
    pub name: String,
    /// Where the expectation comes from.
    pub rule: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
    /// The Host the backend must see if the request is forwarded (compared as authorities);
    /// `None`: any single Host without userinfo.
    pub host: Option<String>,
    /// The request target the backend must see if forwarded; `None`: any origin-form target.
    pub target: Option<String>,
    /// The RFC makes the server close the connection after answering (RFC 9112 §6.1: both
    /// Content-Length and Transfer-Encoding; Transfer-Encoding in HTTP/1.0).
    pub must_close: bool,
}

impl Case {
    fn host(&mut self, host: Option<&str>) -> &mut Case {
        self.host = host.map(str::to_string);
        self
    }

    fn target(&mut self, target: Option<&str>) -> &mut Case {
        self.target = target.map(str::to_string);
        self
    }

    fn must_close(&mut self) -> &mut Case {
        self.must_close = true;
        self
    }

    /// The request line's method is HEAD: its answer has no content.
    pub fn is_head(&self) -> bool {
        self.bytes.starts_with(b"HEAD ")
    }

    pub fn is_http10(&self) -> bool {
        let line_end = self
            .bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.bytes.len());
        super::wire::contains(&self.bytes[..line_end], b"HTTP/1.0")
    }
}

/// The case being built: its id, the path and tag that carry it.
pub struct Ids {
    id: usize,
}

impl Ids {
    pub fn path(&self) -> String {
        format!("/c/{}", self.id)
    }

    pub fn tag(&self) -> String {
        format!("X-Case: {}\r\n", self.id)
    }

    /// `METHOD /c/ID HTTP/1.1`, `Host: client.example`, `fields` (whole lines), the tag, the
    /// blank line, then `body`.
    fn req(&self, method: &str, fields: &[u8], body: &[u8]) -> Vec<u8> {
        cat(&[
            format!(
                "{method} {} HTTP/1.1\r\nHost: {CLIENT_HOST}\r\n",
                self.path()
            )
            .as_bytes(),
            fields,
            self.tag().as_bytes(),
            b"\r\n",
            body,
        ])
    }

    fn post(&self, fields: &[u8], body: &[u8]) -> Vec<u8> {
        self.req("POST", fields, body)
    }

    fn get(&self, fields: &[u8]) -> Vec<u8> {
        self.req("GET", fields, b"")
    }

    /// A request line of our own, then the tag and the blank line (no Host unless in `fields`).
    fn raw(&self, request_line: &str, fields: &[u8], body: &[u8]) -> Vec<u8> {
        cat(&[
            request_line.as_bytes(),
            b"\r\n",
            fields,
            self.tag().as_bytes(),
            b"\r\n",
            body,
        ])
    }
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `data` as one chunk and the last chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    cat(&[
        format!("{:x}\r\n", data.len()).as_bytes(),
        data,
        b"\r\n0\r\n\r\n",
    ])
}

fn smuggled() -> Vec<u8> {
    SMUGGLED.as_bytes().to_vec()
}

/// A CL.TE body: empty when read as chunked, the smuggled request when read by length.
fn cl_te_body() -> Vec<u8> {
    cat(&[b"0\r\n\r\n", SMUGGLED.as_bytes()])
}

struct Gen {
    cases: Vec<Case>,
    family: &'static str,
}

impl Gen {
    fn add(
        &mut self,
        name: impl Into<String>,
        rule: &'static str,
        expect: Expect,
        build: impl FnOnce(&Ids) -> Vec<u8>,
    ) -> &mut Case {
        let id = self.cases.len();
        let ids = Ids { id };
        let bytes = build(&ids);
        self.cases.push(Case {
            id,
            family: self.family,
            name: name.into(),
            rule,
            bytes,
            expect,
            host: Some(CLIENT_HOST.to_string()),
            target: Some(ids.path()),
            must_close: false,
        });
        self.cases.last_mut().unwrap()
    }
}

/// A small deterministic generator (xorshift64*), fixed seed: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a Transfer-Encoding value reads under RFC 9112 §6.1 and §6.3.
#[derive(Clone, Copy)]
enum Coding {
    /// The codings end in a single chunked, and chunked is the only one.
    Chunked,
    /// Ends in a single chunked after a coding alb need not understand (SHOULD 501, §6.1).
    Unknown,
    /// Cannot frame the body: refused with one of these (empty: any 4xx/5xx).
    Invalid(&'static [u16]),
}

const R_TE: &str = "RFC 9112 §6.1, §6.3 rules 3-4: chunked must be the final coding, applied once; \
                    otherwise 400 and close";
const R_CLTE: &str = "RFC 9112 §6.1, §6.3 rule 3: with both, Transfer-Encoding wins, Content-Length \
                      is removed before forwarding, and the connection closes after the answer";
const R_CL: &str = "RFC 9112 §6.3 rule 5, RFC 9110 §8.6: Content-Length is 1*DIGIT; an invalid or \
                    conflicting one is an unrecoverable error (400, close); a repeated equal value \
                    may be merged into one";
const R_LOOK: &str = "framing look-alike: a gateway mapping `-` to `_` (RFC 3875 §4.1.18) reads it \
                      as a framing field; the forwarded request must not carry it";
const R_CONN: &str = "RFC 9110 §7.6.1 lists connection options, RFC 9112 §6.3: the forwarded body \
                      must still be framed; the target URI (Host) is fixed on receipt (§3.3)";
const R_TARGET: &str = "RFC 9112 §3.2: origin-form to an origin server; absolute-form's authority \
                        replaces Host (§3.2.2), without userinfo (RFC 9110 §4.2.4); \
                        authority-form only for CONNECT (§3.2.3)";
const R_HOST: &str = "RFC 9112 §3.2: 400 for HTTP/1.1 without Host, for more than one Host, for an \
                      invalid Host value (uri-host [\":\" port])";
const R_LINE: &str = "RFC 9112 §2.2 (bare CR invalid or replaced by SP; bare LF may end a line), \
                      §5.1 (400 for whitespace before the colon), §5.2 (obs-fold: 400 or SP), \
                      RFC 9110 §5.5 (NUL: reject or SP)";
const R_CHUNK: &str = "RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF; chunk \
                       framing that does not match has no reading (§2.2: 400 and close)";
const R_LINE_SHOULD: &str =
    "RFC 9112 §3: an invalid request-line SHOULD get 400 (§2.2: and a close)";
const R_CONTROL: &str = "a plain valid request";

/// Every case, in order.
pub fn all() -> Vec<Case> {
    let mut g = Gen {
        cases: Vec::new(),
        family: "control",
    };
    controls(&mut g);
    transfer_encoding(&mut g);
    content_length(&mut g);
    lookalikes(&mut g);
    connection(&mut g);
    targets(&mut g);
    hosts(&mut g);
    lines(&mut g);
    chunked_bodies(&mut g);
    misc(&mut g);
    g.cases
}

fn controls(g: &mut Gen) {
    g.family = "control";
    let s = smuggled();
    g.add("GET", R_CONTROL, Expect::Forward(vec![]), |i| i.get(b""));
    g.add(
        "GET with a query",
        R_CONTROL,
        Expect::Forward(vec![]),
        |i| {
            i.raw(
                &format!("GET {}?q=1 HTTP/1.1", i.path()),
                format!("Host: {CLIENT_HOST}\r\n").as_bytes(),
                b"",
            )
        },
    )
    .target(None);
    g.add(
        "POST with Content-Length",
        R_CONTROL,
        Expect::Forward(s.clone()),
        |i| i.post(format!("Content-Length: {}\r\n", s.len()).as_bytes(), &s),
    );
    g.add("POST chunked", R_CONTROL, Expect::Forward(s.clone()), |i| {
        i.post(b"Transfer-Encoding: chunked\r\n", &chunk(&s))
    });
    g.add(
        "GET with X-Forwarded-For from the client",
        R_CONTROL,
        Expect::Forward(vec![]),
        |i| i.get(b"X-Forwarded-For: 6.6.6.6\r\n"),
    );
}

fn transfer_encoding(g: &mut Gen) {
    g.family = "transfer-encoding";
    use Coding::*;
    let values: &[(&[u8], Coding)] = &[
        (b"chunked", Chunked),
        (b"Chunked", Chunked),
        (b"CHUNKED", Chunked),
        (b"cHuNkEd", Chunked),
        (b"  chunked", Chunked),
        (b"chunked  ", Chunked),
        (b"\tchunked\t", Chunked),
        (b", chunked", Chunked),
        (b"chunked,", Chunked),
        (b",,chunked", Chunked),
        (b" , chunked , ", Chunked),
        // NUL may be replaced by SP (RFC 9110 §5.5), which leaves `chunked`.
        (b"chunked\0", Chunked),
        (b"\0chunked", Chunked),
        (b"gzip, chunked", Unknown),
        (b"identity, chunked", Unknown),
        (b"x-custom,chunked", Unknown),
        (b"gzip,\tchunked", Unknown),
        (b"identity", Invalid(&[400])),
        (b"gzip", Invalid(&[400])),
        (b"chunked, identity", Invalid(&[400])),
        (b"chunked, gzip", Invalid(&[400])),
        (b"xchunked", Invalid(&[400])),
        (b"chunkedx", Invalid(&[400])),
        (b"chunk", Invalid(&[400])),
        (b"\"chunked\"", Invalid(&[400])),
        (b"\x0bchunked", Invalid(&[400])),
        (b"chunked\x0b", Invalid(&[400])),
        (b"\x0cchunked", Invalid(&[400])),
        (b"chunked\x0c", Invalid(&[400])),
        (b"ch unked", Invalid(&[400])),
        (b"", Invalid(&[400])),
        (b"\xa0chunked", Invalid(&[400])),
        (b"chunked;", Invalid(&[])),
        (b"chunked, chunked", Invalid(&[])),
    ];
    let s = smuggled();
    for &(value, coding) in values {
        let v = super::wire::show(value);
        let te = cat(&[b"Transfer-Encoding: ", value, b"\r\n"]);
        // Alone, the body chunked.
        let expect = match coding {
            Chunked | Unknown => Expect::RejectOr(s.clone()),
            Invalid(codes) => Expect::Reject(codes),
        };
        g.add(format!("TE {v}, chunked body"), R_TE, expect, |i| {
            i.post(&te, &chunk(&s))
        });
        // Alone, the body the bare smuggled request (what a reader ignoring TE takes as the next
        // request); only for values that cannot frame it.
        if let Invalid(codes) = coding {
            g.add(
                format!("TE {v}, raw body"),
                R_TE,
                Expect::Reject(codes),
                |i| i.post(&te, &s),
            );
        }
        // CL.TE: by length the smuggled request is content; by chunked it follows an empty body.
        let body = cl_te_body();
        let cl = format!("Content-Length: {}\r\n", body.len());
        let (expect, close) = match coding {
            Chunked | Unknown => (Expect::RejectOr(vec![]), true),
            Invalid(codes) => (Expect::Reject(codes), false),
        };
        let case = g.add(format!("CL.TE with TE {v}"), R_CLTE, expect, |i| {
            i.post(&cat(&[cl.as_bytes(), &te]), &body)
        });
        if close {
            case.must_close();
        }
        // TE.CL: by chunked the smuggled request is content; by length it follows 4 bytes.
        let (expect, close) = match coding {
            Chunked | Unknown => (Expect::RejectOr(s.clone()), true),
            Invalid(codes) => (Expect::Reject(codes), false),
        };
        let case = g.add(format!("TE.CL with TE {v}"), R_CLTE, expect, |i| {
            i.post(&cat(&[&te, b"Content-Length: 4\r\n"]), &chunk(&s))
        });
        if close {
            case.must_close();
        }
    }
    // The field name's case does not matter (RFC 9110 §5.1).
    for name in [
        "transfer-encoding",
        "TRANSFER-ENCODING",
        "Transfer-encoding",
        "tRaNsFeR-eNcOdInG",
    ] {
        let te = format!("{name}: chunked\r\n");
        g.add(
            format!("TE named {name}, chunked body"),
            R_TE,
            Expect::RejectOr(s.clone()),
            |i| i.post(te.as_bytes(), &chunk(&s)),
        );
        let body = cl_te_body();
        g.add(
            format!("CL.TE with TE named {name}"),
            R_CLTE,
            Expect::RejectOr(vec![]),
            |i| {
                i.post(
                    format!("Content-Length: {}\r\n{te}", body.len()).as_bytes(),
                    &body,
                )
            },
        )
        .must_close();
    }
    // Line shapes: obs-fold, whitespace before the colon, two field lines.
    let shapes: &[(&str, &[u8], Coding)] = &[
        (
            "obs-fold SP",
            b"Transfer-Encoding:\r\n chunked\r\n",
            Chunked,
        ),
        (
            "obs-fold HTAB",
            b"Transfer-Encoding:\r\n\tchunked\r\n",
            Chunked,
        ),
        (
            "obs-fold adding identity",
            b"Transfer-Encoding: chunked\r\n , identity\r\n",
            Invalid(&[400]),
        ),
        (
            "obs-fold adding chunked",
            b"Transfer-Encoding: identity\r\n , chunked\r\n",
            Unknown,
        ),
        (
            "SP before the colon",
            b"Transfer-Encoding : chunked\r\n",
            Invalid(&[400]),
        ),
        (
            "HTAB before the colon",
            b"Transfer-Encoding\t: chunked\r\n",
            Invalid(&[400]),
        ),
        (
            "two lines chunked, chunked",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            Invalid(&[]),
        ),
        (
            "two lines gzip, chunked",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Unknown,
        ),
        (
            "two lines chunked, identity",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            Invalid(&[400]),
        ),
        (
            "two lines chunked, empty",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
            Chunked,
        ),
    ];
    for &(shape, te, coding) in shapes {
        let expect = match coding {
            Chunked | Unknown => Expect::RejectOr(s.clone()),
            Invalid(codes) => Expect::Reject(codes),
        };
        g.add(format!("TE {shape}, chunked body"), R_TE, expect, |i| {
            i.post(te, &chunk(&s))
        });
        let body = cl_te_body();
        let (expect, close) = match coding {
            Chunked | Unknown => (Expect::RejectOr(vec![]), true),
            Invalid(codes) => (Expect::Reject(codes), false),
        };
        let case = g.add(format!("CL.TE with TE {shape}"), R_CLTE, expect, |i| {
            i.post(
                &cat(&[format!("Content-Length: {}\r\n", body.len()).as_bytes(), te]),
                &body,
            )
        });
        if close {
            case.must_close();
        }
    }
    // A whitespace-led first field line is invalid or ignored with what follows it (RFC 9112
    // §2.2): ignored, the message is framed by Content-Length alone.
    let body = cl_te_body();
    g.add(
        "whitespace-led TE line right after the request line, with Content-Length",
        "RFC 9112 §2.2: a whitespace-preceded line after the start-line is rejected or ignored",
        Expect::RejectOr(body.clone()),
        |i| {
            i.raw(
                &format!("POST {} HTTP/1.1", i.path()),
                format!(
                    " Transfer-Encoding: chunked\r\nHost: {CLIENT_HOST}\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
                &body,
            )
        },
    );
}

fn content_length(g: &mut Gen) {
    g.family = "content-length";
    let s = smuggled();
    let n = s.len();
    let ok = Expect::RejectOr(s.clone());
    let bad = Expect::Reject(&[400]);
    let values: Vec<(String, Vec<u8>, Expect)> = vec![
        ("N".into(), format!("{n}").into_bytes(), ok.clone()),
        ("0N".into(), format!("0{n}").into_bytes(), ok.clone()),
        ("0000N".into(), format!("0000{n}").into_bytes(), ok.clone()),
        (
            "SP N SP".into(),
            format!("  {n}  ").into_bytes(),
            ok.clone(),
        ),
        (
            "HTAB N HTAB".into(),
            format!("\t{n}\t").into_bytes(),
            ok.clone(),
        ),
        ("N NUL".into(), format!("{n}\0").into_bytes(), ok.clone()),
        ("N, N".into(), format!("{n}, {n}").into_bytes(), ok.clone()),
        ("N,N".into(), format!("{n},{n}").into_bytes(), ok.clone()),
        (
            "0N, N".into(),
            format!("0{n}, {n}").into_bytes(),
            ok.clone(),
        ),
        ("+N".into(), format!("+{n}").into_bytes(), bad.clone()),
        ("-N".into(), format!("-{n}").into_bytes(), bad.clone()),
        ("N N".into(), format!("{n} {n}").into_bytes(), bad.clone()),
        ("N, 0".into(), format!("{n}, 0").into_bytes(), bad.clone()),
        ("0, N".into(), format!("0, {n}").into_bytes(), bad.clone()),
        ("N,,".into(), format!("{n},,").into_bytes(), bad.clone()),
        (
            "hex 0xNN".into(),
            format!("0x{n:x}").into_bytes(),
            bad.clone(),
        ),
        ("N.0".into(), format!("{n}.0").into_bytes(), bad.clone()),
        ("Ne0".into(), format!("{n}e0").into_bytes(), bad.clone()),
        ("empty".into(), Vec::new(), bad.clone()),
        ("N;".into(), format!("{n};").into_bytes(), bad.clone()),
        (
            "quoted".into(),
            format!("\"{n}\"").into_bytes(),
            bad.clone(),
        ),
        ("N VT".into(), format!("{n}\x0b").into_bytes(), bad.clone()),
        ("FF N".into(), format!("\x0c{n}").into_bytes(), bad.clone()),
        (
            "N then text".into(),
            format!("{n} abc").into_bytes(),
            bad.clone(),
        ),
        ("text".into(), b"abc".to_vec(), bad.clone()),
        (
            "Arabic-Indic digits".into(),
            "\u{666}\u{666}".as_bytes().to_vec(),
            bad.clone(),
        ),
        (
            "N NBSP".into(),
            cat(&[format!("{n}").as_bytes(), b"\xa0"]),
            bad.clone(),
        ),
        (
            "2^64 + N".into(),
            (u128::from(u64::MAX) + 1 + n as u128)
                .to_string()
                .into_bytes(),
            Expect::RejectOrAny,
        ),
        (
            "2^128 + N".into(),
            format!("340282366920938463463374607431768211{}", 456 + n).into_bytes(),
            Expect::RejectOrAny,
        ),
        (
            "26 nines".into(),
            "9".repeat(26).into_bytes(),
            Expect::RejectOrAny,
        ),
        (
            "19 nines".into(),
            "9".repeat(19).into_bytes(),
            Expect::RejectOrAny,
        ),
    ];
    for (name, value, expect) in values {
        let cl = cat(&[b"Content-Length: ", &value, b"\r\n"]);
        g.add(format!("CL {name}"), R_CL, expect, |i| i.post(&cl, &s));
    }
    let lines: &[(&str, String, Expect)] = &[
        (
            "two equal lines",
            format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
            ok.clone(),
        ),
        (
            "two lines, same value spelt twice",
            format!("Content-Length: 0{n}\r\nContent-Length: {n}\r\n"),
            ok.clone(),
        ),
        (
            "two lines N then 0",
            format!("Content-Length: {n}\r\nContent-Length: 0\r\n"),
            bad.clone(),
        ),
        (
            "two lines 0 then N",
            format!("Content-Length: 0\r\nContent-Length: {n}\r\n"),
            bad.clone(),
        ),
        (
            "obs-fold",
            format!("Content-Length:\r\n {n}\r\n"),
            ok.clone(),
        ),
        (
            "SP before the colon",
            format!("Content-Length : {n}\r\n"),
            bad.clone(),
        ),
        (
            "HTAB before the colon",
            format!("Content-Length\t: {n}\r\n"),
            bad.clone(),
        ),
        (
            "lower-case name",
            format!("content-length: {n}\r\n"),
            ok.clone(),
        ),
    ];
    for (name, fields, expect) in lines {
        g.add(format!("CL {name}"), R_CL, expect.clone(), |i| {
            i.post(fields.as_bytes(), &s)
        });
    }
    for method in ["GET", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        g.add(
            format!("{method} with Content-Length content"),
            R_CL,
            ok.clone(),
            |i| i.req(method, format!("Content-Length: {n}\r\n").as_bytes(), &s),
        );
    }
    g.add("Content-Length: 0", R_CL, Expect::RejectOr(vec![]), |i| {
        i.post(b"Content-Length: 0\r\n", b"")
    });
}

fn lookalikes(g: &mut Gen) {
    g.family = "look-alike";
    let s = smuggled();
    for name in [
        "Transfer_Encoding",
        "transfer_encoding",
        "TRANSFER_ENCODING",
        "Transfer___Encoding",
        "Transfer_encoding",
        "_Transfer-Encoding",
    ] {
        let body = cl_te_body();
        g.add(
            format!("{name}: chunked with Content-Length"),
            R_LOOK,
            Expect::RejectOr(body.clone()),
            |i| {
                i.post(
                    format!("Content-Length: {}\r\n{name}: chunked\r\n", body.len()).as_bytes(),
                    &body,
                )
            },
        );
        g.add(
            format!("{name}: chunked alone, no content"),
            R_LOOK,
            Expect::RejectOr(vec![]),
            |i| i.post(format!("{name}: chunked\r\n").as_bytes(), b""),
        );
    }
    for name in [
        "Content_Length",
        "content_length",
        "CONTENT_LENGTH",
        "Content__Length",
        "Content-Length_",
        "Content_length",
    ] {
        g.add(
            format!("{name}: 4 with chunked"),
            R_LOOK,
            Expect::RejectOr(s.clone()),
            |i| {
                i.post(
                    format!("Transfer-Encoding: chunked\r\n{name}: 4\r\n").as_bytes(),
                    &chunk(&s),
                )
            },
        );
        g.add(
            format!("{name}: N alone, no content"),
            R_LOOK,
            Expect::RejectOr(vec![]),
            |i| i.post(format!("{name}: {}\r\n", s.len()).as_bytes(), b""),
        );
    }
}

fn connection(g: &mut Gen) {
    g.family = "connection";
    let s = smuggled();
    let n = s.len();
    for (method, option) in [
        ("POST", "content-length"),
        ("POST", "Content-Length"),
        ("POST", "keep-alive, content-length"),
        ("POST", "content-length, close"),
        ("GET", "content-length"),
        ("PUT", "content-length"),
    ] {
        g.add(
            format!("{method} with Connection: {option}"),
            R_CONN,
            Expect::RejectOr(s.clone()),
            |i| {
                i.req(
                    method,
                    format!("Connection: {option}\r\nContent-Length: {n}\r\n").as_bytes(),
                    &s,
                )
            },
        );
    }
    g.add(
        "Connection: content-length on a second Connection line",
        R_CONN,
        Expect::RejectOr(s.clone()),
        |i| {
            i.post(
                format!("Connection: keep-alive\r\nContent-Length: {n}\r\nConnection: content-length\r\n")
                    .as_bytes(),
                &s,
            )
        },
    );
    for option in ["transfer-encoding", "Transfer-Encoding, keep-alive"] {
        g.add(
            format!("chunked with Connection: {option}"),
            R_CONN,
            Expect::RejectOr(s.clone()),
            |i| {
                i.post(
                    format!("Connection: {option}\r\nTransfer-Encoding: chunked\r\n").as_bytes(),
                    &chunk(&s),
                )
            },
        );
    }
    let body = cl_te_body();
    g.add(
        "CL.TE with Connection: transfer-encoding",
        R_CLTE,
        Expect::RejectOr(vec![]),
        |i| {
            i.post(
                format!(
                    "Connection: transfer-encoding\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    body.len()
                )
                .as_bytes(),
                &body,
            )
        },
    )
    .must_close();
    g.add(
        "TE.CL with Connection: content-length",
        R_CLTE,
        Expect::RejectOr(s.clone()),
        |i| {
            i.post(
                b"Connection: content-length\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &chunk(&s),
            )
        },
    )
    .must_close();
    for option in ["host", "Host, keep-alive"] {
        g.add(
            format!("Connection: {option}"),
            R_CONN,
            Expect::RejectOr(vec![]),
            |i| i.get(format!("Connection: {option}\r\n").as_bytes()),
        );
    }
    g.add(
        "Connection: x-forwarded-for",
        R_CONN,
        Expect::RejectOr(vec![]),
        |i| i.get(b"X-Forwarded-For: 6.6.6.6\r\nConnection: x-forwarded-for\r\n"),
    );
    g.add(
        "Connection: x-forwarded-for, x-forwarded-host, x-forwarded-proto",
        R_CONN,
        Expect::RejectOr(vec![]),
        |i| {
            i.get(
                b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
                  X-Forwarded-Proto: https\r\n\
                  Connection: x-forwarded-for, x-forwarded-host, x-forwarded-proto\r\n",
            )
        },
    );
    g.add(
        "Connection: upgrade with Upgrade and content",
        R_CONN,
        Expect::RejectOr(s.clone()),
        |i| {
            i.post(
                format!("Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: {n}\r\n")
                    .as_bytes(),
                &s,
            )
        },
    );
}

fn targets(g: &mut Gen) {
    g.family = "target";
    let host = format!("Host: {CLIENT_HOST}\r\n");
    let host = host.as_bytes();
    let s = smuggled();
    let n = s.len();
    let any = Expect::RejectOr(vec![]);
    g.add(
        "path starting with //evil.example",
        R_TARGET,
        any.clone(),
        |i| {
            i.raw(
                &format!("GET //evil.example{} HTTP/1.1", i.path()),
                host,
                b"",
            )
        },
    )
    .target(None);
    g.add(
        "fragment in the target",
        R_TARGET,
        Expect::RejectOrAny,
        |i| i.raw(&format!("GET {}#frag HTTP/1.1", i.path()), host, b""),
    )
    .target(None);
    g.add("absolute URI in the query", R_TARGET, any.clone(), |i| {
        i.raw(
            &format!("GET {}?u=http://evil.example/ HTTP/1.1", i.path()),
            host,
            b"",
        )
    })
    .target(None);
    // Absolute-form: its authority, without userinfo, is the Host.
    let absolute: &[(&str, &str, &str)] = &[
        ("same host", "http://client.example", "client.example"),
        ("another host", "http://evil.example", "evil.example"),
        ("userinfo", "http://a@evil.example", "evil.example"),
        (
            "userinfo and port",
            "http://user:pw@evil.example:8080",
            "evil.example:8080",
        ),
        (
            "the client's host as userinfo",
            "http://client.example@evil.example",
            "evil.example",
        ),
        (
            "another host as userinfo",
            "http://evil.example@client.example",
            "client.example",
        ),
        (
            "upper-case scheme and host",
            "HTTP://EVIL.EXAMPLE",
            "evil.example",
        ),
        ("default port", "http://evil.example:80", "evil.example"),
        ("IPv6 literal", "http://[::1]:8080", "[::1]:8080"),
    ];
    for &(name, prefix, authority) in absolute {
        g.add(
            format!("absolute-form, {name}"),
            R_TARGET,
            any.clone(),
            |i| i.raw(&format!("GET {prefix}{} HTTP/1.1", i.path()), host, b""),
        )
        .host(Some(authority));
    }
    g.add("absolute-form without a path", R_TARGET, any.clone(), |i| {
        i.raw("GET http://evil.example HTTP/1.1", host, b"")
    })
    .host(Some("evil.example"))
    .target(Some("/"));
    g.add("absolute-form https", R_TARGET, Expect::RejectOrAny, |i| {
        i.raw(
            &format!("GET https://evil.example{} HTTP/1.1", i.path()),
            host,
            b"",
        )
    })
    .host(Some("evil.example"));
    g.add(
        "absolute-form with content",
        R_TARGET,
        Expect::RejectOr(s.clone()),
        |i| {
            i.raw(
                &format!("POST http://a@evil.example{} HTTP/1.1", i.path()),
                format!("Host: {CLIENT_HOST}\r\nContent-Length: {n}\r\n").as_bytes(),
                &s,
            )
        },
    )
    .host(Some("evil.example"));
    g.add(
        "absolute-form with an empty host",
        "RFC 9110 §4.2.1: an http URI with an empty host MUST be rejected",
        Expect::Reject(&[]),
        |i| i.raw(&format!("GET http://{} HTTP/1.1", i.path()), host, b""),
    );
    g.add(
        "absolute-form with a non-numeric port",
        "RFC 3986 §3.2.3 port = *DIGIT: not a URI (RFC 9112 §3 SHOULD 400), and the Host made \
         from it would be invalid (RFC 9112 §3.2)",
        Expect::Reject(&[]),
        |i| {
            i.raw(
                &format!("GET http://evil.example:x{} HTTP/1.1", i.path()),
                host,
                b"",
            )
        },
    )
    .host(None);
    for (name, prefix) in [
        ("", "http://evil.example"),
        (" with userinfo", "http://a@evil.example"),
    ] {
        g.add(
            format!("absolute-form{name} without Host"),
            R_HOST,
            Expect::Reject(&[400]),
            |i| i.raw(&format!("GET {prefix}{} HTTP/1.1", i.path()), b"", b""),
        )
        .host(Some("evil.example"));
    }
    // Authority-form is for CONNECT only.
    for (method, target) in [
        ("GET", "evil.example:80"),
        ("GET", "evil.example:443"),
        ("GET", "a@evil.example:80"),
        ("GET", "127.0.0.1:80"),
        ("OPTIONS", "evil.example:80"),
        ("DELETE", "evil.example:80"),
        ("HEAD", "evil.example:80"),
    ] {
        g.add(
            format!("authority-form {method} {target}"),
            R_TARGET,
            Expect::Reject(&[400]),
            |i| i.raw(&format!("{method} {target} HTTP/1.1"), host, b""),
        );
    }
    g.add(
        "authority-form POST with content",
        R_TARGET,
        Expect::Reject(&[400]),
        |i| {
            i.raw(
                "POST evil.example:80 HTTP/1.1",
                format!("Host: {CLIENT_HOST}\r\nContent-Length: {n}\r\n").as_bytes(),
                &s,
            )
        },
    );
    g.add(
        "a bare host name as the target",
        R_TARGET,
        Expect::Reject(&[]),
        |i| i.raw("GET evil.example HTTP/1.1", host, b""),
    );
    g.add(
        "CONNECT",
        "RFC 9110 §9.3.6: an origin server MAY accept CONNECT (most refuse it)",
        Expect::RejectOrAny,
        |i| {
            i.raw(
                "CONNECT evil.example:443 HTTP/1.1",
                b"Host: evil.example:443\r\n",
                b"",
            )
        },
    )
    .host(Some("evil.example:443"))
    .target(Some("evil.example:443"));
    // Asterisk-form is for OPTIONS only.
    g.add("OPTIONS *", R_TARGET, any.clone(), |i| {
        i.raw("OPTIONS * HTTP/1.1", host, b"")
    })
    .target(Some("*"));
    g.add(
        "OPTIONS absolute-form without a path",
        "RFC 9112 §3.2.4: the last proxy MUST send `*` for OPTIONS http://host",
        any.clone(),
        |i| i.raw("OPTIONS http://evil.example HTTP/1.1", host, b""),
    )
    .host(Some("evil.example"))
    .target(Some("*"));
    for method in ["GET", "DELETE"] {
        g.add(
            format!("{method} *"),
            "RFC 9112 §3.2.4: asterisk-form only for OPTIONS",
            Expect::RejectOrAny,
            |i| i.raw(&format!("{method} * HTTP/1.1"), host, b""),
        )
        .target(None);
    }
    g.add("empty target", R_LINE_SHOULD, Expect::Reject(&[]), |i| {
        i.raw("GET  HTTP/1.1", host, b"")
    });
    g.add("no target", R_LINE_SHOULD, Expect::Reject(&[]), |i| {
        i.raw("GET HTTP/1.1", host, b"")
    });
    g.add(
        "SP inside the target",
        R_LINE_SHOULD,
        Expect::Reject(&[]),
        |i| i.raw(&format!("GET {} x HTTP/1.1", i.path()), host, b""),
    );
    g.add(
        "obs-text in the target",
        R_TARGET,
        Expect::RejectOrAny,
        |i| {
            cat(&[
                format!("GET {}", i.path()).as_bytes(),
                b"\xff HTTP/1.1\r\n",
                host,
                i.tag().as_bytes(),
                b"\r\n",
            ])
        },
    )
    .target(None);
}

fn hosts(g: &mut Gen) {
    g.family = "host";
    let s = smuggled();
    let n = s.len();
    g.add(
        "HTTP/1.1 without Host",
        R_HOST,
        Expect::Reject(&[400]),
        |i| i.raw(&format!("GET {} HTTP/1.1", i.path()), b"", b""),
    );
    g.add(
        "HTTP/1.1 POST without Host",
        R_HOST,
        Expect::Reject(&[400]),
        |i| {
            i.raw(
                &format!("POST {} HTTP/1.1", i.path()),
                format!("Content-Length: {n}\r\n").as_bytes(),
                &s,
            )
        },
    );
    g.add(
        "HTTP/1.0 without Host",
        "RFC 9112 §3.3: an HTTP/1.0 request without Host names the server's default",
        Expect::RejectOr(vec![]),
        |i| i.raw(&format!("GET {} HTTP/1.0", i.path()), b"", b""),
    )
    .host(None);
    let bad: &[(&str, &[u8])] = &[
        (
            "two equal Host lines",
            b"Host: client.example\r\nHost: client.example\r\n",
        ),
        (
            "two Host lines",
            b"Host: client.example\r\nHost: evil.example\r\n",
        ),
        (
            "two Host lines, other case",
            b"Host: client.example\r\nhost: evil.example\r\n",
        ),
        ("a Host list", b"Host: client.example, evil.example\r\n"),
        ("Host with userinfo", b"Host: a@evil.example\r\n"),
        (
            "Host with the client's host as userinfo",
            b"Host: client.example@evil.example\r\n",
        ),
        ("Host with SP", b"Host: client.example evil.example\r\n"),
        ("Host with HTAB", b"Host: client.example\tevil.example\r\n"),
        ("Host with a path", b"Host: client.example/c\r\n"),
        ("Host with a query", b"Host: client.example?x\r\n"),
        ("Host with a fragment", b"Host: client.example#x\r\n"),
        (
            "Host with a non-numeric port",
            b"Host: client.example:x\r\n",
        ),
        ("Host with two ports", b"Host: client.example:80:80\r\n"),
        (
            "Host obs-folded onto two words",
            b"Host: client.example\r\n evil.example\r\n",
        ),
    ];
    for &(name, field) in bad {
        g.add(name, R_HOST, Expect::Reject(&[400]), |i| {
            i.raw(&format!("GET {} HTTP/1.1", i.path()), field, b"")
        });
    }
    g.add("Host with NUL", R_HOST, Expect::Reject(&[]), |i| {
        i.raw(
            &format!("GET {} HTTP/1.1", i.path()),
            b"Host: client.example\0evil.example\r\n",
            b"",
        )
    });
    let good: &[(&str, &[u8], &str)] = &[
        (
            "Host with a port",
            b"Host: client.example:8080\r\n",
            "client.example:8080",
        ),
        (
            "upper-case Host",
            b"Host: CLIENT.EXAMPLE\r\n",
            "client.example",
        ),
        ("Host IPv6 literal", b"Host: [::1]:8080\r\n", "[::1]:8080"),
        ("Host IPv4", b"Host: 127.0.0.1\r\n", "127.0.0.1"),
        (
            "Host with an empty port",
            b"Host: client.example:\r\n",
            "client.example",
        ),
        (
            "Host with OWS",
            b"Host: \t client.example \t\r\n",
            "client.example",
        ),
        (
            "Host with an underscore",
            b"Host: client_example\r\n",
            "client_example",
        ),
        (
            "Host obs-folded",
            b"Host:\r\n client.example\r\n",
            "client.example",
        ),
    ];
    for &(name, field, expected) in good {
        g.add(name, R_HOST, Expect::RejectOr(vec![]), |i| {
            i.raw(&format!("GET {} HTTP/1.1", i.path()), field, b"")
        })
        .host(Some(expected));
    }
    g.add("empty Host", R_HOST, Expect::RejectOrAny, |i| {
        i.raw(&format!("GET {} HTTP/1.1", i.path()), b"Host:\r\n", b"")
    })
    .host(Some(""));
}

fn lines(g: &mut Gen) {
    g.family = "line";
    let host = format!("Host: {CLIENT_HOST}\r\n");
    let host = host.as_bytes();
    let ok = Expect::RejectOr(vec![]);
    let fields: &[(&str, &[u8], Expect)] = &[
        ("bare CR in a value", b"X-A: a\rb\r\n", ok.clone()),
        ("bare CR ending a value", b"X-A: a\r\r\n", ok.clone()),
        ("bare CR in a name", b"X\r-A: a\r\n", Expect::Reject(&[])),
        (
            "bare LF ending a field line",
            b"X-A: a\nX-B: b\r\n",
            ok.clone(),
        ),
        (
            "bare LF then whitespace (obs-fold)",
            b"X-A: a\n b\r\n",
            ok.clone(),
        ),
        ("NUL in a value", b"X-A: a\0b\r\n", ok.clone()),
        ("NUL leading a value", b"X-A: \0a\r\n", ok.clone()),
        ("NUL in a name", b"X-\0A: a\r\n", Expect::Reject(&[])),
        (
            "SP before the colon",
            b"X-A : a\r\n",
            Expect::Reject(&[400]),
        ),
        (
            "HTAB before the colon",
            b"X-A\t: a\r\n",
            Expect::Reject(&[400]),
        ),
        (
            "VT before the colon",
            b"X-A\x0b: a\r\n",
            Expect::Reject(&[]),
        ),
        ("obs-fold with SP", b"X-A: a\r\n b\r\n", ok.clone()),
        ("obs-fold with HTAB", b"X-A: a\r\n\tb\r\n", ok.clone()),
        ("obs-fold twice", b"X-A: a\r\n b\r\n  c\r\n", ok.clone()),
        ("VT in a value", b"X-A: a\x0bb\r\n", ok.clone()),
        ("FF in a value", b"X-A: a\x0cb\r\n", ok.clone()),
        ("SOH in a value", b"X-A: a\x01b\r\n", ok.clone()),
        ("DEL in a value", b"X-A: a\x7fb\r\n", ok.clone()),
        ("no colon", b"X-A a\r\n", Expect::Reject(&[])),
        ("empty name", b": a\r\n", Expect::Reject(&[])),
        ("@ in a name", b"X@A: a\r\n", Expect::Reject(&[])),
    ];
    for (name, field, expect) in fields {
        g.add(*name, R_LINE, expect.clone(), |i| i.get(field));
    }
    g.add("bare CR in the request line", R_LINE, ok.clone(), |i| {
        cat(&[
            format!("GET {}\rHTTP/1.1\r\n", i.path()).as_bytes(),
            host,
            i.tag().as_bytes(),
            b"\r\n",
        ])
    });
    g.add("bare CR in the target", R_LINE, Expect::Reject(&[]), |i| {
        cat(&[
            format!("GET {}\r/x HTTP/1.1\r\n", i.path()).as_bytes(),
            host,
            i.tag().as_bytes(),
            b"\r\n",
        ])
    });
    g.add("bare LF ending the request line", R_LINE, ok.clone(), |i| {
        cat(&[
            format!("GET {} HTTP/1.1\n", i.path()).as_bytes(),
            host,
            i.tag().as_bytes(),
            b"\r\n",
        ])
    });
    g.add("bare LF ending every line", R_LINE, ok.clone(), |i| {
        format!(
            "GET {} HTTP/1.1\nHost: {CLIENT_HOST}\nX-Case: {}\n\n",
            i.path(),
            i.id
        )
        .into_bytes()
    });
    g.add("bare LF as the blank line", R_LINE, ok.clone(), |i| {
        cat(&[
            format!("GET {} HTTP/1.1\r\n", i.path()).as_bytes(),
            host,
            i.tag().as_bytes(),
            b"\n",
        ])
    });
    g.add("NUL in the target", R_LINE, Expect::RejectOrAny, |i| {
        cat(&[
            format!("GET {}\0x HTTP/1.1\r\n", i.path()).as_bytes(),
            host,
            i.tag().as_bytes(),
            b"\r\n",
        ])
    })
    .target(None);
    for (name, lead) in [("SP", " "), ("HTAB", "\t")] {
        g.add(
            format!("{name}-led line right after the request line"),
            "RFC 9112 §2.2: a whitespace-preceded line after the start-line is rejected or ignored",
            ok.clone(),
            |i| {
                i.raw(
                    &format!("GET {} HTTP/1.1", i.path()),
                    format!("{lead}X-A: a\r\nHost: {CLIENT_HOST}\r\n").as_bytes(),
                    b"",
                )
            },
        );
    }
    for (name, lead) in [("CRLF", "\r\n"), ("two CRLF", "\r\n\r\n"), ("LF", "\n")] {
        g.add(
            format!("{name} before the request line"),
            "RFC 9112 §2.2: a server SHOULD ignore empty lines before the request line",
            ok.clone(),
            |i| cat(&[lead.as_bytes(), &i.get(b"")]),
        );
    }
    for (name, line) in [
        ("version with a trailing SP", "GET {} HTTP/1.1 "),
        ("SP before the version", "GET {}  HTTP/1.1"),
        ("leading SP", " GET {} HTTP/1.1"),
        ("HTAB as a separator", "GET\t{} HTTP/1.1"),
    ] {
        g.add(
            format!("request line: {name}"),
            "RFC 9112 §3: a recipient MAY split the request line on any whitespace",
            ok.clone(),
            |i| i.raw(&line.replace("{}", &i.path()), host, b""),
        );
    }
    for (name, line) in [
        ("lower-case version", "GET {} http/1.1"),
        ("version HTTP/1.10", "GET {} HTTP/1.10"),
        ("version HTTP/01.1", "GET {} HTTP/01.1"),
        ("method with @", "G@T {} HTTP/1.1"),
    ] {
        g.add(
            format!("request line: {name}"),
            "RFC 9112 §3: an invalid request-line SHOULD get 400",
            Expect::Reject(&[]),
            |i| i.raw(&line.replace("{}", &i.path()), host, b""),
        );
    }
}

fn chunked_bodies(g: &mut Gen) {
    g.family = "chunked";
    let te = b"Transfer-Encoding: chunked\r\n";
    let s = smuggled();
    let valid: &[(&str, &[u8], &[u8])] = &[
        (
            "two chunks",
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
        ),
        (
            "upper-case hex",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        (
            "lower-case hex",
            b"a\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
        (
            "extension with a value",
            b"5;a=b\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "extension without a value",
            b"5;a\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "extension with a quoted value",
            b"5;a=\"q;x\"\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "extension with a quoted-pair",
            b"5;a=\"\\\"\"\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "SP before the extension",
            b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "HTAB before the extension",
            b"5\t;a=b\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        ("BWS around =", b"5 ; a = b\r\nhello\r\n0\r\n\r\n", b"hello"),
        (
            "two extensions",
            b"5;a=b;c=d\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "extension on the last chunk",
            b"5\r\nhello\r\n0;x=y\r\n\r\n",
            b"hello",
        ),
        ("a trailer", b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", b"hello"),
        (
            "Content-Length as a trailer",
            b"5\r\nhello\r\n0\r\nContent-Length: 66\r\n\r\n",
            b"hello",
        ),
        (
            "Transfer-Encoding as a trailer",
            b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\nX-T: 2\r\n\r\n",
            b"hello",
        ),
    ];
    for &(name, body, content) in valid {
        g.add(name, R_CHUNK, Expect::RejectOr(content.to_vec()), |i| {
            i.post(te, body)
        });
    }
    let inner = cl_te_body();
    g.add(
        "a last chunk and a request inside chunk data",
        R_CHUNK,
        Expect::RejectOr(inner.clone()),
        |i| i.post(te, &chunk(&inner)),
    );
    // Seeded: the smuggled request cut into random chunks with random extensions.
    let mut rng = Rng(0x5eed_d1ff_5eed_d1ff);
    for k in 0..12 {
        let mut body = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let len = (1 + rng.below(24) as usize).min(s.len() - at);
            let digits = format!("{len:x}");
            let size = match rng.below(3) {
                0 => digits.to_uppercase(),
                1 => format!("{}{digits}", "0".repeat(rng.below(4) as usize)),
                _ => digits,
            };
            let ext = match rng.below(4) {
                0 => ";x=1".to_string(),
                1 => format!(" ;n{}=\"v;{}\"", rng.below(9), rng.below(9)),
                _ => String::new(),
            };
            body.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
            body.extend_from_slice(&s[at..at + len]);
            body.extend_from_slice(b"\r\n");
            at += len;
        }
        body.extend_from_slice(b"0\r\n\r\n");
        g.add(
            format!("seeded chunking #{k}"),
            R_CHUNK,
            Expect::RejectOr(s.clone()),
            |i| i.post(te, &body),
        );
    }
    // Not the ABNF, but readable one way only: refusing and reading are both fine.
    let lenient: &[(&str, &[u8])] = &[
        ("SP after the size", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("HTAB after the size", b"5\t\r\nhello\r\n0\r\n\r\n"),
        (
            "obs-fold in a trailer",
            b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n",
        ),
        (
            "bare LF ending a trailer",
            b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
        ),
        // A bare CR may be replaced by SP (§2.2), leaving whitespace or an extension.
        ("bare CR after the size", b"5\r\r\nhello\r\n0\r\n\r\n"),
        ("bare CR in an extension", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        // A bare LF may end the field section (§2.2), trailers included.
        ("bare LF as the final line", b"5\r\nhello\r\n0\r\n\n"),
        // Extension and trailer bytes a recipient ignores (§7.1.1 MUST ignore unrecognised
        // extensions; trailers are not framing): outside the ABNF, but they move no boundary.
        ("empty extension name", b"5;\r\nhello\r\n0\r\n\r\n"),
        ("empty extension value", b"5;a=\r\nhello\r\n0\r\n\r\n"),
        (
            "unterminated quoted extension",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
        ),
        ("SP inside an extension", b"5;a b\r\nhello\r\n0\r\n\r\n"),
        (
            "trailer without a colon",
            b"5\r\nhello\r\n0\r\nX-T 1\r\n\r\n",
        ),
    ];
    for &(name, body) in lenient {
        g.add(name, R_CHUNK, Expect::RejectOr(b"hello".to_vec()), |i| {
            i.post(te, body)
        });
    }
    let invalid: &[(&str, &[u8])] = &[
        ("size zz", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("size -5", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("size +5", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("size 5 5", b"5 5\r\nhello\r\n0\r\n\r\n"),
        ("SP before the size", b" 5\r\nhello\r\n0\r\n\r\n"),
        (
            "size of 18 hex digits",
            b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("size 2^64", b"10000000000000000\r\nhello\r\n0\r\n\r\n"),
        (
            "size 2^64 + 5 (wraps to 5)",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "size 2^64 + 5 after a good chunk",
            b"2\r\nhe\r\n10000000000000003\r\nllo\r\n0\r\n\r\n",
        ),
        ("bare LF after the size", b"5\nhello\r\n0\r\n\r\n"),
        ("NUL after the size", b"5\0\r\nhello\r\n0\r\n\r\n"),
        ("data longer than the size", b"5\r\nhelloX\r\n0\r\n\r\n"),
        ("data shorter than the size", b"5\r\nhell\r\n0\r\n\r\n"),
        ("bare LF after the data", b"5\r\nhello\n0\r\n\r\n"),
        ("no CRLF after the data", b"5\r\nhello0\r\n\r\n"),
        ("bare LF in an extension", b"5;a\nhello\r\n0\r\n\r\n"),
        ("empty size line", b"\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after the last chunk", b"5\r\nhello\r\n0\n\r\n"),
    ];
    for &(name, body) in invalid {
        g.add(name, R_CHUNK, Expect::Reject(&[]), |i| {
            i.post(te, &cat(&[body, SMUGGLED.as_bytes()]))
        });
    }
}

fn misc(g: &mut Gen) {
    g.family = "misc";
    let s = smuggled();
    let n = s.len();
    g.add(
        "HTTP/1.0 with Transfer-Encoding",
        "RFC 9112 §6.1: TE in HTTP/1.0 is faulty framing; close after",
        Expect::RejectOrAny,
        |i| {
            i.raw(
                &format!("POST {} HTTP/1.0", i.path()),
                format!("Host: {CLIENT_HOST}\r\nTransfer-Encoding: chunked\r\n").as_bytes(),
                &chunk(&s),
            )
        },
    )
    .must_close();
    let body = cl_te_body();
    g.add(
        "HTTP/1.0 CL.TE",
        "RFC 9112 §6.1: TE in HTTP/1.0 is faulty framing; close after",
        Expect::RejectOrAny,
        |i| {
            i.raw(
                &format!("POST {} HTTP/1.0", i.path()),
                format!(
                    "Host: {CLIENT_HOST}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    body.len()
                )
                .as_bytes(),
                &body,
            )
        },
    )
    .must_close();
    g.add(
        "HTTP/1.0 keep-alive with content",
        R_CL,
        Expect::RejectOr(s.clone()),
        |i| {
            i.raw(
                &format!("POST {} HTTP/1.0", i.path()),
                format!("Host: {CLIENT_HOST}\r\nConnection: keep-alive\r\nContent-Length: {n}\r\n")
                    .as_bytes(),
                &s,
            )
        },
    );
    g.add(
        "HTTP/1.0 with Host",
        R_HOST,
        Expect::RejectOr(vec![]),
        |i| {
            i.raw(
                &format!("GET {} HTTP/1.0", i.path()),
                format!("Host: {CLIENT_HOST}\r\n").as_bytes(),
                b"",
            )
        },
    );
    g.add(
        "Expect: 100-continue, content sent at once",
        R_CL,
        Expect::RejectOr(s.clone()),
        |i| {
            i.post(
                format!("Expect: 100-continue\r\nContent-Length: {n}\r\n").as_bytes(),
                &s,
            )
        },
    );
    g.add(
        "Expect: 100-continue, chunked",
        R_CHUNK,
        Expect::RejectOr(s.clone()),
        |i| {
            i.post(
                b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
                &chunk(&s),
            )
        },
    );
}
