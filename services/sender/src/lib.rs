//! The sender: consumes `send.<channel>` for one or more channels, calls
//! each message's provider, and reports `submitted` or `rejected`.
//!
//! - **Once per message.** A provider's acceptance is recorded in Redis
//!   (its message id under the message uuid) before the command is acked.
//!   A redelivered command whose message is recorded is not sent again:
//!   its `submitted` is reported again instead (the workflow ignores the
//!   duplicate). A short lock keeps two senders from calling the provider
//!   for the same message at once. What remains is the window between the
//!   provider's answer and the record: a sender killed there sends twice
//!   on redelivery; no sender can close that window without the provider's
//!   help (an idempotency key), and the simulator gets ours as `reference`.
//! - **Retries.** Transient failures (timeouts, 5xx, 429) are retried in
//!   place with exponential backoff from `sender_retry_base_ms`, honouring
//!   `Retry-After` up to 30 s, up to `sender_max_attempts`; then the
//!   message is rejected with 1331 (provider error) so the workflow fails
//!   over. Permanent failures reject at once with the provider's code.
//! - **Limits.** `sender_concurrency` bounds the sends in flight per channel
//!   (it is also the consumer's prefetch), and `sender_rate_per_sec` paces
//!   provider calls per channel; both are per process, so N replicas of a
//!   channel's sender allow N times as much.
//! - **Routing.** A channel's provider comes from the application's
//!   settings, else the account's, else the configuration's default (the
//!   simulator unless configured otherwise).

pub mod provider;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dispatch_infra::broker::Broker;
use dispatch_infra::config::ProviderSettings;
use dispatch_infra::consume::{ConsumeOptions, Incoming, Outcome, consume};
use dispatch_infra::receipts::{MessageRef, Receipts};
use dispatch_infra::redis::{Keys, Redis};
use dispatch_infra::{Config, Connections};
use dispatch_model::Channel;
use dispatch_model::envelope::{Envelope, SendCommand, StatusEvent};
use dispatch_model::record::{MessageError, MessageStatus, now_ms};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::provider::{Accepted, ProviderRequest, Providers, SendError};

/// The longest a `Retry-After` may hold a message.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Runs senders for `channels` until `shutdown`.
pub async fn run(
    config: Config,
    channels: Vec<Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let connections = Connections::open(&config, "sender")?;
    run_with(config, channels, connections, shutdown).await
}

/// [`run`] on connections shared with other services.
pub async fn run_with(
    config: Config,
    channels: Vec<Channel>,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(!channels.is_empty(), "no channel to send on");
    if config.uses_simulator() {
        tracing::warn!(
            simulator = %config.simulator_url,
            "the provider simulator is a configured provider: messages will not reach real users"
        );
    }
    let redis = connections.redis.clone();
    let broker = connections.broker.clone();
    let keys = Keys::new(&config.redis_prefix);
    let sender = Arc::new(Sender {
        receipts: Receipts::new(redis.clone(), keys.clone(), config.record_ttl_secs),
        providers: Providers::new(Duration::from_millis(config.provider_timeout_ms))?,
        status_callback: format!("{}/callbacks/simulator", config.callback_base()),
        broker: broker.clone(),
        redis,
        keys,
        config: config.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels {
        let limiter = NonZeroU32::new(config.sender_rate_per_sec)
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));
        let options = ConsumeOptions::new(
            broker.topology().send_queue(channel),
            config.sender_concurrency,
        );
        tracing::info!(queue = %options.queue, %channel, "sender consuming");
        let sender = sender.clone();
        tasks.spawn(consume(
            broker.clone(),
            options,
            shutdown.clone(),
            move |incoming| {
                let sender = sender.clone();
                let limiter = limiter.clone();
                async move { sender.handle(incoming, limiter.as_deref()).await }
            },
        ));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

struct Sender {
    broker: Broker,
    redis: Redis,
    keys: Keys,
    receipts: Receipts,
    providers: Providers,
    status_callback: String,
    config: Config,
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected redis reply: {0}")]
    Reply(#[from] redis::ParsingError),
    #[error("publish: {0}")]
    Publish(#[from] dispatch_infra::broker::PublishError),
    #[error("another sender is sending this message")]
    Busy,
}

impl Sender {
    async fn handle(
        &self,
        incoming: Incoming,
        limiter: Option<&DefaultDirectRateLimiter>,
    ) -> Outcome {
        let command = match serde_json::from_slice::<Envelope>(&incoming.payload) {
            Ok(Envelope::Send(command)) => command,
            Ok(_) | Err(_) => {
                tracing::warn!(routing_key = %incoming.routing_key, "not a send command");
                return Outcome::Reject;
            }
        };
        let span = tracing::info_span!(
            "send",
            message_uuid = %command.message_uuid,
            workflow_id = %command.workflow_id,
            channel = %command.channel,
        );
        match self.send(&command, limiter).instrument(span.clone()).await {
            Ok(()) => Outcome::Ack,
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "send not finished; will retry"));
                Outcome::Retry
            }
        }
    }

    async fn send(
        &self,
        command: &SendCommand,
        limiter: Option<&DefaultDirectRateLimiter>,
    ) -> Result<(), HandleError> {
        let target = MessageRef {
            workflow_id: command.workflow_id,
            message_uuid: command.message_uuid,
        };
        // One round trip: already sent?, take the lock, and where to send.
        let lock = self.keys.send_lock(&command.message_uuid.to_string());
        let lock_ms = self.config.provider_timeout_ms.saturating_mul(2) + 5_000;
        let channel = command.channel.as_str();
        let mut pipe = redis::pipe();
        pipe.get(self.keys.sent(&command.message_uuid.to_string()));
        pipe.cmd("SET")
            .arg(&lock)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(lock_ms);
        if let Some(app) = command.application_id {
            pipe.hget(self.keys.providers(&app.to_string()), channel);
        }
        pipe.hget(self.keys.providers(&command.account), channel);
        let mut conn = self.redis.clone();
        let (sent, locked, settings): (Option<String>, bool, Vec<Option<String>>) = {
            let mut values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            let settings = values.split_off(2.min(values.len()));
            let mut values = values.into_iter();
            let sent = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
            let locked = redis::from_redis_value::<Option<String>>(
                values.next().unwrap_or(redis::Value::Nil),
            )?
            .is_some();
            let settings = settings
                .into_iter()
                .map(redis::from_redis_value)
                .collect::<Result<_, _>>()?;
            (sent, locked, settings)
        };
        if let Some(provider_id) = sent {
            tracing::info!(%provider_id, "already sent; reporting it again");
            return self.report_submitted(target, provider_id).await;
        }
        if !locked {
            return Err(HandleError::Busy);
        }
        let settings = self.settings(command, settings);
        let result = self
            .send_locked(command, target, settings, limiter, &lock, lock_ms)
            .await;
        if result.is_err() {
            // Let a redelivery try again at once. After a success the
            // lock just expires: the `sent` record answers first.
            let _: Result<(), _> = redis::cmd("DEL").arg(&lock).exec_async(&mut conn).await;
        }
        result
    }

    async fn send_locked(
        &self,
        command: &SendCommand,
        target: MessageRef,
        settings: ProviderSettings,
        limiter: Option<&DefaultDirectRateLimiter>,
        lock: &str,
        lock_ms: u64,
    ) -> Result<(), HandleError> {
        let provider = self.providers.get(settings.kind);
        let mut attempt = 1;
        let outcome = loop {
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
            let request = ProviderRequest {
                command,
                settings: &settings,
                status_callback: &self.status_callback,
            };
            match provider.send(request).await {
                Err(SendError::Transient {
                    reason,
                    retry_after,
                }) if attempt < self.config.sender_max_attempts => {
                    let backoff = Duration::from_millis(
                        self.config
                            .sender_retry_base_ms
                            .saturating_mul(1 << (attempt - 1).min(16)),
                    );
                    let wait = retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER).max(backoff));
                    tracing::info!(attempt, %reason, wait_ms = wait.as_millis() as u64, "provider unavailable; retrying");
                    tokio::time::sleep(wait).await;
                    // Keep the lock for as long as this message is ours.
                    let mut conn = self.redis.clone();
                    let _: Result<(), _> = redis::cmd("PEXPIRE")
                        .arg(lock)
                        .arg(lock_ms)
                        .exec_async(&mut conn)
                        .await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match outcome {
            Ok(Accepted {
                provider_message_id,
            }) => {
                let parked = self
                    .receipts
                    .record_sent(provider.name(), &provider_message_id, target)
                    .await?;
                self.report_submitted(target, provider_message_id).await?;
                for receipt in parked {
                    self.broker
                        .publish(&Envelope::Status(receipt.into_event(target)))
                        .await?;
                }
                Ok(())
            }
            Err(SendError::Permanent(error)) => self.report_rejected(target, error).await,
            Err(SendError::Transient { reason, .. }) => {
                tracing::warn!(attempts = attempt, %reason, "provider unavailable; giving up");
                let error = MessageError {
                    code: 1331,
                    reason: format!("Provider error: {reason}"),
                };
                self.report_rejected(target, error).await
            }
        }
    }

    /// The provider for this message: the application's setting, else the
    /// account's (`found`, in that order), else the configured default.
    fn settings(&self, command: &SendCommand, found: Vec<Option<String>>) -> ProviderSettings {
        let configured = found.into_iter().flatten().find_map(|raw| {
            match serde_json::from_str::<ProviderSettings>(&raw) {
                Ok(settings) => Some(settings),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring unreadable provider settings");
                    None
                }
            }
        });
        configured.unwrap_or_else(|| self.config.default_provider(command.channel))
    }

    async fn report_submitted(
        &self,
        target: MessageRef,
        provider_id: String,
    ) -> Result<(), HandleError> {
        self.report(target, MessageStatus::Submitted, Some(provider_id), None)
            .await
    }

    async fn report_rejected(
        &self,
        target: MessageRef,
        error: MessageError,
    ) -> Result<(), HandleError> {
        tracing::info!(code = error.code, reason = %error.reason, "rejected");
        self.report(target, MessageStatus::Rejected, None, Some(error))
            .await
    }

    async fn report(
        &self,
        target: MessageRef,
        status: MessageStatus,
        provider_message_id: Option<String>,
        error: Option<MessageError>,
    ) -> Result<(), HandleError> {
        let event = StatusEvent {
            workflow_id: target.workflow_id,
            message_uuid: target.message_uuid,
            status,
            at_ms: now_ms(),
            provider_message_id,
            error,
            usage: None,
        };
        self.broker.publish(&Envelope::Status(event)).await?;
        Ok(())
    }
}
