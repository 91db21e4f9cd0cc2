//! Graceful shutdown: a SIGTERM under load stops a process from taking new
//! work, lets what it holds finish, and exits in time; nothing is lost and
//! nothing is sent twice.

use std::time::Duration;

use dispatch_provider_sim::behaviour::Behaviour;
use dispatch_provider_sim::control::Outcome as SimOutcome;

use crate::system::{System, step};

/// Sends `signal` to a child process.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the child is running");
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_work_and_sends_nothing_twice() {
    let grace = Duration::from_secs(5);
    let sys = System::start_external(&["timer", "sender"], |c| {
        c.shutdown_grace_ms = grace.as_millis() as u64;
    })
    .await;
    let mut timer = sys.process("timer");
    let mut sender = sys.process("sender");

    // Every provider call takes 250 ms, so sends are in flight when the
    // signal comes. The first step is delivered; the fallback never
    // needed (a long expiry: 500 units of 20 ms).
    const N: usize = 60;
    let mut ids = Vec::new();
    for i in 0..N {
        let to = format!("4477010{i:05}");
        sys.sim.set(
            &to,
            Behaviour {
                response_delay_ms: Some(250),
                delay_ms: Some(20),
                ..Behaviour::default()
            },
        );
        ids.push(
            sys.dispatch(vec![
                step("whatsapp", &to, Some((500, "delivered"))),
                step("sms", &format!("4477011{i:05}"), None),
            ])
            .await,
        );
    }
    sys.eventually(Duration::from_secs(15), || {
        (sys.sim.sends().len() >= 5).then_some(())
    })
    .await
    .expect("sends under way");

    signal(&timer, "TERM");
    signal(&sender, "TERM");
    // Replacements take over what the stopping ones hand back.
    let mut timer_after = sys.process("timer");
    let mut sender_after = sys.process("sender");
    for (name, child) in [("timer", &mut timer), ("sender", &mut sender)] {
        let exited = tokio::time::timeout(grace + Duration::from_secs(5), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit within the grace period"))
            .expect("wait");
        assert!(exited.success(), "{name} exited with {exited}");
    }

    for id in &ids {
        let report = sys.final_report(*id).await;
        assert_eq!(report["status"], "completed", "{id}: {report}");
        assert_eq!(sys.final_reports(*id).len(), 1, "{id}: one final report");
    }
    for i in 0..N {
        let sends = sys.sim.sends_to(&format!("4477010{i:05}"));
        let accepted = sends
            .iter()
            .filter(|s| s.outcome == SimOutcome::Accepted)
            .count();
        assert_eq!(accepted, 1, "workflow {i}: step 1 sent once: {sends:?}");
        assert!(
            sys.sim.sends_to(&format!("4477011{i:05}")).is_empty(),
            "workflow {i}: no failover"
        );
    }
    signal(&timer_after, "TERM");
    signal(&sender_after, "TERM");
    for child in [&mut timer_after, &mut sender_after] {
        let exited = tokio::time::timeout(grace + Duration::from_secs(5), child.wait())
            .await
            .expect("idle processes exit promptly")
            .expect("wait");
        assert!(exited.success());
    }
}
