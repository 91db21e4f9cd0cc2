//! Request bodies of `POST /v0.1/messages` and `POST /v0.1/dispatch`.
//!
//! Unknown fields are ignored (clients in the field add their own), and
//! absent optional fields are not written back out, so an accepted request
//! round-trips through the queue unchanged.

use serde::{Deserialize, Serialize};

use crate::channel::Channel;

/// One outbound message: the body of `POST /v0.1/messages`, and one step of
/// a dispatch workflow (which adds `failover`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    /// Only in a dispatch workflow, and on every step but the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// A Messages API v1 message as it was sent (`crate::v1`), of which
    /// the fields above are the mapping. Never read from a v0.1 request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub v1: Option<Box<crate::v1::V1Message>>,
}

impl OutboundMessage {
    /// The channel, once validated (`to.type`, equal to `from.type`).
    pub fn channel(&self) -> Option<Channel> {
        self.to.as_ref().and_then(|a| a.kind)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viber_service_msg: Option<ViberOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messenger: Option<MessengerOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    Text,
    Image,
    Audio,
    Video,
    File,
    Template,
    Custom,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text",
            ContentType::Image => "image",
            ContentType::Audio => "audio",
            ContentType::Video => "video",
            ContentType::File => "file",
            ContentType::Template => "template",
            ContentType::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ContentType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// A channel-native payload passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<TemplateParameter>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateParameter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViberCategory {
    Transaction,
    Promotion,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViberOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<ViberCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Viber's own message type (for example `template`), passed through.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessengerCategory {
    Response,
    Update,
    MessageTag,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessengerOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<MessengerCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhatsappPolicy {
    Fallback,
    Deterministic,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WhatsappOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<WhatsappPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionStatus {
    Delivered,
    Read,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_status: Option<ConditionStatus>,
}

/// `v1` read leniently: in a v0.1 request it is an unknown field, which
/// must not fail the request whatever it holds (the handlers drop it).
fn lenient<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<crate::v1::V1Message>>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// The body of `POST /v0.1/dispatch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateWorkflow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Vec<OutboundMessage>>,
}
