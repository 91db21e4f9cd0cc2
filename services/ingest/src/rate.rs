//! Per-account request rate, held across ingest replicas.
//!
//! The rule is GCRA (a token bucket without a refill task): each limited
//! account has one Redis key holding the time at which its bucket is next
//! empty, and one Lua script per request moves it on or answers how long
//! to wait, on Redis's clock so that replicas' clocks do not matter. That
//! is one round trip per request, and none when the account has no limit.
//!
//! An account's own rate (stored on its record, `dispatch account rate`)
//! replaces `account_rate_per_sec` and `account_rate_burst`; it is read
//! once per [`Limiter::CACHE_TTL`] per account and replica.
//!
//! When Redis does not answer, requests are let through: the limit
//! protects capacity, and refusing everything would cost more of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dispatch_infra::redis::{Keys, Redis};

use crate::error::{ApiError, ApiResult};

/// A request rate: `per_sec` requests per second, `burst` at once (`0`:
/// one second's worth). `per_sec` 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

/// A rate in the script's terms, for an account that has a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    /// Microseconds between requests at the steady rate.
    interval_us: u64,
    /// Requests at once.
    burst: u64,
}

impl Rate {
    /// The limit that applies to an account: its own rate if it has one,
    /// else `default`; `None` when that is no limit.
    fn limit(default: Rate, own: Option<Rate>) -> Option<Limit> {
        let rate = own.unwrap_or(default);
        if rate.per_sec == 0 {
            return None;
        }
        let burst = if rate.burst == 0 {
            rate.per_sec
        } else {
            rate.burst
        };
        Some(Limit {
            interval_us: (1_000_000 / u64::from(rate.per_sec)).max(1),
            burst: u64::from(burst),
        })
    }
}

/// KEYS[1]: the account's rate key. ARGV[1]: microseconds per request,
/// ARGV[2]: the burst. Returns 0 when the request may go ahead (and
/// counts it), else the microseconds until it could.
///
/// The stored time only moves forward from now, so an idle account's
/// bucket is full; the key expires when it would hold the past anyway.
/// Numbers are formatted by hand: Lua's own conversion keeps 14 digits.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local tat = math.max(stored, now) + interval
local wait = tat - now - interval * burst
if wait > 0 then
  return string.format('%.0f', wait)
end
local ttl_ms = math.ceil((tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl_ms))
return '0'
";

/// The per-account request limiter of one ingest process.
pub struct Limiter {
    default: Rate,
    script: redis::Script,
    own: Mutex<HashMap<String, (Option<Rate>, Instant)>>,
}

impl Limiter {
    /// How long an account's own rate is remembered.
    pub const CACHE_TTL: Duration = Duration::from_secs(5);
    /// Most accounts remembered; beyond it the cache starts over.
    const CAPACITY: usize = 10_000;

    pub fn new(default: Rate) -> Self {
        Self {
            default,
            script: redis::Script::new(GCRA),
            own: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `account`, or refuses it with 429.
    pub async fn admit(&self, redis: &Redis, keys: &Keys, account: &str) -> ApiResult<()> {
        let own = self.own_rate(redis, keys, account).await;
        let Some(limit) = Rate::limit(self.default, own) else {
            return Ok(());
        };
        let waited = self
            .script
            .key(keys.account_rate(account))
            .arg(limit.interval_us)
            .arg(limit.burst)
            .invoke_async::<String>(&mut redis.clone())
            .await;
        match waited.map(|w| w.parse::<u64>()) {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(wait_us)) => Err(ApiError::Throttled {
                retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
            }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rate script answered a non-number; request let through");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not count a request against its account's rate; let through");
                Ok(())
            }
        }
    }

    async fn own_rate(&self, redis: &Redis, keys: &Keys, account: &str) -> Option<Rate> {
        let cached = self
            .lock()
            .get(account)
            .filter(|(_, at)| at.elapsed() < Self::CACHE_TTL)
            .map(|(rate, _)| *rate);
        if let Some(rate) = cached {
            return rate;
        }
        match crate::accounts::rate(&mut redis.clone(), keys, account).await {
            Ok(rate) => {
                let mut own = self.lock();
                if own.len() >= Self::CAPACITY {
                    own.clear();
                }
                own.insert(account.to_owned(), (rate, Instant::now()));
                rate
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read an account's rate; using the default");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<Rate>, Instant)>> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: u32, burst: u32) -> Rate {
        Rate { per_sec, burst }
    }

    #[test]
    fn which_limit_applies() {
        let limit = |interval_us, burst| Some(Limit { interval_us, burst });
        assert_eq!(Rate::limit(rate(0, 0), None), None, "off by default");
        assert_eq!(
            Rate::limit(rate(0, 50), None),
            None,
            "a burst alone is no limit"
        );
        assert_eq!(Rate::limit(rate(100, 0), None), limit(10_000, 100));
        assert_eq!(Rate::limit(rate(100, 7), None), limit(10_000, 7));
        assert_eq!(
            Rate::limit(rate(0, 0), Some(rate(2, 5))),
            limit(500_000, 5),
            "an account's own rate without a default"
        );
        assert_eq!(
            Rate::limit(rate(100, 0), Some(rate(0, 0))),
            None,
            "an account's own rate of 0 is no limit"
        );
        assert_eq!(
            Rate::limit(rate(100, 0), Some(rate(u32::MAX, 0))),
            limit(1, u64::from(u32::MAX)),
            "more than a million a second"
        );
    }
}
