//! Channel rules that hold whichever provider sends: templates rendered
//! as text, SMS encoding and segments, and which sends need an open reply
//! window. (Sanctioned WhatsApp destinations are refused earlier, at
//! validation: `dispatch_model::validate`.)

use dispatch_infra::config::ProviderSettings;
use dispatch_model::Channel;
use dispatch_model::message::{ContentType, MessengerCategory, OutboundMessage, Template};
use dispatch_model::record::MessageError;

fn invalid_template(reason: impl Into<String>) -> MessageError {
    MessageError {
        code: 1022,
        reason: reason.into(),
    }
}

/// The parameters of `template`, in order (`default` of each; a missing
/// one is empty).
pub fn template_parameters(template: &Template) -> Vec<String> {
    template
        .parameters
        .iter()
        .flatten()
        .map(|p| p.default.clone().unwrap_or_default())
        .collect()
}

/// The placeholders `{{1}}`, `{{2}}`… of a template body: the highest
/// index, and whether every index up to it appears.
fn placeholders(body: &str) -> (usize, bool) {
    let mut seen = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        if let Ok(n) = after[..end].trim().parse::<usize>()
            && n > 0
        {
            seen.push(n);
        }
        rest = &after[end + 2..];
    }
    let highest = seen.iter().copied().max().unwrap_or(0);
    let complete = (1..=highest).all(|n| seen.contains(&n));
    (highest, complete)
}

/// The body of `template` stored with the provider settings, if any.
pub fn template_body<'a>(settings: &'a ProviderSettings, template: &Template) -> Option<&'a str> {
    settings
        .templates
        .get(template.name.as_deref().unwrap_or_default())
        .map(String::as_str)
}

/// Error 1022 when the template's body is known and its placeholders do
/// not match the parameters given; fine when the body is unknown (the
/// provider holds it and checks).
pub fn check_template(
    settings: &ProviderSettings,
    template: &Template,
) -> Result<(), MessageError> {
    let Some(body) = template_body(settings, template) else {
        return Ok(());
    };
    let (needed, complete) = placeholders(body);
    let given = template_parameters(template).len();
    if !complete {
        return Err(invalid_template(format!(
            "Invalid template: the body of `{}` skips a placeholder",
            template.name.as_deref().unwrap_or_default()
        )));
    }
    if needed != given {
        return Err(invalid_template(format!(
            "Invalid template parameters: `{}` takes {needed}, {given} given",
            template.name.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// `template` as text: its body (from the provider settings) with
/// `{{1}}`, `{{2}}`… replaced by the parameters. Error 1022 when the body
/// is unknown or the parameter count does not match.
pub fn render_template(
    settings: &ProviderSettings,
    template: &Template,
) -> Result<String, MessageError> {
    let name = template.name.as_deref().unwrap_or_default();
    let body = template_body(settings, template).ok_or_else(|| {
        invalid_template(format!(
            "Invalid template: `{name}` has no body in this provider's settings"
        ))
    })?;
    check_template(settings, template)?;
    let parameters = template_parameters(template);
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            let n = after[..end].trim().parse::<usize>().ok()?;
            Some((end, parameters.get(n.checked_sub(1)?)?))
        });
        match value {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// How an SMS text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    /// The GSM 03.38 7-bit alphabet: 160 characters in one message, 153
    /// per segment when split.
    Gsm7,
    /// UCS-2 (UTF-16): 70 code units in one message, 67 per segment.
    Ucs2,
}

impl SmsEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "gsm7",
            SmsEncoding::Ucs2 => "ucs2",
        }
    }
}

/// An SMS text's encoding and how many segments it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsParts {
    pub encoding: SmsEncoding,
    /// Septets (GSM-7, extension characters count two) or UTF-16 code
    /// units (UCS-2).
    pub units: usize,
    pub segments: u32,
}

/// GSM 03.38 basic character set (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (an escape plus one septet each).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

/// The encoding a text needs and its segment count (3GPP TS 23.038 and
/// 23.040: 160/153 septets or 70/67 UCS-2 units per message/segment).
pub fn sms_parts(text: &str) -> SmsParts {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (encoding, units, single, part) = if gsm {
        (SmsEncoding::Gsm7, septets, 160, 153)
    } else {
        (SmsEncoding::Ucs2, text.encode_utf16().count(), 70, 67)
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(part) as u32
    };
    SmsParts {
        encoding,
        units,
        segments,
    }
}

/// Whether sending `message` on `channel` needs the user to have written
/// to us within the reply window: a free-form (non-template) WhatsApp
/// message, or a Messenger message without `message_tag`.
pub fn needs_window(channel: Channel, message: &OutboundMessage) -> bool {
    let body = message.message.as_ref();
    let content = body.and_then(|b| b.content.as_ref());
    match channel {
        Channel::Whatsapp => {
            let kind = content.and_then(|c| c.kind);
            let custom_template = content
                .and_then(|c| c.custom.as_ref())
                .and_then(|c| c.get("type"))
                .is_some_and(|t| t == "template");
            !(kind == Some(ContentType::Template) || custom_template)
        }
        Channel::Messenger => {
            let category = body
                .and_then(|b| b.messenger.as_ref())
                .and_then(|m| m.category);
            category != Some(MessengerCategory::MessageTag)
        }
        _ => false,
    }
}

/// Error 1340, for a send that needs a closed window.
pub fn outside_window(channel: Channel) -> MessageError {
    let reason = match channel {
        Channel::Messenger => {
            "Outside of the allowed window: the user has not written within 24 hours; only `message_tag` messages may be sent"
        }
        _ => {
            "Outside of the allowed window: the user has not written within 24 hours; only template messages may be sent"
        }
    };
    MessageError {
        code: 1340,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_infra::config::ProviderKind;
    use dispatch_model::message::TemplateParameter;

    fn settings(templates: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings {
            kind: ProviderKind::Twilio,
            url: String::new(),
            secret: String::new(),
            credentials: Default::default(),
            templates: templates
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            route: String::new(),
        }
    }

    fn template(name: &str, params: &[&str]) -> Template {
        Template {
            name: Some(name.into()),
            parameters: Some(
                params
                    .iter()
                    .map(|p| TemplateParameter {
                        default: Some((*p).into()),
                    })
                    .collect(),
            ),
        }
    }

    const VERIFY: &str = "whatsapp:hsm:technology:nexmo:verify";

    #[test]
    fn templates_render_and_count_their_parameters() {
        let s = settings(&[(VERIFY, "{{1}} code: {{2}}. Valid for {{3}} minutes.")]);
        assert_eq!(
            render_template(
                &s,
                &template(VERIFY, &["Nexmo Verification", "64873", "10"])
            ),
            Ok("Nexmo Verification code: 64873. Valid for 10 minutes.".into())
        );
        for params in [&["a", "b"][..], &["a", "b", "c", "d"][..]] {
            let e = render_template(&s, &template(VERIFY, params)).expect_err("mismatch");
            assert_eq!(e.code, 1022);
            assert_eq!(
                check_template(&s, &template(VERIFY, params)).map_err(|e| e.code),
                Err(1022)
            );
        }
        let e = render_template(&s, &template("other:name", &[])).expect_err("unknown");
        assert_eq!(e.code, 1022);
        assert!(
            check_template(&s, &template("other:name", &["x"])).is_ok(),
            "unknown bodies are the provider's to check"
        );
        let repeated = settings(&[("a:b", "{{1}}, {{1}} and {{ 2 }}; {{x}} stays")]);
        assert_eq!(
            render_template(&repeated, &template("a:b", &["x", "y"])),
            Ok("x, x and y; {{x}} stays".into())
        );
        let gap = settings(&[("a:b", "{{1}} {{3}}")]);
        assert_eq!(
            check_template(&gap, &template("a:b", &["x", "y", "z"])).map_err(|e| e.code),
            Err(1022)
        );
    }

    #[test]
    fn sms_encoding_and_segments() {
        let p = sms_parts("Your code is 64873");
        assert_eq!(
            (p.encoding, p.units, p.segments),
            (SmsEncoding::Gsm7, 18, 1)
        );
        assert_eq!(sms_parts(&"a".repeat(160)).segments, 1);
        assert_eq!(sms_parts(&"a".repeat(161)).segments, 2);
        assert_eq!(sms_parts(&"a".repeat(306)).segments, 2);
        assert_eq!(sms_parts(&"a".repeat(307)).segments, 3);
        // Extension characters take two septets.
        let p = sms_parts(&"€".repeat(80));
        assert_eq!(
            (p.encoding, p.units, p.segments),
            (SmsEncoding::Gsm7, 160, 1)
        );
        assert_eq!(sms_parts(&"€".repeat(81)).segments, 2);
        // One character outside GSM-7 makes the whole text UCS-2.
        let p = sms_parts("Grüße, ça va? 😀");
        assert_eq!(p.encoding, SmsEncoding::Ucs2);
        assert_eq!(p.units, 16, "the emoji is a surrogate pair");
        assert_eq!(sms_parts(&"ж".repeat(70)).segments, 1);
        assert_eq!(sms_parts(&"ж".repeat(71)).segments, 2);
        assert_eq!(sms_parts(&"ж".repeat(134)).segments, 2);
        assert_eq!(sms_parts(&"ж".repeat(135)).segments, 3);
        assert_eq!(sms_parts("").segments, 1);
    }

    #[test]
    fn which_sends_need_a_window() {
        let message = |json: serde_json::Value| -> OutboundMessage {
            serde_json::from_value(json).expect("message")
        };
        let text =
            message(serde_json::json!({"message": {"content": {"type": "text", "text": "hi"}}}));
        let tmpl = message(
            serde_json::json!({"message": {"content": {"type": "template", "template": {"name": "a:b"}}}}),
        );
        let custom = message(
            serde_json::json!({"message": {"content": {"type": "custom", "custom": {"type": "template"}}}}),
        );
        let tagged = message(
            serde_json::json!({"message": {"content": {"type": "text", "text": "hi"}, "messenger": {"category": "message_tag", "tag": "ACCOUNT_UPDATE"}}}),
        );
        let response = message(
            serde_json::json!({"message": {"content": {"type": "text", "text": "hi"}, "messenger": {"category": "response"}}}),
        );
        assert!(needs_window(Channel::Whatsapp, &text));
        assert!(!needs_window(Channel::Whatsapp, &tmpl));
        assert!(!needs_window(Channel::Whatsapp, &custom));
        assert!(needs_window(Channel::Messenger, &text));
        assert!(needs_window(Channel::Messenger, &response));
        assert!(!needs_window(Channel::Messenger, &tagged));
        assert!(!needs_window(Channel::Sms, &text));
        assert!(!needs_window(Channel::ViberServiceMsg, &text));
    }
}
