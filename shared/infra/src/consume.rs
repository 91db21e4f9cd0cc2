//! Consuming a queue: at-least-once, concurrent, and back after outages.
//!
//! [`consume`] opens its own channel on the broker's connection, takes up
//! to `prefetch` unacknowledged deliveries at once, and runs the handler for
//! each in its own task, inside a span that continues the publisher's trace.
//! The handler's [`Outcome`] decides the acknowledgement, which is sent only
//! after the handler returned, so effects are durable before the broker
//! forgets the message; acks are batched (see [`Acks`]). When the connection drops, unacknowledged
//! deliveries go back to the queue and the loop resumes on the next
//! connection. On shutdown it stops taking deliveries, gives in-flight
//! handlers `grace` to finish, then closes the channel so whatever is left
//! is redelivered elsewhere.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::telemetry;

/// One delivery, as a handler sees it.
#[derive(Debug)]
pub struct Incoming {
    pub routing_key: String,
    pub payload: Vec<u8>,
    /// The broker delivered it before (to this or another consumer).
    pub redelivered: bool,
}

/// What to do with a delivery once its handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (or deliberately ignored): forget it.
    Ack,
    /// Could not be handled now (Redis or the broker unreachable): put it
    /// back after `retry_delay`.
    Retry,
    /// Can never be handled (undecodable): drop it, to the dead-letter
    /// exchange when one is configured.
    Reject,
}

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub queue: String,
    /// The queue's metric label (its name without the prefix).
    label: &'static str,
    pub prefetch: u16,
    /// How long a `Retry` waits before the delivery is requeued; it keeps
    /// its prefetch slot meanwhile, which slows the consumer down while a
    /// dependency is out.
    pub retry_delay: Duration,
    /// How long in-flight handlers get on shutdown.
    pub grace: Duration,
}

impl ConsumeOptions {
    pub fn new(queue: String, prefetch: u16) -> Self {
        Self {
            label: crate::broker::queue_name_label(&queue),
            queue,
            prefetch,
            retry_delay: Duration::from_millis(500),
            grace: Duration::from_secs(10),
        }
    }

    /// How long in-flight handlers get on shutdown (`shutdown_grace_ms`).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// Runs until `shutdown`, reconnecting as needed.
pub async fn consume<H, F>(
    broker: Broker,
    options: ConsumeOptions,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let Some(connection) = broker.connection() else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        };
        let started = tokio::time::Instant::now();
        match consume_on(&connection, &options, &shutdown, &handler).await {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(10) {
                    // It had been working: this is a new outage.
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!(queue = %options.queue, error = %e, "consumer interrupted; resuming");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the broker cancelled the consumer (queue deleted?)")]
    Cancelled,
}

/// `Ok` on shutdown; `Err` when the channel or connection failed.
async fn consume_on<H, F>(
    connection: &lapin::Connection,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    handler: &H,
) -> Result<(), ConsumeError>
where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(options.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            options.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::debug!(queue = %options.queue, "consuming");
    let mut tasks = JoinSet::new();
    // Which delivery each task handles, to settle it even if it panics.
    let mut tags: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut acks = Acks::new(options.label, options.prefetch);
    let mut tick = tokio::time::interval(ACK_DELAY);
    let mut depth_tick = tokio::time::interval(DEPTH_SAMPLE);
    let ended: Result<(), ConsumeError> = loop {
        let step: Result<(), ConsumeError> = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = depth_tick.tick() => sample_depth(&channel, options).await.map_err(Into::into),
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (tag, outcome) = finished(&mut tags, done);
                acks.settle(&channel, tag, outcome).await.map_err(Into::into)
            }
            _ = tick.tick() => acks.flush(&channel, true).await.map_err(Into::into),
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    acks.started(delivery.delivery_tag);
                    let tag = delivery.delivery_tag;
                    let task = tasks.spawn(handle(delivery, options.clone(), handler.clone()));
                    tags.insert(task.id(), tag);
                    Ok(())
                }
                Some(Err(e)) => Err(e.into()),
                None => Err(ConsumeError::Cancelled),
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    if ended.is_ok() {
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        let drained = async {
            while let Some(done) = tasks.join_next_with_id().await {
                let (tag, outcome) = finished(&mut tags, done);
                let _ = acks.settle(&channel, tag, outcome).await;
            }
        };
        let _ = tokio::time::timeout(options.grace, drained).await;
        let _ = acks.flush(&channel, true).await;
        let _ = channel.close(200, "shutting down".into()).await;
    }
    // Handlers still running (channel lost, or past the grace period) are
    // not aborted here: their deliveries go back to the queue, and a
    // handler that finishes its effects (a provider call and its record)
    // spares the redelivery from doing them again. (A process exiting
    // drops them a moment later; the redelivery then does the work.)
    if !tasks.is_empty() {
        tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
    }
    ended
}

/// How often a consumer reports its queue's depth.
const DEPTH_SAMPLE: Duration = Duration::from_secs(5);

/// Sets `dispatch_queue_messages` from a passive declare (which also
/// notices a deleted queue).
async fn sample_depth(
    channel: &lapin::Channel,
    options: &ConsumeOptions,
) -> Result<(), lapin::Error> {
    let queue = channel
        .queue_declare(
            options.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    metrics::gauge!("dispatch_queue_messages", "queue" => options.label)
        .set(f64::from(queue.message_count()));
    Ok(())
}

/// The delivery a finished task handled and what to do with it; a handler
/// that panicked is a bug that would panic again, so its delivery is
/// rejected (dead-lettered) rather than retried.
fn finished(
    tags: &mut HashMap<tokio::task::Id, u64>,
    done: Result<(tokio::task::Id, (u64, Outcome)), tokio::task::JoinError>,
) -> (u64, Outcome) {
    match done {
        Ok((id, result)) => {
            tags.remove(&id);
            result
        }
        Err(e) => {
            tracing::error!(error = %e, "a message handler panicked; rejecting its delivery");
            (tags.remove(&e.id()).unwrap_or_default(), Outcome::Reject)
        }
    }
}

/// Longest an ack waits to be sent together with later ones.
const ACK_DELAY: Duration = Duration::from_millis(5);

/// Acknowledgements, sent in batches: one `basic.ack` with `multiple`
/// covers every delivery up to a tag, which costs the broker far less
/// than one ack per message. `multiple` may only cover tags whose handlers
/// are done, so deliveries finished after a slow one (a provider retrying
/// for seconds) are acked one by one instead once a batch of them waits,
/// or at the next tick: a slow handler never holds back the others' acks
/// (nor, through the prefetch window, new deliveries). Retries and
/// rejections are settled one by one, at once.
struct Acks {
    /// The queue's metric label.
    queue: &'static str,
    /// Deliveries whose handlers have not returned.
    running: BTreeSet<u64>,
    /// Handled deliveries waiting for their ack.
    ready: BTreeSet<u64>,
    batch: usize,
}

impl Acks {
    fn new(queue: &'static str, prefetch: u16) -> Self {
        Self {
            queue,
            running: BTreeSet::new(),
            ready: BTreeSet::new(),
            batch: usize::from(prefetch / 4).max(1),
        }
    }

    fn started(&mut self, tag: u64) {
        self.running.insert(tag);
    }

    async fn settle(
        &mut self,
        channel: &lapin::Channel,
        tag: u64,
        outcome: Outcome,
    ) -> Result<(), lapin::Error> {
        self.running.remove(&tag);
        let label = match outcome {
            Outcome::Ack => "ack",
            Outcome::Retry => "requeue",
            Outcome::Reject => "reject",
        };
        metrics::counter!("dispatch_amqp_settled_total", "queue" => self.queue, "outcome" => label)
            .increment(1);
        match outcome {
            Outcome::Ack => {
                self.ready.insert(tag);
                if self.ready.len() >= self.batch {
                    self.flush(channel, false).await?;
                }
            }
            Outcome::Retry => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                channel.basic_nack(tag, requeue).await?;
            }
            Outcome::Reject => {
                channel
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await?;
            }
        }
        Ok(())
    }

    /// Acks every ready delivery below the oldest one still running with
    /// one `multiple` ack; the ready ones above it one by one, when `all`
    /// or when a batch of them waits.
    async fn flush(&mut self, channel: &lapin::Channel, all: bool) -> Result<(), lapin::Error> {
        let limit = self.running.first().copied().unwrap_or(u64::MAX);
        if let Some(&upto) = self.ready.range(..limit).next_back() {
            channel
                .basic_ack(upto, BasicAckOptions { multiple: true })
                .await?;
            self.ready = self.ready.split_off(&(upto + 1));
        }
        if all || self.ready.len() >= self.batch {
            while let Some(tag) = self.ready.pop_first() {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: false })
                    .await?;
            }
        }
        Ok(())
    }
}

/// Runs the handler; the caller settles the delivery.
async fn handle<H, F>(delivery: Delivery, options: ConsumeOptions, handler: H) -> (u64, Outcome)
where
    H: Fn(Incoming) -> F,
    F: Future<Output = Outcome>,
{
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        queue = %options.queue,
        routing_key = %delivery.routing_key,
        redelivered = delivery.redelivered,
    );
    telemetry::set_parent_from(&span, &headers(&delivery));
    metrics::counter!(
        "dispatch_amqp_deliveries_total",
        "queue" => options.label,
        "redelivered" => if delivery.redelivered { "true" } else { "false" },
    )
    .increment(1);
    let started = std::time::Instant::now();
    let tag = delivery.delivery_tag;
    let incoming = Incoming {
        routing_key: delivery.routing_key.to_string(),
        payload: delivery.data,
        redelivered: delivery.redelivered,
    };
    let outcome = handler(incoming).instrument(span.clone()).await;
    metrics::histogram!("dispatch_amqp_handler_duration_seconds", "queue" => options.label)
        .record(started.elapsed());
    match outcome {
        Outcome::Retry => tokio::time::sleep(options.retry_delay).await,
        Outcome::Reject => span.in_scope(|| tracing::warn!("rejecting an undecodable delivery")),
        Outcome::Ack => {}
    }
    (tag, outcome)
}

fn headers(delivery: &Delivery) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(table) = delivery.properties.headers() {
        for (key, value) in table.inner() {
            if let Some(value) = value.as_long_string() {
                out.insert(key.to_string(), value.to_string());
            }
        }
    }
    out
}
