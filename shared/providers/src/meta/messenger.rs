//! Messenger through the Send API: our message as a send request, and the
//! Page webhook's `messaging` events as our events.
//!
//! Requests follow the Send API reference
//! (<https://developers.facebook.com/docs/messenger-platform/reference/send-api/>)
//! and its message tags
//! (<https://developers.facebook.com/docs/messenger-platform/send-messages/message-tags>);
//! webhooks follow the `message_deliveries`, `message_reads` and
//! `messages` event references
//! (<https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/>).

use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::message::{ContentType, Media, MessengerCategory, MessengerOptions};
use dispatch_model::record::{MessageStatus, now_ms};
use serde_json::{Map, Value, json};

use super::webhook::{integer, items, text};
use crate::{CallbackEvent, Inbound, SendError, address};

fn missing(field: &str) -> SendError {
    SendError::permanent(1010, format!("Missing params: `{field}` is required"))
}

/// The JSON body of `POST /{version}/{page_id}/messages`:
/// `{"recipient":{"id":PSID},"messaging_type":…,"tag":…,"message":{…}}`.
///
/// `messaging_type` follows our `messenger.category`: `response` (the
/// default) → `RESPONSE`, `update` → `UPDATE`, `message_tag` →
/// `MESSAGE_TAG` with its `tag` (error 1021 without one). Text is
/// `message.text`; media are attachments by URL (Messenger has no
/// captions); custom content is Meta's message object as is. Messenger has
/// no templates of ours (error 1020).
pub fn body(command: &SendCommand) -> Result<Value, SendError> {
    let psid = address(&command.message.to);
    if psid.is_empty() {
        return Err(missing("to.id"));
    }
    let body = command.message.message.as_ref();
    let content = body
        .and_then(|m| m.content.as_ref())
        .ok_or_else(|| missing("message.content"))?;
    let message = match content.kind {
        Some(ContentType::Text) => {
            let text = content
                .text
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| missing("message.content.text"))?;
            json!({ "text": text })
        }
        Some(ContentType::Image) => attachment("image", content.image.as_ref(), "image")?,
        Some(ContentType::Audio) => attachment("audio", content.audio.as_ref(), "audio")?,
        Some(ContentType::Video) => attachment("video", content.video.as_ref(), "video")?,
        Some(ContentType::File) => attachment("file", content.file.as_ref(), "file")?,
        Some(ContentType::Custom) => Value::Object(
            content
                .custom
                .clone()
                .ok_or_else(|| missing("message.content.custom"))?,
        ),
        Some(ContentType::Template) => {
            return Err(SendError::permanent(
                1020,
                "Invalid params: Messenger takes text, image, audio, video, file or custom content, not templates",
            ));
        }
        None => return Err(missing("message.content.type")),
    };
    let mut out = Map::new();
    out.insert("recipient".into(), json!({ "id": psid }));
    messaging_type(body.and_then(|b| b.messenger.as_ref()), &mut out)?;
    out.insert("message".into(), message);
    Ok(Value::Object(out))
}

/// `messaging_type`, and `tag` with `MESSAGE_TAG` only.
fn messaging_type(
    options: Option<&MessengerOptions>,
    out: &mut Map<String, Value>,
) -> Result<(), SendError> {
    let kind = match options.and_then(|o| o.category) {
        None | Some(MessengerCategory::Response) => "RESPONSE",
        Some(MessengerCategory::Update) => "UPDATE",
        Some(MessengerCategory::MessageTag) => {
            let tag = options
                .and_then(|o| o.tag.as_deref())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    SendError::permanent(1021, "Invalid tag: `message_tag` needs `messenger.tag`")
                })?;
            out.insert("tag".into(), tag.into());
            "MESSAGE_TAG"
        }
    };
    out.insert("messaging_type".into(), kind.into());
    Ok(())
}

fn attachment(kind: &str, media: Option<&Media>, field: &str) -> Result<Value, SendError> {
    let url = media
        .and_then(|m| m.url.as_deref())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| missing(&format!("message.content.{field}.url")))?;
    Ok(json!({
        "attachment": {"type": kind, "payload": {"url": url, "is_reusable": false}}
    }))
}

/// Our events in a `page` notification: every `messaging` event of every
/// entry. Other events (postbacks, reactions, echoes, handovers) are
/// skipped.
pub fn events(body: &Value) -> Vec<CallbackEvent> {
    items(body, "entry")
        .flat_map(|entry| items(entry, "messaging"))
        .flat_map(event)
        .collect()
}

/// The `id` of `value[key]`, a string (or a number, leniently).
fn id(value: &Value, key: &str) -> Option<String> {
    match value.get(key)?.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn event(messaging: &Value) -> Vec<CallbackEvent> {
    let at_ms = integer(messaging, "timestamp");
    if let Some(delivery) = messaging.get("delivery") {
        return delivered(delivery, at_ms);
    }
    let (Some(user), Some(page)) = (id(messaging, "sender"), id(messaging, "recipient")) else {
        return Vec::new();
    };
    if let Some(read) = messaging.get("read") {
        return read_up_to(read, user, page, at_ms).into_iter().collect();
    }
    match messaging.get("message") {
        Some(message) => inbound(message, user, page, at_ms),
        None => Vec::new(),
    }
}

/// `delivery.mids`: one `delivered` receipt per message id. (Older
/// clients send only a watermark; those deliveries have no event.)
fn delivered(delivery: &Value, at_ms: Option<i64>) -> Vec<CallbackEvent> {
    let at_ms = at_ms
        .or_else(|| integer(delivery, "watermark"))
        .unwrap_or_else(now_ms);
    items(delivery, "mids")
        .filter_map(Value::as_str)
        .filter(|mid| !mid.is_empty())
        .map(|mid| {
            CallbackEvent::Receipt(Receipt {
                provider_message_id: mid.to_owned(),
                status: MessageStatus::Delivered,
                at_ms,
                error: None,
                usage: None,
            })
        })
        .collect()
}

/// `read.watermark`: everything the page sent the user until then was
/// read. It names no message: ingest matches it to the last one sent.
fn read_up_to(
    read: &Value,
    user: String,
    page: String,
    at_ms: Option<i64>,
) -> Option<CallbackEvent> {
    let watermark = integer(read, "watermark")?;
    Some(CallbackEvent::ReadUpTo {
        channel: Channel::Messenger,
        ours: page,
        user,
        up_to_ms: watermark,
        at_ms: at_ms.unwrap_or(watermark),
    })
}

/// A user's message: its text, and each of its attachments, as inbound
/// messages. The first keeps Meta's `mid`; further ones are `{mid}:{n}`,
/// so that each is told apart downstream. Echoes of our own messages are
/// skipped.
fn inbound(message: &Value, user: String, page: String, at_ms: Option<i64>) -> Vec<CallbackEvent> {
    if message.get("is_echo").and_then(Value::as_bool) == Some(true) {
        return Vec::new();
    }
    let Some(mid) = text(message, "mid").filter(|m| !m.is_empty()) else {
        return Vec::new();
    };
    let timestamp_ms = at_ms.unwrap_or_else(now_ms);
    let text = text(message, "text").map(|t| json!({"type": "text", "text": t}));
    let attachments = items(message, "attachments").filter_map(attachment_content);
    text.into_iter()
        .chain(attachments)
        .enumerate()
        .map(|(n, content)| {
            CallbackEvent::Inbound(Inbound {
                provider_message_id: if n == 0 {
                    mid.to_owned()
                } else {
                    format!("{mid}:{n}")
                },
                channel: Channel::Messenger,
                from: user.clone(),
                to: page.clone(),
                timestamp_ms,
                message: json!({ "content": content }),
            })
        })
        .collect()
}

/// An attachment as the spec's content: media by their URL, a location
/// by its coordinates; others (templates, fallbacks) are skipped.
fn attachment_content(attachment: &Value) -> Option<Value> {
    let kind = text(attachment, "type")?;
    let payload = attachment.get("payload")?;
    match kind {
        "image" | "audio" | "video" | "file" => {
            let url = text(payload, "url")?;
            let mut content = Map::new();
            content.insert("type".into(), kind.into());
            content.insert(kind.into(), json!({ "url": url }));
            Some(Value::Object(content))
        }
        "location" => {
            let coordinates = payload.get("coordinates")?;
            let coordinate = |key: &str| {
                coordinates
                    .get(key)
                    .filter(|v| v.is_number())
                    .map(Value::to_string)
            };
            Some(json!({"type": "location", "location": {
                "lat": coordinate("lat")?,
                "long": coordinate("long")?,
            }}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound_ids(events: &[CallbackEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                CallbackEvent::Inbound(i) => Some(i.provider_message_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn attachments_and_echoes() {
        let body = json!({"object": "page", "entry": [{"id": "P", "time": 1, "messaging": [
            {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 5,
             "message": {"mid": "m_1", "attachments": [
                {"type": "image", "payload": {"url": "https://cdn/x.jpg"}},
                {"type": "location", "payload": {"coordinates": {"lat": 1.5, "long": 2}}},
                {"type": "fallback", "payload": {}}]}},
            {"sender": {"id": "P"}, "recipient": {"id": "U"}, "timestamp": 6,
             "message": {"mid": "m_2", "is_echo": true, "text": "ours"}},
            {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 7, "postback": {"payload": "x"}}
        ]}]});
        let events = events(&body);
        assert_eq!(inbound_ids(&events), ["m_1", "m_1:1"]);
        let CallbackEvent::Inbound(location) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(
            location.message,
            json!({"content": {"type": "location", "location": {"lat": "1.5", "long": "2"}}})
        );
    }

    #[test]
    fn odd_notifications_make_no_events_and_no_panics() {
        for body in [
            json!(null),
            json!({"entry": [{"messaging": [1, "x", null]}]}),
            json!({"entry": [{"messaging": [{"delivery": {"watermark": 5}}]}]}),
            json!({"entry": [{"messaging": [{"delivery": {"mids": [1, ""]}}]}]}),
            json!({"entry": [{"messaging": [{"sender": {"id": "U"}, "read": {"watermark": 5}}]}]}),
            json!({"entry": [{"messaging": [{"sender": {"id": "U"}, "recipient": {"id": "P"}, "read": {}}]}]}),
            json!({"entry": [{"messaging": [{"sender": {"id": "U"}, "recipient": {"id": "P"}, "message": {"text": "no mid"}}]}]}),
        ] {
            assert_eq!(events(&body), vec![], "{body}");
        }
    }
}
