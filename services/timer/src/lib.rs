//! The timer service: delayed work. Other services hand it a deadline and
//! a message ([`Scheduler::schedule`], or the workflow write script); when
//! the deadline comes, a timer either publishes the message to the
//! exchange (the notifier's retries and circuit probes) or, for the
//! workflow's own entries, applies it here without a broker hop:
//!
//! - `workflow.deadline`: a step's deadline, applied to its workflow with
//!   the failover machine (`dispatch_flow`), which may fail over or end
//!   it;
//! - `workflow.outbox`: an outbox's recovery, armed by every workflow
//!   write that leaves something to publish and disarmed once it is
//!   published; when it fires, the writer died or could not publish, and
//!   the timer publishes what is left ([`Engine::recover`]).
//!
//! A timer also drains the `workflow` queue of the topology before that
//! change (`legacy`), so that an upgrade loses nothing queued there.
//!
//! # Storage
//!
//! Two Redis structures per timer shard ([`Keys`]; entries go to one of
//! `timer_shards` shards by their id, and each timer owns about its share
//! of the shards, see `shards`):
//!
//! - `timer_due`, a sorted set: member = entry id, score = when it is due,
//!   in ms since the Unix epoch (while a timer holds it, the end of its
//!   lease instead, see below);
//! - `timer_entries`, a hash: entry id → [`Entry`] JSON
//!   `{routing_key, message_id, payload}`, the payload being a JSON text
//!   published as-is.
//!
//! [`Scheduler::schedule`] writes both in one Lua script (an upsert: the
//! same id again replaces the entry and moves its deadline), and
//! [`Scheduler::cancel`] removes both in one transaction; a workflow's
//! write does the same with plain commands in its pipeline. The two keys of
//! a shard share a hash tag on a Redis Cluster.
//!
//! # Firing: claim, publish, ack
//!
//! 1. **Claim** ([`store::claim`], one Lua script per owned shard, which
//!    checks that the shard is still this timer's): take up to
//!    `timer_batch` members scored ≤ now (Redis' clock, `TIME`) and re-score
//!    each to now + `timer_lease_ms`, returning id, entry JSON and original
//!    due time, plus the leased score. Being atomic, a claim hands an entry
//!    to exactly one timer: the others no longer see it as due.
//! 2. **Publish** every claimed entry with [`Broker::publish_raw`], all
//!    concurrently, each waiting for the broker's confirm (or apply it,
//!    for the workflow's entries: then "confirmed" means written). Rounds are
//!    pipelined: the next claim does not wait for the confirms of the last
//!    (at most [`MAX_ROUNDS_IN_FLIGHT`] rounds at once).
//! 3. **Ack** ([`store::ack`], one Lua script): for each confirmed id, remove
//!    it from both structures *only if its score is still the leased one*.
//!    An entry re-scheduled while being published has another score and
//!    stays, to fire again at its new time; a cancelled one is already gone.
//!
//! A publish that fails (broker down, nack, timeout) is not acked: the entry
//! stays leased and is due again when the lease ends, and the timer backs
//! off. A timer that dies between claim and ack likewise leaves its entries
//! leased, and whichever timer is alive fires them after the lease.
//!
//! # Waking up
//!
//! A timer does not poll on a fixed period. Each claim also returns the
//! earliest score left, and the timer sleeps until then, capped by
//! `timer_max_idle_ms`; when a claim comes back full it claims again at
//! once. A deadline scheduled *earlier* than everything else is caught by
//! the wake-up channel: the schedule script PUBLISHes on `timer_wake` when
//! the new entry is the earliest, and every timer, subscribed there, cuts
//! its sleep short. The subscription reconnects with backoff when it drops;
//! meanwhile the `timer_max_idle_ms` cap still brings each timer back to
//! Redis regularly, so a lost wake-up costs at most that much lateness.
//!
//! # Why no deadline is lost, and how late one can be
//!
//! An entry leaves the sorted set only through an ack, which follows the
//! broker's confirm of its publish, or through a cancel. Until then it is
//! always in the set with a score that is either its due time or the end
//! of a lease taken at or after its due time: whatever happens to the timer
//! holding it (crash, broker outage, Redis outage before the ack), the
//! entry is due again, and fired by any live timer, at most one lease after
//! it was claimed. So every deadline is published at least once, late by at
//! most its lease (plus the usual sub-second delay of a healthy timer, and
//! of course as long as no timer runs or the broker is unreachable, nothing
//! can fire at all). Delivery is at-least-once: a publish confirmed but not
//! acked (Redis lost right then), or slower than the lease, fires again;
//! consumers deduplicate by `message_id`. Keep `timer_lease_ms` well above
//! `publish_timeout_ms` so that a slow publish cannot outlive its lease.
//!
//! Due times are compared with Redis' clock, so timers on several hosts
//! agree on what is due; schedulers' clocks are assumed NTP-synchronised.

pub mod bench;
mod legacy;
mod shards;
pub use dispatch_infra::timer as store;
mod wake;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_flow::{Engine, EngineError, Event};
use dispatch_infra::broker::{Broker, PublishError};
use dispatch_infra::redis::{Keys, Redis};
use dispatch_infra::{Config, Connections};
use dispatch_model::envelope::{Envelope, WORKFLOW_DEADLINE, WORKFLOW_OUTBOX, WORKFLOW_REDACT};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use store::{Entry, Scheduler};

/// Claimed batches being published at once, per timer.
pub const MAX_ROUNDS_IN_FLIGHT: usize = 32;

/// Fired entries later than this are logged as warnings.
const LATE_WARNING_MS: i64 = 1_000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts of an ack before its entries are left to fire again.
const ACK_ATTEMPTS: u32 = 3;

/// Runs a timer until `shutdown`, with its own broker connection and Redis
/// connection. On shutdown it stops claiming, lets the rounds in flight
/// finish (each publish is bounded by `publish_timeout_ms`), then closes
/// the broker connection.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let connections = Connections::open(&config, "timer")?;
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
    let keys = Keys::for_config(&config);
    if config.timer_lease_ms <= config.publish_timeout_ms {
        tracing::warn!(
            timer_lease_ms = config.timer_lease_ms,
            publish_timeout_ms = config.publish_timeout_ms,
            "timer_lease_ms is not above publish_timeout_ms: a slow publish may fire twice"
        );
    }
    // `connections` (and so the broker) outlives `shutdown` until the
    // rounds in flight are done.
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(wake::listen(
        dispatch_infra::redis::clients(&config)?,
        keys.timer_wake(),
        wake.clone(),
        shutdown.clone(),
    ));
    let engine = Engine::new(&config, redis.clone(), broker.clone());
    let old_queue = tokio::spawn(legacy::consume_old_queue(
        config.clone(),
        broker.clone(),
        engine.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(report_in_flight(engine.clone(), shutdown.clone()));
    let shards = shards::Shards::new(redis.clone(), keys.clone(), config.timer_lease_ms);
    // The first share before the first claim, so a timer starts firing at
    // once.
    if let Err(e) = shards.rebalance().await {
        tracing::warn!(error = %e, "cannot take timer shards yet; retrying");
    }
    let shard_owner = tokio::spawn(shards.clone().run(shutdown.clone()));
    let timer = Timer {
        engine,
        shards,
        broker,
        redis,
        keys,
        wake,
        batch: config.timer_batch,
        lease_ms: config.timer_lease_ms,
        max_idle: Duration::from_millis(config.timer_max_idle_ms),
    };
    tracing::info!(
        batch = timer.batch,
        lease_ms = timer.lease_ms,
        max_idle_ms = config.timer_max_idle_ms,
        "timer started"
    );
    tokio::spawn(report_pending(
        Scheduler::new(timer.redis.clone(), timer.keys.clone()),
        shutdown.clone(),
    ));
    timer.run(&shutdown).await;
    let _ = shard_owner.await;
    let _ = listener.await;
    let _ = old_queue.await;
    drop(connections);
    tracing::info!("timer stopped");
    Ok(())
}

/// Sets `dispatch_workflows_in_flight` from Redis every 5 s (every timer
/// reports the same deployment-wide count).
async fn report_in_flight(engine: Engine, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(count) = engine.store().in_flight().await {
            metrics::gauge!("dispatch_workflows_in_flight").set(count as f64);
        }
    }
}

/// Sets `dispatch_timer_pending` every 5 s.
async fn report_pending(scheduler: Scheduler, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(pending) = scheduler.pending().await {
            metrics::gauge!("dispatch_timer_pending").set(pending as f64);
        }
    }
}

struct Timer {
    engine: Engine,
    shards: shards::Shards,
    broker: Broker,
    redis: Redis,
    keys: Keys,
    wake: Arc<Notify>,
    batch: usize,
    lease_ms: u64,
    max_idle: Duration,
}

/// What a round of publishing reports back to the claiming loop.
#[derive(Debug, Default)]
struct RoundOutcome {
    published: usize,
    /// Publishes that failed because of the broker: back off.
    broker_failures: usize,
}

struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(MIN_BACKOFF)
    }
    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        delay
    }
    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }
}

/// Sleeps `delay` unless shut down first; `false` on shutdown.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

impl Timer {
    async fn run(&self, shutdown: &CancellationToken) {
        let mut in_flight: JoinSet<RoundOutcome> = JoinSet::new();
        let mut broker_backoff = Backoff::new();
        let mut redis_backoff = Backoff::new();
        let mut broker_failed = false;
        // Per shard: when its earliest entry is due (as of its last claim)
        // and when it was last claimed. A shard is claimed again when that
        // comes, after a wake-up (some shard got an earlier entry), or
        // `timer_max_idle_ms` after its last claim, should a wake-up be
        // missed: an idle shard costs one claim per `timer_max_idle_ms`.
        let mut looked: HashMap<usize, (Option<i64>, std::time::Instant)> = HashMap::new();
        let mut woken = true;
        let note = |done: Result<RoundOutcome, tokio::task::JoinError>,
                    failed: &mut bool,
                    backoff: &mut Backoff| match done {
            Ok(outcome) if outcome.broker_failures > 0 => *failed = true,
            Ok(outcome) if outcome.published > 0 => backoff.reset(),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "a timer round failed"),
        };
        while !shutdown.is_cancelled() {
            while let Some(done) = in_flight.try_join_next() {
                note(done, &mut broker_failed, &mut broker_backoff);
            }
            if broker_failed {
                broker_failed = false;
                let delay = broker_backoff.next();
                tracing::warn!(
                    retry_in_ms = delay.as_millis() as u64,
                    "publishing fired entries failed; backing off"
                );
                if !pause(shutdown, delay).await {
                    break;
                }
                continue;
            }
            // Claiming while the broker is unreachable would only lease
            // entries that cannot be published.
            if !self.broker.is_ready() {
                if !pause(shutdown, Duration::from_millis(20)).await {
                    break;
                }
                continue;
            }
            if in_flight.len() >= MAX_ROUNDS_IN_FLIGHT {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(done) = in_flight.join_next() => {
                        note(done, &mut broker_failed, &mut broker_backoff);
                    }
                }
                continue;
            }

            let owned = self.shards.owned();
            let mut conn = self.redis.clone();
            let mut full = false;
            let mut failed = None;
            let local_now = now_ms();
            let due_now = |shard: &usize| match looked.get(shard) {
                None => true,
                Some((next_due, at)) => {
                    woken
                        || at.elapsed() >= self.max_idle
                        || next_due.is_some_and(|due| due <= local_now)
                }
            };
            let to_claim: Vec<usize> = owned.iter().copied().filter(due_now).collect();
            woken = false;
            for shard in to_claim {
                let claimed = store::claim(
                    &mut conn,
                    &self.keys,
                    shard,
                    Some(&self.shards.token),
                    self.batch,
                    self.lease_ms,
                )
                .await;
                let claim = match claimed {
                    Ok(claim) if claim.owned => claim,
                    // Taken over since the last rebalance: no longer ours
                    // (the next rebalance drops it; until then, look at it
                    // no more often than an idle one).
                    Ok(_) => {
                        looked.insert(shard, (None, std::time::Instant::now()));
                        continue;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if claim.scanned >= self.batch {
                    // More may be due: claim it again at once.
                    full = true;
                    looked.remove(&shard);
                } else {
                    // Everything due by `now_ms` was claimed, so the
                    // earliest score left is in the future (on Redis'
                    // clock; this host's is taken to agree).
                    let next_due = claim
                        .next_due_ms
                        .map(|due| local_now + (due - claim.now_ms).max(1));
                    looked.insert(shard, (next_due, std::time::Instant::now()));
                }
                if !claim.entries.is_empty() {
                    let span = tracing::info_span!(
                        "timer_round",
                        shard,
                        entries = claim.entries.len(),
                        leased_until = claim.leased_until,
                    );
                    let round = fire_round(
                        self.engine.clone(),
                        self.broker.clone(),
                        self.redis.clone(),
                        self.keys.clone(),
                        claim,
                    );
                    in_flight.spawn(round.instrument(span));
                }
            }
            if let Some(e) = failed {
                let delay = redis_backoff.next();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                    "cannot claim due timer entries; retrying");
                if !pause(shutdown, delay).await {
                    break;
                }
                continue;
            }
            redis_backoff.reset();
            if full {
                continue;
            }
            looked.retain(|shard, _| owned.contains(shard));
            let now = now_ms();
            let sleep = owned
                .iter()
                .map(|shard| match looked.get(shard) {
                    None => Duration::ZERO,
                    Some((next_due, at)) => {
                        let idle = self.max_idle.saturating_sub(at.elapsed());
                        let due = next_due.map_or(idle, |due| {
                            Duration::from_millis(u64::try_from(due - now).unwrap_or(0))
                        });
                        idle.min(due)
                    }
                })
                .min()
                .unwrap_or(self.max_idle)
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => woken = true,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        while let Some(done) = in_flight.join_next().await {
            note(done, &mut broker_failed, &mut broker_backoff);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Debug)]
enum FireError {
    Corrupt(serde_json::Error),
    Publish(PublishError),
    /// A deadline or an outbox that could not be applied (Redis).
    Apply(EngineError),
}

impl FireError {
    /// Whether the broker is at fault (so the timer should back off), as
    /// opposed to this one entry.
    fn is_broker(&self) -> bool {
        matches!(self, FireError::Publish(e) if !matches!(e, PublishError::Unroutable(_)))
    }
}

impl std::fmt::Display for FireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FireError::Corrupt(e) => write!(f, "stored entry is not valid: {e}"),
            FireError::Publish(e) => write!(f, "{e}"),
            FireError::Apply(e) => write!(f, "{e}"),
        }
    }
}

/// Publishes a claimed batch, then acks what the broker confirmed.
async fn fire_round(
    engine: Engine,
    broker: Broker,
    redis: Redis,
    keys: Keys,
    claim: store::Claim,
) -> RoundOutcome {
    let results =
        futures_util::future::join_all(claim.entries.iter().map(|c| fire_one(&engine, &broker, c)))
            .await;
    let mut outcome = RoundOutcome::default();
    let mut fired = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (claimed, result) in claim.entries.iter().zip(results) {
        match result {
            Ok(()) => fired.push(claimed.id.clone()),
            Err(FireError::Corrupt(e)) => {
                // It would fail the same way at every lease: drop it.
                tracing::error!(id = %claimed.id, error = %e, "dropping an unreadable timer entry");
                fired.push(claimed.id.clone());
            }
            Err(FireError::Apply(e)) if e.is_permanent() => {
                tracing::error!(id = %claimed.id, error = %e, "dropping a timer entry whose workflow cannot be read");
                fired.push(claimed.id.clone());
            }
            Err(e) => {
                if e.is_broker() {
                    outcome.broker_failures += 1;
                }
                tracing::debug!(id = %claimed.id, error = %e, "could not fire timer entry");
                first_error.get_or_insert(e);
            }
        }
    }
    outcome.published = fired.len();
    if let Some(e) = first_error {
        tracing::warn!(
            failed = claim.entries.len() - fired.len(),
            error = %e,
            lease_ms = claim.leased_until - claim.now_ms,
            "could not fire timer entries; they fire again when their lease ends"
        );
    }
    let mut conn = redis;
    for attempt in 1..=ACK_ATTEMPTS {
        match store::ack(&mut conn, &keys, claim.shard, claim.leased_until, &fired).await {
            Ok(_) => break,
            Err(e) if attempt < ACK_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "cannot ack fired timer entries; retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => tracing::warn!(
                error = %e,
                entries = fired.len(),
                "cannot ack fired timer entries; they fire again when their lease ends"
            ),
        }
    }
    outcome
}

async fn fire_one(
    engine: &Engine,
    broker: &Broker,
    claimed: &store::Claimed,
) -> Result<(), FireError> {
    let entry: Entry = serde_json::from_str(&claimed.entry).map_err(FireError::Corrupt)?;
    // A child of the trace that scheduled it, not of the timer's round.
    let span = tracing::info_span!(
        parent: None,
        "timer.fire",
        id = %claimed.id,
        routing_key = %entry.routing_key,
    );
    dispatch_infra::telemetry::set_parent_from_traceparent(&span, entry.traceparent.as_deref());
    match entry.routing_key.as_str() {
        WORKFLOW_DEADLINE => {
            apply_deadline(engine, &entry.payload)
                .instrument(span)
                .await?
        }
        WORKFLOW_OUTBOX => {
            engine
                .recover(&entry.payload)
                .instrument(span)
                .await
                .map_err(FireError::Apply)?;
        }
        WORKFLOW_REDACT => {
            engine
                .redact(&entry.payload)
                .instrument(span)
                .await
                .map_err(FireError::Apply)?;
        }
        _ => broker
            .publish_raw(
                &entry.routing_key,
                &entry.message_id,
                entry.payload.as_bytes(),
            )
            .instrument(span)
            .await
            .map_err(FireError::Publish)?,
    }
    let lateness_ms = now_ms() - claimed.due_ms;
    metrics::counter!("dispatch_timer_fired_total").increment(1);
    metrics::histogram!("dispatch_timer_lateness_seconds")
        .record(lateness_ms.max(0) as f64 / 1000.0);
    tracing::debug!(
        id = %claimed.id,
        message_id = %entry.message_id,
        routing_key = %entry.routing_key,
        lateness_ms,
        "fired timer entry"
    );
    if lateness_ms > LATE_WARNING_MS {
        tracing::warn!(id = %claimed.id, lateness_ms, "timer entry fired late");
    }
    Ok(())
}

/// Applies a step's deadline to its workflow: a failover or the end. The
/// entry is acked once the transition is written; its outbox, if not
/// carried out here, is recovered.
async fn apply_deadline(engine: &Engine, payload: &str) -> Result<(), FireError> {
    let fired = match serde_json::from_str::<Envelope>(payload).map_err(FireError::Corrupt)? {
        Envelope::Deadline(fired) => fired,
        other => {
            tracing::error!(routing_key = %other.routing_key(), "a deadline entry holds something else; dropping it");
            return Ok(());
        }
    };
    engine
        .apply_and_carry_out(fired.workflow_id, Event::Deadline(&fired))
        .await
        .map_err(FireError::Apply)
}
