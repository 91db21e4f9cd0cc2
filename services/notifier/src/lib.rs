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
//! - **Isolation**: at most `webhook_concurrency_per_host` requests per
//!   destination host, `notifier_concurrency` overall; a webhook whose host
//!   has no free slot goes back to the timer for a moment instead of
//!   waiting in the consumer, so a slow receiver never fills the prefetch
//!   that other receivers' webhooks need; a host that fails
//!   `webhook_circuit_failures` times in a row gets nothing for
//!   `webhook_circuit_open_ms` (its webhooks are rescheduled, not sent), so
//!   a dead receiver is paced rather than hammered and cannot hold up the
//!   others.
//! - **Order**: deliveries of one message's webhooks take turns within a
//!   notifier, in the order they were consumed (the order the workflow
//!   published them), so a receiver sees `submitted` before `delivered`
//!   unless a retry intervenes; every body carries its event time. A
//!   webhook that finds its message's turn taken goes back to the timer
//!   due just after that message's previously deferred ones, so deferred
//!   webhooks come back in order. Best effort, not a promise: a new
//!   webhook can take a free turn ahead of deferred ones, a timer fires a
//!   round concurrently, and turns are per notifier process.
//! - **Targets** are checked by [`guard`]: no internal addresses unless
//!   `allow_private_webhooks`.

pub mod bench;
pub mod guard;
pub mod schedule;
pub mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatch_infra::consume::{ConsumeOptions, Incoming, Outcome, consume};
use dispatch_infra::redis::{Keys, Redis};
use dispatch_infra::timer::Scheduler;
use dispatch_infra::{Config, Connections};
use dispatch_model::envelope::{Envelope, WebhookJob, WebhookKind};
use dispatch_model::record::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Routing key of scheduled retries (bound to the webhooks queue).
pub const RETRY_ROUTING_KEY: &str = "webhook.retry";

/// Destination hosts remembered before idle ones are forgotten.
const MAX_HOSTS: usize = 10_000;

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
    let keys = Keys::new(&config.redis_prefix);
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.webhook_connect_timeout_ms))
        .timeout(Duration::from_millis(config.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none());
    if !config.allow_private_webhooks {
        // A proxy would resolve the target itself, past the check.
        http = http.dns_resolver(guard::PublicOnly).no_proxy();
    }
    let notifier = Arc::new(Notifier {
        scheduler: Scheduler::new(connections.redis.clone(), keys.clone()),
        redis: connections.redis.clone(),
        keys,
        http: http.build()?,
        hosts: Mutex::new(HashMap::new()),
        messages: Mutex::new(HashMap::new()),
        deferred: Mutex::new(HashMap::new()),
        config: config.clone(),
    });
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
    scheduler: Scheduler,
    http: reqwest::Client,
    hosts: Mutex<HashMap<String, Host>>,
    /// One delivery at a time per message, so that its statuses arrive in
    /// the order they were queued (as far as retries allow).
    messages: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per message, when its last webhook deferred for its turn comes back.
    deferred: Mutex<HashMap<String, i64>>,
}

/// What the notifier knows of one destination host.
struct Host {
    slots: Arc<Semaphore>,
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
enum NotifyError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where a webhook goes and how it is signed.
struct Destination {
    url: String,
    method: reqwest::Method,
    secret: String,
}

impl Notifier {
    async fn handle(&self, incoming: Incoming) -> Outcome {
        let job = match serde_json::from_slice::<Envelope>(&incoming.payload) {
            Ok(Envelope::Webhook(job)) => job,
            _ => {
                tracing::warn!(routing_key = %incoming.routing_key, "not a webhook job");
                return Outcome::Reject;
            }
        };
        let span = tracing::info_span!(
            "webhook",
            webhook_id = %job.webhook_id,
            kind = job.kind.as_str(),
            workflow_id = %job.workflow_id,
            attempt = job.attempts + 1,
        );
        match self.deliver(job).instrument(span.clone()).await {
            Ok(()) => Outcome::Ack,
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "webhook not handled; will retry"));
                Outcome::Retry
            }
        }
    }

    async fn deliver(&self, mut job: WebhookJob) -> Result<(), NotifyError> {
        // The message's turn first, so that its webhooks go out in the
        // order they were consumed.
        let key = job.body["message_uuid"].as_str().map(str::to_owned);
        let turn = key.as_ref().map(|k| self.message_turn(k));
        let held = match &turn {
            // Bounded, like a slot: a message whose earlier webhook is
            // still out waits in the timer, not in the prefetch.
            Some(turn) => tokio::time::timeout(SLOT_WAIT, turn.lock()).await.ok(),
            None => None,
        };
        if let (Some(key), Some(_), None) = (&key, &turn, &held) {
            // Not an attempt: the message's earlier webhook is still out.
            // Back to the timer, due after this message's webhooks
            // deferred before it (no jitter), so they come back in order.
            let due_ms = self.behind(key, now_ms() + BUSY_WAIT_MS as i64);
            drop(held);
            self.release_turn(key, turn);
            count_attempt(job.kind.as_str(), "deferred");
            return self.later(&job, due_ms).await;
        }
        let result = match self.destination(&job).await {
            Ok(Some(destination)) => Ok(self.attempt(&job, &destination).await),
            Ok(None) => Ok(Ok(())),
            Err(e) => Err(e),
        };
        drop(held);
        if let Some(key) = key {
            self.release_turn(&key, turn);
        }
        let result = result?;
        let Err(attempt) = result else {
            return Ok(());
        };
        let kind = job.kind.as_str();
        if attempt.busy {
            count_attempt(kind, "deferred");
            // Not an attempt: come back when there may be room; with
            // jitter, but behind the message's webhooks deferred before.
            let jitter = rand::random::<u64>() % BUSY_WAIT_MS;
            let wait = attempt
                .retry_after
                .unwrap_or_default()
                .max(Duration::from_millis(BUSY_WAIT_MS + jitter));
            let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            let mut due_ms = now_ms().saturating_add(wait_ms);
            if let Some(key) = job.body["message_uuid"].as_str() {
                due_ms = self.behind(key, due_ms);
            }
            return self.later(&job, due_ms).await;
        }
        tracing::info!(status = ?attempt.status, error = %attempt.error, "webhook attempt failed");
        let mut conn = self.redis.clone();
        let key = self.keys.webhook_attempts(&job.webhook_id);
        redis::pipe()
            .rpush(
                &key,
                serde_json::to_string(&attempt.record()).unwrap_or_default(),
            )
            .ignore()
            .expire(&key, self.config.record_ttl_secs as i64)
            .ignore()
            .exec_async(&mut conn)
            .await?;
        job.attempts += 1;
        if attempt.permanent {
            // A refused target does not get better by waiting.
            job.attempts = job
                .attempts
                .max(self.config.webhook_retry_schedule_ms.len() as u32);
        }
        let jitter = rand::random::<f64>() * 2.0 - 1.0;
        let delay = schedule::next_delay(
            &self.config.webhook_retry_schedule_ms,
            job.attempts,
            attempt.retry_after,
            Duration::from_millis(self.config.webhook_retry_after_cap_ms),
            jitter,
        );
        match delay {
            Some(delay) => {
                count_attempt(kind, "retry");
                let due_ms = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                self.later(&job, due_ms).await?;
            }
            None => {
                count_attempt(
                    kind,
                    if attempt.permanent {
                        "refused"
                    } else {
                        "failed"
                    },
                );
                metrics::counter!("dispatch_webhook_dead_letters_total", "kind" => kind)
                    .increment(1);
                tracing::warn!(attempts = job.attempts, "webhook dead-lettered");
                let scope = dead_letter_scope(&job);
                let key = self.keys.dead_letters(&scope);
                redis::pipe()
                    .hset(
                        &key,
                        &job.webhook_id,
                        serde_json::to_string(&job).unwrap_or_default(),
                    )
                    .ignore()
                    .expire(&key, self.config.record_ttl_secs as i64)
                    .ignore()
                    .exec_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// When a webhook of `message` waiting for its turn comes back: at
    /// `due_ms`, or just after the same message's last deferred one.
    fn behind(&self, message: &str, due_ms: i64) -> i64 {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if deferred.len() >= MAX_HOSTS {
            let now = now_ms();
            deferred.retain(|_, due| *due > now);
        }
        let due = deferred
            .get(message)
            .map_or(due_ms, |last| due_ms.max(last + 1));
        deferred.insert(message.to_owned(), due);
        due
    }

    fn message_turn(&self, message: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(message.to_owned()).or_default().clone()
    }

    /// Forgets a message's turn once nobody waits for it.
    fn release_turn(&self, message: &str, turn: Option<Arc<tokio::sync::Mutex<()>>>) {
        let mut turns = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        drop(turn);
        if turns
            .get(message)
            .is_some_and(|t| Arc::strong_count(t) == 1)
        {
            turns.remove(message);
        }
    }

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

    /// The application's webhook URL and the account's signature secret;
    /// `None` when the webhook has nowhere to go, or was delivered already
    /// (a duplicate job).
    async fn destination(&self, job: &WebhookJob) -> Result<Option<Destination>, NotifyError> {
        let Some(app) = job.application_id else {
            tracing::debug!("no application: nowhere to send this webhook");
            return Ok(None);
        };
        let mut conn = self.redis.clone();
        let (delivered, app, secret): (bool, Option<String>, Option<String>) = redis::pipe()
            .exists(self.keys.webhook_delivered(&job.webhook_id))
            .get(self.keys.application(&app.to_string()))
            .hget(self.keys.account(&job.account), "signature_secret")
            .query_async(&mut conn)
            .await?;
        if delivered {
            tracing::debug!("already delivered; skipping the duplicate");
            return Ok(None);
        }
        let app: Option<serde_json::Value> = app.and_then(|raw| serde_json::from_str(&raw).ok());
        let webhooks = app
            .as_ref()
            .and_then(|a| a.pointer("/capabilities/messages/webhooks"));
        let url = match job.kind {
            WebhookKind::InboundMessage => "inbound_url",
            WebhookKind::MessageStatus => "status_url",
            // A separate URL when the application names one.
            WebhookKind::FinalReport => match webhooks.and_then(|w| w.get("final_report_url")) {
                Some(_) => "final_report_url",
                None => "status_url",
            },
        };
        let hook = webhooks.and_then(|w| w.get(url));
        let (Some(hook), Some(secret)) = (hook, secret) else {
            tracing::info!(
                url,
                "the application has no such webhook URL (or is gone): webhook dropped"
            );
            return Ok(None);
        };
        let url = hook["address"].as_str().unwrap_or_default().to_owned();
        let method = hook["http_method"]
            .as_str()
            .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(reqwest::Method::POST);
        Ok(Some(Destination {
            url,
            method,
            secret,
        }))
    }

    /// One attempt: `Ok` when delivered, `Err` a failed attempt.
    async fn attempt(&self, job: &WebhookJob, to: &Destination) -> Result<(), Failed> {
        let started = Instant::now();
        let failed = |status: Option<u16>, error: String, retry_after: Option<Duration>| Failed {
            at_ms: now_ms(),
            status,
            latency_ms: started.elapsed().as_millis() as u64,
            error,
            retry_after,
            permanent: false,
            busy: false,
        };
        let url =
            guard::check_url(&to.url, self.config.allow_private_webhooks).map_err(|e| Failed {
                permanent: true,
                ..failed(None, e.to_string(), None)
            })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let slots = self
            .open_slots(&host)
            .map_err(|open_ms| Failed::busy(Duration::from_millis(open_ms as u64)))?;
        // A host whose slots stay busy does not get to hold this
        // notifier's prefetch: after a short wait the webhook goes back to
        // the timer instead.
        let slot = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await;
        let Ok(Ok(_slot)) = slot else {
            return Err(Failed::busy(Duration::ZERO));
        };
        let body = serde_json::to_vec(&job.body).unwrap_or_default();
        let signer = sign::Signer {
            secret: &to.secret,
            issuer: &self.config.webhook_issuer,
            api_key: &job.account,
            application_id: job.application_id.map(|a| a.to_string()),
        };
        let headers = signer
            .headers(&job.webhook_id, now_ms() / 1000, &body)
            .map_err(|e| failed(None, format!("signing: {e}"), None))?;
        let mut request = self
            .http
            .request(to.method.clone(), url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let post = tracing::info_span!("webhook.post", otel.kind = "client", host = %host);
        request = request.headers(post.in_scope(dispatch_infra::telemetry::trace_headers));
        let sent_at = Instant::now();
        let result = request.send().instrument(post).await;
        metrics::histogram!("dispatch_webhook_request_duration_seconds", "kind" => job.kind.as_str())
            .record(sent_at.elapsed());
        let outcome = match result {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let status = response.status();
                Err(failed(
                    Some(status.as_u16()),
                    format!("HTTP {status}"),
                    retry_after,
                ))
            }
            // Without the URL: its query may hold the receiver's secrets.
            Err(e) => Err(failed(None, error_chain(&e.without_url()), None)),
        };
        self.note(&host, outcome.is_ok());
        outcome?;
        let _: Result<(), _> = redis::cmd("SET")
            .arg(self.keys.webhook_delivered(&job.webhook_id))
            .arg(1)
            .arg("EX")
            .arg(self.config.record_ttl_secs)
            .exec_async(&mut self.redis.clone())
            .await;
        tracing::debug!("webhook delivered");
        count_attempt(job.kind.as_str(), "delivered");
        let lag_ms = (now_ms() - job.event_at_ms).max(0);
        metrics::histogram!("dispatch_webhook_delivery_lag_seconds", "kind" => job.kind.as_str())
            .record(lag_ms as f64 / 1000.0);
        Ok(())
    }

    /// The host's request slots, or how long its circuit stays open.
    fn open_slots(&self, host: &str) -> Result<Arc<Semaphore>, u128> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
            // Forget hosts with nothing in flight and nothing to remember.
            let per_host = self.config.webhook_concurrency_per_host;
            hosts.retain(|_, h| {
                h.failures > 0 || h.open_until.is_some() || h.slots.available_permits() < per_host
            });
        }
        let entry = hosts.entry(host.to_owned()).or_insert_with(|| Host {
            slots: Arc::new(Semaphore::new(self.config.webhook_concurrency_per_host)),
            failures: 0,
            open_until: None,
        });
        if let Some(until) = entry.open_until {
            let now = Instant::now();
            if now < until {
                return Err((until - now).as_millis());
            }
            // Half-open: let attempts through; one more failure re-opens.
            entry.open_until = None;
            entry.failures = self.config.webhook_circuit_failures.saturating_sub(1);
        }
        Ok(entry.slots.clone())
    }

    fn note(&self, host: &str, ok: bool) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = hosts.get_mut(host) {
            if ok {
                entry.failures = 0;
            } else {
                entry.failures += 1;
                if entry.failures >= self.config.webhook_circuit_failures {
                    tracing::warn!(%host, "webhook receiver keeps failing: pausing it");
                    entry.open_until = Some(
                        Instant::now() + Duration::from_millis(self.config.webhook_circuit_open_ms),
                    );
                }
            }
        }
    }
}

/// A failed attempt, with what the receiver asked for.
struct Failed {
    at_ms: i64,
    status: Option<u16>,
    latency_ms: u64,
    error: String,
    retry_after: Option<Duration>,
    /// Retrying cannot help (a refused target).
    permanent: bool,
    /// Not an attempt: the destination had no free slot.
    busy: bool,
}

impl Failed {
    /// Not an attempt: no slot, or the destination's circuit is open (for
    /// `wait` more).
    fn busy(wait: Duration) -> Self {
        Failed {
            at_ms: now_ms(),
            status: None,
            latency_ms: 0,
            error: "destination busy".into(),
            retry_after: Some(wait),
            permanent: false,
            busy: true,
        }
    }

    fn record(&self) -> Attempt {
        Attempt {
            at_ms: self.at_ms,
            status: self.status,
            latency_ms: self.latency_ms,
            error: self.error.clone(),
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
