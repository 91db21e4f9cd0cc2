//! Losing a node under load: a Redis master killed with SIGKILL (its
//! replica is promoted), and a RabbitMQ node stopped and started again,
//! each while dispatches are being posted through `dispatch all` and a
//! separate `dispatch sender`, against the Redis Cluster and the three-node
//! RabbitMQ cluster (quorum queues) that scripts/test starts.
//!
//! Every dispatch answered 202 must end with exactly one final report, its
//! content agreeing with `GET /v0.1/dispatch/{uuid}`, and no step may be
//! sent twice (counted at the simulator). The two run one at a time, and
//! each puts the topology back before it ends.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatch_infra::Config;
use dispatch_infra::config::QueueType;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Dispatches posted per test, over about [`POSTING`].
const DISPATCHES: usize = 2_000;
const POSTING: Duration = Duration::from_secs(10);
/// When the node goes, after the posting started.
const CHAOS_AT: Duration = Duration::from_secs(3);

/// One chaos test at a time: they share the clusters.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The clusters of this run, from scripts/test.
struct Clusters {
    /// Every node of the Redis Cluster.
    redis_seeds: String,
    redis_dir: String,
    amqp_urls: String,
    amqp_dir: String,
}

impl Clusters {
    fn from_env() -> Option<Self> {
        if cfg!(debug_assertions) {
            // A debug build serves a tenth of the load: the test would
            // measure that, not the clusters.
            eprintln!("chaos tests run on a release build (scripts/test does): skipped");
            return None;
        }
        let var = |name: &str| std::env::var(name).ok();
        match (
            var("DISPATCH_TEST_REDIS_CLUSTER_URL"),
            var("DISPATCH_TEST_REDIS_CLUSTER_DIR"),
            var("DISPATCH_TEST_AMQP_CLUSTER_URLS"),
            var("DISPATCH_TEST_AMQP_CLUSTER_DIR"),
        ) {
            (Some(_), Some(redis_dir), Some(amqp_urls), Some(amqp_dir)) => Some(Self {
                redis_seeds: std::fs::read_to_string(format!("{redis_dir}/PORTS"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(|port| format!("redis://127.0.0.1:{port}/"))
                    .collect::<Vec<_>>()
                    .join(","),
                redis_dir,
                amqp_urls,
                amqp_dir,
            }),
            _ => {
                assert!(
                    std::env::var_os("DISPATCH_TEST_REQUIRE_CLUSTER").is_none(),
                    "the cluster suite needs both clusters (scripts/test starts them)"
                );
                eprintln!("no Redis and RabbitMQ clusters for this run: skipped");
                None
            }
        }
    }
}

/// Runs `function args…` of scripts/lib/services.sh.
fn services(function: &str, args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("source {root}/scripts/lib/services.sh && {function} \"$@\"");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("services")
        .args(args)
        .current_dir(root)
        .status()
        .expect("bash runs");
    assert!(status.success(), "{function} {args:?} failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What the system under test is made of, and what it received.
struct Run {
    url: String,
    client: reqwest::Client,
    sim: dispatch_provider_sim::control::Control,
    api_key: String,
    api_secret: String,
    auth: String,
    reports: Arc<Mutex<Vec<Value>>>,
    _processes: Vec<tokio::process::Child>,
    _shutdown: tokio_util::sync::DropGuard,
}

fn config(clusters: &Clusters) -> Config {
    let tag = Uuid::new_v4().simple().to_string();
    let mut config = Config::load(None).expect("config");
    // Every node as a seed, as a deployment lists them.
    config.redis_url = clusters.redis_seeds.clone();
    config.redis_cluster = true;
    config.redis_wait_replicas = 1;
    config.amqp_url = clusters.amqp_urls.clone();
    config.amqp_queue_type = QueueType::Quorum;
    config.redis_prefix = format!("chaos-{tag}");
    config.amqp_prefix = format!("chaos-{tag}");
    config.amqp_queue_expires_ms = Some(300_000);
    config.expiry_time_unit_ms = 20;
    config.simulator_delay_ms = 20;
    config.sender_retry_base_ms = 20;
    config.publish_timeout_ms = 2_000;
    config.timer_lease_ms = 3_000;
    config.outbox_recovery_ms = 2_500;
    config.allow_private_webhooks = true;
    config
}

impl Run {
    async fn start(clusters: &Clusters) -> Self {
        let shutdown = CancellationToken::new();
        let mut config = config(clusters);
        config.simulator_addr = "127.0.0.1:0".parse().expect("addr");
        let sim = dispatch_provider_sim::spawn(&config, shutdown.clone())
            .await
            .expect("simulator");
        config.simulator_url = format!("http://{}", sim.addr);
        let port = free_port();
        config.http_addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let url = format!("http://127.0.0.1:{port}");
        config.public_url = Some(url.clone());

        // The receiver of the final reports.
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let receiver = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    if body.get("dispatch_uuid").is_some() && body.get("message_uuid").is_none() {
                        sink.lock().expect("lock").push(body.0);
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, receiver).await });

        let processes = vec![
            command(&config, "all").spawn().expect("dispatch all"),
            command(&config, "sender").spawn().expect("dispatch sender"),
        ];
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{url}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "dispatch all never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created = command(&config, "account")
            .arg("create")
            .stdout(Stdio::piped())
            .output()
            .await
            .expect("account create");
        let account: Value = serde_json::from_slice(&created.stdout).expect("credentials");
        let api_key = account["api_key"].as_str().expect("key").to_owned();
        let api_secret = account["api_secret"].as_str().expect("secret").to_owned();
        let auth = application(&client, &url, &api_key, &api_secret, &hook).await;
        Run {
            url,
            client,
            sim: sim.control,
            api_key,
            api_secret,
            auth,
            reports,
            _processes: processes,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Posts `DISPATCHES` two-step dispatches over `POSTING`, running
    /// `chaos` at `CHAOS_AT`; the ids answered 202, and how many were
    /// answered otherwise.
    async fn load(&self, chaos: impl FnOnce() + Send + 'static) -> (Vec<(Uuid, String)>, usize) {
        let started = Instant::now();
        let chaos = tokio::spawn(async move {
            tokio::time::sleep(CHAOS_AT).await;
            tokio::task::spawn_blocking(chaos).await.expect("chaos");
        });
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..DISPATCHES {
            let due = started + POSTING.mul_f64(i as f64 / DISPATCHES as f64);
            tokio::time::sleep_until(due.into()).await;
            let to = format!("44770{:07}", 2_000_000 + i);
            self.sim.set(&to, Default::default());
            let request = self
                .client
                .post(format!("{}/v0.1/dispatch", self.url))
                .header("authorization", &self.auth)
                .json(&json!({
                    "template": "failover",
                    "workflow": [
                        {"from": {"type": "whatsapp", "number": "447700900000"},
                         "to": {"type": "whatsapp", "number": to},
                         "message": {"content": {"type": "text", "text": "code 1234"}},
                         "failover": {"expiry_time": 50, "condition_status": "delivered"}},
                        {"from": {"type": "sms", "number": "447700900999"},
                         "to": {"type": "sms", "number": to},
                         "message": {"content": {"type": "text", "text": "code 1234"}}}
                    ]
                }));
            posts.spawn(async move {
                let answer = request.timeout(Duration::from_secs(30)).send().await;
                match answer {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let body: Value = r.json().await.ok()?;
                        let id = body["dispatch_uuid"].as_str()?.parse().ok()?;
                        Some((id, to))
                    }
                    _ => None,
                }
            });
        }
        let mut accepted = Vec::new();
        let mut refused = 0;
        while let Some(done) = posts.join_next().await {
            match done.expect("post") {
                Some(ok) => accepted.push(ok),
                None => refused += 1,
            }
        }
        chaos.await.expect("chaos");
        (accepted, refused)
    }

    /// Waits until every accepted dispatch has a final report, then checks
    /// them, the sends, and the lookups.
    async fn check(&self, accepted: &[(Uuid, String)], refused: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let by_id = loop {
            let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
            for report in self.reports.lock().expect("lock").iter() {
                let id = report["dispatch_uuid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                by_id.entry(id).or_default().push(report.clone());
            }
            let missing: Vec<&Uuid> = accepted
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !by_id.contains_key(&id.to_string()))
                .collect();
            if missing.is_empty() {
                break by_id;
            }
            if Instant::now() >= deadline {
                // What the lookup knows of a few of them, for the next
                // engineer: where each one stopped.
                let mut seen = Vec::new();
                for id in missing.iter().take(3) {
                    let view = self
                        .client
                        .get(format!("{}/v0.1/dispatch/{id}", self.url))
                        .basic_auth(&self.api_key, Some(&self.api_secret))
                        .send()
                        .await;
                    let view = match view {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(e) => e.to_string(),
                    };
                    seen.push(format!("{id}: {view}"));
                }
                panic!(
                    "{what}: {} of {} accepted dispatches have no final report; {seen:#?}",
                    missing.len(),
                    accepted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        // Room for a duplicate to show up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut reports_per_dispatch: HashMap<String, usize> = HashMap::new();
        for report in self.reports.lock().expect("lock").iter() {
            let id = report["dispatch_uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *reports_per_dispatch.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = reports_per_dispatch
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect();
        let mut sent_twice = 0;
        let mut sends = 0;
        for (_, to) in accepted {
            let mut per_channel: HashMap<dispatch_model::Channel, usize> = HashMap::new();
            for send in self.sim.sends_to(to) {
                sends += 1;
                *per_channel.entry(send.channel).or_default() += 1;
            }
            sent_twice += per_channel.values().filter(|n| **n > 1).count();
        }
        let mut disagree = Vec::new();
        for (id, _) in accepted {
            let report = &by_id[&id.to_string()][0];
            let view: Value = self
                .client
                .get(format!("{}/v0.1/dispatch/{id}", self.url))
                .basic_auth(&self.api_key, Some(&self.api_secret))
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .expect("JSON");
            if view["status"] != report["status"] {
                disagree.push(format!(
                    "{id}: report {} view {}",
                    report["status"], view["status"]
                ));
            }
            // The messages the report lists are those the lookup says were
            // sent (their statuses may move on after it: a late receipt).
            let listed = |messages: &Value, sent_only: bool| {
                let mut ids: Vec<String> = messages
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| !sent_only || m.get("sent_at").is_some())
                    .filter_map(|m| m["message_uuid"].as_str().map(str::to_owned))
                    .collect();
                ids.sort();
                ids
            };
            let (reported, sent) = (
                listed(&report["_links"]["messages"], false),
                listed(&view["messages"], true),
            );
            if reported.is_empty() || reported != sent {
                disagree.push(format!(
                    "{id}: report lists {reported:?}, lookup sent {sent:?}"
                ));
            }
        }
        println!(
            "{what}: {} dispatches answered 202, {refused} not; {} final reports for them \
             ({} dispatches with more than one); {sends} sends, {sent_twice} steps sent twice; \
             {} reports disagreeing with their lookup",
            accepted.len(),
            reports_per_dispatch.values().sum::<usize>(),
            twice.len(),
            disagree.len(),
        );
        assert!(
            twice.is_empty(),
            "{what}: more than one final report: {twice:?}"
        );
        assert_eq!(sent_twice, 0, "{what}: steps sent twice");
        assert!(disagree.is_empty(), "{what}: {disagree:?}");
        // While the node is gone, and until the processes find the new
        // topology, requests are answered 503: that is allowed, refusing
        // everything is not.
        assert!(
            accepted.len() >= DISPATCHES / 4,
            "{what}: only {} of {DISPATCHES} accepted",
            accepted.len(),
        );
    }
}

/// `dispatch <service>` with `config`'s settings.
fn command(config: &Config, service: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .arg(service)
        .env("DISPATCH_AMQP_URL", &config.amqp_url)
        .env("DISPATCH_AMQP_QUEUE_TYPE", config.amqp_queue_type.as_str())
        .env("DISPATCH_REDIS_URL", &config.redis_url)
        .env("DISPATCH_REDIS_CLUSTER", config.redis_cluster.to_string())
        .env(
            "DISPATCH_REDIS_WAIT_REPLICAS",
            config.redis_wait_replicas.to_string(),
        )
        .env("DISPATCH_AMQP_PREFIX", &config.amqp_prefix)
        .env("DISPATCH_REDIS_PREFIX", &config.redis_prefix)
        .env(
            "DISPATCH_AMQP_QUEUE_EXPIRES_MS",
            config.amqp_queue_expires_ms.unwrap_or_default().to_string(),
        )
        .env("DISPATCH_HTTP_ADDR", config.http_addr.to_string())
        .env("DISPATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env(
            "DISPATCH_PUBLIC_URL",
            config.public_url.clone().unwrap_or_default(),
        )
        .env("DISPATCH_SIMULATOR_URL", &config.simulator_url)
        .env(
            "DISPATCH_EXPIRY_TIME_UNIT_MS",
            config.expiry_time_unit_ms.to_string(),
        )
        .env(
            "DISPATCH_SENDER_RETRY_BASE_MS",
            config.sender_retry_base_ms.to_string(),
        )
        .env(
            "DISPATCH_PUBLISH_TIMEOUT_MS",
            config.publish_timeout_ms.to_string(),
        )
        .env("DISPATCH_TIMER_LEASE_MS", config.timer_lease_ms.to_string())
        .env(
            "DISPATCH_OUTBOX_RECOVERY_MS",
            config.outbox_recovery_ms.to_string(),
        )
        .env("DISPATCH_ALLOW_PRIVATE_WEBHOOKS", "true")
        .env(
            "DISPATCH_WEBHOOK_RETRY_SCHEDULE_MS",
            "[0, 100, 200, 400, 800, 1600, 3200]",
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// An application of the account whose status webhooks go to `hook`; an
/// `Authorization` value to post as it.
async fn application(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    secret: &str,
    hook: &str,
) -> String {
    let created: Value = client
        .post(format!("{url}/v2/applications"))
        .basic_auth(key, Some(secret))
        .json(&json!({
            "name": "chaos",
            "capabilities": {"messages": {"webhooks": {
                "status_url": {"address": hook, "http_method": "POST"}}}}
        }))
        .send()
        .await
        .expect("POST application")
        .json()
        .await
        .expect("JSON");
    let id = created["id"].as_str().expect("id").to_owned();
    let pem = created["keys"]["private_key"].as_str().expect("key");
    let claims = json!({"application_id": id, "iat": dispatch_model::record::now_ms() / 1000});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("pem"),
    )
    .expect("jwt");
    format!("Bearer {token}")
}

/// A master of the Redis Cluster in `dir`: its port.
fn a_redis_master(dir: &str) -> String {
    let ports = std::fs::read_to_string(format!("{dir}/PORTS")).expect("PORTS");
    for line in ports.lines() {
        let port = line.split_whitespace().next().unwrap_or_default();
        let role = std::process::Command::new("redis-cli")
            .args(["-p", port, "role"])
            .output()
            .expect("redis-cli");
        if String::from_utf8_lossy(&role.stdout).starts_with("master") {
            return port.to_owned();
        }
    }
    panic!("no Redis master in {dir}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_master_killed_under_load_loses_nothing() {
    let Some(clusters) = Clusters::from_env() else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
    let run = Run::start(&clusters).await;
    let dir = clusters.redis_dir.clone();
    let master = a_redis_master(&dir);
    let killed = master.clone();
    let (accepted, refused) = run
        .load(move || services("dev_redis_cluster_kill", &[&dir, &killed]))
        .await;
    // The killed node comes back as a replica of the one promoted: the
    // topology is whole again before anything is checked.
    services("dev_redis_cluster_restart", &[&clusters.redis_dir, &master]);
    run.check(&accepted, refused, "Redis master killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rabbitmq_node_stopped_under_load_loses_nothing() {
    let Some(clusters) = Clusters::from_env() else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
    let run = Run::start(&clusters).await;
    // The first node: the one every process connected to.
    let node = format!("{}/n1", clusters.amqp_dir);
    let stopped = node.clone();
    let (accepted, refused) = run
        .load(move || {
            services("dev_rabbitmq_node", &[&stopped, "stop"]);
            std::thread::sleep(Duration::from_secs(3));
            services("dev_rabbitmq_node", &[&stopped, "start"]);
        })
        .await;
    run.check(&accepted, refused, "RabbitMQ node stopped and started")
        .await;
}
