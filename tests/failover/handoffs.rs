//! Each hand-off between a transition's write and what it publishes,
//! killed at a named failpoint (`DISPATCH_FAILPOINTS`, debug builds only)
//! that the test asserts was hit: every workflow still ends with one send
//! and one final report. And a send command that waited behind a backlog
//! past its step's deadline is never sent.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::accepted;
use crate::system::{System, step};

/// A free port on loopback (free when asked; the child binds it soon
/// after, with `SO_REUSEADDR`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `dispatch <service>` with `failpoint` armed, its standard error piped.
fn armed(sys: &System, service: &str, failpoint: &str) -> tokio::process::Command {
    let mut command = sys.command(service);
    command
        .env("DISPATCH_FAILPOINTS", failpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits for `child` to die at `failpoint`; returns what it said it was
/// working on.
async fn died_at(mut child: tokio::process::Child, failpoint: &str) -> String {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{failpoint} was not reached"))
        .expect("wait");
    assert!(!status.success(), "killed, not exited: {status}");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    let marker = format!("failpoint {failpoint} hit: ");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&marker))
        .unwrap_or_else(|| panic!("{failpoint} not hit; stderr: {stderr}"));
    line.trim().to_owned()
}

async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {port}");
}

#[tokio::test]
async fn ingest_killed_between_its_write_and_its_publish_still_sends_once() {
    let sys = System::start().await;
    let port = free_port();
    let child = armed(&sys, "ingest", "ingest-after-write")
        .env("DISPATCH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("ingest starts");
    wait_listening(port).await;
    let (to, fallback) = ("447700600100", "447700600200");
    let body = serde_json::json!({"template": "failover", "workflow": [
        step("whatsapp", to, Some((600, "delivered"))),
        step("sms", fallback, None),
    ]});
    let mut answer;
    loop {
        // 503 until its broker connection is up.
        answer = sys
            .client()
            .post(format!("http://127.0.0.1:{port}/v0.1/dispatch"))
            .basic_auth(&sys.api_key, Some(&sys.api_secret))
            .header("idempotency-key", "order-4711")
            .json(&body)
            .send()
            .await;
        match &answer {
            Ok(r) if r.status() == 503 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => break,
        }
    }
    assert!(answer.is_err(), "ingest died before answering: {answer:?}");
    let id: Uuid = died_at(child, "ingest-after-write")
        .await
        .parse()
        .expect("a workflow id");
    // The client retries with its key, on another ingest: the answer it
    // never got, not a second workflow.
    let retry = sys
        .client()
        .post(format!("{}/v0.1/dispatch", sys.url))
        .basic_auth(&sys.api_key, Some(&sys.api_secret))
        .header("idempotency-key", "order-4711")
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(retry.status(), 202);
    let retry: serde_json::Value = retry.json().await.expect("json");
    assert_eq!(retry["dispatch_uuid"], id.to_string());

    // The outbox's recovery publishes the first send.
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    assert_eq!(sys.final_reports(id).len(), 1);
    assert_eq!(accepted(&sys, to), 1);
    assert!(sys.sim.sends_to(fallback).is_empty());
}

#[tokio::test]
async fn sender_killed_between_the_providers_answer_and_its_transition_sends_once() {
    let sys = System::start_external(&["sender"], |_| {}).await;
    let child = armed(&sys, "sender", "sender-before-transition")
        .spawn()
        .expect("sender starts");
    let (to, fallback) = ("447700610100", "447700610200");
    let id = sys
        .dispatch(vec![
            step("whatsapp", to, Some((600, "delivered"))),
            step("sms", fallback, None),
        ])
        .await;
    let message = died_at(child, "sender-before-transition").await;
    // The command comes back to another sender, which finds the outcome
    // recorded and applies it instead of sending.
    let _replacement = sys.process("sender");
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    assert_eq!(sys.final_reports(id).len(), 1);
    assert_eq!(accepted(&sys, to), 1, "sent once");
    assert!(sys.sim.sends_to(fallback).is_empty());
    sys.eventually(Duration::from_secs(10), || {
        sys.statuses(&message)
            .iter()
            .any(|s| s == "submitted")
            .then_some(())
    })
    .await
    .expect("the recorded submission is applied");
}

#[tokio::test]
async fn a_callback_handler_killed_mid_receipt_applies_it_once() {
    for failpoint in ["callback-before-apply", "callback-after-write"] {
        let sys = System::start_external(&["sender"], |_| {}).await;
        // Receipts go to an ingest of their own, which dies on the first.
        let port = free_port();
        let callbacks = format!("http://127.0.0.1:{port}");
        let child = armed(&sys, "ingest", failpoint)
            .env("DISPATCH_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DISPATCH_PUBLIC_URL", &callbacks)
            .spawn()
            .expect("ingest starts");
        wait_listening(port).await;
        let _sender = sys
            .command("sender")
            .env("DISPATCH_PUBLIC_URL", &callbacks)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sender starts");
        let (to, fallback) = ("447700620100", "447700620200");
        let id = sys
            .dispatch(vec![
                step("whatsapp", to, Some((600, "delivered"))),
                step("sms", fallback, None),
            ])
            .await;
        died_at(child, failpoint).await;
        // The simulator retries the receipt; a new ingest takes it (and,
        // after a write, the outbox's recovery may publish first).
        let _replacement = sys
            .command("ingest")
            .env("DISPATCH_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DISPATCH_PUBLIC_URL", &callbacks)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ingest starts again");
        let report = sys.final_report(id).await;
        assert_eq!(report["status"], "completed", "{failpoint}");
        assert_eq!(sys.final_reports(id).len(), 1, "{failpoint}");
        assert_eq!(accepted(&sys, to), 1, "{failpoint}");
        assert!(sys.sim.sends_to(fallback).is_empty(), "{failpoint}");
    }
}

#[tokio::test]
async fn a_send_that_waited_past_its_deadline_is_never_sent() {
    // No sender yet: the first step's command waits in the queue while
    // its deadline (15 units of 20 ms) fails the workflow over.
    let sys = System::start_external(&["sender"], |_| {}).await;
    let (to, fallback) = ("447700630100", "447700630200");
    let id = sys
        .dispatch(vec![
            step("whatsapp", to, Some((15, "delivered"))),
            step("sms", fallback, None),
        ])
        .await;
    wait_for_step(&sys, id, 1).await;
    let _sender = sys.process("sender");
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed");
    assert!(sys.sim.sends_to(to).is_empty(), "the late step was sent");
    assert_eq!(accepted(&sys, fallback), 1, "the next step once");
}

/// Waits until workflow `id`'s current step is `step`.
async fn wait_for_step(sys: &System, id: Uuid, step: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
        if view["current_step"] == step {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still at step {}",
            view["current_step"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
