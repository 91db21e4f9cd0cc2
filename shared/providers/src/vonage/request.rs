//! Our message as the body of "Send a message" (`POST /v1/messages`,
//! <https://developer.vonage.com/en/api/messages>).
//!
//! Our model is the Messages API v0.1's, so the mapping is mostly a
//! reshaping: `content.type` becomes `message_type`, the content's object
//! moves to the top level, `to`/`from` become plain strings, the
//! channel's options keep their names (`viber_service_msg` becomes
//! `viber_service`):
//!
//! ```json
//! {"message_type":"text","text":"…","to":"447700900000","from":"447700900001",
//!  "channel":"sms","client_ref":"<our message uuid>",
//!  "webhook_url":"https://…/callbacks/vonage/default-sms","webhook_version":"v1"}
//! ```
//!
//! Media (`image`, `audio`, `video`, `file`) carry `url`, and `caption`
//! where the channel's section of the reference has one (MMS; WhatsApp
//! image, video and file; Viber image). WhatsApp templates carry
//! `template: {name, parameters: [strings]}` and `whatsapp: {policy:
//! "deterministic", locale}`; `custom` is passed through.

use dispatch_infra::config::ProviderSettings;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::message::{Address, Content, ContentType, MessageBody, Template};
use dispatch_model::record::MessageError;
use serde_json::{Map, Value, json};

use super::channel_name;
use crate::rules::{check_template, template_parameters};

/// The locale of a WhatsApp template when the message names none.
pub const DEFAULT_LOCALE: &str = "en_US";

fn invalid(code: u32, reason: impl Into<String>) -> MessageError {
    MessageError {
        code,
        reason: reason.into(),
    }
}

/// The JSON body that sends `command`, its statuses going to
/// `webhook_url`. Error 1022 for a template that does not match its body
/// in `settings`, 1020 for a message without the content it names.
pub fn body(
    command: &SendCommand,
    settings: &ProviderSettings,
    webhook_url: &str,
) -> Result<Value, MessageError> {
    if let Some(v1) = command.message.v1.as_deref() {
        return v1_body(command, v1, settings, webhook_url);
    }
    let channel = command.channel;
    let message = command.message.message.as_ref();
    let content = message
        .and_then(|m| m.content.as_ref())
        .ok_or_else(|| invalid(1020, "Invalid params: the message has no content"))?;
    let mut body = content_fields(channel, content, settings)?;
    body.insert("to".into(), address(&command.message.to).into());
    body.insert("from".into(), address(&command.message.from).into());
    body.insert("channel".into(), channel_name(channel).into());
    body.insert("client_ref".into(), command.message_uuid.to_string().into());
    if !webhook_url.is_empty() {
        body.insert("webhook_url".into(), webhook_url.into());
        body.insert("webhook_version".into(), "v1".into());
    }
    if let Some(message) = message {
        channel_options(channel, content, message, &mut body);
    }
    Ok(Value::Object(body))
}

/// A message sent to us through the Messages API v1: forwarded as it
/// came, every field of `V1Message` (types our model only carries as
/// `custom`, `ttl`, `sms`, `rcs`, `context`, …; fields it does not know
/// were dropped when it was read), with our `client_ref` and webhook, and
/// without our extension `failover_condition`.
fn v1_body(
    command: &SendCommand,
    v1: &dispatch_model::v1::V1Message,
    settings: &ProviderSettings,
    webhook_url: &str,
) -> Result<Value, MessageError> {
    if let Some(template) = command
        .message
        .message
        .as_ref()
        .and_then(|m| m.content.as_ref())
        .and_then(|c| c.template.as_ref())
    {
        check_template(settings, template)?;
    }
    let mut v1 = v1.clone();
    v1.failover_condition = None;
    v1.failover = None;
    v1.client_ref = Some(command.message_uuid.to_string());
    v1.webhook_url = None;
    v1.webhook_version = None;
    let mut body = match serde_json::to_value(&v1) {
        Ok(Value::Object(body)) => body,
        _ => {
            return Err(invalid(
                1020,
                "Invalid params: the message cannot be written",
            ));
        }
    };
    if !webhook_url.is_empty() {
        body.insert("webhook_url".into(), webhook_url.into());
        body.insert("webhook_version".into(), "v1".into());
    }
    Ok(Value::Object(body))
}

/// A number as E.164 digits, an id as given. A "number" without digits
/// (an alphanumeric sender) is kept as written.
fn address(a: &Option<Address>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    match (&a.number, &a.id) {
        (Some(number), _) => {
            let digits = crate::digits(number);
            if digits.is_empty() {
                number.clone()
            } else {
                digits
            }
        }
        (None, Some(id)) => id.clone(),
        (None, None) => String::new(),
    }
}

/// `message_type` and the object it names.
fn content_fields(
    channel: Channel,
    content: &Content,
    settings: &ProviderSettings,
) -> Result<Map<String, Value>, MessageError> {
    let kind = content
        .kind
        .ok_or_else(|| invalid(1020, "Invalid params: content.type is missing"))?;
    let missing = |what: &str| invalid(1020, format!("Invalid params: content.{what} is missing"));
    let value = match kind {
        ContentType::Text => Value::from(content.text.clone().ok_or_else(|| missing("text"))?),
        ContentType::Image | ContentType::Audio | ContentType::Video | ContentType::File => {
            media(channel, kind, content).ok_or_else(|| missing(kind.as_str()))?
        }
        ContentType::Template => {
            let template = content
                .template
                .as_ref()
                .ok_or_else(|| missing("template"))?;
            template_value(settings, template)?
        }
        ContentType::Custom => {
            Value::Object(content.custom.clone().ok_or_else(|| missing("custom"))?)
        }
    };
    let mut fields = Map::new();
    fields.insert("message_type".into(), kind.as_str().into());
    fields.insert(kind.as_str().into(), value);
    Ok(fields)
}

/// `{url, caption}` of a media content, the caption only where the
/// channel's reference takes one; `None` without a URL.
fn media(channel: Channel, kind: ContentType, content: &Content) -> Option<Value> {
    let media = match kind {
        ContentType::Image => content.image.as_ref(),
        ContentType::Audio => content.audio.as_ref(),
        ContentType::Video => content.video.as_ref(),
        ContentType::File => content.file.as_ref(),
        _ => None,
    }?;
    let url = media.url.as_ref()?;
    let mut object = Map::new();
    object.insert("url".into(), url.clone().into());
    if let Some(caption) = media.caption.as_ref().filter(|c| !c.is_empty())
        && takes_caption(channel, kind)
    {
        object.insert("caption".into(), caption.clone().into());
    }
    Some(Value::Object(object))
}

/// Which media objects have a `caption` in "Send a message": MMS (image,
/// audio, video); WhatsApp image, video and file (not audio); Viber image
/// and video; none on Messenger or RCS.
fn takes_caption(channel: Channel, kind: ContentType) -> bool {
    use ContentType as C;
    match channel {
        Channel::Mms => matches!(kind, C::Image | C::Audio | C::Video),
        Channel::Whatsapp => matches!(kind, C::Image | C::Video | C::File),
        Channel::ViberServiceMsg => matches!(kind, C::Image | C::Video),
        Channel::Sms | Channel::Messenger | Channel::Rcs => false,
    }
}

/// `{name, parameters}`, once [`check_template`] passed: the name as
/// given (`namespace:name`), the parameters as strings in order.
fn template_value(settings: &ProviderSettings, template: &Template) -> Result<Value, MessageError> {
    check_template(settings, template)?;
    let name = template
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(1022, "Invalid template: the template has no name"))?;
    Ok(json!({ "name": name, "parameters": template_parameters(template) }))
}

/// The channel's own options: `whatsapp` for templates, `messenger`,
/// `viber_service`.
fn channel_options(
    channel: Channel,
    content: &Content,
    message: &MessageBody,
    body: &mut Map<String, Value>,
) {
    match channel {
        Channel::Whatsapp if content.kind == Some(ContentType::Template) => {
            // "As of right now the only valid choice is `deterministic`."
            let locale = message
                .whatsapp
                .as_ref()
                .and_then(|w| w.locale.clone())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| DEFAULT_LOCALE.to_owned());
            body.insert(
                "whatsapp".into(),
                json!({ "policy": "deterministic", "locale": locale }),
            );
        }
        Channel::Messenger => {
            if let Some(options) = message.messenger.as_ref()
                && let Some(options) = non_empty(serde_json::to_value(options).ok())
            {
                body.insert("messenger".into(), options);
            }
        }
        Channel::ViberServiceMsg => {
            if let Some(options) = message.viber_service_msg.as_ref()
                && let Some(options) = non_empty(serde_json::to_value(options).ok())
            {
                body.insert("viber_service".into(), options);
            }
        }
        _ => {}
    }
}

/// An options object, unless it has no field set: our model and Vonage's
/// share these names (`category`, `tag`; `category`, `ttl`, `type`).
fn non_empty(value: Option<Value>) -> Option<Value> {
    value.filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_infra::config::ProviderKind;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            kind: ProviderKind::Vonage,
            url: String::new(),
            secret: String::new(),
            credentials: Default::default(),
            templates: [("ns:verify".to_owned(), "Code {{1}} for {{2}}".to_owned())]
                .into_iter()
                .collect(),
            route: String::new(),
        }
    }

    fn command(channel: Channel, message: Value) -> SendCommand {
        SendCommand {
            workflow_id: uuid::Uuid::nil(),
            message_uuid: uuid::Uuid::nil(),
            channel,
            account: "acct".into(),
            application_id: None,
            message: serde_json::from_value(message).expect("message"),
            paced: None,
        }
    }

    #[test]
    fn text_sms() {
        let c = command(
            Channel::Sms,
            json!({"to":{"type":"sms","number":"+44 7700 900000"},"from":{"type":"sms","number":"447700900001"},
                   "message":{"content":{"type":"text","text":"hi"}}}),
        );
        assert_eq!(
            body(&c, &settings(), "https://h/cb"),
            Ok(
                json!({"message_type":"text","text":"hi","to":"447700900000","from":"447700900001",
                      "channel":"sms","client_ref":uuid::Uuid::nil().to_string(),
                      "webhook_url":"https://h/cb","webhook_version":"v1"})
            )
        );
    }

    #[test]
    fn captions_only_where_the_channel_has_them() {
        let image = json!({"content":{"type":"image","image":{"url":"https://x/a.jpg","caption":"c"}},
                           "messenger":{"category":"message_tag","tag":"ACCOUNT_UPDATE"}});
        let m = command(
            Channel::Messenger,
            json!({"to":{"type":"messenger","id":"u1"},"from":{"type":"messenger","id":"p1"},"message":image}),
        );
        let b = body(&m, &settings(), "").expect("body");
        assert_eq!(b["image"], json!({"url":"https://x/a.jpg"}));
        assert_eq!(
            b["messenger"],
            json!({"category":"message_tag","tag":"ACCOUNT_UPDATE"})
        );
        assert_eq!(
            (b["to"].as_str(), b["from"].as_str()),
            (Some("u1"), Some("p1"))
        );
        assert!(b.get("webhook_url").is_none());
        let w = command(
            Channel::Whatsapp,
            json!({"to":{"type":"whatsapp","number":"447700900000"},"from":{"type":"whatsapp","number":"447700900001"},
                   "message":{"content":{"type":"audio","audio":{"url":"https://x/a.mp3","caption":"c"}}}}),
        );
        assert_eq!(
            body(&w, &settings(), "").expect("body")["audio"],
            json!({"url":"https://x/a.mp3"})
        );
    }

    #[test]
    fn templates_are_checked_before_anything_is_sent() {
        let template = |params: Value| {
            command(
                Channel::Whatsapp,
                json!({"to":{"type":"whatsapp","number":"447700900000"},"from":{"type":"whatsapp","number":"447700900001"},
                       "message":{"content":{"type":"template","template":{"name":"ns:verify","parameters":params}},
                                  "whatsapp":{"policy":"fallback"}}}),
            )
        };
        let b = body(
            &template(json!([{"default":"1"},{"default":"2"}])),
            &settings(),
            "",
        )
        .expect("body");
        assert_eq!(
            b["template"],
            json!({"name":"ns:verify","parameters":["1","2"]})
        );
        assert_eq!(
            b["whatsapp"],
            json!({"policy":"deterministic","locale":"en_US"})
        );
        assert_eq!(
            body(&template(json!([{"default":"1"}])), &settings(), "").map_err(|e| e.code),
            Err(1022)
        );
    }

    #[test]
    fn missing_content_is_1020() {
        for message in [
            json!({}),
            json!({"content":{}}),
            json!({"content":{"type":"text"}}),
            json!({"content":{"type":"image","image":{"caption":"no url"}}}),
            json!({"content":{"type":"custom"}}),
        ] {
            let c = command(Channel::Sms, json!({"message": message}));
            assert_eq!(body(&c, &settings(), "").map_err(|e| e.code), Err(1020));
        }
    }
}
