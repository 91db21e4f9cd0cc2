//! The simulator's wire contract: what a sender posts, what the simulator
//! answers, the receipts it calls back with, and how those are signed.
//!
//! These types are shared by the simulator, the sender's simulator adapter
//! and ingest's callback endpoint, so all three agree on one definition.
//! The protocol as a whole is described in the simulator's crate
//! documentation (`services/provider-sim`).

use dispatch_model::Channel;
use dispatch_model::record::{MessageError, MessageStatus, Usage};
use serde::{Deserialize, Serialize};

/// Path of the send endpoint.
pub const SEND_PATH: &str = "/v1/messages";

/// Header carrying a callback's signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-simulator-signature";

/// `POST /v1/messages`: one message to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The sender's own id for the message (Dispatch puts the message
    /// uuid here); opaque to the simulator, echoed in every receipt.
    pub reference: String,
    pub channel: Channel,
    /// The recipient's number or id; its last two digits pick the outcome.
    pub to: String,
    pub from: String,
    /// Where receipts are posted; without it none are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<String>,
    /// The message body, in whatever shape the channel uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
}

/// `202 Accepted`: the simulator took the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAccepted {
    /// The simulator's own id, `sim-<uuid>`.
    pub message_id: String,
}

/// The body of every error answer (400, 401, 422, 429, 503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ProviderError,
}

/// A provider error code (1000–1382) and its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    pub code: u32,
    pub reason: String,
}

impl ProviderError {
    pub fn new(code: u32, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// 1010, answered with 401 to a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(1010, "Missing or invalid credentials")
    }

    /// 1020, answered with 400 to a body that is not a valid [`SendRequest`].
    pub fn invalid(detail: impl std::fmt::Display) -> Self {
        Self::new(1020, format!("Invalid parameters: {detail}"))
    }

    /// 1030, answered with 503 by a transient failure.
    pub fn unavailable() -> Self {
        Self::new(1030, "Provider temporarily unavailable")
    }

    /// 1300, the default permanent rejection (422).
    pub fn not_in_network() -> Self {
        Self::new(1300, "Not part of the provider network")
    }
}

impl From<ProviderError> for MessageError {
    fn from(e: ProviderError) -> Self {
        MessageError {
            code: e.code,
            reason: e.reason,
        }
    }
}

impl From<MessageError> for ProviderError {
    fn from(e: MessageError) -> Self {
        ProviderError {
            code: e.code,
            reason: e.reason,
        }
    }
}

impl From<ProviderError> for ErrorBody {
    fn from(error: ProviderError) -> Self {
        ErrorBody { error }
    }
}

/// A receipt, posted as JSON to the send's `status_callback` and signed
/// with [`SIGNATURE_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub message_id: String,
    pub reference: String,
    /// `delivered`, `read` or `undeliverable`.
    pub status: MessageStatus,
    /// When the status was reached, in ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// With `delivered` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// With `undeliverable` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
}

fn key(secret: &str) -> aws_lc_rs::hmac::Key {
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes())
}

/// The [`SIGNATURE_HEADER`] value for `body`:
/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let tag = aws_lc_rs::hmac::sign(&key(secret), body);
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// Whether `header_value` is the signature of exactly `body` under
/// `secret`; the comparison is constant-time.
pub fn verify(secret: &str, body: &[u8], header_value: &str) -> bool {
    let Some(hex_tag) = header_value.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return false;
    };
    aws_lc_rs::hmac::verify(&key(secret), body, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let body = br#"{"message_id":"sim-1","status":"delivered"}"#;
        let sig = sign("s3cret", body);
        assert!(sig.starts_with("sha256="));
        let hex_part = &sig["sha256=".len()..];
        assert_eq!(hex_part.len(), 64);
        assert!(
            hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(verify("s3cret", body, &sig));
        // Upper-case hex is the same signature.
        assert!(verify(
            "s3cret",
            body,
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tampering_is_detected() {
        let body = br#"{"status":"delivered"}"#;
        let sig = sign("s3cret", body);
        assert!(!verify("s3cret", br#"{"status":"undeliverable"}"#, &sig));
        assert!(!verify("other", body, &sig));
        let mut flipped = sig.clone();
        let last = if flipped.ends_with('0') { "1" } else { "0" };
        flipped.replace_range(flipped.len() - 1.., last);
        assert!(!verify("s3cret", body, &flipped));
        assert!(!verify("s3cret", body, &sig[..sig.len() - 2]));
        assert!(!verify("s3cret", body, sig.trim_start_matches("sha256=")));
        assert!(!verify("s3cret", body, "sha256=zz"));
        assert!(!verify("s3cret", body, ""));
    }

    #[test]
    fn callback_json_shape() {
        let cb = Callback {
            message_id: "sim-1".into(),
            reference: "ref".into(),
            status: MessageStatus::Read,
            timestamp_ms: 5,
            usage: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&cb).expect("serialise"),
            r#"{"message_id":"sim-1","reference":"ref","status":"read","timestamp_ms":5}"#
        );
        let req: SendRequest = serde_json::from_str(
            r#"{"reference":"r","channel":"viber_service_msg","to":"1","from":"A"}"#,
        )
        .expect("parse");
        assert_eq!(req.channel, Channel::ViberServiceMsg);
        assert!(req.status_callback.is_none() && req.message.is_none());
    }
}

/// A message a user sent to one of our numbers or ids, posted as JSON to
/// `{callback}/callbacks/simulator/inbound` and signed like receipts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// The simulator's id of the inbound message.
    pub message_id: String,
    pub channel: Channel,
    /// The user: a number, or an id (messenger).
    pub from: String,
    /// Our number or id the user wrote to.
    pub to: String,
    pub timestamp_ms: i64,
    /// The message as the Messages API's inbound webhook shows it:
    /// `{"content": {"type": "text", "text": "…"}}`.
    pub message: serde_json::Value,
}

/// `POST /control/inbound`: make a user write to us.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InboundRequest {
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub message: serde_json::Value,
    /// Where to post it; by default `{callback_url}/callbacks/simulator/inbound`
    /// of the simulator's configuration. Required with `provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Post it as this provider's fake would (`vonage`, `twilio`,
    /// `meta`), in its format and with its signature; the simulator's
    /// own format by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}
