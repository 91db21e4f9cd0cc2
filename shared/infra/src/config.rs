//! Configuration: compiled-in defaults, then an optional TOML file
//! (`--config`), then `DISPATCH_*` environment variables (`DISPATCH_AMQP_URL`
//! sets `amqp_url`). Everything is validated before any connection is
//! opened, and a bad value fails start-up naming its field.
//!
//! Every field, its default and its meaning are listed in
//! `docs/configuration.md`; keep the two in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use dispatch_model::Channel;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where every service process (workers too) answers `/healthz` and
    /// `/readyz`; port 0 picks a free one.
    pub admin_addr: SocketAddr,
    /// The base URL clients use to reach the API, for `href`s in responses
    /// and webhooks. Defaults to `http://{http_addr}` (`https://` with
    /// `tls_cert`).
    pub public_url: Option<String>,
    /// A PEM file of the certificate chain ingest serves HTTPS with (the
    /// server's certificate first); with `tls_key`. Without them ingest
    /// speaks plain HTTP, for a proxy in front to terminate TLS.
    pub tls_cert: Option<String>,
    /// The PEM file of `tls_cert`'s private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<String>,
    /// The base URL providers call back (delivery receipts, inbound
    /// messages) to reach ingest; defaults to `public_url`. Differs when
    /// providers reach ingest on an internal address (docker-compose).
    pub callback_url: Option<String>,
    /// One RabbitMQ node's URL, or several nodes of a cluster: separated
    /// by commas, or a list in the file. A process connects to the first
    /// that answers and, when its node goes away, to the next.
    #[serde(deserialize_with = "one_or_many_urls")]
    pub amqp_url: String,
    /// Name of the topic exchange, and prefix of every queue name, so that
    /// several deployments (or test runs) can share one broker.
    pub amqp_prefix: String,
    pub amqp_queue_type: QueueType,
    /// Delete queues unused (no consumer, no redeclare) for this long; for
    /// throw-away deployments such as test runs. Never set it where the
    /// queues hold work that must survive.
    pub amqp_queue_expires_ms: Option<u64>,
    /// Dead-letter rejected deliveries (undecodable, or past
    /// `amqp_delivery_limit`) to the `<prefix>.dead` exchange and its
    /// `<prefix>.dead-letters` queue instead of dropping them. A queue
    /// argument: set it before the queues are first declared (see
    /// docs/configuration.md, "Queue arguments").
    pub amqp_dead_letter: bool,
    /// Quorum queues only, with `amqp_dead_letter`: how many times a
    /// delivery may be handed back before the broker dead-letters it, so a
    /// message that crashes every consumer cannot circulate for ever. Every
    /// retry counts (a handler waiting out a Redis outage hands its
    /// delivery back every 500 ms), so keep it high: 1000 is about eight
    /// minutes of outage. A queue argument, like `amqp_dead_letter`.
    pub amqp_delivery_limit: Option<u32>,
    /// On SIGTERM, how long in-flight work (deliveries being handled, HTTP
    /// requests) gets to finish before what is left is handed back to the
    /// broker and the process exits.
    pub shutdown_grace_ms: u64,
    /// How long ingest waits for the broker to confirm a publish before it
    /// answers 503.
    pub publish_timeout_ms: u64,
    /// `redis://`, or `rediss://` for TLS; `username:password@` for an ACL
    /// user. On a cluster, one or more seed nodes (commas between them, or
    /// a list in the file).
    #[serde(deserialize_with = "one_or_many_urls")]
    pub redis_url: String,
    /// With a `rediss://` URL: a PEM file of the certificate authorities
    /// to trust instead of the system's (a private CA, or the server's
    /// self-signed certificate).
    pub redis_tls_ca_file: Option<String>,
    /// Replicas that must have a hand-off write before it counts as done
    /// (`WAIT`): the workflow's compare-and-set, the sender's record of a
    /// provider's acceptance, the notifier's delivered mark. Redis
    /// replicates asynchronously, so a master lost right after such a
    /// write can lose it (a second provider call, a second webhook). `0`:
    /// do not wait. Only with replicas: without, every such write waits
    /// `redis_wait_timeout_ms`.
    pub redis_wait_replicas: u32,
    /// How long a hand-off write waits for `redis_wait_replicas`; past it,
    /// the write stands, counted in `dispatch_redis_wait_short_total`.
    pub redis_wait_timeout_ms: u64,
    /// Talk to a Redis Cluster: `redis_url` is then one of its nodes, and
    /// keys carry hash tags so that what one script touches shares a slot.
    pub redis_cluster: bool,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most messages in one dispatch workflow.
    pub max_workflow_steps: usize,
    /// Oldest accepted JWT, by its `iat`, for tokens without `exp`.
    pub jwt_max_age_secs: u64,
    /// Clock skew allowed on `iat` and `exp`.
    pub jwt_leeway_secs: u64,
    /// How long workflow and message records are kept for the lookups.
    pub record_ttl_secs: u64,
    /// How long an `Idempotency-Key` is remembered: a repeat within it
    /// gets the first answer again.
    pub idempotency_ttl_secs: u64,
    /// How long a request holding an `Idempotency-Key` may take before a
    /// repeat, finding no workflow written, takes the key over (its holder
    /// died before writing); until then the repeat gets 409.
    pub idempotency_lease_ms: u64,

    /// Length of one unit of `expiry_time`, in ms: 1000 in production
    /// (`expiry_time` is in seconds, as the spec says); tests shrink it so
    /// that the spec's minimum of 15 takes 150 ms instead of 15 s.
    pub expiry_time_unit_ms: u64,
    /// A last step that never reports is closed as `error` this long after
    /// its send, so every dispatch ends with one final report.
    pub last_step_horizon_ms: u64,
    /// Unacknowledged deliveries of the `workflow` queue (messages of the
    /// topology before an upgrade) each timer works on at once.
    pub workflow_prefetch: u16,

    /// Sends in flight per channel and sender process (also its prefetch).
    pub sender_concurrency: u16,
    /// Provider calls per second per channel, over all sender replicas
    /// (held in Redis), for sends that no entry of `send_limits` matches;
    /// 0 means no limit.
    pub sender_rate_per_sec: u32,
    /// Providers' limits on sends, over all sender replicas: the first
    /// entry that matches a send's channel and provider paces it.
    pub send_limits: Vec<SendLimit>,
    /// A send whose turn under its limit is at most this far off waits
    /// for it in the sender; one further off is handed to the timer for
    /// its turn, so that it does not hold a consumer slot meanwhile.
    pub send_limit_hold_ms: u64,
    /// Attempts of a provider call that fails transiently (timeouts, 5xx,
    /// 429) before the message is rejected.
    pub sender_max_attempts: u32,
    /// First retry delay; doubled for each further attempt.
    pub sender_retry_base_ms: u64,
    /// Timeout of one provider call.
    pub provider_timeout_ms: u64,
    /// Providers by channel; a channel not listed here, and not configured
    /// for the account or application, goes to the simulator at
    /// `simulator_url`.
    pub providers: BTreeMap<Channel, ProviderSettings>,
    /// The key that encrypts provider credentials stored in Redis:
    /// 32 bytes, base64. The default is for local development only.
    pub credentials_key: String,
    /// What a message costs in EUR, by channel, when its provider does not
    /// say (per segment for SMS): the `usage` of status webhooks.
    pub prices: BTreeMap<Channel, String>,

    /// Due timer entries claimed per Redis round trip.
    pub timer_batch: usize,
    /// How many sorted sets timer entries are spread over (by id): on a
    /// cluster each has its own hash tag, so they spread over the masters;
    /// timers share them, each owning some for `timer_lease_ms` at a time.
    /// Raise it only: entries of a shard beyond a lowered count would wait
    /// for a timer that no longer looks there.
    pub timer_shards: usize,
    /// How long a claimed timer entry waits for its publish to be confirmed
    /// before another timer fires it again.
    pub timer_lease_ms: u64,
    /// Longest a timer sleeps without checking Redis, should a wake-up be
    /// missed.
    pub timer_max_idle_ms: u64,
    /// How long after a transition its outbox (send commands, webhook
    /// jobs) is carried out by a timer if the service that wrote it did
    /// not mark it done: the recovery of a writer that died. Keep it above
    /// `publish_timeout_ms`, or a slow publish is repeated.
    pub outbox_recovery_ms: u64,

    /// Ingest's HTTP server. How long a client may take to send a
    /// request's headers, counted from the connection's opening or the end
    /// of the previous response; so also how long an idle kept-alive
    /// connection stays open.
    pub http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body once its
    /// headers are in (408 after that).
    pub http_body_timeout_ms: u64,
    /// Most connections ingest serves at once; more wait, unanswered, in
    /// the listen backlog until one closes.
    pub http_max_connections: usize,
    /// Requests per second each account may make to ingest, over all
    /// replicas (counted in Redis); `0`: no limit. An account's own
    /// setting (`dispatch account rate`) wins.
    pub account_rate_per_sec: u32,
    /// Requests an account may make at once above that rate; `0`: as
    /// many as one second's worth.
    pub account_rate_burst: u32,

    /// Where `dispatch provider-sim` listens.
    pub simulator_addr: SocketAddr,
    /// The simulator's base URL, as senders reach it.
    pub simulator_url: String,
    /// Shared secret between senders, the simulator and ingest: senders
    /// send it as a bearer token, the simulator signs its callbacks with
    /// it. The default is for local development only.
    pub simulator_secret: String,
    /// How long the simulator waits before each delivery receipt.
    pub simulator_delay_ms: u64,

    /// Allow webhook targets on loopback, private, link-local and metadata
    /// addresses (local setups and tests).
    pub allow_private_webhooks: bool,
    /// Allow provider URLs that accounts set through the API (or
    /// `dispatch provider set`) to target loopback, private, link-local and
    /// metadata addresses. URLs in the configuration file are always
    /// allowed: they are the operator's.
    pub allow_private_provider_urls: bool,
    /// `iss` of the webhooks' JWT; receivers written for the original
    /// service may expect its value.
    pub webhook_issuer: String,
    pub webhook_connect_timeout_ms: u64,
    /// Whole-request timeout of one webhook attempt.
    pub webhook_timeout_ms: u64,
    /// Delay before each attempt, the first included (so its length is
    /// the number of attempts); each delay gets ±10 % jitter.
    pub webhook_retry_schedule_ms: Vec<u64>,
    /// Longest `Retry-After` honoured.
    pub webhook_retry_after_cap_ms: u64,
    /// Webhooks in flight per notifier (its prefetch).
    pub notifier_concurrency: u16,
    /// Webhooks in flight per origin (scheme, host, port) and notifier;
    /// one endpoint gets `webhook_endpoint_share` of them.
    pub webhook_concurrency_per_host: usize,
    /// Consecutive failures that open a destination's circuit.
    pub webhook_circuit_failures: u32,
    /// How long an open circuit sends nothing to its destination before
    /// its first probe; doubled after each failed probe, up to
    /// `webhook_circuit_open_max_ms`.
    pub webhook_circuit_open_ms: u64,
    pub webhook_circuit_open_max_ms: u64,
    /// The share of its origin's `webhook_concurrency_per_host` slots one
    /// endpoint (URL without its query) may hold, so that an endpoint
    /// that hangs leaves room for its siblings on the same origin.
    pub webhook_endpoint_share: f64,
    /// How often each notifier reads the circuit and disabled-endpoint
    /// gauges from Redis.
    pub notifier_gauge_interval_ms: u64,

    /// Whether ingest serves the web console under `/console`.
    pub console_enabled: bool,
    /// How long a console session lasts after its sign-in.
    pub console_session_ttl_secs: u64,
    /// Console sign-ins allowed per minute, per account and per client
    /// address (twice as many at once).
    pub console_sign_ins_per_min: u32,
    /// The token that opens the console's operator view (global queue
    /// depths); no operator view without it.
    pub console_operator_token: Option<String>,
    /// A trace viewer's URL for a trace, with `{trace_id}` in it
    /// (`http://localhost:16686/trace/{trace_id}`): the console links each
    /// workflow to the trace of the request that accepted it.
    pub trace_url_template: Option<String>,
    /// How long message content (texts, media URLs, templates) is kept in
    /// workflow records; statuses, usage and recipients stay for
    /// `record_ttl_secs`. 0: as long as the record.
    pub content_retention_secs: u64,
}

/// A provider's limit on sends: `per_sec` sends a second (fractions
/// allowed: 0.5 is one every two seconds), `burst` at once (0: 1), on
/// `channel`, through `provider` (any when absent), and with
/// `per_sender`, for each sender identity (from-number or sender id) on
/// its own, as Twilio limits each long code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendLimit {
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    pub per_sec: f64,
    #[serde(default)]
    pub burst: u32,
    #[serde(default)]
    pub per_sender: bool,
}

/// Which provider serves a channel, how to reach it, and with which
/// credentials. Stored encrypted per account or application
/// ([`crate::providers`]), or given per channel in the configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    /// The provider's base URL; its public API when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The simulator's bearer token (other providers use `credentials`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// The provider's credentials by name (`account_sid`, `auth_token`,
    /// `access_token`, `app_secret`, …); which ones each provider needs is
    /// in docs/providers.md.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, String>,
    /// Template bodies by template name (`{{1}} code: {{2}}`), for
    /// providers that send templates as text, and to check parameter
    /// counts before sending.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, String>,
    /// Names this record in callback URLs (`/callbacks/{kind}/{route}`), so
    /// that a callback is verified with these credentials. Set when the
    /// record is stored; `default-{channel}` for the configuration's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route: String,
}

impl ProviderSettings {
    /// A credential by name, or "" when absent.
    pub fn credential(&self, name: &str) -> &str {
        self.credentials.get(name).map_or("", String::as_str)
    }

    /// `url` without a trailing slash, or `default` when empty.
    pub fn base_url<'a>(&'a self, default: &'a str) -> &'a str {
        let url = self.url.trim_end_matches('/');
        if url.is_empty() { default } else { url }
    }
}

/// Never prints credentials, the simulator secret or template bodies.
impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// `dispatch provider-sim`.
    Simulator,
    /// The Vonage Messages API v1, for every channel.
    Vonage,
    /// Twilio Programmable Messaging: sms, mms, whatsapp.
    Twilio,
    /// Meta: the WhatsApp Cloud API and the Messenger Send API.
    Meta,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Simulator,
        ProviderKind::Vonage,
        ProviderKind::Twilio,
        ProviderKind::Meta,
    ];

    /// Its name in URLs, Redis keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Simulator => "simulator",
            ProviderKind::Vonage => "vonage",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Meta => "meta",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The development key for stored provider credentials; services warn at
/// start-up while it is in use.
pub const DEV_CREDENTIALS_KEY: &str = "ZGlzcGF0Y2gtZGV2LWNyZWRlbnRpYWxzLWtleS0zMmI=";

/// Prices per message (per segment for SMS) in EUR, when a provider
/// reports none.
pub fn default_prices() -> BTreeMap<Channel, String> {
    [
        (Channel::Sms, "0.0333"),
        (Channel::Mms, "0.0550"),
        (Channel::Whatsapp, "0.0150"),
        (Channel::Messenger, "0.0010"),
        (Channel::ViberServiceMsg, "0.0120"),
        (Channel::Rcs, "0.0100"),
    ]
    .into_iter()
    .map(|(c, p)| (c, p.to_owned()))
    .collect()
}

/// The development secret shared with the simulator by default; services
/// warn at start-up while it is in use.
pub const DEV_SIMULATOR_SECRET: &str = "dispatch-dev-simulator-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Single-node brokers and development.
    Classic,
    /// Replicated queues for RabbitMQ clusters.
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            callback_url: None,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            amqp_prefix: "dispatch".into(),
            amqp_queue_type: QueueType::Classic,
            amqp_queue_expires_ms: None,
            amqp_dead_letter: false,
            amqp_delivery_limit: None,
            shutdown_grace_ms: 10_000,
            publish_timeout_ms: 5_000,
            redis_url: "redis://127.0.0.1:6379/".into(),
            redis_tls_ca_file: None,
            redis_cluster: false,
            redis_wait_replicas: 0,
            redis_wait_timeout_ms: 200,
            redis_prefix: "dispatch".into(),
            max_body_bytes: 256 * 1024,
            max_workflow_steps: 10,
            jwt_max_age_secs: 86_400,
            jwt_leeway_secs: 60,
            record_ttl_secs: 30 * 86_400,
            idempotency_ttl_secs: 86_400,
            idempotency_lease_ms: 30_000,
            expiry_time_unit_ms: 1_000,
            last_step_horizon_ms: 86_400_000,
            workflow_prefetch: 64,
            sender_concurrency: 64,
            sender_rate_per_sec: 0,
            send_limits: Vec::new(),
            send_limit_hold_ms: 1_000,
            sender_max_attempts: 5,
            sender_retry_base_ms: 200,
            provider_timeout_ms: 10_000,
            providers: BTreeMap::new(),
            credentials_key: DEV_CREDENTIALS_KEY.into(),
            prices: default_prices(),
            timer_batch: 500,
            timer_lease_ms: 30_000,
            timer_max_idle_ms: 1_000,
            timer_shards: 16,
            outbox_recovery_ms: 10_000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_max_connections: 4_096,
            account_rate_per_sec: 0,
            account_rate_burst: 0,
            simulator_addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            simulator_url: "http://127.0.0.1:8090".into(),
            simulator_secret: DEV_SIMULATOR_SECRET.into(),
            simulator_delay_ms: 100,
            allow_private_webhooks: false,
            allow_private_provider_urls: false,
            webhook_issuer: "Vonage".into(),
            webhook_connect_timeout_ms: 2_000,
            webhook_timeout_ms: 10_000,
            webhook_retry_schedule_ms: vec![
                0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
            ],
            webhook_retry_after_cap_ms: 3_600_000,
            notifier_concurrency: 256,
            webhook_concurrency_per_host: 64,
            webhook_circuit_failures: 10,
            webhook_circuit_open_ms: 30_000,
            webhook_circuit_open_max_ms: 600_000,
            webhook_endpoint_share: 0.5,
            console_enabled: true,
            console_session_ttl_secs: 3_600,
            console_sign_ins_per_min: 10,
            console_operator_token: None,
            trace_url_template: None,
            content_retention_secs: 0,
            notifier_gauge_interval_ms: 10_000,
        }
    }
}

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub(crate) String);

impl Config {
    /// Defaults, then `file` if given, then the `DISPATCH_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("DISPATCH_")))
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let field = e.path.join(".");
            let mut text = e.to_string();
            if !field.is_empty() && !text.contains(&field) {
                text = format!("{field}: {text}");
            }
            ConfigError(text)
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("{field}: {why}")));
        if self.amqp_urls().is_empty() {
            return bad("amqp_url", "names no RabbitMQ node");
        }
        for url in self.amqp_urls() {
            check_url(url, &["amqp", "amqps"]).or_else(|why| bad("amqp_url", &why))?;
        }
        let redis_urls = self.redis_urls();
        if redis_urls.is_empty() {
            return bad("redis_url", "names no Redis");
        }
        if redis_urls.len() > 1 && !self.redis_cluster {
            return bad(
                "redis_url",
                "names several nodes, which only a Redis Cluster has (redis_cluster)",
            );
        }
        for url in redis_urls {
            check_url(url, &["redis", "rediss", "unix", "redis+unix"])
                .or_else(|why| bad("redis_url", &why))?;
        }
        if let Some(path) = &self.redis_tls_ca_file {
            if !self.redis_urls().iter().all(|u| u.starts_with("rediss://")) {
                return bad(
                    "redis_tls_ca_file",
                    "is for TLS: set a rediss:// redis_url, or leave it out",
                );
            }
            if let Err(e) = std::fs::metadata(path) {
                return bad("redis_tls_ca_file", &format!("{path}: {e}"));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls_key", "is needed with tls_cert"),
            (None, Some(_)) => return bad("tls_cert", "is needed with tls_key"),
            _ => {}
        }
        for (field, path) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            if let Some(path) = path
                && let Err(e) = std::fs::metadata(path)
            {
                return bad(field, &format!("{path}: {e}"));
            }
        }
        if let Some(public) = &self.public_url {
            check_url(public, &["http", "https"]).or_else(|why| bad("public_url", &why))?;
        }
        if let Some(callback) = &self.callback_url {
            check_url(callback, &["http", "https"]).or_else(|why| bad("callback_url", &why))?;
        }
        for (field, value) in [
            ("amqp_prefix", &self.amqp_prefix),
            ("redis_prefix", &self.redis_prefix),
        ] {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return bad(field, "must be 1 to 64 letters, digits, `-`, `_` or `.`");
            }
        }
        for (field, value) in [
            ("publish_timeout_ms", self.publish_timeout_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_workflow_steps", self.max_workflow_steps as u64),
            ("jwt_max_age_secs", self.jwt_max_age_secs),
            ("record_ttl_secs", self.record_ttl_secs),
            ("idempotency_ttl_secs", self.idempotency_ttl_secs),
            ("idempotency_lease_ms", self.idempotency_lease_ms),
            ("expiry_time_unit_ms", self.expiry_time_unit_ms),
            ("last_step_horizon_ms", self.last_step_horizon_ms),
            ("workflow_prefetch", u64::from(self.workflow_prefetch)),
            ("sender_concurrency", u64::from(self.sender_concurrency)),
            ("sender_max_attempts", u64::from(self.sender_max_attempts)),
            ("provider_timeout_ms", self.provider_timeout_ms),
            ("timer_batch", self.timer_batch as u64),
            ("timer_shards", self.timer_shards as u64),
            ("timer_lease_ms", self.timer_lease_ms),
            ("timer_max_idle_ms", self.timer_max_idle_ms),
            ("outbox_recovery_ms", self.outbox_recovery_ms),
            ("webhook_timeout_ms", self.webhook_timeout_ms),
            (
                "webhook_connect_timeout_ms",
                self.webhook_connect_timeout_ms,
            ),
            ("notifier_concurrency", u64::from(self.notifier_concurrency)),
            (
                "webhook_concurrency_per_host",
                self.webhook_concurrency_per_host as u64,
            ),
            (
                "webhook_retry_schedule_ms",
                self.webhook_retry_schedule_ms.len() as u64,
            ),
            (
                "webhook_circuit_failures",
                u64::from(self.webhook_circuit_failures),
            ),
            ("webhook_circuit_open_ms", self.webhook_circuit_open_ms),
            (
                "notifier_gauge_interval_ms",
                self.notifier_gauge_interval_ms,
            ),
            ("console_session_ttl_secs", self.console_session_ttl_secs),
            (
                "console_sign_ins_per_min",
                u64::from(self.console_sign_ins_per_min),
            ),
        ] {
            if value == 0 {
                return bad(field, "must be greater than zero");
            }
        }
        check_url(&self.simulator_url, &["http", "https"])
            .or_else(|why| bad("simulator_url", &why))?;
        if self.simulator_secret.is_empty() {
            return bad("simulator_secret", "must not be empty");
        }
        for (i, limit) in self.send_limits.iter().enumerate() {
            if !limit.per_sec.is_finite() || limit.per_sec <= 0.0 {
                return bad(
                    &format!("send_limits[{i}].per_sec"),
                    "must be a number greater than zero",
                );
            }
        }
        for (channel, provider) in &self.providers {
            if !provider.url.is_empty() {
                check_url(&provider.url, &["http", "https"])
                    .or_else(|why| bad(&format!("providers.{channel}.url"), &why))?;
            }
        }
        if let Err(why) = crate::crypto::CredentialsKey::parse(&self.credentials_key) {
            return bad("credentials_key", &why);
        }
        if self.amqp_delivery_limit.is_some() && self.amqp_queue_type != QueueType::Quorum {
            return bad(
                "amqp_delivery_limit",
                "needs amqp_queue_type = \"quorum\" (classic queues do not count deliveries)",
            );
        }
        if self.amqp_delivery_limit.is_some() && !self.amqp_dead_letter {
            return bad(
                "amqp_delivery_limit",
                "needs amqp_dead_letter = true: past the limit the broker would drop the message",
            );
        }
        if self.amqp_delivery_limit == Some(0) {
            return bad("amqp_delivery_limit", "must be greater than zero");
        }
        if self.webhook_circuit_open_max_ms < self.webhook_circuit_open_ms {
            return bad(
                "webhook_circuit_open_max_ms",
                "must be at least webhook_circuit_open_ms",
            );
        }
        if !(self.webhook_endpoint_share > 0.0 && self.webhook_endpoint_share <= 1.0) {
            return bad(
                "webhook_endpoint_share",
                "must be greater than 0 and at most 1",
            );
        }
        if self.idempotency_ttl_secs > self.record_ttl_secs {
            // A key that outlived its workflow's record could be taken
            // over and run the same workflow again.
            return bad("idempotency_ttl_secs", "must be at most record_ttl_secs");
        }
        if let Some(template) = &self.trace_url_template
            && !template.contains("{trace_id}")
        {
            return bad("trace_url_template", "must contain {trace_id}");
        }
        if self
            .console_operator_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            return bad("console_operator_token", "must be at least 16 characters");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        for (field, value) in [
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_body_timeout_ms", self.http_body_timeout_ms),
            ("http_max_connections", self.http_max_connections as u64),
        ] {
            if value == 0 {
                return bad(field, "must be greater than zero");
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The provider of `channel` unless an account or application names
    /// its own.
    pub fn default_provider(&self, channel: Channel) -> ProviderSettings {
        let mut settings =
            self.providers
                .get(&channel)
                .cloned()
                .unwrap_or_else(|| ProviderSettings {
                    kind: ProviderKind::Simulator,
                    url: self.simulator_url.clone(),
                    secret: self.simulator_secret.clone(),
                    credentials: BTreeMap::new(),
                    templates: BTreeMap::new(),
                    route: String::new(),
                });
        settings.route = format!("default-{channel}");
        settings
    }

    /// Whether any channel goes to the simulator by default, or the
    /// development secret is in use: worth a warning outside development.
    pub fn uses_simulator(&self) -> bool {
        Channel::ALL
            .into_iter()
            .any(|c| self.default_provider(c).kind == ProviderKind::Simulator)
            || self.simulator_secret == DEV_SIMULATOR_SECRET
    }

    /// Warns when provider credentials would be encrypted with the
    /// development key.
    pub fn warn_dev_credentials_key(&self) {
        if self.credentials_key == DEV_CREDENTIALS_KEY {
            tracing::warn!(
                "credentials_key is the development key; set DISPATCH_CREDENTIALS_KEY (`openssl rand -base64 32`) before storing real provider credentials"
            );
        }
    }

    /// The base of the provider callback URLs, without a trailing slash.
    pub fn callback_base(&self) -> String {
        match &self.callback_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => self.public_base(),
        }
    }

    /// The base of `href`s, without a trailing slash.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.tls_cert.is_some() => format!("https://{}", self.http_addr),
            None => format!("http://{}", self.http_addr),
        }
    }
}

impl Config {
    /// The Redis nodes of `redis_url`: one, or on a cluster any number of
    /// seeds (separated by commas), so that a process can start, and find
    /// the cluster again, while one of them is down.
    pub fn redis_urls(&self) -> Vec<&str> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The RabbitMQ nodes of `amqp_url`, in order.
    pub fn amqp_urls(&self) -> Vec<&str> {
        self.amqp_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }
}

/// `amqp_url` as one string (commas between nodes) or a list of them.
fn one_or_many_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(d)? {
        Urls::One(url) => url,
        Urls::Many(urls) => urls.join(","),
    })
}

fn check_url(value: &str, schemes: &[&str]) -> Result<(), String> {
    match url::Url::parse(value) {
        Ok(u) if schemes.contains(&u.scheme()) => Ok(()),
        Ok(u) => Err(format!(
            "scheme `{}` is not one of {}",
            u.scheme(),
            schemes.join(", ")
        )),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with(key: &str, value: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(&format!("{key} = {value}"))),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_figment(Figment::from(Serialized::defaults(Config::default())))
            .expect("defaults");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_base(), "http://127.0.0.1:8080");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (key, value) in [
            ("http_addr", "\"not an address\""),
            ("amqp_url", "\"http://localhost\""),
            ("redis_url", "\"nope\""),
            ("redis_prefix", "\"has space\""),
            ("amqp_queue_type", "\"stream\""),
            ("max_body_bytes", "0"),
            ("http_max_connections", "0"),
            ("publish_timeout_ms", "-1"),
            ("amqp_delivery_limit", "5"),
        ] {
            let err = with(key, value).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail's own error type")]
    fn environment_names_map_to_fields() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DISPATCH_AMQP_URL", "amqp://u:p@broker:5672/%2f");
            jail.set_env("DISPATCH_REDIS_URL", "redis://cache:6379/");
            jail.set_env("DISPATCH_HTTP_ADDR", "0.0.0.0:9000");
            jail.create_file(
                "dispatch.toml",
                "redis_prefix = \"from-file\"\nhttp_addr = \"127.0.0.1:1\"",
            )?;
            let c = Config::load(Some(Path::new("dispatch.toml"))).expect("load");
            assert_eq!(c.amqp_url, "amqp://u:p@broker:5672/%2f");
            assert_eq!(c.redis_url, "redis://cache:6379/");
            assert_eq!(c.http_addr.to_string(), "0.0.0.0:9000");
            assert_eq!(c.redis_prefix, "from-file");
            Ok(())
        });
    }

    #[test]
    fn several_rabbitmq_nodes_as_a_list_or_with_commas() {
        let c = with("amqp_url", r#"["amqp://a:5672/%2f", "amqp://b:5672/%2f"]"#).expect("list");
        assert_eq!(c.amqp_urls(), ["amqp://a:5672/%2f", "amqp://b:5672/%2f"]);
        let c = with("amqp_url", r#""amqp://a:5672/%2f, amqps://b:5671/%2f""#).expect("commas");
        assert_eq!(c.amqp_urls(), ["amqp://a:5672/%2f", "amqps://b:5671/%2f"]);
        let e = with("amqp_url", r#""amqp://a:5672/%2f,http://b/""#).expect_err("one bad node");
        assert!(e.to_string().contains("amqp_url"), "{e}");
        let e = with("amqp_url", "[]").expect_err("no node");
        assert!(e.to_string().contains("no RabbitMQ node"), "{e}");
    }

    #[test]
    fn a_redis_ca_file_goes_with_tls_and_must_exist() {
        let mut c = Config {
            redis_url: "redis://cache:6379/".into(),
            redis_tls_ca_file: Some("Cargo.toml".into()),
            ..Config::default()
        };
        let e = c.validate().expect_err("a CA file without TLS");
        assert!(e.to_string().contains("rediss://"), "{e}");
        c.redis_url = "rediss://user:secret@cache:6380/".into();
        c.validate().expect("TLS with a CA file");
        c.redis_tls_ca_file = Some("no-such-ca.pem".into());
        let e = c.validate().expect_err("a missing CA file");
        assert!(e.to_string().contains("no-such-ca.pem"), "{e}");
    }

    #[test]
    fn provider_limits_come_from_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "dispatch.toml",
                "[[send_limits]]\nchannel = \"sms\"\nprovider = \"twilio\"\nper_sec = 1\nper_sender = true\n",
            )?;
            let c = Config::load(Some(Path::new("dispatch.toml"))).expect("load");
            assert_eq!(
                c.send_limits,
                [SendLimit {
                    channel: Channel::Sms,
                    provider: Some(ProviderKind::Twilio),
                    per_sec: 1.0,
                    burst: 0,
                    per_sender: true,
                }]
            );
            jail.set_env(
                "DISPATCH_SEND_LIMITS",
                r#"[{channel = "whatsapp", per_sec = 80, burst = 10}]"#,
            );
            let c = Config::load(None).expect("load");
            assert_eq!(c.send_limits[0].channel, Channel::Whatsapp);
            assert_eq!(c.send_limits[0].burst, 10);
            jail.set_env(
                "DISPATCH_SEND_LIMITS",
                r#"[{channel = "sms", per_sec = 0}]"#,
            );
            let e = Config::load(None).expect_err("a rate of 0");
            assert!(e.to_string().contains("send_limits[0].per_sec"), "{e}");
            jail.set_env(
                "DISPATCH_SEND_LIMITS",
                r#"[{channel = "sms", per_sec = 1, rate = 2}]"#,
            );
            let e = Config::load(None).expect_err("an unknown field");
            assert!(e.to_string().contains("rate"), "{e}");
            Ok(())
        });
    }
}
