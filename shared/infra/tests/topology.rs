//! The queue settings an operator chooses (queue type, dead-lettering,
//! delivery limit), against the real RabbitMQ named by
//! `DISPATCH_AMQP_URL`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::config::QueueType;
use dispatch_infra::consume::{ConsumeOptions, Outcome, consume};
use lapin::options::BasicGetOptions;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::load(None).expect("config from the environment");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    config.amqp_prefix = format!("test-{tag}");
    config.amqp_queue_expires_ms = Some(60_000);
    config.amqp_dead_letter = true;
    tweak(&mut config);
    config
}

/// Consumes the workflow queue with a handler that always answers
/// `outcome`, publishes one message, and returns how often the handler
/// saw it and what reached the dead-letter queue.
async fn run(config: Config, outcome: Outcome) -> (usize, Vec<Vec<u8>>) {
    let shutdown = CancellationToken::new();
    let broker = Broker::start(&config, "topology-test", shutdown.clone());
    assert!(broker.wait_ready(Duration::from_secs(10)).await, "broker");
    let seen = Arc::new(AtomicUsize::new(0));
    let mut options = ConsumeOptions::new(broker.topology().workflow_queue(), 4);
    options.retry_delay = Duration::from_millis(10);
    let counter = seen.clone();
    tokio::spawn(consume(
        broker.clone(),
        options,
        shutdown.clone(),
        move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { outcome }
        },
    ));
    broker
        .publish_raw("workflow.poison", "poison-1", b"{\"not\":\"an envelope\"}")
        .await
        .expect("published");

    let connection = Connection::connect(&config.amqp_url, ConnectionProperties::default())
        .await
        .expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    let queue = broker.topology().dead_letter_queue();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut dead = Vec::new();
    while dead.is_empty() && tokio::time::Instant::now() < deadline {
        if let Some(m) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
        {
            dead.push(m.delivery.data.clone());
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shutdown.cancel();
    let _ = connection.close(200, "done".into()).await;
    (seen.load(Ordering::SeqCst), dead)
}

#[tokio::test]
async fn a_rejected_delivery_is_dead_lettered() {
    let (seen, dead) = run(config(|_| {}), Outcome::Reject).await;
    assert_eq!(seen, 1);
    assert_eq!(dead, vec![b"{\"not\":\"an envelope\"}".to_vec()]);
}

#[tokio::test]
async fn a_quorum_queue_dead_letters_a_delivery_handed_back_past_its_limit() {
    let config = config(|c| {
        c.amqp_queue_type = QueueType::Quorum;
        c.amqp_delivery_limit = Some(2);
    });
    let (seen, dead) = run(config, Outcome::Retry).await;
    assert_eq!(dead.len(), 1, "dead-lettered once the limit was passed");
    // The first delivery and two redeliveries.
    assert_eq!(seen, 3);
}
