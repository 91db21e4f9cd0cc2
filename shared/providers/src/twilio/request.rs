//! Our message as the form fields of Twilio's "Create a Message resource"
//! (<https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>).
//!
//! - `To` and `From` are E.164 numbers with `+` for SMS and MMS, and
//!   channel addresses `whatsapp:+<digits>` for WhatsApp
//!   (<https://www.twilio.com/docs/messaging/channels>, "channel
//!   addresses"). Our numbers are digits without `+`; a `from` of at most
//!   six digits is a short code (MMS senders may be US short codes) and
//!   goes as it is.
//! - With the `messaging_service_sid` credential, `MessagingServiceSid`
//!   replaces `From`: the service picks the sender from its pool.
//! - `text` is `Body`. `image`, `audio`, `video` and `file` are one
//!   `MediaUrl` with the caption, if any, as `Body`
//!   (<https://www.twilio.com/docs/messaging/guides/accepted-mime-types>).
//! - `template` is sent as its text, rendered from the template bodies of
//!   the provider settings ([`crate::rules::render_template`]): Twilio
//!   matched a WhatsApp `Body` against the sender's approved templates
//!   (<https://www.twilio.com/docs/whatsapp/tutorial/send-whatsapp-notification-messages-templates>).
//!   That page now recommends Content Templates (`ContentSid` and
//!   `ContentVariables`, <https://www.twilio.com/docs/content>), which
//!   would need a template name → `ContentSid` map in the settings; the
//!   rendered text needs nothing beyond the template bodies we already
//!   keep, and is what SMS needs anyway.
//! - `custom` is refused (1020): a channel-native payload has no meaning
//!   to Twilio's Messages API, and passing its fields through as form
//!   fields would send whatever they happen to name unchecked. No Twilio
//!   channel (sms, mms, whatsapp) allows `custom` anyway.
//! - `StatusCallback` is the URL ingest gives, exactly: Twilio signs its
//!   callbacks over it, and ingest verifies against it.

use dispatch_infra::config::ProviderSettings;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::message::{Content, ContentType, Media};
use dispatch_model::record::MessageError;

use crate::{address, digits};

/// The form of one send, in the order written.
pub type Form = Vec<(&'static str, String)>;

fn error(code: u32, reason: impl Into<String>) -> MessageError {
    MessageError {
        code,
        reason: reason.into(),
    }
}

/// `digits` as Twilio's address on `channel`.
pub fn twilio_address(channel: Channel, digits: &str) -> String {
    match channel {
        Channel::Whatsapp => format!("whatsapp:+{digits}"),
        _ => format!("+{digits}"),
    }
}

/// Our sender as Twilio's `From`: a short code as it is, a number in
/// E.164 with `+` (a channel address on WhatsApp).
fn sender(channel: Channel, raw: &str) -> String {
    let number = digits(raw);
    if channel != Channel::Whatsapp && !number.is_empty() && number.len() <= 6 {
        number
    } else {
        twilio_address(channel, &number)
    }
}

/// The form fields that send `command` through `settings`, or the error
/// that rejects it without asking Twilio.
pub fn form(
    command: &SendCommand,
    settings: &ProviderSettings,
    status_callback: &str,
) -> Result<Form, MessageError> {
    let channel = command.channel;
    let to = digits(&address(&command.message.to));
    if to.is_empty() {
        return Err(error(1170, "The recipient's number is missing"));
    }
    let mut form: Form = vec![("To", twilio_address(channel, &to))];
    let service = settings.credential("messaging_service_sid");
    if service.is_empty() {
        let from = address(&command.message.from);
        if from.is_empty() {
            return Err(error(1010, "The sender's number is missing"));
        }
        form.push(("From", sender(channel, &from)));
    } else {
        form.push(("MessagingServiceSid", service.to_owned()));
    }
    let content = command
        .message
        .message
        .as_ref()
        .and_then(|m| m.content.as_ref())
        .ok_or_else(|| error(1010, "The message has no content"))?;
    content_fields(content, settings, &mut form)?;
    if !status_callback.is_empty() {
        form.push(("StatusCallback", status_callback.to_owned()));
    }
    Ok(form)
}

/// `Body` and `MediaUrl` for `content`.
fn content_fields(
    content: &Content,
    settings: &ProviderSettings,
    form: &mut Form,
) -> Result<(), MessageError> {
    let kind = content
        .kind
        .ok_or_else(|| error(1010, "The content has no type"))?;
    match kind {
        ContentType::Text => {
            let text = content
                .text
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| error(1010, "The text message has no text"))?;
            form.push(("Body", text.to_owned()));
        }
        ContentType::Image => media(content.image.as_ref(), kind, form)?,
        ContentType::Audio => media(content.audio.as_ref(), kind, form)?,
        ContentType::Video => media(content.video.as_ref(), kind, form)?,
        ContentType::File => media(content.file.as_ref(), kind, form)?,
        ContentType::Template => {
            let template = content
                .template
                .as_ref()
                .ok_or_else(|| error(1022, "Invalid template: the template is missing"))?;
            form.push(("Body", crate::rules::render_template(settings, template)?));
        }
        ContentType::Custom => {
            return Err(error(
                1020,
                "Invalid params: `custom` content cannot be sent through Twilio; use text, media or template content",
            ));
        }
    }
    Ok(())
}

/// One media file: its URL, and its caption as the body.
fn media(media: Option<&Media>, kind: ContentType, form: &mut Form) -> Result<(), MessageError> {
    let url = media
        .and_then(|m| m.url.as_deref())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| error(1010, format!("The {} has no url", kind.as_str())))?;
    if let Some(caption) = media
        .and_then(|m| m.caption.as_deref())
        .filter(|c| !c.is_empty())
    {
        form.push(("Body", caption.to_owned()));
    }
    form.push(("MediaUrl", url.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_infra::config::ProviderKind;
    use serde_json::json;

    fn settings(service: Option<&str>) -> ProviderSettings {
        let mut credentials = std::collections::BTreeMap::new();
        credentials.insert("account_sid".to_owned(), "AC1".to_owned());
        credentials.insert("auth_token".to_owned(), "t".to_owned());
        if let Some(s) = service {
            credentials.insert("messaging_service_sid".to_owned(), s.to_owned());
        }
        ProviderSettings {
            kind: ProviderKind::Twilio,
            url: String::new(),
            secret: String::new(),
            credentials,
            templates: [("a:b".to_owned(), "Code {{1}}".to_owned())]
                .into_iter()
                .collect(),
            route: String::new(),
        }
    }

    fn command(channel: &str, from: &str, content: serde_json::Value) -> SendCommand {
        serde_json::from_value(json!({
            "workflow_id": "00000000-0000-0000-0000-000000000001",
            "message_uuid": "00000000-0000-0000-0000-000000000002",
            "channel": channel,
            "account": "acct",
            "message": {
                "to": {"type": channel, "number": "447700900000"},
                "from": {"type": channel, "number": from},
                "message": {"content": content}
            }
        }))
        .expect("command")
    }

    fn fields(form: &Form) -> Vec<(&str, &str)> {
        form.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn text_on_each_channel() {
        let s = settings(None);
        let c = command("sms", "447700900100", json!({"type": "text", "text": "hi"}));
        assert_eq!(
            fields(&form(&c, &s, "https://cb/x").expect("form")),
            [
                ("To", "+447700900000"),
                ("From", "+447700900100"),
                ("Body", "hi"),
                ("StatusCallback", "https://cb/x"),
            ]
        );
        let c = command(
            "whatsapp",
            "447700900100",
            json!({"type": "text", "text": "hi"}),
        );
        assert_eq!(
            fields(&form(&c, &s, "").expect("form")),
            [
                ("To", "whatsapp:+447700900000"),
                ("From", "whatsapp:+447700900100"),
                ("Body", "hi"),
            ]
        );
    }

    #[test]
    fn short_codes_and_messaging_services() {
        let c = command(
            "mms",
            "12345",
            json!({"type": "image", "image": {"url": "https://x/a.png"}}),
        );
        assert_eq!(
            fields(&form(&c, &settings(None), "").expect("form")),
            [
                ("To", "+447700900000"),
                ("From", "12345"),
                ("MediaUrl", "https://x/a.png"),
            ]
        );
        assert_eq!(
            fields(&form(&c, &settings(Some("MG1")), "").expect("form"))[1],
            ("MessagingServiceSid", "MG1")
        );
    }

    #[test]
    fn refusals_before_any_request() {
        let s = settings(None);
        let code = |content: serde_json::Value| {
            form(&command("whatsapp", "447700900100", content), &s, "")
                .map_err(|e| e.code)
                .err()
        };
        assert_eq!(
            code(json!({"type": "custom", "custom": {"a": 1}})),
            Some(1020)
        );
        assert_eq!(code(json!({"type": "text"})), Some(1010));
        assert_eq!(code(json!({"type": "image", "image": {}})), Some(1010));
        assert_eq!(
            code(json!({"type": "template", "template": {"name": "a:b"}})),
            Some(1022)
        );
        assert_eq!(
            code(
                json!({"type": "template", "template": {"name": "a:b", "parameters": [{"default": "1"}]}})
            ),
            None
        );
        assert_eq!(code(json!({})), Some(1010));
    }
}
