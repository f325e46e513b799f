//! Differential request-smuggling test: a few hundred hostile requests generated from the grammar
//! of RFC 9112 and RFC 9110 go through alb to a backend that reads them with a parser of its own
//! (`differential/wire.rs`, strict RFC 9112 framing, nothing shared with alb or httparse) and
//! records every byte. After each one, a victim request on a new client connection travels the
//! same pooled upstream connection (one backend, `backend_max_connections = 1`); the backend closes
//! that connection after the victim, so each case starts afresh.
//!
//! Each case says what the RFCs allow ([`cases::Expect`]): refusal where they say MUST (and where
//! a message matches no grammar and has no reading at all, RFC 9112 §2.2), otherwise refusal or
//! forwarding with a given content. Bytes after a message's framed end appear only where the RFC
//! makes the server refuse it or close after it, so a `/smuggled` request at the backend is never
//! a pipelined request a correct proxy could have passed on (checked by the last test here).
//!
//! The oracles come from the RFCs, not from alb's code:
//! 1. every request the backend records carries alb's own `X-Forwarded-For` (ending in this
//!    client's 127.0.0.1) and none is for `/smuggled`: anything else was smuggled past alb;
//! 2. what alb sends has one reading: at most one framing field, content exactly the client's
//!    content as the RFC frames it, and no framing look-alike (`Content_Length`: not an RFC rule,
//!    but CGI-style gateways map `-` to `_`, RFC 3875 §4.1.18, and read it as the real field);
//! 3. one Host, the target URI's authority as the client gave it (its Host, or the absolute-form
//!    authority without userinfo), never one an authority-form target supplied; an origin-form
//!    target (or `*` for OPTIONS), the client's path and query;
//! 4. the victim gets its own `200`, the answer to the request the backend recorded for it;
//! 5. a request the RFC says must be refused is refused (the status it names, else any 4xx/5xx)
//!    and the connection closed, with nothing forwarded; whatever alb answers itself is a 4xx/5xx
//!    and closes the connection; where the RFC makes the server close after answering (both
//!    Content-Length and Transfer-Encoding), it closes.
//!
//! Every case that breaks an oracle is listed in the failure message, with its bytes and what the
//! backend saw. Every read has a deadline; the whole run stays well under a minute.

mod backend;
mod cases;
pub mod wire;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::support::{TempDir, TestBalancer, wait_until};
use backend::{HEALTH_PATH, Recorded, RecordingBackend};
use cases::{Case, Expect};
use wire::{Parsed, show};

/// How long a hostile request waits for an answer.
const HOSTILE_DEADLINE: Duration = Duration::from_millis(1500);
/// After an answer that should end the connection, how long to wait for it to close.
const CLOSE_GRACE: Duration = Duration::from_millis(400);
const VICTIM_DEADLINE: Duration = Duration::from_secs(3);
/// Past this, the remaining cases are skipped (and that is a failure).
const BUDGET: Duration = Duration::from_secs(45);
/// Longest wait for the binary to start or stop.
const PATIENCE: Duration = Duration::from_secs(8);

fn config(backend: &RecordingBackend) -> String {
    format!(
        "backends = [\"{}\"]\naccess_log = false\n\
         [health_check]\ninterval = \"60s\"\npath = \"{HEALTH_PATH}\"\n\
         [limits]\nbackend_max_connections = 1\nbackend_queue_timeout = \"2s\"\n\
         [timeouts]\nresponse = \"2s\"\nclient_header = \"2s\"\nclient_body_idle = \"2s\"\n\
         drain = \"2s\"\n\
         [passive_health]\nenabled = false\n",
        backend.url()
    )
}

#[tokio::test]
async fn hostile_requests_through_alb_in_process_smuggle_nothing() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = RecordingBackend::start().await;
    let lb = TestBalancer::start(&config(&backend)).await;
    let cases = cases::all();
    let report = run(lb.addr, &backend, &cases).await;
    lb.stop().await;
    backend.stop().await;
    assert!(report.failed == 0, "in-process alb:\n{}", report.text);
}

#[tokio::test]
async fn hostile_requests_through_the_alb_binary_smuggle_nothing() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = RecordingBackend::start().await;
    let dir = TempDir::new("differential");
    let path = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}[admin]\nlisten = \"off\"\n",
            config(&backend)
        ),
    );
    let alb = Binary::start(&path).await;
    // Every fourth case, and the controls.
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| c.id % 4 == 0 || c.family == "control")
        .collect();
    let report = run(alb.addr, &backend, &cases).await;
    let log = alb.stop().await;
    backend.stop().await;
    assert!(
        report.failed == 0,
        "alb binary:\n{}\n--- alb's stderr ---\n{log}",
        report.text
    );
}

/// The generated cases say what they claim: the test's own parser reads every request the RFC
/// lets through with the content the case expects and nothing after it (no pipelined second
/// request a correct proxy would rightly forward), and refuses every framing the RFC refuses.
#[test]
fn generated_cases_are_consistent_with_the_tests_own_parser() {
    const FRAMING: &[&str] = &["transfer-encoding", "content-length", "chunked"];
    let cases = cases::all();
    // The README's count.
    assert_eq!(cases.len(), 408, "cases generated");
    let mut wrong = Vec::new();
    for case in &cases {
        let tag = format!("X-Case: {}", case.id);
        assert!(
            wire::contains(&case.bytes, format!("{tag}\r\n").as_bytes())
                || wire::contains(&case.bytes, format!("{tag}\n").as_bytes()),
            "{} has no tag",
            case.name
        );
        let parsed = wire::parse_request(&case.bytes);
        let problem = match (&case.expect, &parsed) {
            (Expect::Reject(_), Parsed::Complete(..)) if FRAMING.contains(&case.family) => {
                Some("must be refused, yet reads as one request".to_string())
            }
            (Expect::Forward(body) | Expect::RejectOr(body), Parsed::Complete(r, _))
                if r.body != *body =>
            {
                Some(format!(
                    "content {} instead of {}",
                    show(&r.body),
                    show(body)
                ))
            }
            (Expect::Forward(_), Parsed::Desync(why)) => Some(format!("control refused: {why}")),
            (_, Parsed::Complete(_, used)) if *used != case.bytes.len() && !case.must_close => {
                Some(format!(
                    "{} bytes after the request",
                    case.bytes.len() - used
                ))
            }
            (Expect::Forward(_) | Expect::RejectOr(_) | Expect::Reject(_), Parsed::Incomplete) => {
                Some("incomplete: would wait for more".to_string())
            }
            _ => None,
        };
        if let Some(problem) = problem {
            wrong.push(format!(
                "#{} {}: {problem}: {}",
                case.id,
                case.name,
                show(&case.bytes)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Running the cases
// ---------------------------------------------------------------------------------------------

struct Report {
    failed: usize,
    text: String,
}

async fn run(alb: SocketAddr, backend: &RecordingBackend, cases: &[Case]) -> Report {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut refused_valid = Vec::new();
    let mut unanswered = Vec::new();
    let mut ran = 0;
    let mut by_oracle = std::collections::BTreeMap::new();
    let mut by_family = std::collections::BTreeMap::new();
    // alb probes its backend at start; a case cutting the probe's connection would have the
    // backend marked DOWN, and the cases after it answered 503 (seen in CI).
    wait_until(PATIENCE, || backend.probed())
        .await
        .expect("alb's first health probe answered");
    for case in cases {
        if started.elapsed() > BUDGET {
            break;
        }
        ran += 1;
        // Each case on a fresh upstream connection: what one case leaves on the pooled connection
        // is that case's finding, not the next one's.
        backend.close_connections();
        tokio::time::sleep(Duration::from_millis(10)).await;
        backend.set_case(case.id);
        let wait_close =
            |a: &Answer| !a.by_backend() || case.must_close || a.closes() || case.is_http10();
        let hostile = exchange(
            alb,
            &case.bytes,
            case.is_head(),
            HOSTILE_DEADLINE,
            wait_close,
        )
        .await;
        let victim_request = format!(
            "GET /victim HTTP/1.1\r\nHost: victim.example\r\nX-Victim: {}\r\nConnection: close\r\n\r\n",
            case.id
        );
        let victim = exchange(
            alb,
            victim_request.as_bytes(),
            false,
            VICTIM_DEADLINE,
            |_| false,
        )
        .await;
        let (records, desyncs) = backend.of_case(case.id);
        let problems = judge(case, &hostile, &victim, &records, &desyncs, backend);
        if let Some(a) = hostile.answers.first()
            && !a.by_backend()
            && matches!(case.expect, Expect::RejectOr(_) | Expect::RejectOrAny)
        {
            refused_valid.push(format!("#{} {} ({})", case.id, case.name, a.status));
        }
        if hostile.answers.is_empty() {
            unanswered.push(format!("#{} {}", case.id, case.name));
        }
        if !problems.is_empty() {
            let mut oracles: Vec<&str> = problems.iter().filter_map(|p| p.get(..3)).collect();
            oracles.dedup();
            for oracle in oracles {
                *by_oracle.entry(oracle.to_string()).or_insert(0) += 1;
            }
            *by_family.entry(case.family).or_insert(0) += 1;
            failures.push(describe(
                case, &hostile, &victim, &records, &desyncs, &problems,
            ));
        }
    }
    let (recorded, desynced, probes, upstream) = backend.totals();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} of {} cases broke an oracle ({} run in {:.1?}; the backend recorded {recorded} \
         requests and {desynced} desyncs on {upstream} upstream connections, {probes} probes)",
        failures.len(),
        cases.len(),
        ran,
        started.elapsed()
    );
    let _ = writeln!(
        text,
        "Failing cases by oracle: {by_oracle:?}; by family: {by_family:?}"
    );
    if ran < cases.len() {
        let _ = writeln!(
            text,
            "TIME BUDGET EXHAUSTED: {} cases not run",
            cases.len() - ran
        );
    }
    let _ = writeln!(
        text,
        "Refused by alb though the RFC allows forwarding (not a failure): {}",
        if refused_valid.is_empty() {
            "none".to_string()
        } else {
            refused_valid.join(", ")
        }
    );
    let _ = writeln!(
        text,
        "No answer within {HOSTILE_DEADLINE:?}: {}\n",
        if unanswered.is_empty() {
            "none".to_string()
        } else {
            unanswered.join(", ")
        }
    );
    for failure in &failures {
        text.push_str(failure);
        text.push('\n');
    }
    eprintln!("{text}");
    Report {
        failed: failures.len() + (cases.len() - ran),
        text,
    }
}

/// One HTTP/1.1 response as the client read it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The index of the backend request this answers (the backend names it).
    fn recorded(&self) -> Option<usize> {
        self.header("x-recorded")?.parse().ok()
    }

    /// The index of the backend request this answers, from the body the backend wrote.
    fn named(&self) -> Option<usize> {
        std::str::from_utf8(&self.body)
            .ok()?
            .strip_prefix("request ")?
            .parse()
            .ok()
    }

    /// The backend's answer to bytes it could not read.
    fn is_desync(&self) -> bool {
        self.header("x-desync").is_some()
    }

    fn by_backend(&self) -> bool {
        self.recorded().is_some() || self.is_desync()
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("close"))
    }
}

/// What a client saw on one connection.
struct Seen {
    bytes: Vec<u8>,
    /// Final (non-1xx) answers, complete ones only.
    answers: Vec<Answer>,
    /// alb closed the connection (EOF or reset) before the deadline.
    closed: bool,
    /// Reading stopped at the first answer, without waiting to see whether the connection closes.
    not_awaited: bool,
}

impl Seen {
    fn summary(&self) -> String {
        let how = if self.closed {
            "then closed"
        } else if self.not_awaited {
            "close not awaited"
        } else {
            "connection left open"
        };
        match self.answers.first() {
            None => format!("nothing complete ({how}): {}", show_cut(&self.bytes, 300)),
            Some(a) => {
                let from = match (a.recorded(), a.is_desync()) {
                    (Some(seq), _) => format!("the backend's answer to request {seq}"),
                    (None, true) => "the backend's desync answer".to_string(),
                    (None, false) => "alb's own".to_string(),
                };
                let more = if self.answers.len() > 1 {
                    format!(", and {} more answers", self.answers.len() - 1)
                } else {
                    String::new()
                };
                format!(
                    "{} ({from}{more}), {how}: {}",
                    a.status,
                    show_cut(&self.bytes, 300)
                )
            }
        }
    }
}

/// Writes `request` on a fresh connection and reads answers until `deadline`, the connection
/// closing, or a complete first answer after which `wait_close` says not to wait for the close
/// (then at most [`CLOSE_GRACE`] more).
async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    head: bool,
    deadline: Duration,
    wait_close: impl Fn(&Answer) -> bool,
) -> Seen {
    let connected = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await;
    let Ok(Ok(mut stream)) = connected else {
        return Seen {
            bytes: b"(could not connect)".to_vec(),
            answers: Vec::new(),
            closed: true,
            not_awaited: false,
        };
    };
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = tokio::time::timeout(deadline, wr.write_all(request)).await;
    };
    let read = async {
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut limit = Instant::now() + deadline;
        let mut grace_set = false;
        loop {
            match tokio::time::timeout_at(limit, rd.read(&mut chunk)).await {
                Err(_) => return (bytes, false, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (bytes, true, false),
                Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            }
            if grace_set {
                continue;
            }
            if let Some(first) = answers(&bytes, head).first() {
                if !wait_close(first) {
                    return (bytes, false, true);
                }
                grace_set = true;
                limit = limit.min(Instant::now() + CLOSE_GRACE);
            }
        }
    };
    let ((), (bytes, closed, not_awaited)) = tokio::join!(write, read);
    Seen {
        answers: answers(&bytes, head),
        bytes,
        closed,
        not_awaited,
    }
}

/// The complete final answers at the front of `buf`, interim (1xx) ones skipped.
fn answers(buf: &[u8], head: bool) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(end) = find(&buf[at..], b"\r\n\r\n") {
        let rest = &buf[at..];
        let text = String::from_utf8_lossy(&rest[..end]);
        let mut lines = text.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        let start = end + 4;
        if (100..200).contains(&status) {
            at += start;
            continue;
        }
        let used = if head || status == 204 || status == 304 {
            0
        } else if answer
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            match dechunk(&rest[start..]) {
                Some((body, used)) => {
                    answer.body = body;
                    used
                }
                None => break,
            }
        } else if let Some(len) = answer
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            if rest.len() - start < len {
                break;
            }
            answer.body = rest[start..start + len].to_vec();
            len
        } else {
            // Delimited by the close: never counted complete here.
            break;
        };
        out.push(answer);
        at += start + used;
    }
    out
}

/// A chunked response body: its content and length on the wire, once complete.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find(&buf[at..], b"\r\n")?;
        let line = String::from_utf8_lossy(&buf[at..at + line_end]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at += line_end + 2;
        if size == 0 {
            let end = find(&buf[at..], b"\r\n")?;
            // Skip trailers, if any, up to the blank line.
            let mut t = at;
            let mut e = end;
            while e != 0 {
                t += e + 2;
                e = find(&buf[t..], b"\r\n")?;
            }
            return Some((body, t + 2));
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Oracles
// ---------------------------------------------------------------------------------------------

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An authority compared as RFC 9110 §4.2.3 allows: case-insensitive, the default port (80) or
/// an empty port the same as none.
fn authority(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(":80").unwrap_or(&host);
    host.strip_suffix(':').unwrap_or(host).to_string()
}

fn judge(
    case: &Case,
    hostile: &Seen,
    victim: &Seen,
    records: &[Recorded],
    desyncs: &[backend::Desync],
    backend: &RecordingBackend,
) -> Vec<String> {
    let id = case.id.to_string();
    let is_mine = |r: &Recorded| r.request.value("x-case").as_deref() == Some(&id);
    let is_victim = |r: &Recorded| r.request.value("x-victim").as_deref() == Some(&id);
    let mine: Vec<&Recorded> = records.iter().filter(|r| is_mine(r)).collect();
    let mut p = Vec::new();

    // (1) Nothing alb did not parse itself reaches the backend.
    for r in records {
        let target = text(&r.request.target);
        if target.to_ascii_lowercase().contains("smuggled") {
            p.push(format!(
                "(1) SMUGGLED: the backend received `{} {target}` (request {}): bytes alb \
                 took as content were read as a request",
                text(&r.request.method),
                r.seq
            ));
        }
        let xff: Vec<String> = r
            .request
            .values("x-forwarded-for")
            .iter()
            .map(|v| text(v))
            .collect();
        let xff = xff.join(", ");
        if xff.rsplit(',').next().map(str::trim) != Some("127.0.0.1") {
            p.push(format!(
                "(1) request {} reached the backend without alb's X-Forwarded-For \
                 (x-forwarded-for: {xff:?}): alb never parsed it",
                r.seq
            ));
        }
        if !is_mine(r) && !is_victim(r) {
            p.push(format!(
                "(1) request {} (`{} {target}`) is neither the case's nor the victim's",
                r.seq,
                text(&r.request.method)
            ));
        }
    }

    // (2) One reading of every byte alb sent; the content is the client's.
    for d in desyncs {
        p.push(format!(
            "(2) DESYNC: the backend could not read what alb sent on upstream connection {} \
             (after {} requests on it): {}",
            d.conn, d.after, d.why
        ));
    }
    if let Expect::Forward(body) | Expect::RejectOr(body) = &case.expect {
        for r in &mine {
            if r.request.body != *body {
                p.push(format!(
                    "(2) request {} arrived with content {} ({:?} framing), the client's content \
                     is {}",
                    r.seq,
                    show_cut(&r.request.body, 120),
                    r.request.framing,
                    show_cut(body, 120)
                ));
            }
        }
    }

    // (3) Host and target.
    for r in records.iter().filter(|r| is_mine(r) || is_victim(r)) {
        let (want_host, want_target) = if is_victim(r) {
            (
                Some("victim.example".to_string()),
                Some("/victim".to_string()),
            )
        } else {
            (case.host.clone(), case.target.clone())
        };
        let hosts = r.request.values("host");
        match hosts[..] {
            [host] => {
                let host = text(host);
                if host.contains('@') {
                    p.push(format!(
                        "(3) request {} has Host {host:?}, with userinfo",
                        r.seq
                    ));
                } else if let Some(want) = &want_host
                    && authority(&host) != authority(want)
                {
                    p.push(format!(
                        "(3) request {} has Host {host:?}; the target URI's authority is {want:?}",
                        r.seq
                    ));
                }
            }
            _ => p.push(format!(
                "(3) request {} has {} Host fields: {:?}",
                r.seq,
                hosts.len(),
                hosts.iter().map(|h| text(h)).collect::<Vec<_>>()
            )),
        }
        let target = text(&r.request.target);
        let options_star = target == "*" && r.request.method == b"OPTIONS";
        let connect = r.request.method == b"CONNECT";
        if !target.starts_with('/') && !options_star && !connect {
            p.push(format!(
                "(3) request {} has target {target:?}, not in origin form (RFC 9112 §3.2.1)",
                r.seq
            ));
        } else if let Some(want) = &want_target
            && target != *want
        {
            p.push(format!(
                "(3) request {} has target {target:?}; the client's is {want:?}",
                r.seq
            ));
        }
    }

    // (4) The victim gets its own answer.
    match victim.answers.first() {
        None => p.push(format!(
            "(4) the victim got no answer: {}",
            victim.summary()
        )),
        // The body names the request it answers (the `x-recorded` field says the same).
        Some(a) => match a.named().and_then(|seq| backend.record(seq)) {
            Some(r) if is_victim(&r) && a.status == 200 && a.recorded() == Some(r.seq) => {}
            Some(r) => p.push(format!(
                "(4) the victim got {} with the answer to request {} (`{} {}`, case {:?})",
                a.status,
                r.seq,
                text(&r.request.method),
                text(&r.request.target),
                r.request.value("x-case")
            )),
            None => p.push(format!(
                "(4) the victim got {}, not an answer of the backend: {}",
                a.status,
                victim.summary()
            )),
        },
    }

    // (5) Refusals.
    match hostile.answers.first() {
        None => {
            if matches!(case.expect, Expect::Reject(_) | Expect::Forward(_)) || !mine.is_empty() {
                p.push(format!(
                    "(5) no answer within {HOSTILE_DEADLINE:?}: {}",
                    hostile.summary()
                ));
            }
        }
        Some(a) => {
            let own = !a.by_backend();
            if let Some(seq) = a.recorded()
                && !mine.iter().any(|r| r.seq == seq)
            {
                p.push(format!(
                    "(5) the client got the answer to request {seq}, not to its own"
                ));
            }
            match &case.expect {
                Expect::Reject(codes) => {
                    if !own || !mine.is_empty() {
                        p.push(format!(
                            "(5) FORWARDED where the RFC requires a refusal ({})",
                            case.rule
                        ));
                    } else {
                        let ok = if codes.is_empty() {
                            (400..600).contains(&a.status)
                        } else {
                            codes.contains(&a.status)
                        };
                        if !ok {
                            p.push(format!(
                                "(5) answered {}; the RFC requires {}",
                                a.status,
                                if codes.is_empty() {
                                    "a 4xx or 5xx".to_string()
                                } else {
                                    format!("{codes:?}")
                                }
                            ));
                        }
                        if !hostile.closed {
                            p.push(format!(
                                "(5) the connection stayed open after the refusal ({})",
                                a.status
                            ));
                        }
                    }
                }
                Expect::Forward(_) if own => {
                    p.push(format!(
                        "(5) a plain valid request was answered {} by alb",
                        a.status
                    ));
                }
                Expect::Forward(_) => {}
                Expect::RejectOr(_) | Expect::RejectOrAny => {
                    if own && !(400..600).contains(&a.status) {
                        p.push(format!("(5) alb answered {} itself", a.status));
                    }
                    if own && !hostile.closed {
                        p.push(format!(
                            "(5) the connection stayed open after alb's own {}",
                            a.status
                        ));
                    }
                }
            }
            if case.must_close && !own && !hostile.closed {
                p.push(
                    "(5) the connection stayed open after a message that requires closing \
                     (RFC 9112 §6.1)"
                        .to_string(),
                );
            }
            if hostile.answers.len() > 1 && (case.must_close || own) {
                p.push(format!(
                    "(5) {} answers on one connection: bytes after a message that ends the \
                     connection were read as another request",
                    hostile.answers.len()
                ));
            }
        }
    }
    p
}

fn show_cut(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        show(bytes)
    } else {
        format!("{}… ({} bytes)", show(&bytes[..max]), bytes.len())
    }
}

fn describe(
    case: &Case,
    hostile: &Seen,
    victim: &Seen,
    records: &[Recorded],
    desyncs: &[backend::Desync],
    problems: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#{} [{}] {} — {}; {}",
        case.id, case.family, case.name, case.expect, case.rule
    );
    let _ = writeln!(out, "  sent: {}", show_cut(&case.bytes, 700));
    let _ = writeln!(out, "  alb answered: {}", hostile.summary());
    for r in records {
        let _ = writeln!(
            out,
            "  backend read request {} (upstream connection {}, #{} on it): {}{}",
            r.seq,
            r.conn,
            r.nth,
            show_cut(&r.request.head, 700),
            if r.request.body.is_empty() {
                String::new()
            } else {
                format!(" content {}", show_cut(&r.request.body, 200))
            }
        );
    }
    for d in desyncs {
        let _ = writeln!(
            out,
            "  backend desync on upstream connection {}: {}; bytes {}",
            d.conn,
            d.why,
            show_cut(&d.bytes, 700)
        );
    }
    let _ = writeln!(out, "  victim: {}", victim.summary());
    for problem in problems {
        let _ = writeln!(out, "  - {problem}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// `alb run --config <path>` as a child process, killed on drop; its stderr is read into a log.
struct Binary {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    async fn start(config: &Path) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_alb"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn alb");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task_log = log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("alb listening on ") {
                    let rest = &line[at + "alb listening on ".len()..];
                    let addr = rest.split([' ', '"', ',']).next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                task_log.lock().unwrap().push(line);
            }
        });
        let addr = tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("alb did not start within {PATIENCE:?}: {:?}", log))
            .expect("alb's stderr ended before it listened");
        let addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("listening address {addr:?}: {e}"));
        Binary { child, addr, log }
    }

    /// SIGTERM, then the exit within [`PATIENCE`] (SIGKILL after); returns the stderr log.
    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exit = match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => format!("{status:?}"),
            Err(_) => {
                let _ = self.child.start_kill();
                "did not exit after SIGTERM; killed".to_string()
            }
        };
        let mut log = self.log.lock().unwrap().join("\n");
        let _ = write!(log, "\nexit: {exit}");
        log
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
