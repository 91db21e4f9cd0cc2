//! End to end: accepted work goes through RabbitMQ and Redis across the
//! ingest, the senders, the timer and the provider simulator, each
//! applying the transitions whose events arise there.
//! Each case asserts the sends the simulator saw and the final state.

mod console;
mod console_browser;
mod handoffs;
mod isolation;
mod lifecycle;
mod providers;
mod system;
mod targets;
mod tls;
mod upgrade;
mod v1;
mod webhooks;

use std::time::Duration;

use dispatch_provider_sim::behaviour::{Behaviour, Delivery};
use dispatch_provider_sim::control::Outcome as SimOutcome;
use serde_json::json;
use system::{EXPIRY_UNIT_MS, System, step};

/// Milliseconds since the epoch of an ISO timestamp in a view.
fn millis(value: &serde_json::Value) -> i64 {
    let text = value.as_str().unwrap_or_default();
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or_default()
}

/// Accepted sends to `to`.
/// Statuses reported, each once, in any order: a receipt may overtake
/// the sender's own `submitted` under load.
fn sorted(mut statuses: Vec<String>) -> Vec<String> {
    statuses.sort();
    statuses
}

fn accepted(sys: &System, to: &str) -> usize {
    sys.sim
        .sends_to(to)
        .iter()
        .filter(|s| s.outcome == SimOutcome::Accepted)
        .count()
}

#[tokio::test]
async fn delivered_in_time_completes_without_the_next_channel() {
    let sys = System::start().await;
    let id = sys
        .dispatch(vec![
            step("whatsapp", "447700100100", Some((600, "delivered"))),
            step("sms", "447700100200", None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    assert_eq!(accepted(&sys, "447700100100"), 1);
    assert!(sys.sim.sends_to("447700100200").is_empty(), "no SMS sent");
    assert_eq!(report["usage"]["price"], "0.015");
    assert_eq!(
        report["_links"]["messages"].as_array().map(Vec::len),
        Some(1)
    );

    let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["current_step"], 0);
    assert_eq!(view["messages"][0]["status"], "delivered");
    assert!(view["messages"][0]["timestamps"]["submitted"].is_string());
    assert!(view["messages"][1].get("sent_at").is_none());
    let first = view["messages"][0]["message_uuid"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(sorted(sys.statuses(first)), ["delivered", "submitted"]);
    let message = sys.get(&format!("/v0.1/messages/{first}")).await;
    assert_eq!(message["status"], "delivered");
    assert_eq!(
        message["_links"]["workflow"]["dispatch_uuid"],
        id.to_string()
    );
}

#[tokio::test]
async fn never_delivered_fails_over_after_expiry_time() {
    let sys = System::start().await;
    let id = sys
        .dispatch(vec![
            step("viber_service_msg", "447700200103", Some((15, "delivered"))),
            step("sms", "447700200200", None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    let viber = sys.sim.sends_to("447700200103");
    let sms = sys.sim.sends_to("447700200200");
    assert_eq!((viber.len(), sms.len()), (1, 1));
    let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
    // The expiry runs from the first step's start (its send command).
    let started = millis(&view["messages"][0]["sent_at"]);
    let expiry = 15 * EXPIRY_UNIT_MS as i64;
    let waited = sms[0].at_ms - started;
    assert!(
        waited >= expiry,
        "SMS after {waited} ms, before the {expiry} ms expiry"
    );
    assert!(millis(&view["messages"][0]["expired_at"]) >= started + expiry);
    assert_eq!(view["current_step"], 1);
    assert_eq!(view["messages"][0]["status"], "submitted");
    assert!(view["messages"][0]["expired_at"].is_string());
    assert_eq!(view["messages"][1]["status"], "delivered");
}

#[tokio::test]
async fn rejected_at_submit_fails_over_at_once() {
    let sys = System::start().await;
    let id = sys
        .dispatch(vec![
            step("whatsapp", "447700300102", Some((600, "delivered"))),
            step("sms", "447700300200", None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    let whatsapp = sys.sim.sends_to("447700300102");
    let sms = sys.sim.sends_to("447700300200");
    assert_eq!(whatsapp[0].outcome, SimOutcome::Rejected);
    assert_eq!(sms.len(), 1);
    // Far sooner than the 12 s expiry.
    assert!(sms[0].at_ms - whatsapp[0].at_ms < 5_000);
    let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
    assert_eq!(view["messages"][0]["status"], "rejected");
    assert_eq!(view["messages"][0]["error"]["code"], 1300);
    let statuses: Vec<_> = report["_links"]["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["status"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, [json!("rejected"), json!("delivered")]);
}

#[tokio::test]
async fn read_condition_is_met_by_read_and_not_by_delivery() {
    let sys = System::start().await;
    // `01`: delivered, then read.
    let read = sys
        .dispatch(vec![
            step("whatsapp", "447700400101", Some((600, "read"))),
            step("sms", "447700400200", None),
        ])
        .await;
    // `00`: delivered only.
    let unread = sys
        .dispatch(vec![
            step("whatsapp", "447700400300", Some((15, "read"))),
            step("sms", "447700400400", None),
        ])
        .await;
    assert_eq!(sys.final_report(read).await["status"], "completed");
    assert!(sys.sim.sends_to("447700400200").is_empty());
    assert_eq!(sys.final_report(unread).await["status"], "completed");
    assert_eq!(
        accepted(&sys, "447700400400"),
        1,
        "SMS after a mere delivery"
    );
    let view = sys.get(&format!("/v0.1/dispatch/{unread}")).await;
    assert_eq!(view["messages"][0]["status"], "delivered");
    assert_eq!(view["messages"][1]["status"], "delivered");
}

#[tokio::test]
async fn three_failing_steps_end_in_error_with_usage_summed() {
    let sys = System::start().await;
    // Delivered but never read (priced), twice; then undeliverable.
    let id = sys
        .dispatch(vec![
            step("whatsapp", "447700500100", Some((15, "read"))),
            step("viber_service_msg", "447700500200", Some((15, "read"))),
            step("sms", "447700500304", None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "error");
    // whatsapp 0.0150 + viber 0.0120; the undeliverable SMS is free.
    assert_eq!(report["usage"]["price"], "0.027");
    let statuses: Vec<_> = report["_links"]["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["status"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        statuses,
        [
            json!("delivered"),
            json!("delivered"),
            json!("undeliverable")
        ]
    );
    for to in ["447700500100", "447700500200", "447700500304"] {
        assert_eq!(accepted(&sys, to), 1, "{to}");
    }
    let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
    assert_eq!(view["status"], "error");
    assert_eq!(view["messages"][2]["error"]["code"], 1330);
}

#[tokio::test]
async fn a_late_status_for_an_earlier_step_is_reported_without_changing_the_outcome() {
    let sys = System::start().await;
    // Viber delivers at 900 ms, long after its 300 ms expiry.
    sys.sim.set(
        "447700600100",
        Behaviour {
            delay_ms: Some(900),
            ..Behaviour::default()
        },
    );
    let id = sys
        .dispatch(vec![
            step("viber_service_msg", "447700600100", Some((15, "delivered"))),
            step("sms", "447700600200", None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    assert_eq!(report["_links"]["messages"][0]["status"], "submitted");
    let viber = sys.get(&format!("/v0.1/dispatch/{id}")).await["messages"][0]["message_uuid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let late = sys
        .eventually(Duration::from_secs(10), || {
            sys.statuses(&viber)
                .contains(&"delivered".to_owned())
                .then_some(())
        })
        .await;
    assert!(late.is_some(), "the late delivery is reported");
    let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["current_step"], 1);
    assert_eq!(view["messages"][0]["status"], "delivered");
    assert_eq!(view["usage"]["price"], "0.0453", "both messages counted");
    assert_eq!(sys.final_reports(id).len(), 1);
}

#[tokio::test]
async fn transient_provider_failures_are_retried_without_duplicates() {
    let sys = System::start().await;
    // `05`: 503, 503, then accepted and delivered.
    let id = sys
        .message(json!({
            "to": {"type": "sms", "number": "447700700105"},
            "from": {"type": "sms", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
            "client_ref": "retry-me",
        }))
        .await;
    let message = sys
        .eventually(Duration::from_secs(10), || {
            let statuses = sys.statuses(&id.to_string());
            statuses
                .contains(&"delivered".to_owned())
                .then_some(statuses)
        })
        .await
        .expect("delivered");
    // Each once; their order is not promised (the receipt may overtake
    // the sender's own report under load).
    assert_eq!(sorted(message), ["delivered", "submitted"]);
    let outcomes: Vec<_> = sys
        .sim
        .sends_to("447700700105")
        .iter()
        .map(|s| s.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            SimOutcome::Unavailable,
            SimOutcome::Unavailable,
            SimOutcome::Accepted
        ]
    );
    let view = sys.get(&format!("/v0.1/messages/{id}")).await;
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["client_ref"], "retry-me");
    assert_eq!(view["usage"]["price"], "0.0333");
    assert!(view["_links"].get("workflow").is_none());
    // A plain message has no final report.
    assert!(sys.final_reports(id).is_empty());
}

#[tokio::test]
async fn killed_timer_processes_leave_every_workflow_ending_once() {
    let sys = System::start_with(false).await;
    let mut first = sys.timer_process();
    let mut second = sys.timer_process();
    let mut ids = Vec::new();
    for i in 0..40 {
        let delay = Behaviour {
            delay_ms: Some(50 + (i % 5) * 40),
            delivery: if i % 3 == 0 {
                Delivery::None
            } else {
                Delivery::Delivered
            },
            ..Behaviour::default()
        };
        let to = format!("4477008{i:05}");
        let fallback = format!("4477009{i:05}");
        sys.sim.set(&to, delay);
        sys.sim.set(&fallback, Behaviour::default());
        ids.push(
            sys.dispatch(vec![
                step("whatsapp", &to, Some((15, "delivered"))),
                step("sms", &fallback, None),
            ])
            .await,
        );
    }
    // Kill one instance mid-run, hard, and start a replacement.
    sys.eventually(Duration::from_secs(15), || {
        (ids.iter()
            .filter(|id| !sys.final_reports(**id).is_empty())
            .count()
            >= 5)
            .then_some(())
    })
    .await
    .expect("some workflows finish");
    first.kill().await.expect("kill -9");
    let mut third = sys.timer_process();

    for id in &ids {
        let report = sys.final_report(*id).await;
        assert_eq!(report["status"], "completed", "{id}");
        assert_eq!(sys.final_reports(*id).len(), 1, "{id}: one final report");
    }
    for i in 0..40 {
        let whatsapp = accepted(&sys, &format!("4477008{i:05}"));
        let sms = accepted(&sys, &format!("4477009{i:05}"));
        // Never twice. Not at all only when its send command reached a
        // sender after its 300 ms expiry (a loaded cluster): the step had
        // expired, and the workflow failed over without it.
        assert!(
            whatsapp <= 1,
            "step 1 of workflow {i} sent {whatsapp} times"
        );
        // A delivery held up by the kill may come after the expiry, so
        // a delivered first step may still fail over; never twice.
        let expected = if i % 3 == 0 || whatsapp == 0 {
            1..=1
        } else {
            0..=1
        };
        assert!(
            expected.contains(&sms),
            "step 2 of workflow {i} sent {sms} times"
        );
    }
    let _ = second.kill().await;
    let _ = third.kill().await;
}

#[tokio::test]
async fn a_redelivered_send_command_does_not_call_the_provider_again() {
    let sys = System::start().await;
    let to = "447700110000";
    let message = sms(to);
    let id = sys.message(message.clone()).await;
    reported(&sys, id, "delivered").await;
    // The same command again, twice, as the broker would redeliver it.
    resend(&sys, id, &message, 2).await;
    assert_eq!(
        sys.sim.sends_to(to).len(),
        1,
        "the provider was called once"
    );
    assert_eq!(
        sorted(sys.statuses(&id.to_string())),
        ["delivered", "submitted"]
    );
}

fn sms(to: &str) -> serde_json::Value {
    json!({
        "to": {"type": "sms", "number": to},
        "from": {"type": "sms", "number": "447700900999"},
        "message": {"content": {"type": "text", "text": "Hi"}},
    })
}

/// Waits until `status` was reported for message `id`.
async fn reported(sys: &System, id: uuid::Uuid, status: &str) {
    sys.eventually(Duration::from_secs(10), || {
        sys.statuses(&id.to_string())
            .iter()
            .any(|s| s == status)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{status} for {id}"));
}

/// Publishes the send command of Messages API send `id` `times` times, as
/// redeliveries, and gives the senders a moment to handle them.
async fn resend(sys: &System, id: uuid::Uuid, message: &serde_json::Value, times: usize) {
    use dispatch_infra::broker::Broker;
    use dispatch_model::envelope::{Envelope, SendCommand};

    let shutdown = tokio_util::sync::CancellationToken::new();
    let broker = Broker::start(&sys.config, "test", shutdown.clone());
    assert!(broker.wait_ready(Duration::from_secs(10)).await);
    let command = SendCommand {
        workflow_id: id,
        message_uuid: id,
        channel: dispatch_model::Channel::Sms,
        account: "ignored".into(),
        application_id: None,
        message: serde_json::from_value(message.clone()).expect("message"),
        paced: None,
    };
    for _ in 0..times {
        broker
            .publish(&Envelope::Send(Box::new(command.clone())))
            .await
            .expect("published");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
}

#[tokio::test]
async fn an_account_can_route_a_channel_to_its_own_provider() {
    let sys = System::start().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let own = dispatch_provider_sim::spawn(&sys.config, shutdown.clone())
        .await
        .expect("second simulator");
    let settings = json!({
        "kind": "simulator",
        "url": format!("http://{}", own.addr),
        "secret": sys.config.simulator_secret,
    });
    let mut redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = dispatch_infra::redis::Keys::for_config(&sys.config);
    redis::cmd("HSET")
        .arg(keys.providers(&sys.api_key))
        .arg("sms")
        .arg(settings.to_string())
        .exec_async(&mut redis)
        .await
        .expect("HSET");

    let routed = sys.message(sms("447700120000")).await;
    let other = sys
        .message(json!({
            "to": {"type": "whatsapp", "number": "447700120100"},
            "from": {"type": "whatsapp", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
        }))
        .await;
    for id in [routed, other] {
        sys.eventually(Duration::from_secs(10), || {
            sys.statuses(&id.to_string())
                .contains(&"delivered".to_owned())
                .then_some(())
        })
        .await
        .expect("delivered");
    }
    assert_eq!(
        own.control.sends_to("447700120000").len(),
        1,
        "SMS to the account's provider"
    );
    assert!(sys.sim.sends_to("447700120000").is_empty());
    assert_eq!(
        sys.sim.sends_to("447700120100").len(),
        1,
        "WhatsApp to the default"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn the_per_channel_rate_limit_paces_provider_calls() {
    let sys = System::start_configured(true, |c| c.sender_rate_per_sec = 5).await;
    let numbers: Vec<String> = (0..10).map(|i| format!("4477001300{i:02}")).collect();
    for to in &numbers {
        sys.sim.set(to, Behaviour::default());
        sys.message(sms(to)).await;
    }
    let times = sys
        .eventually(Duration::from_secs(10), || {
            let mut times: Vec<i64> = numbers
                .iter()
                .flat_map(|to| sys.sim.sends_to(to))
                .map(|s| s.at_ms)
                .collect();
            (times.len() == numbers.len()).then(|| {
                times.sort_unstable();
                times
            })
        })
        .await
        .expect("all sent");
    // A burst of 5, then one every 200 ms.
    let span = times[9] - times[0];
    assert!(span >= 900, "10 sends at 5/s took only {span} ms");
}

#[tokio::test]
async fn a_providers_limit_holds_over_three_sender_processes() {
    use futures_util::StreamExt;
    const MESSAGES: usize = 150;
    const PER_SEC: f64 = 50.0;
    let sys = System::start_external(&["sender"], |_| {}).await;
    let _senders: Vec<_> = (0..3)
        .map(|_| {
            sys.command("sender")
                .arg("--channel=sms")
                .env(
                    "DISPATCH_SEND_LIMITS",
                    format!(
                        r#"[{{channel = "sms", provider = "simulator", per_sec = {PER_SEC}}}]"#
                    ),
                )
                // Most sends wait for their turn at the timer.
                .env("DISPATCH_SEND_LIMIT_HOLD_MS", "100")
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("sender starts")
        })
        .collect();
    let numbers: Vec<String> = (0..MESSAGES).map(|i| format!("447700160{i:03}")).collect();
    for to in &numbers {
        sys.sim.set(to, Behaviour::default());
    }
    let sys = &sys;
    let ids: Vec<(uuid::Uuid, &String)> = futures_util::stream::iter(&numbers)
        .map(|to| async move { (sys.message(sms(to)).await, to) })
        .buffer_unordered(16)
        .collect()
        .await;
    // Duplicates of commands waiting for their turn at the timer (as an
    // outbox recovery or a redelivery makes them) are not sent again.
    let broker = dispatch_infra::broker::Broker::start(&sys.config, "test", Default::default());
    assert!(broker.wait_ready(Duration::from_secs(10)).await);
    for (id, to) in ids.iter().rev().take(20) {
        let command = dispatch_model::envelope::SendCommand {
            workflow_id: *id,
            message_uuid: *id,
            channel: dispatch_model::Channel::Sms,
            account: sys.api_key.clone(),
            application_id: None,
            message: serde_json::from_value(sms(to)).expect("message"),
            paced: None,
        };
        let duplicate = dispatch_model::envelope::Envelope::Send(Box::new(command));
        broker.publish(&duplicate).await.expect("published");
    }
    let times = sys
        .eventually(Duration::from_secs(30), || {
            let sends: Vec<_> = numbers.iter().map(|to| sys.sim.sends_to(to)).collect();
            sends.iter().all(|s| !s.is_empty()).then(|| {
                assert!(
                    sends.iter().all(|s| s.len() == 1),
                    "a message was sent twice"
                );
                let mut times: Vec<i64> = sends.iter().map(|s| s[0].at_ms).collect();
                times.sort_unstable();
                times
            })
        })
        .await
        .expect("every message sent");
    let span_ms = (times[MESSAGES - 1] - times[0]) as f64;
    let rate = (MESSAGES - 1) as f64 * 1000.0 / span_ms;
    println!(
        "{MESSAGES} sends by 3 senders under one limit of {PER_SEC}/s: {rate:.1}/s over {span_ms} ms"
    );
    assert!(
        (PER_SEC * 0.9..=PER_SEC * 1.1).contains(&rate),
        "sent at {rate:.1}/s under a limit of {PER_SEC}/s"
    );
}

#[tokio::test]
async fn a_redelivered_send_of_a_rejected_message_is_not_sent_again() {
    let sys = System::start().await;
    let to = "447700140002"; // rejected at submit
    let message = sms(to);
    let id = sys.message(message.clone()).await;
    reported(&sys, id, "rejected").await;
    resend(&sys, id, &message, 1).await;
    assert_eq!(
        sys.sim.sends_to(to).len(),
        1,
        "the provider was called once"
    );
    assert_eq!(sys.statuses(&id.to_string()), ["rejected"]);
}

#[tokio::test]
async fn abandoned_work_never_runs_and_work_under_way_cannot_be_abandoned() {
    use dispatch_infra::broker::Broker;
    use dispatch_infra::store::{Fate, WorkflowStore};
    use dispatch_model::envelope::{Envelope, Step, WorkflowAccepted, WorkflowKind};

    let sys = System::start().await;
    let redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = dispatch_infra::redis::Keys::for_config(&sys.config);
    let store = WorkflowStore::new(redis, keys, 60);
    let store_redis = |sys: &System| dispatch_infra::redis::connect(&sys.config).expect("redis");

    // The ingest of before the upgrade lost the confirm and abandoned the
    // request: the broker still delivers it from the old queue, and the
    // timer that drains that queue drops it.
    let to = "447700150000";
    let id = uuid::Uuid::new_v4();
    assert_eq!(
        store
            .settle_fate(&id.to_string(), Fate::Abandoned)
            .await
            .expect("fate"),
        Fate::Abandoned
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let broker = Broker::start(&sys.config, "test", shutdown.clone());
    assert!(broker.wait_ready(Duration::from_secs(10)).await);
    let accepted = WorkflowAccepted {
        workflow_id: id,
        kind: WorkflowKind::Message,
        account: sys.api_key.clone(),
        application_id: None,
        accepted_at_ms: 0,
        steps: vec![Step {
            message_uuid: id,
            message: serde_json::from_value(sms(to)).expect("message"),
        }],
        trace_id: None,
    };
    broker
        .publish(&Envelope::WorkflowAccepted(accepted))
        .await
        .expect("published");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sys.sim.sends_to(to).is_empty(), "abandoned work was sent");
    assert!(store.load(&id.to_string()).await.expect("load").is_none());

    // Written by ingest, but the answer was lost and nothing moved it on:
    // abandoning removes the record, so that its deadline and its outbox's
    // recovery find nothing when they fire, and nothing is ever sent.
    let engine = dispatch_flow::Engine::new(&sys.config, store_redis(&sys), broker.clone());
    let lost = uuid::Uuid::new_v4();
    let to = "447700150200";
    let written = WorkflowAccepted {
        workflow_id: lost,
        kind: WorkflowKind::Dispatch,
        account: sys.api_key.clone(),
        application_id: None,
        accepted_at_ms: 0,
        steps: vec![Step {
            message_uuid: uuid::Uuid::new_v4(),
            message: serde_json::from_value(sms(to)).expect("message"),
        }],
        trace_id: None,
    };
    let outbox = engine.start(written, &[]).await.expect("written");
    drop(outbox); // as if ingest died before publishing
    assert_eq!(
        store.abandon(&lost.to_string()).await.expect("abandon"),
        Fate::Abandoned
    );
    assert!(store.load(&lost.to_string()).await.expect("load").is_none());
    // Past the outbox's recovery time and the timer's lease: nothing.
    tokio::time::sleep(Duration::from_millis(
        sys.config.outbox_recovery_ms + sys.config.timer_max_idle_ms + 500,
    ))
    .await;
    assert!(sys.sim.sends_to(to).is_empty(), "abandoned work was sent");

    // Moved on already (sent, `submitted` applied): abandoning fails, and
    // ingest answers 202 instead of 503.
    let running = sys.message(sms("447700150100")).await;
    sys.eventually(Duration::from_secs(10), || {
        (!sys.statuses(&running.to_string()).is_empty()).then_some(())
    })
    .await
    .expect("running");
    assert_eq!(
        store.abandon(&running.to_string()).await.expect("abandon"),
        Fate::Claimed
    );
    assert!(
        store
            .load(&running.to_string())
            .await
            .expect("load")
            .is_some()
    );
    shutdown.cancel();
}
