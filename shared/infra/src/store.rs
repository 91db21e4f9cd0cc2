//! Workflow records in Redis, changed only by compare-and-set.
//!
//! A record is a hash: `v` a version number, `r` the record's JSON, `u`
//! the sequence numbers of its outbox entries not yet carried out (`d`,
//! the highest one carried out, in records written before `u`), and `c`
//! the message whose send is current, as
//! `{version} {message}` (no message once the workflow ended). `c` holds
//! only at the version it names: a record written since by a service of
//! the version before (which knows no `c`) has moved on without it, and
//! then it says nothing. Every write names the version it read; the write happens
//! only if the version is still that one, and bumps it. Two writers (or
//! a repeated event) racing on one workflow therefore never both win: the
//! loser reloads and re-applies its event to the winner's state. Comparing
//! a small version instead of the whole JSON keeps each write to one copy
//! of the record on the wire.
//!
//! The script that writes a record touches the record alone (so that it
//! runs on a Redis Cluster, where a script keeps to one slot); what a
//! transition asks of Redis besides (timer entries to schedule or cancel,
//! lookup indexes) and the recovery of what it asks of RabbitMQ (the
//! outbox: a timer entry, `outbox:{id}`, due `outbox_recovery_ms` later,
//! that [`WorkflowStore::mark_done`] removes once the outbox is carried
//! out) are written around it, in an order that a crash at any point
//! leaves harmless ([`WorkflowStore::write`]). So a writer that dies right
//! after its write leaves nothing that no one will finish.

use std::sync::LazyLock;

use dispatch_model::envelope::WorkflowAccepted;
use dispatch_model::record::WorkflowRecord;
use uuid::Uuid;

use crate::redis::{Keys, Redis};

/// `KEYS[1]` the record; `ARGV` expected version (`""` = absent), JSON,
/// TTL, current message (`""`: none), the outbox entries undone
/// (`carried|fresh`: entries read undone, kept only if still undone, and
/// this transition's). Returns 1 when written (and only then changes
/// anything).
static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
local next = (tonumber(v) or 0) + 1
redis.call('HSET', KEYS[1], 'v', next, 'r', ARGV[2], 'c', next .. ' ' .. ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local carried, fresh = string.match(ARGV[5], '^(.*)|(.*)$')
local stored = redis.call('HGET', KEYS[1], 'u')
local u = ' '
for s in string.gmatch(carried, '%d+') do
  if not stored or string.find(stored, ' ' .. s .. ' ', 1, true) then u = u .. s .. ' ' end
end
for s in string.gmatch(fresh, '%d+') do u = u .. s .. ' ' end
redis.call('HSET', KEYS[1], 'u', u)
return 1
",
    )
});

/// `KEYS[1]` the record; `ARGV` sequence numbers carried out. Takes them
/// off the record's undone list `u` without touching the version; returns
/// 1 when nothing is left undone (the recovery may be disarmed). A record
/// written before `u` existed has a done mark `d` instead, raised to the
/// highest of them.
static MARK_DONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local u = redis.call('HGET', KEYS[1], 'u')
if not u then
  local d = tonumber(redis.call('HGET', KEYS[1], 'd')) or -1
  for i = 1, #ARGV do
    if tonumber(ARGV[i]) > d then d = tonumber(ARGV[i]) end
  end
  redis.call('HSET', KEYS[1], 'd', d)
  return 0
end
for i = 1, #ARGV do
  u = string.gsub(u, ' ' .. ARGV[i] .. ' ', ' ')
end
redis.call('HSET', KEYS[1], 'u', u)
if u == ' ' then return 1 end
return 0
",
    )
});

/// `KEYS[1]` fate; `ARGV` the fate wanted, TTL. The first fate set wins
/// and is returned.
static SETTLE_FATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local fate = redis.call('GET', KEYS[1])
if fate then return fate end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
",
    )
});

/// `KEYS` fate, record; `ARGV` TTL. Settles the fate of work whose write's
/// outcome is unknown: `claimed` when the record moved on since its first
/// write (it runs); else the record, if written, is removed, and the fate
/// is `abandoned`. A fate settled before holds. Returns the fate, and 1
/// when the removed record counted as in flight. Its timer entries stay:
/// they find no record when they fire, and do nothing.
static ABANDON: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local fate = redis.call('GET', KEYS[1])
if fate then return {fate, 0} end
local v = tonumber(redis.call('HGET', KEYS[2], 'v'))
if v and v > 1 then
  redis.call('SET', KEYS[1], 'claimed', 'EX', ARGV[1])
  return {'claimed', 0}
end
local counted = 0
if v then
  counted = redis.call('HEXISTS', KEYS[2], 'c')
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[1], 'abandoned', 'EX', ARGV[1])
return {'abandoned', counted}
",
    )
});

/// What becomes of accepted work whose hand-off had an unknown outcome:
/// a lost write (now), or a lost publish confirm (before transitions were
/// applied in ingest; settled by whoever starts it from the old queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It was picked up: it runs.
    Claimed,
    /// Ingest answered 503 for it: it must not run.
    Abandoned,
}

impl Fate {
    fn as_str(self) -> &'static str {
        match self {
            Fate::Claimed => "claimed",
            Fate::Abandoned => "abandoned",
        }
    }
}

/// A record and the version it was read at (`None`: not stored yet).
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: Option<u64>,
    pub record: WorkflowRecord,
    /// Whether its outbox's recovery is armed: written by this version,
    /// so what is left in the outbox is its writer's or the recovery's
    /// to carry out, no one else's.
    pub armed: bool,
}

/// The undone list `u`: ` 4 5 `, spaces around every number, so that one
/// is taken off by replacing ` 4 ` with ` `; ` ` when nothing is undone.
fn undone_list(seqs: impl Iterator<Item = u64>) -> String {
    let mut list = String::from(" ");
    for seq in seqs {
        list.push_str(&seq.to_string());
        list.push(' ');
    }
    list
}

/// One write of a workflow's record, with what goes with it atomically
/// ([`WorkflowStore::write`]).
#[derive(Debug)]
pub struct Write<'a> {
    pub id: &'a str,
    /// The version read (`None`: the record must not exist yet).
    pub expected: Option<u64>,
    pub record: &'a WorkflowRecord,
    /// The change of the count of workflows in flight, made once written.
    pub in_flight: i64,
    /// The message whose send is current, for the senders' check
    /// (`None`: no send is current, the workflow has ended).
    pub current: Option<Uuid>,
    /// Timer entries to upsert: id, due time (ms), entry JSON
    /// ([`crate::timer::entry_json`]).
    pub schedule: Vec<(String, i64, String)>,
    /// Timer entries to forget.
    pub cancel: Vec<String>,
    /// Plain `(key, value)` indexes of the record, with its TTL.
    pub indexes: &'a [(String, String)],
    /// Search keys to enter the workflow in ([`crate::activity`]).
    pub search: &'a [String],
    /// The account's counters this transition moves, once written.
    pub stats: &'a [crate::activity::Stat<'a>],
    /// When the recovery of a non-empty outbox is due (ms).
    pub recovery_due_ms: i64,
    /// The first outbox sequence number of this transition's own entries;
    /// those below were read undone with the record.
    pub own_from: u64,
}

/// The index entries of a workflow's messages: a dispatch's are found by
/// their own uuid too (`message:{uuid}` → the dispatch's); a Messages API
/// send is its own workflow, with none.
pub fn message_indexes(keys: &Keys, accepted: &WorkflowAccepted) -> Vec<(String, String)> {
    use dispatch_model::envelope::WorkflowKind;
    match accepted.kind {
        WorkflowKind::Dispatch | WorkflowKind::Failover => accepted
            .steps
            .iter()
            .map(|s| {
                (
                    keys.message(&s.message_uuid.to_string()),
                    accepted.workflow_id.to_string(),
                )
            })
            .collect(),
        WorkflowKind::Message => Vec::new(),
    }
}

/// The timer entry that carries out workflow `id`'s outbox if nobody
/// marked it done in time.
pub fn recovery_id(id: &str) -> String {
    format!("outbox:{id}")
}

fn recovery_entry(id: &str) -> String {
    crate::timer::entry_json(dispatch_model::envelope::WORKFLOW_OUTBOX, id, id, None)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored record is not valid: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct WorkflowStore {
    redis: Redis,
    keys: Keys,
    ttl_secs: u64,
    /// Timer entries due sooner than this wake the timers up
    /// (`timer_max_idle_ms`: they look at least that often anyway).
    wake_within_ms: i64,
    /// Replicas each compare-and-set waits for (`redis_wait_replicas`).
    replicated: Option<crate::redis::Replicated>,
}

impl WorkflowStore {
    pub fn new(redis: Redis, keys: Keys, ttl_secs: u64) -> Self {
        Self {
            redis,
            keys,
            ttl_secs,
            wake_within_ms: 1_000,
            replicated: None,
        }
    }

    /// Makes every compare-and-set wait for replicas (`WAIT`).
    pub fn replicated(mut self, replicated: Option<crate::redis::Replicated>) -> Self {
        self.replicated = replicated;
        self
    }

    /// Wakes timers up for entries due within `ms` (`timer_max_idle_ms`).
    pub fn waking_within(mut self, ms: u64) -> Self {
        self.wake_within_ms = i64::try_from(ms).unwrap_or(i64::MAX);
        self
    }

    pub async fn load(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        let mut conn = self.redis.clone();
        type Fields = (Option<u64>, Option<String>, Option<u64>, Option<String>);
        let (version, raw, done, undone): Fields = redis::cmd("HMGET")
            .arg(self.keys.workflow(id))
            .arg("v")
            .arg("r")
            .arg("d")
            .arg("u")
            .query_async(&mut conn)
            .await?;
        match (version, raw) {
            (Some(version), Some(raw)) => {
                let mut record: WorkflowRecord = serde_json::from_str(&raw)?;
                // Carried out already: the next write leaves them out.
                let armed = undone.is_some();
                match (undone, done) {
                    (Some(undone), _) => {
                        let undone: Vec<u64> = undone
                            .split_whitespace()
                            .filter_map(|s| s.parse().ok())
                            .collect();
                        record.outbox.retain(|p| undone.contains(&p.seq));
                    }
                    (None, Some(done)) => record.outbox.retain(|p| p.seq > done),
                    (None, None) => {}
                }
                Ok(Some(Versioned {
                    version: Some(version),
                    record,
                    armed,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Settles the fate of workflow `id` as `wanted` unless it is settled
    /// already; returns the fate that holds. Work accepted before the
    /// upgrade is claimed before it is started from the old `workflow`
    /// queue, since the ingest of then may have abandoned it.
    pub async fn settle_fate(&self, id: &str, wanted: Fate) -> Result<Fate, StoreError> {
        let mut conn = self.redis.clone();
        let fate: String = SETTLE_FATE
            .key(self.keys.fate(id))
            .arg(wanted.as_str())
            .arg(self.ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(if fate == Fate::Abandoned.as_str() {
            Fate::Abandoned
        } else {
            Fate::Claimed
        })
    }

    /// Settles as [`Fate::Abandoned`] work whose first write may or may
    /// not have happened, unless it moved on already ([`Fate::Claimed`]);
    /// removes the record that write made. Its timer entries (its
    /// recovery, its deadline) find no record when they fire.
    pub async fn abandon(&self, id: &str) -> Result<Fate, StoreError> {
        let mut conn = self.redis.clone();
        let (fate, counted): (String, i64) = ABANDON
            .key(self.keys.fate(id))
            .key(self.keys.workflow(id))
            .arg(self.ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        if counted == 1 {
            redis::cmd("DECR")
                .arg(self.keys.workflows_in_flight())
                .exec_async(&mut conn)
                .await?;
        }
        Ok(if fate == Fate::Abandoned.as_str() {
            Fate::Abandoned
        } else {
            Fate::Claimed
        })
    }

    /// Records that the outbox entries `seqs` were carried out. Once
    /// nothing written to the outbox is left, disarms its recovery, the
    /// entry due at `recovery_due_ms` (if it is still that one: a later
    /// transition that armed it again has moved it). Cheaper than
    /// rewriting the record: [`WorkflowStore::load`] leaves those entries
    /// out, and the next write drops them for good.
    pub async fn mark_done(
        &self,
        id: &str,
        seqs: &[u64],
        recovery_due_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.redis.clone();
        let emptied: i64 = MARK_DONE
            .key(self.keys.workflow(id))
            .arg(seqs)
            .invoke_async(&mut conn)
            .await?;
        if emptied == 1
            && let Some(due_ms) = recovery_due_ms
        {
            crate::timer::cancel_if_due(&self.redis, &self.keys, &recovery_id(id), due_ms).await?;
        }
        Ok(())
    }

    /// Carries out `write` if the stored version is still the one it
    /// names; `false` when another writer got there first.
    ///
    /// The record's script touches the record alone, so that it runs on a
    /// Redis Cluster too; what goes with it is written around it, in an
    /// order that leaves nothing undone by a crash in between:
    ///
    /// - **before**, in the same pipeline: the indexes, the timer entries
    ///   to schedule, and, when the outbox holds anything, its recovery
    ///   (a timer entry that carries it out unless
    ///   [`WorkflowStore::mark_done`] disarms it first). A writer that
    ///   then loses the race leaves stray entries: an index to a record
    ///   that exists anyway, a deadline under an id of its own that fires
    ///   as a stale one, a recovery that finds nothing undone;
    /// - **after**, once written: the timer entries to cancel (one left by
    ///   a crash fires as a stale deadline), the count of workflows in
    ///   flight (+1 when one starts, -1 when one ends; a crash here leaves
    ///   it one off) and the account's counters.
    pub async fn write(&self, write: &Write<'_>) -> Result<bool, StoreError> {
        let json = serde_json::to_string(write.record)?;
        let id = write.id;
        let now = dispatch_model::record::now_ms();
        let mut pipe = redis::pipe();
        for (key, value) in write.indexes {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(self.ttl_secs)
                .ignore();
        }
        crate::activity::index_into(
            &mut pipe,
            write.search,
            id,
            write.record.workflow.accepted_at_ms,
            self.ttl_secs,
            now,
        );
        let recovery = (!write.record.outbox.is_empty())
            .then(|| (recovery_id(id), write.recovery_due_ms, recovery_entry(id)));
        for (entry_id, due_ms, entry) in write.schedule.iter().chain(recovery.as_ref()) {
            crate::timer::schedule_into(
                &mut pipe,
                &self.keys,
                entry_id,
                *due_ms,
                entry,
                now,
                self.wake_within_ms,
            );
        }
        // Entries carried over from the record read may have been marked
        // done since (marks do not move the version): the script keeps
        // only those still undone.
        let (carried, fresh): (Vec<u64>, Vec<u64>) = write
            .record
            .outbox
            .iter()
            .map(|p| p.seq)
            .partition(|seq| *seq < write.own_from);
        let undone = format!(
            "{}|{}",
            undone_list(carried.into_iter()),
            undone_list(fresh.into_iter())
        );
        let mut invocation = WRITE.key(self.keys.workflow(id));
        invocation
            .arg(write.expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(json)
            .arg(self.ttl_secs)
            .arg(write.current.map(|c| c.to_string()).unwrap_or_default())
            .arg(undone);
        pipe.invoke_script(&invocation);
        if let Some(replicated) = self.replicated {
            replicated.append(&mut pipe);
        }
        let mut conn = self.redis.clone();
        let answers: Vec<i64> = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Everything before the script is an idempotent upsert.
                WRITE.load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        if let (Some(replicated), Some(reached)) = (self.replicated, answers.get(1)) {
            replicated.note(*reached, "workflow");
        }
        if answers.first() != Some(&1) {
            return Ok(false);
        }
        if !write.cancel.is_empty() || write.in_flight != 0 || !write.stats.is_empty() {
            let mut after = redis::pipe();
            crate::activity::count_into(
                &mut after,
                &self.keys,
                &write.record.workflow.account,
                write.stats,
                now,
            );
            for entry_id in &write.cancel {
                crate::timer::cancel_into(&mut after, &self.keys, entry_id);
            }
            if write.in_flight != 0 {
                after
                    .incr(self.keys.workflows_in_flight(), write.in_flight)
                    .ignore();
            }
            if let Err(e) = after.exec_async(&mut conn).await {
                // Written: a deadline left behind fires as a stale one.
                tracing::warn!(error = %e, workflow_id = id,
                    "transition written, but not its cancels or in-flight count");
            }
        }
        Ok(true)
    }

    /// Workflows started and not yet ended, across every instance.
    pub async fn in_flight(&self) -> Result<i64, StoreError> {
        let mut conn = self.redis.clone();
        let count: Option<i64> = redis::cmd("GET")
            .arg(self.keys.workflows_in_flight())
            .query_async(&mut conn)
            .await?;
        Ok(count.unwrap_or(0))
    }
}
