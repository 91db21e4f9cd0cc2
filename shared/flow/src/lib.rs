//! The failover state machine ([`machine`], pure) and its application to
//! a workflow's record ([`Engine`]) by whichever service its event arises
//! in: ingest applies `accepted`, the sender `submitted` and `rejected`,
//! the provider-callback handler receipts, the timer deadlines.
//!
//! Each event is applied as: load the record, apply the pure transition,
//! write the new record with compare-and-set (retrying on a lost race
//! against another writer), then carry out the outbox.
//!
//! **What is written together.** A Lua script (`WorkflowStore::write`)
//! stores the new state with the compare-and-set, and stores what the
//! transition asks of RabbitMQ in the record's outbox (send commands, and
//! the transition's webhooks as one job). Written before it, in the same
//! pipeline: what it asks of Redis (deadlines to schedule, lookup
//! indexes) and the outbox's recovery, a timer entry due
//! `outbox_recovery_ms` later; after it, once written, the deadlines to
//! cancel. A crash in between leaves only stray entries that do nothing.
//!
//! **Outbox.** The writer then publishes its transition's entries with
//! confirms and marks them done; once none is left undone, the recovery is
//! disarmed. Entries an earlier writer left undone are not published
//! again by a later one: that writer is still publishing them (or died,
//! and the recovery will), so overlapping transitions cost no duplicate
//! messages. A writer that dies (or
//! cannot reach RabbitMQ) in between leaves the outbox in the record, and
//! the timer carries it out when the recovery entry comes due
//! ([`Engine::recover`]). So a state change never happens without its
//! effects, and never twice. Every effect is idempotent downstream:
//! senders skip messages already sent, webhook jobs carry a stable id.
//! An outbox carried out both by its writer and by the recovery (a
//! publish slower than `outbox_recovery_ms`) is the only source of
//! duplicates, and each is absorbed there.
//!
//! Nothing here publishes an event to another of our services: RabbitMQ
//! carries only work that needs a worker.

pub mod machine;

use dispatch_infra::Config;
use dispatch_infra::activity::Stat;
use dispatch_infra::broker::{Broker, PublishError};
use dispatch_infra::redis::{Keys, Redis};
use dispatch_infra::store::{StoreError, Versioned, WorkflowStore, Write, message_indexes};
use dispatch_infra::timer::{Scheduler, entry_json};
use dispatch_model::envelope::{
    Envelope, WORKFLOW_REDACT, WebhookBatch, WorkflowAccepted, WorkflowKind,
};
use dispatch_model::record::{
    Effect, MessageStatus, Pending, WorkflowRecord, WorkflowStatus, now_ms,
};
use tracing::Instrument;
use uuid::Uuid;

pub use machine::{Context, Event};

/// Most compare-and-set attempts for one event before giving up.
const MAX_RACES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("lost {MAX_RACES} compare-and-set races in a row")]
    Contended,
}

impl EngineError {
    /// Errors that a retry cannot fix: a stored record that does not
    /// decode, or a key of the wrong type.
    pub fn is_permanent(&self) -> bool {
        match self {
            EngineError::Store(StoreError::Corrupt(_)) => true,
            EngineError::Store(StoreError::Redis(e)) | EngineError::Redis(e) => {
                e.code() == Some("WRONGTYPE")
            }
            EngineError::Contended => false,
        }
    }

    /// Whether the write may have happened although it failed: the
    /// connection dropped or timed out after the script was sent.
    pub fn outcome_unknown(&self) -> bool {
        let e = match self {
            EngineError::Store(StoreError::Redis(e)) | EngineError::Redis(e) => e,
            _ => return false,
        };
        !e.is_connection_refusal()
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
    }
}

/// What applying an event did.
#[derive(Debug)]
pub enum Applied {
    /// The record changed; its outbox is to be carried out.
    Changed(Outbox),
    /// Nothing to change (a duplicate, a stale deadline); an outbox left
    /// by an earlier writer, if any, is to be carried out.
    Unchanged(Outbox),
    /// No record: expired, or an event for work we never accepted.
    Missing,
}

impl Applied {
    pub fn outbox(self) -> Option<Outbox> {
        match self {
            Applied::Changed(o) | Applied::Unchanged(o) => Some(o),
            Applied::Missing => None,
        }
    }
}

/// A written record's effects not yet carried out.
#[derive(Debug)]
#[must_use = "an outbox left alone waits for its recovery"]
pub struct Outbox {
    id: String,
    pending: Vec<Pending>,
    /// When the recovery this transition armed is due, so that marking
    /// the outbox done disarms that one and no later one.
    recovery_due_ms: Option<i64>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Applies the machine to records in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: WorkflowStore,
    keys: Keys,
    scheduler: Scheduler,
    broker: Broker,
    expiry_unit_ms: u64,
    horizon_ms: u64,
    recovery_ms: u64,
    /// `content_retention_secs` in ms (0: content is kept).
    retention_ms: i64,
    base_url: String,
}

impl Engine {
    pub fn new(config: &Config, redis: Redis, broker: Broker) -> Self {
        let keys = Keys::for_config(config);
        Self {
            store: WorkflowStore::new(redis.clone(), keys.clone(), config.record_ttl_secs)
                .waking_within(config.timer_max_idle_ms)
                .replicated(dispatch_infra::redis::Replicated::of(config)),
            scheduler: Scheduler::new(redis, keys.clone()),
            keys,
            broker,
            expiry_unit_ms: config.expiry_time_unit_ms,
            horizon_ms: config.last_step_horizon_ms,
            recovery_ms: config.outbox_recovery_ms,
            retention_ms: i64::try_from(config.content_retention_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            base_url: config.public_base(),
        }
    }

    pub fn store(&self) -> &WorkflowStore {
        &self.store
    }

    /// The first transition of accepted work: the record is created with
    /// its first send in the outbox (and, for a dispatch, the index of its
    /// messages). Fails if the record exists already.
    pub async fn start(
        &self,
        accepted: WorkflowAccepted,
        indexes: &[(String, String)],
    ) -> Result<Applied, EngineError> {
        let id = accepted.workflow_id;
        let initial = WorkflowRecord::new(accepted);
        self.step(id, Event::Start, Some(initial), indexes).await
    }

    /// Applies `event` to workflow `id`'s stored record.
    pub async fn apply(&self, id: Uuid, event: Event<'_>) -> Result<Applied, EngineError> {
        self.step(id, event, None, &[]).await
    }

    /// Applies `event`, starting from `initial` when no record is stored
    /// (work accepted before the upgrade, whose record ingest may not have
    /// written).
    pub async fn apply_or_start(
        &self,
        id: Uuid,
        event: Event<'_>,
        initial: WorkflowRecord,
        indexes: &[(String, String)],
    ) -> Result<Applied, EngineError> {
        self.step(id, event, Some(initial), indexes).await
    }

    /// Applies `event` and carries out the outbox; `Ok` once the
    /// transition is written, whatever becomes of the outbox (what is not
    /// published now, the recovery publishes).
    pub async fn apply_and_carry_out(&self, id: Uuid, event: Event<'_>) -> Result<(), EngineError> {
        if let Some(outbox) = self.apply(id, event).await?.outbox() {
            self.carry_out(outbox).await;
        }
        Ok(())
    }

    /// Carries out what is left in workflow `id`'s outbox: the timer, when
    /// an outbox's recovery entry comes due.
    pub async fn recover(&self, id: &str) -> Result<bool, EngineError> {
        let Some(current) = self.store.load(id).await? else {
            return Ok(true);
        };
        let outbox = Outbox {
            id: id.to_owned(),
            pending: current.record.outbox,
            // The timer acks the entry it fired.
            recovery_due_ms: None,
        };
        if outbox.is_empty() {
            // Done, and the mark raced with the timer's claim: the
            // timer's ack forgets the entry.
            return Ok(true);
        }
        metrics::counter!("dispatch_outbox_recovered_total").increment(1);
        tracing::info!(
            workflow_id = id,
            effects = outbox.pending.len(),
            "recovering an outbox"
        );
        Ok(self.carry_out(outbox).await)
    }

    /// Publishes the outbox, then marks it done; `false` when something
    /// failed, which stays in the outbox for the recovery.
    pub async fn carry_out(&self, outbox: Outbox) -> bool {
        if outbox.is_empty() {
            return true;
        }
        let results = futures_util::future::join_all(
            outbox
                .pending
                .iter()
                .map(|p| async move { self.carry_out_one(&p.effect).await }),
        )
        .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            // Nothing is marked done: the recovery carries out the whole
            // outbox again, and every effect is idempotent.
            metrics::counter!("dispatch_outbox_failures_total").increment(1);
            tracing::warn!(error = %e, failed, workflow_id = %outbox.id,
                "effects not carried out; the outbox's recovery will");
            return false;
        }
        let seqs: Vec<u64> = outbox.pending.iter().map(|p| p.seq).collect();
        if let Err(e) = self
            .store
            .mark_done(&outbox.id, &seqs, outbox.recovery_due_ms)
            .await
        {
            tracing::warn!(error = %e, workflow_id = %outbox.id,
                "outbox carried out but not marked done; its recovery repeats it");
            return false;
        }
        true
    }

    async fn carry_out_one(&self, effect: &Effect) -> Result<(), EffectError> {
        match effect {
            Effect::Publish { envelope } => self.broker.publish(envelope).await?,
            // Only in outboxes written before timer entries were written
            // with the transition.
            Effect::Schedule {
                id,
                due_ms,
                envelope,
            } => {
                let payload = serde_json::to_string(envelope).unwrap_or_default();
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

    async fn step(
        &self,
        id: Uuid,
        event: Event<'_>,
        initial: Option<WorkflowRecord>,
        indexes: &[(String, String)],
    ) -> Result<Applied, EngineError> {
        let span = tracing::info_span!("workflow.event", workflow_id = %id, event = kind(&event));
        self.step_in(id, event, initial, indexes)
            .instrument(span)
            .await
    }

    async fn step_in(
        &self,
        id: Uuid,
        event: Event<'_>,
        initial: Option<WorkflowRecord>,
        indexes: &[(String, String)],
    ) -> Result<Applied, EngineError> {
        let key = id.to_string();
        // New work has no record yet: try creating it without reading
        // first (a record that exists makes the write fail, then it is
        // read like any other).
        let mut read = initial.is_none();
        for _ in 0..MAX_RACES {
            let stored = if read {
                self.store.load(&key).await?
            } else {
                None
            };
            read = true;
            let creating = stored.is_none();
            let Some(Versioned {
                version,
                record,
                armed,
            }) = stored.or_else(|| {
                initial.clone().map(|record| Versioned {
                    version: None,
                    record,
                    armed: true,
                })
            })
            else {
                tracing::warn!(workflow_id = %id, "no record for this workflow; dropping the event");
                return Ok(Applied::Missing);
            };
            let ctx = self.context();
            let Some((mut next, effects)) = machine::apply(&record, event, &ctx) else {
                count_event(event, "unchanged");
                if creating {
                    // Nothing to start (no steps): nothing stored either.
                    return Ok(Applied::Missing);
                }
                // What is left in an armed outbox is its writer's or the
                // recovery's. One written before recoveries existed is
                // carried out by whoever sees it, as then.
                return Ok(Applied::Unchanged(Outbox {
                    id: key,
                    pending: if armed { Vec::new() } else { record.outbox },
                    recovery_due_ms: None,
                }));
            };
            // This transition's own entries; older ones left undone belong
            // to their writer, or to the recovery if it died.
            let own_from = if armed { next.next_seq } else { 0 };
            let mut ops = TimerOps::of(effects, &mut next);
            if creating && self.retention_ms > 0 {
                let due_ms = next
                    .workflow
                    .accepted_at_ms
                    .saturating_add(self.retention_ms);
                let entry = entry_json(WORKFLOW_REDACT, &key, &key, None);
                ops.schedule.push((redact_id(&key), due_ms, entry));
            }
            let change = Change::between(&record, &next);
            let failover_from = record
                .current_step
                .and_then(|i| record.steps.get(i))
                .and_then(|s| s.channel);
            let stats = change.stats(&next, event, failover_from);
            // A record expires from its last write: its search and index
            // entries are written when it is created and again by every
            // write once it has ended (its last writes), so that none
            // expires before it (activity.rs).
            let refresh = creating || next.is_finished();
            let search = if refresh {
                dispatch_infra::activity::search_keys(&self.keys, &next.workflow)
            } else {
                Vec::new()
            };
            let refreshed = if refresh && !creating {
                message_indexes(&self.keys, &next.workflow)
            } else {
                Vec::new()
            };
            let indexes = if creating { indexes } else { &refreshed };
            let current = next
                .current_step
                .filter(|_| !next.is_finished())
                .map(|i| next.steps[i].message_uuid);
            let recovery_due_ms = ctx.now_ms + i64::try_from(self.recovery_ms).unwrap_or(i64::MAX);
            let write = Write {
                id: &key,
                expected: version,
                record: &next,
                in_flight: change.in_flight(),
                current,
                schedule: ops.schedule,
                cancel: ops.cancel,
                indexes,
                search: &search,
                stats: &stats,
                recovery_due_ms,
                own_from,
            };
            if self.store.write(&write).await? {
                tracing::debug!(status = ?next.status, step = ?next.current_step, "transition");
                change.count(&next, event);
                let mut pending = next.outbox;
                pending.retain(|p| p.seq >= own_from);
                return Ok(Applied::Changed(Outbox {
                    id: key,
                    pending,
                    recovery_due_ms: Some(recovery_due_ms),
                }));
            }
            count_event(event, "conflict");
        }
        Err(EngineError::Contended)
    }

    /// Removes the content of workflow `id`'s messages
    /// (`content_retention_secs`): the timer, when its entry comes due.
    /// A workflow that may still send (not ended, or with effects not yet
    /// carried out) is looked at again a retention period later.
    pub async fn redact(&self, id: &str) -> Result<(), EngineError> {
        for _ in 0..MAX_RACES {
            let Some(Versioned {
                version, record, ..
            }) = self.store.load(id).await?
            else {
                return Ok(());
            };
            if record.content_redacted_at_ms.is_some() {
                return Ok(());
            }
            let now = now_ms();
            if !record.is_finished() || !record.outbox.is_empty() {
                let later = now.saturating_add(self.retention_ms.max(1_000));
                self.scheduler
                    .schedule(&redact_id(id), later, WORKFLOW_REDACT, id, id)
                    .await?;
                return Ok(());
            }
            let mut next = record;
            next.redact_content(now);
            let indexes = message_indexes(&self.keys, &next.workflow);
            let search = dispatch_infra::activity::search_keys(&self.keys, &next.workflow);
            let write = Write {
                id,
                expected: version,
                record: &next,
                in_flight: 0,
                current: None,
                schedule: Vec::new(),
                cancel: Vec::new(),
                indexes: &indexes,
                search: &search,
                stats: &[],
                recovery_due_ms: now,
                own_from: next.next_seq,
            };
            if self.store.write(&write).await? {
                metrics::counter!("dispatch_workflows_redacted_total").increment(1);
                return Ok(());
            }
        }
        Err(EngineError::Contended)
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

/// The timer entry that redacts workflow `id`'s content.
fn redact_id(id: &str) -> String {
    format!("redact:{id}")
}

/// Why an outbox effect was not carried out (logged; the recovery
/// retries it).
#[derive(Debug, thiserror::Error)]
enum EffectError {
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A transition's effects sorted by where they go: timer entries are
/// written by the same script as the record; publishes go to the outbox,
/// the webhooks of one transition as one job.
struct TimerOps {
    schedule: Vec<(String, i64, String)>,
    cancel: Vec<String>,
}

impl TimerOps {
    fn of(effects: Vec<Effect>, next: &mut WorkflowRecord) -> Self {
        // Only deadlines need it, and most transitions schedule none.
        let mut traceparent = None;
        let mut ops = TimerOps {
            schedule: Vec::new(),
            cancel: Vec::new(),
        };
        let mut publishes = Vec::new();
        let mut webhooks = Vec::new();
        for effect in effects {
            match effect {
                Effect::Schedule {
                    id,
                    due_ms,
                    envelope,
                } => {
                    let payload = serde_json::to_string(&envelope).unwrap_or_default();
                    let entry = entry_json(
                        &envelope.routing_key(),
                        &envelope.id(),
                        &payload,
                        traceparent
                            .get_or_insert_with(dispatch_infra::telemetry::current_traceparent)
                            .clone(),
                    );
                    ops.cancel.retain(|c| *c != id);
                    ops.schedule.push((id, due_ms, entry));
                }
                Effect::Cancel { id } => {
                    ops.schedule.retain(|(s, _, _)| *s != id);
                    ops.cancel.push(id);
                }
                Effect::Publish {
                    envelope: Envelope::Webhook(job),
                } => webhooks.push(job),
                Effect::Publish { envelope } => publishes.push(envelope),
            }
        }
        match webhooks.len() {
            0 => {}
            1 => publishes.extend(webhooks.pop().map(Envelope::Webhook)),
            _ => publishes.push(Envelope::Webhooks(WebhookBatch { jobs: webhooks })),
        }
        for envelope in publishes {
            next.outbox.push(Pending {
                seq: next.next_seq,
                effect: Effect::Publish { envelope },
            });
            next.next_seq += 1;
        }
        ops
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

    /// The account's counters this change moves ([`dispatch_infra::activity`]);
    /// `from` is the channel of the message failed over from.
    fn stats(
        &self,
        after: &WorkflowRecord,
        event: Event<'_>,
        from: Option<dispatch_model::channel::Channel>,
    ) -> Vec<Stat<'static>> {
        let mut stats = Vec::new();
        if matches!(event, Event::Start) {
            stats.push(Stat::Accepted);
        }
        if self.finished {
            stats.push(match after.status {
                WorkflowStatus::Completed => Stat::Completed,
                _ => Stat::Error,
            });
        }
        if self.failover {
            stats.push(Stat::Failover(failover_reason(event)));
            if let Some(channel) = from {
                stats.push(Stat::FailoverFrom(channel.as_str()));
            }
        }
        stats
    }

    fn count(&self, after: &WorkflowRecord, event: Event<'_>) {
        count_event(event, "applied");
        let kind = match after.workflow.kind {
            WorkflowKind::Dispatch => "dispatch",
            WorkflowKind::Message => "message",
            WorkflowKind::Failover => "failover",
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
            metrics::counter!("dispatch_failovers_total", "reason" => failover_reason(event))
                .increment(1);
        }
    }
}

/// Why an event failed a workflow over.
fn failover_reason(event: Event<'_>) -> &'static str {
    match event {
        Event::Deadline(_) => "deadline",
        Event::Status(s) if s.status == MessageStatus::Rejected => "rejected",
        _ => "undeliverable",
    }
}

fn kind(event: &Event<'_>) -> &'static str {
    match event {
        Event::Start => "start",
        Event::Status(_) => "status",
        Event::Deadline(_) => "deadline",
    }
}
