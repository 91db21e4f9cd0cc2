//! Test harness: the real ingest service on port 0 against real RabbitMQ
//! and Redis (from `DISPATCH_AMQP_URL` / `DISPATCH_REDIS_URL`), with a
//! fresh key prefix and queue names for every test.

use std::time::Duration;

use dispatch_infra::Config;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub url: String,
    pub config: Config,
    pub client: reqwest::Client,
    pub account: Account,
    pub state: dispatch_ingest::state::AppState,
    shutdown: CancellationToken,
}

#[derive(Clone)]
pub struct Account {
    pub api_key: String,
    pub api_secret: String,
}

pub fn test_config() -> Config {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut config = Config::load(None).expect("config from the environment");
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.public_url = None;
    config.redis_prefix = format!("test-{tag}");
    config.amqp_prefix = format!("test-{tag}");
    // Queues of finished tests go away by themselves.
    config.amqp_queue_expires_ms = Some(60_000);
    config.publish_timeout_ms = 2_000;
    // The tests route providers to fakes on loopback.
    config.allow_private_provider_urls = true;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        let none = Account {
            api_key: String::new(),
            api_secret: String::new(),
        };
        let mut app = Self::spawn_with_account(config, none).await;
        app.account = app.create_account().await;
        app
    }

    /// Spawns without creating an account (for a Redis that is down).
    pub async fn spawn_with_account(config: Config, account: Account) -> Self {
        // The same telemetry as the binary: spans carry W3C trace context.
        // The provider must outlive every test in this process.
        static TELEMETRY: std::sync::OnceLock<dispatch_infra::telemetry::Telemetry> =
            std::sync::OnceLock::new();
        TELEMETRY.get_or_init(|| {
            dispatch_infra::telemetry::init_with_default_level("dispatch-test", "warn")
        });
        let shutdown = CancellationToken::new();
        let running = dispatch_ingest::spawn(config.clone(), shutdown.clone())
            .await
            .expect("ingest starts");
        TestApp {
            url: format!("http://{}", running.addr),
            config,
            client: reqwest::Client::new(),
            account,
            state: running.state,
            shutdown,
        }
    }

    pub async fn wait_ready(&self) {
        assert!(
            self.state.broker.wait_ready(Duration::from_secs(10)).await,
            "RabbitMQ reachable"
        );
    }

    pub async fn create_account(&self) -> Account {
        let c = dispatch_ingest::accounts::create(&mut self.state.redis(), &self.state.keys, 0)
            .await
            .expect("account");
        Account {
            api_key: c.api_key,
            api_secret: c.api_secret,
        }
    }

    pub fn post(&self, path: &str, account: &Account) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .basic_auth(&account.api_key, Some(&account.api_secret))
    }

    pub fn get(&self, path: &str, account: &Account) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.url))
            .basic_auth(&account.api_key, Some(&account.api_secret))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        send(self.post(path, &self.account).json(body)).await
    }

    /// Takes every envelope ingest queued: send commands, webhook jobs,
    /// and anything on the old topology's workflow queue (nothing, now).
    pub async fn drain_queued(&self) -> Vec<lapin::message::BasicGetMessage> {
        // What was answered 202 is published right after the answer.
        while self.state.carry_outs.available_permits()
            < dispatch_ingest::state::CARRY_OUTS_IN_FLIGHT
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let connection = connect_any(&self.config.amqp_urls()).await.expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        let topology = self.state.broker.topology();
        let queues = dispatch_model::Channel::ALL
            .iter()
            .map(|c| topology.send_queue(*c))
            .chain([topology.webhooks_queue(), topology.workflow_queue()]);
        let mut out = Vec::new();
        for queue in queues {
            while let Some(m) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get")
            {
                out.push(m);
            }
        }
        let _ = connection.close(200, "done".into()).await;
        out
    }
}

/// A connection to the first of `urls` that answers.
async fn connect_any(urls: &[&str]) -> Result<Connection, lapin::Error> {
    let mut failure = None;
    for url in urls {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(connection) => return Ok(connection),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.expect("at least one URL"))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Remove this test's queue so a long-lived broker does not fill up.
        let urls: Vec<String> = self
            .config
            .amqp_urls()
            .iter()
            .map(|u| u.to_string())
            .collect();
        let queue = self.state.broker.topology().workflow_queue();
        let exchange = self.state.broker.topology().exchange.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                    if let Ok(c) = connect_any(&urls).await
                        && let Ok(ch) = c.create_channel().await
                    {
                        let _ = ch
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await;
                        let _ = ch
                            .exchange_delete(exchange.as_str().into(), Default::default())
                            .await;
                        let _ = c.close(200, "done".into()).await;
                    }
                });
            }
        });
    }
}

/// Sends and returns (status, JSON body or Null).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// Asserts an error body in the API's format, returning it.
pub fn assert_problem(status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    for field in ["type", "title", "detail", "instance"] {
        assert!(body[field].is_string(), "`{field}` missing in {body}");
    }
}

pub fn invalid_names(body: &Value) -> Vec<String> {
    body["invalid_parameters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP proxy in front of RabbitMQ that a test can cut and restore, to
/// show how ingest behaves through a broker outage without stopping the
/// shared broker.
pub struct Proxy {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    continue; // dropped: refused while cut
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

/// Reads a header of a delivered message as a string.
pub fn header(m: &lapin::message::Delivery, name: &str) -> Option<String> {
    let table = m.properties.headers().as_ref()?;
    let value = table.inner().iter().find(|(k, _)| k.as_str() == name)?.1;
    value.as_long_string().map(|s| s.to_string())
}
