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

/// A lazily connecting, self-reconnecting, multiplexed connection.
pub fn connect(config: &Config) -> Result<Redis, redis::RedisError> {
    let client = redis::Client::open(config.redis_url.as_str())?;
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

    /// Hash: `secret_sha256`, `signature_secret`, `created_at_ms`.
    pub fn account(&self, api_key: &str) -> String {
        format!("{}:account:{api_key}", self.prefix)
    }

    /// Sorted set of the account's application ids, scored by creation time.
    pub fn account_applications(&self, api_key: &str) -> String {
        format!("{}:account:{api_key}:applications", self.prefix)
    }

    /// String: the application record as JSON.
    pub fn application(&self, id: &str) -> String {
        format!("{}:application:{id}", self.prefix)
    }

    /// String: the workflow record as JSON (a Messages API send is a
    /// one-step workflow whose id is the message uuid).
    pub fn workflow(&self, id: &str) -> String {
        format!("{}:workflow:{id}", self.prefix)
    }

    /// Marker for work that ingest answered 503 for although the broker may
    /// hold it (a lost or late confirm). Consumers drop such envelopes.
    pub fn abandoned(&self, id: &str) -> String {
        format!("{}:abandoned:{id}", self.prefix)
    }
}
