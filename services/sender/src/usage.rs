//! What a send costs, estimated when the provider accepts it: the
//! configured `prices` per channel, per segment for SMS.
//!
//! Providers that report no price leave the estimate as the message's
//! usage; for SMS the encoding and segment count are ours either way, as
//! few providers report them. Only an SMS's text is counted (other content
//! is one segment's price).

use std::collections::BTreeMap;

use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::Usage;
use dispatch_providers::rules;

/// The estimated usage of `command` at `prices` (a channel without a
/// price costs `0`).
pub fn estimate(command: &SendCommand, prices: &BTreeMap<Channel, String>) -> Usage {
    let unit = prices
        .get(&command.channel)
        .cloned()
        .unwrap_or_else(|| "0".into());
    if command.channel != Channel::Sms {
        return Usage::eur(unit);
    }
    let text = command
        .message
        .message
        .as_ref()
        .and_then(|m| m.content.as_ref())
        .and_then(|c| c.text.as_deref())
        .unwrap_or_default();
    let parts = rules::sms_parts(text);
    let prices = vec![Usage::eur(unit); parts.segments as usize];
    Usage {
        encoding: Some(parts.encoding.as_str().to_owned()),
        segments: Some(parts.segments),
        ..Usage::total(&prices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command(channel: Channel, content: serde_json::Value) -> SendCommand {
        SendCommand {
            workflow_id: uuid::Uuid::nil(),
            message_uuid: uuid::Uuid::nil(),
            channel,
            account: "acct".into(),
            application_id: None,
            message: serde_json::from_value(json!({ "message": { "content": content } }))
                .expect("message"),
            paced: None,
        }
    }

    fn prices() -> BTreeMap<Channel, String> {
        BTreeMap::from([
            (Channel::Sms, "0.0333".to_owned()),
            (Channel::Whatsapp, "0.05".to_owned()),
        ])
    }

    fn text(text: &str) -> serde_json::Value {
        json!({ "type": "text", "text": text })
    }

    #[test]
    fn other_channels_cost_their_price_once() {
        let usage = estimate(
            &command(Channel::Whatsapp, text(&"x".repeat(500))),
            &prices(),
        );
        assert_eq!(usage, Usage::eur("0.05"));
    }

    #[test]
    fn a_channel_without_a_price_costs_nothing() {
        let usage = estimate(&command(Channel::ViberServiceMsg, text("hi")), &prices());
        assert_eq!(usage, Usage::eur("0"));
        let sms = estimate(&command(Channel::Sms, text("hi")), &BTreeMap::new());
        assert_eq!(sms.segments, Some(1));
        assert_eq!(sms.price, "0.00");
    }

    #[test]
    fn sms_costs_per_segment_with_its_encoding() {
        let one = estimate(&command(Channel::Sms, text(&"a".repeat(160))), &prices());
        assert_eq!(
            (one.price.as_str(), one.encoding.as_deref(), one.segments),
            ("0.0333", Some("gsm7"), Some(1))
        );
        let two = estimate(&command(Channel::Sms, text(&"a".repeat(161))), &prices());
        assert_eq!((two.price.as_str(), two.segments), ("0.0666", Some(2)));
        let ucs2 = estimate(&command(Channel::Sms, text(&"☂".repeat(71))), &prices());
        assert_eq!(
            (ucs2.price.as_str(), ucs2.encoding.as_deref(), ucs2.segments),
            ("0.0666", Some("ucs2"), Some(2))
        );
        assert_eq!(ucs2.currency, "EUR");
    }

    #[test]
    fn sms_without_text_is_one_segment() {
        let image = json!({ "type": "image", "image": { "url": "https://a.example/i.png" } });
        let usage = estimate(&command(Channel::Sms, image), &prices());
        assert_eq!((usage.price.as_str(), usage.segments), ("0.0333", Some(1)));
    }
}
