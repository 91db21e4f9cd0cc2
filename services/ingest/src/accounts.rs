//! Accounts: an `api_key`, an `api_secret` (stored only as its SHA-256),
//! and a `signature_secret` for signing webhooks.
//!
//! A fast hash is right for the secret: it is 32 random characters from a
//! 62-letter alphabet (190 bits), so no dictionary or brute force applies,
//! and a slow password hash would cost milliseconds on every request.
//! Comparison is constant-time.

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use dispatch_infra::redis::Keys;

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

fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
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
    let keys = Keys::new(&config.redis_prefix);
    create(&mut conn, &keys, dispatch_model::record::now_ms())
        .await
        .with_context(|| format!("creating the account in Redis at {}", config.redis_url))
}

/// Whether `api_secret` is the secret of the account `api_key`.
pub async fn verify(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    api_key: &str,
    api_secret: &str,
) -> redis::RedisResult<bool> {
    let stored: Option<String> = redis::cmd("HGET")
        .arg(keys.account(api_key))
        .arg("secret_sha256")
        .query_async(conn)
        .await?;
    Ok(stored.is_some_and(|stored| {
        bool::from(stored.as_bytes().ct_eq(sha256_hex(api_secret).as_bytes()))
    }))
}
