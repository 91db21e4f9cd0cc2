//! Circuit breakers per webhook endpoint, shared by every notifier through
//! Redis.
//!
//! An **endpoint** is a webhook URL without its query (and fragment): two
//! applications behind `hooks.example.com/a` and `hooks.example.com/b` are
//! two endpoints, each with its own circuit, whatever they share of host
//! and port. Its id ([`endpoint_id`]) names its keys.
//!
//! # States
//!
//! A circuit is a Redis hash ([`Keys::circuit`]) beside a list of the
//! webhooks waiting for it ([`Keys::circuit_parked`]), and is one of:
//!
//! - **closed**: no hash. Webhooks go straight to the endpoint.
//! - **open** (`until` = when to probe): webhooks are appended to the
//!   parked list ([`Circuits::park`]) and nothing is sent. One timer entry
//!   per circuit (`webhook.probe`) comes back at `until`.
//! - **probing** (`until` = end of the prober's lease): one notifier sends
//!   the first parked webhook as the probe. Success moves to draining;
//!   failure opens the circuit again for twice as long, up to
//!   `webhook_circuit_open_max_ms` ([`crate::breaker`] decides; the
//!   prober reads the period when it takes the lease and writes the next
//!   one with its token, so no other notifier changes it in between).
//! - **draining** (`until` = end of the drainer's lease): the parked
//!   webhooks are published back to the webhooks queue in batches, where
//!   every notifier delivers them at the endpoint's slot limit; new
//!   webhooks go straight to the endpoint. When the list is empty the hash
//!   is deleted: closed.
//!
//! Probing and draining hold a lease with an owner token: every step that
//! changes the list checks the token, so a notifier that died or stalled
//! mid-probe is taken over when its lease ends (its probe message is
//! redelivered, or a later probe finds the lease expired) and two
//! notifiers never trim the list under each other. A batch published but
//! not yet trimmed when the lease is lost is published again: a
//! duplicate, which the delivered mark keeps from reaching the receiver
//! twice.
//!
//! # Cost of an open circuit
//!
//! Parking is one script call per webhook, once. While the circuit stays
//! open nothing else happens until the probe: per open period one timer
//! entry fires, the prober makes a fixed number of Redis calls, one HTTP
//! request, and schedules the next probe; none of it depends on how many
//! webhooks wait. Webhooks parked longer than the retry schedule's total
//! span are dead-lettered by the prober, each once.
//!
//! # What lives where
//!
//! Circuit state and the parked lists are in Redis, so every notifier
//! replica sees the same circuit and a restart forgets nothing. Each
//! notifier counts consecutive failures per endpoint in memory, and
//! remembers which circuits it saw open so that it parks their webhooks
//! without trying them. A restart forgets both: the restarted notifier
//! sends the next webhook for an open circuit, and when that attempt
//! fails it finds the circuit open ([`Circuits::open`]) and parks from
//! then on. So a replica makes at most one attempt per open circuit it
//! did not know about, and at most `webhook_circuit_failures` in a row
//! before it opens one.

use std::sync::LazyLock;

use dispatch_infra::redis::{Keys, Redis};
use redis::RedisError;
use sha2::{Digest, Sha256};

/// The endpoint of a webhook URL: the URL without its query and fragment.
pub fn endpoint_of(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The id of an endpoint in Redis keys: a hash, so that no URL (or the
/// secrets a path may hold) is spelled out in a key name.
pub fn endpoint_id(endpoint: &str) -> String {
    hex::encode(&Sha256::digest(endpoint.as_bytes())[..16])
}

/// What [`Circuits::begin`] hands a probe message's handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Nothing to do: the circuit is closed and nothing waits.
    Closed,
    /// Not yet, or someone else holds the lease: come back at `until_ms`.
    Wait { until_ms: i64 },
    /// Send the first parked webhook as the probe. `period_ms` is how
    /// long the circuit was open (`None` if the circuit does not say),
    /// from which a failed probe's next period follows.
    Probe { period_ms: Option<u64> },
    /// The circuit is closed: send what waits back to the queue.
    Drain,
}

/// The outcome of a token-checked step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Done, the lease is still ours.
    Held,
    /// The list is empty and the circuit closed.
    Closed,
    /// Another notifier took over: stop.
    Lost,
}

#[derive(Clone)]
pub struct Circuits {
    redis: Redis,
    keys: Keys,
    /// How long a prober or drainer holds its lease between steps.
    lease_ms: i64,
    /// Keys outlive every parked webhook's span.
    ttl_secs: u64,
}

static PARK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' or state == 'probing' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0",
    )
});

static OPEN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' or state == 'probing' then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'until'))}
end
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'open', 'until', until_ms, 'period', ARGV[2], 'token', '')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, until_ms}",
    )
});

static BEGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if not state then
  if redis.call('LLEN', KEYS[2]) == 0 then return {'closed', 0, -1} end
  state = 'draining'
end
if now < until_ms then return {'wait', until_ms, -1} end
if state == 'open' then state = 'probing' end
redis.call('HSET', KEYS[1], 'state', state, 'until', now + tonumber(ARGV[3]), 'token', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {state, 0, tonumber(redis.call('HGET', KEYS[1], 'period') or '-1')}",
    )
});

/// Token-checked: drops the first ARGV[3] parked webhooks, extends the
/// lease, and closes the circuit when draining leaves the list empty.
static TRIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 'lost' end
local n = tonumber(ARGV[3])
if n > 0 then redis.call('LTRIM', KEYS[2], n, -1) end
if redis.call('HGET', KEYS[1], 'state') == 'draining' and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 'closed'
end
redis.call('HSET', KEYS[1], 'until', tonumber(ARGV[2]) + tonumber(ARGV[4]))
return 'held'",
    )
});

/// Token-checked end of a probe. Success (ARGV[3] = '') drops the probe
/// from the list and starts draining; failure replaces it with its
/// updated job and opens the circuit again for ARGV[4].
static PROBED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return {'lost', 0} end
local now = tonumber(ARGV[2])
if ARGV[3] == '' then
  redis.call('LPOP', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'draining', 'until', now + tonumber(ARGV[5]))
  return {'held', 0}
end
if ARGV[3] == '-' then redis.call('LPOP', KEYS[2]) else redis.call('LSET', KEYS[2], 0, ARGV[3]) end
local period = tonumber(ARGV[4])
local until_ms = now + period
redis.call('HSET', KEYS[1], 'state', 'open', 'until', until_ms, 'period', period, 'token', '')
return {'open', until_ms}",
    )
});

impl Circuits {
    pub fn new(redis: Redis, keys: Keys, lease_ms: u64, ttl_secs: u64) -> Self {
        Self {
            redis,
            keys,
            lease_ms: i64::try_from(lease_ms).unwrap_or(i64::MAX / 4),
            ttl_secs,
        }
    }

    /// Appends `entry` to the endpoint's parked list if its circuit is
    /// open or probing; `false` when it is closed (or draining), and the
    /// webhook should be sent.
    pub async fn park(&self, id: &str, entry: &str) -> Result<bool, RedisError> {
        let parked: i64 = PARK
            .key(self.keys.circuit(id))
            .key(self.keys.circuit_parked(id))
            .arg(entry)
            .arg(self.ttl_secs)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(parked == 1)
    }

    /// Opens the circuit for `period_ms` unless it is open already;
    /// `Some(until)` when this call opened it (and should schedule the
    /// probe), `None` when it was open.
    pub async fn open(
        &self,
        id: &str,
        now_ms: i64,
        period_ms: u64,
    ) -> Result<Option<i64>, RedisError> {
        let (opened, until_ms): (i64, i64) = OPEN
            .key(self.keys.circuit(id))
            .arg(now_ms)
            .arg(period_ms)
            .arg(self.ttl_secs)
            .invoke_async(&mut self.redis.clone())
            .await?;
        let mut conn = self.redis.clone();
        if opened == 1 {
            redis::pipe()
                .zadd(self.keys.circuits(), id, now_ms)
                .ignore()
                .exec_async(&mut conn)
                .await?;
        }
        Ok((opened == 1).then_some(until_ms))
    }

    /// A probe message's turn: takes the lease with `token` when it is
    /// time to probe or drain.
    pub async fn begin(&self, id: &str, now_ms: i64, token: &str) -> Result<Turn, RedisError> {
        let (turn, until_ms, period_ms): (String, i64, i64) = BEGIN
            .key(self.keys.circuit(id))
            .key(self.keys.circuit_parked(id))
            .arg(now_ms)
            .arg(token)
            .arg(self.lease_ms)
            .arg(self.ttl_secs)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match turn.as_str() {
            "wait" => Turn::Wait { until_ms },
            "probing" => Turn::Probe {
                period_ms: u64::try_from(period_ms).ok(),
            },
            "draining" => Turn::Drain,
            _ => Turn::Closed,
        })
    }

    /// Up to `n` parked entries from the head of the list.
    pub async fn head(&self, id: &str, n: usize) -> Result<Vec<String>, RedisError> {
        let stop = isize::try_from(n).unwrap_or(isize::MAX) - 1;
        redis::cmd("LRANGE")
            .arg(self.keys.circuit_parked(id))
            .arg(0)
            .arg(stop)
            .query_async(&mut self.redis.clone())
            .await
    }

    /// Drops the first `n` parked entries if the lease is still `token`'s.
    pub async fn trim(
        &self,
        id: &str,
        token: &str,
        now_ms: i64,
        n: usize,
    ) -> Result<Step, RedisError> {
        let step: String = TRIM
            .key(self.keys.circuit(id))
            .key(self.keys.circuit_parked(id))
            .arg(token)
            .arg(now_ms)
            .arg(n)
            .arg(self.lease_ms)
            .invoke_async(&mut self.redis.clone())
            .await?;
        let step = match step.as_str() {
            "closed" => Step::Closed,
            "held" => Step::Held,
            _ => Step::Lost,
        };
        if step == Step::Closed {
            self.forget(id).await?;
        }
        Ok(step)
    }

    /// The probe got through: drain.
    pub async fn probe_succeeded(
        &self,
        id: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<Step, RedisError> {
        let (step, _): (String, i64) = self.probed(id, token, now_ms, "", 0).await?;
        Ok(if step == "held" {
            Step::Held
        } else {
            Step::Lost
        })
    }

    /// The probe failed: `updated` replaces it at the head of the list
    /// (`None`: it is dead-lettered and leaves the list), and the circuit
    /// opens again for `period_ms`; `Some(until)` is when to probe next.
    pub async fn probe_failed(
        &self,
        id: &str,
        token: &str,
        now_ms: i64,
        updated: Option<&str>,
        period_ms: u64,
    ) -> Result<Option<i64>, RedisError> {
        let (step, until_ms) = self
            .probed(id, token, now_ms, updated.unwrap_or("-"), period_ms)
            .await?;
        Ok((step == "open").then_some(until_ms))
    }

    async fn probed(
        &self,
        id: &str,
        token: &str,
        now_ms: i64,
        updated: &str,
        period_ms: u64,
    ) -> Result<(String, i64), RedisError> {
        PROBED
            .key(self.keys.circuit(id))
            .key(self.keys.circuit_parked(id))
            .arg(token)
            .arg(now_ms)
            .arg(updated)
            .arg(period_ms)
            .arg(self.lease_ms)
            .invoke_async(&mut self.redis.clone())
            .await
    }

    async fn forget(&self, id: &str) -> Result<(), RedisError> {
        redis::pipe()
            .zrem(self.keys.circuits(), id)
            .ignore()
            .exec_async(&mut self.redis.clone())
            .await
    }

    /// The gauges: circuits not closed, and webhooks waiting on them
    /// (counted over the first 1,000 circuits).
    pub async fn gauges(&self) -> Result<(u64, u64), RedisError> {
        let mut conn = self.redis.clone();
        let (open, ids): (u64, Vec<String>) = redis::pipe()
            .zcard(self.keys.circuits())
            .zrange(self.keys.circuits(), 0, 999)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.llen(self.keys.circuit_parked(id));
        }
        let waiting: Vec<u64> = if ids.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        Ok((open, waiting.iter().sum()))
    }
}
