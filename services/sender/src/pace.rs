//! Which provider limit paces a send, and what its turn means.
//!
//! Limits hold over every sender replica: each is a GCRA key in Redis
//! ([`dispatch_infra::rate`]), and every provider call takes the next turn
//! of its limit, waiting for it however far off it is. A turn near enough
//! (`send_limit_hold_ms`) is waited for in the sender; one further off is
//! handed to the timer with the turn written on the command
//! (`paced_at_ms`), and the command comes back then to be sent without
//! taking another, so that a backlog over a slow limit waits in Redis, not
//! in consumer slots. Retries of a call take turns too, waited for in
//! place: they are rare, and they keep the limit.
//!
//! `sender_rate_per_sec` is the limit of every channel that no entry of
//! `send_limits` matches, per channel over all replicas.

use std::time::Duration;

use dispatch_infra::config::{ProviderKind, SendLimit};
use dispatch_infra::rate::Gcra;
use dispatch_model::Channel;

/// The limit a send is paced by: its key's parts and its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    /// `*` for any provider.
    pub provider: String,
    /// `*` when every sender identity shares the limit.
    pub sender: String,
    pub rate: Gcra,
}

/// The first of `limits` matching a send on `channel` through `provider`
/// from `sender`, else the channel-wide `default_per_sec` (0: none).
pub fn select(
    limits: &[SendLimit],
    default_per_sec: u32,
    channel: Channel,
    provider: ProviderKind,
    sender: &str,
) -> Option<Pace> {
    let limit = limits
        .iter()
        .find(|l| l.channel == channel && l.provider.is_none_or(|p| p == provider));
    match limit {
        Some(limit) => Some(Pace {
            provider: limit.provider.map_or("*", ProviderKind::as_str).to_owned(),
            sender: match limit.per_sender {
                true => sender.to_owned(),
                false => "*".to_owned(),
            },
            rate: Gcra::per_sec(limit.per_sec, limit.burst, 1)?,
        }),
        None => Some(Pace {
            provider: "*".to_owned(),
            sender: "*".to_owned(),
            // A burst of one second's worth, as the per-process limit had.
            rate: Gcra::per_sec(f64::from(default_per_sec), 0, default_per_sec)?,
        }),
    }
}

/// What to do with a turn `wait` away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Wait for it here (nothing to wait when zero).
    Hold(Duration),
    /// Hand the command to the timer for it.
    Defer(Duration),
}

/// A turn near enough is held; a further one is deferred, but only on
/// the first attempt: a retry already holds a command mid-way.
pub fn turn(wait: Duration, hold: Duration, first_attempt: bool) -> Turn {
    if wait > hold && first_attempt {
        Turn::Defer(wait)
    } else {
        Turn::Hold(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(channel: Channel, provider: Option<ProviderKind>, per_sender: bool) -> SendLimit {
        SendLimit {
            channel,
            provider,
            per_sec: 1.0,
            burst: 0,
            per_sender,
        }
    }

    #[test]
    fn the_first_matching_limit_paces_a_send() {
        let limits = [
            limit(Channel::Sms, Some(ProviderKind::Twilio), true),
            SendLimit {
                per_sec: 80.0,
                ..limit(Channel::Whatsapp, None, false)
            },
            limit(Channel::Sms, None, false),
        ];
        let twilio = select(&limits, 0, Channel::Sms, ProviderKind::Twilio, "4477").unwrap();
        assert_eq!(
            (twilio.provider.as_str(), twilio.sender.as_str()),
            ("twilio", "4477"),
            "one limit per long code"
        );
        assert_eq!(twilio.rate.interval_us, 1_000_000);
        assert_eq!(twilio.rate.burst, 1, "one at a time by default");
        let vonage = select(&limits, 0, Channel::Sms, ProviderKind::Vonage, "4477").unwrap();
        assert_eq!(
            (vonage.provider.as_str(), vonage.sender.as_str()),
            ("*", "*")
        );
        let whatsapp = select(&limits, 0, Channel::Whatsapp, ProviderKind::Meta, "x").unwrap();
        assert_eq!(whatsapp.rate.interval_us, 12_500);
        assert_eq!(
            select(&limits, 0, Channel::Mms, ProviderKind::Twilio, "x"),
            None,
            "no limit and no default"
        );
        let default = select(&limits, 5, Channel::Mms, ProviderKind::Twilio, "x").unwrap();
        assert_eq!(
            (default.rate.interval_us, default.rate.burst),
            (200_000, 5),
            "the channel-wide default, one second's worth at once"
        );
    }

    #[test]
    fn far_turns_go_to_the_timer_on_the_first_attempt_only() {
        let hold = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(turn(ms(0), hold, true), Turn::Hold(ms(0)));
        assert_eq!(turn(ms(1_000), hold, true), Turn::Hold(ms(1_000)));
        assert_eq!(turn(ms(1_001), hold, true), Turn::Defer(ms(1_001)));
        assert_eq!(turn(ms(5_000), hold, false), Turn::Hold(ms(5_000)));
    }
}
