//! An open circuit's probe time, when the timer brings its probe
//! message back: probe with the oldest parked webhook, drain what waited
//! once the endpoint answers, or come back later.
//!
//! The circuit's state is in Redis ([`crate::circuit`]) and every step
//! here is checked against the lease taken at the start, so a prober that
//! stalls is taken over and two never trim the list under each other.
//! How long the circuit opens again after a failed probe is
//! [`crate::breaker`]'s decision.

use dispatch_model::envelope::{Envelope, WEBHOOK_PROBE, WebhookJob, WebhookProbe};
use dispatch_model::record::now_ms;

use crate::attempt::{Attempted, Failed, Try};
use crate::circuit::{Step, Turn};
use crate::{Notifier, NotifyError, Parked, Target, breaker};

/// What heads an open circuit's parked list once the expired webhooks
/// are gone.
enum Head {
    /// The oldest parked webhook still within the retry schedule's span.
    First(Parked),
    /// Nothing waits any more.
    Empty,
    /// Another notifier took the lease over.
    Lost,
}

/// Parked webhooks read from the head of the list at a time.
const HEAD_BATCH: usize = 100;

/// Parked webhooks published back to the queue per step of a drain.
const DRAIN_BATCH: usize = 500;

/// Parked webhooks a probe may pass over (delivered already, or meant for
/// another endpoint now) before it gives up until the next period.
const PROBE_CANDIDATES: usize = 16;

impl Notifier {
    /// Has the timer bring the endpoint's probe message back at `due_ms`.
    pub(super) async fn schedule_probe(
        &self,
        endpoint_id: &str,
        due_ms: i64,
    ) -> Result<(), NotifyError> {
        let probe = Envelope::WebhookProbe(WebhookProbe {
            endpoint_id: endpoint_id.to_owned(),
        });
        let payload = serde_json::to_string(&probe).unwrap_or_default();
        self.scheduler
            .schedule(
                &format!("webhook-probe:{endpoint_id}"),
                due_ms,
                WEBHOOK_PROBE,
                &probe.id(),
                &payload,
            )
            .await?;
        Ok(())
    }

    /// A circuit's probe time: probe, drain, or come back later.
    pub(super) async fn probe(&self, endpoint_id: &str) -> Result<(), NotifyError> {
        let token = uuid::Uuid::new_v4().to_string();
        match self.circuits.begin(endpoint_id, now_ms(), &token).await? {
            Turn::Closed => Ok(()),
            Turn::Wait { until_ms } => self.schedule_probe(endpoint_id, until_ms).await,
            Turn::Probe { period_ms } => self.run_probe(endpoint_id, &token, period_ms).await,
            Turn::Drain => self.drain(endpoint_id, &token).await,
        }
    }

    /// Sends the first parked webhook that still goes to this endpoint;
    /// `period_ms` is how long the circuit was open.
    async fn run_probe(
        &self,
        id: &str,
        token: &str,
        period_ms: Option<u64>,
    ) -> Result<(), NotifyError> {
        for _ in 0..PROBE_CANDIDATES {
            let parked = match self.expire_parked(id, token).await? {
                Head::First(parked) => parked,
                Head::Lost => return Ok(()),
                Head::Empty => {
                    // Nothing waits any more: close.
                    if self.circuits.probe_succeeded(id, token, now_ms()).await? == Step::Held {
                        return self.drain(id, token).await;
                    }
                    return Ok(());
                }
            };
            let job = parked.job;
            let target = match self.destination(&job).await? {
                Some(destination) => self.target(destination).ok(),
                // Delivered already, or nowhere to go: drop it.
                None => None,
            };
            let Some(target) = target.filter(|t| t.endpoint_id == id) else {
                // Not a probe of this endpoint (its application's URL
                // changed, or is refused now): the queue takes it from
                // here, and drops it if it has nowhere to go.
                self.broker.publish(&Envelope::Webhook(job)).await?;
                if self.circuits.trim(id, token, now_ms(), 1).await? != Step::Held {
                    return Ok(());
                }
                continue;
            };
            if let Some(reason) = self.disabled(&job, &target).await {
                self.dead_letter(job, "disabled", reason).await?;
                if self.circuits.trim(id, token, now_ms(), 1).await? != Step::Held {
                    return Ok(());
                }
                continue;
            }
            return match self.attempt(&job, &target, Try::Probe).await {
                Attempted::Delivered => self.probe_succeeded(id, token, &target).await,
                Attempted::Gone(failed, reason) => {
                    // The endpoint answers: the circuit closes, and this
                    // application's webhooks are dead-lettered as they come.
                    self.record_attempt(&job, &failed).await?;
                    self.dead_letter(job, "disabled", reason).await?;
                    self.probe_succeeded(id, token, &target).await
                }
                Attempted::Disabled(reason) => {
                    self.dead_letter(job, "disabled", reason).await?;
                    if self.circuits.trim(id, token, now_ms(), 1).await? != Step::Held {
                        return Ok(());
                    }
                    continue;
                }
                Attempted::Busy | Attempted::Open => {
                    // Not an attempt: try again after a normal period.
                    let until_ms = now_ms() + self.config.webhook_circuit_open_ms as i64;
                    self.schedule_probe(id, until_ms).await
                }
                Attempted::Failed(failed) => {
                    self.probe_failed(id, token, period_ms, job, parked.parked_at_ms, failed)
                        .await
                }
            };
        }
        // Only webhooks that were not probes: try again next period.
        let until_ms = now_ms() + self.config.webhook_circuit_open_ms as i64;
        self.schedule_probe(id, until_ms).await
    }

    async fn probe_succeeded(
        &self,
        id: &str,
        token: &str,
        target: &Target,
    ) -> Result<(), NotifyError> {
        self.slots.succeeded(&target.endpoint);
        if self.circuits.probe_succeeded(id, token, now_ms()).await? != Step::Held {
            return Ok(());
        }
        tracing::info!(endpoint_id = %id, "webhook endpoint answers again: circuit closed");
        self.drain(id, token).await
    }

    async fn probe_failed(
        &self,
        id: &str,
        token: &str,
        period_ms: Option<u64>,
        mut job: WebhookJob,
        parked_at_ms: i64,
        failed: Failed,
    ) -> Result<(), NotifyError> {
        tracing::info!(status = ?failed.status, error = %failed.error, "probe failed");
        self.record_attempt(&job, &failed).await?;
        job.attempts += 1;
        let updated = match self.next_delay(&job, &failed) {
            Some(_) => Some(Parked::entry(&job, parked_at_ms)),
            None => {
                let reason = format!(
                    "{} attempts failed, the last: {}",
                    job.attempts, failed.error
                );
                self.dead_letter(job, "failed", reason).await?;
                None
            }
        };
        let period_ms = breaker::next_open_period(
            period_ms.unwrap_or(self.config.webhook_circuit_open_ms),
            self.config.webhook_circuit_open_max_ms,
        );
        let next = self
            .circuits
            .probe_failed(id, token, now_ms(), updated.as_deref(), period_ms)
            .await?;
        if let Some(until_ms) = next {
            self.schedule_probe(id, until_ms).await?;
        }
        Ok(())
    }

    /// Dead-letters the parked webhooks at the head of the list that
    /// waited longer than the retry schedule's span; then what heads the
    /// list.
    async fn expire_parked(&self, id: &str, token: &str) -> Result<Head, NotifyError> {
        let span_ms: u64 = self.config.webhook_retry_schedule_ms.iter().sum();
        loop {
            let head = self.circuits.head(id, HEAD_BATCH).await?;
            let now = now_ms();
            let mut expired = 0;
            let mut first = None;
            for raw in &head {
                match serde_json::from_str::<Parked>(raw) {
                    Ok(parked) if now.saturating_sub(parked.parked_at_ms) <= span_ms as i64 => {
                        first = Some(parked);
                        break;
                    }
                    Ok(parked) => {
                        let reason = format!(
                            "waited {} s for the endpoint's circuit to close, longer than the retry schedule",
                            (now - parked.parked_at_ms) / 1000
                        );
                        self.dead_letter(parked.job, "expired", reason).await?;
                    }
                    Err(_) => tracing::warn!("unreadable parked webhook dropped"),
                }
                expired += 1;
            }
            if expired > 0 && self.circuits.trim(id, token, now, expired).await? != Step::Held {
                return Ok(Head::Lost);
            }
            match first {
                Some(parked) => return Ok(Head::First(parked)),
                None if head.len() < HEAD_BATCH => return Ok(Head::Empty),
                None => {}
            }
        }
    }

    /// Sends what waited for the circuit back to the queue, batch by
    /// batch, and closes it.
    async fn drain(&self, id: &str, token: &str) -> Result<(), NotifyError> {
        loop {
            let batch = self.circuits.head(id, DRAIN_BATCH).await?;
            let publishes = batch.iter().filter_map(|raw| {
                let parked = serde_json::from_str::<Parked>(raw).ok()?;
                Some(async move { self.broker.publish(&Envelope::Webhook(parked.job)).await })
            });
            for published in futures_util::future::join_all(publishes).await {
                published?;
            }
            match self.circuits.trim(id, token, now_ms(), batch.len()).await? {
                Step::Held => continue,
                Step::Closed | Step::Lost => return Ok(()),
            }
        }
    }
}
