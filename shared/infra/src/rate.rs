//! Rates held over every replica: GCRA in Redis.
//!
//! GCRA is a token bucket without a refill task: each limited thing (an
//! account's requests, a provider's sends) has one Redis key holding its
//! "theoretical arrival time", the time at which its bucket is next empty,
//! and one Lua script per request moves it on and answers how long the
//! request must wait. The script reads Redis's clock, so replicas' clocks
//! do not matter; it touches one key, so it runs on a Redis Cluster as it
//! does on one node.
//!
//! [`take`] counts a request only if its wait is at most `max_wait`:
//! ingest passes 0 (a request over its account's rate is refused, not
//! counted), senders pass [`RESERVE`] (every send takes the next turn,
//! and waits for it).

use std::sync::LazyLock;
use std::time::Duration;

use crate::redis::Redis;

/// A rate in the script's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds between requests at the steady rate.
    pub interval_us: u64,
    /// Requests at once (at least 1).
    pub burst: u64,
}

impl Gcra {
    /// `per_sec` requests a second, `burst` at once (0: `default_burst`).
    /// `None` when `per_sec` is not above zero: no limit.
    pub fn per_sec(per_sec: f64, burst: u32, default_burst: u32) -> Option<Self> {
        if !per_sec.is_finite() || per_sec <= 0.0 {
            return None;
        }
        let burst = if burst == 0 { default_burst } else { burst };
        Some(Gcra {
            interval_us: ((1_000_000.0 / per_sec).round() as u64).max(1),
            burst: u64::from(burst.max(1)),
        })
    }
}

/// `max_wait` that counts every request, however long it must wait.
pub const RESERVE: Duration = Duration::MAX;

/// KEYS[1] the rate's key; ARGV the interval (µs), the burst, the longest
/// wait (µs) for which the request is counted. Returns the wait (µs, 0:
/// now), counting the request when it is at most the longest wait.
///
/// The stored time only moves forward from now, so an idle bucket is
/// full; the key expires when it would hold the past anyway. Numbers are
/// formatted by hand: Lua's own conversion keeps 14 digits.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local tat = math.max(stored, now) + interval
local wait = tat - now - interval * burst
if wait < 0 then wait = 0 end
if wait <= max_wait then
  local ttl_ms = math.ceil((tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl_ms))
end
return string.format('%.0f', wait)
",
    )
});

/// How long a request under `rate` at `key` must wait; counted when that
/// is at most `max_wait` ([`RESERVE`]: always).
pub async fn take(
    redis: &Redis,
    key: &str,
    rate: Gcra,
    max_wait: Duration,
) -> Result<Duration, redis::RedisError> {
    let max_wait_us = u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX);
    let wait: String = SCRIPT
        .key(key)
        .arg(rate.interval_us)
        .arg(rate.burst)
        .arg(max_wait_us)
        .invoke_async(&mut redis.clone())
        .await?;
    let wait_us = wait.parse::<u64>().map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "rate script answered a non-number",
            wait,
        ))
    })?;
    Ok(Duration::from_micros(wait_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_the_scripts_terms() {
        let gcra = |interval_us, burst| Some(Gcra { interval_us, burst });
        assert_eq!(Gcra::per_sec(0.0, 5, 1), None, "0 is no limit");
        assert_eq!(Gcra::per_sec(-1.0, 0, 1), None);
        assert_eq!(Gcra::per_sec(f64::NAN, 0, 1), None);
        assert_eq!(Gcra::per_sec(50.0, 0, 1), gcra(20_000, 1));
        assert_eq!(Gcra::per_sec(100.0, 0, 100), gcra(10_000, 100));
        assert_eq!(Gcra::per_sec(0.5, 3, 1), gcra(2_000_000, 3));
        assert_eq!(
            Gcra::per_sec(1e9, 0, 0),
            gcra(1, 1),
            "at least 1 µs, 1 at once"
        );
    }
}
