//! `dispatch bench-broker`: the broker's own limit for what the services
//! ask of it.
//!
//! Publishes as ingest does (`dispatch_infra::broker`): persistent
//! (delivery mode 2), `mandatory` messages on one connection and one
//! channel in confirm mode, shared by `--in-flight` tasks that each await
//! only their own confirm, so that many publishes are in flight at once
//! and none waits behind another's round trip. The messages are
//! `--bytes` long (by default about the size of the `send` envelope
//! ingest publishes) and go through a topic
//! exchange, like ours, to one durable queue that nothing consumes, as
//! ingest's queue is when `dispatch bench` measures it alone.
//!
//! The exchange and queue are the run's own (`<amqp_prefix>.bench-broker.<id>`)
//! and deleted at the end. Should the run be interrupted, the queue still
//! goes away by itself a minute after the run would have ended
//! (`x-expires`; a queue nobody consumes counts as unused however much is
//! published to it), and the exchange with it (auto-delete).
//!
//! The report: confirmed publishes per second and the confirm latency
//! (from the publish call to its confirm) after a one-second warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

/// About the size of the envelopes ingest publishes for the bench's
/// two-step workflow.
pub const DEFAULT_BYTES: usize = 1024;

/// Publishes before the measured window.
const WARMUP: Duration = Duration::from_secs(1);

/// The routing key, and the pattern that binds the queue.
const ROUTING_KEY: &str = "send.sms";
const BINDING: &str = "workflow.#";

#[derive(clap::Args)]
pub struct Args {
    /// Publishes awaiting their confirm at once, all on the one channel.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Size of each message body.
    #[arg(long, default_value_t = DEFAULT_BYTES)]
    bytes: usize,
    /// How long to measure, after a one-second warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The queue's type.
    #[arg(long, value_enum, default_value_t = QueueKind::Classic)]
    queue_type: QueueKind,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueKind {
    Classic,
    Quorum,
}

impl QueueKind {
    fn as_str(self) -> &'static str {
        match self {
            QueueKind::Classic => "classic",
            QueueKind::Quorum => "quorum",
        }
    }
}

impl From<dispatch_infra::config::QueueType> for QueueKind {
    fn from(kind: dispatch_infra::config::QueueType) -> Self {
        match kind {
            dispatch_infra::config::QueueType::Classic => QueueKind::Classic,
            dispatch_infra::config::QueueType::Quorum => QueueKind::Quorum,
        }
    }
}

/// What to publish, how.
#[derive(Clone, Copy)]
pub struct Load {
    pub in_flight: usize,
    pub bytes: usize,
    pub seconds: u64,
    pub queue_type: QueueKind,
}

/// What the broker did in the measured window.
pub struct Report {
    pub load: Load,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    failed: u64,
    latency_us: Histogram<u64>,
}

impl Report {
    fn new(load: Load) -> anyhow::Result<Self> {
        Ok(Report {
            load,
            confirmed: 0,
            nacked: 0,
            returned: 0,
            failed: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }

    fn add(&mut self, other: &Report) -> anyhow::Result<()> {
        self.confirmed += other.confirmed;
        self.nacked += other.nacked;
        self.returned += other.returned;
        self.failed += other.failed;
        self.latency_us.add(&other.latency_us)?;
        Ok(())
    }

    /// Confirmed publishes per second.
    pub fn per_sec(&self) -> f64 {
        self.confirmed as f64 / self.load.seconds.max(1) as f64
    }

    /// What was published, how often: one line.
    pub fn summary(&self) -> String {
        let load = &self.load;
        format!(
            "{} in flight, {}-byte persistent messages, {} queue, {} s: confirmed {} ({}/s), \
             nacked {}, returned {}, failed {}",
            load.in_flight,
            super::grouped(load.bytes as u64),
            load.queue_type.as_str(),
            load.seconds,
            super::grouped(self.confirmed),
            super::grouped(self.per_sec().round() as u64),
            self.nacked,
            self.returned,
            self.failed,
        )
    }

    /// The confirm latency percentiles: one line.
    pub fn latency(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |q: f64| ms(self.latency_us.value_at_quantile(q));
        format!(
            "confirm latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            q(0.50),
            q(0.99),
            ms(self.latency_us.max())
        )
    }
}

pub async fn run(args: Args, config: &dispatch_infra::Config) -> anyhow::Result<()> {
    let load = Load {
        in_flight: args.in_flight.max(1),
        bytes: args.bytes,
        seconds: args.seconds,
        queue_type: args.queue_type,
    };
    let report = measure(config, load).await?;
    println!("dispatch bench-broker: {}", report.summary());
    println!("{}", report.latency());
    Ok(())
}

/// Publishes `load` to a queue of its own on the configured broker, then
/// deletes the queue.
pub async fn measure(config: &dispatch_infra::Config, load: Load) -> anyhow::Result<Report> {
    let properties =
        ConnectionProperties::default().with_connection_name("dispatch bench-broker".into());
    // The first node: the baseline is one node's rate.
    let url = config.amqp_urls().first().copied().unwrap_or_default();
    let connection = Connection::connect(url, properties).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let names = Names::new(&config.amqp_prefix);
    names.declare(&channel, &load).await?;
    let result = publish(&channel, &names, load).await;
    let deleted = names.delete(&channel).await;
    let _ = connection.close(200, "bench done".into()).await;
    let report = result?;
    deleted?;
    Ok(report)
}

/// The run's exchange and queue.
struct Names {
    exchange: String,
    queue: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let base = format!("{prefix}.bench-broker.{}", &id[..8]);
        Names {
            exchange: base.clone(),
            queue: base,
        }
    }

    async fn declare(&self, channel: &Channel, load: &Load) -> Result<(), lapin::Error> {
        let exchange = ExchangeDeclareOptions {
            durable: true,
            auto_delete: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                exchange,
                FieldTable::default(),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(load.queue_type.as_str().into()),
        );
        let expires = (WARMUP + Duration::from_secs(load.seconds + 60)).as_millis();
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(i64::try_from(expires).unwrap_or(i64::MAX)),
        );
        channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                BINDING.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// The exchange first: deleting the queue would auto-delete it.
    async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }
}

/// `load.in_flight` publishers on the one channel until the window ends.
async fn publish(channel: &Channel, names: &Names, load: Load) -> anyhow::Result<Report> {
    let body: Arc<[u8]> = vec![b'x'; load.bytes].into();
    let warmup = Instant::now() + WARMUP;
    let end = warmup + Duration::from_secs(load.seconds);
    let publishers: Vec<_> = (0..load.in_flight)
        .map(|_| {
            let publisher = Publisher {
                channel: channel.clone(),
                exchange: names.exchange.clone(),
                body: body.clone(),
            };
            tokio::spawn(publisher.run(load, warmup, end))
        })
        .collect();
    let mut total = Report::new(load)?;
    for publisher in publishers {
        total.add(&publisher.await??)?;
    }
    Ok(total)
}

/// One of the publishers: one publish in flight at a time.
struct Publisher {
    channel: Channel,
    exchange: String,
    body: Arc<[u8]>,
}

impl Publisher {
    async fn run(self, load: Load, warmup: Instant, end: Instant) -> anyhow::Result<Report> {
        let mut report = Report::new(load)?;
        loop {
            let start = Instant::now();
            if start >= end {
                break;
            }
            let outcome = self.publish_one().await;
            if start < warmup {
                continue;
            }
            match outcome {
                Ok(Confirmation::Ack(None)) => {
                    report.confirmed += 1;
                    let us = start.elapsed().as_micros() as u64;
                    let _ = report.latency_us.record(us.max(1));
                }
                Ok(Confirmation::Ack(Some(_))) => report.returned += 1,
                Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => report.nacked += 1,
                Err(e) => {
                    report.failed += 1;
                    if !self.channel.status().connected() {
                        return Err(anyhow::anyhow!("the channel closed: {e}"));
                    }
                }
            }
        }
        Ok(report)
    }

    /// Publishes like `Broker::publish_raw`: persistent, mandatory, JSON,
    /// a fresh message id, then waits for this message's confirm.
    async fn publish_one(&self) -> Result<Confirmation, lapin::Error> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(uuid::Uuid::new_v4().to_string().into());
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                ROUTING_KEY.into(),
                options,
                &self.body,
                properties,
            )
            .await?
            .await
    }
}
