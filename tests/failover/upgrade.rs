//! A rolling upgrade from the topology where a workflow service applied
//! every event from the `workflow` queue: what the old services left
//! queued (accepted work, statuses, deadline timer entries) and records
//! in the old format are all carried on by this version, and every
//! workflow ends with one final report.

use std::time::Duration;

use dispatch_infra::broker::Broker;
use dispatch_infra::redis::Keys;
use dispatch_infra::timer::Scheduler;
use dispatch_model::envelope::{
    DeadlineFired, Envelope, StatusEvent, Step, WORKFLOW_DEADLINE, WorkflowAccepted, WorkflowKind,
};
use dispatch_model::record::{MessageStatus, WorkflowRecord, WorkflowStatus, now_ms};
use uuid::Uuid;

use crate::system::{System, step};

fn accepted(sys: &System, to: &str, fallback: &str) -> WorkflowAccepted {
    let steps = [
        step("whatsapp", to, Some((600, "delivered"))),
        step("sms", fallback, None),
    ];
    WorkflowAccepted {
        workflow_id: Uuid::new_v4(),
        kind: WorkflowKind::Dispatch,
        account: sys.api_key.clone(),
        application_id: None,
        accepted_at_ms: now_ms(),
        steps: steps
            .into_iter()
            .map(|s| Step {
                message_uuid: Uuid::new_v4(),
                message: serde_json::from_value(s).expect("a message"),
            })
            .collect(),
        trace_id: None,
    }
}

/// A record as the old services wrote it: `v` and `r` only.
async fn write_old(redis: &mut dispatch_infra::redis::Redis, keys: &Keys, record: &WorkflowRecord) {
    let key = keys.workflow(&record.workflow.workflow_id.to_string());
    let json = serde_json::to_string(record).expect("json");
    let _: () = redis::pipe()
        .hset_multiple(&key, &[("v", "1"), ("r", json.as_str())])
        .expire(&key, 600)
        .query_async(redis)
        .await
        .expect("written");
}

/// The record of an old workflow service that sent step 1 at `sent_ms`.
fn sent_first(accepted: WorkflowAccepted, sent_ms: i64, deadline_ms: i64) -> WorkflowRecord {
    let mut record = WorkflowRecord::new(accepted);
    record.status = WorkflowStatus::InProgress;
    record.current_step = Some(0);
    record.steps[0].sent_at_ms = Some(sent_ms);
    record.steps[0].deadline_ms = Some(deadline_ms);
    record
}

#[tokio::test]
async fn what_the_old_topology_left_queued_still_ends() {
    // No timer yet: the new code starts once everything old is in place.
    let sys = System::start_with(false).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let broker = Broker::start(&sys.config, "old-services", shutdown.clone());
    assert!(broker.wait_ready(Duration::from_secs(10)).await);
    let mut redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = Keys::for_config(&sys.config);
    let mut ids = Vec::new();

    // Accepted by the old ingest, queued, no record (its write lagged).
    let fresh = accepted(&sys, "447700640100", "447700640200");
    ids.push(fresh.workflow_id);
    broker
        .publish(&Envelope::WorkflowAccepted(fresh))
        .await
        .expect("published");

    // Accepted with its lookup record written as the old ingest did.
    let recorded = accepted(&sys, "447700640300", "447700640400");
    ids.push(recorded.workflow_id);
    write_old(&mut redis, &keys, &WorkflowRecord::new(recorded.clone())).await;
    broker
        .publish(&Envelope::WorkflowAccepted(recorded))
        .await
        .expect("published");

    // Step 1 sent by the old services and never delivered; its deadline
    // is an old timer entry, published to the `workflow` queue then and
    // applied by the timer now.
    let expired = accepted(&sys, "447700640500", "447700640600");
    ids.push(expired.workflow_id);
    let due_ms = now_ms() + 200;
    let record = sent_first(expired.clone(), now_ms(), due_ms);
    write_old(&mut redis, &keys, &record).await;
    let fired = Envelope::Deadline(DeadlineFired {
        workflow_id: expired.workflow_id,
        message_uuid: expired.steps[0].message_uuid,
        due_ms,
    });
    Scheduler::new(redis.clone(), keys.clone())
        .schedule(
            // The id deadlines had before it named their due time.
            &format!("deadline:{}", expired.steps[0].message_uuid),
            due_ms,
            WORKFLOW_DEADLINE,
            &fired.id(),
            &serde_json::to_string(&fired).expect("json"),
        )
        .await
        .expect("scheduled");

    // Step 1 sent and delivered, its receipt queued as a status event.
    let delivered = accepted(&sys, "447700640700", "447700640800");
    ids.push(delivered.workflow_id);
    let record = sent_first(delivered.clone(), now_ms(), now_ms() + 600_000);
    write_old(&mut redis, &keys, &record).await;
    broker
        .publish(&Envelope::Status(StatusEvent {
            workflow_id: delivered.workflow_id,
            message_uuid: delivered.steps[0].message_uuid,
            status: MessageStatus::Delivered,
            at_ms: now_ms(),
            provider_message_id: Some("old-provider-id".into()),
            error: None,
            usage: None,
            provider: None,
        }))
        .await
        .expect("published");

    // The upgrade: this version's timer (and everything else) runs.
    let _timer = sys.timer_process();
    for id in &ids {
        let report = sys.final_report(*id).await;
        assert_eq!(report["status"], "completed", "{id}: {report}");
        assert_eq!(sys.final_reports(*id).len(), 1, "{id}");
    }
    // The two started after the upgrade sent their first step once; the
    // expired one failed over to SMS; the delivered one sent nothing more.
    let sent = |to: &str| sys.sim.sends_to(to).len();
    assert_eq!((sent("447700640100"), sent("447700640200")), (1, 0));
    assert_eq!((sent("447700640300"), sent("447700640400")), (1, 0));
    assert_eq!((sent("447700640500"), sent("447700640600")), (0, 1));
    assert_eq!((sent("447700640700"), sent("447700640800")), (0, 0));
    shutdown.cancel();
}
