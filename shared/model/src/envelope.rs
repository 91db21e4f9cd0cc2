//! Messages that travel through RabbitMQ between services.
//!
//! Every envelope is a tagged enum variant with an explicit version in its
//! tag (`workflow.accepted.v1`), so a consumer can keep reading old versions
//! while producers move to a new one during a rolling upgrade. Add a new
//! variant for a new version; never change the shape of a published one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::Channel;
use crate::message::OutboundMessage;
use crate::record::{MessageError, MessageStatus, Usage};

/// Routing key of accepted work, as published before transitions were
/// applied where their events arise; still consumed from the `workflow`
/// queue during a rolling upgrade.
pub const WORKFLOW_ACCEPTED: &str = "workflow.accepted";
/// Routing key of message status events, as published by senders and
/// provider callbacks before they applied them; still consumed during a
/// rolling upgrade.
pub const WORKFLOW_STATUS: &str = "workflow.status";
/// Routing key of a step's deadline timer entry: the timer applies it.
/// (Timers before the change published it to the `workflow` queue.)
pub const WORKFLOW_DEADLINE: &str = "workflow.deadline";
/// Routing key of an outbox's recovery timer entry: the timer carries out
/// what a writer left in a workflow's outbox. Never published.
pub const WORKFLOW_OUTBOX: &str = "workflow.outbox";
/// Routing key of a workflow's redaction timer entry: the timer removes
/// its messages' content once `content_retention_secs` has passed. Never
/// published.
pub const WORKFLOW_REDACT: &str = "workflow.redact";
/// Routing key of a transition's webhooks, published as one job.
pub const WEBHOOK_BATCH: &str = "webhook.batch";
/// Routing key of an open circuit's probe (bound to the webhooks queue).
pub const WEBHOOK_PROBE: &str = "webhook.probe";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Envelope {
    #[serde(rename = "workflow.accepted.v1")]
    WorkflowAccepted(WorkflowAccepted),
    #[serde(rename = "message.status.v1")]
    Status(StatusEvent),
    #[serde(rename = "workflow.deadline.v1")]
    Deadline(DeadlineFired),
    #[serde(rename = "send.v1")]
    Send(Box<SendCommand>),
    #[serde(rename = "webhook.v1")]
    Webhook(WebhookJob),
    #[serde(rename = "webhook.probe.v1")]
    WebhookProbe(WebhookProbe),
    /// The webhooks of one transition (a step's status and the final
    /// report), delivered each on its own.
    #[serde(rename = "webhooks.v1")]
    Webhooks(WebhookBatch),
}

impl Envelope {
    pub fn routing_key(&self) -> String {
        match self {
            Envelope::WorkflowAccepted(_) => WORKFLOW_ACCEPTED.into(),
            Envelope::Status(_) => WORKFLOW_STATUS.into(),
            Envelope::Deadline(_) => WORKFLOW_DEADLINE.into(),
            Envelope::Send(s) => send_routing_key(s.channel),
            Envelope::Webhook(w) => format!("webhook.{}", w.kind.as_str()),
            Envelope::WebhookProbe(_) => WEBHOOK_PROBE.into(),
            Envelope::Webhooks(_) => WEBHOOK_BATCH.into(),
        }
    }

    /// The id of the thing this envelope is about, used as the AMQP
    /// `message_id` so that consumers can recognise redeliveries.
    pub fn id(&self) -> String {
        match self {
            Envelope::WorkflowAccepted(w) => w.workflow_id.to_string(),
            Envelope::Status(s) => format!("{}:{}", s.message_uuid, s.status.as_str()),
            Envelope::Deadline(d) => format!("{}:deadline", d.message_uuid),
            Envelope::Send(s) => s.message_uuid.to_string(),
            Envelope::Webhook(w) => w.webhook_id.clone(),
            Envelope::WebhookProbe(p) => format!("probe:{}", p.endpoint_id),
            Envelope::Webhooks(b) => b
                .jobs
                .iter()
                .map(|j| j.webhook_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these types cannot fail: no maps with non-string
        // keys, no custom serialisers that error.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `send.<channel>`: the routing key (and queue suffix) of a channel's sends.
pub fn send_routing_key(channel: Channel) -> String {
    format!("send.{}", channel.as_str())
}

/// Where a workflow came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// `POST /v0.1/messages`: one step, no final report; the workflow id is
    /// the message uuid.
    Message,
    /// `POST /v0.1/dispatch`: a failover workflow; the id is the dispatch uuid.
    Dispatch,
    /// `POST /v1/messages` with `failover`: a chain of v1 messages; the id
    /// is the answer's `workflow_id`. (A v1 message without `failover` is
    /// a [`WorkflowKind::Message`].)
    Failover,
}

impl WorkflowKind {
    /// Whether the workflow is a chain of several messages, found by each
    /// message's uuid through its index, with deadlines and a final
    /// report.
    pub fn is_chain(self) -> bool {
        matches!(self, WorkflowKind::Dispatch | WorkflowKind::Failover)
    }
}

/// A validated request, answered 202 once this envelope was confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowAccepted {
    pub workflow_id: Uuid,
    pub kind: WorkflowKind,
    /// The account's `api_key`.
    pub account: String,
    /// The application, when the request was authenticated with its JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
    /// Milliseconds since the Unix epoch.
    pub accepted_at_ms: i64,
    pub steps: Vec<Step>,
    /// The trace of the request that accepted it (W3C trace id, 32 hex
    /// digits), for the console's link to a trace viewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One message of a workflow, with its uuid assigned at acceptance so that
/// every redelivery of the envelope names the same messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub message_uuid: Uuid,
    pub message: OutboundMessage,
}

/// A message's status changed: reported by a sender (`submitted`,
/// `rejected`) or by a provider's callback (`delivered`, `read`,
/// `undeliverable`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub workflow_id: Uuid,
    pub message_uuid: Uuid,
    pub status: MessageStatus,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The kind of provider that took the send (`vonage`, `simulator`):
    /// on `submitted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A step's deadline passed: its `expiry_time`, or for the last step the
/// horizon after which a silent workflow is closed as `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineFired {
    pub workflow_id: Uuid,
    pub message_uuid: Uuid,
    pub due_ms: i64,
}

/// Send one message through its channel's provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendCommand {
    pub workflow_id: Uuid,
    pub message_uuid: Uuid,
    pub channel: Channel,
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
    pub message: OutboundMessage,
    /// On a command the sender handed to the timer to wait for its turn
    /// under its provider's limit: that turn, and the send lock held
    /// meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced: Option<PacedTurn>,
}

/// A send's turn under its provider's limit, taken before it went to wait
/// for it at the timer: it is sent then without taking another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacedTurn {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// The token of the send lock held for it meanwhile, so that a
    /// duplicate of the command cannot send it in the meantime.
    pub lock: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// To the application's `status_url`.
    MessageStatus,
    /// Once per dispatch workflow, to the `status_url`.
    FinalReport,
    /// A message a user sent us, to the `inbound_url`.
    InboundMessage,
    /// Once per Messages API v1 chain, to the `final_report_url` only:
    /// v1 has no final report, so an application gets one only when it
    /// asks for it.
    ChainReport,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::MessageStatus => "message_status",
            WebhookKind::FinalReport => "final_report",
            WebhookKind::InboundMessage => "inbound_message",
            WebhookKind::ChainReport => "chain_report",
        }
    }
}

/// A webhook to deliver, with its body in its final wire shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// Stable across duplicates of the same webhook
    /// (`{message_uuid}:{status}`, `{dispatch_uuid}:final`), so that the
    /// notifier can deliver each at most once to a receiver that took it.
    pub webhook_id: String,
    pub kind: WebhookKind,
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
    pub workflow_id: Uuid,
    /// When the event happened, in milliseconds since the Unix epoch.
    pub event_at_ms: i64,
    pub body: serde_json::Value,
    /// Where it goes instead of the application's URL: a v1 message's
    /// own `webhook_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Delivery attempts made so far (0 for a new webhook).
    #[serde(default)]
    pub attempts: u32,
    /// Why the job is a dead letter (set when it becomes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Time for an open circuit's probe: the notifier tries the endpoint
/// with the first webhook waiting for it (`endpoint_id` as in the
/// notifier's circuit keys), or sends on what waited once it is closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookProbe {
    pub endpoint_id: String,
}

/// Several webhooks in one job: those one transition yields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookBatch {
    /// In the order they are to be delivered.
    pub jobs: Vec<WebhookJob>,
}

impl Envelope {
    /// The webhook jobs this envelope carries, if it is one or a batch.
    pub fn into_webhooks(self) -> Option<Vec<WebhookJob>> {
        match self {
            Envelope::Webhook(job) => Some(vec![job]),
            Envelope::Webhooks(batch) => Some(batch.jobs),
            _ => None,
        }
    }
}
