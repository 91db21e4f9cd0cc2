//! What an open circuit costs: with 10,000 webhooks waiting for one
//! endpoint, each open period takes a fixed number of Redis commands,
//! broker publishes and timer entries, whatever the number waiting.
//!
//! Redis commands are counted by the server (`INFO stats`), so this test
//! is its own test binary: `cargo test` runs binaries one after another,
//! and nothing else talks to Redis meanwhile but this test's notifier and
//! timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::redis::Keys;
use dispatch_model::envelope::{Envelope, WebhookJob, WebhookKind};
use dispatch_notifier::circuit::{endpoint_id, endpoint_of};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WAITING: usize = 10_000;
const OPEN_MS: u64 = 1_000;
const PERIODS: u64 = 3;

async fn redis_commands(redis: &mut dispatch_infra::redis::Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(redis)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_commands_processed")
}

/// Confirmed publishes counted by this process's metrics.
fn publishes() -> u64 {
    let text = dispatch_infra::telemetry::metrics_handle().render();
    text.lines()
        .filter(|l| l.starts_with("dispatch_amqp_publishes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn an_open_circuit_costs_the_same_per_period_whatever_waits() {
    dispatch_infra::telemetry::metrics_handle();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut config = Config::load(None).expect("config");
    config.redis_prefix = format!("circuit-{tag}");
    config.amqp_prefix = format!("circuit-{tag}");
    config.amqp_queue_expires_ms = Some(60_000);
    config.allow_private_webhooks = true;
    config.webhook_retry_schedule_ms = vec![0, 3_600_000, 3_600_000];
    config.webhook_circuit_failures = 3;
    config.webhook_circuit_open_ms = OPEN_MS;
    config.webhook_circuit_open_max_ms = OPEN_MS;
    config.timer_max_idle_ms = 1_000;
    // What is counted is the circuit's cost: one timer shard, so that the
    // timer's idle claims (one per shard per `timer_max_idle_ms`) stay out
    // of the figure.
    config.timer_shards = 1;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();

    // The endpoint: always 500.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::INTERNAL_SERVER_ERROR }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let connections = dispatch_infra::Connections::open(&config, "circuit-test").expect("open");
    let keys = Keys::for_config(&config);
    let mut redis = connections.redis.clone();
    let app_id = uuid::Uuid::new_v4();
    let application = json!({
        "id": app_id, "account": "acct", "name": "circuit",
        "capabilities": {"messages": {"webhooks": {
            "status_url": {"address": hook, "http_method": "POST"}}}},
        "public_key": "", "created_at_ms": 0,
    });
    redis::pipe()
        .set(
            keys.application(&app_id.to_string()),
            application.to_string(),
        )
        .hset(keys.account("acct"), "signature_secret", "secret")
        .exec_async(&mut redis)
        .await
        .expect("setup");

    let broker: Broker = connections.broker.clone();
    assert!(broker.wait_ready(Duration::from_secs(10)).await);
    tokio::spawn(dispatch_timer::run_with(
        config.clone(),
        connections.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(dispatch_notifier::run_with(
        config.clone(),
        connections.clone(),
        shutdown.clone(),
    ));
    let jobs = (0..WAITING).map(|i| {
        let broker = broker.clone();
        let job = WebhookJob {
            webhook_id: format!("w{i}"),
            kind: WebhookKind::MessageStatus,
            account: "acct".into(),
            application_id: Some(app_id),
            workflow_id: app_id,
            event_at_ms: 0,
            body: json!({"status": "delivered", "n": i}),
            url: None,
            attempts: 0,
            reason: None,
        };
        async move { broker.publish(&Envelope::Webhook(job)).await }
    });
    for published in futures_util::future::join_all(jobs).await {
        published.expect("published");
    }

    // Everything parked but the few that opened the circuit.
    let id = endpoint_id(&endpoint_of(&hook.parse().expect("url")));
    let parked_key = keys.circuit_parked(&id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let parked: usize = redis::cmd("LLEN")
            .arg(&parked_key)
            .query_async(&mut redis)
            .await
            .expect("LLEN");
        if parked >= WAITING - 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {parked} parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last consumes settle, then measure whole periods.
    tokio::time::sleep(Duration::from_millis(OPEN_MS)).await;
    // Retries scheduled before the circuit opened; the probe's entry
    // comes and goes as it fires, so it is not counted.
    let timer_entries = || async {
        let mut redis = connections.redis.clone();
        let mut ids: Vec<String> = Vec::new();
        for shard in 0..keys.timer_shards() {
            let shard_ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys.timer_due(shard))
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .expect("ZRANGE");
            ids.extend(shard_ids);
        }
        ids.iter()
            .filter(|id| !id.starts_with("webhook-probe:"))
            .count()
    };
    let (commands, published, tried, entries) = (
        redis_commands(&mut redis).await,
        publishes(),
        calls.load(Ordering::SeqCst),
        timer_entries().await,
    );
    tokio::time::sleep(Duration::from_millis(OPEN_MS * PERIODS)).await;
    let commands = redis_commands(&mut redis).await - commands - 1;
    let published = publishes() - published;
    let tried = calls.load(Ordering::SeqCst) - tried;
    let (entries_before, entries) = (entries, timer_entries().await);
    let state: Option<String> = redis::cmd("HGET")
        .arg(keys.circuit(&id))
        .arg("state")
        .query_async(&mut redis)
        .await
        .expect("HGET");
    let parked: usize = redis::cmd("LLEN")
        .arg(&parked_key)
        .query_async(&mut redis)
        .await
        .expect("LLEN");
    println!(
        "over {PERIODS} open periods with {parked} webhooks waiting: {commands} Redis commands, \
         {published} publishes, {tried} HTTP attempts; timer entries {entries_before} then {entries}"
    );
    assert!(parked >= WAITING - 10, "the waiting webhooks stay parked");
    assert_eq!(entries, entries_before, "no timer entries added while open");
    assert!(
        matches!(state.as_deref(), Some("open" | "probing")),
        "the circuit stays open: {state:?}"
    );
    let periods = PERIODS + 1;
    assert!(
        tried as u64 <= periods,
        "{tried} attempts: one probe per period"
    );
    assert!(
        published <= periods,
        "{published} publishes: the probe's, once per period"
    );
    // About 40 a period: the timer's polls and the probe with its
    // circuit bookkeeping, and the probe's entry in its workflow's webhook
    // log and the account's counters (5); none of it grows with what
    // waits.
    assert!(
        commands <= 48 * periods,
        "{commands} Redis commands over {PERIODS} periods"
    );
}
