//! Request smuggling and Host override, checked where it matters: at a backend that reads what
//! alb sent with a parser of its own ([`crate::support::recorder`]). Each case is a defect reproduced
//! against an earlier alb (issue 10): what reached the backend there is in the comment.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::recorder::{Recorded, Recorder};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request the attacks try to slip past alb: forged client address and all.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: victim\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";

async fn balancer(recorder: &Recorder, extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_url(recorder.url())
        .config(extra)
        .quiet_health()
        .start()
        .await
        .lb
}

/// What came back on one connection: the bytes, and whether alb closed it.
struct Answer {
    text: String,
    closed: bool,
}

impl Answer {
    fn status(&self) -> u16 {
        self.text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Sends `request` on a new connection and reads until alb closes it or 3 s pass.
async fn send_raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    Answer {
        text: String::from_utf8_lossy(&bytes).to_string(),
        closed,
    }
}

/// A request made through alb carries alb's own address as the last X-Forwarded-For hop.
fn assert_came_through_alb(request: &Recorded) {
    let xff = request.values("x-forwarded-for");
    assert_eq!(xff.len(), 1, "{request:?}");
    assert!(xff[0].ends_with("127.0.0.1"), "{request:?}");
}

/// Nothing but alb's own requests reached the backend, it could frame every one of them, and
/// none carried a name that a lenient server would read as framing.
fn assert_nothing_smuggled(recorder: &Recorder) {
    assert!(
        recorder.ambiguous().is_empty(),
        "{:?}",
        recorder.ambiguous()
    );
    for request in recorder.requests() {
        assert_ne!(request.target, "/smuggled", "smuggled: {request:?}");
        assert_came_through_alb(&request);
        let framing =
            request.values("content-length").len() + request.values("transfer-encoding").len();
        assert!(framing <= 1, "{request:?}");
        assert!(
            request.fields.iter().all(|(n, _)| !is_lookalike(n)),
            "{request:?}"
        );
    }
}

/// A name with `_` that a server folding `_` into `-` (and ignoring case, repeats and ends) reads
/// as a field that frames or routes a request.
fn is_lookalike(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let folded: Vec<&str> = name
        .split(['_', '-'])
        .filter(|part| !part.is_empty())
        .collect();
    let folded = folded.join("-").to_ascii_lowercase();
    [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ]
    .contains(&folded.as_str())
}

/// A normal request on a fresh client connection after an attack: alb puts it on the pooled
/// upstream connection the attack used, and it must come back as itself.
async fn victim_is_served(lb: &TestBalancer, recorder: &Recorder) {
    let got = send_raw(
        lb.addr,
        b"GET /victim HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status(), 200, "{}", got.text);
    assert!(got.text.ends_with(" /victim"), "{}", got.text);
    let victim = recorder
        .requests()
        .into_iter()
        .rfind(|r| r.target == "/victim");
    assert_came_through_alb(&victim.unwrap());
}

/// Defect 1: `Connection: content-length` used to remove the length while the body went on raw,
/// so the backend read the body as a second request with a forged X-Forwarded-For.
#[tokio::test]
async fn connection_cannot_remove_the_framing() {
    let _cpu = crate::support::cpu::shared().await;
    for nominated in [
        "content-length",
        "Content-Length, close",
        "transfer-encoding",
        "host",
    ] {
        let recorder = Recorder::start().await;
        let lb = balancer(&recorder, "").await;
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: good.example\r\nConnection: {nominated}\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        );
        let got = send_raw(lb.addr, request.as_bytes()).await;
        assert_eq!(got.status(), 200, "{nominated}: {}", got.text);
        let seen = recorder.only("/upload");
        assert_eq!(seen.body, SMUGGLED.as_bytes(), "{nominated}");
        assert_eq!(seen.values("content-length"), [SMUGGLED.len().to_string()]);
        assert_eq!(seen.values("host"), ["good.example"], "{nominated}");
        assert_nothing_smuggled(&recorder);
        victim_is_served(&lb, &recorder).await;
        assert_nothing_smuggled(&recorder);
        lb.stop().await;
        recorder.stop().await;
    }
}

/// Defect 2: an authority-form target (`GET evil.example`) used to become the Host a backend saw.
/// RFC 9112 §3.2.3: that form is for CONNECT only. User info never names a host.
#[tokio::test]
async fn authority_form_and_user_info_get_400() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "").await;
    for target in [
        "evil.example",
        "evil.example:80",
        "a@evil.example",
        "http://a@evil.example/",
        "http://good.example@evil.example/",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: good.example\r\n\r\n");
        let got = send_raw(lb.addr, request.as_bytes()).await;
        assert_eq!(got.status(), 400, "{target}: {}", got.text);
        assert!(got.closed, "{target}: connection left open");
    }
    assert!(recorder.requests().is_empty(), "{:?}", recorder.requests());
    // Absolute form is allowed: its authority is the Host (RFC 9112 §3.2.2).
    let got = send_raw(
        lb.addr,
        b"GET http://other.example:8080/p?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status(), 200, "{}", got.text);
    let seen = recorder.only("/p?q=1");
    assert_eq!(seen.values("host"), ["other.example:8080"]);
    assert_nothing_smuggled(&recorder);
    lb.stop().await;
    recorder.stop().await;
}

/// Defect 3: an HTTP/1.1 request without Host used to reach the backend with the backend's own
/// address as Host. RFC 9112 §3.2: 400. (HTTP/1.0 may omit it.)
#[tokio::test]
async fn http11_without_host_gets_400() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "").await;
    let got = send_raw(lb.addr, b"GET /nohost HTTP/1.1\r\n\r\n").await;
    assert_eq!(got.status(), 400, "{}", got.text);
    assert!(got.closed);
    for bad in ["a@b", "a b", "a/b", "a:x", "", "a,b", "a%zz"] {
        let request = format!("GET /badhost HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        let got = send_raw(lb.addr, request.as_bytes()).await;
        assert_eq!(got.status(), 400, "Host: {bad}: {}", got.text);
    }
    assert!(recorder.requests().is_empty(), "{:?}", recorder.requests());
    let got = send_raw(lb.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(got.status(), 200, "{}", got.text);
    assert_eq!(
        recorder.only("/old").values("host"),
        [recorder.addr.to_string()]
    );
    lb.stop().await;
    recorder.stop().await;
}

/// Defect 4: two equal Content-Length lines used to be forwarded as two. What reaches a backend
/// carries exactly one framing field, written by alb.
#[tokio::test]
async fn repeated_equal_lengths_reach_the_backend_as_one() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "").await;
    let got = send_raw(
        lb.addr,
        b"POST /twice HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(got.status(), 200, "{}", got.text);
    let seen = recorder.only("/twice");
    assert_eq!(seen.values("content-length"), ["5"]);
    assert_eq!(seen.body, b"hello");
    assert_nothing_smuggled(&recorder);
    lb.stop().await;
    recorder.stop().await;
}

/// The look-alikes a lenient server reads as framing.
const LOOKALIKES: [&str; 3] = [
    "Transfer_Encoding: chunked",
    "Content_Length: 0",
    "Transfer___Encoding: chunked",
];

/// Defect 5: framing look-alikes used to be forwarded, on a connection then reused for the next
/// client. By default (`underscores_in_headers = "drop"`) they are left out.
#[tokio::test]
async fn framing_lookalikes_are_dropped_by_default() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "").await;
    for (i, field) in LOOKALIKES.iter().enumerate() {
        let body = format!("0\r\n\r\n{SMUGGLED}");
        let request = format!(
            "POST /look{i} HTTP/1.1\r\nHost: h\r\n{field}\r\nX_Custom: 1\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let got = send_raw(lb.addr, request.as_bytes()).await;
        assert_eq!(got.status(), 200, "{field}: {}", got.text);
        let seen = recorder.only(&format!("/look{i}"));
        assert!(
            seen.fields.iter().all(|(n, _)| !n.contains('_')),
            "{seen:?}"
        );
        assert_eq!(seen.body, body.as_bytes());
    }
    assert_nothing_smuggled(&recorder);
    victim_is_served(&lb, &recorder).await;
    lb.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn underscores_can_be_refused() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "underscores_in_headers = \"refuse\"").await;
    let got = send_raw(lb.addr, b"GET / HTTP/1.1\r\nHost: h\r\nX_Custom: 1\r\n\r\n").await;
    assert_eq!(got.status(), 400, "{}", got.text);
    assert!(recorder.requests().is_empty());
    lb.stop().await;
    recorder.stop().await;
}

/// With underscores allowed, other fields with `_` pass, but one that a lenient backend reads as
/// framing, Host, Connection or X-Forwarded-* once `_` is `-` is still left out: an earlier alb
/// forwarded it with `connection: close`, and a backend honouring `Transfer_Encoding` ran the
/// request smuggled in the body before it closed.
#[tokio::test]
async fn allowed_underscores_never_pass_a_lookalike() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "underscores_in_headers = \"allow\"").await;
    let got = send_raw(
        lb.addr,
        b"GET /plain HTTP/1.1\r\nHost: h\r\nX_Custom: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status(), 200, "{}", got.text);
    assert_eq!(recorder.only("/plain").values("x_custom"), ["1"]);
    let mut lookalikes: Vec<&str> = LOOKALIKES.to_vec();
    lookalikes.extend([
        "_Content_Length_: 0",
        "X_Forwarded_For: 6.6.6.6",
        "Host_: evil",
    ]);
    for (i, field) in lookalikes.iter().enumerate() {
        let body = format!("0\r\n\r\n{SMUGGLED}");
        let request = format!(
            "POST /look{i} HTTP/1.1\r\nHost: h\r\n{field}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let got = send_raw(lb.addr, request.as_bytes()).await;
        assert_eq!(got.status(), 200, "{field}: {}", got.text);
        let look = recorder.only(&format!("/look{i}"));
        let names: Vec<&str> = look.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.iter().all(|n| !n.contains('_')), "{field}: {look:?}");
        assert_eq!(look.body, body.as_bytes());
    }
    assert_nothing_smuggled(&recorder);
    victim_is_served(&lb, &recorder).await;
    lb.stop().await;
    recorder.stop().await;
}

/// X-Forwarded-Proto and X-Forwarded-Host say what alb received, alone: an earlier alb appended
/// its values to the client's, and frameworks that read the first element (Express with
/// `trust proxy`, for one) took the client's word for the host and the scheme.
#[tokio::test]
async fn forwarded_host_and_proto_are_alb_s_alone() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "").await;
    let got = send_raw(
        lb.addr,
        b"GET /xf HTTP/1.1\r\nHost: good.example\r\nX-Forwarded-Host: evil.example\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-For: 10.9.8.7\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status(), 200, "{}", got.text);
    let seen = recorder.only("/xf");
    assert_eq!(seen.values("x-forwarded-host"), ["good.example"]);
    assert_eq!(seen.values("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.values("x-forwarded-for"), ["127.0.0.1"]);
    let got = send_raw(
        lb.addr,
        b"GET /xf10 HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(got.status(), 200, "{}", got.text);
    assert!(recorder.only("/xf10").values("x-forwarded-host").is_empty());
    lb.stop().await;
    recorder.stop().await;
}
