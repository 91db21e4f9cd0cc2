//! Broker outages: 503 in the error format while RabbitMQ is unreachable,
//! nothing queued for those requests, and recovery without a restart.

use std::time::Duration;

use crate::cases;
use crate::harness::{Proxy, TestApp, assert_problem, send, test_config};

async fn wait_for_readyz(app: &TestApp, expected: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = send(app.client.get(format!("{}/readyz", app.url))).await;
        if status == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn upstream(amqp_url: &str) -> std::net::SocketAddr {
    let url = url::Url::parse(amqp_url).expect("amqp url");
    let host = url.host_str().expect("host");
    let port = url.port().unwrap_or(5672);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("resolve")
        .next()
        .expect("address")
}

#[tokio::test]
async fn no_broker_means_503_and_nothing_sent() {
    let mut config = test_config();
    let real_url = config.amqp_url.clone();
    let proxy = Proxy::start(upstream(&real_url)).await;
    proxy.cut();
    let mut url = url::Url::parse(&real_url).expect("url");
    url.set_port(Some(proxy.port)).expect("port");
    config.amqp_url = url.to_string();
    let app = TestApp::spawn_with(config).await;

    wait_for_readyz(&app, 503).await;
    let (status, body) = send(app.client.get(format!("{}/readyz", app.url))).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["rabbitmq"], "down");
    assert_eq!(body["checks"]["redis"], "up");
    // A 503 keeps nothing of its Idempotency-Key, so the retry may work.
    let keyed = || {
        app.post("/v0.1/dispatch", &app.account)
            .header("idempotency-key", "retry-after-503")
            .json(&cases::two_steps())
    };
    let (status, body) = send(keyed()).await;
    assert_problem(status, &body, 503);

    // The broker comes back: ingest reconnects by itself.
    proxy.restore();
    wait_for_readyz(&app, 200).await;
    let (status, body) = send(keyed()).await;
    assert_eq!(status, 202, "{body}");
    // Only the request answered 202 is on the queue.
    assert_eq!(app.drain_queued().await.len(), 1);

    // Lost again mid-life: readiness goes red, requests get 503, and it
    // recovers once more.
    proxy.cut();
    wait_for_readyz(&app, 503).await;
    let (status, body) = app.post_json("/v0.1/messages", &cases::sms()).await;
    assert_problem(status, &body, 503);
    proxy.restore();
    wait_for_readyz(&app, 200).await;
    let (status, _) = app.post_json("/v0.1/messages", &cases::sms()).await;
    assert_eq!(status, 202);
    assert_eq!(app.drain_queued().await.len(), 1);
}

#[tokio::test]
async fn no_redis_means_503_not_500() {
    let mut config = test_config();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let healthy = TestApp::spawn().await;
    config.redis_url = format!("redis://127.0.0.1:{port}/");
    let app = TestApp::spawn_with_account(config, healthy.account.clone()).await;
    app.wait_ready().await;
    let (status, body) = send(app.client.get(format!("{}/readyz", app.url))).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["redis"], "down");
    let (status, body) = app.post_json("/v0.1/messages", &cases::sms()).await;
    assert_problem(status, &body, 503);
    assert!(app.drain_queued().await.is_empty());

    // A signed receipt cannot be applied: 503, so that the provider
    // sends it again, rather than a 2xx for something not kept.
    let receipt = serde_json::to_vec(&serde_json::json!({
        "message_id": "sim-1",
        "reference": "00000000-0000-0000-0000-000000000000",
        "status": "delivered",
        "timestamp_ms": 1_700_000_000_000i64,
    }))
    .expect("json");
    let (status, body) = send(
        app.client
            .post(format!("{}/callbacks/simulator", app.url))
            .header(
                dispatch_provider_sim::wire::SIGNATURE_HEADER,
                dispatch_provider_sim::wire::sign(&app.config.simulator_secret, &receipt),
            )
            .body(receipt),
    )
    .await;
    assert_problem(status, &body, 503);
}

#[tokio::test]
async fn with_several_nodes_ingest_uses_one_that_answers_and_moves_when_it_goes() {
    let mut config = test_config();
    let real_url = config.amqp_url.clone();
    let first = Proxy::start(upstream(&real_url)).await;
    let second = Proxy::start(upstream(&real_url)).await;
    let via = |proxy: &Proxy| {
        let mut url = url::Url::parse(&real_url).expect("url");
        url.set_port(Some(proxy.port)).expect("port");
        url.to_string()
    };
    // The first node listed does not answer.
    first.cut();
    config.amqp_url = format!("{}, {}", via(&first), via(&second));
    let app = TestApp::spawn_with(config).await;
    wait_for_readyz(&app, 200).await;
    let (status, body) = app.post_json("/v0.1/messages", &cases::sms()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.drain_queued().await.len(), 1);

    // Its node goes away: ingest moves to the other, without a restart.
    // (Until it notices, a request is still answered 202 once written, and
    // its send is published by the outbox's recovery, which this harness
    // does not run: only a send published through the other node counts.)
    first.restore();
    second.cut();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = app.post_json("/v0.1/messages", &cases::sms()).await;
        if status == 202 && !app.drain_queued().await.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never moved to the node that answers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
