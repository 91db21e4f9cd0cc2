//! Test harness: a private Redis prefix and exchange, a queue bound to
//! `test.#` on it, and timers started on demand.

#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::redis::{Keys, Redis};
use dispatch_timer::Scheduler;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A fired event, as the test queue received it.
#[derive(Debug)]
pub struct Fired {
    pub at_ms: i64,
    pub routing_key: String,
    pub message_id: String,
    pub payload: String,
}

pub struct Harness {
    pub config: Config,
    pub keys: Keys,
    pub redis: Redis,
    pub scheduler: Scheduler,
    broker: Broker,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    queue: String,
    infra: CancellationToken,
    timers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Harness {
    pub async fn new(tune: impl FnOnce(&mut Config)) -> Self {
        let _ = dispatch_infra::telemetry::init_with_default_level("timer-test", "warn");
        let mut config = Config::load(None).expect("DISPATCH_* configuration (source /tmp/devenv)");
        let mut prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        prefix.truncate(64);
        config.redis_prefix = prefix.clone();
        config.amqp_prefix = prefix.clone();
        config.amqp_queue_expires_ms = Some(60_000);
        tune(&mut config);
        let keys = Keys::for_config(&config);
        let redis = dispatch_infra::redis::connect(&config).expect("redis");
        let scheduler = Scheduler::new(redis.clone(), keys.clone());
        let infra = CancellationToken::new();
        let broker = Broker::start(&config, "timer-test", infra.clone());
        assert!(
            broker.wait_ready(Duration::from_secs(5)).await,
            "RabbitMQ not reachable"
        );
        let connection = broker.connection().expect("connection");
        let channel = connection.create_channel().await.expect("channel");
        let queue = format!("{prefix}.test");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                prefix.as_str().into(),
                "test.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Self {
            config,
            keys,
            redis,
            scheduler,
            broker,
            channel,
            consumer,
            queue,
            infra,
            timers: Vec::new(),
        }
    }

    /// Starts a timer with the harness configuration.
    pub fn start_timer(&mut self) {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(dispatch_timer::run(self.config.clone(), shutdown.clone()));
        self.timers.push((shutdown, handle));
    }

    /// Waits until `n` timers are subscribed to wake-ups.
    pub async fn wait_subscribed(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut conn = self.redis.clone();
            let (_, count): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(self.keys.timer_wake())
                .query_async(&mut conn)
                .await
                .expect("PUBSUB NUMSUB");
            if count >= n {
                return;
            }
            assert!(Instant::now() < deadline, "timers did not subscribe");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The next fired event, or `None` after `timeout`.
    pub async fn next_fired(&mut self, timeout: Duration) -> Option<Fired> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()?
            .expect("consumer ended")
            .expect("delivery");
        Some(Fired {
            at_ms: now_ms(),
            routing_key: delivery.routing_key.to_string(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            payload: String::from_utf8(delivery.data).expect("utf-8 payload"),
        })
    }

    /// Polls until the set is empty (every fired entry acked).
    pub async fn wait_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let pending = self.scheduler.pending().await.expect("pending");
            if pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{pending} entries never acked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the timers, deletes the keys, queues and exchange.
    pub async fn finish(self) {
        for (shutdown, _) in &self.timers {
            shutdown.cancel();
        }
        for (_, handle) in self.timers {
            handle.await.expect("timer task").expect("timer run");
        }
        let mut conn = self.redis.clone();
        for shard in 0..self.keys.timer_shards() {
            redis::cmd("DEL")
                .arg(self.keys.timer_due(shard))
                .arg(self.keys.timer_entries(shard))
                .exec_async(&mut conn)
                .await
                .expect("DEL");
        }
        let topology = self.broker.topology();
        let mut queues: Vec<String> = topology.queues().into_iter().map(|q| q.name).collect();
        queues.push(self.queue.clone());
        for queue in queues {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self
            .channel
            .exchange_delete(
                topology.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        self.infra.cancel();
    }
}
