//! The Redis side of the timer: the client API ([`Scheduler`]) and the
//! claim/ack steps of the firing protocol ([`claim`], [`ack`]). Every step
//! that touches both structures is one Lua script, so Redis applies it
//! atomically; see the crate documentation for the protocol as a whole.

use std::sync::LazyLock;

use crate::redis::{Keys, Redis};
use redis::RedisError;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

/// What a timer publishes when an entry is due; stored as JSON in the
/// entries hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub routing_key: String,
    pub message_id: String,
    /// A JSON text, published as-is (kept as a string so that its bytes
    /// survive unchanged).
    pub payload: String,
    /// The W3C trace context of whoever scheduled it, so that the firing
    /// continues their trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The stored JSON of an [`Entry`].
pub fn entry_json(
    routing_key: &str,
    message_id: &str,
    payload: &str,
    traceparent: Option<String>,
) -> String {
    // Strings only: serialising cannot fail.
    serde_json::to_string(&Entry {
        routing_key: routing_key.to_owned(),
        message_id: message_id.to_owned(),
        payload: payload.to_owned(),
        traceparent,
    })
    .unwrap_or_default()
}

/// `KEYS[1]` due set, `KEYS[2]` entries hash; `ARGV` id, due ms, entry
/// JSON, wake channel. Upserts the entry and wakes timers when it is now
/// the earliest.
static SCHEDULE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] and tonumber(first[2]) >= tonumber(ARGV[2]) then
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
return 1
",
    )
});

/// `KEYS[1]` due set, `KEYS[2]` entries hash, `KEYS[3]` the shard's owner;
/// `ARGV` batch size, lease ms, and the claiming timer's token (`""`: no
/// owner check). Takes up to a batch of entries due by Redis' clock and
/// re-scores each to the end of its lease. Returns `{now, leased_until,
/// earliest score left (or nil), members scanned, {{id, entry, due}, ..}}`,
/// members scanned being -1 when the shard is another timer's. A member
/// without an entry (cancelled behind our back) is dropped from the set.
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return {0, 0, false, -1, {}}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leased = now + tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    redis.call('ZADD', KEYS[1], leased, id)
    out[#out + 1] = {id, entry, tonumber(due[i + 1])}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local earliest = false
if first[2] then earliest = tonumber(first[2]) end
return {now, leased, earliest, #due / 2, out}
",
    )
});

/// `KEYS[1]` due set, `KEYS[2]` entries hash; `ARGV[1]` leased score, then
/// ids. Forgets each id still leased at that score; one re-scheduled (or
/// re-claimed) meanwhile has another score and stays. Returns how many
/// were forgotten.
static ACK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local leased = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == leased then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
",
    )
});

/// `KEYS[1]` due set, `KEYS[2]` entries hash; `ARGV` id, due. Forgets the
/// entry only while it is still due then: one scheduled again since (with
/// another due time) or being fired (leased) stays.
static CANCEL_IF_DUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
",
    )
});

/// Adds to `pipe` the upsert of entry `id` (its JSON: [`entry_json`]) due
/// at `due_ms`, as plain commands, so that it can travel in one pipeline
/// with other writes; and a wake-up of sleeping timers when it is due
/// within `wake_within_ms` of `now_ms` (a timer looks at the set at least
/// that often anyway).
pub fn schedule_into(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    id: &str,
    due_ms: i64,
    entry: &str,
    now_ms: i64,
    wake_within_ms: i64,
) {
    let shard = keys.timer_shard_of(id);
    pipe.hset(keys.timer_entries(shard), id, entry)
        .ignore()
        .zadd(keys.timer_due(shard), id, due_ms)
        .ignore();
    if due_ms < now_ms.saturating_add(wake_within_ms) {
        pipe.publish(keys.timer_wake(), due_ms).ignore();
    }
}

/// Adds to `pipe` forgetting entry `id`.
pub fn cancel_into(pipe: &mut redis::Pipeline, keys: &Keys, id: &str) {
    let shard = keys.timer_shard_of(id);
    pipe.zrem(keys.timer_due(shard), id)
        .ignore()
        .hdel(keys.timer_entries(shard), id)
        .ignore();
}

/// Forgets entry `id` if it is still due at `due_ms` (see
/// [`CANCEL_IF_DUE`]); whether it did.
pub async fn cancel_if_due(
    redis: &Redis,
    keys: &Keys,
    id: &str,
    due_ms: i64,
) -> Result<bool, RedisError> {
    let shard = keys.timer_shard_of(id);
    let cancelled: i64 = CANCEL_IF_DUE
        .key(keys.timer_due(shard))
        .key(keys.timer_entries(shard))
        .arg(id)
        .arg(due_ms)
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(cancelled == 1)
}

/// Schedules, moves and cancels deadlines. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    redis: Redis,
    keys: Keys,
}

impl Scheduler {
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Self { redis, keys }
    }

    /// Publishes `payload` (a JSON text) under `routing_key` with
    /// `message_id` once the time is `due_ms` (ms since the Unix epoch).
    /// Idempotent upsert by `id`: scheduling an id again replaces its
    /// entry and moves its deadline. Wakes sleeping timers when this is now
    /// the earliest deadline.
    pub async fn schedule(
        &self,
        id: &str,
        due_ms: i64,
        routing_key: &str,
        message_id: &str,
        payload: &str,
    ) -> Result<(), RedisError> {
        let entry = entry_json(
            routing_key,
            message_id,
            payload,
            crate::telemetry::current_traceparent(),
        );
        let mut conn = self.redis.clone();
        let shard = self.keys.timer_shard_of(id);
        let _: i64 = SCHEDULE
            .key(self.keys.timer_due(shard))
            .key(self.keys.timer_entries(shard))
            .arg(id)
            .arg(due_ms)
            .arg(entry)
            .arg(self.keys.timer_wake())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Forgets the entry `id`; a no-op when there is none (never scheduled,
    /// cancelled, or fired). An entry a timer is publishing at this very
    /// moment may still be published once.
    pub async fn cancel(&self, id: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        cancel_into(pipe.atomic(), &self.keys, id);
        pipe.exec_async(&mut self.redis.clone()).await
    }

    /// Entries not yet fired, including those being published right now.
    pub async fn pending(&self) -> Result<u64, RedisError> {
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.timer_shards() {
            pipe.zcard(self.keys.timer_due(shard));
        }
        let counts: Vec<u64> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(counts.iter().sum())
    }
}

/// The outcome of one [`claim`].
#[derive(Debug, Clone)]
pub struct Claim {
    /// The shard claimed from.
    pub shard: usize,
    /// `false` when the shard is another timer's (nothing was claimed).
    pub owned: bool,
    /// Redis' clock when the claim ran, in ms since the Unix epoch.
    pub now_ms: i64,
    /// The score every claimed entry now has: `now_ms` + the lease.
    pub leased_until: i64,
    /// The earliest score left in the set after the claim (leased entries
    /// included), if any.
    pub next_due_ms: Option<i64>,
    /// Due members looked at; equal to the batch size when more may be due.
    pub scanned: usize,
    pub entries: Vec<Claimed>,
}

/// One claimed entry.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    /// Its due time before the claim re-scored it.
    pub due_ms: i64,
    /// The entry JSON, as stored (see [`Entry`]).
    pub entry: String,
}

/// Atomically claims up to `batch` due entries for `lease_ms`: until then
/// no other timer sees them as due. Whoever claims must publish them and
/// then [`ack`]; if it never does, they are due again when the lease ends.
///
/// From shard `shard`, only while the timer whose token is `owner` owns it
/// (`None`: whoever owns it).
pub async fn claim<C>(
    conn: &mut C,
    keys: &Keys,
    shard: usize,
    owner: Option<&str>,
    batch: usize,
    lease_ms: u64,
) -> Result<Claim, RedisError>
where
    C: ConnectionLike + Send,
{
    type Raw = (i64, i64, Option<i64>, i64, Vec<(String, String, i64)>);
    let (now_ms, leased_until, next_due_ms, scanned, entries): Raw = CLAIM
        .key(keys.timer_due(shard))
        .key(keys.timer_entries(shard))
        .key(keys.timer_owner(shard))
        .arg(batch)
        .arg(lease_ms)
        .arg(owner.unwrap_or_default())
        .invoke_async(conn)
        .await?;
    Ok(Claim {
        shard,
        owned: scanned >= 0,
        now_ms,
        leased_until,
        next_due_ms,
        scanned: usize::try_from(scanned).unwrap_or(0),
        entries: entries
            .into_iter()
            .map(|(id, entry, due_ms)| Claimed { id, due_ms, entry })
            .collect(),
    })
}

/// Forgets the published entries `ids` claimed with `leased_until`, except
/// those re-scheduled since. Returns how many were forgotten.
pub async fn ack<C>(
    conn: &mut C,
    keys: &Keys,
    shard: usize,
    leased_until: i64,
    ids: &[String],
) -> Result<usize, RedisError>
where
    C: ConnectionLike + Send,
{
    if ids.is_empty() {
        return Ok(0);
    }
    ACK.key(keys.timer_due(shard))
        .key(keys.timer_entries(shard))
        .arg(leased_until)
        .arg(ids)
        .invoke_async(conn)
        .await
}
