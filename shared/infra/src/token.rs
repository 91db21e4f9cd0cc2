//! Keys held by a token: a lock, a lease. Only the holder, who knows the
//! token, may extend or release one; a holder whose key expired (another
//! took it) finds out instead of touching the new holder's.

use std::sync::LazyLock;

use crate::redis::Redis;

/// `KEYS[1]` the key; `ARGV` token, ms. Extends it if still the token's.
static EXTEND: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// `KEYS[1]` the key; `ARGV[1]` token. Deletes it if still the token's.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Makes `key` last `ms` from now if `token` still holds it; whether it
/// does.
pub async fn extend(
    redis: &Redis,
    key: &str,
    token: &str,
    ms: u64,
) -> Result<bool, redis::RedisError> {
    let held: i64 = EXTEND
        .key(key)
        .arg(token)
        .arg(ms)
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(held == 1)
}

/// Deletes `key` if `token` still holds it.
pub async fn release(redis: &Redis, key: &str, token: &str) -> Result<(), redis::RedisError> {
    let _: i64 = RELEASE
        .key(key)
        .arg(token)
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(())
}
