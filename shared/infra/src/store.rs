//! Workflow records in Redis, changed only by compare-and-set.
//!
//! A record is a hash `{v, r, d}`: a version number, the record's JSON,
//! and the highest outbox sequence number known to be carried out.
//! Every write names the version it read; the write happens only if the
//! version is still that one, and bumps it. Two workflow instances (or a
//! redelivered event) racing on one workflow therefore never both win: the
//! loser reloads and re-applies its event to the winner's state. Comparing
//! a small version instead of the whole JSON keeps each write to one copy
//! of the record on the wire.

use std::sync::LazyLock;

use dispatch_model::record::WorkflowRecord;

use crate::redis::{Keys, Redis};

/// `KEYS[1]` record, `KEYS[2]` the in-flight counter; `ARGV` expected
/// version (`""` = absent), JSON, TTL, change of the counter. Returns 1
/// when written (and only then moves the counter).
static CAS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', (tonumber(v) or 0) + 1, 'r', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '0' then redis.call('INCRBY', KEYS[2], ARGV[4]) end
return 1
",
    )
});

/// `KEYS[1]` record; `ARGV[1]` a sequence number. Raises the record's
/// done mark to it (never lowers it), without touching the version.
static MARK_DONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local d = tonumber(redis.call('HGET', KEYS[1], 'd')) or -1
if d < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'd', ARGV[1]) end
return 1
",
    )
});

/// `KEYS[1]` record, then index keys; `ARGV` record JSON, TTL, then one
/// value per index key. Writes the record only if absent (version 1), and
/// the indexes in any case. Returns 1 when the record was written.
static CREATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'r', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
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

/// What becomes of an accepted request whose publish confirm was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The workflow service picked it up: it runs.
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
        let (version, raw, done): (Option<u64>, Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.workflow(id))
            .arg("v")
            .arg("r")
            .arg("d")
            .query_async(&mut conn)
            .await?;
        match (version, raw) {
            (Some(version), Some(raw)) => {
                let mut record: WorkflowRecord = serde_json::from_str(&raw)?;
                // Carried out already: the next write leaves them out.
                if let Some(done) = done {
                    record.outbox.retain(|p| p.seq > done);
                }
                Ok(Some(Versioned {
                    version: Some(version),
                    record,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Writes a new record unless one is stored already, together with
    /// plain `(key, value)` indexes of it, in one round trip.
    pub async fn create(
        &self,
        id: &str,
        record: &WorkflowRecord,
        indexes: &[(String, String)],
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record)?;
        let mut invocation = CREATE.key(self.keys.workflow(id));
        for (key, _) in indexes {
            invocation.key(key);
        }
        invocation.arg(json).arg(self.ttl_secs);
        for (_, value) in indexes {
            invocation.arg(value);
        }
        let mut conn = self.redis.clone();
        let written: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(written == 1)
    }

    /// Settles the fate of workflow `id` as `wanted` unless it is settled
    /// already; returns the fate that holds. The workflow service claims
    /// each request before starting it; ingest, when a publish's outcome
    /// is unknown, tries to abandon it, and answers 503 only if that wins
    /// (else the work runs, and the answer is 202).
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

    /// Records that every outbox entry up to `seq` was carried out. Cheaper
    /// than rewriting the record: [`WorkflowStore::load`] leaves those
    /// entries out, and the next compare-and-set drops them for good.
    pub async fn mark_done(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        let mut conn = self.redis.clone();
        let _: i64 = MARK_DONE
            .key(self.keys.workflow(id))
            .arg(seq)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Writes `record` if the stored version is still `expected`; `false`
    /// when another writer got there first. The same write moves the count
    /// of workflows in flight by `in_flight` (+1 when one starts, -1 when
    /// one ends), so the count stays exact whoever wins.
    pub async fn compare_and_set(
        &self,
        id: &str,
        expected: Option<u64>,
        record: &WorkflowRecord,
        in_flight: i64,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record)?;
        let mut conn = self.redis.clone();
        let written: i64 = CAS
            .key(self.keys.workflow(id))
            .key(self.keys.workflows_in_flight())
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(json)
            .arg(self.ttl_secs)
            .arg(in_flight)
            .invoke_async(&mut conn)
            .await?;
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
