//! What the simulator does with a send: the default table, keyed by the
//! last two digits of `to`, and per-recipient overrides of it.

use dispatch_model::Channel;
use dispatch_model::record::{MessageError, Usage};
use serde::{Deserialize, Serialize};

use crate::wire::ProviderError;

/// How the simulator treats sends to one recipient. Every field is
/// optional in JSON; `{}` means "accept, deliver after the configured
/// delay, no read receipt".
///
/// Transient failures come first: with `transient_failures: 2` and a
/// `reject`, a reference gets 503, 503, then 422.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Reject every send at submit with this error (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<ProviderError>,
    /// Answer 503 this many times per `reference` before going on.
    #[serde(skip_serializing_if = "is_zero")]
    pub transient_failures: u32,
    /// `Retry-After` (seconds) sent with those 503s; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// The receipt that follows an accepted send.
    pub delivery: Delivery,
    /// Whether a `read` receipt follows `delivered`, after another delay.
    #[serde(skip_serializing_if = "is_false")]
    pub read: bool,
    /// How long the send itself takes to answer (provider latency); none
    /// by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_delay_ms: Option<u64>,
    /// Delay before each receipt; `simulator_delay_ms` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The error of an `undeliverable` receipt; 1330 "Undeliverable" by
    /// default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    /// The price reported with `delivered`, in EUR; the channel's price
    /// ([`price`]) by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
}

/// The receipt after an accepted send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Delivered,
    Undeliverable,
    /// Accepted, then silence: no receipt ever.
    None,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Behaviour {
    /// The error of an `undeliverable` receipt.
    pub fn undeliverable_error(&self) -> MessageError {
        self.error.clone().unwrap_or_else(undeliverable)
    }

    /// The usage reported with `delivered` on `channel`.
    pub fn usage(&self, channel: Channel) -> Usage {
        Usage::eur(
            self.price
                .clone()
                .unwrap_or_else(|| price(channel).to_owned()),
        )
    }
}

fn undeliverable() -> MessageError {
    MessageError {
        code: 1330,
        reason: "Undeliverable".into(),
    }
}

/// The price of one delivered message on `channel`, in EUR.
pub fn price(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "0.0333",
        Channel::Mms => "0.0550",
        Channel::Whatsapp => "0.0150",
        Channel::Messenger => "0.0010",
        Channel::ViberServiceMsg => "0.0120",
        Channel::Rcs => "0.0100",
    }
}

/// The behaviour for `to` when no override is set, by its last two
/// characters:
///
/// | ends in | outcome |
/// |---|---|
/// | `00` | delivered after the delay |
/// | `01` | delivered, then read after another delay |
/// | `02` | rejected at submit: 422, error 1300 |
/// | `03` | accepted, never delivered (no receipt) |
/// | `04` | accepted, then undeliverable (error 1330) |
/// | `05` | 503 twice per `reference`, then accepted and delivered |
/// | other | delivered after the delay |
pub fn default_behaviour(to: &str) -> Behaviour {
    let suffix = to
        .len()
        .checked_sub(2)
        .and_then(|i| to.get(i..))
        .unwrap_or("");
    match suffix {
        "01" => Behaviour {
            read: true,
            ..Behaviour::default()
        },
        "02" => Behaviour {
            reject: Some(ProviderError::not_in_network()),
            ..Behaviour::default()
        },
        "03" => Behaviour {
            delivery: Delivery::None,
            ..Behaviour::default()
        },
        "04" => Behaviour {
            delivery: Delivery::Undeliverable,
            error: Some(undeliverable()),
            ..Behaviour::default()
        },
        "05" => Behaviour {
            transient_failures: 2,
            ..Behaviour::default()
        },
        _ => Behaviour::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table() {
        let delivered = Behaviour::default();
        assert_eq!(delivered.delivery, Delivery::Delivered);
        assert!(!delivered.read && delivered.reject.is_none());
        assert_eq!(delivered.transient_failures, 0);

        assert_eq!(default_behaviour("447700900000"), delivered);
        let read = default_behaviour("447700900001");
        assert!(read.read);
        assert_eq!(read.delivery, Delivery::Delivered);
        let rejected = default_behaviour("447700900002");
        assert_eq!(
            rejected.reject.as_ref().map(|e| e.code),
            Some(1300),
            "{rejected:?}"
        );
        assert_eq!(default_behaviour("447700900003").delivery, Delivery::None);
        let undeliverable = default_behaviour("447700900004");
        assert_eq!(undeliverable.delivery, Delivery::Undeliverable);
        assert_eq!(undeliverable.undeliverable_error().code, 1330);
        let flaky = default_behaviour("447700900005");
        assert_eq!(flaky.transient_failures, 2);
        assert_eq!(flaky.delivery, Delivery::Delivered);
        assert!(flaky.reject.is_none());
    }

    #[test]
    fn anything_else_is_delivered() {
        for to in [
            "447700900006",
            "447700900099",
            "447700900010",
            "1",
            "",
            "ab",
            "é",
        ] {
            assert_eq!(default_behaviour(to), Behaviour::default(), "{to}");
        }
        // Ids follow the same table as numbers.
        assert!(default_behaviour("psid-1234501").read);
        assert!(default_behaviour("02").reject.is_some());
        // A multi-byte character before the suffix does not matter.
        assert!(default_behaviour("é03").delivery == Delivery::None);
        // Nor does one in it.
        assert_eq!(default_behaviour("0é"), Behaviour::default());
    }

    #[test]
    fn behaviour_json() {
        let b: Behaviour = serde_json::from_str(
            r#"{"reject":{"code":1300,"reason":"no"},"transient_failures":2,
                "delivery":"none","read":true,"delay_ms":50,
                "error":{"code":1330,"reason":"x"},"price":"0.05"}"#,
        )
        .expect("parse");
        assert_eq!(b.delivery, Delivery::None);
        assert_eq!(b.delay_ms, Some(50));
        assert_eq!(b.usage(Channel::Sms).price, "0.05");
        let back: Behaviour =
            serde_json::from_value(serde_json::to_value(&b).expect("ser")).expect("de");
        assert_eq!(back, b);

        let empty: Behaviour = serde_json::from_str("{}").expect("parse");
        assert_eq!(empty, Behaviour::default());
        assert_eq!(
            serde_json::to_string(&empty).expect("ser"),
            r#"{"delivery":"delivered"}"#
        );
        assert!(serde_json::from_str::<Behaviour>(r#"{"delay":5}"#).is_err());
    }

    #[test]
    fn prices() {
        let b = Behaviour::default();
        assert_eq!(b.usage(Channel::Sms).price, "0.0333");
        assert_eq!(b.usage(Channel::Mms).price, "0.0550");
        assert_eq!(b.usage(Channel::Whatsapp).price, "0.0150");
        assert_eq!(b.usage(Channel::Messenger).price, "0.0010");
        assert_eq!(b.usage(Channel::ViberServiceMsg).price, "0.0120");
        assert_eq!(b.usage(Channel::Sms).currency, "EUR");
    }
}
