//! Messages that travel through RabbitMQ between services.
//!
//! Every envelope is a tagged enum variant with an explicit version in its
//! tag (`workflow.accepted.v1`), so a consumer can keep reading old versions
//! while producers move to a new one during a rolling upgrade. Add a new
//! variant for a new version; never change the shape of a published one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::OutboundMessage;

/// Routing key of accepted work, consumed by the workflow service.
pub const WORKFLOW_ACCEPTED: &str = "workflow.accepted";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Envelope {
    #[serde(rename = "workflow.accepted.v1")]
    WorkflowAccepted(WorkflowAccepted),
}

impl Envelope {
    pub fn routing_key(&self) -> &'static str {
        match self {
            Envelope::WorkflowAccepted(_) => WORKFLOW_ACCEPTED,
        }
    }

    /// The id of the thing this envelope is about, used as the AMQP
    /// `message_id` so that consumers can deduplicate redeliveries.
    pub fn id(&self) -> Uuid {
        match self {
            Envelope::WorkflowAccepted(w) => w.workflow_id,
        }
    }
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
}

/// One message of a workflow, with its uuid assigned at acceptance so that
/// every redelivery of the envelope names the same messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub message_uuid: Uuid,
    pub message: OutboundMessage,
}
