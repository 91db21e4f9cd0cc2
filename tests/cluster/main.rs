//! Against a real Redis Cluster (3 masters, 3 replicas on loopback, made by
//! `scripts/lib/services.sh`): what only a cluster can show. The failover
//! and API suites run against the same cluster unchanged (scripts/test,
//! "cluster" stage); losing a node of it, and of a RabbitMQ cluster, under
//! load is `chaos` (release builds only: the "chaos" stage).
//!
//! `DISPATCH_TEST_REDIS_CLUSTER_URL` names a node of the cluster and
//! `DISPATCH_TEST_REDIS_STANDALONE_URL` a standalone Redis; without them
//! these tests say so and pass, unless `DISPATCH_TEST_REQUIRE_CLUSTER` is
//! set (as scripts/test sets it).

mod chaos;

use std::time::Duration;

/// The cluster's seed URL and a standalone Redis's, or `None` (the test
/// is skipped) when this run has no cluster.
fn urls() -> Option<(String, String)> {
    let cluster = std::env::var("DISPATCH_TEST_REDIS_CLUSTER_URL").ok();
    let standalone = std::env::var("DISPATCH_TEST_REDIS_STANDALONE_URL").ok();
    match (cluster, standalone) {
        (Some(c), Some(s)) => Some((c, s)),
        _ => {
            assert!(
                std::env::var_os("DISPATCH_TEST_REQUIRE_CLUSTER").is_none(),
                "DISPATCH_TEST_REDIS_CLUSTER_URL and DISPATCH_TEST_REDIS_STANDALONE_URL must be set"
            );
            eprintln!("no Redis Cluster for this run (scripts/test starts one): skipped");
            None
        }
    }
}

/// `dispatch ingest` with `redis_url` and `redis_cluster`: its exit status
/// and what it printed, once it stopped (it must, within seconds).
async fn start_up(redis_url: &str, cluster: bool) -> (bool, String) {
    let amqp = std::env::var("DISPATCH_AMQP_URL").unwrap_or_default();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .arg("ingest")
        .env("DISPATCH_REDIS_URL", redis_url)
        .env("DISPATCH_REDIS_CLUSTER", cluster.to_string())
        .env("DISPATCH_AMQP_URL", amqp)
        .env("DISPATCH_HTTP_ADDR", "127.0.0.1:0")
        .env("DISPATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("start-up stops within seconds")
        .expect("dispatch runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn a_redis_of_the_other_kind_stops_start_up_saying_which() {
    let Some((cluster, standalone)) = urls() else {
        return;
    };
    let (ok, said) = start_up(&standalone, true).await;
    assert!(!ok, "started against the wrong kind of Redis");
    assert!(
        said.contains("redis_cluster is true, but the Redis at redis_url is not a cluster node"),
        "{said}"
    );
    let (ok, said) = start_up(&cluster, false).await;
    assert!(!ok, "started against the wrong kind of Redis");
    assert!(
        said.contains("is a Redis Cluster node (cluster_enabled:1), but redis_cluster is false"),
        "{said}"
    );
}
