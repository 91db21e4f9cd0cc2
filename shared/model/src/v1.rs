//! The body of `POST /v1/messages`, the Messages API v1: its flat shape,
//! every rule of its reference, and its mapping onto our model.
//!
//! A v1 message names its channel (`channel`), its type (`message_type`)
//! and carries its content under the field the type names (`text`,
//! `image`, …); `to` and `from` are plain strings. We keep the message as
//! sent (minus `failover`) beside its mapping onto [`OutboundMessage`]:
//! the mapping drives validation-independent parts of the system (the
//! machine, senders, the simulator, every provider adapter), the original
//! is what the Vonage adapter forwards and what the lookups show.
//!
//! `failover` is an array of complete v1 messages, tried in order when the
//! one before is `rejected` or `undeliverable`, as the hosted v1 does.
//! **Our extension**: every message of a chain but the last may carry
//! `failover_condition {condition_status, expiry_time}`, Dispatch v0.1's
//! condition, so that the chain also fails over when that status is not
//! reached in time (docs/api.md, "Messages API v1").
//!
//! Types only v1 has (MMS `vcard` and `content`, WhatsApp `sticker`,
//! `reaction` and `location`, RCS `card` and `carousel`) map onto our
//! `custom` content holding the v1 object (`{"message_type": …, <type>:
//! …}`), the form our Vonage callbacks already use for such types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::channel::Channel;
use crate::message::{
    Address, ConditionStatus, Content, ContentType, Failover, Media, MessageBody,
    MessengerCategory, MessengerOptions, OutboundMessage, Template, TemplateParameter,
    ViberCategory, ViberOptions, WhatsappOptions, WhatsappPolicy,
};
use crate::validate::{EXPIRY_TIME_SECS, InvalidParam, is_e164};

/// One v1 message: the request body, or one element of its `failover`.
/// Every field is optional so that validation can name each missing one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<V1Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<V1Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<V1Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<V1Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcard: Option<V1Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticker: Option<V1Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<V1Template>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Map<String, Value>>,
    /// MMS `content`, WhatsApp `reaction` and `location`, RCS `card` and
    /// `carousel`: checked for their required parts, passed on as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Map<String, Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carousel: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_recipient: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<V1SmsOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<V1WhatsappOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messenger: Option<V1MessengerOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viber_service: Option<V1ViberOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcs: Option<Map<String, Value>>,
    /// WhatsApp: the message this one replies to or reacts to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<V1Context>,
    /// Our extension (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_condition: Option<V1Condition>,
    /// Only on the request itself: the messages to try next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<V1Message>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Viber files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Viber videos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb_url: Option<String>,
    /// WhatsApp stickers uploaded before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1SmsOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1WhatsappOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1MessengerOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1ViberOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<V1ViberAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1ViberAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_uuid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<i64>,
}

/// Which error of the v1 reference a validation failure is (the anchor of
/// its `type`, `https://developer.vonage.com/api-errors/messages#…`, and
/// its title). The first failure decides the answer's; every failure is
/// listed in `invalid_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Error {
    /// 1150 "Invalid params": a missing or malformed field.
    InvalidParams,
    /// 1100 "Unsupported channel".
    UnsupportedChannel,
    /// 1110 "Invalid channel parameters" (`sms`, `whatsapp`, …).
    InvalidChannelParams,
    /// 1120 "Invalid sender".
    InvalidSender,
    /// 1130 "Invalid recipient".
    InvalidRecipient,
    /// 1140 "Invalid message type".
    InvalidMessageType,
    /// 1060 "Invalid client reference".
    InvalidClientRef,
}

impl V1Error {
    pub fn code(self) -> u32 {
        match self {
            V1Error::InvalidParams => 1150,
            V1Error::UnsupportedChannel => 1100,
            V1Error::InvalidChannelParams => 1110,
            V1Error::InvalidSender => 1120,
            V1Error::InvalidRecipient => 1130,
            V1Error::InvalidMessageType => 1140,
            V1Error::InvalidClientRef => 1060,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            V1Error::InvalidParams => "Invalid params",
            V1Error::UnsupportedChannel => "Unsupported channel",
            V1Error::InvalidChannelParams => "Invalid channel parameters",
            V1Error::InvalidSender => "Invalid sender",
            V1Error::InvalidRecipient => "Invalid recipient",
            V1Error::InvalidMessageType => "Invalid message type",
            V1Error::InvalidClientRef => "Invalid client reference",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            V1Error::InvalidParams | V1Error::InvalidChannelParams => {
                "The value of one or more parameters is invalid."
            }
            V1Error::UnsupportedChannel => "The specified channel is not supported.",
            V1Error::InvalidSender => "The `from` parameter is invalid for the given channel.",
            V1Error::InvalidRecipient => "The `to` parameter is invalid for the given channel.",
            V1Error::InvalidMessageType => {
                "The `message_type` is not supported on the given channel."
            }
            V1Error::InvalidClientRef => "The client reference can be up to 100 characters.",
        }
    }
}

/// A failed validation: which error, and every bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Invalid {
    pub error: V1Error,
    pub params: Vec<InvalidParam>,
}

pub const CLIENT_REF_MAX_CHARS: usize = 100;
pub const MEDIA_URL_MAX_CHARS: usize = 2000;
pub const WEBHOOK_URL_MAX_CHARS: usize = 2000;

/// The v1 channel named `name` (`viber_service`, not v0.1's
/// `viber_service_msg`).
pub fn channel(name: &str) -> Option<Channel> {
    match name {
        "sms" => Some(Channel::Sms),
        "mms" => Some(Channel::Mms),
        "whatsapp" => Some(Channel::Whatsapp),
        "messenger" => Some(Channel::Messenger),
        "viber_service" => Some(Channel::ViberServiceMsg),
        "rcs" => Some(Channel::Rcs),
        _ => None,
    }
}

/// Our channel's v1 name.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::ViberServiceMsg => "viber_service",
        other => other.as_str(),
    }
}

/// The message types v1 documents for `channel`.
pub fn message_types(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Sms => &["text"],
        Channel::Mms => &[
            "text", "image", "vcard", "audio", "video", "file", "content",
        ],
        Channel::Whatsapp => &[
            "text", "image", "audio", "video", "file", "template", "sticker", "custom", "reaction",
            "location",
        ],
        Channel::Messenger => &["text", "image", "audio", "video", "file"],
        Channel::ViberServiceMsg => &["text", "image", "video", "file"],
        Channel::Rcs => &[
            "text", "image", "video", "file", "custom", "card", "carousel",
        ],
    }
}

/// Longest `text` on `channel`, in characters.
pub fn max_text_chars(channel: Channel) -> usize {
    match channel {
        Channel::Whatsapp => 4096,
        Channel::Messenger => 640,
        Channel::Rcs => 3072,
        _ => 1000,
    }
}

/// The `ttl` range of `channel` (top-level `ttl`), if it has one.
pub fn ttl_range(channel: Channel) -> Option<std::ops::RangeInclusive<i64>> {
    match channel {
        Channel::Sms => Some(20..=604_800),
        Channel::Mms => Some(300..=259_200),
        Channel::Rcs => Some(20..=259_200),
        _ => None,
    }
}

/// Which message types carry a `caption` on `channel`.
fn takes_caption(channel: Channel, message_type: &str) -> bool {
    match channel {
        Channel::Mms => matches!(message_type, "image" | "vcard" | "audio" | "video" | "file"),
        Channel::Whatsapp => matches!(message_type, "image" | "video" | "file"),
        Channel::ViberServiceMsg => matches!(message_type, "image" | "video"),
        _ => false,
    }
}

struct Errors {
    out: Vec<(V1Error, InvalidParam)>,
}

impl Errors {
    fn add(&mut self, error: V1Error, name: impl Into<String>, reason: impl Into<String>) {
        self.out.push((error, InvalidParam::new(name, reason)));
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Validates a `POST /v1/messages` body: the message, each message of its
/// `failover`, and the chain's conditions.
pub fn validate(request: &V1Message, max_messages: usize) -> Result<(), V1Invalid> {
    let mut errs = Errors { out: Vec::new() };
    let chain = request.failover.as_deref().unwrap_or_default();
    let total = 1 + chain.len();
    check_message(request, "", total == 1, &mut errs);
    if request.failover.is_some() && chain.is_empty() {
        errs.add(
            V1Error::InvalidParams,
            "failover",
            "must hold at least one message",
        );
    }
    if total > max_messages {
        errs.add(
            V1Error::InvalidParams,
            "failover",
            format!(
                "must hold at most {} messages",
                max_messages.saturating_sub(1)
            ),
        );
    }
    for (i, message) in chain.iter().enumerate() {
        let p = format!("failover[{i}].");
        check_message(message, &p, i + 2 == total, &mut errs);
        if message.failover.is_some() {
            errs.add(
                V1Error::InvalidParams,
                format!("{p}failover"),
                "is not allowed inside `failover`: list every message in the request's own `failover`",
            );
        }
    }
    match errs.out.first().map(|(error, _)| *error) {
        None => Ok(()),
        Some(error) => Err(V1Invalid {
            error,
            params: errs.out.into_iter().map(|(_, p)| p).collect(),
        }),
    }
}

fn check_message(m: &V1Message, p: &str, last: bool, errs: &mut Errors) {
    let channel = match m.channel.as_deref() {
        None => {
            errs.add(
                V1Error::InvalidParams,
                format!("{p}channel"),
                "is required.",
            );
            None
        }
        Some(name) => {
            let c = channel(name);
            if c.is_none() {
                errs.add(
                    V1Error::UnsupportedChannel,
                    format!("{p}channel"),
                    "must be one of sms, mms, rcs, whatsapp, messenger, viber_service.",
                );
            }
            c
        }
    };
    if let Some(r) = &m.client_ref
        && chars(r) > CLIENT_REF_MAX_CHARS
    {
        errs.add(
            V1Error::InvalidClientRef,
            format!("{p}client_ref"),
            format!("must be at most {CLIENT_REF_MAX_CHARS} characters."),
        );
    }
    if let Some(url) = &m.webhook_url
        && !is_http_url(url)
    {
        errs.add(
            V1Error::InvalidParams,
            format!("{p}webhook_url"),
            format!(
                "must be an absolute http(s) URL of at most {WEBHOOK_URL_MAX_CHARS} characters."
            ),
        );
    }
    if let Some(v) = m.webhook_version.as_deref()
        && !matches!(v, "v0.1" | "v1")
    {
        errs.add(
            V1Error::InvalidParams,
            format!("{p}webhook_version"),
            "must be `v0.1` or `v1`.",
        );
    }
    check_condition(m, p, last, errs);
    let Some(channel) = channel else {
        return;
    };
    check_addresses(m, channel, p, errs);
    match m.message_type.as_deref() {
        None => errs.add(
            V1Error::InvalidParams,
            format!("{p}message_type"),
            "is required.",
        ),
        Some(t) if !message_types(channel).contains(&t) => errs.add(
            V1Error::InvalidMessageType,
            format!("{p}message_type"),
            format!(
                "must be one of {} on {}.",
                message_types(channel).join(", "),
                channel_name(channel)
            ),
        ),
        Some(t) => check_content(m, channel, t, p, errs),
    }
    check_options(m, channel, p, errs);
    match (m.ttl, ttl_range(channel)) {
        (Some(_), None) => errs.add(
            V1Error::InvalidParams,
            format!("{p}ttl"),
            format!(
                "is not used on {}{}.",
                channel_name(channel),
                if channel == Channel::ViberServiceMsg {
                    ": set `viber_service.ttl`"
                } else {
                    ""
                }
            ),
        ),
        (Some(ttl), Some(range)) if !range.contains(&ttl) => errs.add(
            V1Error::InvalidParams,
            format!("{p}ttl"),
            format!(
                "must be between {} and {} seconds on {}.",
                range.start(),
                range.end(),
                channel_name(channel)
            ),
        ),
        _ => {}
    }
    if m.context.is_some() && channel != Channel::Whatsapp {
        errs.add(
            V1Error::InvalidParams,
            format!("{p}context"),
            "is for whatsapp only.",
        );
    }
    if let Some(id) = m.context.as_ref().and_then(|c| c.message_uuid.as_deref())
        && uuid::Uuid::parse_str(id).is_err()
    {
        errs.add(
            V1Error::InvalidParams,
            format!("{p}context.message_uuid"),
            "must be a UUID.",
        );
    }
}

fn check_condition(m: &V1Message, p: &str, last: bool, errs: &mut Errors) {
    let Some(c) = &m.failover_condition else {
        return;
    };
    let name = format!("{p}failover_condition");
    if last {
        errs.add(
            V1Error::InvalidParams,
            name,
            "is not allowed on the last message of a chain: nothing follows it.",
        );
        return;
    }
    match c.condition_status.as_deref() {
        None => errs.add(
            V1Error::InvalidParams,
            format!("{name}.condition_status"),
            "is required.",
        ),
        Some("delivered") => {}
        Some("read") => {
            let reads = m
                .channel
                .as_deref()
                .and_then(channel)
                .is_none_or(|c| c.rules().reports_read);
            if !reads {
                errs.add(
                    V1Error::InvalidParams,
                    format!("{name}.condition_status"),
                    "cannot be `read`: this channel does not report reads.",
                );
            }
        }
        Some(_) => errs.add(
            V1Error::InvalidParams,
            format!("{name}.condition_status"),
            "must be `delivered` or `read`.",
        ),
    }
    match c.expiry_time {
        None => errs.add(
            V1Error::InvalidParams,
            format!("{name}.expiry_time"),
            "is required.",
        ),
        Some(t) if !EXPIRY_TIME_SECS.contains(&t) => errs.add(
            V1Error::InvalidParams,
            format!("{name}.expiry_time"),
            format!(
                "must be between {} and {} seconds.",
                EXPIRY_TIME_SECS.start(),
                EXPIRY_TIME_SECS.end()
            ),
        ),
        Some(_) => {}
    }
}

/// Whether `channel` names its `to` (`true`) or `from` by an id rather
/// than a number.
fn by_id(channel: Channel, to: bool) -> bool {
    match channel {
        Channel::Messenger => true,
        Channel::ViberServiceMsg | Channel::Rcs => !to,
        _ => false,
    }
}

fn check_addresses(m: &V1Message, channel: Channel, p: &str, errs: &mut Errors) {
    match m.to.as_deref() {
        None => errs.add(V1Error::InvalidParams, format!("{p}to"), "is required."),
        Some(to) if by_id(channel, true) => {
            if to.is_empty() || chars(to) > 50 {
                errs.add(
                    V1Error::InvalidRecipient,
                    format!("{p}to"),
                    "must be 1 to 50 characters.",
                );
            }
        }
        Some(to) => {
            if !is_e164(to) {
                errs.add(
                    V1Error::InvalidRecipient,
                    format!("{p}to"),
                    "must be an E.164 number: 7 to 15 digits, country code first, no `+` or `00`.",
                );
            } else if channel == Channel::Whatsapp
                && let Some(place) = crate::channel::whatsapp_refused(to)
            {
                errs.add(
                    V1Error::InvalidRecipient,
                    format!("{p}to"),
                    format!("is in {place}: WhatsApp may not be used there."),
                );
            }
        }
    }
    match m.from.as_deref() {
        None => errs.add(V1Error::InvalidParams, format!("{p}from"), "is required."),
        Some(from) => {
            let ok = match channel {
                // A number, or an alphanumeric sender id where allowed.
                Channel::Sms => {
                    is_e164(from)
                        || ((1..=11).contains(&from.len())
                            && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' '))
                }
                Channel::Mms => {
                    (3..=15).contains(&from.len())
                        && from.bytes().all(|b| b.is_ascii_digit())
                        && !from.starts_with('0')
                }
                Channel::Whatsapp => is_e164(from),
                Channel::Rcs => {
                    (1..=50).contains(&from.len())
                        && from
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_&".contains(&b))
                }
                Channel::Messenger | Channel::ViberServiceMsg => {
                    !from.is_empty() && chars(from) <= 50
                }
            };
            if !ok {
                let how = match channel {
                    Channel::Sms => {
                        "an E.164 number or an alphanumeric sender id of up to 11 characters"
                    }
                    Channel::Mms => "a number: E.164 or a short code",
                    Channel::Whatsapp => "an E.164 number",
                    Channel::Rcs => "an RCS agent id: letters, digits, `-`, `_` or `&`, up to 50",
                    _ => "an id of 1 to 50 characters",
                };
                errs.add(
                    V1Error::InvalidSender,
                    format!("{p}from"),
                    format!("must be {how}."),
                );
            }
        }
    }
}

fn is_http_url(url: &str) -> bool {
    url.len() <= WEBHOOK_URL_MAX_CHARS
        && url::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
}

fn check_media(media: Option<&V1Media>, channel: Channel, t: &str, p: &str, errs: &mut Errors) {
    let Some(media) = media else {
        errs.add(V1Error::InvalidParams, format!("{p}{t}"), "is required.");
        return;
    };
    let sticker_by_id = t == "sticker" && media.id.is_some();
    match (&media.url, sticker_by_id) {
        (Some(_), true) => errs.add(
            V1Error::InvalidParams,
            format!("{p}{t}"),
            "must have one of `url` or `id`, not both.",
        ),
        (None, false) => errs.add(
            V1Error::InvalidParams,
            format!("{p}{t}.url"),
            "is required.",
        ),
        (Some(url), false) if !is_http_url(url) || url.len() > MEDIA_URL_MAX_CHARS => errs.add(
            V1Error::InvalidParams,
            format!("{p}{t}.url"),
            "must be an absolute http(s) URL of at most 2000 characters.",
        ),
        _ => {}
    }
    if let Some(caption) = &media.caption {
        if !takes_caption(channel, t) {
            errs.add(
                V1Error::InvalidParams,
                format!("{p}{t}.caption"),
                format!("is not used with {t} on {}.", channel_name(channel)),
            );
        } else {
            let max = match (channel, t) {
                (Channel::Mms, _) => 2000,
                (Channel::ViberServiceMsg, "video") => 1000,
                _ => 3000,
            };
            if caption.is_empty() || chars(caption) > max {
                errs.add(
                    V1Error::InvalidParams,
                    format!("{p}{t}.caption"),
                    format!("must be 1 to {max} characters."),
                );
            }
        }
    }
    if t == "audio"
        && matches!(channel, Channel::Whatsapp | Channel::Messenger)
        && media.url.as_ref().is_some_and(|u| u.len() < 10)
    {
        errs.add(
            V1Error::InvalidParams,
            format!("{p}audio.url"),
            "must be 10 to 2000 characters.",
        );
    }
    if channel == Channel::ViberServiceMsg {
        if t == "video" {
            match &media.thumb_url {
                None => errs.add(
                    V1Error::InvalidParams,
                    format!("{p}video.thumb_url"),
                    "is required.",
                ),
                Some(url) if url.len() > 1000 || !is_http_url(url) => errs.add(
                    V1Error::InvalidParams,
                    format!("{p}video.thumb_url"),
                    "must be an absolute http(s) URL of at most 1000 characters.",
                ),
                Some(_) => {}
            }
        }
        if let Some(name) = media.name.as_deref().filter(|_| t == "file")
            && chars(name) > 25
        {
            errs.add(
                V1Error::InvalidParams,
                format!("{p}file.name"),
                "must be at most 25 characters.",
            );
        }
    }
}

fn check_content(m: &V1Message, channel: Channel, t: &str, p: &str, errs: &mut Errors) {
    let required = |errs: &mut Errors, field: &str| {
        errs.add(
            V1Error::InvalidParams,
            format!("{p}{field}"),
            "is required.",
        );
    };
    match t {
        "text" => match m.text.as_deref() {
            None => required(errs, "text"),
            Some(text) => {
                let max = max_text_chars(channel);
                if text.is_empty() || chars(text) > max {
                    errs.add(
                        V1Error::InvalidParams,
                        format!("{p}text"),
                        format!(
                            "must be 1 to {max} characters on {}.",
                            channel_name(channel)
                        ),
                    );
                }
                if let Some(s) = &m.suggestions
                    && s.len() > 11
                {
                    errs.add(
                        V1Error::InvalidParams,
                        format!("{p}suggestions"),
                        "must hold at most 11 suggestions.",
                    );
                }
            }
        },
        "image" => check_media(m.image.as_ref(), channel, t, p, errs),
        "audio" => check_media(m.audio.as_ref(), channel, t, p, errs),
        "video" => check_media(m.video.as_ref(), channel, t, p, errs),
        "file" => check_media(m.file.as_ref(), channel, t, p, errs),
        "vcard" => check_media(m.vcard.as_ref(), channel, t, p, errs),
        "sticker" => check_media(m.sticker.as_ref(), channel, t, p, errs),
        "template" => match &m.template {
            None => required(errs, "template"),
            Some(template) => {
                if template.name.as_deref().is_none_or(str::is_empty) {
                    required(errs, "template.name");
                }
                if m.whatsapp
                    .as_ref()
                    .and_then(|w| w.locale.as_deref())
                    .is_none()
                {
                    errs.add(
                        V1Error::InvalidChannelParams,
                        format!("{p}whatsapp.locale"),
                        "is required with a template.",
                    );
                }
            }
        },
        "custom" if m.custom.is_none() => required(errs, "custom"),
        "content" => match &m.content {
            None => required(errs, "content"),
            Some(items) if items.is_empty() => errs.add(
                V1Error::InvalidParams,
                format!("{p}content"),
                "must hold at least one item.",
            ),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let kind = item.get("type").and_then(Value::as_str);
                    if !matches!(kind, Some("image" | "audio" | "video" | "file" | "vcard")) {
                        errs.add(
                            V1Error::InvalidParams,
                            format!("{p}content[{i}].type"),
                            "must be one of image, audio, video, file, vcard.",
                        );
                    }
                    if !item
                        .get("url")
                        .and_then(Value::as_str)
                        .is_some_and(is_http_url)
                    {
                        errs.add(
                            V1Error::InvalidParams,
                            format!("{p}content[{i}].url"),
                            "is required: an absolute http(s) URL.",
                        );
                    }
                }
            }
        },
        "reaction" => match &m.reaction {
            None => required(errs, "reaction"),
            Some(r) => {
                match r.get("action").and_then(Value::as_str) {
                    Some("react") => {
                        if r.get("emoji").and_then(Value::as_str).is_none() {
                            required(errs, "reaction.emoji");
                        }
                    }
                    Some("unreact") => {}
                    _ => errs.add(
                        V1Error::InvalidParams,
                        format!("{p}reaction.action"),
                        "must be `react` or `unreact`.",
                    ),
                }
                if m.context
                    .as_ref()
                    .and_then(|c| c.message_uuid.as_ref())
                    .is_none()
                {
                    required(errs, "context.message_uuid");
                }
            }
        },
        "location" => match &m.location {
            None => required(errs, "location"),
            Some(l) => {
                for part in ["lat", "long"] {
                    if !l.get(part).is_some_and(Value::is_number) {
                        errs.add(
                            V1Error::InvalidParams,
                            format!("{p}location.{part}"),
                            "is required: a number.",
                        );
                    }
                }
            }
        },
        "card" => match &m.card {
            None => required(errs, "card"),
            Some(card) => {
                if !card
                    .get("media_url")
                    .and_then(Value::as_str)
                    .is_some_and(is_http_url)
                {
                    required(errs, "card.media_url");
                }
            }
        },
        "carousel" => {
            let cards = m
                .carousel
                .as_ref()
                .and_then(|c| c.get("cards"))
                .and_then(Value::as_array)
                .map(Vec::len);
            if !cards.is_some_and(|n| (2..=10).contains(&n)) {
                errs.add(
                    V1Error::InvalidParams,
                    format!("{p}carousel.cards"),
                    "must hold 2 to 10 cards.",
                );
            }
        }
        _ => {}
    }
}

fn check_options(m: &V1Message, channel: Channel, p: &str, errs: &mut Errors) {
    let foreign = |errs: &mut Errors, field: &str, set: bool, own: Channel| {
        if set && channel != own {
            errs.add(
                V1Error::InvalidChannelParams,
                format!("{p}{field}"),
                format!("is for {} messages only.", channel_name(own)),
            );
        }
    };
    foreign(errs, "sms", m.sms.is_some(), Channel::Sms);
    foreign(errs, "whatsapp", m.whatsapp.is_some(), Channel::Whatsapp);
    foreign(errs, "messenger", m.messenger.is_some(), Channel::Messenger);
    foreign(
        errs,
        "viber_service",
        m.viber_service.is_some(),
        Channel::ViberServiceMsg,
    );
    foreign(errs, "rcs", m.rcs.is_some(), Channel::Rcs);
    let bad = |errs: &mut Errors, field: &str, reason: &str| {
        errs.add(V1Error::InvalidChannelParams, format!("{p}{field}"), reason);
    };
    if let Some(sms) = &m.sms {
        if let Some(e) = sms.encoding_type.as_deref()
            && !matches!(e, "text" | "unicode" | "auto")
        {
            bad(
                errs,
                "sms.encoding_type",
                "must be one of text, unicode, auto.",
            );
        }
        for (field, value) in [
            ("content_id", &sms.content_id),
            ("entity_id", &sms.entity_id),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                bad(errs, &format!("sms.{field}"), "must not be blank.");
            }
        }
    }
    if let Some(w) = &m.whatsapp {
        if w.policy.as_deref().is_some_and(|p| p != "deterministic") {
            bad(errs, "whatsapp.policy", "must be `deterministic`.");
        }
        if w.locale
            .as_deref()
            .is_some_and(|l| l.is_empty() || l.len() > 20)
        {
            bad(errs, "whatsapp.locale", "must be a locale such as `en_US`.");
        }
    }
    if let Some(me) = &m.messenger {
        match me.category.as_deref() {
            None | Some("response" | "update") => {}
            Some("message_tag") => {
                if me.tag.as_deref().is_none_or(str::is_empty) {
                    bad(
                        errs,
                        "messenger.tag",
                        "is required when `category` is `message_tag`.",
                    );
                }
            }
            Some(_) => bad(
                errs,
                "messenger.category",
                "Must be one of `response`, `update` or `message_tag`.",
            ),
        }
    }
    if let Some(v) = &m.viber_service {
        if v.category
            .as_deref()
            .is_some_and(|c| !matches!(c, "transaction" | "promotion"))
        {
            bad(
                errs,
                "viber_service.category",
                "must be `transaction` or `promotion`.",
            );
        }
        if v.ttl.is_some_and(|t| !(30..=259_200).contains(&t)) {
            bad(
                errs,
                "viber_service.ttl",
                "must be between 30 and 259200 seconds.",
            );
        }
        if v.kind
            .as_deref()
            .is_some_and(|k| !matches!(k, "string" | "template"))
        {
            bad(
                errs,
                "viber_service.type",
                "must be `string` or `template`.",
            );
        }
        if v.action.is_some() && !matches!(m.message_type.as_deref(), Some("text" | "image")) {
            bad(
                errs,
                "viber_service.action",
                "is for text and image messages only.",
            );
        }
        if let Some(a) = &v.action {
            match (&a.url, &a.text) {
                (Some(url), Some(text)) => {
                    if !is_http_url(url) {
                        bad(
                            errs,
                            "viber_service.action.url",
                            "must be an absolute http(s) URL.",
                        );
                    }
                    if text.is_empty() || chars(text) > 30 {
                        bad(
                            errs,
                            "viber_service.action.text",
                            "must be 1 to 30 characters.",
                        );
                    }
                }
                _ => bad(errs, "viber_service.action", "needs both `url` and `text`."),
            }
        }
        let number_in = |v: &Option<String>, range: std::ops::RangeInclusive<u32>| {
            v.as_deref()
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|n| range.contains(&n))
        };
        if m.message_type.as_deref() == Some("video") {
            if !number_in(&v.duration, 1..=600) {
                bad(
                    errs,
                    "viber_service.duration",
                    "is required with a video: \"1\" to \"600\" seconds.",
                );
            }
            if !number_in(&v.file_size, 1..=200) {
                bad(
                    errs,
                    "viber_service.file_size",
                    "is required with a video: \"1\" to \"200\" MB.",
                );
            }
        }
    } else if channel == Channel::ViberServiceMsg && m.message_type.as_deref() == Some("video") {
        bad(errs, "viber_service.duration", "is required with a video.");
        bad(errs, "viber_service.file_size", "is required with a video.");
    }
    if let Some(category) = m.rcs.as_ref().and_then(|r| r.get("category")) {
        let known = [
            "authentication",
            "transaction",
            "promotion",
            "service-request",
            "acknowledgement",
            "acknoledgement",
        ];
        if !category.as_str().is_some_and(|c| known.contains(&c)) {
            bad(
                errs,
                "rcs.category",
                "must be one of authentication, transaction, promotion, service-request, acknowledgement.",
            );
        }
    }
}

impl V1Message {
    /// The channel, once validated.
    pub fn channel(&self) -> Option<Channel> {
        self.channel.as_deref().and_then(channel)
    }

    /// This message as our model holds it, `v1` keeping it as sent
    /// (without `failover`). Only for a validated message.
    pub fn to_outbound(&self) -> OutboundMessage {
        let channel = self.channel();
        let address = |value: &Option<String>, to: bool| {
            value.as_ref().map(|v| {
                let id = channel.is_some_and(|c| by_id(c, to));
                Address {
                    kind: channel,
                    id: id.then(|| v.clone()),
                    number: (!id).then(|| v.clone()),
                }
            })
        };
        let mut original = self.clone();
        original.failover = None;
        OutboundMessage {
            to: address(&self.to, true),
            from: address(&self.from, false),
            message: Some(MessageBody {
                content: Some(self.content()),
                viber_service_msg: self.viber_service.as_ref().map(|v| ViberOptions {
                    category: match v.category.as_deref() {
                        Some("promotion") => Some(ViberCategory::Promotion),
                        Some(_) => Some(ViberCategory::Transaction),
                        None => None,
                    },
                    ttl: v.ttl,
                    kind: v.kind.clone(),
                }),
                messenger: self.messenger.as_ref().map(|m| MessengerOptions {
                    category: match m.category.as_deref() {
                        Some("update") => Some(MessengerCategory::Update),
                        Some("message_tag") => Some(MessengerCategory::MessageTag),
                        Some(_) => Some(MessengerCategory::Response),
                        None => None,
                    },
                    tag: m.tag.clone(),
                }),
                whatsapp: self.whatsapp.as_ref().map(|w| WhatsappOptions {
                    policy: w.policy.as_ref().map(|_| WhatsappPolicy::Deterministic),
                    locale: w.locale.clone(),
                }),
            }),
            client_ref: self.client_ref.clone(),
            failover: self.failover_condition.as_ref().map(|c| Failover {
                expiry_time: c.expiry_time,
                condition_status: match c.condition_status.as_deref() {
                    Some("read") => Some(ConditionStatus::Read),
                    _ => Some(ConditionStatus::Delivered),
                },
            }),
            v1: Some(Box::new(original)),
        }
    }

    fn content(&self) -> Content {
        let media = |m: &Option<V1Media>| {
            m.as_ref().map(|m| Media {
                url: m.url.clone(),
                caption: m.caption.clone(),
            })
        };
        let t = self.message_type.as_deref().unwrap_or_default();
        let mut content = Content::default();
        let kind = match t {
            "text" => {
                content.text = self.text.clone();
                ContentType::Text
            }
            "image" => {
                content.image = media(&self.image);
                ContentType::Image
            }
            "audio" => {
                content.audio = media(&self.audio);
                ContentType::Audio
            }
            "video" => {
                content.video = media(&self.video);
                ContentType::Video
            }
            "file" => {
                content.file = media(&self.file);
                ContentType::File
            }
            "template" => {
                content.template = self.template.as_ref().map(|t| Template {
                    name: t.name.clone(),
                    parameters: t.parameters.as_ref().map(|ps| {
                        ps.iter()
                            .map(|p| TemplateParameter {
                                default: Some(p.clone()),
                            })
                            .collect()
                    }),
                });
                ContentType::Template
            }
            "custom" => {
                content.custom = self.custom.clone();
                ContentType::Custom
            }
            other => {
                // A type only v1 has: its object, under its own name.
                let object = match other {
                    "vcard" => serde_json::to_value(&self.vcard),
                    "sticker" => serde_json::to_value(&self.sticker),
                    "content" => serde_json::to_value(&self.content),
                    "reaction" => serde_json::to_value(&self.reaction),
                    "location" => serde_json::to_value(&self.location),
                    "card" => serde_json::to_value(&self.card),
                    _ => serde_json::to_value(&self.carousel),
                }
                .unwrap_or_default();
                let mut custom = Map::new();
                custom.insert("message_type".into(), other.into());
                custom.insert(other.into(), object);
                content.custom = Some(custom);
                ContentType::Custom
            }
        };
        content.kind = Some(kind);
        content
    }
}

#[cfg(test)]
mod tests;
