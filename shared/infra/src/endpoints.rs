//! Webhook endpoints disabled by their receiver (`410 Gone`, as Standard
//! Webhooks has it), per application: the notifier disables them, and
//! ingest enables them again when the application's dead letters are
//! replayed or its webhook URLs are set again. Kept without expiry: a
//! disabled endpoint stays disabled until someone acts.

use crate::redis::{Keys, Redis};

/// Disables `endpoint` (a webhook URL without its query) of
/// `application_id`, saying why.
pub async fn disable(
    redis: &Redis,
    keys: &Keys,
    application_id: &str,
    endpoint: &str,
    reason: &str,
) -> Result<(), redis::RedisError> {
    redis::pipe()
        .hset(keys.disabled_endpoints(application_id), endpoint, reason)
        .ignore()
        .sadd(
            keys.disabled_endpoints_all(),
            format!("{application_id} {endpoint}"),
        )
        .ignore()
        .exec_async(&mut redis.clone())
        .await
}

/// Enables every disabled endpoint of `application_id`; returns how many
/// there were.
pub async fn enable_all(
    redis: &Redis,
    keys: &Keys,
    application_id: &str,
) -> Result<usize, redis::RedisError> {
    let mut conn = redis.clone();
    let key = keys.disabled_endpoints(application_id);
    let endpoints: Vec<String> = redis::cmd("HKEYS").arg(&key).query_async(&mut conn).await?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    let members: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{application_id} {e}"))
        .collect();
    redis::pipe()
        .del(&key)
        .ignore()
        .srem(keys.disabled_endpoints_all(), members)
        .ignore()
        .exec_async(&mut conn)
        .await?;
    Ok(endpoints.len())
}
