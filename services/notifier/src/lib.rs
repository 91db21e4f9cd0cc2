//! The notifier: delivers webhook jobs from the `webhooks` queue to the
//! application's `status_url`, signed ([`sign`]), and keeps trying until
//! the receiver takes them.
//!
//! - **Where**: the job's application's `capabilities.messages.webhooks.
//!   status_url` (message-status and final-report alike, unless the
//!   application names a `final_report_url`), or its `inbound_url` for
//!   inbound messages. A job with no
//!   application (a Basic-auth send) or an application without a
//!   `status_url` has nowhere to go and is dropped with a log line, as the
//!   original service did.
//! - **Attempts**: a 2xx answer is success; anything else, a timeout or a
//!   refused connection is a failed attempt, recorded (status, latency,
//!   error, time). The next attempt is scheduled through the timer (Redis
//!   deadlines, routing key `webhook.retry`), never by a sleeping consumer:
//!   [`schedule::next_delay`] decides when, honouring `Retry-After`.
//! - **Dead letters**: after the last attempt the job goes to a Redis hash
//!   per application, listed and replayed through ingest
//!   (`/v1/applications/{id}/webhooks/failed`).
//! - **Once**: a delivered webhook's id is remembered, so a duplicate job
//!   (the workflow's outbox may publish one twice) is not sent again.
//! - **Isolation** ([`slots`], [`circuit`]): requests go out with a slot
//!   of their origin (scheme, host, port: `webhook_concurrency_per_host`)
//!   and of their endpoint (the URL without its query), which may hold at
//!   most `webhook_endpoint_share` of its origin's, and
//!   `notifier_concurrency` overall. A webhook with no free slot goes back
//!   to the timer for a moment instead of waiting in the consumer, so a
//!   slow receiver never fills the prefetch that other receivers' webhooks
//!   need. An endpoint that fails `webhook_circuit_failures` times in a
//!   row has its circuit opened: its webhooks wait in its parked list in
//!   Redis, one probe per open period tests it (the period doubling up to
//!   `webhook_circuit_open_max_ms`), and when a probe gets through the
//!   parked webhooks flow again. Nothing but that endpoint waits. When to
//!   open and for how long is [`breaker`]'s to decide.
//! - **Gone**: an endpoint answering `410 Gone` is disabled for its
//!   application ([`dispatch_infra::endpoints`]); its webhooks, pending and
//!   future, become dead letters saying so, until the application's
//!   webhook URLs are set again or its dead letters are replayed.
//! - **Order** ([`turns`]): deliveries of one message's webhooks take
//!   turns within a notifier, in the order they were consumed (the order
//!   the workflow published them), so a receiver sees `submitted` before
//!   `delivered` unless a retry intervenes; every body carries its event
//!   time. A webhook that finds its message's turn taken goes back to
//!   the timer due just after that message's previously deferred ones, so
//!   deferred webhooks come back in order. Best effort, not a promise: a
//!   new webhook can take a free turn ahead of deferred ones, a timer
//!   fires a round concurrently, and turns are per notifier process.
//! - **Targets** are checked by [`guard`]: no internal addresses unless
//!   `allow_private_webhooks`.
//!
//! The decisions are pure and unit-tested: [`schedule`] (when to try
//! again), [`breaker`] (when a circuit opens, and for how long), the
//! application record's `webhook_for` (which URL). `attempt` makes one
//! try and says what became of it, `probe` runs an open circuit's probe
//! and drain, [`turns`] keeps a message's webhooks in order; this file
//! consumes the queue and settles each outcome.

mod attempt;
pub mod bench;
pub mod breaker;
pub mod circuit;
mod probe;
pub mod schedule;
pub mod sign;
pub mod slots;
pub mod turns;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attempt::{Attempted, Failed, Try};
use circuit::Circuits;
use dispatch_infra::activity::{self, Stat, WebhookLog};
use dispatch_infra::broker::Broker;
use dispatch_infra::consume::{ConsumeOptions, Incoming, Outcome, consume};
use dispatch_infra::guard;
use dispatch_infra::redis::{Keys, Redis};
use dispatch_infra::timer::Scheduler;
use dispatch_infra::{Config, Connections};
use dispatch_model::application::ApplicationRecord;
use dispatch_model::envelope::{Envelope, WebhookJob};
use dispatch_model::record::now_ms;
use serde::{Deserialize, Serialize};
use slots::Slots;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use turns::MessageTurns;

/// Routing key of scheduled retries (bound to the webhooks queue).
pub const RETRY_ROUTING_KEY: &str = "webhook.retry";

/// Messages whose deferral is remembered, or endpoints seen gone, before
/// the past ones are forgotten.
const MAX_MESSAGES: usize = 10_000;

/// How long a webhook waits in the consumer for a free slot of its
/// destination before it goes back to the timer.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// How long a webhook to a destination with no free slot waits in the
/// timer (plus up to as much again, at random); not an attempt.
const BUSY_WAIT_MS: u64 = 250;

/// One failed attempt, as listed with a dead letter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: String,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let connections = Connections::open(&config, "notifier")?;
    run_with(config, connections, shutdown).await
}

/// [`run`] on connections shared with other services.
pub async fn run_with(
    config: Config,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.allow_private_webhooks {
        tracing::warn!("allow_private_webhooks is on: webhooks may target internal addresses");
    }
    let keys = Keys::for_config(&config);
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.webhook_connect_timeout_ms))
        .timeout(Duration::from_millis(config.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none());
    if !config.allow_private_webhooks {
        http = guard::public_only(http);
    }
    // A prober holds its lease across one attempt, with room to spare.
    let lease_ms = config.webhook_connect_timeout_ms + config.webhook_timeout_ms + 5_000;
    let span_secs = config.webhook_retry_schedule_ms.iter().sum::<u64>() / 1000;
    let circuits = Circuits::new(
        connections.redis.clone(),
        keys.clone(),
        lease_ms,
        span_secs.max(config.record_ttl_secs) + 86_400,
    );
    let gone = Arc::new(Mutex::new(HashSet::new()));
    let notifier = Arc::new(Notifier {
        scheduler: Scheduler::new(connections.redis.clone(), keys.clone()),
        redis: connections.redis.clone(),
        broker: connections.broker.clone(),
        keys: keys.clone(),
        http: http.build()?,
        slots: Slots::new(
            config.webhook_concurrency_per_host,
            config.webhook_endpoint_share,
        ),
        circuits: circuits.clone(),
        turns: MessageTurns::new(MAX_MESSAGES),
        gone: gone.clone(),
        config: config.clone(),
    });
    tokio::spawn(gauges(
        circuits,
        gone,
        connections.redis.clone(),
        keys,
        Duration::from_millis(config.notifier_gauge_interval_ms),
        shutdown.clone(),
    ));
    let options = ConsumeOptions::new(
        connections.broker.topology().webhooks_queue(),
        config.notifier_concurrency,
    )
    .with_grace(config.shutdown_grace());
    tracing::info!(queue = %options.queue, "notifier consuming");
    consume(
        connections.broker.clone(),
        options,
        shutdown,
        move |incoming| {
            let notifier = notifier.clone();
            async move { notifier.handle(incoming).await }
        },
    )
    .await;
    drop(connections);
    Ok(())
}

struct Notifier {
    config: Config,
    redis: Redis,
    keys: Keys,
    broker: Broker,
    scheduler: Scheduler,
    http: reqwest::Client,
    slots: Slots,
    circuits: Circuits,
    /// One delivery at a time per message, so that its statuses arrive in
    /// the order they were queued (as far as retries allow).
    turns: MessageTurns,
    /// `{application} {endpoint}` that may be disabled: those this
    /// notifier saw answer `410 Gone`, and every notifier's as last read
    /// with the gauges. A hint, confirmed in Redis before it counts, so
    /// that the hot path reads nothing for endpoints never disabled.
    gone: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug, thiserror::Error)]
enum NotifyError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("publish: {0}")]
    Publish(#[from] dispatch_infra::broker::PublishError),
}

/// Where a webhook goes and how it is signed, as the application says.
struct Destination {
    url: String,
    method: reqwest::Method,
    secret: String,
}

/// A destination whose URL passed the target check.
struct Target {
    url: url::Url,
    /// `scheme://host:port`: the slots are shared per origin.
    origin: String,
    /// The URL without its query: circuits are per endpoint.
    endpoint: String,
    endpoint_id: String,
    method: reqwest::Method,
    secret: String,
}

/// A webhook waiting in an open circuit's list.
#[derive(Serialize, Deserialize)]
struct Parked {
    parked_at_ms: i64,
    job: WebhookJob,
}

impl Parked {
    fn entry(job: &WebhookJob, parked_at_ms: i64) -> String {
        serde_json::to_string(&Parked {
            parked_at_ms,
            job: job.clone(),
        })
        .unwrap_or_default()
    }
}

impl Notifier {
    async fn handle(&self, incoming: Incoming) -> Outcome {
        let (span, result) = match serde_json::from_slice::<Envelope>(&incoming.payload) {
            Ok(envelope @ (Envelope::Webhook(_) | Envelope::Webhooks(_))) => {
                // A transition's webhooks come as one job; each is
                // delivered, retried and dead-lettered on its own, in the
                // order given. A failure to settle one (Redis, the broker)
                // retries the job: those delivered are not sent again.
                let jobs = envelope.into_webhooks().unwrap_or_default();
                let mut outcome = (tracing::Span::none(), Ok(()));
                for job in jobs {
                    let span = tracing::info_span!(
                        "webhook",
                        webhook_id = %job.webhook_id,
                        kind = job.kind.as_str(),
                        workflow_id = %job.workflow_id,
                        attempt = job.attempts + 1,
                    );
                    let result = self.deliver(job).instrument(span.clone()).await;
                    let failed = result.is_err();
                    outcome = (span, result);
                    if failed {
                        break;
                    }
                }
                outcome
            }
            Ok(Envelope::WebhookProbe(probe)) => {
                let span = tracing::info_span!("webhook.probe", endpoint_id = %probe.endpoint_id);
                let result = self
                    .probe(&probe.endpoint_id)
                    .instrument(span.clone())
                    .await;
                (span, result)
            }
            _ => {
                tracing::warn!(routing_key = %incoming.routing_key, "not a webhook job");
                return Outcome::Reject;
            }
        };
        match result {
            Ok(()) => Outcome::Ack,
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "not handled; will retry"));
                Outcome::Retry
            }
        }
    }

    async fn deliver(&self, job: WebhookJob) -> Result<(), NotifyError> {
        // The message's turn first, so that its webhooks go out in the
        // order they were consumed; held until this delivery is settled.
        let _turn = match job.body["message_uuid"].as_str() {
            // Bounded, like a slot: a message whose earlier webhook is
            // still out waits in the timer, not in the prefetch.
            Some(message) => match self.turns.take(message, SLOT_WAIT).await {
                Some(turn) => Some(turn),
                None => {
                    // Not an attempt: the message's earlier webhook is
                    // still out. Back to the timer, due after this
                    // message's webhooks deferred before it (no jitter),
                    // so they come back in order.
                    let now = now_ms();
                    let due_ms = self.turns.behind(message, now + BUSY_WAIT_MS as i64, now);
                    count_attempt(job.kind.as_str(), "deferred");
                    return self.later(&job, due_ms).await;
                }
            },
            None => None,
        };
        self.deliver_in_turn(job).await
    }

    async fn deliver_in_turn(&self, job: WebhookJob) -> Result<(), NotifyError> {
        // One delivery of a webhook at a time, whichever notifier holds
        // its job: a job redelivered while its first delivery is still out
        // (the broker lost the consumer's channel) waits for it, then
        // finds it delivered.
        let lock = self.keys.webhook_lock(&job.webhook_id);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let held_ms =
            self.config.webhook_timeout_ms + self.config.webhook_connect_timeout_ms + 5_000;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(held_ms)
            .query_async(&mut self.redis.clone())
            .await?;
        if taken.is_none() {
            count_attempt(job.kind.as_str(), "deferred");
            let due_ms = now_ms() + BUSY_WAIT_MS as i64;
            return self.later(&job, due_ms).await;
        }
        let result = self.deliver_locked(job).await;
        if let Err(e) = dispatch_infra::token::release(&self.redis, &lock, &token).await {
            tracing::debug!(error = %e, "could not release a webhook's delivery lock; it expires");
        }
        result
    }

    async fn deliver_locked(&self, job: WebhookJob) -> Result<(), NotifyError> {
        let Some(destination) = self.destination(&job).await? else {
            return Ok(());
        };
        let target = match self.target(destination) {
            Ok(target) => target,
            Err(refused) => {
                // A refused target does not get better by waiting.
                self.record_attempt(&job, &refused).await?;
                let reason = format!("target refused: {}", refused.error);
                return self.dead_letter(job, "refused", reason).await;
            }
        };
        if let Some(reason) = self.disabled(&job, &target).await {
            return self.dead_letter(job, "disabled", reason).await;
        }
        if self.slots.seen_open(&target.endpoint) {
            if self.park(&job, &target).await? {
                return Ok(());
            }
            self.slots.set_open(&target.endpoint, false);
        }
        let attempted = self.attempt(&job, &target, Try::Normal).await;
        self.settle(job, &target, attempted).await
    }

    /// What follows a try outside a probe.
    async fn settle(
        &self,
        mut job: WebhookJob,
        target: &Target,
        attempted: Attempted,
    ) -> Result<(), NotifyError> {
        let kind = job.kind.as_str();
        let failed = match attempted {
            Attempted::Delivered => return Ok(()),
            Attempted::Open if self.park(&job, target).await? => return Ok(()),
            Attempted::Disabled(reason) => return self.dead_letter(job, "disabled", reason).await,
            Attempted::Busy | Attempted::Open => {
                count_attempt(kind, "deferred");
                // Not an attempt: come back when there may be room; with
                // jitter, but behind the message's webhooks deferred before.
                let jitter = rand::random::<u64>() % BUSY_WAIT_MS;
                let mut due_ms = now_ms() + (BUSY_WAIT_MS + jitter) as i64;
                if let Some(key) = job.body["message_uuid"].as_str() {
                    due_ms = self.turns.behind(key, due_ms, now_ms());
                }
                return self.later(&job, due_ms).await;
            }
            Attempted::Gone(failed, reason) => {
                self.record_attempt(&job, &failed).await?;
                return self.dead_letter(job, "disabled", reason).await;
            }
            Attempted::Failed(failed) => failed,
        };
        tracing::info!(status = ?failed.status, error = %failed.error, "webhook attempt failed");
        self.record_attempt(&job, &failed).await?;
        job.attempts += 1;
        let failures = self.slots.failed(&target.endpoint);
        if breaker::should_open(failures, self.config.webhook_circuit_failures) {
            self.open(target).await?;
        }
        let Some(delay) = self.next_delay(&job, &failed) else {
            let reason = format!(
                "{} attempts failed, the last: {}",
                job.attempts, failed.error
            );
            return self.dead_letter(job, "failed", reason).await;
        };
        // A circuit open here or at another notifier: the job waits for
        // it instead of its own retry.
        if self.park(&job, target).await? {
            return Ok(());
        }
        count_attempt(kind, "retry");
        let due_ms = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        self.later(&job, due_ms).await
    }

    fn next_delay(&self, job: &WebhookJob, failed: &Failed) -> Option<Duration> {
        let jitter = rand::random::<f64>() * 2.0 - 1.0;
        schedule::next_delay(
            &self.config.webhook_retry_schedule_ms,
            job.attempts,
            failed.retry_after,
            Duration::from_millis(self.config.webhook_retry_after_cap_ms),
            jitter,
        )
    }

    /// Opens the endpoint's circuit (unless another notifier did) and
    /// schedules its first probe.
    async fn open(&self, target: &Target) -> Result<(), NotifyError> {
        self.slots.set_open(&target.endpoint, true);
        let opened = self
            .circuits
            .open(
                &target.endpoint_id,
                now_ms(),
                self.config.webhook_circuit_open_ms,
            )
            .await?;
        if let Some(until_ms) = opened {
            tracing::warn!(
                origin = %target.origin,
                endpoint_id = %target.endpoint_id,
                "webhook endpoint keeps failing: circuit open"
            );
            self.schedule_probe(&target.endpoint_id, until_ms).await?;
        }
        Ok(())
    }

    /// Parks `job` if the endpoint's circuit is open; `false` if it is
    /// closed.
    async fn park(&self, job: &WebhookJob, target: &Target) -> Result<bool, NotifyError> {
        let entry = Parked::entry(job, now_ms());
        let parked = self.circuits.park(&target.endpoint_id, &entry).await?;
        if parked {
            self.slots.set_open(&target.endpoint, true);
            count_attempt(job.kind.as_str(), "parked");
        }
        Ok(parked)
    }

    /// Why the job's application disabled this endpoint, if it did. Only
    /// endpoints in the hints ([`Notifier::gone`]) are looked up in Redis;
    /// a hint found enabled again is dropped. An endpoint another notifier
    /// disabled since the hints were last read gets one more request,
    /// whose `410` disables it here too.
    async fn disabled(&self, job: &WebhookJob, target: &Target) -> Option<String> {
        let app = job.application_id?.to_string();
        let key = format!("{app} {}", target.endpoint);
        if !self
            .gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return None;
        }
        let reason: Option<String> = redis::cmd("HGET")
            .arg(self.keys.disabled_endpoints(&app))
            .arg(&target.endpoint)
            .query_async(&mut self.redis.clone())
            .await
            .ok()
            .flatten();
        match &reason {
            Some(_) => tracing::info!("endpoint disabled: webhook dead-lettered"),
            None => {
                self.gone
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        }
        reason
    }
}

impl Notifier {
    /// Hands `job` to the timer, to come back at `due_ms`.
    async fn later(&self, job: &WebhookJob, due_ms: i64) -> Result<(), NotifyError> {
        let payload = serde_json::to_string(&Envelope::Webhook(job.clone())).unwrap_or_default();
        self.scheduler
            .schedule(
                &format!("webhook:{}", job.webhook_id),
                due_ms,
                RETRY_ROUTING_KEY,
                &job.webhook_id,
                &payload,
            )
            .await?;
        Ok(())
    }

    /// Keeps a failed attempt in the webhook's history and its
    /// workflow's log.
    async fn record_attempt(&self, job: &WebhookJob, failed: &Failed) -> Result<(), NotifyError> {
        let key = self.keys.webhook_attempts(&job.webhook_id);
        let mut pipe = redis::pipe();
        pipe.rpush(
            &key,
            serde_json::to_string(&failed.record()).unwrap_or_default(),
        )
        .ignore()
        .expire(&key, self.config.record_ttl_secs as i64)
        .ignore();
        let entry = failed.log(self.log_entry(job, "failed"));
        self.log_into(&mut pipe, job, &entry, Stat::WebhookFailed);
        pipe.exec_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// A log entry of `job` at this instant ([`dispatch_infra::activity`]).
    pub(crate) fn log_entry(&self, job: &WebhookJob, outcome: &str) -> WebhookLog {
        WebhookLog {
            webhook_id: job.webhook_id.clone(),
            kind: job.kind.as_str().to_owned(),
            message_uuid: job.body["message_uuid"].as_str().map(str::to_owned),
            at_ms: now_ms(),
            status: None,
            latency_ms: 0,
            outcome: outcome.to_owned(),
            error: None,
        }
    }

    /// Appends to `pipe` the keeping of `entry` in the job's workflow's
    /// log and the counting of `stat` for its account.
    pub(crate) fn log_into(
        &self,
        pipe: &mut redis::Pipeline,
        job: &WebhookJob,
        entry: &WebhookLog,
        stat: Stat<'_>,
    ) {
        activity::log_into(
            pipe,
            &self.keys,
            &job.workflow_id.to_string(),
            entry,
            self.config.record_ttl_secs,
        );
        activity::count_into(pipe, &self.keys, &job.account, &[stat], entry.at_ms);
    }

    /// Keeps `job` as a dead letter of its application, with `reason`.
    async fn dead_letter(
        &self,
        mut job: WebhookJob,
        why: &'static str,
        reason: String,
    ) -> Result<(), NotifyError> {
        let kind = job.kind.as_str();
        count_attempt(kind, why);
        metrics::counter!("dispatch_webhook_dead_letters_total", "kind" => kind, "reason" => why)
            .increment(1);
        tracing::warn!(attempts = job.attempts, reason = %reason, "webhook dead-lettered");
        job.reason = Some(reason);
        let key = self.keys.dead_letters(&dead_letter_scope(&job));
        let entry = WebhookLog {
            error: job.reason.clone(),
            ..self.log_entry(&job, "dead")
        };
        let mut pipe = redis::pipe();
        pipe.hset(
            &key,
            &job.webhook_id,
            serde_json::to_string(&job).unwrap_or_default(),
        )
        .ignore()
        .expire(&key, self.config.record_ttl_secs as i64)
        .ignore();
        self.log_into(&mut pipe, &job, &entry, Stat::DeadLetter);
        pipe.exec_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Disables the job's application's endpoint after a `410 Gone`;
    /// returns the reason kept with it.
    async fn disable(&self, job: &WebhookJob, target: &Target) -> Result<String, NotifyError> {
        let reason =
            "the endpoint answered 410 Gone: disabled until the application's webhook URL \
                      is set again or its dead letters are replayed"
                .to_owned();
        if let Some(app) = job.application_id {
            tracing::warn!(origin = %target.origin, "webhook endpoint gone: disabled");
            dispatch_infra::endpoints::disable(
                &self.redis,
                &self.keys,
                &app.to_string(),
                &target.endpoint,
                &reason,
            )
            .await?;
            // After the write: a webhook that finds this entry finds the
            // endpoint disabled in Redis too.
            let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
            if gone.len() >= MAX_MESSAGES {
                gone.clear();
            }
            gone.insert(format!("{app} {}", target.endpoint));
        }
        Ok(reason)
    }

    /// The webhook's own URL or its application's, and the account's
    /// signature secret;
    /// `None` when the webhook has
    /// nowhere to go, or was delivered already (a duplicate job).
    async fn destination(&self, job: &WebhookJob) -> Result<Option<Destination>, NotifyError> {
        if let Some(url) = &job.url {
            // A v1 message's own `webhook_url`: no application needed.
            let mut conn = self.redis.clone();
            let (delivered, secret): (bool, Option<String>) = redis::pipe()
                .exists(self.keys.webhook_delivered(&job.webhook_id))
                .hget(self.keys.account(&job.account), "signature_secret")
                .query_async(&mut conn)
                .await?;
            if delivered {
                tracing::debug!("already delivered; skipping the duplicate");
                return Ok(None);
            }
            let Some(secret) = secret else {
                tracing::info!("the account is gone: webhook dropped");
                return Ok(None);
            };
            return Ok(Some(Destination {
                url: url.clone(),
                method: reqwest::Method::POST,
                secret,
            }));
        }
        let Some(app) = job.application_id else {
            tracing::debug!("no application: nowhere to send this webhook");
            return Ok(None);
        };
        let app_id = app.to_string();
        let mut conn = self.redis.clone();
        let (delivered, app, secret): (bool, Option<String>, Option<String>) = redis::pipe()
            .exists(self.keys.webhook_delivered(&job.webhook_id))
            .get(self.keys.application(&app_id))
            .hget(self.keys.account(&job.account), "signature_secret")
            .query_async(&mut conn)
            .await?;
        if delivered {
            tracing::debug!("already delivered; skipping the duplicate");
            return Ok(None);
        }
        // A missing or unreadable record has no webhooks.
        let app: ApplicationRecord = app
            .and_then(|raw| serde_json::from_str(&raw).ok())
            .unwrap_or_default();
        let (url, hook) = app.webhook_for(job.kind);
        let (Some(hook), Some(secret)) = (hook, secret) else {
            tracing::info!(
                url = url.as_str(),
                "the application has no such webhook URL (or is gone): webhook dropped"
            );
            return Ok(None);
        };
        let url = hook.address.clone();
        let method = reqwest::Method::from_bytes(hook.http_method.as_bytes())
            .unwrap_or(reqwest::Method::POST);
        Ok(Some(Destination {
            url,
            method,
            secret,
        }))
    }

    /// The destination's URL checked as a target; a refusal is a failed
    /// attempt that no retry can mend.
    fn target(&self, to: Destination) -> Result<Target, Failed> {
        let url = guard::check_url(&to.url, self.config.allow_private_webhooks)
            .map_err(|e| Failed::now(None, e.to_string(), None, 0))?;
        let origin = url.origin().ascii_serialization();
        let endpoint = circuit::endpoint_of(&url);
        Ok(Target {
            endpoint_id: circuit::endpoint_id(&endpoint),
            url,
            origin,
            endpoint,
            method: to.method,
            secret: to.secret,
        })
    }
}

/// Reads the circuit and disabled-endpoint gauges from Redis every
/// `interval`: deployment-wide figures, the same at every notifier. The
/// disabled endpoints also become the notifier's hints of what to check
/// before sending.
async fn gauges(
    circuits: Circuits,
    gone: Arc<Mutex<HashSet<String>>>,
    redis: Redis,
    keys: Keys,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let disabled: Result<HashSet<String>, _> = redis::cmd("SMEMBERS")
            .arg(keys.disabled_endpoints_all())
            .query_async(&mut redis.clone())
            .await;
        match (circuits.gauges().await, disabled) {
            (Ok((open, waiting)), Ok(disabled)) => {
                metrics::gauge!("dispatch_webhook_circuits_open").set(open as f64);
                metrics::gauge!("dispatch_webhook_parked").set(waiting as f64);
                metrics::gauge!("dispatch_webhook_endpoints_disabled").set(disabled.len() as f64);
                *gone.lock().unwrap_or_else(|e| e.into_inner()) = disabled;
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "gauges not read"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn count_attempt(kind: &'static str, outcome: &'static str) {
    metrics::counter!("dispatch_webhook_attempts_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// The dead-letter hash a job goes to: its application's, else its
/// account's.
pub fn dead_letter_scope(job: &WebhookJob) -> String {
    job.application_id
        .map(|a| a.to_string())
        .unwrap_or_else(|| job.account.clone())
}
