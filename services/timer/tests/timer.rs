//! The timer against real Redis and RabbitMQ (`source /tmp/devenv`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Harness, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_at_due_time_with_payload_and_message_id() {
    let mut h = Harness::new(|_| {}).await;
    h.start_timer();
    let due = now_ms() + 300;
    let payload = r#"{"kind":"deadline","step":2}"#;
    h.scheduler
        .schedule("e1", due, "test.deadline", "m-1", payload)
        .await
        .expect("schedule");
    assert_eq!(h.scheduler.pending().await.expect("pending"), 1);

    let fired = h
        .next_fired(Duration::from_millis(1500))
        .await
        .expect("fired");
    assert!(fired.at_ms >= due, "fired {} ms early", due - fired.at_ms);
    assert!(
        fired.at_ms <= due + 200,
        "fired {} ms late",
        fired.at_ms - due
    );
    assert_eq!(fired.routing_key, "test.deadline");
    assert_eq!(fired.message_id, "m-1");
    assert_eq!(fired.payload, payload);
    h.wait_drained().await;
    assert!(h.next_fired(Duration::from_millis(100)).await.is_none());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_prevents_firing() {
    let mut h = Harness::new(|_| {}).await;
    h.start_timer();
    let now = now_ms();
    let s = &h.scheduler;
    s.schedule("cancelled", now + 200, "test.x", "m-cancelled", "{}")
        .await
        .expect("schedule");
    s.schedule("kept", now + 300, "test.x", "m-kept", "{}")
        .await
        .expect("schedule");
    s.cancel("cancelled").await.expect("cancel");
    s.cancel("never-scheduled").await.expect("cancel absent");
    assert_eq!(s.pending().await.expect("pending"), 1);

    let fired = h
        .next_fired(Duration::from_millis(1500))
        .await
        .expect("fired");
    assert_eq!(fired.message_id, "m-kept");
    assert!(h.next_fired(Duration::from_millis(100)).await.is_none());
    h.wait_drained().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescheduling_moves_the_entry() {
    let mut h = Harness::new(|_| {}).await;
    h.start_timer();
    let now = now_ms();
    let far = now + 3_600_000;
    let s = &h.scheduler;
    // Moved later: must not fire now.
    s.schedule("later", now + 200, "test.x", "m-later", r#"{"v":1}"#)
        .await
        .expect("schedule");
    s.schedule("later", far, "test.x", "m-later", r#"{"v":2}"#)
        .await
        .expect("reschedule");
    // Moved sooner, with a new payload: fires once, at its new time.
    let sooner = now + 250;
    s.schedule("sooner", far, "test.x", "m-sooner", r#"{"v":1}"#)
        .await
        .expect("schedule");
    s.schedule("sooner", sooner, "test.x", "m-sooner", r#"{"v":2}"#)
        .await
        .expect("reschedule");
    assert_eq!(s.pending().await.expect("pending"), 2);

    let fired = h
        .next_fired(Duration::from_millis(1500))
        .await
        .expect("fired");
    assert_eq!(fired.message_id, "m-sooner");
    assert_eq!(fired.payload, r#"{"v":2}"#);
    assert!(fired.at_ms >= sooner, "fired early");
    assert!(
        fired.at_ms <= sooner + 200,
        "fired {} ms late",
        fired.at_ms - sooner
    );
    assert!(h.next_fired(Duration::from_millis(150)).await.is_none());

    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while h.scheduler.pending().await.expect("pending") != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "fired entry not acked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut conn = h.redis.clone();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(h.keys.timer_due(h.keys.timer_shard_of("later")))
        .arg("later")
        .query_async(&mut conn)
        .await
        .expect("ZSCORE");
    assert_eq!(score, Some(far as f64));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_fires_again() {
    let mut h = Harness::new(|c| c.timer_lease_ms = 200).await;
    let due = now_ms() - 1;
    h.scheduler
        .schedule("orphan", due, "test.lease", "m-orphan", r#"{"lease":true}"#)
        .await
        .expect("schedule");
    // A timer that claims and dies before publishing.
    let mut conn = h.redis.clone();
    let shard = h.keys.timer_shard_of("orphan");
    let lease = h.config.timer_lease_ms;
    let claim = dispatch_timer::store::claim(&mut conn, &h.keys, shard, None, 10, lease)
        .await
        .expect("claim");
    assert_eq!(claim.entries.len(), 1);
    assert_eq!(claim.entries[0].id, "orphan");
    assert_eq!(claim.entries[0].due_ms, due);
    assert_eq!(claim.leased_until, claim.now_ms + 200);
    // Leased: a second claim does not see it.
    let again = dispatch_timer::store::claim(&mut conn, &h.keys, shard, None, 10, 200)
        .await
        .expect("claim");
    assert!(again.entries.is_empty());

    h.start_timer();
    let fired = h
        .next_fired(Duration::from_millis(1500))
        .await
        .expect("fired after the lease");
    assert!(
        fired.at_ms >= claim.leased_until,
        "fired {} ms before the lease ended",
        claim.leased_until - fired.at_ms
    );
    assert!(
        fired.at_ms <= claim.leased_until + 300,
        "fired {} ms after the lease ended",
        fired.at_ms - claim.leased_until
    );
    assert_eq!(fired.message_id, "m-orphan");
    assert_eq!(fired.payload, r#"{"lease":true}"#);
    h.wait_drained().await;

    // The dead claimer's late ack does not touch a re-scheduled entry.
    h.scheduler
        .schedule("orphan", now_ms() + 60_000, "test.lease", "m-orphan", "{}")
        .await
        .expect("schedule");
    let acked = dispatch_timer::store::ack(
        &mut conn,
        &h.keys,
        shard,
        claim.leased_until,
        &["orphan".to_owned()],
    )
    .await
    .expect("ack");
    assert_eq!(acked, 0);
    assert_eq!(h.scheduler.pending().await.expect("pending"), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_timers_fire_each_entry_once() {
    const N: usize = 500;
    let mut h = Harness::new(|c| c.timer_batch = 50).await;
    h.start_timer();
    h.start_timer();
    h.wait_subscribed(2).await;
    let due = now_ms() + 200;
    let scheduling = (0..N).map(|i| {
        let s = h.scheduler.clone();
        async move {
            let id = format!("e{i}");
            s.schedule(&id, due + (i % 50) as i64, "test.many", &id, "{}")
                .await
        }
    });
    for r in futures_util::future::join_all(scheduling).await {
        r.expect("schedule");
    }

    let mut counts: HashMap<String, usize> = HashMap::new();
    while counts.len() < N {
        let Some(fired) = h.next_fired(Duration::from_millis(1000)).await else {
            break;
        };
        *counts.entry(fired.message_id).or_default() += 1;
    }
    // Room for a duplicate to show up.
    while let Some(fired) = h.next_fired(Duration::from_millis(150)).await {
        *counts.entry(fired.message_id).or_default() += 1;
    }
    assert_eq!(counts.len(), N, "entries fired");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fired more than once: {twice:?}");
    h.wait_drained().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_entry_wakes_a_sleeping_timer() {
    let mut h = Harness::new(|c| c.timer_max_idle_ms = 10_000).await;
    h.start_timer();
    h.wait_subscribed(1).await;
    // A far deadline, and a probe proving the timer has run its rounds; it
    // then sleeps for up to 10 s.
    h.scheduler
        .schedule("far", now_ms() + 60_000, "test.far", "m-far", "{}")
        .await
        .expect("schedule");
    h.scheduler
        .schedule("probe", now_ms(), "test.probe", "m-probe", "{}")
        .await
        .expect("schedule");
    let probe = h
        .next_fired(Duration::from_millis(1500))
        .await
        .expect("probe fired");
    assert_eq!(probe.message_id, "m-probe");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let due = now_ms() + 300;
    h.scheduler
        .schedule("early", due, "test.early", "m-early", "{}")
        .await
        .expect("schedule");
    let fired = h
        .next_fired(Duration::from_millis(1500))
        .await
        .expect("fired");
    assert_eq!(fired.message_id, "m-early");
    assert!(fired.at_ms >= due, "fired early");
    assert!(
        fired.at_ms <= due + 100,
        "fired {} ms late: the wake-up was missed",
        fired.at_ms - due
    );
    h.finish().await;
}
