//! `k8s://` backends through the real proxy, their EndpointSlices served by the fake API server
//! of support/kube_api.rs (no cluster runs here): every slice's endpoints in the pool, this
//! zone's preferred, a terminating endpoint drained (its request in flight finishes, it gets no
//! new one), a deleted slice's endpoint gone, the zone spilling over when it has nothing left.

use std::time::Duration;

use crate::support::kube_api::{Ep, KubeApi, NAMESPACE, Slice};
use crate::support::{
    TestBackend, TestBalancer, answers_by_backend, backend_of, client, get, wait_until,
};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFsYiJ9.YWxiLXRlc3Q.sig";

/// One slice of `cart` with one endpoint on 127.0.0.1 at `backend`'s port, in `zone`.
fn slice(suffix: &str, backend: &TestBackend, zone: &str, terminating: bool) -> Slice {
    let mut endpoint = Ep::ready("127.0.0.1").on(&format!("node-{suffix}"), zone);
    if terminating {
        endpoint = endpoint.terminating();
    }
    Slice::new("cart", suffix, vec![endpoint]).ports(&[(Some("http"), backend.addr.port())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_s_endpoints_are_the_pool_terminating_ones_drained() {
    let _cpu = crate::support::cpu::shared().await;
    let (a1, b1, a2) = (
        TestBackend::start("a1").await,
        TestBackend::start("b1").await,
        TestBackend::start("a2").await,
    );
    let api = KubeApi::start(TOKEN).await;
    api.apply(&slice("a1x", &a1, "zone-a", false));
    api.apply(&slice("b1x", &b1, "zone-b", false));
    api.apply(&slice("a2x", &a2, "zone-a", false));
    let token_file = std::env::temp_dir().join(format!("alb-k8s-token-{}", std::process::id()));
    std::fs::write(&token_file, TOKEN).expect("token file");
    let lb = TestBalancer::start(&format!(
        "backends = [\"k8s://{NAMESPACE}/cart:http\"]\n\
         [health_check]\ninterval = \"200ms\"\n\
         [locality]\nzone = \"zone-a\"\n\
         [discovery.kubernetes]\napi_server = \"{}\"\ntoken_file = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        api.url(),
        token_file.display()
    ))
    .await;
    wait_until(Duration::from_secs(5), || lb.proxy.backends().len() == 3)
        .await
        .expect("the three endpoints of the two zones discovered");
    let mut seen: Vec<(String, Option<String>, Option<String>)> = lb
        .proxy
        .backends()
        .iter()
        .map(|b| {
            let (zone, source) = (
                b.zone().map(str::to_string),
                b.dns_name().map(str::to_string),
            );
            (b.url().to_string(), zone, source)
        })
        .collect();
    seen.sort();
    let source = Some(format!("k8s://{NAMESPACE}/cart:http"));
    let mut want: Vec<(String, Option<String>, Option<String>)> =
        [(&a1, "zone-a"), (&b1, "zone-b"), (&a2, "zone-a")]
            .iter()
            .map(|(b, zone)| (b.url(), Some(zone.to_string()), source.clone()))
            .collect();
    want.sort();
    assert_eq!(seen, want);

    // This zone's two take everything.
    let counts = answers_by_backend(&lb.url("/"), 40).await;
    assert_eq!(
        (counts.get("a1"), counts.get("a2")),
        (Some(&20), Some(&20)),
        "{counts:?}"
    );

    // a1's pod terminates while a slow request is on it: that request finishes, a1 gets no new one.
    a1.set_delay(Duration::from_millis(800));
    let url = lb.url("/");
    let mut in_flight = None;
    for _ in 0..4 {
        let url = url.clone();
        let request = tokio::spawn(async move { get(&client(), &url).await });
        if wait_until(Duration::from_secs(2), || a1.hits() > 20)
            .await
            .is_ok()
        {
            in_flight = Some(request);
            break;
        }
        let _ = request.await;
    }
    let in_flight = in_flight.expect("a request on a1");
    api.apply(&slice("a1x", &a1, "zone-a", true));
    let draining = lb
        .proxy
        .backend(&a1.url())
        .expect("a terminating endpoint stays in the pool");
    wait_until(Duration::from_secs(5), || {
        lb.proxy
            .backend(&a1.url())
            .is_some_and(|b| b.admin_state() == alb::upstream::AdminState::Draining)
    })
    .await
    .expect("a1 drained");
    drop(draining);
    let (status, headers, _) = in_flight.await.expect("request task");
    assert_eq!(
        (status.as_u16(), backend_of(&headers).as_str()),
        (200, "a1")
    );
    let hits = a1.hits();
    let counts = answers_by_backend(&lb.url("/"), 20).await;
    assert_eq!(counts.get("a2"), Some(&20), "{counts:?}");
    assert_eq!(a1.hits(), hits);

    // a2's slice deleted: zone-a has only a draining endpoint left, so zone-b takes the traffic.
    api.delete(NAMESPACE, "cart-a2x");
    wait_until(Duration::from_secs(5), || {
        lb.proxy.backend(&a2.url()).is_none()
    })
    .await
    .expect("a deleted slice's endpoint leaves the pool");
    let counts = answers_by_backend(&lb.url("/"), 20).await;
    assert_eq!(counts.get("b1"), Some(&20), "{counts:?}");

    // The API shows the terminating endpoint as draining.
    let (_, _, body) = get(&client(), &lb.admin_url("/api/backends").await).await;
    let api_view: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let a1_view = api_view["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["url"] == a1.url().as_str())
        .expect("a1 listed")
        .clone();
    assert_eq!(a1_view["state"], "draining", "{a1_view}");
    assert_eq!(a1_view["zone"], "zone-a", "{a1_view}");

    lb.stop().await;
    let _ = std::fs::remove_file(&token_file);
    for b in [a1, b1, a2] {
        b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_api_server_is_followed() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let api = KubeApi::start(TOKEN).await;
    api.apply(&slice("bx", &b, "zone-a", false));
    let token_file = std::env::temp_dir().join(format!("alb-k8s-token-r-{}", std::process::id()));
    std::fs::write(&token_file, TOKEN).expect("token file");
    let toml = |server: &str| {
        format!(
            "backends = [\"k8s://{NAMESPACE}/cart:http\"]\n\
             [discovery.kubernetes]\napi_server = \"{server}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        )
    };
    // A typo in api_server; the operator fixes it and reloads.
    let lb = TestBalancer::start(&toml("http://127.0.0.1:1")).await;
    let fixed = alb::Config::from_toml(&toml(&api.url()), "fixed.toml").expect("config");
    lb.control.apply(&fixed);
    let found = wait_until(Duration::from_secs(5), || {
        lb.proxy.backends().iter().any(|x| x.url() == b.url())
    })
    .await;
    let urls: Vec<String> = lb
        .proxy
        .backends()
        .iter()
        .map(|x| x.url().to_string())
        .collect();
    lb.stop().await;
    let _ = std::fs::remove_file(&token_file);
    b.stop().await;
    assert!(
        found.is_ok(),
        "still not watching the reloaded API server: {urls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_endpoint_s_changes_do_not_probe_every_backend_again() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let api = KubeApi::start(TOKEN).await;
    api.apply(&slice("bx", &b, "zone-a", false));
    // Another pod, which nothing listens for: its zone label changes, over and over.
    let other = |zone: &str| {
        Slice::new(
            "cart",
            "cx",
            vec![Ep::ready("127.0.0.9").on("node-c", zone)],
        )
        .ports(&[(Some("http"), 9)])
    };
    api.apply(&other("zone-0"));
    let token_file = std::env::temp_dir().join(format!("alb-k8s-token-p-{}", std::process::id()));
    std::fs::write(&token_file, TOKEN).expect("token file");
    let lb = TestBalancer::start(&format!(
        "backends = [\"k8s://{NAMESPACE}/cart:http\"]\n\
         [health_check]\ninterval = \"30s\"\n\
         [discovery.kubernetes]\napi_server = \"{}\"\ntoken_file = \"{}\"\n",
        api.url(),
        token_file.display()
    ))
    .await;
    wait_until(Duration::from_secs(5), || {
        lb.proxy.backends().len() == 2 && b.probes() >= 1
    })
    .await
    .expect("discovered and probed once");
    let before = b.probes();
    // Each change makes the other endpoint a new backend, probed at once (its zone changed);
    // b's check, unchanged, goes on at its own 30 s pace.
    for i in 1..=20 {
        let zone = format!("zone-{i}");
        api.apply(&other(&zone));
        wait_until(Duration::from_secs(5), || {
            lb.proxy
                .backends()
                .iter()
                .any(|x| x.zone() == Some(zone.as_str()) && x.last_probe().is_some())
        })
        .await
        .expect("the changed endpoint is a new backend, probed");
    }
    let probes = b.probes() - before;
    lb.stop().await;
    let _ = std::fs::remove_file(&token_file);
    b.stop().await;
    assert_eq!(
        probes, 0,
        "b, unchanged, probed {probes} times at interval 30 s"
    );
}
