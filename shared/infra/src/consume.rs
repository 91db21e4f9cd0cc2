//! Consuming a queue: at-least-once, concurrent, and back after outages.
//!
//! [`consume`] opens its own channel on the broker's connection, takes up
//! to `prefetch` unacknowledged deliveries at once, and runs the handler for
//! each in its own task, inside a span that continues the publisher's trace.
//! The handler's [`Outcome`] decides the acknowledgement, which is sent only
//! after the handler returned, so effects are durable before the broker
//! forgets the message. When the connection drops, unacknowledged
//! deliveries go back to the queue and the loop resumes on the next
//! connection. On shutdown it stops taking deliveries, gives in-flight
//! handlers `grace` to finish, then closes the channel so whatever is left
//! is redelivered elsewhere.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
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
            queue,
            prefetch,
            retry_delay: Duration::from_millis(500),
            grace: Duration::from_secs(10),
        }
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
        match consume_on(&connection, &options, &shutdown, &handler).await {
            Ok(()) => break,
            Err(e) => {
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
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    tasks.spawn(handle(delivery, options.clone(), handler.clone()));
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(ConsumeError::Cancelled),
            },
        }
    };
    if ended.is_ok() {
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        let drained = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(options.grace, drained).await;
        let _ = channel.close(200, "shutting down".into()).await;
    }
    ended
}

async fn handle<H, F>(delivery: Delivery, options: ConsumeOptions, handler: H)
where
    H: Fn(Incoming) -> F,
    F: Future<Output = Outcome>,
{
    let span = tracing::info_span!(
        "consume",
        queue = %options.queue,
        routing_key = %delivery.routing_key,
        redelivered = delivery.redelivered,
    );
    telemetry::set_parent_from(&span, &headers(&delivery));
    let incoming = Incoming {
        routing_key: delivery.routing_key.to_string(),
        payload: delivery.data.clone(),
        redelivered: delivery.redelivered,
    };
    let outcome = handler(incoming).instrument(span.clone()).await;
    let acked = match outcome {
        Outcome::Ack => delivery.ack(BasicAckOptions::default()).await,
        Outcome::Retry => {
            tokio::time::sleep(options.retry_delay).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
        Outcome::Reject => {
            span.in_scope(|| tracing::warn!("rejecting an undecodable delivery"));
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
    };
    if let Err(e) = acked {
        // The channel is gone: the broker redelivers it, and handlers are
        // idempotent.
        span.in_scope(|| tracing::debug!(error = %e, "could not acknowledge"));
    }
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
