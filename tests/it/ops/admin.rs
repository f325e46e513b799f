//! The admin listener: metrics after known traffic, every API call (auth failures included), the
//! per-request explanation headers, and runtime changes under traffic.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};

const TOKEN: &str = "test-token-0123456789";

async fn balancer(backends: &[&TestBackend], extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_urls(backends.iter().map(|b| b.url()))
        .algorithm("round_robin")
        .config(extra)
        .quiet_health()
        .admin(TOKEN)
        .start()
        .await
        .lb
}

/// An admin call; `token` adds the bearer header.
async fn call(
    lb: &TestBalancer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(lb.admin_url(path).await);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (status, _, body) = send(&client(), request.body(full(body.to_string())).unwrap()).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric line starting with {line_start}:\n{text}"))
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = balancer(&[&a, &b], "").await;
    let c = client();
    for _ in 0..6 {
        assert_eq!(get(&c, &lb.url("/")).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&c, &lb.url("/status/503")).await.0, 503);
    }
    let post = Request::post(lb.url("/count")).body(full("xyz")).unwrap();
    assert_eq!(send(&c, post).await.0, 200);
    let (status, text) = call(&lb, Method::GET, "/metrics", None, "").await;
    assert_eq!(status, 200);
    let (ua, ub) = (a.url(), b.url());
    let gets = metric(
        &text,
        &format!(
            "alb_requests_total{{pool=\"default\",backend=\"{ua}\",method=\"GET\",status=\"2xx\"}}"
        ),
    ) + metric(
        &text,
        &format!(
            "alb_requests_total{{pool=\"default\",backend=\"{ub}\",method=\"GET\",status=\"2xx\"}}"
        ),
    );
    assert_eq!(gets, 6.0);
    let errors = metric(
        &text,
        &format!(
            "alb_requests_total{{pool=\"default\",backend=\"{ua}\",method=\"GET\",status=\"5xx\"}}"
        ),
    ) + metric(
        &text,
        &format!(
            "alb_requests_total{{pool=\"default\",backend=\"{ub}\",method=\"GET\",status=\"5xx\"}}"
        ),
    );
    assert_eq!(errors, 2.0);
    assert!(text.contains("method=\"POST\",status=\"2xx\"} 1"), "{text}");
    assert_eq!(
        metric(
            &text,
            &format!("alb_upstream_latency_seconds_count{{pool=\"default\",backend=\"{ua}\"}}")
        ) + metric(
            &text,
            &format!("alb_upstream_latency_seconds_count{{pool=\"default\",backend=\"{ub}\"}}")
        ),
        9.0
    );
    assert_eq!(metric(&text, "alb_request_duration_seconds_count"), 9.0);
    assert_eq!(
        metric(
            &text,
            &format!("alb_backend_up{{pool=\"default\",backend=\"{ua}\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &format!("alb_backend_in_flight{{pool=\"default\",backend=\"{ua}\"}}")
        ),
        0.0
    );
    assert_eq!(metric(&text, "alb_retries_total"), 0.0);
    assert!(metric(&text, "alb_client_connections") >= 1.0);
    assert!(metric(&text, "alb_bytes_to_clients_total") > 0.0);
    lb.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn writes_need_the_token_and_reads_do_not_on_localhost() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let lb = balancer(&[&a], "").await;
    let id = a.addr.to_string();
    let (status, body) = call(&lb, Method::GET, "/api/backends", None, "").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["backends"][0]["url"], a.url());
    assert_eq!(json["backends"][0]["state"], "up");
    let drain = format!("/api/backends/{id}/drain");
    assert_eq!(call(&lb, Method::POST, &drain, None, "").await.0, 401);
    assert_eq!(
        call(
            &lb,
            Method::POST,
            &drain,
            Some("wrong-token-0123456789"),
            ""
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(&lb, Method::POST, "/api/reload", None, "").await.0,
        401
    );
    assert_eq!(
        call(
            &lb,
            Method::DELETE,
            &format!("/api/backends/{id}"),
            None,
            ""
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            &lb,
            Method::POST,
            "/api/backends",
            None,
            "{\"url\": \"http://127.0.0.1:1\"}"
        )
        .await
        .0,
        401
    );
    assert_eq!(
        lb.proxy.backends()[0].admin_state().name(),
        "enabled",
        "nothing changed"
    );
    lb.stop().await;

    // No token configured: writes are off altogether.
    let lb = TestBalancer::start(&format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        backends_line(&[&a])
    ))
    .await;
    let (status, body) = call(&lb, Method::POST, &drain, Some(TOKEN), "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("writes are off"));
    lb.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn drain_disable_enable_add_and_remove_backends() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    b.set_delay(Duration::from_millis(400));
    let lb = balancer(&[&a, &b], "").await;
    let c = client();
    let (ida, idb) = (a.addr.to_string(), b.addr.to_string());

    // Drain b while a slow request is in flight on it: that request finishes, no new one comes.
    let _ = get(&c, &lb.url("/")).await; // round robin: a, then b
    let slow = {
        let (c, url) = (c.clone(), lb.url("/"));
        tokio::spawn(async move { get(&c, &url).await })
    };
    wait_until(Duration::from_secs(2), || b.hits() == 1)
        .await
        .unwrap();
    let (status, body) = call(
        &lb,
        Method::POST,
        &format!("/api/backends/{idb}/drain"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\": \"draining\""), "{body}");
    let (status, headers, _) = slow.await.unwrap();
    assert_eq!(
        (status.as_u16(), backend_of(&headers).as_str()),
        (200, "b"),
        "in-flight request finished"
    );
    for _ in 0..6 {
        assert_eq!(backend_of(&get(&c, &lb.url("/")).await.1), "a");
    }
    assert_eq!(b.hits(), 1);

    // Enable: back in rotation. Disable: out again.
    assert_eq!(
        call(
            &lb,
            Method::POST,
            &format!("/api/backends/{idb}/enable"),
            Some(TOKEN),
            ""
        )
        .await
        .0,
        200
    );
    b.set_delay(Duration::ZERO);
    let mut saw_b = false;
    for _ in 0..4 {
        saw_b |= backend_of(&get(&c, &lb.url("/")).await.1) == "b";
    }
    assert!(saw_b);
    assert_eq!(
        call(
            &lb,
            Method::POST,
            &format!("/api/backends/{idb}/disable"),
            Some(TOKEN),
            ""
        )
        .await
        .0,
        200
    );
    let before = b.hits();
    for _ in 0..4 {
        let _ = get(&c, &lb.url("/")).await;
    }
    assert_eq!(b.hits(), before);
    assert_eq!(
        call(
            &lb,
            Method::POST,
            &format!("/api/backends/{idb}/bogus"),
            Some(TOKEN),
            ""
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &lb,
            Method::POST,
            "/api/backends/127.0.0.9:1/drain",
            Some(TOKEN),
            ""
        )
        .await
        .0,
        404
    );

    // Add a third backend, then remove the first.
    let new = TestBackend::start("new").await;
    let body = format!("{{\"url\": \"{}\", \"weight\": 2}}", new.url());
    let (status, report) = call(&lb, Method::POST, "/api/backends", Some(TOKEN), &body).await;
    assert_eq!(status, 201, "{report}");
    assert!(report.contains(&new.url()));
    assert_eq!(
        call(&lb, Method::POST, "/api/backends", Some(TOKEN), &body)
            .await
            .0,
        409,
        "duplicate"
    );
    assert_eq!(
        call(
            &lb,
            Method::POST,
            "/api/backends",
            Some(TOKEN),
            "{\"url\": \"ftp://x\"}"
        )
        .await
        .0,
        422
    );
    assert_eq!(
        call(&lb, Method::POST, "/api/backends", Some(TOKEN), "not json")
            .await
            .0,
        400
    );
    for _ in 0..6 {
        let _ = get(&c, &lb.url("/")).await;
    }
    assert!(new.hits() > 0, "the added backend takes traffic");
    let (status, report) = call(
        &lb,
        Method::DELETE,
        &format!("/api/backends/{ida}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let a_hits = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&c, &lb.url("/")).await.0, 200);
    }
    assert_eq!(a.hits(), a_hits, "a removed backend gets no traffic");
    assert_eq!(
        call(
            &lb,
            Method::DELETE,
            &format!("/api/backends/{ida}"),
            Some(TOKEN),
            ""
        )
        .await
        .0,
        404
    );
    // In-process, there is no config file to re-read.
    assert_eq!(
        call(&lb, Method::POST, "/api/reload", Some(TOKEN), "")
            .await
            .0,
        409
    );
    lb.stop().await;
    for backend in [a, b, new] {
        backend.stop().await;
    }
}

#[tokio::test]
async fn explain_headers_say_where_and_why() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let lb = TestBalancer::start(&format!("explain = true\n{}", backends_line(&[&a]))).await;
    let (status, headers, _) = get(&client(), &lb.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-alb-backend"], a.url().as_str());
    let reason = headers["x-alb-reason"].to_str().unwrap();
    assert!(
        reason.starts_with("least_conn attempt=1 candidates:"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("*{} in_flight=0 weight=1 up", a.url())),
        "{reason}"
    );
    lb.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn the_event_stream_sends_snapshots() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let lb = balancer(&[&a], "").await;
    let response = client()
        .request(
            Request::get(lb.admin_url("/api/events").await)
                .body(full(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let frame = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("data: {"), "{text}");
    assert!(text.contains(&a.url()));
    drop(body);
    lb.stop().await;
    a.stop().await;
}
