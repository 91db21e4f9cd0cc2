//! `dispatch bench-webhooks`: webhook deliveries per second.
//!
//! Under a private prefix: an account and an application whose
//! `status_url` is a local receiver (answering after `--receiver-delay-ms`),
//! a notifier running in this process (beside a timer the caller starts), and `--jobs` webhook
//! jobs published to the queue up front. Reports deliveries per second from the first
//! delivery to the last, and the receiver's view of concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dispatch_infra::broker::Broker;
use dispatch_infra::redis::Keys;
use dispatch_infra::{Config, Connections};
use dispatch_model::application::{
    ApplicationRecord, Capabilities, MessagesCapability, MessagesWebhooks, Webhook,
};
use dispatch_model::envelope::{Envelope, WebhookJob, WebhookKind};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Webhooks to deliver.
    #[arg(long, default_value_t = 30_000)]
    pub jobs: usize,
    /// How long the receiver takes to answer each webhook.
    #[arg(long, default_value_t = 0)]
    pub receiver_delay_ms: u64,
}

/// The bench's own configuration: `config` under a private prefix, so that
/// it touches nothing else. The timer that brings back deferred webhooks
/// (started by the caller) must run with it too.
pub fn private_config(config: &Config) -> Config {
    let tag = format!("wbench{}", uuid::Uuid::new_v4().simple());
    let mut config = config.clone();
    config.redis_prefix = tag.clone();
    config.amqp_prefix = tag;
    config.amqp_queue_expires_ms = Some(60_000);
    config.allow_private_webhooks = true;
    config
}

/// Runs the bench with a configuration from [`private_config`].
pub async fn run_bench(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();

    // The receiver.
    let received = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let delay = Duration::from_millis(args.receiver_delay_ms);
    let app = {
        let (received, in_flight, peak, first) = (
            received.clone(),
            in_flight.clone(),
            peak.clone(),
            first.clone(),
        );
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let (received, in_flight, peak, first) = (
                    received.clone(),
                    in_flight.clone(),
                    peak.clone(),
                    first.clone(),
                );
                async move {
                    first.get_or_init(Instant::now);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });

    // The account and application, straight into Redis.
    let connections = Connections::open(&config, "bench")?;
    let keys = Keys::for_config(&config);
    let app_id = uuid::Uuid::new_v4();
    let application = ApplicationRecord {
        id: app_id,
        account: "bench".into(),
        name: "bench".into(),
        capabilities: Capabilities {
            messages: Some(MessagesCapability {
                version: None,
                webhooks: MessagesWebhooks {
                    status_url: Some(Webhook {
                        address: hook,
                        http_method: "POST".into(),
                    }),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut redis = connections.redis.clone();
    redis::pipe()
        .set(
            keys.application(&app_id.to_string()),
            serde_json::to_string(&application)?,
        )
        .hset(keys.account("bench"), "signature_secret", "bench-secret")
        .exec_async(&mut redis)
        .await?;

    let broker: Broker = connections.broker.clone();
    anyhow::ensure!(
        broker.wait_ready(Duration::from_secs(10)).await,
        "cannot reach RabbitMQ"
    );
    println!(
        "publishing {} webhook jobs (receiver answers after {} ms)",
        args.jobs, args.receiver_delay_ms
    );
    let publish = |i: usize| {
        let broker = broker.clone();
        async move {
            let job = WebhookJob {
                webhook_id: format!("bench-{i}"),
                kind: WebhookKind::MessageStatus,
                account: "bench".into(),
                application_id: Some(app_id),
                workflow_id: app_id,
                event_at_ms: 0,
                body: json!({"message_uuid": i.to_string(), "status": "delivered"}),
                url: None,
                attempts: 0,
                reason: None,
            };
            broker.publish(&Envelope::Webhook(job)).await
        }
    };
    for start in (0..args.jobs).step_by(1000) {
        let end = (start + 1000).min(args.jobs);
        for result in futures_util::future::join_all((start..end).map(publish)).await {
            result?;
        }
    }

    let notifier = tokio::spawn(crate::run_with(
        config.clone(),
        connections.clone(),
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.load(Ordering::SeqCst) < args.jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let n = received.load(Ordering::SeqCst);
    let started = first.get().copied().unwrap_or(done);
    let secs = done.duration_since(started).as_secs_f64().max(1e-9);
    println!(
        "delivered {n} of {} in {secs:.2} s: {:.0} deliveries/s; at most {} in flight at the receiver (notifier_concurrency {}, per origin {})",
        args.jobs,
        n as f64 / secs,
        peak.load(Ordering::SeqCst),
        config.notifier_concurrency,
        config.webhook_concurrency_per_host,
    );
    shutdown.cancel();
    let _ = notifier.await;
    let mut cleanup = redis::pipe();
    cleanup
        .del(keys.application(&app_id.to_string()))
        .del(keys.account("bench"));
    for i in 0..args.jobs {
        cleanup.del(keys.webhook_delivered(&format!("bench-{i}")));
    }
    cleanup.exec_async(&mut redis).await?;
    Ok(())
}
