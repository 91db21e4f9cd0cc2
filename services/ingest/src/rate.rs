//! Per-account request rate, held across ingest replicas.
//!
//! The rule is GCRA ([`dispatch_infra::rate`]): each limited account has
//! one Redis key, and one Lua script per request counts it or answers how
//! long to wait (a request over the rate is refused, not counted). That is
//! one round trip per request, and none when the account has no limit.
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

use dispatch_infra::rate::Gcra;
use dispatch_infra::redis::{Keys, Redis};

use crate::error::{ApiError, ApiResult};

/// A request rate: `per_sec` requests per second, `burst` at once (`0`:
/// one second's worth). `per_sec` 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    /// The limit that applies to an account: its own rate if it has one,
    /// else `default`; `None` when that is no limit.
    fn limit(default: Rate, own: Option<Rate>) -> Option<Gcra> {
        let rate = own.unwrap_or(default);
        Gcra::per_sec(f64::from(rate.per_sec), rate.burst, rate.per_sec)
    }
}

/// The per-account request limiter of one ingest process.
pub struct Limiter {
    default: Rate,
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
            own: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `account`, or refuses it with 429.
    pub async fn admit(&self, redis: &Redis, keys: &Keys, account: &str) -> ApiResult<()> {
        let own = self.own_rate(redis, keys, account).await;
        let Some(limit) = Rate::limit(self.default, own) else {
            return Ok(());
        };
        let key = keys.account_rate(account);
        match dispatch_infra::rate::take(redis, &key, limit, Duration::ZERO).await {
            Ok(wait) if wait.is_zero() => Ok(()),
            Ok(wait) => Err(ApiError::Throttled {
                retry_after_secs: wait.as_micros().div_ceil(1_000_000).max(1) as u64,
            }),
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
        let limit = |interval_us, burst| Some(Gcra { interval_us, burst });
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
