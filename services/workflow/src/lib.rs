//! The workflow service: runs the failover state machine ([`machine`]) over
//! accepted requests, status events and fired deadlines.
//!
//! Each event is handled as: load the workflow's record, apply the pure
//! transition, write the new record with compare-and-set (retrying on a
//! lost race against another instance), carry out the effects, then ack.
//!
//! **Outbox.** The effects of a transition (send commands, webhook jobs,
//! deadlines to schedule or cancel) are stored in the record by the same
//! compare-and-set that stores the new state, and marked done once carried
//! out (a small mark beside the record; the next write drops them). A crash between the two leaves them in the record; the event is
//! redelivered, its transition is now a no-op, and the handler carries out
//! what is still in the outbox. So a state change never happens without
//! its effects, and never twice. Every effect is idempotent downstream:
//! senders skip messages already sent, the timer upserts by id, webhook
//! jobs carry a stable id. Two instances that both see an unfinished
//! outbox may both carry it out; that is the only source of duplicates,
//! and each is absorbed there.
//!
//! Each accepted request is claimed before it starts (its fate settled as
//! `claimed`); one that ingest abandoned first (a lost confirm, answered
//! 503) is dropped.

pub mod machine;

use std::sync::Arc;

use dispatch_infra::broker::Broker;
use dispatch_infra::consume::{ConsumeOptions, Incoming, Outcome, consume};
use dispatch_infra::redis::Keys;
use dispatch_infra::store::{Fate, StoreError, Versioned, WorkflowStore};
use dispatch_infra::timer::Scheduler;
use dispatch_infra::{Config, Connections};
use dispatch_model::envelope::{Envelope, WorkflowKind};
use dispatch_model::record::{
    Effect, MessageStatus, Pending, WorkflowRecord, WorkflowStatus, now_ms,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::machine::{Context, Event};

/// Most compare-and-set attempts for one event before it is retried later.
const MAX_RACES: usize = 32;

/// Runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let connections = Connections::open(&config, "workflow")?;
    run_with(config, connections, shutdown).await
}

/// [`run`] on connections shared with other services.
pub async fn run_with(
    config: Config,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let redis = connections.redis.clone();
    let broker = connections.broker.clone();
    let keys = Keys::new(&config.redis_prefix);
    let engine = Arc::new(Engine {
        store: WorkflowStore::new(redis.clone(), keys.clone(), config.record_ttl_secs),
        scheduler: Scheduler::new(redis.clone(), keys.clone()),
        broker: broker.clone(),
        expiry_unit_ms: config.expiry_time_unit_ms,
        horizon_ms: config.last_step_horizon_ms,
        base_url: config.public_base(),
    });
    tokio::spawn(report_in_flight(engine.store.clone(), shutdown.clone()));
    let options = ConsumeOptions::new(broker.topology().workflow_queue(), config.workflow_prefetch)
        .with_grace(config.shutdown_grace());
    tracing::info!(queue = %options.queue, "workflow service consuming");
    consume(broker, options, shutdown, move |incoming| {
        let engine = engine.clone();
        async move { engine.handle(incoming).await }
    })
    .await;
    Ok(())
}

struct Engine {
    store: WorkflowStore,
    scheduler: Scheduler,
    broker: Broker,
    expiry_unit_ms: u64,
    horizon_ms: u64,
    base_url: String,
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0} effect(s) could not be carried out")]
    Effects(usize),
    #[error("lost {MAX_RACES} compare-and-set races in a row")]
    Contended,
}

impl HandleError {
    /// Errors that a retry cannot fix: a stored record that does not
    /// decode, or a key of the wrong type.
    fn is_permanent(&self) -> bool {
        match self {
            HandleError::Store(StoreError::Corrupt(_)) => true,
            HandleError::Store(StoreError::Redis(e)) | HandleError::Redis(e) => {
                e.code() == Some("WRONGTYPE")
            }
            _ => false,
        }
    }
}

impl Engine {
    async fn handle(&self, incoming: Incoming) -> Outcome {
        let envelope: Envelope = match serde_json::from_slice(&incoming.payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, routing_key = %incoming.routing_key, "undecodable event");
                return Outcome::Reject;
            }
        };
        let (workflow_id, initial) = match &envelope {
            Envelope::WorkflowAccepted(a) => (a.workflow_id, Some(a)),
            Envelope::Status(s) => (s.workflow_id, None),
            Envelope::Deadline(d) => (d.workflow_id, None),
            Envelope::Send(_) | Envelope::Webhook(_) | Envelope::WebhookProbe(_) => {
                tracing::warn!(routing_key = %incoming.routing_key, "not a workflow event");
                return Outcome::Reject;
            }
        };
        let event = match &envelope {
            Envelope::Status(s) => Event::Status(s),
            Envelope::Deadline(d) => Event::Deadline(d),
            _ => Event::Start,
        };
        let span =
            tracing::info_span!("workflow.event", workflow_id = %workflow_id, event = kind(&event));
        let result = async {
            if initial.is_some()
                && self
                    .store
                    .settle_fate(&workflow_id.to_string(), Fate::Claimed)
                    .await?
                    == Fate::Abandoned
            {
                tracing::info!("dropping work that ingest answered 503 for");
                return Ok(());
            }
            let initial = initial.map(|a| WorkflowRecord::new(a.clone()));
            self.step(workflow_id, event, initial).await
        }
        .instrument(span.clone())
        .await;
        match result {
            Ok(()) => Outcome::Ack,
            Err(e) if e.is_permanent() => {
                span.in_scope(
                    || tracing::error!(error = %e, "event cannot be handled; rejecting it"),
                );
                Outcome::Reject
            }
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "event not handled; will retry"));
                Outcome::Retry
            }
        }
    }

    /// Applies `event` to the stored record (or to `initial()` when none is
    /// stored yet), then carries out the outbox.
    async fn step(
        &self,
        id: Uuid,
        event: Event<'_>,
        initial: Option<WorkflowRecord>,
    ) -> Result<(), HandleError> {
        let key = id.to_string();
        let mut current = None;
        for _ in 0..MAX_RACES {
            let Some(Versioned { version, record }) = self.store.load(&key).await?.or_else(|| {
                initial.clone().map(|record| Versioned {
                    version: None,
                    record,
                })
            }) else {
                // Expired, or a status for work we never accepted.
                tracing::warn!("no record for this workflow; dropping the event");
                return Ok(());
            };
            let ctx = self.context();
            let Some((mut next, effects)) = machine::apply(&record, event, &ctx) else {
                count_event(event, "unchanged");
                current = Some(Versioned { version, record });
                break;
            };
            for effect in effects {
                next.outbox.push(Pending {
                    seq: next.next_seq,
                    effect,
                });
                next.next_seq += 1;
            }
            let change = Change::between(&record, &next);
            if self
                .store
                .compare_and_set(&key, version, &next, change.in_flight())
                .await?
            {
                tracing::debug!(status = ?next.status, step = ?next.current_step, "transition");
                change.count(&next, event);
                current = Some(Versioned {
                    version: Some(version.map_or(1, |v| v + 1)),
                    record: next,
                });
                break;
            }
            count_event(event, "conflict");
        }
        let Some(current) = current else {
            return Err(HandleError::Contended);
        };
        if current.record.outbox.is_empty() {
            return Ok(());
        }
        self.drain_outbox(&key, current).await
    }

    /// Carries out the outbox, then marks it done.
    async fn drain_outbox(&self, key: &str, current: Versioned) -> Result<(), HandleError> {
        let results = futures_util::future::join_all(
            current
                .record
                .outbox
                .iter()
                .map(|p| async move { (p.seq, self.carry_out(&p.effect).await) }),
        )
        .await;
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        for (_, result) in &results {
            if let Err(e) = result {
                tracing::warn!(error = %e, "effect failed");
            }
        }
        if failed > 0 {
            // Nothing is marked done: the redelivery carries out the whole
            // outbox again, and every effect is idempotent.
            return Err(HandleError::Effects(failed));
        }
        if let Some(last) = results.iter().map(|(seq, _)| *seq).max() {
            self.store.mark_done(key, last).await?;
        }
        Ok(())
    }

    async fn carry_out(&self, effect: &Effect) -> anyhow::Result<()> {
        match effect {
            Effect::Publish { envelope } => self.broker.publish(envelope).await?,
            Effect::Schedule {
                id,
                due_ms,
                envelope,
            } => {
                let payload = serde_json::to_string(envelope)?;
                self.scheduler
                    .schedule(
                        id,
                        *due_ms,
                        &envelope.routing_key(),
                        &envelope.id(),
                        &payload,
                    )
                    .await?
            }
            Effect::Cancel { id } => self.scheduler.cancel(id).await?,
        }
        Ok(())
    }

    fn context(&self) -> Context {
        Context {
            now_ms: now_ms(),
            expiry_unit_ms: self.expiry_unit_ms,
            horizon_ms: self.horizon_ms,
            base_url: self.base_url.clone(),
        }
    }
}

/// Sets `dispatch_workflows_in_flight` from Redis every 5 s (every
/// instance reports the same deployment-wide count).
async fn report_in_flight(store: WorkflowStore, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(count) = store.in_flight().await {
            metrics::gauge!("dispatch_workflows_in_flight").set(count as f64);
        }
    }
}

fn count_event(event: Event<'_>, outcome: &'static str) {
    metrics::counter!(
        "dispatch_workflow_events_total",
        "event" => kind(&event),
        "outcome" => outcome,
    )
    .increment(1);
}

/// What a transition changed, for the metrics (docs/observability.md).
struct Change {
    was_running: bool,
    started: bool,
    finished: bool,
    failover: bool,
}

impl Change {
    fn between(before: &WorkflowRecord, after: &WorkflowRecord) -> Self {
        let running = |s: WorkflowStatus| s == WorkflowStatus::InProgress;
        let ended =
            |s: WorkflowStatus| matches!(s, WorkflowStatus::Completed | WorkflowStatus::Error);
        Self {
            was_running: running(before.status),
            started: before.status == WorkflowStatus::Accepted && running(after.status),
            finished: !ended(before.status) && ended(after.status),
            failover: running(before.status)
                && before.current_step.is_some()
                && after.current_step > before.current_step,
        }
    }

    /// The change of the count of workflows in flight: one that ends
    /// straight from `Accepted` (nothing to send) was never counted in.
    fn in_flight(&self) -> i64 {
        i64::from(self.started) - i64::from(self.finished && self.was_running)
    }

    fn count(&self, after: &WorkflowRecord, event: Event<'_>) {
        count_event(event, "applied");
        let kind = match after.workflow.kind {
            WorkflowKind::Dispatch => "dispatch",
            WorkflowKind::Message => "message",
        };
        if self.started {
            metrics::counter!("dispatch_workflows_started_total", "kind" => kind).increment(1);
        }
        if self.finished {
            let status = match after.status {
                WorkflowStatus::Completed => "completed",
                _ => "error",
            };
            metrics::counter!("dispatch_workflows_finished_total", "kind" => kind, "status" => status)
                .increment(1);
        }
        if self.failover {
            let reason = match event {
                Event::Deadline(_) => "deadline",
                Event::Status(s) if s.status == MessageStatus::Rejected => "rejected",
                _ => "undeliverable",
            };
            metrics::counter!("dispatch_failovers_total", "reason" => reason).increment(1);
        }
    }
}

fn kind(event: &Event<'_>) -> &'static str {
    match event {
        Event::Start => "start",
        Event::Status(_) => "status",
        Event::Deadline(_) => "deadline",
    }
}
