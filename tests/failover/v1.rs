//! Messages API v1 chains end to end through the simulator: failover on
//! a rejection, on a condition not met in time (our extension), and none
//! on silence when a message has no condition; the v1 webhooks field by
//! field.

use std::time::Duration;

use dispatch_model::envelope::WebhookKind;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::system::System;

fn v1(channel: &str, to: &str, from: &str) -> Value {
    json!({"channel": channel, "message_type": "text", "to": to, "from": from,
           "text": "Your code is 64873", "client_ref": format!("ref-{channel}")})
}

/// Posts a v1 chain; returns (workflow id, first message uuid).
async fn chain(sys: &System, body: &Value) -> (Uuid, Uuid) {
    let answer = sys.post("/v1/messages", body).await;
    let id = |field: &str| -> Uuid {
        answer[field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{field} in {answer}"))
    };
    (id("workflow_id"), id("message_uuid"))
}

/// The v1 status webhooks of message `uuid`, by status.
fn hook(sys: &System, uuid: &str, status: &str) -> Option<Value> {
    sys.webhooks()
        .into_iter()
        .filter(|j| j.kind == WebhookKind::MessageStatus)
        .map(|j| j.body)
        .find(|b| b["message_uuid"] == uuid && b["status"] == status)
}

async fn wait_hook(sys: &System, uuid: &str, status: &str) -> Value {
    sys.eventually(Duration::from_secs(10), || hook(sys, uuid, status))
        .await
        .unwrap_or_else(|| panic!("no {status} for {uuid}"))
}

fn chain_report(sys: &System, id: Uuid) -> Option<Value> {
    sys.webhooks()
        .into_iter()
        .find(|j| j.kind == WebhookKind::ChainReport && j.workflow_id == id)
        .map(|j| j.body)
}

#[tokio::test]
async fn rcs_rejected_fails_over_to_sms_delivered() {
    let sys = System::start().await;
    let (rcs_to, sms_to) = ("447700510102", "447700510200");
    let mut body = v1("rcs", rcs_to, "dispatchagent");
    body["failover"] = json!([v1("sms", sms_to, "447700900999")]);
    let (workflow, first) = chain(&sys, &body).await;

    let rejected = wait_hook(&sys, &first.to_string(), "rejected").await;
    assert_eq!(rejected["channel"], "rcs");
    assert_eq!(rejected["to"], rcs_to, "to is a string in v1");
    assert_eq!(rejected["from"], "dispatchagent");
    assert_eq!(rejected["client_ref"], "ref-rcs");
    assert_eq!(
        rejected["error"]["type"],
        "https://developer.vonage.com/api-errors/messages#1300"
    );
    assert_eq!(rejected["error"]["title"], "1300");
    assert!(rejected["error"]["detail"].is_string());
    assert_eq!(
        rejected["workflow"],
        json!({"workflow_id": workflow, "items_number": "1", "items_total": "2"})
    );
    assert!(
        rejected["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let view = sys.get(&format!("/v1/messages/{first}")).await;
    let second = second_uuid(&sys, workflow).await;
    let delivered = wait_hook(&sys, &second, "delivered").await;
    assert_eq!(delivered["channel"], "sms");
    assert_eq!(delivered["usage"]["currency"], "EUR");
    assert!(delivered["usage"]["price"].is_string());
    assert_eq!(delivered["workflow"]["items_number"], "2");
    assert_eq!(sys.sim.sends_to(sms_to).len(), 1);
    assert_eq!(view["workflow"]["workflow_id"], workflow.to_string());
    // The chain is a workflow like any other, with a report of its own.
    let report = sys
        .eventually(Duration::from_secs(10), || chain_report(&sys, workflow))
        .await
        .expect("the chain's report");
    assert_eq!(report["status"], "completed");
    assert_eq!(report["messages"].as_array().map(Vec::len), Some(2));
    let lookup = sys.get(&format!("/v0.1/dispatch/{workflow}")).await;
    assert_eq!(lookup["status"], "completed", "{lookup}");
}

/// The uuid of the second message of chain `workflow`, from the lookup.
pub async fn second_uuid(sys: &System, workflow: Uuid) -> String {
    let lookup = sys.get(&format!("/v0.1/dispatch/{workflow}")).await;
    lookup["messages"][1]["message_uuid"]
        .as_str()
        .expect("second message")
        .to_owned()
}

#[tokio::test]
async fn whatsapp_not_read_in_time_fails_over_to_sms() {
    let sys = System::start().await;
    // Delivered, never read.
    let (wa_to, sms_to) = ("447700520100", "447700520200");
    let mut body = v1("whatsapp", wa_to, "447700900998");
    body["failover_condition"] = json!({"condition_status": "read", "expiry_time": 15});
    body["failover"] = json!([v1("sms", sms_to, "447700900999")]);
    let (workflow, first) = chain(&sys, &body).await;
    wait_hook(&sys, &first.to_string(), "delivered").await;
    let second = second_uuid(&sys, workflow).await;
    wait_hook(&sys, &second, "delivered").await;
    assert_eq!(sys.sim.sends_to(sms_to).len(), 1);
    let view = sys.get(&format!("/v1/messages/{first}")).await;
    assert!(view["expired_at"].is_string(), "{view}");
    assert_eq!(view["failover_condition"]["condition_status"], "read");
}

#[tokio::test]
async fn without_a_condition_only_a_failure_fails_over() {
    let sys = System::start_configured(true, |c| c.last_step_horizon_ms = 1_500).await;
    // Accepted, never delivered: no failover, the chain ends at the horizon.
    let (silent, fallback) = ("447700530103", "447700530200");
    let mut body = v1("whatsapp", silent, "447700900998");
    body["failover"] = json!([v1("sms", fallback, "447700900999")]);
    let (workflow, first) = chain(&sys, &body).await;
    wait_hook(&sys, &first.to_string(), "submitted").await;
    let report = sys
        .eventually(Duration::from_secs(10), || chain_report(&sys, workflow))
        .await
        .expect("the chain's report");
    assert_eq!(report["status"], "error");
    let lookup = sys.get(&format!("/v0.1/dispatch/{workflow}")).await;
    assert_eq!(lookup["status"], "error", "{lookup}");
    assert_eq!(lookup["messages"][1]["status"], "not_sent");
    assert!(
        sys.sim.sends_to(fallback).is_empty(),
        "silence never fails over"
    );

    // Undeliverable does.
    let (failing, fallback) = ("447700530104", "447700530300");
    let mut body = v1("whatsapp", failing, "447700900998");
    body["failover"] = json!([v1("sms", fallback, "447700900999")]);
    let (workflow, first) = chain(&sys, &body).await;
    let undeliverable = wait_hook(&sys, &first.to_string(), "undeliverable").await;
    assert_eq!(undeliverable["error"]["title"], "1330");
    let second = second_uuid(&sys, workflow).await;
    wait_hook(&sys, &second, "delivered").await;
    assert_eq!(sys.sim.sends_to(fallback).len(), 1);
}
