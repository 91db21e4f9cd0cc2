//! Every rule of the Messages and Dispatch specs, as small functions over the
//! request model. Validation never stops at the first problem: it collects an
//! [`InvalidParam`] for each bad field, named by its JSON path
//! (`workflow[1].message.content.text`), so a client can fix all at once.

use serde::{Deserialize, Serialize};

use crate::json::ParseError;

use crate::channel::{AddressKind, Channel, Extensions};
use crate::message::{
    Address, ConditionStatus, Content, ContentType, CreateWorkflow, Media, MessageBody,
    MessengerCategory, OutboundMessage,
};

/// One bad field and why, as listed in an error body's `invalid_parameters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl InvalidParam {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Which API a message came through: a few ranges differ between the specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Messages,
    Dispatch,
}

/// Limits that are ours rather than the specs', configurable per deployment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most steps in one dispatch workflow.
    pub max_workflow_steps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_workflow_steps: 10,
        }
    }
}

pub const CLIENT_REF_MAX_CHARS: usize = 40;
pub const ADDRESS_MAX_CHARS: usize = 50;
pub const MEDIA_URL_MAX_CHARS: usize = 2000;
pub const CAPTION_MAX_CHARS: usize = 3000;
pub const TEMPLATE_NAME_MAX_CHARS: usize = 512;
pub const MESSENGER_TAG_MAX_CHARS: usize = 64;
pub const EXPIRY_TIME_SECS: std::ops::RangeInclusive<i64> = 15..=86_400;
/// `viber_service_msg.ttl`: the Messages spec allows up to 72 hours, the
/// Dispatch spec up to 24 hours.
pub fn viber_ttl_range(api: Api) -> std::ops::RangeInclusive<i64> {
    match api {
        Api::Messages => 30..=259_200,
        Api::Dispatch => 30..=86_400,
    }
}

/// Parses a JSON body into `T`, naming the offending field on a type error
/// or a duplicate key.
///
/// Two steps: syntax first (into a `Value`, refusing duplicate keys), then
/// the shape. serde_json
/// reports some type errors (a number where an enum is expected) as syntax
/// errors when reading straight from bytes; from a `Value` every shape
/// problem is a data error with a path.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
    let value = crate::json::parse_value(body).map_err(|e| match e {
        ParseError::Syntax(e) => JsonError::Malformed(e.to_string()),
        ParseError::DuplicateKey(at) => JsonError::Invalid(InvalidParam::new(
            at.field(),
            format!(
                "duplicate key `{}` (at {}): each key may appear once in an object",
                at.key(),
                at.pointer()
            ),
        )),
    })?;
    if !value.is_object() {
        return Err(JsonError::Invalid(InvalidParam::new(
            "body",
            "must be a JSON object",
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        JsonError::Invalid(InvalidParam::new(
            trim_path(&path),
            e.into_inner().to_string(),
        ))
    })
}

/// Why a body could not be read as the expected JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all (syntax error, truncated body).
    Malformed(String),
    /// JSON, but a field has the wrong type or an unknown enum value.
    Invalid(InvalidParam),
}

fn trim_path(path: &str) -> String {
    if path == "." {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

struct Errors<'a> {
    out: &'a mut Vec<InvalidParam>,
}

impl Errors<'_> {
    fn add(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        self.out.push(InvalidParam::new(name, reason));
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Validates the body of `POST /v0.1/messages`.
pub fn validate_message(m: &OutboundMessage) -> Result<(), Vec<InvalidParam>> {
    let mut out = Vec::new();
    check_message(m, Api::Messages, "", &mut Errors { out: &mut out });
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// Validates the body of `POST /v0.1/dispatch`.
pub fn validate_workflow(w: &CreateWorkflow, limits: &Limits) -> Result<(), Vec<InvalidParam>> {
    let mut out = Vec::new();
    let mut errs = Errors { out: &mut out };
    match w.template.as_deref() {
        None => errs.add("template", "is required"),
        Some("failover") => {}
        Some(_) => errs.add("template", "must be `failover`"),
    }
    match &w.workflow {
        None => errs.add("workflow", "is required"),
        Some(steps) if steps.is_empty() => errs.add("workflow", "must hold at least one message"),
        Some(steps) if steps.len() > limits.max_workflow_steps => errs.add(
            "workflow",
            format!(
                "must hold at most {} messages, has {}",
                limits.max_workflow_steps,
                steps.len()
            ),
        ),
        Some(steps) => {
            let last = steps.len() - 1;
            for (i, step) in steps.iter().enumerate() {
                let path = format!("workflow[{i}].");
                check_message(step, Api::Dispatch, &path, &mut errs);
                check_failover(step, i == last, &path, &mut errs);
            }
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

fn check_message(m: &OutboundMessage, api: Api, p: &str, errs: &mut Errors<'_>) {
    let to_channel = check_address_type(m.to.as_ref(), &format!("{p}to"), errs);
    let from_channel = check_address_type(m.from.as_ref(), &format!("{p}from"), errs);
    let channel = match (to_channel, from_channel) {
        (Some(t), Some(f)) if t != f => {
            errs.add(
                format!("{p}from.type"),
                format!("must be the same channel as `to.type` (`{t}`)"),
            );
            None
        }
        (Some(t), Some(_)) => Some(t),
        _ => None,
    };
    if let Some(r) = m.client_ref.as_deref()
        && chars(r) > CLIENT_REF_MAX_CHARS
    {
        errs.add(
            format!("{p}client_ref"),
            format!("must be at most {CLIENT_REF_MAX_CHARS} characters"),
        );
    }
    if let Some(channel) = channel {
        let rules = channel.rules();
        if let Some(to) = &m.to {
            check_address(to, rules.to, &format!("{p}to"), errs);
        }
        if let Some(from) = &m.from {
            check_address(from, rules.from, &format!("{p}from"), errs);
        }
        if channel == Channel::Whatsapp {
            for (side, address) in [("to", &m.to), ("from", &m.from)] {
                let number = address.as_ref().and_then(|a| a.number.as_deref());
                if let Some(place) = number.and_then(crate::channel::whatsapp_refused) {
                    errs.add(
                        format!("{p}{side}.number"),
                        format!(
                            "is in {place}: WhatsApp may not be used to send messages to or receive messages from Crimea, Cuba, Iran, North Korea or Syria"
                        ),
                    );
                }
            }
        }
    }
    match &m.message {
        None => errs.add(format!("{p}message"), "is required"),
        Some(body) => check_body(body, channel, api, &format!("{p}message"), errs),
    }
}

fn check_address_type(a: Option<&Address>, p: &str, errs: &mut Errors<'_>) -> Option<Channel> {
    match a {
        None => {
            errs.add(p, "is required");
            None
        }
        Some(Address { kind: None, .. }) => {
            errs.add(format!("{p}.type"), "is required");
            None
        }
        Some(Address {
            kind: Some(Channel::Rcs),
            ..
        }) => {
            // The v0.1 APIs have no RCS; `POST /v1/messages` has.
            errs.add(
                format!("{p}.type"),
                "must be one of sms, mms, whatsapp, messenger, viber_service_msg (rcs is sent with POST /v1/messages)",
            );
            None
        }
        Some(Address { kind: Some(c), .. }) => Some(*c),
    }
}

fn check_address(a: &Address, kind: AddressKind, p: &str, errs: &mut Errors<'_>) {
    match kind {
        AddressKind::Id => match a.id.as_deref() {
            None => errs.add(format!("{p}.id"), "is required for this channel"),
            Some(id) if id.is_empty() || chars(id) > ADDRESS_MAX_CHARS => errs.add(
                format!("{p}.id"),
                format!("must be 1 to {ADDRESS_MAX_CHARS} characters"),
            ),
            Some(_) => {}
        },
        AddressKind::E164 | AddressKind::ShortCodeOrE164 => match a.number.as_deref() {
            None => errs.add(format!("{p}.number"), "is required for this channel"),
            Some(n) => {
                let ok = if kind == AddressKind::E164 {
                    is_e164(n)
                } else {
                    is_digits_number(n, 3)
                };
                if !ok {
                    let what = if kind == AddressKind::E164 {
                        "an E.164 number"
                    } else {
                        "a short code or an E.164 number"
                    };
                    errs.add(
                        format!("{p}.number"),
                        format!(
                            "must be {what}: digits only, country code first, without a leading `+` or `00`"
                        ),
                    );
                }
            }
        },
    }
}

/// E.164 as the specs want it: 7 to 15 digits, country code first, so no
/// leading `+`, `00` or `0`.
pub fn is_e164(n: &str) -> bool {
    is_digits_number(n, 7)
}

fn is_digits_number(n: &str, min: usize) -> bool {
    (min..=15).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0')
}

fn check_body(
    body: &MessageBody,
    channel: Option<Channel>,
    api: Api,
    p: &str,
    errs: &mut Errors<'_>,
) {
    match &body.content {
        None => errs.add(format!("{p}.content"), "is required"),
        Some(content) => check_content(content, channel, &format!("{p}.content"), errs),
    }
    if let Some(v) = &body.viber_service_msg
        && let Some(ttl) = v.ttl
    {
        let range = viber_ttl_range(api);
        if !range.contains(&ttl) {
            errs.add(
                format!("{p}.viber_service_msg.ttl"),
                format!(
                    "must be between {} and {} seconds",
                    range.start(),
                    range.end()
                ),
            );
        }
    }
    if let Some(m) = &body.messenger
        && m.category == Some(MessengerCategory::MessageTag)
    {
        match m.tag.as_deref() {
            None | Some("") => errs.add(
                format!("{p}.messenger.tag"),
                "is required when `category` is `message_tag`",
            ),
            Some(t) if chars(t) > MESSENGER_TAG_MAX_CHARS => errs.add(
                format!("{p}.messenger.tag"),
                format!("must be at most {MESSENGER_TAG_MAX_CHARS} characters"),
            ),
            Some(_) => {}
        }
    }
    if let Some(w) = &body.whatsapp
        && let Some(locale) = w.locale.as_deref()
        && !is_bcp47(locale)
    {
        errs.add(
            format!("{p}.whatsapp.locale"),
            "must be a BCP 47 language tag such as `en-GB`",
        );
    }
}

/// A pragmatic BCP 47 check: a 2–3 letter language (or 4–8 letters), then
/// subtags of 1–8 letters or digits, separated by `-`.
pub fn is_bcp47(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let Some(lang) = parts.next() else {
        return false;
    };
    let lang_ok = (2..=8).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_alphabetic());
    lang_ok
        && parts.all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn check_content(c: &Content, channel: Option<Channel>, p: &str, errs: &mut Errors<'_>) {
    let Some(kind) = c.kind else {
        errs.add(format!("{p}.type"), "is required");
        return;
    };
    let rules = channel.map(Channel::rules);
    if let Some(rules) = rules
        && !rules.content_types.contains(&kind)
    {
        let allowed: Vec<&str> = rules.content_types.iter().map(|t| t.as_str()).collect();
        errs.add(
            format!("{p}.type"),
            format!(
                "`{}` is not supported on {}; allowed: {}",
                kind.as_str(),
                rules.channel,
                allowed.join(", ")
            ),
        );
        return;
    }
    match kind {
        ContentType::Text => match c.text.as_deref() {
            None | Some("") => errs.add(format!("{p}.text"), "is required for `text` content"),
            Some(t) => {
                let max = rules.map_or(4096, |r| r.max_text_chars);
                if chars(t) > max {
                    errs.add(
                        format!("{p}.text"),
                        format!("must be at most {max} characters on this channel"),
                    );
                }
            }
        },
        ContentType::Image => {
            check_media(c.image.as_ref(), "image", rules.map(|r| r.image), p, errs)
        }
        ContentType::Audio => {
            check_media(c.audio.as_ref(), "audio", rules.map(|r| r.audio), p, errs)
        }
        ContentType::Video => {
            check_media(c.video.as_ref(), "video", rules.map(|r| r.video), p, errs)
        }
        ContentType::File => check_media(c.file.as_ref(), "file", rules.map(|r| r.file), p, errs),
        ContentType::Template => match &c.template {
            None => errs.add(
                format!("{p}.template"),
                "is required for `template` content",
            ),
            Some(t) => {
                match t.name.as_deref() {
                    None | Some("") => errs.add(format!("{p}.template.name"), "is required"),
                    Some(n) if chars(n) > TEMPLATE_NAME_MAX_CHARS => errs.add(
                        format!("{p}.template.name"),
                        format!("must be at most {TEMPLATE_NAME_MAX_CHARS} characters"),
                    ),
                    Some(n) if channel == Some(Channel::Whatsapp) && !is_namespaced(n) => errs.add(
                        format!("{p}.template.name"),
                        "must be `namespace:template_name` for WhatsApp",
                    ),
                    Some(_) => {}
                }
                for (i, param) in t.parameters.iter().flatten().enumerate() {
                    if param.default.is_none() {
                        errs.add(
                            format!("{p}.template.parameters[{i}].default"),
                            "is required",
                        );
                    }
                }
            }
        },
        ContentType::Custom => {
            if c.custom.is_none() {
                errs.add(format!("{p}.custom"), "is required for `custom` content");
            }
        }
    }
}

fn is_namespaced(name: &str) -> bool {
    matches!(name.split_once(':'), Some((ns, rest)) if !ns.is_empty() && !rest.is_empty())
}

fn check_media(
    m: Option<&Media>,
    field: &str,
    allowed: Option<Extensions>,
    p: &str,
    errs: &mut Errors<'_>,
) {
    let Some(m) = m else {
        errs.add(
            format!("{p}.{field}"),
            format!("is required for `{field}` content"),
        );
        return;
    };
    if let Some(caption) = m.caption.as_deref()
        && (caption.is_empty() || chars(caption) > CAPTION_MAX_CHARS)
    {
        errs.add(
            format!("{p}.{field}.caption"),
            format!("must be 1 to {CAPTION_MAX_CHARS} characters"),
        );
    }
    let name = format!("{p}.{field}.url");
    let Some(url) = m.url.as_deref() else {
        errs.add(name, "is required");
        return;
    };
    if chars(url) > MEDIA_URL_MAX_CHARS {
        errs.add(
            name,
            format!("must be at most {MEDIA_URL_MAX_CHARS} characters"),
        );
        return;
    }
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            errs.add(name, "must be an absolute http or https URL");
            return;
        }
    };
    if let Some(Extensions::OneOf(exts)) = allowed {
        let ext = media_extension(&parsed);
        if !ext.as_deref().is_some_and(|e| exts.contains(&e)) {
            errs.add(
                name,
                format!("must end in one of .{} on this channel", exts.join(", .")),
            );
        }
    }
}

/// The lower-cased extension of the URL path's last segment.
fn media_extension(url: &url::Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let (_, ext) = last.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
}

fn check_failover(step: &OutboundMessage, is_last: bool, p: &str, errs: &mut Errors<'_>) {
    let name = format!("{p}failover");
    match (&step.failover, is_last) {
        (Some(_), true) => errs.add(name, "must not be set on the last message of the workflow"),
        (None, false) => errs.add(name, "is required on every message but the last"),
        (None, true) => {}
        (Some(f), false) => {
            match f.expiry_time {
                None => errs.add(format!("{name}.expiry_time"), "is required"),
                Some(t) if !EXPIRY_TIME_SECS.contains(&t) => errs.add(
                    format!("{name}.expiry_time"),
                    format!(
                        "must be between {} and {} seconds",
                        EXPIRY_TIME_SECS.start(),
                        EXPIRY_TIME_SECS.end()
                    ),
                ),
                Some(_) => {}
            }
            match (f.condition_status, step.channel()) {
                (None, _) => errs.add(format!("{name}.condition_status"), "is required"),
                (Some(ConditionStatus::Read), Some(c)) if !c.rules().reports_read => errs.add(
                    format!("{name}.condition_status"),
                    format!("`read` is not reported on {c}; use `delivered`"),
                ),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod cases;
#[cfg(test)]
mod tests;
