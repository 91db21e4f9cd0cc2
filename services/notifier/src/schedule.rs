//! When to try a webhook again: a pure function of the configured
//! schedule, the attempts made, the receiver's `Retry-After` and a jitter.

use std::time::Duration;

/// The delay before the next attempt after `attempts` failed ones, or
/// `None` when the schedule is used up (dead-letter it).
///
/// `schedule[i]` is the delay before attempt `i + 1`, so `schedule[0]` is
/// the first attempt's (normally 0) and the schedule's length is the
/// number of attempts. `jitter` in [-1, 1] moves the delay by up to ±10 %,
/// so that a receiver back from an outage is not hit by every retry at
/// once. A `Retry-After` longer than the scheduled delay wins, up to `cap`.
pub fn next_delay(
    schedule: &[u64],
    attempts: u32,
    retry_after: Option<Duration>,
    cap: Duration,
    jitter: f64,
) -> Option<Duration> {
    let planned_ms = *schedule.get(usize::try_from(attempts).ok()?)?;
    let jittered = planned_ms as f64 * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    let planned = Duration::from_millis(jittered.max(0.0) as u64);
    Some(match retry_after {
        Some(asked) => planned.max(asked.min(cap)),
        None => planned,
    })
}

#[cfg(test)]
mod tests {
    use super::next_delay;
    use std::time::Duration;

    const SCHEDULE: [u64; 4] = [0, 5_000, 300_000, 1_800_000];
    const CAP: Duration = Duration::from_secs(3600);

    fn ms(d: Option<Duration>) -> Option<u128> {
        d.map(|d| d.as_millis())
    }

    #[test]
    fn follows_the_schedule_then_stops() {
        assert_eq!(ms(next_delay(&SCHEDULE, 1, None, CAP, 0.0)), Some(5_000));
        assert_eq!(ms(next_delay(&SCHEDULE, 2, None, CAP, 0.0)), Some(300_000));
        assert_eq!(
            ms(next_delay(&SCHEDULE, 3, None, CAP, 0.0)),
            Some(1_800_000)
        );
        assert_eq!(next_delay(&SCHEDULE, 4, None, CAP, 0.0), None);
        assert_eq!(next_delay(&[], 0, None, CAP, 0.0), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        assert_eq!(ms(next_delay(&SCHEDULE, 1, None, CAP, 1.0)), Some(5_500));
        assert_eq!(ms(next_delay(&SCHEDULE, 1, None, CAP, -1.0)), Some(4_500));
        assert_eq!(ms(next_delay(&SCHEDULE, 1, None, CAP, 7.0)), Some(5_500));
    }

    #[test]
    fn retry_after_wins_when_longer_up_to_the_cap() {
        let asked = Some(Duration::from_secs(60));
        assert_eq!(ms(next_delay(&SCHEDULE, 1, asked, CAP, 0.0)), Some(60_000));
        assert_eq!(ms(next_delay(&SCHEDULE, 2, asked, CAP, 0.0)), Some(300_000));
        let huge = Some(Duration::from_secs(86_400));
        assert_eq!(
            ms(next_delay(&SCHEDULE, 1, huge, CAP, 0.0)),
            Some(3_600_000)
        );
    }
}
