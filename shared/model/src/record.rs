//! Statuses shown by the lookups and carried by events.

use serde::{Deserialize, Serialize};

/// A workflow's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Accepted, first step not started: a record the ingest of before
    /// the upgrade wrote for work it queued (this version starts work in
    /// the same write that stores it).
    Accepted,
    InProgress,
    Completed,
    Error,
}

/// A message's latest status: the spec's five, plus `accepted` for a message
/// that is queued but not yet handed to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Accepted,
    Submitted,
    Delivered,
    Read,
    Rejected,
    Undeliverable,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Submitted => "submitted",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Rejected => "rejected",
            MessageStatus::Undeliverable => "undeliverable",
        }
    }

    /// `rejected` and `undeliverable`: the message will not arrive.
    pub fn is_failure(self) -> bool {
        matches!(self, MessageStatus::Rejected | MessageStatus::Undeliverable)
    }

    /// How far along a message is; a message's latest status only moves
    /// up, so a late `submitted` never hides an earlier `delivered`.
    pub fn rank(self) -> u8 {
        match self {
            MessageStatus::Accepted => 0,
            MessageStatus::Submitted => 1,
            MessageStatus::Delivered | MessageStatus::Rejected | MessageStatus::Undeliverable => 2,
            MessageStatus::Read => 3,
        }
    }
}

/// Why a message failed: one of the spec's error codes (1000–1382).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageError {
    pub code: u32,
    pub reason: String,
}

/// What a message cost, as the provider reported it, or as estimated
/// from `prices` when it reports nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// ISO 4217; always `EUR` in the specs.
    pub currency: String,
    /// A decimal number as a string, `"0.0333"`.
    pub price: String,
    /// SMS only: `gsm7` or `ucs2`, how the text was encoded on the air.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// SMS only: how many messages the text took on the air.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
}

impl Usage {
    /// A price in EUR.
    pub fn eur(price: impl Into<String>) -> Self {
        Usage {
            currency: "EUR".into(),
            price: price.into(),
            ..Usage::default()
        }
    }

    /// The provider's report completed by our estimate: its price when it
    /// gave one, and the encoding and segments we counted when it did not.
    pub fn completed_by(reported: Option<&Usage>, estimate: Option<&Usage>) -> Option<Usage> {
        match (reported, estimate) {
            (Some(r), Some(e)) => Some(Usage {
                encoding: r.encoding.clone().or_else(|| e.encoding.clone()),
                segments: r.segments.or(e.segments),
                ..r.clone()
            }),
            (r, e) => r.or(e).cloned(),
        }
    }

    /// The sum of `prices` in EUR, exact to nine decimals; unparsable
    /// prices count as zero. Formatted with at least two decimals
    /// (`"0.00"`, `"0.0666"`), as the specs' examples are.
    pub fn total<'a>(prices: impl IntoIterator<Item = &'a Usage>) -> Usage {
        const SCALE: u32 = 9;
        let parse = |p: &str| -> Option<i128> {
            let (int, frac) = p.trim().split_once('.').unwrap_or((p.trim(), ""));
            if frac.len() > SCALE as usize || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let int: i128 = int.parse().ok()?;
            let frac: i128 = format!("{frac:0<9}").parse().ok()?;
            int.checked_mul(10i128.pow(SCALE))?.checked_add(frac)
        };
        // Prices come from providers: an absurd one counts as zero rather
        // than overflowing.
        let sum: i128 = prices
            .into_iter()
            .filter_map(|u| parse(&u.price))
            .fold(0i128, |sum, p| sum.checked_add(p).unwrap_or(sum));
        let int = sum / 10i128.pow(SCALE);
        let mut frac = format!("{:09}", (sum % 10i128.pow(SCALE)).abs());
        while frac.len() > 2 && frac.ends_with('0') {
            frac.pop();
        }
        Usage::eur(format!("{int}.{frac}"))
    }
}

/// `2020-01-01T14:00:00.000Z`, the timestamp format of every webhook and
/// lookup, from milliseconds since the Unix epoch.
pub fn iso_timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// What is stored about a workflow, and what the lookups show. Created by
/// ingest with the first transition ([`WorkflowRecord::new`], then
/// start), moved on by whichever service an event arises in, one
/// compare-and-set at a time (`dispatch_flow`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The request as accepted; never changes.
    pub workflow: crate::envelope::WorkflowAccepted,
    pub status: WorkflowStatus,
    /// Index of the step being tried; `None` until the first send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<usize>,
    #[serde(default)]
    pub steps: Vec<StepState>,
    pub updated_at_ms: i64,
    /// When the workflow became `completed` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// Effects of transitions that are stored but not yet known to be
    /// carried out (the outbox, `dispatch_flow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Pending>,
    #[serde(default)]
    pub next_seq: u64,
    /// When message content was removed (`content_retention_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_redacted_at_ms: Option<i64>,
}

impl WorkflowRecord {
    pub fn new(workflow: crate::envelope::WorkflowAccepted) -> Self {
        let steps = workflow
            .steps
            .iter()
            .map(|s| StepState {
                message_uuid: s.message_uuid,
                channel: s.message.channel(),
                status: MessageStatus::Accepted,
                history: Vec::new(),
                sent_at_ms: None,
                deadline_ms: None,
                expired_at_ms: None,
                provider_message_id: None,
                provider: None,
                error: None,
                usage: None,
                estimate: None,
            })
            .collect();
        Self {
            updated_at_ms: workflow.accepted_at_ms,
            workflow,
            status: WorkflowStatus::Accepted,
            current_step: None,
            steps,
            finished_at_ms: None,
            outbox: Vec::new(),
            next_seq: 0,
            content_redacted_at_ms: None,
        }
    }

    /// Removes what its messages said (texts, media, templates, a v1
    /// message's content), keeping who they went to, their channels,
    /// `client_ref`s and failover conditions, and every status.
    pub fn redact_content(&mut self, now_ms: i64) {
        for step in &mut self.workflow.steps {
            step.message.message = None;
            if let Some(v1) = &mut step.message.v1 {
                **v1 = crate::v1::V1Message {
                    to: v1.to.take(),
                    from: v1.from.take(),
                    channel: v1.channel.take(),
                    message_type: v1.message_type.take(),
                    client_ref: v1.client_ref.take(),
                    failover_condition: v1.failover_condition.take(),
                    webhook_url: v1.webhook_url.take(),
                    webhook_version: v1.webhook_version.take(),
                    ..Default::default()
                };
            }
        }
        self.content_redacted_at_ms = Some(now_ms);
    }

    pub fn step_index(&self, message_uuid: uuid::Uuid) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.message_uuid == message_uuid)
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            WorkflowStatus::Completed | WorkflowStatus::Error
        )
    }
}

/// One message of a workflow, as far as it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub message_uuid: uuid::Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<crate::channel::Channel>,
    /// The latest status by [`MessageStatus::rank`].
    pub status: MessageStatus,
    /// Every status seen, once each, in the order they arrived.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StatusChange>,
    /// When the send command was published; `None` for steps never tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// When its deadline passed without the condition being met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The kind of provider that took the send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the sender estimated at submission (prices, SMS segments):
    /// the usage of a `delivered` whose provider reports no price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Usage>,
}

impl StepState {
    pub fn has_seen(&self, status: MessageStatus) -> bool {
        self.history.iter().any(|c| c.status == status)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: MessageStatus,
    pub at_ms: i64,
}

/// An effect waiting in a record's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub seq: u64,
    pub effect: Effect,
}

/// What a transition asks the world to do. Every effect is idempotent, so
/// carrying one out twice (after a crash or by two instances) is harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Publish with a confirm (send commands, webhook jobs).
    Publish { envelope: crate::envelope::Envelope },
    /// Ask the timer to publish `envelope` at `due_ms`, under timer entry `id`.
    Schedule {
        id: String,
        due_ms: i64,
        envelope: crate::envelope::Envelope,
    },
    /// Forget timer entry `id`.
    Cancel { id: String },
}

#[cfg(test)]
mod tests {
    use super::Usage;

    #[test]
    fn usage_adds_up_exactly() {
        let u = Usage::eur;
        assert_eq!(Usage::total(&[]).price, "0.00");
        assert_eq!(Usage::total(&[u("0.0333"), u("0.0333")]).price, "0.0666");
        assert_eq!(Usage::total(&[u("0.1"), u("0.2")]).price, "0.30");
        assert_eq!(Usage::total(&[u("1"), u("junk"), u("0.05")]).price, "1.05");
        let huge = "9".repeat(40);
        assert_eq!(Usage::total(&[u(&huge), u("0.5")]).price, "0.50");
    }

    #[test]
    fn timestamps_have_milliseconds_and_zulu() {
        assert_eq!(
            super::iso_timestamp(1_577_887_200_000),
            "2020-01-01T14:00:00.000Z"
        );
        assert_eq!(
            super::iso_timestamp(1_577_887_200_042),
            "2020-01-01T14:00:00.042Z"
        );
    }
}
