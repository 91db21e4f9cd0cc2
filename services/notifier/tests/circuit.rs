//! A circuit's scripts against a real Redis (`DISPATCH_REDIS_URL`): the
//! probe's lease, and how long the circuit stays open after each failed
//! probe, as the notifier's prober drives them.

use dispatch_infra::Config;
use dispatch_infra::redis::{Keys, Redis};
use dispatch_notifier::breaker;
use dispatch_notifier::circuit::{Circuits, Step, Turn};

const OPEN_MS: u64 = 1_000;
const OPEN_MAX_MS: u64 = 3_000;
const LEASE_MS: u64 = 5_000;

async fn stored_period(redis: &mut Redis, keys: &Keys, id: &str) -> Option<u64> {
    redis::cmd("HGET")
        .arg(keys.circuit(id))
        .arg("period")
        .query_async(redis)
        .await
        .expect("HGET")
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_for_twice_as_long_up_to_the_maximum() {
    let mut config = Config::load(None).expect("DISPATCH_* configuration");
    config.redis_prefix = format!("circuit-{}", uuid::Uuid::new_v4().simple());
    let mut redis = dispatch_infra::redis::connect(&config).expect("redis");
    let keys = Keys::for_config(&config);
    let circuits = Circuits::new(redis.clone(), keys.clone(), LEASE_MS, 600);
    let id = "endpoint";

    let t0 = 1_000_000;
    assert_eq!(
        circuits.open(id, t0, OPEN_MS).await.expect("open"),
        Some(t0 + 1_000)
    );
    assert_eq!(
        circuits.open(id, t0 + 1, OPEN_MS).await.expect("open"),
        None,
        "open already"
    );
    assert!(circuits.park(id, "parked").await.expect("park"));
    assert_eq!(
        circuits.begin(id, t0 + 999, "early").await.expect("begin"),
        Turn::Wait {
            until_ms: t0 + 1_000
        }
    );

    // Three failed probes, as the prober computes the next period.
    let mut now = t0 + 1_000;
    let mut periods = Vec::new();
    for _ in 0..3 {
        let Turn::Probe { period_ms } = circuits.begin(id, now, "prober").await.expect("begin")
        else {
            panic!("time to probe");
        };
        let next = breaker::next_open_period(period_ms.unwrap_or(OPEN_MS), OPEN_MAX_MS);
        let until = circuits
            .probe_failed(id, "prober", now, Some("parked, tried again"), next)
            .await
            .expect("probe failed")
            .expect("open again");
        assert_eq!(until, now + next as i64);
        assert_eq!(stored_period(&mut redis, &keys, id).await, Some(next));
        periods.push((period_ms, next));
        now = until;
    }
    assert_eq!(
        periods,
        [
            (Some(1_000), 2_000),
            (Some(2_000), 3_000),
            (Some(3_000), 3_000)
        ]
    );
    let head = circuits.head(id, 10).await.expect("head");
    assert_eq!(head, ["parked, tried again"], "the probe's updated job");

    // A prober whose lease was taken over changes nothing.
    assert!(matches!(
        circuits.begin(id, now, "first").await.expect("begin"),
        Turn::Probe { .. }
    ));
    let later = now + LEASE_MS as i64;
    assert!(matches!(
        circuits.begin(id, later, "second").await.expect("begin"),
        Turn::Probe { .. }
    ));
    assert_eq!(
        circuits
            .probe_failed(id, "first", later, None, 2_000)
            .await
            .expect("probe failed"),
        None,
        "lost"
    );
    assert_eq!(
        stored_period(&mut redis, &keys, id).await,
        Some(3_000),
        "unchanged"
    );

    // The probe gets through: draining, and closed once nothing waits.
    assert_eq!(
        circuits
            .probe_succeeded(id, "second", later)
            .await
            .expect("probe succeeded"),
        Step::Held
    );
    assert_eq!(
        circuits.trim(id, "second", later, 0).await.expect("trim"),
        Step::Closed
    );
    assert_eq!(stored_period(&mut redis, &keys, id).await, None);
    assert_eq!(
        circuits.begin(id, later, "after").await.expect("begin"),
        Turn::Closed
    );

    let _: () = redis::cmd("DEL")
        .arg(keys.circuit(id))
        .arg(keys.circuit_parked(id))
        .arg(keys.circuits())
        .query_async(&mut redis)
        .await
        .expect("clean up");
}
