//! The sender: consumes `send.<channel>` for one or more channels, calls
//! each message's provider, and applies `submitted` or `rejected` to the
//! workflow itself (the failover machine, in `dispatch_flow`).
//!
//! - **Only the current step.** In the same round trip as its other
//!   checks, the sender reads which message of the workflow is current. A
//!   command for a step the workflow has moved past (its deadline failed
//!   it over while the command waited behind a backlog), or for a
//!   workflow that ended, is dropped (`dispatch_sends_dropped_total`):
//!   sending it would reach the user besides the next step.
//! - **Once per message.** A message's final outcome is recorded in Redis
//!   before the command is acked: the provider's acceptance (its message
//!   id) or a rejection. A redelivered command whose outcome is recorded
//!   is not sent again: the outcome is applied again instead (a no-op if
//!   it was applied). A lock with an owner token keeps two
//!   senders from calling the provider for the same message at once, and
//!   is checked again before every attempt. What remains is the window
//!   between the provider's answer and the record: a sender killed there
//!   sends twice on redelivery; no sender can close that window without
//!   the provider's help (an idempotency key), and the simulator gets ours
//!   as `reference`.
//! - **Retries.** Transient failures (timeouts, 5xx, 429) are retried in
//!   place with exponential backoff from `sender_retry_base_ms`, honouring
//!   `Retry-After` up to 30 s, up to `sender_max_attempts`; then the
//!   message is rejected with 1331 (provider error) so the workflow fails
//!   over. Permanent failures reject at once with the provider's code.
//!   The wait is `retry::next_wait`.
//! - **Limits.** `sender_concurrency` bounds the sends in flight per channel
//!   and process (it is also the consumer's prefetch). Providers' rate
//!   limits (`send_limits`, and `sender_rate_per_sec` for channels no
//!   entry names) hold over all replicas, in Redis: a send over its limit
//!   waits its turn, in place when it is near, else at the timer
//!   (`pace`).
//! - **Routing.** A channel's provider comes from the application's
//!   settings, else the account's, else the configuration's default (the
//!   simulator unless configured otherwise): `routing::select`.
//! - **Usage.** An accepted message's `usage` is estimated from `prices`
//!   (per segment for SMS) for providers that report none:
//!   `usage::estimate`.
//!
//! The decisions (`turn`, `retry`, `routing`, `usage`, `pace`) are pure functions
//! in their own modules, unit-tested; this file is the I/O around them.

mod lock;
mod pace;
mod retry;
mod routing;
mod turn;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::consume::{ConsumeOptions, Incoming, Outcome, consume};
use dispatch_infra::crypto::CredentialsKey;
use dispatch_infra::providers::{ProviderStore, callback_url, receipt_scope, send_tenant};
use dispatch_infra::receipts::{MessageRef, Parked, Receipts, Sent};
use dispatch_infra::redis::{Keys, Redis};
use dispatch_infra::timer::Scheduler;
use dispatch_infra::{Config, Connections};
use dispatch_model::Channel;
use dispatch_model::envelope::{Envelope, PacedTurn, SendCommand, StatusEvent, send_routing_key};
use dispatch_model::record::{MessageError, MessageStatus, Usage, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use dispatch_flow::Event;

use dispatch_providers::{Accepted, ProviderRequest, Providers, SendError, rules};
use lock::Lock;
use retry::MAX_RETRY_AFTER;
use routing::Whose;

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
    let keys = Keys::for_config(&config);
    let sender = Arc::new(Sender {
        engine: dispatch_flow::Engine::new(&config, redis.clone(), broker.clone()),
        receipts: Receipts::new(redis.clone(), keys.clone(), config.record_ttl_secs)
            .replicated(dispatch_infra::redis::Replicated::of(&config)),
        providers: Providers::new(Duration::from_millis(config.provider_timeout_ms))?,
        public_only: match config.allow_private_provider_urls {
            true => Providers::new(Duration::from_millis(config.provider_timeout_ms))?,
            false => Providers::public_only(Duration::from_millis(config.provider_timeout_ms))?,
        },
        store: ProviderStore::new(
            connections.redis.clone(),
            keys.clone(),
            CredentialsKey::parse(&config.credentials_key).map_err(anyhow::Error::msg)?,
        ),
        callback_base: config.callback_base(),
        scheduler: Scheduler::new(redis.clone(), keys.clone()),
        redis,
        keys,
        config: config.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels {
        let options = ConsumeOptions::new(
            broker.topology().send_queue(channel),
            config.sender_concurrency,
        )
        .with_grace(config.shutdown_grace());
        tracing::info!(queue = %options.queue, %channel, "sender consuming");
        let sender = sender.clone();
        tasks.spawn(consume(
            broker.clone(),
            options,
            shutdown.clone(),
            move |incoming| {
                let sender = sender.clone();
                async move { sender.handle(incoming).await }
            },
        ));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

struct Sender {
    /// Applies `submitted` and `rejected` (and receipts that came first)
    /// to the workflow.
    engine: dispatch_flow::Engine,
    redis: Redis,
    keys: Keys,
    receipts: Receipts,
    /// Adapters for the configuration's providers, the operator's.
    providers: Providers,
    /// Adapters for provider records that accounts set: public targets
    /// only, unless `allow_private_provider_urls`.
    public_only: Providers,
    store: ProviderStore,
    callback_base: String,
    /// Where sends whose turn under their limit is far off wait for it.
    scheduler: Scheduler,
    config: Config,
}

/// How long a sender keeps trying to record a provider's acceptance
/// before it gives the command back (and a redelivery sends it again).
const RECORD_PATIENCE: Duration = Duration::from_secs(30);

/// Whether a provider call waited for its turn, or went to wait for it at
/// the timer (and is acked here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    Ready,
    Deferred,
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected redis reply: {0}")]
    Reply(#[from] redis::ParsingError),
    #[error(transparent)]
    Apply(#[from] dispatch_flow::EngineError),
    #[error("another sender is sending this message")]
    Busy,
}

impl Sender {
    async fn handle(&self, incoming: Incoming) -> Outcome {
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
        match self.send(&command).instrument(span.clone()).await {
            Ok(()) => Outcome::Ack,
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "send not finished; will retry"));
                Outcome::Retry
            }
        }
    }

    async fn send(&self, command: &SendCommand) -> Result<(), HandleError> {
        let target = MessageRef {
            workflow_id: command.workflow_id,
            message_uuid: command.message_uuid,
        };
        // One round trip: already sent?, take the lock, and where to send.
        let lock = Lock {
            key: self.keys.send_lock(&command.message_uuid.to_string()),
            // A command back from waiting for its turn holds the lock it
            // took before.
            token: match &command.paced {
                Some(paced) => paced.lock.clone(),
                None => uuid::Uuid::new_v4().to_string(),
            },
            // One provider call and the longest wait before the next.
            ms: self.config.provider_timeout_ms + MAX_RETRY_AFTER.as_millis() as u64 + 5_000,
        };
        let channel = command.channel.as_str();
        let mut pipe = redis::pipe();
        pipe.get(self.keys.sent(&command.message_uuid.to_string()));
        pipe.cmd("SET")
            .arg(&lock.key)
            .arg(&lock.token)
            .arg("NX")
            .arg("PX")
            .arg(lock.ms);
        pipe.get(&lock.key);
        let workflow = self.keys.workflow(&command.workflow_id.to_string());
        pipe.hget(&workflow, "v").hget(&workflow, "c");
        let scopes = routing::scopes(command);
        for scope in &scopes {
            pipe.hget(self.keys.providers(scope), channel);
        }
        let mut conn = self.redis.clone();
        let mut values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let settings: Vec<Option<String>> = values
            .split_off(5.min(values.len()))
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()?;
        let mut values = values
            .into_iter()
            .map(redis::from_redis_value::<Option<String>>);
        let sent = values.next().transpose()?.flatten();
        let taken = values.next().transpose()?.flatten().is_some();
        let holder = values.next().transpose()?.flatten();
        let locked = taken || holder.as_deref() == Some(lock.token.as_str());
        let version = values.next().transpose()?.flatten();
        let current = values.next().transpose()?.flatten();

        if let Some(raw) = sent {
            match serde_json::from_str::<Sent>(&raw) {
                Ok(sent) => return self.report_again(target, sent, command).await,
                Err(e) => tracing::warn!(error = %e, "unreadable send record; sending"),
            }
        }
        if !locked {
            return Err(HandleError::Busy);
        }
        if !turn::is_current(version.as_deref(), current.as_deref(), command.message_uuid) {
            // The workflow moved past this step (its deadline failed it
            // over while the command waited in the queue) or ended: a send
            // now would reach the user besides the next step's.
            tracing::info!("the workflow moved past this step; not sending");
            metrics::counter!(
                "dispatch_sends_dropped_total",
                "channel" => command.channel.as_str(),
                "reason" => "superseded",
            )
            .increment(1);
            if let Err(e) = lock.release(&mut conn).await {
                tracing::debug!(error = %e, "could not release the send lock; it expires");
            }
            return Ok(());
        }
        let (settings, whose) = routing::select(
            &scopes,
            settings,
            |scope, raw| self.store.open(scope, command.channel, raw),
            || self.config.default_provider(command.channel),
        );
        let result = self
            .send_locked(command, target, settings, whose, &lock)
            .await;
        // A send waiting for its turn at the timer keeps the lock, so that
        // a duplicate of its command cannot send it meanwhile.
        if !matches!(result, Ok(Waited::Deferred))
            && let Err(e) = lock.release(&mut conn).await
        {
            tracing::debug!(error = %e, "could not release the send lock; it expires");
        }
        result.map(drop)
    }

    /// A redelivered command for a message whose outcome is recorded.
    async fn report_again(
        &self,
        target: MessageRef,
        sent: Sent,
        command: &SendCommand,
    ) -> Result<(), HandleError> {
        match sent {
            Sent::Accepted {
                provider,
                provider_message_id,
            } => {
                tracing::info!(%provider_message_id, "already sent; reporting it again");
                // Mapped again: the sender that recorded the send may have
                // died before it mapped the provider's id.
                let parked = self
                    .receipts
                    .map(&provider, &provider_message_id, target)
                    .await?;
                self.report_submitted(target, provider_message_id.clone(), command, &provider)
                    .await?;
                self.apply_parked(target, &provider, &provider_message_id, parked)
                    .await
            }
            Sent::Rejected { error } => {
                tracing::info!("already rejected; reporting it again");
                self.report_rejected(target, error).await
            }
        }
    }

    async fn send_locked(
        &self,
        command: &SendCommand,
        target: MessageRef,
        settings: ProviderSettings,
        whose: Whose,
        lock: &Lock,
    ) -> Result<Waited, HandleError> {
        let provider = match whose {
            Whose::Operator => self.providers.get(settings.kind),
            Whose::Account => {
                // The resolver refuses internal names; literal addresses
                // are refused here.
                if !settings.url.is_empty()
                    && let Err(why) = dispatch_infra::guard::check_url(
                        &settings.url,
                        self.config.allow_private_provider_urls,
                    )
                {
                    tracing::warn!(%why, "provider URL refused");
                    let error = MessageError {
                        code: 1020,
                        reason: "The provider URL is not allowed".into(),
                    };
                    return self.reject(target, error).await.map(|()| Waited::Ready);
                }
                self.public_only.get(settings.kind)
            }
        };
        if let Some(error) = self.breaks_a_rule(command, &settings).await? {
            metrics::counter!(
                "dispatch_rule_rejections_total",
                "channel" => command.channel.as_str(),
                "code" => error.code.to_string(),
            )
            .increment(1);
            return self.reject(target, error).await.map(|()| Waited::Ready);
        }
        let status_callback = callback_url(&self.callback_base, &settings);
        let pace = pace::select(
            &self.config.send_limits,
            self.config.sender_rate_per_sec,
            command.channel,
            settings.kind,
            &dispatch_providers::address(&command.message.from),
        );
        let mut attempt = 1;
        let outcome = loop {
            if let Some(pace) = &pace
                && self.wait_turn(command, pace, attempt == 1, lock).await? == Waited::Deferred
            {
                return Ok(Waited::Deferred);
            }
            // Still ours? After a long wait another sender may have taken
            // the message over; then it is theirs to send.
            if !lock.refresh(&mut self.redis.clone()).await? {
                return Err(HandleError::Busy);
            }
            let request = ProviderRequest {
                command,
                settings: &settings,
                status_callback: &status_callback,
            };
            let call = tracing::info_span!(
                "provider.call",
                otel.kind = "client",
                provider = provider.name(),
                channel = command.channel.as_str(),
                attempt,
            );
            let started = std::time::Instant::now();
            let result = provider.send(request).instrument(call).await;
            let labels = [
                ("channel", command.channel.as_str()),
                ("provider", provider.name()),
            ];
            metrics::histogram!("dispatch_provider_request_duration_seconds", &labels)
                .record(started.elapsed());
            let answer = match &result {
                Ok(_) => "accepted",
                Err(SendError::Permanent(_)) => "rejected",
                Err(SendError::Transient { .. }) => "transient",
            };
            metrics::counter!(
                "dispatch_provider_requests_total",
                "channel" => command.channel.as_str(),
                "provider" => provider.name(),
                "outcome" => answer,
            )
            .increment(1);
            match result {
                Err(SendError::Transient {
                    reason,
                    retry_after,
                }) if attempt < self.config.sender_max_attempts => {
                    let wait =
                        retry::next_wait(attempt, self.config.sender_retry_base_ms, retry_after);
                    tracing::info!(attempt, %reason, wait_ms = wait.as_millis() as u64, "provider unavailable; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        metrics::counter!(
            "dispatch_sends_total",
            "channel" => command.channel.as_str(),
            "provider" => provider.name(),
            "outcome" => if outcome.is_ok() { "submitted" } else { "rejected" },
        )
        .increment(1);
        let result = match outcome {
            Ok(Accepted {
                provider_message_id,
            }) => {
                let scope = receipt_scope(&settings);
                // The provider has it: until this is recorded, a
                // redelivery would send it again. So a Redis that does not
                // answer (a master failing over) is waited for here, with
                // the lock and the delivery held, rather than handed back.
                let conversation = self.conversation(command, &settings);
                let parked = retry::in_place(RECORD_PATIENCE, || {
                    self.receipts.record_sent(
                        &scope,
                        &provider_message_id,
                        target,
                        conversation.clone(),
                    )
                })
                .await?;
                if command.channel == Channel::Messenger {
                    self.record_last_sent(&scope, command, &provider_message_id)
                        .await?;
                }
                self.report_submitted(target, provider_message_id.clone(), command, &scope)
                    .await?;
                self.apply_parked(target, &scope, &provider_message_id, parked)
                    .await
            }
            Err(SendError::Permanent(error)) => self.reject(target, error).await,
            Err(SendError::Transient { reason, .. }) => {
                // The reason stays in the log: it may be a connection
                // error's text or a status line, which are not for the
                // client (they would map the provider's network).
                tracing::warn!(attempts = attempt, %reason, "provider unavailable; giving up");
                let error = MessageError {
                    code: 1331,
                    reason: "Provider error: the provider was unavailable".into(),
                };
                self.reject(target, error).await
            }
        };
        result.map(|()| Waited::Ready)
    }

    /// Waits for this provider call's turn under its limit, or hands the
    /// command to the timer to come back at it.
    async fn wait_turn(
        &self,
        command: &SendCommand,
        pace: &pace::Pace,
        first_attempt: bool,
        lock: &Lock,
    ) -> Result<Waited, HandleError> {
        let channel = command.channel.as_str();
        let wait = match &command.paced {
            // Its turn was taken before it went to the timer.
            Some(paced) if first_attempt => {
                Duration::from_millis(u64::try_from(paced.at_ms - now_ms()).unwrap_or(0))
            }
            _ => {
                let key = self.keys.send_rate(channel, &pace.provider, &pace.sender);
                dispatch_infra::rate::take(
                    &self.redis,
                    &key,
                    pace.rate,
                    dispatch_infra::rate::RESERVE,
                )
                .await?
            }
        };
        let hold = Duration::from_millis(self.config.send_limit_hold_ms);
        match pace::turn(wait, hold, first_attempt && command.paced.is_none()) {
            pace::Turn::Hold(wait) => {
                metrics::histogram!("dispatch_send_limit_wait_seconds", "channel" => channel, "at" => "sender")
                    .record(wait);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(Waited::Ready)
            }
            pace::Turn::Defer(wait) => {
                metrics::histogram!("dispatch_send_limit_wait_seconds", "channel" => channel, "at" => "timer")
                    .record(wait);
                let turn_ms = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                // Held until its turn and a call's length after it.
                let held_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX / 2) + lock.ms;
                if !lock.hold(&mut self.redis.clone(), held_ms).await? {
                    return Err(HandleError::Busy);
                }
                let paced = SendCommand {
                    paced: Some(PacedTurn {
                        at_ms: turn_ms,
                        lock: lock.token.clone(),
                    }),
                    ..command.clone()
                };
                let payload = serde_json::to_string(&Envelope::Send(Box::new(paced)))
                    .expect("a send command serialises");
                let message_uuid = command.message_uuid.to_string();
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    "over the provider's limit; waiting for its turn at the timer"
                );
                self.scheduler
                    .schedule(
                        &format!("pace:{message_uuid}"),
                        turn_ms,
                        &send_routing_key(command.channel),
                        &message_uuid,
                        &payload,
                    )
                    .await?;
                Ok(Waited::Deferred)
            }
        }
    }

    /// The channel rule this send breaks, checked before any provider
    /// call so that a failover workflow moves on at once: a template whose
    /// known body takes another number of parameters (1022), or a
    /// free-form WhatsApp message or untagged Messenger message to a user
    /// who has not written to this address within 24 hours (1340). The
    /// simulator is exempt from the windows: it stands in for providers in
    /// demos and load tests, where no user ever writes first.
    async fn breaks_a_rule(
        &self,
        command: &SendCommand,
        settings: &ProviderSettings,
    ) -> Result<Option<MessageError>, HandleError> {
        let template = command
            .message
            .message
            .as_ref()
            .and_then(|m| m.content.as_ref())
            .and_then(|c| c.template.as_ref());
        if let Some(template) = template
            && let Err(error) = rules::check_template(settings, template)
        {
            return Ok(Some(error));
        }
        if settings.kind == ProviderKind::Simulator
            || !rules::needs_window(command.channel, &command.message)
        {
            return Ok(None);
        }
        let ours = dispatch_providers::address(&command.message.from);
        let theirs = dispatch_providers::address(&command.message.to);
        let channel = command.channel.as_str();
        let tenant = send_tenant(settings, &command.account);
        let key = self.keys.window(&tenant, channel, &ours, &theirs);
        let open: bool = redis::AsyncCommands::exists(&mut self.redis.clone(), key).await?;
        Ok((!open).then(|| rules::outside_window(command.channel)))
    }

    /// Who wrote from our address to the user's, so that their answers go
    /// to the same application.
    fn conversation(
        &self,
        command: &SendCommand,
        settings: &ProviderSettings,
    ) -> Option<(String, String)> {
        let address = |a: &Option<dispatch_model::message::Address>| {
            a.as_ref()
                .and_then(|a| a.number.clone().or_else(|| a.id.clone()))
        };
        let ours = address(&command.message.from)?;
        let theirs = address(&command.message.to)?;
        let tenant = send_tenant(settings, &command.account);
        let key = self
            .keys
            .conversation(&tenant, command.channel.as_str(), &ours, &theirs);
        let app = command
            .application_id
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        Some((key, format!("{} {app}", command.account)))
    }

    /// Messenger's read receipts name no message, only a time: "read up to
    /// here". The last message to each user is remembered so that such a
    /// receipt can be matched to it.
    async fn record_last_sent(
        &self,
        scope: &str,
        command: &SendCommand,
        provider_message_id: &str,
    ) -> Result<(), HandleError> {
        let ours = dispatch_providers::address(&command.message.from);
        let theirs = dispatch_providers::address(&command.message.to);
        redis::cmd("SET")
            .arg(
                self.keys
                    .last_sent(scope, command.channel.as_str(), &ours, &theirs),
            )
            .arg(format!("{provider_message_id} {}", now_ms()))
            .arg("EX")
            .arg(self.config.record_ttl_secs)
            .exec_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Applies receipts that came before the send was recorded, then
    /// forgets them (a crash in between applies them again; the workflow
    /// ignores statuses it has seen).
    async fn apply_parked(
        &self,
        target: MessageRef,
        provider: &str,
        provider_id: &str,
        parked: Parked,
    ) -> Result<(), HandleError> {
        if parked.count == 0 {
            return Ok(());
        }
        for receipt in parked.receipts {
            let event = receipt.into_event(target);
            self.engine
                .apply_and_carry_out(event.workflow_id, Event::Status(&event))
                .await?;
        }
        self.receipts
            .unpark(provider, provider_id, parked.count)
            .await?;
        Ok(())
    }

    /// Records the rejection, so a redelivered command does not send, and
    /// reports it.
    async fn reject(&self, target: MessageRef, error: MessageError) -> Result<(), HandleError> {
        tracing::info!(code = error.code, reason = %error.reason, "rejected");
        self.receipts
            .record_rejected(target.message_uuid, &error)
            .await?;
        self.report_rejected(target, error).await
    }

    async fn report_rejected(
        &self,
        target: MessageRef,
        error: MessageError,
    ) -> Result<(), HandleError> {
        let status = MessageStatus::Rejected;
        self.report(target, status, None, Some(error), None, None)
            .await
    }

    /// Reports the provider's acceptance, with the estimated usage.
    /// `scope` is the provider record's receipt scope (`{kind}:{route}`),
    /// whose kind the record keeps.
    async fn report_submitted(
        &self,
        target: MessageRef,
        provider_id: String,
        command: &SendCommand,
        scope: &str,
    ) -> Result<(), HandleError> {
        let estimate = usage::estimate(command, &self.config.prices);
        let provider = scope.split(':').next().map(str::to_owned);
        self.report(
            target,
            MessageStatus::Submitted,
            Some(provider_id),
            None,
            Some(estimate),
            provider,
        )
        .await
    }

    async fn report(
        &self,
        target: MessageRef,
        status: MessageStatus,
        provider_message_id: Option<String>,
        error: Option<MessageError>,
        usage: Option<Usage>,
        provider: Option<String>,
    ) -> Result<(), HandleError> {
        let event = StatusEvent {
            workflow_id: target.workflow_id,
            message_uuid: target.message_uuid,
            status,
            at_ms: now_ms(),
            provider_message_id,
            error,
            usage,
            provider,
        };
        // The outcome is recorded: a sender dying from here on leaves it
        // to the command's redelivery, which reports it again.
        dispatch_infra::failpoint::hit("sender-before-transition", &target.message_uuid);
        self.engine
            .apply_and_carry_out(event.workflow_id, Event::Status(&event))
            .await?;
        Ok(())
    }
}
