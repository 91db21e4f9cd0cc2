//! The circuit breaker's decisions, apart from where its state lives
//! (Redis, [`crate::circuit`]) and where failures are counted (each
//! notifier's memory, [`crate::slots`]).
//!
//! - **When a circuit opens**: after `webhook_circuit_failures` failed
//!   attempts in a row at one endpoint ([`should_open`]). Any success
//!   resets the count, so a receiver that fails now and then never trips
//!   it; one that is down trips it after a bounded number of requests.
//! - **How long it stays open**: `webhook_circuit_open_ms` when it opens,
//!   then twice the last period after each failed probe, up to
//!   `webhook_circuit_open_max_ms` ([`next_open_period`]). An endpoint
//!   down for hours costs one request per long period; one back soon
//!   after a short outage is found soon.

/// Whether `failures_in_a_row` failed attempts open the endpoint's
/// circuit, by the `webhook_circuit_failures` setting.
pub fn should_open(failures_in_a_row: u32, webhook_circuit_failures: u32) -> bool {
    failures_in_a_row >= webhook_circuit_failures
}

/// The open period after a failed probe: the last one, `period_ms`,
/// doubled, and at most `max_ms` (`webhook_circuit_open_max_ms`).
pub fn next_open_period(period_ms: u64, max_ms: u64) -> u64 {
    period_ms.saturating_mul(2).min(max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_configured_failures_in_a_row() {
        assert!(!should_open(0, 10));
        assert!(!should_open(9, 10));
        assert!(should_open(10, 10));
        assert!(should_open(11, 10), "failures counted past the threshold");
        assert!(should_open(1, 1));
    }

    #[test]
    fn the_open_period_doubles_up_to_the_maximum() {
        // The defaults: 30 s, doubling up to 10 min.
        let mut period = 30_000;
        let mut periods = Vec::new();
        for _ in 0..7 {
            period = next_open_period(period, 600_000);
            periods.push(period);
        }
        assert_eq!(
            periods,
            [60_000, 120_000, 240_000, 480_000, 600_000, 600_000, 600_000]
        );
    }

    #[test]
    fn the_maximum_holds_for_any_period() {
        assert_eq!(next_open_period(30_000, 30_000), 30_000);
        assert_eq!(next_open_period(900_000, 600_000), 600_000);
        assert_eq!(next_open_period(u64::MAX, u64::MAX), u64::MAX);
    }
}
