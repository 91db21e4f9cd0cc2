//! The short lock a sender holds on a message while it calls the
//! message's provider, so that two senders (a redelivery racing the first
//! delivery) never call it for the same message at once.
//!
//! The lock's value is its holder's token: a holder whose lock expired
//! (a long retry wait) can neither extend nor release another's, and
//! finds out before its next provider call.

use dispatch_infra::redis::Redis;

/// The short lock a sender holds on a message while calling its provider.
/// Its value is a token of this holder, so that a holder whose lock
/// expired (a long retry wait) cannot extend or release another's.
pub struct Lock {
    pub key: String,
    pub token: String,
    pub ms: u64,
}

impl Lock {
    /// Extends the lock; `false` when it expired (another sender may have
    /// sent the message meanwhile: the redelivery will find out).
    pub async fn refresh(&self, conn: &mut Redis) -> Result<bool, redis::RedisError> {
        self.hold(conn, self.ms).await
    }

    /// Extends the lock to `ms` from now; `false` when it expired.
    pub async fn hold(&self, conn: &mut Redis, ms: u64) -> Result<bool, redis::RedisError> {
        dispatch_infra::token::extend(conn, &self.key, &self.token, ms).await
    }

    pub async fn release(&self, conn: &mut Redis) -> Result<(), redis::RedisError> {
        dispatch_infra::token::release(conn, &self.key, &self.token).await
    }
}
