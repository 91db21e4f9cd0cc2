//! Accounts: an `api_key`, an `api_secret` (stored only as its SHA-256),
//! a `signature_secret` for signing webhooks, and optionally a request
//! rate of their own.
//!
//! A fast hash is right for the secret: it is 32 random characters from a
//! 62-letter alphabet (190 bits), so no dictionary or brute force applies,
//! and a slow password hash would cost milliseconds on every request.
//! Comparison is constant-time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use dispatch_infra::redis::Keys;

use crate::rate::Rate;

/// A new account's credentials, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    pub api_key: String,
    pub api_secret: String,
    pub signature_secret: String,
}

fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// SHA-256 of `bytes`, in lower-case hex.
pub(crate) fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    let digest = Sha256::digest(bytes.as_ref());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates an account and returns its credentials.
pub async fn create(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    now_ms: i64,
) -> redis::RedisResult<Credentials> {
    loop {
        let mut key_bytes = [0u8; 8];
        rand::rng().fill(&mut key_bytes);
        let api_key: String = key_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let credentials = Credentials {
            api_key,
            api_secret: random_string(32),
            signature_secret: random_string(48),
        };
        let key = keys.account(&credentials.api_key);
        // HSETNX guards against the (astronomically unlikely) reuse of a key.
        let fresh: bool = redis::cmd("HSETNX")
            .arg(&key)
            .arg("secret_sha256")
            .arg(sha256_hex(&credentials.api_secret))
            .query_async(conn)
            .await?;
        if !fresh {
            continue;
        }
        redis::cmd("HSET")
            .arg(&key)
            .arg("signature_secret")
            .arg(&credentials.signature_secret)
            .arg("created_at_ms")
            .arg(now_ms)
            .exec_async(conn)
            .await?;
        return Ok(credentials);
    }
}

/// Creates an account in the Redis of `config` (the admin command and the
/// bench use this).
pub async fn create_in(config: &dispatch_infra::Config) -> anyhow::Result<Credentials> {
    use anyhow::Context as _;
    let mut conn = dispatch_infra::redis::connect(config)
        .with_context(|| format!("redis_url {}", config.redis_url))?;
    let keys = Keys::for_config(config);
    create(&mut conn, &keys, dispatch_model::record::now_ms())
        .await
        .with_context(|| format!("creating the account in Redis at {}", config.redis_url))
}

/// Sets the account's own request rate (`None`: back to the
/// configuration's). `Ok(false)` when there is no such account. Ingest
/// replicas pick the change up within [`crate::rate::Limiter`]'s cache
/// lifetime.
pub async fn set_rate(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    api_key: &str,
    rate: Option<Rate>,
) -> redis::RedisResult<bool> {
    let key = keys.account(api_key);
    let exists: bool = redis::cmd("HEXISTS")
        .arg(&key)
        .arg("secret_sha256")
        .query_async(conn)
        .await?;
    if !exists {
        return Ok(false);
    }
    match rate {
        Some(rate) => {
            redis::cmd("HSET")
                .arg(&key)
                .arg(RATE_PER_SEC)
                .arg(rate.per_sec)
                .arg(RATE_BURST)
                .arg(rate.burst)
                .exec_async(conn)
                .await?
        }
        None => {
            redis::cmd("HDEL")
                .arg(&key)
                .arg(RATE_PER_SEC)
                .arg(RATE_BURST)
                .exec_async(conn)
                .await?
        }
    }
    Ok(true)
}

/// The account's own request rate, if it has one.
pub async fn rate(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    api_key: &str,
) -> redis::RedisResult<Option<Rate>> {
    let (per_sec, burst): (Option<u32>, Option<u32>) = redis::cmd("HMGET")
        .arg(keys.account(api_key))
        .arg(RATE_PER_SEC)
        .arg(RATE_BURST)
        .query_async(conn)
        .await?;
    Ok(per_sec.map(|per_sec| Rate {
        per_sec,
        burst: burst.unwrap_or(0),
    }))
}

const RATE_PER_SEC: &str = "rate_per_sec";
const RATE_BURST: &str = "rate_burst";

async fn stored_hash(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    api_key: &str,
) -> redis::RedisResult<Option<String>> {
    redis::cmd("HGET")
        .arg(keys.account(api_key))
        .arg("secret_sha256")
        .query_async(conn)
        .await
}

fn matches(stored_sha256: &str, api_secret: &str) -> bool {
    bool::from(
        stored_sha256
            .as_bytes()
            .ct_eq(sha256_hex(api_secret).as_bytes()),
    )
}

/// Stored secret hashes of existing accounts, kept in memory for a few
/// seconds so that Basic auth costs no Redis round trip on most requests.
/// Only hashes of accounts that exist are kept (an unknown key always asks
/// Redis), and the comparison is the same constant-time one. A changed
/// secret takes effect within `ttl` on every instance.
pub struct SecretCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl SecretCache {
    /// Most accounts remembered; beyond it the cache starts over.
    const CAPACITY: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn verify(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        keys: &Keys,
        api_key: &str,
        api_secret: &str,
    ) -> redis::RedisResult<bool> {
        let cached = self
            .lock()
            .get(api_key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(hash, _)| hash.clone());
        let stored = match cached {
            Some(hash) => hash,
            None => match stored_hash(conn, keys, api_key).await? {
                Some(hash) => {
                    let mut entries = self.lock();
                    if entries.len() >= Self::CAPACITY {
                        entries.clear();
                    }
                    entries.insert(api_key.to_owned(), (hash.clone(), Instant::now()));
                    hash
                }
                None => return Ok(false),
            },
        };
        Ok(matches(&stored, api_secret))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
