//! Channels and the rules each one imposes, kept as one table so that a
//! reader (and a table-driven test) sees every rule in one place.

use serde::{Deserialize, Serialize};

use crate::message::ContentType;

/// A messaging channel, as named in `to.type` and `from.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Mms,
    Whatsapp,
    Messenger,
    ViberServiceMsg,
    /// RCS business messaging (Messages API v1 only: v0.1 has no RCS).
    Rcs,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Sms,
        Channel::Mms,
        Channel::Whatsapp,
        Channel::Messenger,
        Channel::ViberServiceMsg,
        Channel::Rcs,
    ];

    /// The wire name (`sms`, `viber_service_msg`, …), also used in queue names.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Mms => "mms",
            Channel::Whatsapp => "whatsapp",
            Channel::Messenger => "messenger",
            Channel::ViberServiceMsg => "viber_service_msg",
            Channel::Rcs => "rcs",
        }
    }

    /// The channel named `name` (its wire name).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn rules(self) -> &'static ChannelRules {
        match self {
            Channel::Sms => &SMS,
            Channel::Mms => &MMS,
            Channel::Whatsapp => &WHATSAPP,
            Channel::Messenger => &MESSENGER,
            Channel::ViberServiceMsg => &VIBER,
            Channel::Rcs => &RCS,
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies one side of a conversation on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// `number` in E.164 form: digits only, country code first, no `+`/`00`.
    E164,
    /// `number` that is an E.164 number or a short code (MMS senders are US
    /// short codes): digits only, 3 to 15 of them, no leading zero.
    ShortCodeOrE164,
    /// `id`: a platform identifier such as a Messenger PSID or a Viber
    /// service message id, 1 to 50 characters.
    Id,
}

/// Which file extensions a media content type accepts on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extensions {
    /// Any extension (Messenger files: "a wide range of attachments").
    Any,
    OneOf(&'static [&'static str]),
}

#[derive(Debug)]
pub struct ChannelRules {
    pub channel: Channel,
    pub content_types: &'static [ContentType],
    /// Longest `text`, counted in Unicode characters.
    pub max_text_chars: usize,
    pub image: Extensions,
    pub audio: Extensions,
    pub video: Extensions,
    pub file: Extensions,
    pub to: AddressKind,
    pub from: AddressKind,
    /// Whether the channel reports `read`, so `condition_status: read` makes sense.
    pub reports_read: bool,
}

use ContentType as C;

const NONE: Extensions = Extensions::OneOf(&[]);

pub static SMS: ChannelRules = ChannelRules {
    channel: Channel::Sms,
    content_types: &[C::Text],
    max_text_chars: 1000,
    image: NONE,
    audio: NONE,
    video: NONE,
    file: NONE,
    to: AddressKind::E164,
    from: AddressKind::E164,
    reports_read: false,
};

pub static MMS: ChannelRules = ChannelRules {
    channel: Channel::Mms,
    content_types: &[C::Image],
    max_text_chars: 1000,
    image: Extensions::OneOf(&["jpg", "jpeg", "png", "gif"]),
    audio: NONE,
    video: NONE,
    file: NONE,
    to: AddressKind::E164,
    from: AddressKind::ShortCodeOrE164,
    reports_read: false,
};

pub static WHATSAPP: ChannelRules = ChannelRules {
    channel: Channel::Whatsapp,
    content_types: &[C::Text, C::Image, C::Audio, C::Video, C::File, C::Template],
    max_text_chars: 4096,
    image: Extensions::OneOf(&["jpg", "jpeg", "png"]),
    audio: Extensions::OneOf(&["aac", "m4a", "amr", "mp3", "opus"]),
    video: Extensions::OneOf(&["mp4", "3gpp"]),
    file: Extensions::OneOf(&["pdf", "doc", "docx", "ppt", "pptx", "xls", "xlsx"]),
    to: AddressKind::E164,
    from: AddressKind::E164,
    reports_read: true,
};

/// `custom` is allowed on Messenger: the spec reserves it for channel-native
/// Messenger payloads passed through unchanged.
pub static MESSENGER: ChannelRules = ChannelRules {
    channel: Channel::Messenger,
    content_types: &[C::Text, C::Image, C::Audio, C::Video, C::File, C::Custom],
    max_text_chars: 640,
    image: Extensions::OneOf(&["jpg", "jpeg", "png", "gif"]),
    audio: Extensions::OneOf(&["mp3"]),
    video: Extensions::OneOf(&["mp4"]),
    file: Extensions::Any,
    to: AddressKind::Id,
    from: AddressKind::Id,
    reports_read: true,
};

pub static VIBER: ChannelRules = ChannelRules {
    channel: Channel::ViberServiceMsg,
    content_types: &[C::Text, C::Image, C::Custom],
    max_text_chars: 1000,
    image: Extensions::OneOf(&["jpg", "jpeg", "png"]),
    audio: NONE,
    video: NONE,
    file: NONE,
    to: AddressKind::E164,
    from: AddressKind::Id,
    reports_read: true,
};

/// RCS: an agent (`from`, its id) writes to a phone number.
pub static RCS: ChannelRules = ChannelRules {
    channel: Channel::Rcs,
    content_types: &[C::Text, C::Image, C::Video, C::File, C::Custom],
    max_text_chars: 3072,
    image: Extensions::OneOf(&["jpg", "jpeg", "png", "gif"]),
    audio: NONE,
    video: Extensions::OneOf(&["mp4", "m4v", "mov", "3gp", "webm"]),
    file: Extensions::OneOf(&["pdf"]),
    to: AddressKind::E164,
    from: AddressKind::Id,
    reports_read: true,
};

/// Numbering prefixes of the places the WhatsApp Business Solution may not
/// send to or receive from (the provider's guide: Crimea, Cuba, Iran, North
/// Korea and Syria), by country calling code and, for Crimea, the area
/// codes in use there under both the Ukrainian (+380 65, +380 692) and the
/// Russian (+7 365, +7 869, and the +7 978 mobile range) numbering plans.
pub const WHATSAPP_REFUSED_PREFIXES: &[(&str, &str)] = &[
    ("53", "Cuba"),
    ("98", "Iran"),
    ("850", "North Korea"),
    ("963", "Syria"),
    ("38065", "Crimea"),
    ("380692", "Crimea"),
    ("7365", "Crimea"),
    ("7869", "Crimea"),
    ("7978", "Crimea"),
];

/// Where an E.164 number (digits, no `+`) is, when WhatsApp may not be used
/// with it.
pub fn whatsapp_refused(number: &str) -> Option<&'static str> {
    WHATSAPP_REFUSED_PREFIXES
        .iter()
        .find(|(prefix, _)| number.starts_with(prefix))
        .map(|(_, place)| *place)
}
