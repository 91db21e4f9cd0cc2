//! The failover state machine: a pure function of (record, event) to
//! (new record, effects). No I/O, no clock: the shell passes the time in
//! [`Context`] and carries out the effects; tests drive it directly.
//!
//! Decisions (see docs/architecture.md, "Failover semantics"):
//! - Step *i* starts when its send command is published. Every step but the
//!   last gets a deadline at start + `expiry_time`; the last step of a
//!   dispatch gets the horizon after which a silent workflow ends as
//!   `error`. A Messages API send is one step with no deadline. A step
//!   with no `failover` condition (Messages API v1) fails over only on a
//!   failure; it gets the horizon as its deadline, which ends the chain as
//!   `error` without sending the next message.
//! - `condition_status: delivered` is met by `delivered` or `read`, `read`
//!   only by `read`; the last step (no condition) by either.
//! - `rejected` or `undeliverable` for the current step fails over at once
//!   and cancels its deadline; on the last step it ends the workflow as
//!   `error`.
//! - A status is applied once per message and status: duplicates change
//!   nothing. A message's shown status only moves up by rank, so a
//!   `submitted` arriving after `delivered` is recorded and reported but
//!   does not hide it.
//! - Statuses for steps other than the current one (an earlier step after
//!   failover, any step after the end) are recorded, reported and counted
//!   in usage, but never change the outcome.
//! - A deadline counts only for the current step of a running workflow
//!   and only when it is the one that step scheduled; any other firing is
//!   stale and ignored.

use dispatch_model::envelope::{
    DeadlineFired, Envelope, SendCommand, StatusEvent, WebhookJob, WebhookKind, WorkflowKind,
};
use dispatch_model::message::ConditionStatus;
use dispatch_model::record::{
    Effect, MessageStatus, StatusChange, StepState, Usage, WorkflowRecord, WorkflowStatus,
    iso_timestamp,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// What the machine needs from outside: the time and the settings.
#[derive(Debug, Clone)]
pub struct Context {
    pub now_ms: i64,
    /// Milliseconds per unit of `expiry_time` (1000 in production).
    pub expiry_unit_ms: u64,
    /// How long a dispatch's last step may stay silent.
    pub horizon_ms: u64,
    /// Base of the `href`s in webhooks, without a trailing slash.
    pub base_url: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The accepted request was picked up: send the first step.
    Start,
    Status(&'a StatusEvent),
    Deadline(&'a DeadlineFired),
}

/// The timer entry id of a step's deadline due at `due_ms`. The due time
/// is part of it: timer entries are written before the record's
/// compare-and-set (docs/architecture.md, "One slot per script"), so a
/// writer that lost the race may still write its entry; under its own id
/// it cannot replace the winner's, and fires as a stale deadline.
pub fn deadline_id(message_uuid: Uuid, due_ms: i64) -> String {
    format!("deadline:{message_uuid}:{due_ms}")
}

/// The new record and its effects, or `None` when `event` changes nothing
/// (a duplicate, a stale deadline, a status for a step never sent).
pub fn apply(
    record: &WorkflowRecord,
    event: Event<'_>,
    ctx: &Context,
) -> Option<(WorkflowRecord, Vec<Effect>)> {
    let mut next = record.clone();
    let mut effects = Vec::new();
    match event {
        Event::Start => {
            if record.status != WorkflowStatus::Accepted || record.steps.is_empty() {
                return None;
            }
            start_step(&mut next, 0, ctx, &mut effects);
        }
        Event::Status(status) => on_status(&mut next, status, ctx, &mut effects)?,
        Event::Deadline(fired) => on_deadline(&mut next, fired, ctx, &mut effects)?,
    }
    next.updated_at_ms = ctx.now_ms;
    Some((next, effects))
}

fn on_status(
    rec: &mut WorkflowRecord,
    event: &StatusEvent,
    ctx: &Context,
    effects: &mut Vec<Effect>,
) -> Option<()> {
    if event.workflow_id != rec.workflow.workflow_id {
        return None;
    }
    let i = rec.step_index(event.message_uuid)?;
    let step = &mut rec.steps[i];
    if step.sent_at_ms.is_none() || step.has_seen(event.status) {
        return None;
    }
    step.history.push(StatusChange {
        status: event.status,
        at_ms: event.at_ms,
    });
    if event.status.rank() > step.status.rank() {
        step.status = event.status;
    }
    if let Some(id) = &event.provider_message_id {
        step.provider_message_id = Some(id.clone());
    }
    if let Some(provider) = &event.provider {
        step.provider = Some(provider.clone());
    }
    if event.status.is_failure() && event.error.is_some() {
        step.error = event.error.clone();
    }
    match event.status {
        // The sender's estimate: kept for a `delivered` without a price.
        MessageStatus::Submitted => step.estimate = event.usage.clone(),
        MessageStatus::Delivered => {
            step.usage = Usage::completed_by(event.usage.as_ref(), step.estimate.as_ref());
        }
        _ => {
            if let Some(usage) = &event.usage {
                step.usage = Some(usage.clone());
            }
        }
    }
    effects.push(publish(message_status_webhook(rec, i, event, ctx)));

    if rec.status != WorkflowStatus::InProgress || rec.current_step != Some(i) {
        return Some(());
    }
    let last = i + 1 == rec.steps.len();
    let condition = rec.workflow.steps[i]
        .message
        .failover
        .as_ref()
        .and_then(|f| f.condition_status);
    let met = match event.status {
        MessageStatus::Read => true,
        MessageStatus::Delivered => condition != Some(ConditionStatus::Read),
        _ => false,
    };
    if met {
        cancel_deadline(rec, i, effects);
        finish(rec, WorkflowStatus::Completed, ctx, effects);
    } else if event.status.is_failure() {
        cancel_deadline(rec, i, effects);
        if last {
            finish(rec, WorkflowStatus::Error, ctx, effects);
        } else {
            start_step(rec, i + 1, ctx, effects);
        }
    }
    Some(())
}

fn on_deadline(
    rec: &mut WorkflowRecord,
    fired: &DeadlineFired,
    ctx: &Context,
    effects: &mut Vec<Effect>,
) -> Option<()> {
    if rec.status != WorkflowStatus::InProgress || fired.workflow_id != rec.workflow.workflow_id {
        return None;
    }
    let i = rec.step_index(fired.message_uuid)?;
    if rec.current_step != Some(i) || rec.steps[i].deadline_ms != Some(fired.due_ms) {
        return None;
    }
    rec.steps[i].expired_at_ms = Some(ctx.now_ms);
    if i + 1 == rec.steps.len() || expiry_time(rec, i).is_none() {
        finish(rec, WorkflowStatus::Error, ctx, effects);
    } else {
        start_step(rec, i + 1, ctx, effects);
    }
    Some(())
}

fn start_step(rec: &mut WorkflowRecord, i: usize, ctx: &Context, effects: &mut Vec<Effect>) {
    let last = i + 1 == rec.steps.len();
    let w = &rec.workflow;
    let request = &w.steps[i];
    let Some(channel) = request.message.channel() else {
        // Validated at ingest; a step without a channel cannot be sent.
        finish(rec, WorkflowStatus::Error, ctx, effects);
        return;
    };
    rec.status = WorkflowStatus::InProgress;
    rec.current_step = Some(i);
    effects.push(publish(Envelope::Send(Box::new(SendCommand {
        workflow_id: w.workflow_id,
        message_uuid: request.message_uuid,
        channel,
        account: w.account.clone(),
        application_id: w.application_id,
        message: request.message.clone(),
        paced: None,
    }))));
    // A step with a condition waits `expiry_time` for it. The last step,
    // and a step without a condition (a Messages API v1 chain fails over
    // only on a failure), wait the horizon, so that every chain ends; a
    // lone Messages API send has no deadline.
    let wait_ms = match expiry_time(rec, i) {
        Some(expiry) if !last => Some(expiry.saturating_mul(ctx.expiry_unit_ms)),
        _ if last && w.kind == WorkflowKind::Message => None,
        _ => Some(ctx.horizon_ms),
    };
    let step = &mut rec.steps[i];
    step.sent_at_ms = Some(ctx.now_ms);
    if let Some(wait_ms) = wait_ms {
        let due_ms = ctx
            .now_ms
            .saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX));
        step.deadline_ms = Some(due_ms);
        effects.push(Effect::Schedule {
            id: deadline_id(step.message_uuid, due_ms),
            due_ms,
            envelope: Envelope::Deadline(DeadlineFired {
                workflow_id: w.workflow_id,
                message_uuid: step.message_uuid,
                due_ms,
            }),
        });
    }
}

/// Step `i`'s `expiry_time`, when it has a failover condition.
fn expiry_time(rec: &WorkflowRecord, i: usize) -> Option<u64> {
    rec.workflow.steps[i]
        .message
        .failover
        .as_ref()
        .and_then(|f| f.expiry_time)
        .map(|e| e.max(0) as u64)
}

fn cancel_deadline(rec: &WorkflowRecord, i: usize, effects: &mut Vec<Effect>) {
    if let Some(due_ms) = rec.steps[i].deadline_ms {
        effects.push(Effect::Cancel {
            id: deadline_id(rec.steps[i].message_uuid, due_ms),
        });
    }
}

fn finish(
    rec: &mut WorkflowRecord,
    status: WorkflowStatus,
    ctx: &Context,
    effects: &mut Vec<Effect>,
) {
    rec.status = status;
    rec.finished_at_ms = Some(ctx.now_ms);
    match rec.workflow.kind {
        WorkflowKind::Dispatch => effects.push(publish(final_report(rec, ctx))),
        WorkflowKind::Failover => effects.push(publish(chain_report(rec, ctx))),
        WorkflowKind::Message => {}
    }
}

fn publish(envelope: Envelope) -> Effect {
    Effect::Publish { envelope }
}

/// The `message-status` webhook of the Messages API, with
/// `_links.workflow` for messages of a dispatch.
fn message_status_webhook(
    rec: &WorkflowRecord,
    i: usize,
    event: &StatusEvent,
    ctx: &Context,
) -> Envelope {
    let w = &rec.workflow;
    let step = &rec.steps[i];
    let message = &w.steps[i].message;
    let v1 = message.v1.as_deref();
    let url = v1.and_then(|m| m.webhook_url.clone());
    let job = |body| {
        Envelope::Webhook(WebhookJob {
            webhook_id: format!("{}:{}", step.message_uuid, event.status.as_str()),
            kind: WebhookKind::MessageStatus,
            account: w.account.clone(),
            application_id: w.application_id,
            workflow_id: w.workflow_id,
            event_at_ms: event.at_ms,
            body,
            url,
            attempts: 0,
            reason: None,
        })
    };
    if let Some(v1) = v1.filter(|m| m.webhook_version.as_deref() != Some("v0.1")) {
        return job(v1_status(rec, i, v1, event));
    }
    let mut body = json!({
        "message_uuid": step.message_uuid,
        "to": message.to,
        "from": message.from,
        "timestamp": iso_timestamp(event.at_ms),
        "status": event.status,
    });
    if let Some(error) = event.error.as_ref().filter(|_| event.status.is_failure()) {
        body["error"] = json!(error);
    }
    let usage = match event.status {
        MessageStatus::Submitted => None,
        MessageStatus::Delivered => step.usage.as_ref(),
        _ => event.usage.as_ref(),
    };
    if let Some(usage) = usage {
        body["usage"] = json!(usage);
    }
    if let Some(client_ref) = &message.client_ref {
        body["client_ref"] = json!(client_ref);
    }
    if w.kind.is_chain() {
        body["_links"] = json!({ "workflow": {
            "dispatch_uuid": w.workflow_id,
            "href": format!("{}/v0.1/dispatch/{}", ctx.base_url, w.workflow_id),
        }});
    }
    job(body)
}

/// Where the v1 reference's status errors point, followed by the code.
pub const V1_ERRORS: &str = "https://developer.vonage.com/api-errors/messages#";

/// The `message-status` webhook of the Messages API v1: `to` and `from`
/// as strings, the v1 channel name, `error` in RFC 7807 form with the
/// code as its title, and for a message of a chain its `workflow`
/// (`workflow_id`, its place `items_number` and `items_total`, as
/// strings).
fn v1_status(
    rec: &WorkflowRecord,
    i: usize,
    message: &dispatch_model::v1::V1Message,
    event: &StatusEvent,
) -> Value {
    let step = &rec.steps[i];
    let mut body = json!({
        "message_uuid": step.message_uuid,
        "to": message.to,
        "from": message.from,
        "timestamp": iso_timestamp(event.at_ms),
        "status": event.status,
        "channel": message.channel,
    });
    if let Some(client_ref) = &message.client_ref {
        body["client_ref"] = json!(client_ref);
    }
    if let Some(error) = event.error.as_ref().filter(|_| event.status.is_failure()) {
        body["error"] = json!({
            "type": format!("{V1_ERRORS}{}", error.code),
            "title": error.code.to_string(),
            "detail": error.reason,
            "instance": step.message_uuid,
        });
    }
    let usage = match event.status {
        MessageStatus::Submitted => None,
        MessageStatus::Delivered => step.usage.as_ref(),
        _ => event.usage.as_ref(),
    };
    if let Some(usage) = usage {
        body["usage"] = json!({ "currency": usage.currency, "price": usage.price });
        if let Some(segments) = usage
            .segments
            .filter(|_| message.channel.as_deref() == Some("sms"))
        {
            body["sms"] = json!({ "count_total": segments.to_string() });
        }
    }
    if rec.workflow.kind == WorkflowKind::Failover {
        body["workflow"] = json!({
            "workflow_id": rec.workflow.workflow_id,
            "items_number": (i + 1).to_string(),
            "items_total": rec.steps.len().to_string(),
        });
    }
    body
}

/// The steps of `rec` that were sent, in order.
fn sent_steps(rec: &WorkflowRecord) -> Vec<&StepState> {
    rec.steps
        .iter()
        .filter(|s| s.sent_at_ms.is_some())
        .collect()
}

/// How an ended workflow ended, as its report says it.
fn outcome(rec: &WorkflowRecord) -> &'static str {
    match rec.status {
        WorkflowStatus::Completed => "completed",
        _ => "error",
    }
}

/// The report of a Messages API v1 chain, our extension (v1 has none):
/// how it ended and what each message sent did and cost, to the
/// application's `final_report_url` only.
fn chain_report(rec: &WorkflowRecord, ctx: &Context) -> Envelope {
    let w = &rec.workflow;
    let sent = sent_steps(rec);
    let messages: Vec<Value> = sent
        .iter()
        .map(|s| {
            let mut m = json!({
                "message_uuid": s.message_uuid,
                "channel": s.channel.map(dispatch_model::v1::channel_name),
                "status": s.status,
                "href": format!("{}/v1/messages/{}", ctx.base_url, s.message_uuid),
            });
            if let Some(usage) = &s.usage {
                m["usage"] = json!({ "currency": usage.currency, "price": usage.price });
            }
            m
        })
        .collect();
    let status = outcome(rec);
    let usage = Usage::total(sent.iter().filter_map(|s| s.usage.as_ref()));
    let body = json!({
        "workflow_id": w.workflow_id,
        "status": status,
        "timestamp": iso_timestamp(ctx.now_ms),
        "usage": { "currency": usage.currency, "price": usage.price },
        "messages": messages,
    });
    Envelope::Webhook(WebhookJob {
        webhook_id: format!("{}:final", w.workflow_id),
        kind: WebhookKind::ChainReport,
        account: w.account.clone(),
        application_id: w.application_id,
        workflow_id: w.workflow_id,
        event_at_ms: ctx.now_ms,
        body,
        url: None,
        attempts: 0,
        reason: None,
    })
}

/// The `final-report` webhook of the Dispatch API.
fn final_report(rec: &WorkflowRecord, ctx: &Context) -> Envelope {
    let w = &rec.workflow;
    let sent = sent_steps(rec);
    let messages: Vec<Value> = sent
        .iter()
        .map(|s| {
            let mut m = json!({
                "message_uuid": s.message_uuid,
                "href": format!("{}/v0.1/messages/{}", ctx.base_url, s.message_uuid),
                "channel": s.channel,
                "status": s.status,
            });
            if let Some(usage) = &s.usage {
                m["usage"] = json!(usage);
            }
            m
        })
        .collect();
    let status = outcome(rec);
    let body = json!({
        "dispatch_uuid": w.workflow_id,
        "template": "failover",
        "status": status,
        "timestamp": iso_timestamp(ctx.now_ms),
        "usage": Usage::total(sent.iter().filter_map(|s| s.usage.as_ref())),
        "_links": { "messages": messages },
    });
    Envelope::Webhook(WebhookJob {
        webhook_id: format!("{}:final", w.workflow_id),
        kind: WebhookKind::FinalReport,
        account: w.account.clone(),
        application_id: w.application_id,
        workflow_id: w.workflow_id,
        event_at_ms: ctx.now_ms,
        body,
        url: None,
        attempts: 0,
        reason: None,
    })
}

#[cfg(test)]
mod tests;
