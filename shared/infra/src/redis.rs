//! Redis: the connection pool and the key layout.
//!
//! Every key starts with `redis_prefix`, so that deployments and test runs
//! can share one Redis. The layout is written down here once; services
//! build keys only through [`Keys`].

use std::time::Duration;

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

use crate::config::Config;

pub use deadpool_redis::{Connection, PoolError};

/// A pool that connects lazily: creating it never fails for lack of Redis.
pub fn pool(config: &Config) -> anyhow_free::Result<Pool> {
    let mut cfg = deadpool_redis::Config::from_url(config.redis_url.clone());
    cfg.pool = Some(PoolConfig {
        max_size: config.redis_pool_size,
        timeouts: Timeouts {
            wait: Some(Duration::from_secs(2)),
            create: Some(Duration::from_secs(2)),
            recycle: Some(Duration::from_secs(1)),
        },
        ..PoolConfig::new(config.redis_pool_size)
    });
    cfg.create_pool(Some(Runtime::Tokio1))
        .map_err(|e| anyhow_free::Error(format!("redis_url: {e}")))
}

/// Whether Redis answers a PING within a second.
pub async fn ping(pool: &Pool) -> bool {
    let check = async {
        let mut conn = pool.get().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Some(_))
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

/// A tiny error type so this crate does not need `anyhow`.
pub mod anyhow_free {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Error(pub String);
    pub type Result<T> = std::result::Result<T, Error>;
}
