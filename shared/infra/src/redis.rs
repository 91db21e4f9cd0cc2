//! Redis: one shared connection per process, and the key layout.
//!
//! The connection is a `ConnectionManager`: multiplexed, so concurrent
//! requests pipeline their commands over one socket instead of each taking
//! a pooled connection (measured: fewer syscalls and wake-ups per request,
//! see docs/benchmarks.md), and reconnecting by itself after an outage.
//! It connects lazily: a missing Redis makes `/readyz` red and commands
//! fail, it never stops start-up.
//!
//! Every key starts with `redis_prefix`, so that deployments and test runs
//! can share one Redis. The layout is written down here once; services
//! build keys only through [`Keys`].

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

pub use redis::aio::ConnectionManager as Redis;

/// A client for `redis_url`: `rediss://` speaks TLS, trusting the
/// system's certificate authorities or, when `redis_tls_ca_file` is set,
/// those of that PEM file only (a private CA, a self-signed certificate);
/// `username:password@` authenticates as an ACL user.
pub fn client(config: &Config) -> Result<redis::Client, redis::RedisError> {
    let url = config.redis_url.as_str();
    match &config.redis_tls_ca_file {
        None => redis::Client::open(url),
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read redis_tls_ca_file",
                    format!("{path}: {e}"),
                ))
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(url, certificates)
        }
    }
}

/// A lazily connecting, self-reconnecting, multiplexed connection.
pub fn connect(config: &Config) -> Result<Redis, redis::RedisError> {
    let client = client(config)?;
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, settings)
}

/// Whether Redis answers a PING within a second.
pub async fn ping(redis: &Redis) -> bool {
    let mut conn = redis.clone();
    let ping = redis::cmd("PING");
    let check = ping.query_async::<String>(&mut conn);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(_))
    )
}

/// The Redis key layout.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Hash: `secret_sha256`, `signature_secret`, `created_at_ms`, and
    /// optionally the account's own request rate, `rate_per_sec` and
    /// `rate_burst`.
    pub fn account(&self, api_key: &str) -> String {
        format!("{}:account:{api_key}", self.prefix)
    }

    /// String (integer, µs since the epoch): when the account's request
    /// rate allows its next request (GCRA's theoretical arrival time);
    /// expires once that has passed.
    pub fn account_rate(&self, api_key: &str) -> String {
        format!("{}:account:{api_key}:rate", self.prefix)
    }

    /// Sorted set of the account's application ids, scored by creation time.
    pub fn account_applications(&self, api_key: &str) -> String {
        format!("{}:account:{api_key}:applications", self.prefix)
    }

    /// String: the application record as JSON.
    pub fn application(&self, id: &str) -> String {
        format!("{}:application:{id}", self.prefix)
    }

    /// Hash `{v: version, r: record JSON}` of a workflow (a Messages API
    /// send is a one-step workflow whose id is the message uuid); written
    /// only through [`crate::store::WorkflowStore`].
    pub fn workflow(&self, id: &str) -> String {
        format!("{}:workflow:{id}", self.prefix)
    }

    /// String (integer): workflows started and not yet ended, moved by
    /// each workflow write ([`crate::store::WorkflowStore::write`]); read for the
    /// `dispatch_workflows_in_flight` metric.
    pub fn workflows_in_flight(&self) -> String {
        format!("{}:workflows_in_flight", self.prefix)
    }

    /// String: the dispatch uuid a dispatch's message belongs to, for
    /// `GET /v0.1/messages/{uuid}`.
    pub fn message(&self, message_uuid: &str) -> String {
        format!("{}:message:{message_uuid}", self.prefix)
    }

    /// String: set once a webhook was taken by its receiver, so that a
    /// duplicate job is not delivered again.
    pub fn webhook_delivered(&self, webhook_id: &str) -> String {
        format!("{}:webhook:{webhook_id}:delivered", self.prefix)
    }

    /// List of a webhook's failed attempts (JSON), oldest first.
    pub fn webhook_attempts(&self, webhook_id: &str) -> String {
        format!("{}:webhook:{webhook_id}:attempts", self.prefix)
    }

    /// Hash webhook id → job JSON: an application's dead letters (`scope`
    /// is the application id, or the api key for webhooks of no
    /// application).
    pub fn dead_letters(&self, scope: &str) -> String {
        format!("{}:deadletters:{scope}", self.prefix)
    }

    /// Hash of a webhook endpoint's circuit (`endpoint_id`: see the
    /// notifier's `circuit` module): `state`, `until`, `period`, `token`.
    pub fn circuit(&self, endpoint_id: &str) -> String {
        format!("{}:circuit:{endpoint_id}", self.prefix)
    }

    /// List of the webhooks waiting for an endpoint's circuit to close,
    /// oldest first.
    pub fn circuit_parked(&self, endpoint_id: &str) -> String {
        format!("{}:circuit:{endpoint_id}:parked", self.prefix)
    }

    /// Sorted set of the endpoint ids whose circuit is not closed, scored
    /// by when it opened (for the gauges).
    pub fn circuits(&self) -> String {
        format!("{}:circuits", self.prefix)
    }

    /// Hash endpoint URL → why it is disabled: an application's webhook
    /// endpoints that answered `410 Gone`.
    pub fn disabled_endpoints(&self, application_id: &str) -> String {
        format!("{}:disabled:{application_id}", self.prefix)
    }

    /// Set of `{application_id} {endpoint}` of every disabled endpoint
    /// (for the gauge).
    pub fn disabled_endpoints_all(&self) -> String {
        format!("{}:disabled", self.prefix)
    }

    /// Sorted set of timer entry ids, scored by due time in ms.
    pub fn timer_due(&self) -> String {
        format!("{}:timer:due", self.prefix)
    }

    /// Hash of timer entry id → entry JSON (routing key and payload).
    pub fn timer_entries(&self) -> String {
        format!("{}:timer:entries", self.prefix)
    }

    /// Pub/sub channel that wakes timers when an earlier entry is added.
    pub fn timer_wake(&self) -> String {
        format!("{}:timer:wake", self.prefix)
    }

    /// String: the provider's message id, once the provider accepted the
    /// send, so a redelivered send command never calls the provider again.
    pub fn sent(&self, message_uuid: &str) -> String {
        format!("{}:sent:{message_uuid}", self.prefix)
    }

    /// String (integer, µs since the epoch): a provider limit's next free
    /// turn (GCRA, [`crate::rate`]) for sends on `channel` through
    /// `provider` (`*`: any) from `sender` (`*`: every sender together).
    pub fn send_rate(&self, channel: &str, provider: &str, sender: &str) -> String {
        format!("{}:send-rate:{channel}:{provider}:{sender}", self.prefix)
    }

    /// Short lock held by the sender calling the provider for a message.
    pub fn send_lock(&self, message_uuid: &str) -> String {
        format!("{}:sent:{message_uuid}:lock", self.prefix)
    }

    /// String `{workflow_id} {message_uuid}`: whose receipt a provider's
    /// message id is, within the provider record that sent it (`scope`:
    /// [`crate::providers::receipt_scope`]).
    pub fn provider_message(&self, scope: &str, provider_id: &str) -> String {
        format!("{}:provider:{scope}:{provider_id}", self.prefix)
    }

    /// List of receipts that arrived before their send was recorded.
    pub fn parked_receipts(&self, scope: &str, provider_id: &str) -> String {
        format!("{}:provider:{scope}:{provider_id}:parked", self.prefix)
    }

    /// String `{api_key} {application_id or -}`: who last wrote from our
    /// `ours` to the user `theirs` on `channel`, within `tenant`
    /// ([`crate::providers::send_tenant`]), so that the user's answers
    /// reach that application.
    pub fn conversation(&self, tenant: &str, channel: &str, ours: &str, theirs: &str) -> String {
        format!(
            "{}:conversation:{tenant}:{channel}:{ours}:{theirs}",
            self.prefix
        )
    }

    /// The same before conversations had tenants; read, never written.
    pub fn legacy_conversation(&self, channel: &str, ours: &str, theirs: &str) -> String {
        format!("{}:conversation:{channel}:{ours}:{theirs}", self.prefix)
    }

    /// String JSON [`crate::providers::Owner`]: who receives inbound
    /// messages to `number` through shared providers.
    pub fn number(&self, channel: &str, number: &str) -> String {
        format!("{}:number:{channel}:{number}", self.prefix)
    }

    /// Hash channel → provider settings JSON for an account or an
    /// application (`scope` is the api key or the application id).
    pub fn providers(&self, scope: &str) -> String {
        format!("{}:providers:{scope}", self.prefix)
    }

    /// String: JSON of the [`crate::providers::RouteTarget`] a callback
    /// route names.
    pub fn provider_route(&self, route: &str) -> String {
        format!("{}:provider-route:{route}", self.prefix)
    }

    /// String: when (ms) the user `theirs` last wrote to our `ours` on
    /// `channel`, within `tenant`; expires when the channel's reply window
    /// closes.
    pub fn window(&self, tenant: &str, channel: &str, ours: &str, theirs: &str) -> String {
        format!("{}:window:{tenant}:{channel}:{ours}:{theirs}", self.prefix)
    }

    /// String `{provider message id} {sent at ms}`: the last message sent
    /// from `ours` to `theirs` on `channel`, for read receipts that name
    /// no message (Messenger's watermarks), through the provider record
    /// `scope` (so a watermark verified by one record reads only its own).
    pub fn last_sent(&self, scope: &str, channel: &str, ours: &str, theirs: &str) -> String {
        format!(
            "{}:last-sent:{scope}:{channel}:{ours}:{theirs}",
            self.prefix
        )
    }

    /// String `claimed` or `abandoned`: whether work whose hand-off had an
    /// unknown outcome runs, or was answered 503 and must not. See
    /// [`crate::store::WorkflowStore::abandon`] and
    /// [`crate::store::WorkflowStore::settle_fate`].
    pub fn fate(&self, id: &str) -> String {
        format!("{}:fate:{id}", self.prefix)
    }
}
