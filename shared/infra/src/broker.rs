//! RabbitMQ: one connection per process, supervised, and a publisher that
//! answers only once the broker has confirmed.
//!
//! The supervisor task connects, declares the topology, and then watches
//! the connection; when it drops, publishes fail fast with
//! [`PublishError::NotConnected`] (ingest answers 503, readiness goes red)
//! while the supervisor reconnects with capped exponential backoff.
//!
//! Publishing: the channel is in confirm mode and shared by every task.
//! Each publish awaits only its own confirm, so concurrent requests never
//! queue behind one another's round trip; lapin tracks delivery tags. Every
//! publish is `mandatory`: a message that no queue would take comes back as
//! a return, and counts as a failure rather than silently vanishing.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use dispatch_model::Channel as MessageChannel;
use dispatch_model::envelope::{Envelope, send_routing_key};
use futures_util::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, QueueType};
use crate::telemetry;

/// How long connecting to one RabbitMQ node may take before the next is
/// tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Names of the exchange and queues, derived from `amqp_prefix`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue_type: QueueType,
    queue_expires_ms: Option<u64>,
    dead_letter: bool,
    delivery_limit: Option<u32>,
    prefix: String,
}

/// A queue and the routing-key patterns bound to it.
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<String>,
}

impl Topology {
    pub fn new(config: &Config) -> Self {
        Self {
            exchange: config.amqp_prefix.clone(),
            queue_type: config.amqp_queue_type,
            queue_expires_ms: config.amqp_queue_expires_ms,
            dead_letter: config.amqp_dead_letter,
            delivery_limit: config.amqp_delivery_limit,
            prefix: config.amqp_prefix.clone(),
        }
    }

    /// The queue of the topology before transitions were applied where
    /// their events arise (accepted work, status events, fired
    /// deadlines); timers drain it after an upgrade, nothing publishes to
    /// it now.
    pub fn workflow_queue(&self) -> String {
        format!("{}.workflow", self.prefix)
    }

    /// The queue a channel's senders consume.
    pub fn send_queue(&self, channel: MessageChannel) -> String {
        format!("{}.{}", self.prefix, send_routing_key(channel))
    }

    /// Webhook jobs, consumed by the notifier.
    pub fn webhooks_queue(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// Where rejected deliveries go when `amqp_dead_letter` is on (or a
    /// policy says so): a fanout exchange and one queue bound to it,
    /// declared in every case.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }

    /// The arguments every work queue is declared with. Only what the
    /// configuration asks for: RabbitMQ refuses to redeclare a queue with
    /// other arguments (PRECONDITION_FAILED), so an argument added here
    /// unconditionally would stop an upgraded service from using its
    /// existing queues. Defaults therefore add nothing new; tune running
    /// queues with policies instead (docs/configuration.md).
    fn queue_arguments(&self) -> FieldTable {
        let mut args = self.base_arguments();
        if self.dead_letter {
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.dead_letter_exchange().into()),
            );
        }
        if let Some(limit) = self.delivery_limit {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(limit.into()),
            );
        }
        args
    }

    pub fn queues(&self) -> Vec<QueueSpec> {
        let mut queues = vec![
            QueueSpec {
                name: self.workflow_queue(),
                bindings: vec!["workflow.#".into()],
            },
            QueueSpec {
                name: self.webhooks_queue(),
                bindings: vec!["webhook.#".into()],
            },
        ];
        queues.extend(MessageChannel::ALL.into_iter().map(|channel| QueueSpec {
            name: self.send_queue(channel),
            bindings: vec![send_routing_key(channel)],
        }));
        queues
    }

    /// Declares the exchange and every queue; idempotent, run on each
    /// (re)connect so a fresh broker is usable at once.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                // Durable: survives a broker restart together with the
                // durable queues and persistent messages.
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        // Always there (new names never conflict with existing queues), so
        // that dead-lettering set by a policy has somewhere to go.
        self.declare_dead_letters(channel).await?;
        for queue in self.queues() {
            channel
                .queue_declare(
                    queue.name.as_str().into(),
                    QueueDeclareOptions::durable(),
                    self.queue_arguments(),
                )
                .await?;
            for pattern in queue.bindings {
                channel
                    .queue_bind(
                        queue.name.as_str().into(),
                        self.exchange.as_str().into(),
                        pattern.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Queue type and expiry: what every queue, the dead letters' too, is
    /// declared with.
    fn base_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(self.queue_type.as_str().into()),
        );
        if let Some(ms) = self.queue_expires_ms {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        args
    }

    async fn declare_dead_letters(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let exchange = self.dead_letter_exchange();
        let queue = self.dead_letter_queue();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                self.base_arguments(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// The queue a routing key lands in, without the prefix: a bounded
/// metric label (`workflow`, `webhooks`, `send.<channel>`, `other`).
pub fn queue_label(routing_key: &str) -> &'static str {
    if routing_key.starts_with("workflow.") {
        return "workflow";
    }
    if routing_key.starts_with("webhook.") {
        return "webhooks";
    }
    MessageChannel::ALL
        .into_iter()
        .find(|c| send_routing_key(*c) == routing_key)
        .map(send_label)
        .unwrap_or("other")
}

/// [`queue_label`] of a queue's full name (`<prefix>.workflow`, …).
pub fn queue_name_label(queue: &str) -> &'static str {
    let Some((_, tail)) = queue.rsplit_once('.') else {
        return "other";
    };
    match tail {
        "workflow" => "workflow",
        "webhooks" => "webhooks",
        "dead-letters" => "dead-letters",
        _ => MessageChannel::ALL
            .into_iter()
            .find(|c| c.as_str() == tail && queue.ends_with(&format!(".send.{tail}")))
            .map(send_label)
            .unwrap_or("other"),
    }
}

fn send_label(channel: MessageChannel) -> &'static str {
    match channel {
        MessageChannel::Sms => "send.sms",
        MessageChannel::Mms => "send.mms",
        MessageChannel::Whatsapp => "send.whatsapp",
        MessageChannel::Messenger => "send.messenger",
        MessageChannel::ViberServiceMsg => "send.viber_service_msg",
        MessageChannel::Rcs => "send.rcs",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker did not confirm in time")]
    Timeout,
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("could not encode the envelope: {0}")]
    Encode(#[from] serde_json::Error),
}

impl PublishError {
    /// Whether the broker may hold the message despite the error, so the
    /// caller must record that the work was abandoned (see ingest).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            PublishError::Timeout | PublishError::Nacked | PublishError::Amqp(_)
        )
    }
}

#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    /// The nodes to connect to, in order (`amqp_url`).
    urls: Vec<String>,
    /// The node to try first: the one after the node last lost.
    first: std::sync::atomic::AtomicUsize,
    topology: Topology,
    exchange: ShortString,
    publish_timeout: Duration,
    channel: RwLock<Option<Channel>>,
    connection: RwLock<Option<Arc<Connection>>>,
    name: String,
}

impl Broker {
    /// Starts the connection supervisor; the broker is usable once
    /// [`Broker::is_ready`] (or [`Broker::wait_ready`]) says so.
    /// `name` labels the connection in RabbitMQ's management views.
    pub fn start(config: &Config, name: &str, shutdown: CancellationToken) -> Self {
        let topology = Topology::new(config);
        let broker = Broker {
            inner: Arc::new(Inner {
                urls: config.amqp_urls().into_iter().map(str::to_owned).collect(),
                first: std::sync::atomic::AtomicUsize::new(0),
                exchange: topology.exchange.as_str().into(),
                topology,
                publish_timeout: Duration::from_millis(config.publish_timeout_ms),
                channel: RwLock::new(None),
                connection: RwLock::new(None),
                name: format!("dispatch {name}"),
            }),
        };
        tokio::spawn(broker.clone().supervise(shutdown));
        broker
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub fn is_ready(&self) -> bool {
        self.channel().is_some_and(|c| c.status().connected())
    }

    /// Waits until connected, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The live connection, for opening consumer channels.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.inner
            .connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|c| c.status().connected())
    }

    fn channel(&self) -> Option<Channel> {
        self.inner
            .channel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_channel(&self, channel: Option<Channel>) {
        *self
            .inner
            .channel
            .write()
            .unwrap_or_else(|e| e.into_inner()) = channel;
    }

    /// Publishes `envelope` persistently and waits for the broker's confirm.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(envelope)?;
        self.publish_raw(&envelope.routing_key(), &envelope.id(), &payload)
            .await
    }

    /// Publishes `payload` (JSON) persistently under `routing_key` and waits
    /// for the broker's confirm.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            routing_key = %routing_key,
        );
        let result = self
            .publish_in_span(routing_key, message_id, payload)
            .instrument(span)
            .await;
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(PublishError::NotConnected) => "not_connected",
            Err(PublishError::Timeout) => "timeout",
            Err(PublishError::Nacked) => "nacked",
            Err(PublishError::Unroutable(_)) => "unroutable",
            Err(PublishError::Amqp(_) | PublishError::Encode(_)) => "error",
        };
        metrics::counter!(
            "dispatch_amqp_publishes_total",
            "queue" => queue_label(routing_key),
            "outcome" => outcome,
        )
        .increment(1);
        result
    }

    async fn publish_in_span(
        &self,
        routing_key: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let channel = self
            .channel()
            .filter(|c| c.status().connected())
            .ok_or(PublishError::NotConnected)?;
        let mut headers = FieldTable::default();
        for (key, value) in telemetry::inject_current() {
            headers.insert(key.into(), AMQPValue::LongString(value.into()));
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent: survives a broker restart
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_headers(headers);
        let confirmed = async {
            let confirm = channel
                .basic_publish(
                    self.inner.exchange.clone(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    properties,
                )
                .await?;
            Ok::<_, PublishError>(confirm.await?)
        };
        match tokio::time::timeout(self.inner.publish_timeout, confirmed).await {
            Err(_) => Err(PublishError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(confirmation)) => {
                match confirmation {
                    Confirmation::Ack(None) => Ok(()),
                    Confirmation::Ack(Some(_)) => {
                        Err(PublishError::Unroutable(routing_key.to_owned()))
                    }
                    // NotRequested cannot happen (the channel is put in
                    // confirm mode before it is shared): refuse, not guess.
                    Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Nacked),
                }
            }
        }
    }

    async fn supervise(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.connect() => r,
            };
            match connected {
                Ok((connection, channel)) => {
                    tracing::info!("connected to RabbitMQ");
                    backoff = Duration::from_millis(100);
                    let connection = Arc::new(connection);
                    self.set_channel(Some(channel));
                    *self
                        .inner
                        .connection
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
                    let lost = self.watch(&connection, &shutdown).await;
                    self.set_channel(None);
                    self.inner
                        .connection
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    if !lost {
                        let _ = connection.close(200, "shutting down".into()).await;
                        break;
                    }
                    tracing::warn!("lost the RabbitMQ connection; reconnecting");
                }
                Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
                    // Not an outage: a queue exists with other arguments
                    // (queue type, dead-lettering, delivery limit) than the
                    // configuration asks for. Retrying slowly keeps the
                    // process up and not ready until someone fixes it.
                    tracing::error!(
                        error = %e,
                        "RabbitMQ refused the topology: an existing queue was declared with \
                         other arguments than amqp_queue_type / amqp_dead_letter / \
                         amqp_delivery_limit now ask for; use the settings it was created \
                         with, or see docs/configuration.md on changing them"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach RabbitMQ");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Connects to the first node that answers, trying each once from
    /// [`Inner::first`]; the next attempt after a loss starts at the node
    /// after the lost one, so a process leaves a node that went away.
    async fn connect(&self) -> Result<(Connection, Channel), lapin::Error> {
        use std::sync::atomic::Ordering;
        let urls = &self.inner.urls;
        let first = self.inner.first.load(Ordering::Relaxed);
        let mut failure = None;
        for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
            match self.connect_to(&urls[i]).await {
                Ok(connected) => {
                    self.inner.first.store(i + 1, Ordering::Relaxed);
                    if urls.len() > 1 {
                        tracing::info!(
                            node = i + 1,
                            nodes = urls.len(),
                            "connected to a RabbitMQ node"
                        );
                    }
                    return Ok(connected);
                }
                Err(e) => {
                    if urls.len() > 1 {
                        tracing::warn!(node = i + 1, error = %e, "RabbitMQ node does not answer; trying the next");
                    }
                    failure = Some(e);
                }
            }
        }
        Err(failure.unwrap_or(lapin::Error::from(
            lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
        )))
    }

    async fn connect_to(&self, url: &str) -> Result<(Connection, Channel), lapin::Error> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.inner.name.as_str().into());
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
                .await
                .map_err(|_| {
                    lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"),
                    )))
                })??;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.inner.topology.declare(&channel).await?;
        Ok((connection, channel))
    }

    /// Returns `true` when the connection was lost, `false` on shutdown.
    async fn watch(&self, connection: &Connection, shutdown: &CancellationToken) -> bool {
        let mut events = connection.events_listener();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                event = events.next() => match event {
                    Some(lapin::Event::Error(e)) => {
                        tracing::warn!(error = %e, "RabbitMQ connection error");
                        return true;
                    }
                    Some(_) => {}
                    None => return true,
                },
                _ = tick.tick() => {
                    let channel_ok = self.channel().is_some_and(|c| c.status().connected());
                    if !connection.status().connected() || !channel_ok {
                        return true;
                    }
                }
            }
        }
    }
}
