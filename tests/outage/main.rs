//! Infrastructure outages under a running system: RabbitMQ and Redis are
//! really restarted (through `scripts/lib/services.sh`) while dispatches
//! are being posted and worked on. Every request answered 202 must still
//! end with exactly one final report; requests refused meanwhile get 503.
//! (While Redis is down ingest refuses with 503: the record with its
//! first send is what a 202 promises.)
//!
//! These tests need private instances they may restart: `scripts/test`
//! exports `DISPATCH_DEV_SERVICES_DIR` when it started both. Against
//! RabbitMQ and Redis given by URL they say so and do nothing. They run
//! one at a time (a restart would disturb a neighbour) and in their own
//! test binary, so no other test shares the outage.

#[path = "../failover/system.rs"]
#[allow(dead_code)]
mod system;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch_provider_sim::behaviour::Behaviour;
use dispatch_provider_sim::control::Outcome as SimOutcome;
use serde_json::Value;
use system::{System, step};
use uuid::Uuid;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn services_dir() -> Option<String> {
    let dir = std::env::var("DISPATCH_DEV_SERVICES_DIR").ok();
    // CI runs scripts/test on a fresh machine: there they must run.
    assert!(
        dir.is_some() || std::env::var_os("CI").is_none(),
        "outage tests need the private instances of scripts/test under CI"
    );
    if dir.is_none() {
        eprintln!(
            "outage tests: skipped, RabbitMQ and Redis are not private instances \
             (run them through scripts/test)"
        );
    }
    dir
}

/// Stops `service` and starts it again on the same port and data.
async fn restart(dir: &str, service: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(r#"source scripts/lib/services.sh && dev_services_restart "$0" "$1" 2"#)
        .arg(dir)
        .arg(service)
        .current_dir(root)
        .status()
        .await
        .expect("bash runs");
    assert!(status.success(), "restarting {service} failed");
}

/// Posts two-step dispatches every 20 ms until `stop`; returns the ids
/// answered 202 and how many were refused with 503.
fn keep_posting(sys: Arc<System>, stop: tokio_util::sync::CancellationToken) -> Load {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let task = {
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.is_cancelled() {
                let to = format!("4477020{i:05}");
                sys.sim.set(
                    &to,
                    Behaviour {
                        delay_ms: Some(20),
                        ..Behaviour::default()
                    },
                );
                let body = serde_json::json!({
                    "template": "failover",
                    "workflow": [
                        step("whatsapp", &to, Some((100, "delivered"))),
                        step("sms", &format!("4477021{i:05}"), None),
                    ],
                });
                let response = sys
                    .client()
                    .post(format!("{}/v0.1/dispatch", sys.url))
                    .basic_auth(&sys.api_key, Some(&sys.api_secret))
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let body: Value = r.json().await.expect("json");
                        let id = body["dispatch_uuid"]
                            .as_str()
                            .and_then(|s| Uuid::parse_str(s).ok())
                            .expect("dispatch_uuid");
                        accepted.lock().expect("lock").push((id, to));
                    }
                    Ok(r) => {
                        assert_eq!(r.status().as_u16(), 503, "refused with 503 only");
                        *refused.lock().expect("lock") += 1;
                    }
                    Err(e) => panic!("ingest stopped answering: {e}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    Load {
        accepted,
        refused,
        task,
    }
}

struct Load {
    accepted: Arc<Mutex<Vec<(Uuid, String)>>>,
    refused: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

/// Restarts `service` under load, then checks that every accepted
/// dispatch ended once, its first step sent once.
async fn survives_restart_of(service: &str) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(dir) = services_dir() else { return };
    let sys = Arc::new(System::start().await);
    let stop = tokio_util::sync::CancellationToken::new();
    let load = keep_posting(sys.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    restart(&dir, service).await;
    // Keep posting while everything reconnects, and a little after.
    let accepted_before = load.accepted.lock().expect("lock").len();
    sys.eventually(Duration::from_secs(30), || {
        (load.accepted.lock().expect("lock").len() >= accepted_before + 10).then_some(())
    })
    .await
    .expect("ingest accepts again after the restart");
    stop.cancel();
    load.task.await.expect("the load stops cleanly");

    let accepted = load.accepted.lock().expect("lock").clone();
    let refused = *load.refused.lock().expect("lock");
    eprintln!(
        "{service} restart: {} accepted, {refused} refused with 503",
        accepted.len()
    );
    for (id, to) in &accepted {
        let report = sys
            .eventually(Duration::from_secs(30), || {
                sys.final_reports(*id).into_iter().next()
            })
            .await
            .unwrap_or_else(|| panic!("{service} restart: accepted {id} never ended"));
        assert_eq!(report["status"], "completed", "{id}: {report}");
        assert_eq!(sys.final_reports(*id).len(), 1, "{id}: one final report");
        // A send held up by the outage may come after its deadline moved
        // the workflow on: then the sender drops it (a step the workflow
        // has moved past is never sent), and the fallback completed it.
        // Wait a little for one that is late but still sent.
        let accepted_sends = || {
            sys.sim
                .sends_to(to)
                .iter()
                .filter(|s| s.outcome == SimOutcome::Accepted)
                .count()
        };
        sys.eventually(Duration::from_secs(3), || {
            (accepted_sends() > 0).then_some(())
        })
        .await;
        assert!(accepted_sends() <= 1, "{id}: first step sent at most once");
    }
}

#[tokio::test]
async fn a_rabbitmq_restart_under_load_loses_no_accepted_work() {
    survives_restart_of("rabbitmq").await;
}

#[tokio::test]
async fn a_redis_restart_under_load_loses_no_accepted_work() {
    survives_restart_of("redis").await;
}
