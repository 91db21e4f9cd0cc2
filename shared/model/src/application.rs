//! The application record: what the Applications API stores under
//! `{p}:application:{id}` (a JSON string), read back by ingest for the API
//! and for JWT keys, and by the notifier for where webhooks go.
//!
//! One struct for every reader, so that a field is named once. It
//! serializes exactly as ingest has always written it (field order,
//! absent capabilities left out), so stored records and the API's
//! `capabilities` stay byte for byte what they were. Every field has a
//! default: a record missing one (written by hand, or by a tool) still
//! reads, as it did for the notifier's untyped look-ups.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::WebhookKind;

/// An application as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplicationRecord {
    pub id: Uuid,
    /// The owning account's `api_key`.
    pub account: String,
    pub name: String,
    pub capabilities: Capabilities,
    /// The RSA public key (PEM) that verifies the application's JWTs.
    pub public_key: String,
    pub created_at_ms: i64,
}

/// What the application does. Only `messages` has an effect here; the
/// others are kept as given so that clients sending them round-trip
/// unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessagesCapability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtc: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vbc: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagesCapability {
    /// The format of the webhooks of Messages API v1 sends (`v0.1` or
    /// `v1`, the default) when a message names none (`webhook_version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub webhooks: MessagesWebhooks,
}

/// The `messages` capability's webhook URLs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagesWebhooks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_url: Option<Webhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_url: Option<Webhook>,
    /// Our extension: where final reports go instead of `status_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_report_url: Option<Webhook>,
}

/// One webhook URL and the method to call it with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Webhook {
    pub address: String,
    pub http_method: String,
}

impl Default for Webhook {
    /// `POST`, the only method the API accepts (and the notifier's
    /// fallback for one it cannot use).
    fn default() -> Self {
        Webhook {
            address: String::new(),
            http_method: "POST".to_owned(),
        }
    }
}

/// Which of the `messages` webhooks a webhook job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookUrl {
    InboundUrl,
    StatusUrl,
    FinalReportUrl,
}

impl WebhookUrl {
    /// The field's name in the record and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookUrl::InboundUrl => "inbound_url",
            WebhookUrl::StatusUrl => "status_url",
            WebhookUrl::FinalReportUrl => "final_report_url",
        }
    }
}

impl ApplicationRecord {
    /// The `messages` capability's webhooks, if it has any.
    pub fn webhooks(&self) -> Option<&MessagesWebhooks> {
        self.capabilities.messages.as_ref().map(|m| &m.webhooks)
    }

    /// Where a webhook of `kind` goes: inbound messages to `inbound_url`,
    /// statuses to `status_url`, final reports to `final_report_url` when
    /// the application names one, else to `status_url`. The webhook is
    /// `None` when the application has no such URL (the job has nowhere
    /// to go). A v1 chain's report goes to `final_report_url` only.
    pub fn webhook_for(&self, kind: WebhookKind) -> (WebhookUrl, Option<&Webhook>) {
        let webhooks = self.webhooks();
        let url = match kind {
            WebhookKind::InboundMessage => WebhookUrl::InboundUrl,
            WebhookKind::MessageStatus => WebhookUrl::StatusUrl,
            WebhookKind::FinalReport => match webhooks.and_then(|w| w.final_report_url.as_ref()) {
                Some(_) => WebhookUrl::FinalReportUrl,
                None => WebhookUrl::StatusUrl,
            },
            WebhookKind::ChainReport => WebhookUrl::FinalReportUrl,
        };
        let hook = webhooks.and_then(|w| match url {
            WebhookUrl::InboundUrl => w.inbound_url.as_ref(),
            WebhookUrl::StatusUrl => w.status_url.as_ref(),
            WebhookUrl::FinalReportUrl => w.final_report_url.as_ref(),
        });
        (url, hook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as ingest wrote them before this type moved here: every
    /// capability, none, and `messages` without webhooks.
    const FULL: &str = r#"{"id":"0a8d9b3e-5f41-4c2a-9b7e-3d2f1c0e8a71","account":"4f1c2b9a","name":"Kiosk \"north\" ☂","capabilities":{"messages":{"webhooks":{"inbound_url":{"address":"https://hooks.example.com/inbound?token=a%20b","http_method":"POST"},"status_url":{"address":"https://hooks.example.com/status","http_method":"POST"},"final_report_url":{"address":"http://reports.example.com:8443/final","http_method":"POST"}}},"voice":{"conversations_ttl":41,"signed_callbacks":true,"webhooks":{"answer_url":{"address":"https://example.com/answer","http_method":"GET"}}},"rtc":{"webhooks":{"event_url":{"address":"https://example.com/rtc","http_method":"POST"}}},"vbc":{}},"public_key":"-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----\n","created_at_ms":1767225600123}"#;
    const MINIMAL: &str = r#"{"id":"6c0f2d7b-1e9a-4b3c-8d5e-7f6a5b4c3d2e","account":"acct","name":"bare","capabilities":{},"public_key":"","created_at_ms":0}"#;
    const EMPTY_MESSAGES: &str = r#"{"id":"00000000-0000-0000-0000-000000000000","account":"a","name":"s","capabilities":{"messages":{"webhooks":{}}},"public_key":"k","created_at_ms":5}"#;

    fn read(raw: &str) -> ApplicationRecord {
        serde_json::from_str(raw).expect("a stored record reads")
    }

    #[test]
    fn stored_records_round_trip_byte_for_byte() {
        for raw in [FULL, MINIMAL, EMPTY_MESSAGES] {
            let record = read(raw);
            assert_eq!(serde_json::to_string(&record).expect("write"), raw);
        }
    }

    #[test]
    fn a_stored_record_reads_into_its_fields() {
        let record = read(FULL);
        assert_eq!(
            record.id.to_string(),
            "0a8d9b3e-5f41-4c2a-9b7e-3d2f1c0e8a71"
        );
        assert_eq!(record.account, "4f1c2b9a");
        assert_eq!(record.name, "Kiosk \"north\" \u{2602}");
        assert_eq!(record.created_at_ms, 1_767_225_600_123);
        assert!(
            record
                .public_key
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        let webhooks = record.webhooks().expect("webhooks");
        let status = webhooks.status_url.as_ref().expect("status_url");
        assert_eq!(status.address, "https://hooks.example.com/status");
        assert_eq!(status.http_method, "POST");
        let voice = record.capabilities.voice.as_ref().expect("voice");
        assert_eq!(voice["conversations_ttl"], 41);
        assert_eq!(record.capabilities.vbc, Some(Map::new()));
        assert_eq!(read(MINIMAL).capabilities, Capabilities::default());
    }

    #[test]
    fn missing_fields_read_as_defaults() {
        let record = read(
            r#"{"capabilities":{"messages":{"webhooks":{"status_url":{"address":"https://a.example/s"}}}}}"#,
        );
        assert_eq!(record.id, Uuid::nil());
        assert_eq!(record.account, "");
        let status = record.webhooks().and_then(|w| w.status_url.as_ref());
        assert_eq!(status.map(|s| s.http_method.as_str()), Some("POST"));
        assert_eq!(read("{}"), ApplicationRecord::default());
        let no_webhooks = read(r#"{"capabilities":{"messages":{}}}"#);
        assert_eq!(no_webhooks.webhooks(), Some(&MessagesWebhooks::default()));
    }

    #[test]
    fn webhooks_go_to_the_url_of_their_kind() {
        let full = read(FULL);
        let address = |(url, hook): (WebhookUrl, Option<&Webhook>)| {
            (url.as_str(), hook.map(|h| h.address.clone()))
        };
        assert_eq!(
            address(full.webhook_for(WebhookKind::InboundMessage)),
            (
                "inbound_url",
                Some("https://hooks.example.com/inbound?token=a%20b".into())
            )
        );
        assert_eq!(
            address(full.webhook_for(WebhookKind::MessageStatus)),
            (
                "status_url",
                Some("https://hooks.example.com/status".into())
            )
        );
        assert_eq!(
            address(full.webhook_for(WebhookKind::FinalReport)),
            (
                "final_report_url",
                Some("http://reports.example.com:8443/final".into())
            )
        );

        let mut status_only = full.clone();
        if let Some(m) = status_only.capabilities.messages.as_mut() {
            m.webhooks.final_report_url = None;
            m.webhooks.inbound_url = None;
        }
        assert_eq!(
            address(status_only.webhook_for(WebhookKind::FinalReport)),
            (
                "status_url",
                Some("https://hooks.example.com/status".into())
            ),
            "final reports go to status_url when there is no final_report_url"
        );
        assert_eq!(
            address(status_only.webhook_for(WebhookKind::InboundMessage)),
            ("inbound_url", None)
        );

        let none = read(MINIMAL);
        for (kind, url) in [
            (WebhookKind::InboundMessage, "inbound_url"),
            (WebhookKind::MessageStatus, "status_url"),
            (WebhookKind::FinalReport, "status_url"),
        ] {
            assert_eq!(address(none.webhook_for(kind)), (url, None));
        }
    }
}
