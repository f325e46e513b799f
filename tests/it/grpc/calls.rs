//! Each call type through alb, calls balanced one by one over a shared connection, and a large
//! message.

use super::*;

#[tokio::test]
async fn unary_call_arrives_with_authority_and_forwarded_for() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let mut request = Request::new(echo("hello", 7));
    request
        .metadata_mut()
        .insert("x-end-to-end", "kept".parse().unwrap());
    let started = Instant::now();
    let response = within(CALL, "unary call", client.unary(request))
        .await
        .unwrap_or_else(|s| panic!("unary call failed: {s:?}"));
    eprintln!("unary call: {:?}", started.elapsed());

    assert_eq!(
        response
            .metadata()
            .get("x-backend")
            .map(|v| v.to_str().unwrap()),
        Some("alpha"),
        "the backend's response metadata (headers) reached the client"
    );
    let reply = response.into_inner();
    assert_eq!(
        reply,
        Echo {
            backend: "alpha".into(),
            ..echo("hello", 7)
        }
    );

    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "one call reached the backend: {seen:?}");
    let call = &seen[0];
    assert_eq!(call.path, "/test.Echo/Unary");
    let host = call
        .headers
        .get("host")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        call.authority.as_deref().or(host.as_deref()),
        Some(AUTHORITY),
        ":authority as the client sent it (uri {:?}, host {host:?})",
        call.authority
    );
    if let Some(host) = &host {
        assert_eq!(
            host, AUTHORITY,
            "a Host field, if any, agrees with :authority"
        );
    }
    let header = |name: &str| {
        call.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} missing at the backend: {:?}", call.headers))
    };
    assert_eq!(header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(header("x-forwarded-proto"), "http");
    assert_eq!(header("content-type"), "application/grpc");
    assert_eq!(header("te"), "trailers", "gRPC servers need te: trailers");
    assert_eq!(header("x-end-to-end"), "kept", "request metadata passes");

    lb.stop().await;
}

#[tokio::test]
async fn server_streaming_delivers_100_messages_in_order_then_ok() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let started = Instant::now();
    let response = within(
        CALL,
        "server-streaming call",
        client.server_streaming("/test.Echo/Count", Request::new(echo("", 100))),
    )
    .await
    .unwrap_or_else(|s| panic!("server-streaming call failed: {s:?}"));
    let mut stream = response.into_inner();
    for i in 0..100 {
        let message = within(CALL, "next message", stream.message())
            .await
            .unwrap_or_else(|s| panic!("message {i}: {s:?}"))
            .unwrap_or_else(|| panic!("the stream ended after {i} messages"));
        assert_eq!(message.n, i, "messages in order");
        assert_eq!(message.text, format!("message {i}"));
        assert_eq!(message.backend, "alpha");
    }
    // tonic reports the end as Ok(None) only on trailers with grpc-status 0 (a stream ending
    // without grpc-status is an error for it).
    let end = within(CALL, "end of stream", stream.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "status OK after the 100th message: {end:?}"
    );
    let trailers = within(CALL, "trailers", stream.trailers())
        .await
        .expect("trailers")
        .expect("the call ended with trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "grpc-status 0 in trailers: {trailers:?}"
    );
    eprintln!(
        "100 streamed messages and trailers: {:?}",
        started.elapsed()
    );
    lb.stop().await;
}

#[tokio::test]
async fn client_streaming_sums_100_messages() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let messages = futures_util::stream::iter((1..=100).map(|n| echo("part", n)));
    let started = Instant::now();
    let total = within(
        CALL,
        "client-streaming call",
        client.sum(Request::new(messages)),
    )
    .await
    .unwrap_or_else(|s| panic!("client-streaming call failed: {s:?}"))
    .into_inner();
    eprintln!("100 messages summed: {:?}", started.elapsed());
    assert_eq!(total.count, 100);
    assert_eq!(total.sum, 5050);
    assert_eq!(
        total.order,
        (1..=100).collect::<Vec<u32>>(),
        "received in order"
    );
    assert_eq!(total.backend, "alpha");
    lb.stop().await;
}

/// Send one, receive its answer, only then send the next: the request stream is still open
/// while every answer but the last arrives, so both directions stream at once through alb.
#[tokio::test]
async fn bidirectional_ping_pong_of_50_messages() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let started = Instant::now();
    tx.send(echo("ping", 0)).await.unwrap();
    let response = within(
        CALL,
        "bidirectional call",
        client.chat(Request::new(receiver_stream(rx))),
    )
    .await
    .unwrap_or_else(|s| panic!("bidirectional call failed: {s:?}"));
    let mut replies = response.into_inner();
    for i in 0..50 {
        if i > 0 {
            tx.send(echo("ping", i)).await.expect("request stream open");
        }
        let reply = within(
            CALL,
            &format!("answer to ping {i} (request stream still open)"),
            replies.message(),
        )
        .await
        .unwrap_or_else(|s| panic!("answer {i}: {s:?}"))
        .unwrap_or_else(|| panic!("the answers ended after {i}"));
        assert_eq!(
            (reply.n, reply.text.as_str(), reply.backend.as_str()),
            (i, "ping", "alpha")
        );
    }
    drop(tx);
    let end = within(CALL, "end of the answers", replies.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "status OK once the client ended its stream: {end:?}"
    );
    eprintln!("50 ping-pongs: {:?}", started.elapsed());
    lb.stop().await;
}

/// A 4 MiB message each way (many DATA frames, flow control on both hops) comes back intact.
#[tokio::test]
async fn four_mib_message_is_echoed_intact() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let blob: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let reply = within(
        Duration::from_secs(20),
        "4 MiB call",
        client.unary(Request::new(Echo {
            blob: blob.clone(),
            ..echo("big", 4)
        })),
    )
    .await
    .unwrap_or_else(|s| panic!("4 MiB call failed: {s:?}"))
    .into_inner();
    eprintln!("4 MiB echoed in {:?}", started.elapsed());
    assert_eq!(reply.blob.len(), blob.len());
    let differs = reply.blob.iter().zip(&blob).position(|(a, b)| a != b);
    assert_eq!(differs, None, "the echoed bytes differ from this offset");
    assert_eq!(reply.backend, "alpha");
    lb.stop().await;
}

/// 200 calls on ONE client connection are spread over both backends: alb picks per call
/// (per stream), not per connection. alb also keeps to one connection per backend.
#[tokio::test]
async fn calls_on_one_connection_are_balanced_per_call() {
    let _cpu = crate::support::cpu::shared().await;
    let alpha = GrpcBackend::start("alpha").await;
    let beta = GrpcBackend::start("beta").await;
    let lb = balancer(&[&alpha, &beta]).await;
    let connections_before = lb
        .proxy
        .stats()
        .h2_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    let client = EchoClient::connect(lb.addr).await;

    const CALLS: u32 = 200;
    const IN_FLIGHT: u32 = 8;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let mut client = client.clone();
        workers.spawn(async move {
            let mut answered_by = Vec::new();
            for i in (w..CALLS).step_by(IN_FLIGHT as usize) {
                let reply = within(
                    CALL,
                    "unary call",
                    client.unary(Request::new(echo("spread", i))),
                )
                .await
                .unwrap_or_else(|s| panic!("call {i}: {s:?}"))
                .into_inner();
                assert_eq!(reply.n, i);
                answered_by.push(reply.backend);
            }
            answered_by
        });
    }
    let mut shares: HashMap<String, u32> = HashMap::new();
    while let Some(done) = workers.join_next().await {
        for name in done.expect("worker") {
            *shares.entry(name).or_default() += 1;
        }
    }
    eprintln!("{CALLS} calls in {:?}: {shares:?}", started.elapsed());
    let connections = lb
        .proxy
        .stats()
        .h2_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        - connections_before;
    assert_eq!(
        connections, 1,
        "the client used one HTTP/2 connection to alb"
    );
    assert_eq!(shares.values().sum::<u32>(), CALLS);
    for backend in [&alpha, &beta] {
        let share = shares.get(backend.name()).copied().unwrap_or(0);
        assert!(
            share >= CALLS * 30 / 100,
            "{} got {share} of {CALLS}: {shares:?}",
            backend.name()
        );
        assert_eq!(u64::from(share), backend.calls());
    }
    let per_connection = (alpha.calls_per_connection(), beta.calls_per_connection());
    eprintln!(
        "calls per backend connection: alpha {:?}, beta {:?}",
        per_connection.0, per_connection.1
    );
    assert_eq!(
        (per_connection.0.len(), per_connection.1.len()),
        (1, 1),
        "one multiplexed connection from alb per backend: {per_connection:?}"
    );
    lb.stop().await;
}
