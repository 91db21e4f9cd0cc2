//! The whole system for one test: the provider simulator, ingest, workflow,
//! senders for every channel and the timer, each with its own connections
//! as if in its own process, against the real RabbitMQ and Redis named by
//! `DISPATCH_AMQP_URL` / `DISPATCH_REDIS_URL`, under a fresh prefix.
//!
//! Webhook jobs are collected from the `webhooks` queue, unless the test
//! runs the notifier (in this process or as child processes).
//! Time is shrunk through configuration, not sleeps: one unit of
//! `expiry_time` is 20 ms, so the spec's minimum of 15 is 300 ms.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::consume::{ConsumeOptions, Outcome, consume};
use dispatch_model::envelope::{Envelope, WebhookJob, WebhookKind};
use dispatch_provider_sim::Control;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const EXPIRY_UNIT_MS: u64 = 20;

/// Who takes the webhook jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Webhooks {
    /// The test, from the queue.
    Collect,
    /// A notifier in this process.
    Notifier,
    /// Nobody here: the test starts notifier processes.
    External,
}

pub struct System {
    pub config: Config,
    pub url: String,
    pub sim: Control,
    client: reqwest::Client,
    pub api_key: String,
    pub api_secret: String,
    pub signature_secret: String,
    webhooks: Arc<Mutex<Vec<WebhookJob>>>,
    shutdown: CancellationToken,
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn test_config() -> Config {
    let tag = Uuid::new_v4().simple().to_string();
    let mut config = Config::load(None).expect("config from the environment");
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.simulator_addr = "127.0.0.1:0".parse().expect("addr");
    config.public_url = None;
    config.redis_prefix = format!("test-{tag}");
    config.amqp_prefix = format!("test-{tag}");
    // Queues of finished tests go away by themselves.
    config.amqp_queue_expires_ms = Some(60_000);
    config.expiry_time_unit_ms = EXPIRY_UNIT_MS;
    config.last_step_horizon_ms = 5_000;
    config.simulator_delay_ms = 20;
    config.sender_retry_base_ms = 20;
    // A killed process's leased timer entries and unfinished outboxes
    // come back within seconds, not the production half-minute.
    config.publish_timeout_ms = 1_000;
    config.timer_lease_ms = 2_000;
    config.outbox_recovery_ms = 1_500;
    // The tests route providers to fakes on loopback.
    config.allow_private_provider_urls = true;
    config
}

impl System {
    /// Everything in this process.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// Everything but the timer when `timer` is false (the test runs it
    /// as processes).
    pub async fn start_with(timer: bool) -> Self {
        Self::start_configured(timer, |_| {}).await
    }

    /// As [`System::start_with`], with settings changed by `tweak`.
    pub async fn start_configured(timer: bool, tweak: impl FnOnce(&mut Config)) -> Self {
        let external: &[&str] = if timer { &[] } else { &["timer"] };
        Self::start_full(external, Webhooks::Collect, tweak).await
    }

    /// Everything but the services named in `external` (`timer`,
    /// `sender`, `ingest`: then the test's own ingest still takes the
    /// callbacks), which the test runs as processes; webhook jobs are
    /// collected.
    pub async fn start_external(external: &[&str], tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(external, Webhooks::Collect, tweak).await
    }

    /// Everything, the notifier included: webhooks go to the
    /// applications' URLs instead of being collected from the queue.
    pub async fn start_with_notifier(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(&[], Webhooks::Notifier, tweak).await
    }

    /// Everything but the notifier, which the test runs as processes.
    pub async fn start_without_notifier(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(&[], Webhooks::External, tweak).await
    }

    async fn start_full(
        external: &[&str],
        webhooks_by: Webhooks,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        static TELEMETRY: std::sync::OnceLock<dispatch_infra::telemetry::Telemetry> =
            std::sync::OnceLock::new();
        TELEMETRY.get_or_init(|| {
            dispatch_infra::telemetry::init_with_default_level("dispatch-test", "warn")
        });
        let shutdown = CancellationToken::new();
        let mut config = test_config();
        tweak(&mut config);

        let sim = dispatch_provider_sim::spawn(&config, shutdown.clone())
            .await
            .expect("simulator starts");
        config.simulator_url = format!("http://{}", sim.addr);
        // Ingest first: its address is where the simulator calls back.
        let ingest = dispatch_ingest::spawn(config.clone(), shutdown.clone())
            .await
            .expect("ingest starts");
        let url = format!("http://{}", ingest.addr);
        config.public_url = Some(url.clone());

        if !external.contains(&"sender") {
            tokio::spawn(dispatch_sender::run(
                config.clone(),
                dispatch_model::Channel::ALL.to_vec(),
                shutdown.clone(),
            ));
        }
        if !external.contains(&"timer") {
            tokio::spawn(dispatch_timer::run(config.clone(), shutdown.clone()));
        }

        let broker = Broker::start(&config, "test", shutdown.clone());
        assert!(
            broker.wait_ready(Duration::from_secs(10)).await,
            "RabbitMQ reachable"
        );
        assert!(
            ingest
                .state
                .broker
                .wait_ready(Duration::from_secs(10))
                .await
        );
        let webhooks = Arc::new(Mutex::new(Vec::new()));
        if webhooks_by == Webhooks::Notifier {
            tokio::spawn(dispatch_notifier::run(config.clone(), shutdown.clone()));
        } else if webhooks_by == Webhooks::Collect {
            let sink = webhooks.clone();
            let options = ConsumeOptions::new(broker.topology().webhooks_queue(), 200);
            tokio::spawn(consume(
                broker,
                options,
                shutdown.clone(),
                move |incoming| {
                    let sink = sink.clone();
                    async move {
                        if let Some(jobs) = serde_json::from_slice::<Envelope>(&incoming.payload)
                            .ok()
                            .and_then(Envelope::into_webhooks)
                        {
                            sink.lock().expect("lock").extend(jobs);
                        }
                        Outcome::Ack
                    }
                },
            ));
        }

        let credentials =
            dispatch_ingest::accounts::create(&mut ingest.state.redis(), &ingest.state.keys, 0)
                .await
                .expect("account");
        System {
            config,
            url,
            sim: sim.control,
            client: reqwest::Client::new(),
            api_key: credentials.api_key,
            api_secret: credentials.api_secret,
            signature_secret: credentials.signature_secret,
            webhooks,
            shutdown,
        }
    }

    /// Creates an application whose status webhooks go to `status_url`;
    /// returns its id and an `Authorization` value to post as it.
    pub async fn application(&self, status_url: &str) -> (String, String) {
        self.application_with(status_url, status_url).await
    }

    /// As [`System::application`], with inbound messages to `inbound_url`.
    pub async fn application_with(&self, status_url: &str, inbound_url: &str) -> (String, String) {
        self.application_webhooks(json!({
            "status_url": {"address": status_url, "http_method": "POST"},
            "inbound_url": {"address": inbound_url, "http_method": "POST"}
        }))
        .await
    }

    /// An application with `webhooks` as its messages webhooks.
    pub async fn application_webhooks(&self, webhooks: Value) -> (String, String) {
        let account = (self.api_key.clone(), self.api_secret.clone());
        self.application_of(&account, webhooks).await
    }

    /// Another account: its api key and secret.
    pub async fn account(&self) -> (String, String) {
        let redis = dispatch_infra::redis::connect(&self.config).expect("redis");
        let keys = dispatch_infra::redis::Keys::for_config(&self.config);
        let created = dispatch_ingest::accounts::create(&mut redis.clone(), &keys, 0)
            .await
            .expect("account");
        (created.api_key, created.api_secret)
    }

    /// Gives `number` on `channel` to `application` of this system's
    /// account, for inbound messages through shared providers.
    pub async fn assign_number(&self, channel: &str, number: &str, application: &str) {
        let redis = dispatch_infra::redis::connect(&self.config).expect("redis");
        let keys = dispatch_infra::redis::Keys::for_config(&self.config);
        let owner = dispatch_infra::providers::Owner {
            account: self.api_key.clone(),
            application_id: Some(application.parse().expect("uuid")),
        };
        let channel = dispatch_model::Channel::parse(channel).expect("channel");
        dispatch_infra::providers::assign_number(&redis, &keys, channel, number, Some(&owner))
            .await
            .expect("assign");
    }

    /// An application of `account` (key, secret) with `webhooks`; returns
    /// its id and an `Authorization` value to post as it.
    pub async fn application_of(
        &self,
        account: &(String, String),
        webhooks: Value,
    ) -> (String, String) {
        let (id, key) = self
            .application_keyed(account, json!({ "webhooks": webhooks }))
            .await;
        let claims = json!({"application_id": id, "iat": dispatch_model::record::now_ms() / 1000});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).expect("pem"),
        )
        .expect("jwt");
        (id, format!("Bearer {token}"))
    }

    /// Creates an application of `account` whose `messages` capability is
    /// `messages`; returns its id and its private key (PEM).
    pub async fn application_keyed(
        &self,
        account: &(String, String),
        messages: Value,
    ) -> (String, String) {
        let created: Value = self
            .client
            .post(format!("{}/v2/applications", self.url))
            .basic_auth(&account.0, Some(&account.1))
            .json(&json!({
                "name": "test",
                "capabilities": {"messages": messages}
            }))
            .send()
            .await
            .expect("POST application")
            .json()
            .await
            .expect("JSON");
        let id = created["id"].as_str().expect("id").to_owned();
        let key = created["keys"]["private_key"].as_str().expect("key");
        (id, key.to_owned())
    }

    /// Posts as an application (`auth` from [`System::application`]).
    pub async fn post_as(&self, auth: &str, path: &str, body: &Value) -> Value {
        let request = self.client.post(format!("{}{path}", self.url));
        accepted(request.header("authorization", auth).json(body)).await
    }

    pub async fn get_basic(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .basic_auth(&self.api_key, Some(&self.api_secret))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The HTTP client, for requests the helpers do not cover.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn post_basic(&self, path: &str) -> u16 {
        self.client
            .post(format!("{}{path}", self.url))
            .basic_auth(&self.api_key, Some(&self.api_secret))
            .send()
            .await
            .expect("POST")
            .status()
            .as_u16()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let request = self.client.post(format!("{}{path}", self.url));
        accepted(
            request
                .basic_auth(&self.api_key, Some(&self.api_secret))
                .json(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_basic(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Posts a failover workflow; returns its dispatch uuid.
    pub async fn dispatch(&self, steps: Vec<Value>) -> Uuid {
        let body = self
            .post(
                "/v0.1/dispatch",
                &json!({"template": "failover", "workflow": steps}),
            )
            .await;
        body["dispatch_uuid"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("dispatch_uuid")
    }

    pub async fn message(&self, message: Value) -> Uuid {
        let body = self.post("/v0.1/messages", &message).await;
        body["message_uuid"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("message_uuid")
    }

    pub fn webhooks(&self) -> Vec<WebhookJob> {
        self.webhooks.lock().expect("lock").clone()
    }

    /// Final report jobs of `id`, one per distinct webhook id.
    pub fn final_reports(&self, id: Uuid) -> Vec<Value> {
        let mut seen = HashMap::new();
        for job in self.webhooks() {
            if job.kind == WebhookKind::FinalReport && job.workflow_id == id {
                seen.entry(job.webhook_id).or_insert(job.body);
            }
        }
        seen.into_values().collect()
    }

    /// The statuses reported for `message_uuid`, in arrival order.
    pub fn statuses(&self, message_uuid: &str) -> Vec<String> {
        self.webhooks()
            .into_iter()
            .filter(|j| j.kind == WebhookKind::MessageStatus)
            .filter(|j| j.body["message_uuid"] == message_uuid)
            .filter_map(|j| j.body["status"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits for the one final report of `id`.
    pub async fn final_report(&self, id: Uuid) -> Value {
        self.eventually(Duration::from_secs(15), || {
            self.final_reports(id).into_iter().next()
        })
        .await
        .unwrap_or_else(|| panic!("no final report for {id}"))
    }

    pub async fn eventually<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = f() {
                return Some(found);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `dispatch timer` as a child process with this system's settings.
    pub fn timer_process(&self) -> tokio::process::Child {
        self.process("timer")
    }

    /// `dispatch <service>` as a child process with this system's settings.
    pub fn process(&self, service: &str) -> tokio::process::Child {
        self.command(service)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("dispatch starts")
    }

    /// The command line of `dispatch <service>` with this system's
    /// settings, to be changed and spawned.
    pub fn command(&self, service: &str) -> tokio::process::Command {
        let c = &self.config;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatch"));
        command
            .arg(service)
            .env("DISPATCH_AMQP_URL", &c.amqp_url)
            .env("DISPATCH_REDIS_URL", &c.redis_url)
            .env("DISPATCH_AMQP_PREFIX", &c.amqp_prefix)
            .env("DISPATCH_REDIS_PREFIX", &c.redis_prefix)
            .env(
                "DISPATCH_AMQP_QUEUE_EXPIRES_MS",
                c.amqp_queue_expires_ms.unwrap_or_default().to_string(),
            )
            .env("DISPATCH_PUBLIC_URL", &self.url)
            .env("DISPATCH_SIMULATOR_URL", &c.simulator_url)
            .env(
                "DISPATCH_SENDER_RETRY_BASE_MS",
                c.sender_retry_base_ms.to_string(),
            )
            .env(
                "DISPATCH_SHUTDOWN_GRACE_MS",
                c.shutdown_grace_ms.to_string(),
            )
            .env("DISPATCH_ADMIN_ADDR", "127.0.0.1:0")
            .env(
                "DISPATCH_EXPIRY_TIME_UNIT_MS",
                c.expiry_time_unit_ms.to_string(),
            )
            .env(
                "DISPATCH_LAST_STEP_HORIZON_MS",
                c.last_step_horizon_ms.to_string(),
            )
            .env(
                "DISPATCH_ALLOW_PRIVATE_WEBHOOKS",
                c.allow_private_webhooks.to_string(),
            )
            .env(
                "DISPATCH_ALLOW_PRIVATE_PROVIDER_URLS",
                c.allow_private_provider_urls.to_string(),
            )
            .env(
                "DISPATCH_WEBHOOK_RETRY_SCHEDULE_MS",
                format!("{:?}", c.webhook_retry_schedule_ms),
            )
            .env("DISPATCH_TIMER_LEASE_MS", c.timer_lease_ms.to_string())
            .env(
                "DISPATCH_OUTBOX_RECOVERY_MS",
                c.outbox_recovery_ms.to_string(),
            )
            .env(
                "DISPATCH_PUBLISH_TIMEOUT_MS",
                c.publish_timeout_ms.to_string(),
            )
            .env("RUST_LOG", "warn");
        command
    }
}

/// One workflow step on `channel` to `to`, failing over after
/// `expiry_time` units unless `condition` is met.
pub fn step(channel: &str, to: &str, failover: Option<(u64, &str)>) -> Value {
    let address = |number: &str| match channel {
        "messenger" => json!({"type": channel, "id": number}),
        _ => json!({"type": channel, "number": number}),
    };
    let from = match channel {
        "sms" | "mms" => address("447700900999"),
        "viber_service_msg" => json!({"type": channel, "id": "12345"}),
        "messenger" => json!({"type": channel, "id": "page-1"}),
        _ => address("447700900999"),
    };
    let content = match channel {
        "mms" => json!({"type": "image", "image": {"url": "https://example.com/a.jpg"}}),
        _ => json!({"type": "text", "text": "Hello"}),
    };
    let mut step = json!({
        "to": address(to),
        "from": from,
        "message": {"content": content},
    });
    if let Some((expiry_time, condition)) = failover {
        step["failover"] = json!({"expiry_time": expiry_time, "condition_status": condition});
    }
    step
}

/// Sends `request`, asserts 202, and returns the body.
async fn accepted(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 202, "{body}");
    body
}
