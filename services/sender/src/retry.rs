//! How long a sender waits before calling a provider again after a
//! transient failure (a timeout, a 5xx, a 429).
//!
//! The wait doubles from `sender_retry_base_ms` with each attempt, so a
//! struggling provider is not hammered; a `Retry-After` longer than that
//! wins, but never holds a message more than [`MAX_RETRY_AFTER`], since
//! the sender holds the message's lock (and a consumer slot) meanwhile.
//! Whether to try again at all (`sender_max_attempts`) is the caller's.

use std::time::Duration;

/// The longest a `Retry-After` may hold a message.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The wait after failed attempt `attempt` (from 1): `base_ms` doubled
/// for each attempt after the first (the doubling stops after 16), or the
/// provider's `retry_after` when longer, capped at [`MAX_RETRY_AFTER`].
pub fn next_wait(attempt: u32, base_ms: u64, retry_after: Option<Duration>) -> Duration {
    let backoff =
        Duration::from_millis(base_ms.saturating_mul(1 << attempt.saturating_sub(1).min(16)));
    retry_after.map_or(backoff, |asked| asked.min(MAX_RETRY_AFTER).max(backoff))
}

/// Runs `attempt` until it succeeds, for up to `patience`, waiting 100 ms
/// and doubling up to 2 s between tries; the last error after that. For
/// writes that must not be given up lightly (a provider's acceptance not
/// yet recorded).
pub async fn in_place<T, F, Fut>(
    patience: std::time::Duration,
    mut attempt: F,
) -> Result<T, redis::RedisError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
{
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if started.elapsed() + wait < patience => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "not recorded yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn backoff_doubles_from_the_base() {
        let waits: Vec<u128> = (1..=5).map(|a| ms(next_wait(a, 200, None))).collect();
        assert_eq!(waits, [200, 400, 800, 1_600, 3_200]);
        assert_eq!(ms(next_wait(1, 0, None)), 0);
    }

    #[test]
    fn the_doubling_stops_and_never_overflows() {
        assert_eq!(ms(next_wait(17, 1, None)), 65_536);
        assert_eq!(next_wait(17, 1, None), next_wait(40, 1, None));
        assert_eq!(next_wait(u32::MAX, 1, None), next_wait(17, 1, None));
        assert_eq!(
            next_wait(10, u64::MAX, None),
            Duration::from_millis(u64::MAX)
        );
        assert_eq!(ms(next_wait(0, 200, None)), 200, "no attempt 0 underflow");
    }

    #[test]
    fn retry_after_wins_when_longer_up_to_thirty_seconds() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(ms(next_wait(1, 200, secs(2))), 2_000);
        assert_eq!(ms(next_wait(1, 200, secs(0))), 200, "shorter: backoff");
        assert_eq!(ms(next_wait(1, 200, secs(3_600))), 30_000, "capped");
        // The cap is on what the provider asks, not on our own backoff.
        assert_eq!(ms(next_wait(3, 20_000, secs(60))), 80_000);
        assert_eq!(ms(next_wait(3, 20_000, None)), 80_000);
    }
}
