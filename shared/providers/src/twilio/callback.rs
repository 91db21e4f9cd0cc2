//! Twilio's messaging webhooks, read once their signature is verified.
//!
//! - Status callbacks (hook `""` or `"status"`): the parameters of
//!   <https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks>
//!   (`MessageSid`, `MessageStatus`, `ErrorCode`). `queued`, `sending`,
//!   `sent` and the like report nothing new: we report `submitted` when
//!   Twilio accepts the send. `delivered` and `read` (WhatsApp) are
//!   receipts; `undelivered` and `failed` are `undeliverable` with
//!   `ErrorCode` mapped by [`super::errors`]. Twilio's status callbacks
//!   carry no time, so a receipt is dated when it arrives; nor a price,
//!   so no usage (the sender computes it).
//! - Incoming messages (hook `"inbound"`): the parameters of
//!   <https://www.twilio.com/docs/messaging/guides/webhook-request>
//!   (`MessageSid`, `From`, `To`, `Body`, `NumMedia`, `MediaUrl0`,
//!   `MediaContentType0`). `whatsapp:` addresses are the WhatsApp
//!   channel; otherwise a message with media is MMS, one without SMS.

use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::record::{MessageStatus, now_ms};
use serde_json::{Value, json};

use super::errors;
use crate::{CallbackError, CallbackEvent, Inbound, digits};

/// A webhook's form parameters.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value of `name`, if present.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, present and not empty, or `Malformed`.
    fn required(&self, name: &str) -> Result<&str, CallbackError> {
        self.get(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| CallbackError::Malformed(format!("`{name}` is missing")))
    }
}

/// The events of a status callback: none, or one receipt.
pub fn status(params: &Params) -> Result<Vec<CallbackEvent>, CallbackError> {
    let sid = params.required("MessageSid")?;
    let value = params.required("MessageStatus")?;
    let (status, error) = match value.trim() {
        "delivered" => (MessageStatus::Delivered, None),
        "read" => (MessageStatus::Read, None),
        "undelivered" | "failed" => {
            let code = params
                .get("ErrorCode")
                .and_then(|c| c.trim().parse::<u32>().ok());
            (
                MessageStatus::Undeliverable,
                Some(errors::delivery_error(code)),
            )
        }
        // queued, accepted, scheduled, sending, sent (we reported
        // `submitted` on acceptance), and anything Twilio adds later.
        _ => return Ok(Vec::new()),
    };
    Ok(vec![CallbackEvent::Receipt(Receipt {
        provider_message_id: sid.to_owned(),
        status,
        at_ms: now_ms(),
        error,
        usage: None,
    })])
}

/// The event of an incoming message.
pub fn inbound(params: &Params) -> Result<Vec<CallbackEvent>, CallbackError> {
    let sid = params.required("MessageSid")?;
    let from = params.required("From")?;
    let to = params.required("To")?;
    let media = media_count(params);
    let whatsapp = [from, to]
        .iter()
        .any(|a| a.trim_start().to_ascii_lowercase().starts_with("whatsapp:"));
    let channel = if whatsapp {
        Channel::Whatsapp
    } else if media > 0 {
        Channel::Mms
    } else {
        Channel::Sms
    };
    Ok(vec![CallbackEvent::Inbound(Inbound {
        provider_message_id: sid.to_owned(),
        channel,
        from: digits(from),
        to: digits(to),
        timestamp_ms: now_ms(),
        message: message(params, media),
    })])
}

/// `NumMedia`, 0 when absent or unreadable.
fn media_count(params: &Params) -> u32 {
    params
        .get("NumMedia")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The message as our inbound webhook shows it: the first media file (its
/// type from `MediaContentType0`, the body as its caption), or the text.
fn message(params: &Params, media: u32) -> Value {
    let body = params.get("Body").unwrap_or_default();
    let url = params.get("MediaUrl0").filter(|u| !u.is_empty());
    let Some(url) = url.filter(|_| media > 0) else {
        return json!({"content": {"type": "text", "text": body}});
    };
    let mime = params
        .get("MediaContentType0")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let kind = match mime.split('/').next().unwrap_or_default() {
        "image" => "image",
        "audio" => "audio",
        "video" => "video",
        _ => "file",
    };
    let mut file = json!({"url": url});
    if !body.is_empty() {
        file["caption"] = Value::from(body);
    }
    json!({"content": {"type": kind, kind: file}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn receipt(events: &[CallbackEvent]) -> &Receipt {
        match events {
            [CallbackEvent::Receipt(r)] => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses() {
        for quiet in ["queued", "accepted", "sending", "sent", "scheduled", "new"] {
            let p = params(&[("MessageSid", "SM1"), ("MessageStatus", quiet)]);
            assert_eq!(status(&p), Ok(Vec::new()), "{quiet}");
        }
        let p = params(&[("MessageSid", "SM1"), ("MessageStatus", "delivered")]);
        let events = status(&p).expect("events");
        let r = receipt(&events);
        assert_eq!(
            (r.status, r.error.as_ref()),
            (MessageStatus::Delivered, None)
        );
        assert_eq!(r.provider_message_id, "SM1");
        assert!(r.usage.is_none() && r.at_ms > 0);
        let p = params(&[("MessageSid", "SM1"), ("MessageStatus", "read")]);
        assert_eq!(
            receipt(&status(&p).expect("events")).status,
            MessageStatus::Read
        );
        for failed in ["undelivered", "failed"] {
            let p = params(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", failed),
                ("ErrorCode", "30006"),
            ]);
            let events = status(&p).expect("events");
            let r = receipt(&events);
            assert_eq!(r.status, MessageStatus::Undeliverable);
            assert_eq!(r.error.as_ref().map(|e| e.code), Some(1310));
        }
        let p = params(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "failed"),
            ("ErrorCode", "x"),
        ]);
        let events = status(&p).expect("events");
        assert_eq!(receipt(&events).error.as_ref().map(|e| e.code), Some(1330));
    }

    #[test]
    fn malformed() {
        for p in [
            params(&[("MessageStatus", "delivered")]),
            params(&[("MessageSid", ""), ("MessageStatus", "delivered")]),
            params(&[("MessageSid", "SM1")]),
            params(&[]),
        ] {
            assert!(matches!(status(&p), Err(CallbackError::Malformed(_))));
        }
        let p = params(&[("From", "+1"), ("To", "+2"), ("Body", "hi")]);
        assert!(matches!(inbound(&p), Err(CallbackError::Malformed(_))));
        let p = params(&[("MessageSid", "SM1"), ("To", "+2")]);
        assert!(matches!(inbound(&p), Err(CallbackError::Malformed(_))));
    }

    fn the_inbound(events: Vec<CallbackEvent>) -> Inbound {
        match events.as_slice() {
            [CallbackEvent::Inbound(i)] => i.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inbound_channels_and_content() {
        let i = the_inbound(
            inbound(&params(&[
                ("MessageSid", "SM1"),
                ("From", "whatsapp:+447700900123"),
                ("To", "whatsapp:+447700900001"),
                ("Body", "hi"),
                ("NumMedia", "0"),
            ]))
            .expect("events"),
        );
        assert_eq!(i.channel, Channel::Whatsapp);
        assert_eq!(
            (i.from.as_str(), i.to.as_str()),
            ("447700900123", "447700900001")
        );
        assert_eq!(
            i.message,
            json!({"content": {"type": "text", "text": "hi"}})
        );

        let i = the_inbound(
            inbound(&params(&[
                ("MessageSid", "MM1"),
                ("From", "+447700900123"),
                ("To", "+447700900001"),
                ("Body", ""),
                ("NumMedia", "1"),
                ("MediaUrl0", "https://api.twilio.com/media/1"),
                ("MediaContentType0", "image/jpeg"),
            ]))
            .expect("events"),
        );
        assert_eq!(i.channel, Channel::Mms);
        assert_eq!(
            i.message,
            json!({"content": {"type": "image", "image": {"url": "https://api.twilio.com/media/1"}}})
        );

        let i = the_inbound(
            inbound(&params(&[
                ("MessageSid", "MM2"),
                ("From", "whatsapp:+447700900123"),
                ("To", "whatsapp:+447700900001"),
                ("Body", "the contract"),
                ("NumMedia", "1"),
                ("MediaUrl0", "https://m/2"),
                ("MediaContentType0", "application/pdf"),
            ]))
            .expect("events"),
        );
        assert_eq!(
            i.message,
            json!({"content": {"type": "file", "file": {"url": "https://m/2", "caption": "the contract"}}})
        );

        let i = the_inbound(
            inbound(&params(&[
                ("MessageSid", "SM3"),
                ("From", "+447700900123"),
                ("To", "+447700900001"),
                ("Body", "plain"),
                ("NumMedia", "zero"),
            ]))
            .expect("events"),
        );
        assert_eq!(i.channel, Channel::Sms);
    }
}
