//! Affinity and rate limits through the real proxy: consistent hashing on a request key, sticky
//! cookies through a backend's death and return, and a route's rate limit with its 429s and its
//! recovery. Which backend answered is read from the backend's own `x-backend` field.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{HeaderMap, Request};

const QUIET: &str = "[health_check]\ninterval = \"60s\"\n";

async fn ask(lb: &TestBalancer, path: &str, fields: &[(&str, &str)]) -> (u16, HeaderMap) {
    let mut request = Request::get(lb.url(path));
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let (status, headers, _) = send(&client(), request.body(full(Bytes::new())).unwrap()).await;
    (status.as_u16(), headers)
}

#[tokio::test]
async fn a_hash_key_keeps_each_user_on_one_backend_and_a_leaving_backend_moves_only_its_users() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backends(["b0", "b1", "b2", "b3"])
        .algorithm("hash")
        .config("hash_key = \"header:x-user\"\n")
        .quiet_health()
        .start()
        .await;
    let (backends, lb) = (&scenario.backends, &scenario.lb);
    let mut home: HashMap<String, String> = HashMap::new();
    for user in 0..400 {
        let user = format!("user-{user}");
        let (status, headers) = ask(lb, "/", &[("x-user", &user)]).await;
        assert_eq!(status, 200);
        home.insert(user, backend_of(&headers));
    }
    let mut per_backend: HashMap<&str, usize> = HashMap::new();
    for backend in home.values() {
        *per_backend.entry(backend.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_backend.len(),
        4,
        "every backend has users: {per_backend:?}"
    );
    assert!(per_backend.values().all(|&n| n >= 50), "{per_backend:?}");
    // Asked again, every user lands where it did.
    for (user, backend) in home.iter().take(100) {
        let (_, headers) = ask(lb, "/", &[("x-user", user)]).await;
        assert_eq!(&backend_of(&headers), backend, "{user}");
    }
    // b2 leaves: its users move, nobody else does.
    lb.control
        .set_admin_state(&backends[2].url(), alb::upstream::AdminState::Disabled)
        .unwrap();
    let mut moved = 0;
    for (user, backend) in &home {
        let (_, headers) = ask(lb, "/", &[("x-user", user)]).await;
        let now = backend_of(&headers);
        if backend == "b2" {
            assert_ne!(now, "b2");
            moved += 1;
        } else {
            assert_eq!(&now, backend, "{user} moved off a backend that stayed");
        }
    }
    assert_eq!(moved, per_backend["b2"]);
    let share = moved as f64 / home.len() as f64;
    assert!(share < 0.35, "about 1/4 of users moved: {share}");
    // Requests without the key are balanced as least_conn does: over all remaining backends.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(backend_of(&ask(lb, "/", &[]).await.1));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    scenario.stop().await;
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    let set = headers.get("set-cookie")?.to_str().unwrap();
    Some(set.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn a_sticky_cookie_holds_a_client_to_its_backend_through_its_death_and_return() {
    let _cpu = crate::support::cpu::shared().await;
    let mut backends = vec![
        TestBackend::start("b0").await,
        TestBackend::start("b1").await,
    ];
    let refs: Vec<&TestBackend> = backends.iter().collect();
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"1s\"\n[sticky]\ncookie = \"srv\"\nttl = \"1h\"\n",
        backends_line(&refs)
    ))
    .await;
    let (status, headers) = ask(&lb, "/", &[]).await;
    assert_eq!(status, 200);
    let first = backend_of(&headers);
    let set = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("srv="), "{set}");
    assert!(
        set.contains("; Path=/") && set.contains("; HttpOnly"),
        "{set}"
    );
    assert!(set.contains("; Max-Age=3600"), "{set}");
    for backend in &backends {
        let port = backend.addr.port().to_string();
        assert!(!set.contains(&port), "the cookie names no address: {set}");
    }
    let cookie = cookie_of(&headers).unwrap();
    for _ in 0..20 {
        let (_, headers) = ask(&lb, "/", &[("cookie", &format!("a=1; {cookie}; b=2"))]).await;
        assert_eq!(backend_of(&headers), first);
        assert!(headers.get("set-cookie").is_none(), "set once");
    }
    // A made-up value picks no backend: the request is balanced and given a real cookie.
    let (_, headers) = ask(
        &lb,
        "/",
        &[("cookie", "srv=0123456789abcdef0123456789abcdef")],
    )
    .await;
    assert!(cookie_of(&headers).is_some());
    // Its backend dies: the client is answered by the other one, which sets its own cookie.
    let index = if first == "b0" { 0 } else { 1 };
    let addr = backends.remove(index).stop().await;
    let (status, headers) = ask(&lb, "/", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200);
    let second = backend_of(&headers);
    assert_ne!(second, first);
    let new_cookie = cookie_of(&headers).expect("a new cookie");
    assert_ne!(new_cookie, cookie);
    lb.wait_health(&addr, false, Duration::from_secs(10)).await;
    // It comes back on its address: the new cookie keeps the client where it went, the old one
    // leads home again.
    let back = TestBackend::start_on(*addr, &first).await;
    lb.wait_health(&addr, true, Duration::from_secs(10)).await;
    for _ in 0..10 {
        assert_eq!(
            backend_of(&ask(&lb, "/", &[("cookie", &new_cookie)]).await.1),
            second
        );
        assert_eq!(
            backend_of(&ask(&lb, "/", &[("cookie", &cookie)]).await.1),
            first
        );
    }
    assert!(back.hits() >= 10);
    lb.stop().await;
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after_per_key_and_recovers() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}{QUIET}[[route]]\npath_prefix = \"/limited\"\npool = \"default\"\n\
         rate_limit = {{ per_second = 5, burst = 3, key = \"header:x-api-key\" }}\n\
         [[route]]\npool = \"default\"\n",
        backends_line(&[&backend])
    ))
    .await;
    let alice = [("x-api-key", "alice")];
    for _ in 0..3 {
        assert_eq!(ask(&lb, "/limited", &alice).await.0, 200);
    }
    let (status, headers) = ask(&lb, "/limited", &alice).await;
    let refused_at = Instant::now();
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert!(
        headers.get("connection").is_none(),
        "the connection stays open"
    );
    // Another key and another route are not limited by alice's bucket.
    assert_eq!(ask(&lb, "/limited", &[("x-api-key", "bob")]).await.0, 200);
    assert_eq!(ask(&lb, "/other", &alice).await.0, 200);
    assert_eq!(backend.hits(), 5, "the 429 never reached the backend");
    // Refilled at 5 per second: over the next 2 s as many requests pass as tokens came back
    // since the 429 (a limit read as 1 per second would let about 2 through). The bucket holds
    // 3, so attempts paced every 20 ms, or slower on a busy machine, lose none; up to 3 may be
    // left in it at the end.
    let mut admitted = 0u32;
    while refused_at.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if ask(&lb, "/limited", &alice).await.0 == 200 {
            admitted += 1;
        }
    }
    let refilled = 5.0 * refused_at.elapsed().as_secs_f64();
    assert!(
        f64::from(admitted) <= refilled + 2.0 && f64::from(admitted) >= refilled - 4.0,
        "{admitted} let through while {refilled:.1} tokens came back"
    );
    let refused = lb
        .proxy
        .stats()
        .rate_limited
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused >= 1, "counted: {refused}");
    lb.stop().await;
}
