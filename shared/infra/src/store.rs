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
//! The same script carries out what a transition asks of Redis (timer
//! entries to schedule or cancel, lookup indexes) and arms the recovery of
//! what it asks of RabbitMQ (the outbox): a timer entry, `outbox:{id}`,
//! due `outbox_recovery_ms` later, that [`WorkflowStore::mark_done`]
//! removes once the outbox is carried out. So a writer that dies right
//! after its write leaves nothing that no one will finish.

use std::sync::LazyLock;

use dispatch_model::record::WorkflowRecord;
use uuid::Uuid;

use crate::redis::{Keys, Redis};

/// `KEYS` record, in-flight counter, timer due set, timer entries, then
/// index keys; `ARGV` expected version (`""` = absent), JSON, TTL, change
/// of the counter, current message (`""`: none), the outbox entries undone
/// (`carried|fresh`: entries read undone, kept only if still undone, and
/// this transition's), recovery entry id, due ms and JSON, the
/// timer's wake channel, then the count of timer entries to schedule and
/// their `(id, due, JSON)`, the count to cancel and their ids, and one
/// value per index key. Returns 1 when written (and only then changes
/// anything else).
static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
local next = (tonumber(v) or 0) + 1
redis.call('HSET', KEYS[1], 'v', next, 'r', ARGV[2], 'c', next .. ' ' .. ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '0' then redis.call('INCRBY', KEYS[2], ARGV[4]) end
local carried, fresh = string.match(ARGV[6], '^(.*)|(.*)$')
local stored = redis.call('HGET', KEYS[1], 'u')
local u = ' '
for s in string.gmatch(carried, '%d+') do
  if not stored or string.find(stored, ' ' .. s .. ' ', 1, true) then u = u .. s .. ' ' end
end
for s in string.gmatch(fresh, '%d+') do u = u .. s .. ' ' end
redis.call('HSET', KEYS[1], 'u', u)
if u ~= ' ' then
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[9])
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[7])
end
local i = 12
local earliest = nil
for _ = 1, tonumber(ARGV[11]) do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i])
  local due = tonumber(ARGV[i + 1])
  if not earliest or due < earliest then earliest = due end
  i = i + 3
end
local cancels = tonumber(ARGV[i])
i = i + 1
for _ = 1, cancels do
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  i = i + 1
end
for k = 5, #KEYS do
  redis.call('SET', KEYS[k], ARGV[i], 'EX', ARGV[3])
  i = i + 1
end
if earliest then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) >= earliest then
    redis.call('PUBLISH', ARGV[10], earliest)
  end
end
return 1
",
    )
});

/// `KEYS` record, timer due set, timer entries; `ARGV` the recovery entry
/// id, then sequence numbers carried out. Takes them off the record's
/// undone list `u` without touching the version; once nothing is left,
/// disarms the outbox's recovery. A record written before `u` existed
/// has a done mark `d` instead, raised to the highest of them.
static MARK_DONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local u = redis.call('HGET', KEYS[1], 'u')
if not u then
  local d = tonumber(redis.call('HGET', KEYS[1], 'd')) or -1
  for i = 2, #ARGV do
    if tonumber(ARGV[i]) > d then d = tonumber(ARGV[i]) end
  end
  redis.call('HSET', KEYS[1], 'd', d)
  return 1
end
for i = 2, #ARGV do
  u = string.gsub(u, ' ' .. ARGV[i] .. ' ', ' ')
end
redis.call('HSET', KEYS[1], 'u', u)
if u == ' ' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return 1
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

/// `KEYS` fate, record, timer due set, timer entries, in-flight counter;
/// `ARGV` TTL, recovery entry id, deadline entry id (or `""`). Settles
/// the fate of work whose write's outcome is unknown: `claimed` when the
/// record moved on since its first write (it runs); else the record, if
/// written, is removed with its timer entries, and the fate is
/// `abandoned`. A fate settled before holds.
static ABANDON: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local fate = redis.call('GET', KEYS[1])
if fate then return fate end
local v = tonumber(redis.call('HGET', KEYS[2], 'v'))
if v and v > 1 then
  redis.call('SET', KEYS[1], 'claimed', 'EX', ARGV[1])
  return 'claimed'
end
if v then
  if redis.call('HEXISTS', KEYS[2], 'c') == 1 then redis.call('DECR', KEYS[5]) end
  redis.call('DEL', KEYS[2])
  for i = 2, 3 do
    if ARGV[i] ~= '' then
      redis.call('ZREM', KEYS[3], ARGV[i])
      redis.call('HDEL', KEYS[4], ARGV[i])
    end
  end
end
redis.call('SET', KEYS[1], 'abandoned', 'EX', ARGV[1])
return 'abandoned'
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
    /// The change of the count of workflows in flight.
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
    /// When the recovery of a non-empty outbox is due (ms).
    pub recovery_due_ms: i64,
    /// The first outbox sequence number of this transition's own entries;
    /// those below were read undone with the record.
    pub own_from: u64,
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
}

impl WorkflowStore {
    pub fn new(redis: Redis, keys: Keys, ttl_secs: u64) -> Self {
        Self {
            redis,
            keys,
            ttl_secs,
        }
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
    /// removes the record and the timer entries (its recovery, and
    /// `deadline`) that write made.
    pub async fn abandon(&self, id: &str, deadline: Option<&str>) -> Result<Fate, StoreError> {
        let mut conn = self.redis.clone();
        let fate: String = ABANDON
            .key(self.keys.fate(id))
            .key(self.keys.workflow(id))
            .key(self.keys.timer_due())
            .key(self.keys.timer_entries())
            .key(self.keys.workflows_in_flight())
            .arg(self.ttl_secs)
            .arg(recovery_id(id))
            .arg(deadline.unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(if fate == Fate::Abandoned.as_str() {
            Fate::Abandoned
        } else {
            Fate::Claimed
        })
    }

    /// Records that every outbox entry up to `seq` was carried out, and
    /// disarms the outbox's recovery once nothing written to it is left.
    /// Cheaper than rewriting the record: [`WorkflowStore::load`] leaves
    /// those entries out, and the next write drops them for good.
    pub async fn mark_done(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let mut conn = self.redis.clone();
        let _: i64 = MARK_DONE
            .key(self.keys.workflow(id))
            .key(self.keys.timer_due())
            .key(self.keys.timer_entries())
            .arg(recovery_id(id))
            .arg(seqs)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Carries out `write` if the stored version is still the one it
    /// names; `false` when another writer got there first (then nothing
    /// changed). In the same script: the count of workflows in flight
    /// moves by `in_flight` (+1 when one starts, -1 when one ends), so it
    /// stays exact whoever wins; the timer entries are scheduled and
    /// cancelled; the indexes are written; and when the outbox holds
    /// anything, its recovery is armed: a timer entry that carries it out
    /// unless [`WorkflowStore::mark_done`] disarms it first.
    pub async fn write(&self, write: &Write<'_>) -> Result<bool, StoreError> {
        let json = serde_json::to_string(write.record)?;
        let id = write.id;
        let mut invocation = WRITE.key(self.keys.workflow(id));
        invocation
            .key(self.keys.workflows_in_flight())
            .key(self.keys.timer_due())
            .key(self.keys.timer_entries());
        for (key, _) in write.indexes {
            invocation.key(key);
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
        invocation
            .arg(write.expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(json)
            .arg(self.ttl_secs)
            .arg(write.in_flight)
            .arg(write.current.map(|c| c.to_string()).unwrap_or_default())
            .arg(undone)
            .arg(recovery_id(id))
            .arg(write.recovery_due_ms)
            .arg(recovery_entry(id))
            .arg(self.keys.timer_wake())
            .arg(write.schedule.len());
        for (entry_id, due_ms, entry) in &write.schedule {
            invocation.arg(entry_id).arg(due_ms).arg(entry);
        }
        invocation.arg(write.cancel.len());
        for entry_id in &write.cancel {
            invocation.arg(entry_id);
        }
        for (_, value) in write.indexes {
            invocation.arg(value);
        }
        let mut conn = self.redis.clone();
        let written: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(written == 1)
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
