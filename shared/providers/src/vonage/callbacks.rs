//! Vonage's webhooks: their signature, the message status and the inbound
//! message.
//!
//! **Signature** (<https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks>):
//! every Messages webhook carries `Authorization: Bearer <JWT>`, signed
//! HS256 with the account's signature secret, whose `payload_hash` claim
//! is the hex SHA-256 of the exact body. Both are checked: the JWT proves
//! Vonage sent it, the hash that this body is the one Vonage signed. An
//! `exp`, when present, is honoured; `iat` is not limited, since a
//! receipt Vonage retries later is still true, and replaying one changes
//! nothing (statuses only move forward).
//!
//! **Message status** (<https://developer.vonage.com/en/api/messages>,
//! webhook "Message Status", v1):
//!
//! ```json
//! {"message_uuid":"…","to":"447700900000","from":"447700900001","timestamp":"2020-01-01T14:00:00.000Z",
//!  "status":"delivered","channel":"sms","client_ref":"…","usage":{"currency":"EUR","price":"0.0333"}}
//! {"message_uuid":"…","status":"undeliverable","error":{"type":"https://developer.vonage.com/api-errors/messages#1330",
//!  "title":1330,"detail":"…"}, …}
//! ```
//!
//! **Inbound message** (same page, webhook "Inbound Message", v1):
//!
//! ```json
//! {"channel":"viber_service","message_uuid":"…","to":"ACME","from":"447700900123",
//!  "timestamp":"2020-01-01T14:00:00.000Z","message_type":"text","text":"hi"}
//! ```

use aws_lc_rs::digest;
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::channel::AddressKind;
use dispatch_model::record::{MessageError, MessageStatus, Usage, now_ms};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::errors::{Problem, lookup};
use super::parse_channel;
use crate::{CallbackError, CallbackEvent, HeaderMap, Inbound};
use dispatch_infra::config::ProviderSettings;

fn unauthorized(why: impl Into<String>) -> CallbackError {
    CallbackError::Unauthorized(why.into())
}

fn malformed(why: impl std::fmt::Display) -> CallbackError {
    CallbackError::Malformed(format!("not a Vonage webhook: {why}"))
}

#[derive(Deserialize)]
struct SignedClaims {
    #[serde(default)]
    payload_hash: Option<String>,
}

/// Checks the `Authorization: Bearer` JWT of a webhook against the
/// `signature_secret` of `settings`, and its `payload_hash` against
/// `body`.
pub fn verify(
    settings: &ProviderSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), CallbackError> {
    let secret = settings.credential("signature_secret");
    if secret.is_empty() {
        return Err(unauthorized(
            "No signature_secret is configured to verify Vonage's webhooks.",
        ));
    }
    let token = bearer(headers)
        .ok_or_else(|| unauthorized("The webhook carries no Bearer JWT: is signing enabled?"))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Vonage's claims are iat, jti, iss, payload_hash, api_key,
    // application_id: no exp to require (one present is still checked).
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<SignedClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| unauthorized(format!("The webhook's JWT does not verify: {e}")))?
    .claims;
    let signed = claims
        .payload_hash
        .as_deref()
        .and_then(|h| hex::decode(h.trim()).ok())
        .ok_or_else(|| unauthorized("The webhook's JWT has no payload_hash."))?;
    let actual = digest::digest(&digest::SHA256, body);
    if bool::from(signed.as_slice().ct_eq(actual.as_ref())) {
        Ok(())
    } else {
        Err(unauthorized(
            "The webhook's body does not match the payload_hash it was signed with.",
        ))
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(reqwest::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `2020-01-01T14:00:00.000Z` (RFC 3339, or any ISO 8601) as ms since
/// the Unix epoch.
pub fn timestamp_ms(text: &str) -> Option<i64> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let t = time::OffsetDateTime::parse(text.trim(), &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(text.trim(), &Iso8601::DEFAULT))
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// When the event happened: its timestamp, or now when Vonage's cannot be
/// read (the event matters more than the instant).
fn at_ms(timestamp: Option<&str>) -> i64 {
    timestamp.and_then(timestamp_ms).unwrap_or_else(now_ms)
}

#[derive(Deserialize)]
struct StatusBody {
    message_uuid: String,
    status: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    error: Option<Problem>,
    #[serde(default)]
    usage: Option<UsageBody>,
    #[serde(default)]
    sms: Option<SmsBody>,
}

/// `sms` of an SMS status: how many messages the text took.
#[derive(Deserialize)]
struct SmsBody {
    #[serde(default)]
    count_total: Option<Value>,
}

#[derive(Deserialize)]
struct UsageBody {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    price: Option<Value>,
}

/// A message-status webhook as receipts: none for `submitted` (we report
/// that on acceptance already) or a status we do not know.
pub fn status(body: &[u8]) -> Result<Vec<CallbackEvent>, CallbackError> {
    let body: StatusBody = serde_json::from_slice(body).map_err(malformed)?;
    if body.message_uuid.is_empty() {
        return Err(malformed("message_uuid is empty"));
    }
    let status = match body.status.as_str() {
        "delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "rejected" => MessageStatus::Rejected,
        "undeliverable" => MessageStatus::Undeliverable,
        "submitted" => return Ok(Vec::new()),
        other => {
            tracing::debug!(status = other, "Vonage status ignored");
            return Ok(Vec::new());
        }
    };
    let error = status.is_failure().then(|| failure(body.error.as_ref()));
    let usage = match status {
        MessageStatus::Delivered => body.usage.and_then(|u| usage(u, body.sms.as_ref())),
        _ => None,
    };
    Ok(vec![CallbackEvent::Receipt(Receipt {
        provider_message_id: body.message_uuid,
        status,
        at_ms: at_ms(body.timestamp.as_deref()),
        error,
        usage,
    })])
}

/// The error of a failed message: its code from `title` or the `type`
/// anchor (1330, "Unknown", when neither is one), its reason from
/// `detail`.
fn failure(problem: Option<&Problem>) -> MessageError {
    let code = problem.and_then(Problem::code).unwrap_or(1330);
    let reason = problem
        .and_then(|p| p.detail.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| lookup(code).0.to_owned());
    MessageError { code, reason }
}

/// `usage` with a price, written as a string or a number; for SMS, the
/// segment count of `sms.count_total` when Vonage gives it.
fn usage(u: UsageBody, sms: Option<&SmsBody>) -> Option<Usage> {
    let price = match u.price? {
        Value::String(s) if !s.is_empty() => s,
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let segments = sms
        .and_then(|s| s.count_total.as_ref())
        .and_then(|c| match c {
            Value::String(s) => s.trim().parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        });
    Some(Usage {
        currency: u
            .currency
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "EUR".into()),
        price,
        segments,
        ..Usage::default()
    })
}

#[derive(Deserialize)]
struct InboundBody {
    message_uuid: String,
    channel: String,
    from: String,
    to: String,
    #[serde(default)]
    timestamp: Option<String>,
    message_type: String,
}

/// An inbound-message webhook as an [`Inbound`].
pub fn inbound(raw: &[u8]) -> Result<Vec<CallbackEvent>, CallbackError> {
    let value: Value = serde_json::from_slice(raw).map_err(malformed)?;
    let body = InboundBody::deserialize(&value).map_err(malformed)?;
    if body.message_uuid.is_empty() {
        return Err(malformed("message_uuid is empty"));
    }
    let channel = parse_channel(&body.channel)
        .ok_or_else(|| malformed(format!("unknown channel `{}`", body.channel)))?;
    let rules = channel.rules();
    Ok(vec![CallbackEvent::Inbound(Inbound {
        provider_message_id: body.message_uuid,
        channel,
        // The user writes from what we send to, to what we send from.
        from: party(rules.to, &body.from),
        to: party(rules.from, &body.to),
        timestamp_ms: at_ms(body.timestamp.as_deref()),
        message: json!({ "content": content(&body.message_type, &value, channel) }),
    })])
}

/// A number as E.164 digits (as our API writes it), an id as given.
fn party(kind: AddressKind, value: &str) -> String {
    match kind {
        AddressKind::E164 | AddressKind::ShortCodeOrE164 => {
            let digits = crate::digits(value);
            if digits.is_empty() {
                value.to_owned()
            } else {
                digits
            }
        }
        AddressKind::Id => value.to_owned(),
    }
}

/// Our `content` for an inbound message: text and media as our model
/// writes them; every other type (location, sticker, reply, vcard, …) as
/// `custom`, with Vonage's own fields, so that nothing is lost.
fn content(message_type: &str, body: &Value, channel: Channel) -> Value {
    match message_type {
        "text" => json!({
            "type": "text",
            "text": body.get("text").and_then(Value::as_str).unwrap_or_default(),
        }),
        "image" | "audio" | "video" | "file" => {
            let media = body.get(message_type);
            let mut object = Map::new();
            for field in ["url", "caption", "name"] {
                if let Some(v) = media.and_then(|m| m.get(field)).filter(|v| v.is_string()) {
                    object.insert(field.into(), v.clone());
                }
            }
            json!({ "type": message_type, message_type: object })
        }
        other => {
            tracing::debug!(message_type = other, %channel, "Vonage inbound type kept as custom");
            let mut custom = Map::new();
            custom.insert("message_type".into(), other.into());
            if let Some(v) = body.get(other) {
                custom.insert(other.into(), v.clone());
            }
            json!({ "type": "custom", "custom": custom })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_ms("2020-01-01T14:00:00.000Z"),
            Some(1_577_887_200_000)
        );
        assert_eq!(
            timestamp_ms("2020-01-01T14:00:00Z"),
            Some(1_577_887_200_000)
        );
        assert_eq!(
            timestamp_ms("2020-01-01T15:00:00.250+01:00"),
            Some(1_577_887_200_250)
        );
        assert_eq!(timestamp_ms("yesterday"), None);
        assert_eq!(timestamp_ms(""), None);
    }

    #[test]
    fn statuses() {
        let events = |body: &str| status(body.as_bytes());
        assert_eq!(
            events(
                r#"{"message_uuid":"m","status":"submitted","timestamp":"2020-01-01T14:00:00.000Z"}"#
            ),
            Ok(vec![])
        );
        assert_eq!(
            events(r#"{"message_uuid":"m","status":"queued"}"#),
            Ok(vec![])
        );
        let delivered = events(
            r#"{"message_uuid":"m","status":"delivered","timestamp":"2020-01-01T14:00:00.000Z","usage":{"currency":"EUR","price":"0.0333"},"channel":"sms","sms":{"count_total":"2"}}"#,
        );
        assert_eq!(
            delivered,
            Ok(vec![CallbackEvent::Receipt(Receipt {
                provider_message_id: "m".into(),
                status: MessageStatus::Delivered,
                at_ms: 1_577_887_200_000,
                error: None,
                usage: Some(Usage {
                    segments: Some(2),
                    ..Usage::eur("0.0333")
                }),
            })])
        );
        let failed = |body: &str| match events(body) {
            Ok(events) => match events.as_slice() {
                [CallbackEvent::Receipt(r)] => r.error.clone(),
                _ => None,
            },
            Err(_) => None,
        };
        let by_title = failed(
            r#"{"message_uuid":"m","status":"undeliverable","error":{"type":"https://developer.nexmo.com/api-errors/messages-olympus#1260","title":1260,"detail":"Destination unreachable"}}"#,
        );
        assert_eq!(
            by_title,
            Some(MessageError {
                code: 1260,
                reason: "Destination unreachable".into()
            })
        );
        let by_anchor = failed(
            r#"{"message_uuid":"m","status":"rejected","error":{"type":"https://developer.vonage.com/api-errors/messages#1300","title":"Not part of the provider network"}}"#,
        );
        assert_eq!(by_anchor.map(|e| e.code), Some(1300));
        let bare = failed(r#"{"message_uuid":"m","status":"undeliverable"}"#);
        assert_eq!(
            bare,
            Some(MessageError {
                code: 1330,
                reason: "Unknown".into()
            })
        );
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"message_uuid":"","status":"read"}"#,
            r#"{"message_uuid":1,"status":"read"}"#,
        ] {
            assert!(
                matches!(events(bad), Err(CallbackError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn inbound_messages() {
        let one = |body: Value| match inbound(body.to_string().as_bytes()) {
            Ok(mut events) if events.len() == 1 => match events.remove(0) {
                CallbackEvent::Inbound(i) => Some(i),
                _ => None,
            },
            _ => None,
        };
        let viber = one(json!({"channel":"viber_service","message_uuid":"u","to":"ACME","from":"+447700900123",
                               "timestamp":"2020-01-01T14:00:00.000Z","message_type":"text","text":"hi"}))
        .expect("viber");
        assert_eq!(viber.channel, Channel::ViberServiceMsg);
        assert_eq!(
            (viber.from.as_str(), viber.to.as_str()),
            ("447700900123", "ACME")
        );
        assert_eq!(
            viber.message,
            json!({"content":{"type":"text","text":"hi"}})
        );
        assert_eq!(viber.timestamp_ms, 1_577_887_200_000);

        let messenger = one(
            json!({"channel":"messenger","message_uuid":"u","to":"page-1","from":"psid-9",
                                   "timestamp":"2020-01-01T14:00:00.000Z","message_type":"image",
                                   "image":{"url":"https://x/a.jpg"}}),
        )
        .expect("messenger");
        assert_eq!(
            (messenger.from.as_str(), messenger.to.as_str()),
            ("psid-9", "page-1")
        );
        assert_eq!(
            messenger.message,
            json!({"content":{"type":"image","image":{"url":"https://x/a.jpg"}}})
        );

        let location = one(json!({"channel":"whatsapp","message_uuid":"u","to":"447700900000","from":"447700900001",
                                  "message_type":"location","location":{"lat":1.5,"long":2.5}}))
        .expect("location");
        assert_eq!(
            location.message,
            json!({"content":{"type":"custom","custom":{"message_type":"location","location":{"lat":1.5,"long":2.5}}}})
        );

        for bad in [
            json!({"channel":"telegram","message_uuid":"u","to":"a","from":"b","message_type":"text"}),
            json!({"channel":"sms","message_uuid":"","to":"a","from":"b","message_type":"text"}),
            json!({"channel":"sms","to":"a","from":"b","message_type":"text"}),
            json!([1, 2]),
        ] {
            assert!(
                matches!(
                    inbound(bad.to_string().as_bytes()),
                    Err(CallbackError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
