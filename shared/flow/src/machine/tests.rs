use dispatch_model::Channel;
use dispatch_model::envelope::{
    DeadlineFired, Envelope, StatusEvent, Step, WebhookJob, WebhookKind, WorkflowAccepted,
    WorkflowKind,
};
use dispatch_model::message::{Address, ConditionStatus, Failover, OutboundMessage};
use dispatch_model::record::{
    Effect, MessageError, MessageStatus, Usage, WorkflowRecord, WorkflowStatus,
};
use uuid::Uuid;

use super::{Context, Event, apply, deadline_id};

const ALL_STATUSES: [MessageStatus; 5] = [
    MessageStatus::Submitted,
    MessageStatus::Delivered,
    MessageStatus::Read,
    MessageStatus::Rejected,
    MessageStatus::Undeliverable,
];

fn ctx(now_ms: i64) -> Context {
    Context {
        now_ms,
        expiry_unit_ms: 1000,
        horizon_ms: 3_600_000,
        base_url: "https://dispatch.example".into(),
    }
}

fn message(channel: Channel, failover: Option<(i64, ConditionStatus)>) -> OutboundMessage {
    let address = |n: &str| Address {
        kind: Some(channel),
        number: Some(n.into()),
        id: None,
    };
    OutboundMessage {
        to: Some(address("447700900000")),
        from: Some(address("447700900001")),
        failover: failover.map(|(expiry, condition)| Failover {
            expiry_time: Some(expiry),
            condition_status: Some(condition),
        }),
        ..Default::default()
    }
}

/// A dispatch whose steps are `channels`, each but the last failing over
/// after 60 s on `condition`.
fn dispatch(channels: &[Channel], condition: ConditionStatus) -> WorkflowRecord {
    let n = channels.len();
    let steps = channels
        .iter()
        .enumerate()
        .map(|(i, &c)| Step {
            message_uuid: Uuid::new_v4(),
            message: message(c, (i + 1 < n).then_some((60, condition))),
        })
        .collect();
    record(WorkflowKind::Dispatch, steps)
}

fn single_message() -> WorkflowRecord {
    let steps = vec![Step {
        message_uuid: Uuid::new_v4(),
        message: message(Channel::Sms, None),
    }];
    record(WorkflowKind::Message, steps)
}

fn record(kind: WorkflowKind, steps: Vec<Step>) -> WorkflowRecord {
    WorkflowRecord::new(WorkflowAccepted {
        workflow_id: Uuid::new_v4(),
        kind,
        account: "acct".into(),
        application_id: None,
        accepted_at_ms: 0,
        steps,
        trace_id: None,
    })
}

/// Drives one record, remembering every effect.
struct Run {
    rec: WorkflowRecord,
    now: i64,
    effects: Vec<Effect>,
}

impl Run {
    fn new(rec: WorkflowRecord) -> Self {
        Self {
            rec,
            now: 1_000,
            effects: Vec::new(),
        }
    }

    fn started(rec: WorkflowRecord) -> Self {
        let mut run = Self::new(rec);
        assert!(run.apply(Event::Start), "start applies");
        run
    }

    /// Applies `event`; whether it changed anything.
    fn apply(&mut self, event: Event<'_>) -> bool {
        self.now += 10;
        match apply(&self.rec, event, &ctx(self.now)) {
            Some((rec, effects)) => {
                self.rec = rec;
                self.effects.extend(effects);
                true
            }
            None => false,
        }
    }

    fn status(&mut self, step: usize, status: MessageStatus) -> bool {
        let event = self.status_event(step, status);
        self.apply(Event::Status(&event))
    }

    fn status_event(&self, step: usize, status: MessageStatus) -> StatusEvent {
        StatusEvent {
            workflow_id: self.rec.workflow.workflow_id,
            message_uuid: self.rec.steps[step].message_uuid,
            status,
            at_ms: self.now,
            provider_message_id: Some(format!("p{step}")),
            error: status.is_failure().then(|| MessageError {
                code: 1330,
                reason: "Unknown".into(),
            }),
            usage: (status == MessageStatus::Delivered).then(|| Usage::eur("0.0333")),
            provider: None,
        }
    }

    fn deadline(&mut self, step: usize) -> bool {
        let fired = DeadlineFired {
            workflow_id: self.rec.workflow.workflow_id,
            message_uuid: self.rec.steps[step].message_uuid,
            due_ms: self.rec.steps[step].deadline_ms.unwrap_or(-1),
        };
        self.apply(Event::Deadline(&fired))
    }

    /// Step indexes of the send commands, in order.
    fn sends(&self) -> Vec<usize> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish {
                    envelope: Envelope::Send(s),
                } => self.rec.step_index(s.message_uuid),
                _ => None,
            })
            .collect()
    }

    fn webhooks(&self, kind: WebhookKind) -> Vec<serde_json::Value> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish {
                    envelope: Envelope::Webhook(w),
                } if w.kind == kind => Some(w.body.clone()),
                _ => None,
            })
            .collect()
    }

    fn final_reports(&self) -> Vec<serde_json::Value> {
        self.webhooks(WebhookKind::FinalReport)
    }

    fn scheduled(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Schedule { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    fn cancelled(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Cancel { id } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    fn deadline_id(&self, step: usize) -> String {
        let step = &self.rec.steps[step];
        deadline_id(step.message_uuid, step.deadline_ms.expect("a deadline"))
    }
}

/// What a status for the current step must do, written independently of
/// the machine: (workflow status after, next step sent, final report).
fn expected(
    status: MessageStatus,
    last: bool,
    condition: ConditionStatus,
) -> (WorkflowStatus, bool, bool) {
    use MessageStatus as S;
    use WorkflowStatus as W;
    match (status, last) {
        (S::Submitted | S::Accepted, _) => (W::InProgress, false, false),
        (S::Read, _) => (W::Completed, false, true),
        (S::Delivered, true) => (W::Completed, false, true),
        (S::Delivered, false) if condition == ConditionStatus::Delivered => {
            (W::Completed, false, true)
        }
        (S::Delivered, false) => (W::InProgress, false, false),
        (S::Rejected | S::Undeliverable, true) => (W::Error, false, true),
        (S::Rejected | S::Undeliverable, false) => (W::InProgress, true, false),
    }
}

#[test]
fn every_status_in_every_step_position() {
    let channels = [Channel::Whatsapp, Channel::ViberServiceMsg, Channel::Sms];
    for condition in [ConditionStatus::Delivered, ConditionStatus::Read] {
        for position in 0..channels.len() {
            for status in ALL_STATUSES {
                let case = format!("{status:?} at step {position}, condition {condition:?}");
                let mut run = Run::started(dispatch(&channels, condition));
                // Reach `position` by expiring the steps before it.
                for earlier in 0..position {
                    assert!(run.deadline(earlier), "{case}: expire {earlier}");
                }
                assert_eq!(run.rec.current_step, Some(position), "{case}");
                assert!(run.status(position, status), "{case}: applies");

                let last = position + 1 == channels.len();
                let (workflow, next_sent, report) = expected(status, last, condition);
                assert_eq!(run.rec.status, workflow, "{case}");
                let mut sends: Vec<usize> = (0..=position).collect();
                if next_sent {
                    sends.push(position + 1);
                    assert_eq!(run.rec.current_step, Some(position + 1), "{case}");
                }
                assert_eq!(run.sends(), sends, "{case}: sends");
                assert_eq!(run.final_reports().len(), usize::from(report), "{case}");
                let cancels_deadline = workflow != WorkflowStatus::InProgress || next_sent;
                assert_eq!(
                    run.cancelled().contains(&run.deadline_id(position)),
                    cancels_deadline,
                    "{case}: deadline cancelled"
                );
                assert_eq!(run.rec.steps[position].status, status, "{case}");
                let status_hooks = run.webhooks(WebhookKind::MessageStatus);
                assert_eq!(status_hooks.len(), 1, "{case}");
                assert_eq!(status_hooks[0]["status"], status.as_str(), "{case}");

                // The same status again changes nothing.
                let before = run.effects.len();
                assert!(!run.status(position, status), "{case}: duplicate");
                assert_eq!(run.effects.len(), before, "{case}: duplicate effects");
            }
        }
    }
}

#[test]
fn a_single_message_ends_without_a_final_report_or_deadline() {
    for status in ALL_STATUSES {
        let mut run = Run::started(single_message());
        assert!(
            run.scheduled().is_empty(),
            "no deadline for a plain message"
        );
        assert!(run.status(0, status));
        let (workflow, _, _) = expected(status, true, ConditionStatus::Delivered);
        assert_eq!(run.rec.status, workflow, "{status:?}");
        assert!(run.final_reports().is_empty(), "{status:?}");
        let hook = &run.webhooks(WebhookKind::MessageStatus)[0];
        assert!(
            hook.get("_links").is_none(),
            "no workflow link for a message"
        );
    }
}

#[test]
fn start_sends_the_first_step_and_schedules_its_expiry() {
    let mut run = Run::new(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.apply(Event::Start));
    assert_eq!(run.rec.status, WorkflowStatus::InProgress);
    assert_eq!(run.sends(), vec![0]);
    assert_eq!(run.scheduled(), vec![run.deadline_id(0)]);
    // 60 units of 1000 ms after the start.
    assert_eq!(run.rec.steps[0].deadline_ms, Some(run.now + 60_000));
    // Starting again (a redelivered accepted envelope) does nothing.
    assert!(!run.apply(Event::Start));
    assert_eq!(run.sends(), vec![0]);
}

#[test]
fn the_last_step_of_a_dispatch_gets_the_horizon() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.deadline(0));
    assert_eq!(run.sends(), vec![0, 1]);
    assert_eq!(run.rec.steps[1].deadline_ms, Some(run.now + 3_600_000));
    // A silent last step ends the workflow as error, with one report.
    assert!(run.deadline(1));
    assert_eq!(run.rec.status, WorkflowStatus::Error);
    assert_eq!(run.final_reports().len(), 1);
    assert!(run.rec.steps[1].expired_at_ms.is_some());
}

#[test]
fn delivered_before_submitted_keeps_delivered() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.status(0, MessageStatus::Delivered));
    assert_eq!(run.rec.status, WorkflowStatus::Completed);
    assert!(
        run.status(0, MessageStatus::Submitted),
        "late submitted is recorded"
    );
    assert_eq!(run.rec.steps[0].status, MessageStatus::Delivered);
    assert_eq!(run.rec.steps[0].history.len(), 2);
    assert_eq!(run.webhooks(WebhookKind::MessageStatus).len(), 2);
    assert_eq!(run.final_reports().len(), 1);
    assert_eq!(run.sends(), vec![0]);
}

#[test]
fn a_status_for_an_old_step_after_failover_is_reported_but_changes_nothing() {
    let mut run = Run::started(dispatch(
        &[Channel::ViberServiceMsg, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.deadline(0));
    assert_eq!(run.rec.current_step, Some(1));
    assert!(
        run.status(0, MessageStatus::Delivered),
        "late delivery applies"
    );
    assert_eq!(run.rec.status, WorkflowStatus::InProgress);
    assert_eq!(run.rec.current_step, Some(1));
    assert_eq!(run.rec.steps[0].status, MessageStatus::Delivered);
    assert!(run.final_reports().is_empty());
    // The last step decides, and the report counts both prices.
    assert!(run.status(1, MessageStatus::Delivered));
    assert_eq!(run.rec.status, WorkflowStatus::Completed);
    let report = &run.final_reports()[0];
    assert_eq!(report["usage"]["price"], "0.0666");
    assert_eq!(
        report["_links"]["messages"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_failure_for_an_old_step_does_not_fail_over_twice() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Messenger, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.deadline(0));
    assert!(run.status(0, MessageStatus::Undeliverable));
    assert_eq!(run.rec.current_step, Some(1));
    assert_eq!(run.sends(), vec![0, 1]);
}

#[test]
fn a_deadline_after_success_is_stale() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.status(0, MessageStatus::Delivered));
    assert!(!run.deadline(0), "deadline after completion");
    assert_eq!(run.sends(), vec![0]);
    assert_eq!(run.final_reports().len(), 1);
}

#[test]
fn a_deadline_for_an_old_step_or_with_a_wrong_due_time_is_stale() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Messenger, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.status(0, MessageStatus::Rejected));
    assert!(!run.deadline(0), "step 0 is no longer current");
    let fired = DeadlineFired {
        workflow_id: run.rec.workflow.workflow_id,
        message_uuid: run.rec.steps[1].message_uuid,
        due_ms: 42,
    };
    assert!(
        !run.apply(Event::Deadline(&fired)),
        "not the scheduled due time"
    );
    assert_eq!(run.sends(), vec![0, 1]);
}

#[test]
fn read_condition_is_not_met_by_delivery_alone() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Read,
    ));
    assert!(run.status(0, MessageStatus::Delivered));
    assert_eq!(run.rec.status, WorkflowStatus::InProgress);
    assert!(run.deadline(0));
    assert_eq!(run.sends(), vec![0, 1]);

    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Read,
    ));
    assert!(run.status(0, MessageStatus::Delivered));
    assert!(run.status(0, MessageStatus::Read));
    assert_eq!(run.rec.status, WorkflowStatus::Completed);
    assert_eq!(run.sends(), vec![0]);
}

#[test]
fn three_failing_steps_end_in_error_with_usage_summed() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::ViberServiceMsg, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.status(0, MessageStatus::Rejected));
    assert!(run.status(1, MessageStatus::Delivered));
    assert_eq!(run.rec.status, WorkflowStatus::Completed);

    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::ViberServiceMsg, Channel::Sms],
        ConditionStatus::Read,
    ));
    assert!(run.status(0, MessageStatus::Rejected));
    assert!(run.status(1, MessageStatus::Delivered)); // priced, not read
    assert!(run.deadline(1));
    assert!(run.status(2, MessageStatus::Undeliverable));
    assert_eq!(run.rec.status, WorkflowStatus::Error);
    assert_eq!(run.sends(), vec![0, 1, 2]);
    let reports = run.final_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["status"], "error");
    assert_eq!(reports[0]["usage"]["price"], "0.0333");
    let statuses: Vec<&str> = reports[0]["_links"]["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["rejected", "delivered", "undeliverable"]);
}

#[test]
fn statuses_for_unknown_or_unsent_steps_are_ignored() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(
        !run.status(1, MessageStatus::Delivered),
        "step 1 never sent"
    );
    let mut event = run.status_event(0, MessageStatus::Delivered);
    event.message_uuid = Uuid::new_v4();
    assert!(!run.apply(Event::Status(&event)), "unknown message");
    let mut event = run.status_event(0, MessageStatus::Delivered);
    event.workflow_id = Uuid::new_v4();
    assert!(!run.apply(Event::Status(&event)), "another workflow");
}

#[test]
fn webhooks_have_the_spec_shape() {
    let mut run = Run::started(dispatch(
        &[Channel::Whatsapp, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    assert!(run.status(0, MessageStatus::Rejected));
    assert!(run.status(1, MessageStatus::Delivered));
    let hooks = run.webhooks(WebhookKind::MessageStatus);
    let id = run.rec.workflow.workflow_id;
    assert_eq!(hooks[0]["status"], "rejected");
    assert_eq!(hooks[0]["error"]["code"], 1330);
    assert_eq!(hooks[0]["to"]["type"], "whatsapp");
    assert_eq!(
        hooks[0]["_links"]["workflow"]["dispatch_uuid"],
        id.to_string()
    );
    assert_eq!(
        hooks[0]["_links"]["workflow"]["href"],
        format!("https://dispatch.example/v0.1/dispatch/{id}")
    );
    assert!(
        hooks[0]["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(hooks[1]["usage"]["price"], "0.0333");
    let report = &run.final_reports()[0];
    assert_eq!(report["template"], "failover");
    assert_eq!(report["status"], "completed");
    assert_eq!(report["usage"]["currency"], "EUR");
    let first = &report["_links"]["messages"][0];
    assert_eq!(first["channel"], "whatsapp");
    assert_eq!(
        first["href"],
        format!(
            "https://dispatch.example/v0.1/messages/{}",
            run.rec.steps[0].message_uuid
        )
    );
}

/// The sender's estimate comes with `submitted` and completes a
/// `delivered` that carries no price (or no SMS segments); it is never
/// shown on `submitted`, and never counted for a message not delivered.
#[test]
fn the_estimate_completes_a_delivered_without_a_price() {
    let estimate = Usage {
        encoding: Some("ucs2".into()),
        segments: Some(2),
        ..Usage::eur("0.0666")
    };
    let mut run = Run::started(dispatch(
        &[Channel::Sms, Channel::Sms],
        ConditionStatus::Delivered,
    ));
    let mut submitted = run.status_event(0, MessageStatus::Submitted);
    submitted.usage = Some(estimate.clone());
    assert!(run.apply(Event::Status(&submitted)));
    let mut delivered = run.status_event(0, MessageStatus::Delivered);
    delivered.usage = None;
    assert!(run.apply(Event::Status(&delivered)));
    assert_eq!(run.rec.steps[0].usage.as_ref(), Some(&estimate));
    let bodies = run.webhooks(WebhookKind::MessageStatus);
    assert!(bodies[0].get("usage").is_none(), "not on submitted");
    assert_eq!(bodies[1]["usage"], serde_json::json!(estimate));
    assert_eq!(run.final_reports()[0]["usage"]["price"], "0.0666");

    // The provider's price wins; the segments we counted stay.
    let mut run = Run::started(single_message());
    let mut submitted = run.status_event(0, MessageStatus::Submitted);
    submitted.usage = Some(estimate.clone());
    assert!(run.apply(Event::Status(&submitted)));
    assert!(run.status(0, MessageStatus::Delivered));
    let usage = run.rec.steps[0].usage.clone().expect("usage");
    assert_eq!((usage.price.as_str(), usage.segments), ("0.0333", Some(2)));

    // Not delivered: no usage.
    let mut run = Run::started(single_message());
    assert!(run.apply(Event::Status(&submitted_with(&run, &estimate))));
    assert!(run.status(0, MessageStatus::Undeliverable));
    assert!(run.rec.steps[0].usage.is_none());
}

fn submitted_with(run: &Run, usage: &Usage) -> StatusEvent {
    let mut event = run.status_event(0, MessageStatus::Submitted);
    event.usage = Some(usage.clone());
    event
}

/// A step with no condition (a Messages API v1 chain) fails over only on
/// `rejected` or `undeliverable`; its deadline is the horizon, and a
/// silent step ends the chain rather than sending the next message.
#[test]
fn a_step_without_condition_waits_for_a_failure_or_the_horizon() {
    let mut rec = dispatch(&[Channel::Whatsapp, Channel::Sms], ConditionStatus::Read);
    rec.workflow.steps[0].message.failover = None;
    let mut run = Run::started(rec.clone());
    assert_eq!(run.rec.steps[0].deadline_ms, Some(run.now + 3_600_000));
    assert!(run.status(0, MessageStatus::Submitted));
    assert_eq!(run.sends(), vec![0], "no failover on silence");
    assert!(run.status(0, MessageStatus::Undeliverable));
    assert_eq!(run.sends(), vec![0, 1], "failover on undeliverable");

    let mut run = Run::started(rec.clone());
    assert!(run.status(0, MessageStatus::Delivered));
    assert_eq!(run.rec.status, WorkflowStatus::Completed);

    let mut run = Run::started(rec);
    assert!(run.deadline(0));
    assert_eq!(run.sends(), vec![0], "the horizon ends the chain");
    assert_eq!(run.rec.status, WorkflowStatus::Error);
    assert_eq!(run.final_reports().len(), 1);
}

/// A v1 chain: its status webhooks in the v1 shape, field by field, at
/// the message's own URL when it names one, and its report for the
/// `final_report_url`.
#[test]
fn v1_chains_report_in_the_v1_shape() {
    use dispatch_model::v1::V1Message;
    let v1 = |channel: &str, to: &str, extra: serde_json::Value| -> OutboundMessage {
        let mut body = serde_json::json!({"channel": channel, "message_type": "text", "to": to,
            "from": "447700900001", "text": "Hi", "client_ref": "r"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        serde_json::from_value::<V1Message>(body)
            .expect("v1")
            .to_outbound()
    };
    let steps = vec![
        Step {
            message_uuid: Uuid::new_v4(),
            message: v1(
                "whatsapp",
                "447700900000",
                serde_json::json!({
                "webhook_url": "https://hooks.example/own"}),
            ),
        },
        Step {
            message_uuid: Uuid::new_v4(),
            message: v1(
                "sms",
                "447700900002",
                serde_json::json!({"webhook_version": "v0.1"}),
            ),
        },
    ];
    let mut run = Run::started(record(WorkflowKind::Failover, steps));
    assert!(run.status(0, MessageStatus::Rejected));
    let hooks: Vec<WebhookJob> = run
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish {
                envelope: Envelope::Webhook(j),
            } => Some(j.clone()),
            _ => None,
        })
        .collect();
    let rejected = &hooks[0];
    assert_eq!(rejected.url.as_deref(), Some("https://hooks.example/own"));
    let id = run.rec.workflow.workflow_id;
    let first = run.rec.steps[0].message_uuid;
    assert_eq!(
        rejected.body,
        serde_json::json!({
            "message_uuid": first,
            "to": "447700900000",
            "from": "447700900001",
            "timestamp": rejected.body["timestamp"],
            "status": "rejected",
            "channel": "whatsapp",
            "client_ref": "r",
            "error": {
                "type": "https://developer.vonage.com/api-errors/messages#1330",
                "title": "1330",
                "detail": "Unknown",
                "instance": first,
            },
            "workflow": {"workflow_id": id, "items_number": "1", "items_total": "2"},
        })
    );
    assert_eq!(run.sends(), vec![0, 1], "rejected fails over");
    // The second message asked for the v0.1 shape.
    assert!(run.status(1, MessageStatus::Delivered));
    let delivered = run.webhooks(WebhookKind::MessageStatus);
    let last = delivered.last().expect("delivered");
    assert_eq!(last["to"]["number"], "447700900002", "{last}");
    let report = run.webhooks(WebhookKind::ChainReport);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0]["workflow_id"], id.to_string());
    assert_eq!(report[0]["status"], "completed");
    assert_eq!(report[0]["messages"][0]["channel"], "whatsapp");
    assert!(run.final_reports().is_empty(), "no Dispatch final report");
}
