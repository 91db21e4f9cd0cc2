//! Matching provider receipts to our messages.
//!
//! A provider names a message by its own id, known only once it accepted
//! the send. The sender records `provider id → (workflow, message)` right
//! after; a receipt can still arrive first (a fast provider, a slow
//! sender). Ingest therefore either resolves a receipt or parks it under
//! the provider id, and the sender, when it records the id, takes whatever
//! was parked. Both sides are single Lua scripts on the same two keys
//! (which share a hash tag, so one slot of a cluster), so a receipt is
//! either resolved by ingest or handed to the sender: never both, never
//! neither.

use std::sync::LazyLock;

use dispatch_model::envelope::StatusEvent;
use dispatch_model::record::{MessageError, MessageStatus, Usage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::redis::{Keys, Redis};

/// A provider's report about one of its message ids, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub provider_message_id: String,
    pub status: MessageStatus,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Receipt {
    pub fn into_event(self, target: MessageRef) -> StatusEvent {
        StatusEvent {
            workflow_id: target.workflow_id,
            message_uuid: target.message_uuid,
            status: self.status,
            at_ms: self.at_ms,
            provider_message_id: Some(self.provider_message_id),
            error: self.error,
            usage: self.usage,
            provider: None,
        }
    }
}

/// Which of our messages a provider id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef {
    pub workflow_id: Uuid,
    pub message_uuid: Uuid,
}

impl MessageRef {
    fn encode(&self) -> String {
        format!("{} {}", self.workflow_id, self.message_uuid)
    }

    fn decode(raw: &str) -> Option<Self> {
        let (w, m) = raw.split_once(' ')?;
        Some(Self {
            workflow_id: w.parse().ok()?,
            message_uuid: m.parse().ok()?,
        })
    }
}

/// `KEYS` mapping, parked list, and on a standalone Redis the mapping as
/// written before receipts were scoped by record (on a cluster, another
/// slot; clusters came later); `ARGV` receipt JSON, TTL. Returns the
/// mapping, or nil after parking the receipt.
static RESOLVE_OR_PARK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local target = redis.call('GET', KEYS[1])
if target then return target end
if KEYS[3] then
  target = redis.call('GET', KEYS[3])
  if target then return target end
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return false
",
    )
});

/// `KEYS` mapping, parked list; `ARGV` mapping value, TTL. Records the
/// mapping and returns the parked receipts, which stay parked until
/// [`Receipts::unpark`] (after they are published).
static MAP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return redis.call('LRANGE', KEYS[2], 0, -1)
",
    )
});

/// What became of a message's send, recorded once the outcome is final so
/// that a redelivered send command reports it again instead of sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sent {
    Accepted {
        /// The record's receipt scope (the provider kind alone in records
        /// written before receipts were scoped).
        provider: String,
        provider_message_id: String,
    },
    Rejected {
        error: MessageError,
    },
}

#[derive(Clone)]
pub struct Receipts {
    redis: Redis,
    keys: Keys,
    ttl_secs: u64,
    /// Replicas a send record waits for (`redis_wait_replicas`).
    replicated: Option<crate::redis::Replicated>,
}

impl Receipts {
    pub fn new(redis: Redis, keys: Keys, ttl_secs: u64) -> Self {
        Self {
            redis,
            keys,
            ttl_secs,
            replicated: None,
        }
    }

    /// Makes every send record wait for replicas (`WAIT`): a send record
    /// lost with its master means a second provider call.
    pub fn replicated(mut self, replicated: Option<crate::redis::Replicated>) -> Self {
        self.replicated = replicated;
        self
    }

    /// The message `receipt` is about among those sent through the record
    /// `scope` ([`crate::providers::receipt_scope`]), or `None` when it was
    /// parked for the sender to pick up.
    ///
    /// Sends recorded before receipts were scoped (under the provider
    /// `kind` alone) still resolve until they expire with the records
    /// (`record_ttl_secs`), so that an upgrade loses no receipt of a
    /// message in flight; nothing writes such keys any more.
    pub async fn resolve_or_park(
        &self,
        scope: &str,
        kind: &str,
        receipt: &Receipt,
    ) -> Result<Option<MessageRef>, redis::RedisError> {
        let json = serde_json::to_string(receipt).unwrap_or_default();
        let mut conn = self.redis.clone();
        let id = &receipt.provider_message_id;
        let mut invocation = RESOLVE_OR_PARK.key(self.keys.provider_message(scope, id));
        invocation.key(self.keys.parked_receipts(scope, id));
        if !self.keys.is_cluster() {
            invocation.key(self.keys.provider_message(kind, id));
        }
        let target: Option<String> = invocation
            .arg(json)
            .arg(self.ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(target.as_deref().and_then(MessageRef::decode))
    }

    /// Records that the provider record `scope` accepted `target` as
    /// `provider_id`, and returns the receipts that arrived before this
    /// (still parked). The send record is written first: a sender that
    /// dies before the mapping leaves a redelivered command that finds the
    /// send recorded, does not send again, and maps it
    /// ([`Receipts::map`]).
    pub async fn record_sent(
        &self,
        scope: &str,
        provider_id: &str,
        target: MessageRef,
        conversation: Option<(String, String)>,
    ) -> Result<Parked, redis::RedisError> {
        let sent = Sent::Accepted {
            provider: scope.to_owned(),
            provider_message_id: provider_id.to_owned(),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.sent(&target.message_uuid.to_string()))
            .arg(serde_json::to_string(&sent).unwrap_or_default())
            .arg("EX")
            .arg(self.ttl_secs)
            .ignore();
        if let Some(replicated) = self.replicated {
            replicated.append(&mut pipe);
        }
        if let Some((key, value)) = conversation {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(self.ttl_secs)
                .ignore();
        }
        let reached: Vec<i64> = pipe.query_async(&mut self.redis.clone()).await?;
        if let (Some(replicated), Some(reached)) = (self.replicated, reached.first()) {
            replicated.note(*reached, "sent");
        }
        self.map(scope, provider_id, target).await
    }

    /// Maps `provider_id` of the record `scope` to `target`, so that later
    /// receipts resolve, and returns those that came before (still
    /// parked). Idempotent: a redelivered send maps it again.
    pub async fn map(
        &self,
        scope: &str,
        provider_id: &str,
        target: MessageRef,
    ) -> Result<Parked, redis::RedisError> {
        let parked: Vec<String> = MAP
            .key(self.keys.provider_message(scope, provider_id))
            .key(self.keys.parked_receipts(scope, provider_id))
            .arg(target.encode())
            .arg(self.ttl_secs)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(decode(&parked))
    }

    /// Records a final rejection of `message_uuid`.
    pub async fn record_rejected(
        &self,
        message_uuid: Uuid,
        error: &MessageError,
    ) -> Result<(), redis::RedisError> {
        let sent = Sent::Rejected {
            error: error.clone(),
        };
        let mut conn = self.redis.clone();
        redis::cmd("SET")
            .arg(self.keys.sent(&message_uuid.to_string()))
            .arg(serde_json::to_string(&sent).unwrap_or_default())
            .arg("EX")
            .arg(self.ttl_secs)
            .exec_async(&mut conn)
            .await
    }

    /// The receipts parked under a provider id (read only).
    pub async fn parked(
        &self,
        scope: &str,
        provider_id: &str,
    ) -> Result<Parked, redis::RedisError> {
        let parked: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.parked_receipts(scope, provider_id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(decode(&parked))
    }

    /// Forgets the first `count` parked receipts, once published.
    pub async fn unpark(
        &self,
        provider: &str,
        provider_id: &str,
        count: usize,
    ) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        redis::cmd("LTRIM")
            .arg(self.keys.parked_receipts(provider, provider_id))
            .arg(count)
            .arg(-1)
            .exec_async(&mut conn)
            .await
    }
}

/// Receipts parked under a provider id; `count` entries to unpark once
/// they are published (undecodable ones included).
#[derive(Debug, Default)]
pub struct Parked {
    pub receipts: Vec<Receipt>,
    pub count: usize,
}

fn decode(raw: &[String]) -> Parked {
    Parked {
        receipts: raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect(),
        count: raw.len(),
    }
}
