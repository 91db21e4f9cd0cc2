//! Which timer shards this timer owns.
//!
//! Entries are spread over `timer_shards` shards ([`Keys::timer_shard_of`]).
//! Each live timer heartbeats into the `timers` sorted set, and owns about
//! its share of the shards (`ceil(shards / live timers)`): an owner key per
//! shard holds its token for two thirds of `timer_lease_ms`, renewed every
//! third (or every 500 ms, if that is sooner). A timer holding more than
//! its share lets the extra ones go; one holding less takes shards nobody
//! holds, at its next round: a shard let go waits at most that long. A timer that dies stops
//! renewing: its heartbeat and its owner keys are gone two thirds of a
//! lease later, and the next round of another timer, within the third
//! after, takes its shards over. So within a lease.
//!
//! The claim checks the owner in the same script, so a timer whose lease
//! ran out (stalled, partitioned) claims nothing from a shard another took
//! over. Entries are leased one by one besides, so even two owners at once
//! would not fire an entry twice.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use dispatch_infra::redis::{Keys, Redis};
use tokio_util::sync::CancellationToken;

/// The longest time between two rounds of a timer.
const MAX_PERIOD: Duration = Duration::from_millis(500);

/// This timer's shards, shared with the claiming loop.
#[derive(Clone)]
pub(crate) struct Shards {
    redis: Redis,
    keys: Keys,
    pub(crate) token: String,
    lease_ms: u64,
    owned: Arc<RwLock<Vec<usize>>>,
}

/// How many shards each of `live` timers should own.
pub(crate) fn share(shards: usize, live: usize) -> usize {
    shards.div_ceil(live.max(1))
}

impl Shards {
    pub(crate) fn new(redis: Redis, keys: Keys, lease_ms: u64) -> Self {
        Self {
            redis,
            keys,
            token: uuid::Uuid::new_v4().simple().to_string(),
            lease_ms,
            owned: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// How often a timer heartbeats and rebalances: a third of a lease,
    /// and at most [`MAX_PERIOD`], so that a shard let go by a timer over
    /// its share (when another timer joins) waits at most that long for
    /// the timer that takes it.
    fn period(&self) -> Duration {
        Duration::from_millis((self.lease_ms / 3).max(1)).min(MAX_PERIOD)
    }

    /// How long an owner key and a heartbeat last unless renewed.
    fn hold_ms(&self) -> u64 {
        (self.lease_ms * 2 / 3).max(1)
    }

    /// The shards owned now.
    pub(crate) fn owned(&self) -> Vec<usize> {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Heartbeats, renews, takes and lets go of shards every third of a
    /// lease until `shutdown`, then lets every shard go (another timer
    /// takes them at once instead of after the lease).
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        // The caller took the first share before starting the timer.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.period()) => {}
            }
            if let Err(e) = self.rebalance().await {
                tracing::warn!(error = %e, "cannot renew timer shards; retrying");
            }
        }
        let owned = std::mem::take(&mut *self.owned.write().unwrap_or_else(|e| e.into_inner()));
        for shard in owned {
            let _ = self.release(shard).await;
        }
        let _: Result<(), _> = redis::cmd("ZREM")
            .arg(self.keys.timers())
            .arg(&self.token)
            .exec_async(&mut self.redis.clone())
            .await;
    }

    /// One round: heartbeat, count the live timers, keep this timer's
    /// share.
    pub(crate) async fn rebalance(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        let now = dispatch_model::record::now_ms();
        let hold = i64::try_from(self.hold_ms()).unwrap_or(i64::MAX);
        let (live,): (usize,) = redis::pipe()
            .zadd(self.keys.timers(), &self.token, now)
            .ignore()
            .zrembyscore(self.keys.timers(), "-inf", now - hold)
            .ignore()
            .zcard(self.keys.timers())
            .query_async(&mut conn)
            .await?;
        let target = share(self.keys.timer_shards(), live);
        let mut kept = Vec::new();
        for shard in self.owned() {
            let owner = self.keys.timer_owner(shard);
            if dispatch_infra::token::extend(&self.redis, &owner, &self.token, self.hold_ms())
                .await?
            {
                kept.push(shard);
            }
        }
        while kept.len() > target {
            if let Some(extra) = kept.pop() {
                self.release(extra).await?;
            }
        }
        if kept.len() < target {
            for shard in 0..self.keys.timer_shards() {
                if kept.len() >= target {
                    break;
                }
                if kept.contains(&shard) {
                    continue;
                }
                let taken: Option<String> = redis::cmd("SET")
                    .arg(self.keys.timer_owner(shard))
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.hold_ms())
                    .query_async(&mut conn)
                    .await?;
                if taken.is_some() {
                    kept.push(shard);
                }
            }
        }
        kept.sort_unstable();
        let mut owned = self.owned.write().unwrap_or_else(|e| e.into_inner());
        if *owned != kept {
            tracing::info!(shards = ?kept, live, "timer shards");
        }
        metrics::gauge!("dispatch_timer_shards_owned").set(kept.len() as f64);
        *owned = kept;
        Ok(())
    }

    async fn release(&self, shard: usize) -> Result<(), redis::RedisError> {
        let owner = self.keys.timer_owner(shard);
        dispatch_infra::token::release(&self.redis, &owner, &self.token).await
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn each_live_timer_owns_its_share() {
        assert_eq!(share(16, 1), 16);
        assert_eq!(share(16, 3), 6, "rounded up: no shard left unowned");
        assert_eq!(share(16, 16), 1);
        assert_eq!(share(16, 40), 1, "more timers than shards: some idle");
        assert_eq!(share(1, 0), 1);
    }
}
