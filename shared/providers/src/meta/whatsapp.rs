//! WhatsApp through the Cloud API: our message as a send request, and the
//! `messages` webhook as our events.
//!
//! Requests follow "Messages" in the Cloud API reference
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages>);
//! webhooks follow "Webhooks components"
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components>).

use dispatch_infra::config::ProviderSettings;
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::message::{Content, ContentType, Media, Template};
use dispatch_model::record::{MessageStatus, now_ms};
use serde_json::{Map, Value, json};

use super::errors;
use super::webhook::{integer, items, text};
use crate::rules::{check_template, template_parameters};
use crate::{CallbackEvent, Inbound, SendError, address, digits};

/// The template language when the message names no `whatsapp.locale`.
pub const DEFAULT_LOCALE: &str = "en_US";

/// Error 1010 for a field our message lacks.
fn missing(field: &str) -> SendError {
    SendError::permanent(1010, format!("Missing params: `{field}` is required"))
}

/// The JSON body of `POST /{version}/{phone_number_id}/messages`.
///
/// `{"messaging_product":"whatsapp","recipient_type":"individual","to":…,
/// "type":…, <type>: {…}}`: text as `text.body` (no link previews), media
/// by `link` with their caption (audio has none), files as `document` with
/// the URL's last segment as `filename`, templates by name and language
/// (`whatsapp.locale`, `en-GB` → `en_GB`; `en_US` by default) with their
/// parameters as one `body` component. Custom content is
/// Meta's own message object; `messaging_product` and `to` are ours.
pub fn body(command: &SendCommand, settings: &ProviderSettings) -> Result<Value, SendError> {
    let to = digits(&address(&command.message.to));
    if to.is_empty() {
        return Err(missing("to.number"));
    }
    let message = command.message.message.as_ref();
    let content = message
        .and_then(|m| m.content.as_ref())
        .ok_or_else(|| missing("message.content"))?;
    // Our locales are BCP 47 (`en-GB`), Meta's language codes `en_GB`.
    let locale = message
        .and_then(|m| m.whatsapp.as_ref())
        .and_then(|w| w.locale.as_deref())
        .filter(|l| !l.is_empty())
        .unwrap_or(DEFAULT_LOCALE)
        .replace('-', "_");
    let (kind, object) = match content.kind {
        Some(ContentType::Text) => ("text", text_object(content)?),
        Some(ContentType::Image) => ("image", media(content.image.as_ref(), "image", true)?),
        Some(ContentType::Audio) => ("audio", media(content.audio.as_ref(), "audio", false)?),
        Some(ContentType::Video) => ("video", media(content.video.as_ref(), "video", true)?),
        Some(ContentType::File) => ("document", document(content.file.as_ref())?),
        Some(ContentType::Template) => (
            "template",
            template(settings, content.template.as_ref(), &locale)?,
        ),
        Some(ContentType::Custom) => return custom(content, &to),
        None => return Err(missing("message.content.type")),
    };
    let mut body = Map::new();
    body.insert("messaging_product".into(), "whatsapp".into());
    body.insert("recipient_type".into(), "individual".into());
    body.insert("to".into(), to.into());
    body.insert("type".into(), kind.into());
    body.insert(kind.into(), object);
    Ok(Value::Object(body))
}

fn text_object(content: &Content) -> Result<Value, SendError> {
    let body = content
        .text
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing("message.content.text"))?;
    Ok(json!({"preview_url": false, "body": body}))
}

fn media_link<'a>(media: Option<&'a Media>, field: &str) -> Result<&'a str, SendError> {
    media
        .and_then(|m| m.url.as_deref())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| missing(&format!("message.content.{field}.url")))
}

/// `{"link": url, "caption": …}`; the caption only where Meta takes one.
fn media(media: Option<&Media>, field: &str, with_caption: bool) -> Result<Value, SendError> {
    let mut object = Map::new();
    object.insert("link".into(), media_link(media, field)?.into());
    let caption = media
        .and_then(|m| m.caption.as_deref())
        .filter(|c| with_caption && !c.is_empty());
    if let Some(caption) = caption {
        object.insert("caption".into(), caption.into());
    }
    Ok(Value::Object(object))
}

/// A file as Meta's `document`, named after its URL so that the user sees
/// a file name rather than "Untitled".
fn document(file: Option<&Media>) -> Result<Value, SendError> {
    let mut object = media(file, "file", true)?;
    let name = media_link(file, "file").ok().and_then(filename);
    if let (Some(name), Some(map)) = (name, object.as_object_mut()) {
        map.insert("filename".into(), name.into());
    }
    Ok(object)
}

/// The last path segment of `link`, percent-decoded; `None` when the URL
/// ends in `/` or does not parse.
fn filename(link: &str) -> Option<String> {
    let url = url::Url::parse(link).ok()?;
    let last = url.path_segments()?.next_back()?;
    (!last.is_empty()).then(|| percent_decode(last))
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| byte == b'%')
            .and_then(|h| hex::decode(h).ok());
        match escaped.as_deref() {
            Some(&[decoded]) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A template by name (the part of our `namespace:name` after the last
/// `:`) and language, its parameters as text parameters of the `body`
/// component. Error 1022, before any request, when the body stored with
/// the settings takes another number of parameters.
fn template(
    settings: &ProviderSettings,
    template: Option<&Template>,
    locale: &str,
) -> Result<Value, SendError> {
    let template = template.ok_or_else(|| missing("message.content.template"))?;
    let full = template
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("message.content.template.name"))?;
    check_template(settings, template).map_err(SendError::Permanent)?;
    let name = full.rsplit(':').next().unwrap_or(full);
    if name.is_empty() {
        return Err(SendError::permanent(
            1022,
            format!("Invalid template: `{full}` names no template after its namespace"),
        ));
    }
    let mut object = json!({
        "name": name,
        "language": {"policy": "deterministic", "code": locale},
    });
    let parameters: Vec<Value> = template_parameters(template)
        .into_iter()
        .map(|p| json!({"type": "text", "text": p}))
        .collect();
    if !parameters.is_empty() {
        object["components"] = json!([{"type": "body", "parameters": parameters}]);
    }
    Ok(object)
}

fn custom(content: &Content, to: &str) -> Result<Value, SendError> {
    let mut object = content
        .custom
        .clone()
        .ok_or_else(|| missing("message.content.custom"))?;
    object.insert("messaging_product".into(), "whatsapp".into());
    object.insert("to".into(), to.into());
    object
        .entry("recipient_type")
        .or_insert_with(|| "individual".into());
    Ok(Value::Object(object))
}

/// Our events in a `whatsapp_business_account` notification: every
/// status and inbound message of every change of every entry.
/// `media_base` is `{base}/{version}`, to name inbound media by their
/// Graph URL.
pub fn events(body: &Value, media_base: &str) -> Vec<CallbackEvent> {
    let mut events = Vec::new();
    for entry in items(body, "entry") {
        for change in items(entry, "changes") {
            let field = text(change, "field").unwrap_or("messages");
            let Some(value) = change.get("value").filter(|_| field == "messages") else {
                continue;
            };
            events.extend(items(value, "statuses").filter_map(status));
            let ours = ours(value);
            events.extend(items(value, "messages").filter_map(|m| inbound(m, &ours, media_base)));
        }
    }
    events
}

/// Unix seconds (a string, in Meta's webhooks) as ms; now when absent.
fn at_ms(value: &Value) -> i64 {
    integer(value, "timestamp")
        .and_then(|s| s.checked_mul(1000))
        .unwrap_or_else(now_ms)
}

/// A status of one of our messages. `sent` makes no event: we report
/// `submitted` when Meta accepts the send. `failed` carries its first
/// error, mapped through [`errors::TABLE`].
fn status(status: &Value) -> Option<CallbackEvent> {
    let id = text(status, "id").filter(|id| !id.is_empty())?;
    let (state, error) = match text(status, "status")? {
        "delivered" => (MessageStatus::Delivered, None),
        "read" => (MessageStatus::Read, None),
        "failed" => (
            MessageStatus::Undeliverable,
            Some(errors::failed_status(status.get("errors"))),
        ),
        _ => return None,
    };
    Some(CallbackEvent::Receipt(Receipt {
        provider_message_id: id.to_owned(),
        status: state,
        at_ms: at_ms(status),
        error,
        usage: None,
    }))
}

/// Our number, as digits: the display number of the notification's
/// metadata (its id when the number is missing).
fn ours(value: &Value) -> String {
    let metadata = value.get("metadata").unwrap_or(&Value::Null);
    let number = text(metadata, "display_phone_number")
        .or_else(|| text(metadata, "phone_number_id"))
        .unwrap_or_default();
    digits(number)
}

fn inbound(message: &Value, ours: &str, media_base: &str) -> Option<CallbackEvent> {
    let id = text(message, "id").filter(|id| !id.is_empty())?;
    let from = digits(text(message, "from")?);
    if from.is_empty() || ours.is_empty() {
        return None;
    }
    let content = content(message, media_base)?;
    Some(CallbackEvent::Inbound(Inbound {
        provider_message_id: id.to_owned(),
        channel: Channel::Whatsapp,
        from,
        to: ours.to_owned(),
        timestamp_ms: at_ms(message),
        message: json!({ "content": content }),
    }))
}

/// An inbound message's content as the spec's inbound webhook shows it.
/// The Cloud API sends media as ids, not URLs: `url` is the media's Graph
/// URL, `{base}/{version}/{media id}`, which answers (with our access
/// token) the media's download URL. Stickers are images; quick-reply
/// buttons and interactive replies are the text of the choice. Other types
/// (reactions, contacts, orders…) have no equivalent and are skipped.
fn content(message: &Value, media_base: &str) -> Option<Value> {
    let kind = text(message, "type")?;
    let object = message.get(kind)?;
    match kind {
        "text" => text_content(text(object, "body")?),
        "image" | "sticker" => media_content("image", object, media_base),
        "audio" => media_content("audio", object, media_base),
        "video" => media_content("video", object, media_base),
        "document" => media_content("file", object, media_base),
        "location" => location(object),
        "button" => text_content(text(object, "text")?),
        "interactive" => {
            let reply = object
                .get("button_reply")
                .or_else(|| object.get("list_reply"))?;
            text_content(text(reply, "title")?)
        }
        _ => None,
    }
}

fn text_content(text: &str) -> Option<Value> {
    Some(json!({"type": "text", "text": text}))
}

fn media_content(ours: &str, object: &Value, media_base: &str) -> Option<Value> {
    let id = text(object, "id").filter(|id| !id.is_empty())?;
    let mut media = Map::new();
    media.insert("url".into(), format!("{media_base}/{id}").into());
    if let Some(caption) = text(object, "caption") {
        media.insert("caption".into(), caption.into());
    }
    let mut content = Map::new();
    content.insert("type".into(), ours.into());
    content.insert(ours.into(), Value::Object(media));
    Some(Value::Object(content))
}

/// Meta's `latitude`/`longitude` numbers as the spec's `lat`/`long`
/// strings, with the name, address and URL when given.
fn location(object: &Value) -> Option<Value> {
    let coordinate = |key: &str| match object.get(key)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    let mut location = Map::new();
    location.insert("lat".into(), coordinate("latitude")?.into());
    location.insert("long".into(), coordinate("longitude")?.into());
    for key in ["name", "address", "url"] {
        if let Some(v) = text(object, key) {
            location.insert(key.into(), v.into());
        }
    }
    Some(json!({"type": "location", "location": location}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        assert_eq!(
            filename("https://example.com/files/Annual%20report.pdf?x=1").as_deref(),
            Some("Annual report.pdf")
        );
        assert_eq!(filename("https://example.com/a/").as_deref(), None);
        assert_eq!(filename("not a url"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%+1x"), "%+1x");
        assert_eq!(percent_decode("%C3%A9t%C3%A9"), "été");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn odd_notifications_make_no_events_and_no_panics() {
        for body in [
            json!(null),
            json!([]),
            json!({"entry": 5}),
            json!({"entry": [{"changes": [{"value": 1}]}]}),
            json!({"entry": [{"changes": [{"field": "messages", "value": {"statuses": [{"id": 1}], "messages": [{"id": "x"}]}}]}]}),
            json!({"entry": [{"changes": [{"field": "messages", "value": {"statuses": [{"id": "x", "status": "deleted"}]}}]}]}),
            json!({"entry": [{"changes": [{"field": "account_update", "value": {"statuses": [{"id": "x", "status": "read"}]}}]}]}),
            json!({"entry": [{"changes": [{"value": {"metadata": {}, "messages": [{"id": "x", "from": "1", "type": "text", "text": {"body": "hi"}}]}}]}]}),
            json!({"entry": [{"changes": [{"value": {"metadata": {"display_phone_number": "1"}, "messages": [{"id": "x", "from": "2", "type": "reaction", "reaction": {}}]}}]}]}),
        ] {
            assert_eq!(events(&body, "http://m/v21.0"), vec![], "{body}");
        }
    }

    #[test]
    fn inbound_contents() {
        let base = "https://graph.facebook.com/v21.0";
        let message = |kind: &str, object: Value| json!({"type": kind, kind: object});
        assert_eq!(
            content(
                &message(
                    "document",
                    json!({"id": "77", "caption": "c", "mime_type": "application/pdf"})
                ),
                base
            ),
            Some(
                json!({"type": "file", "file": {"url": "https://graph.facebook.com/v21.0/77", "caption": "c"}})
            )
        );
        assert_eq!(
            content(&message("sticker", json!({"id": "5"})), base),
            Some(json!({"type": "image", "image": {"url": "https://graph.facebook.com/v21.0/5"}}))
        );
        assert_eq!(
            content(
                &message(
                    "location",
                    json!({"latitude": 51.5, "longitude": -0.08, "name": "N"})
                ),
                base
            ),
            Some(
                json!({"type": "location", "location": {"lat": "51.5", "long": "-0.08", "name": "N"}})
            )
        );
        assert_eq!(
            content(
                &message(
                    "interactive",
                    json!({"type": "list_reply", "list_reply": {"id": "1", "title": "Yes"}})
                ),
                base
            ),
            Some(json!({"type": "text", "text": "Yes"}))
        );
        assert_eq!(
            content(
                &message("button", json!({"payload": "p", "text": "Stop"})),
                base
            ),
            Some(json!({"type": "text", "text": "Stop"}))
        );
        assert_eq!(content(&message("image", json!({})), base), None);
    }
}
