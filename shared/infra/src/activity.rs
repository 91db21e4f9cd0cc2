//! What the console reads and the services write as they go: each
//! account's counters in minute buckets, its search indexes, and every
//! webhook attempt of a workflow.
//!
//! All of it rides in pipelines the writers send anyway, so it costs no
//! round trip of its own: the counters in a workflow write's second
//! pipeline (the one that moves the count in flight), the search entries
//! before the first write's script, a webhook's log entry with its
//! delivered mark or its failed attempt. An account's counters and
//! search keys share one hash tag (`account-{api_key}`), so on a Redis
//! Cluster they are one run of those pipelines, not one per key.
//!
//! **Counters** are one hash per account and minute ([`Keys::stats`]),
//! field → count, kept [`STATS_KEEP_SECS`]: the overview reads the last
//! hour as 60 `HGETALL`s in one pipeline.
//!
//! **Search** keys are sorted sets of workflow ids scored by acceptance
//! time, one per account and recipient, per account and `client_ref`,
//! and one of all the account's workflows. A record expires
//! `record_ttl_secs` after its last write, which may come long after its
//! acceptance (a late receipt, the redaction of its content), so its
//! entries are written again, and their keys' expiry moved, by the write
//! that creates it and by every write once it has ended (the engine);
//! nothing outlives them. The set of all workflows is trimmed by
//! acceptance time on every write (the overview lists only its newest);
//! the others are trimmed when read ([`page`]), of members whose record
//! is gone: the erasure of a recipient walks its key, and must find
//! every record still kept.
//!
//! **Webhook attempts**, failed or not, go to a list beside the workflow's
//! record ([`Keys::webhook_log`]), the latest [`WEBHOOK_LOG_MAX`] kept.

use std::collections::HashMap;

use dispatch_model::envelope::WorkflowAccepted;
use serde::{Deserialize, Serialize};

use crate::redis::{Keys, Redis};

/// How long a minute's counters are kept: the overview shows the last
/// hour.
pub const STATS_KEEP_SECS: u64 = 2 * 3600;

/// Most webhook attempts kept per workflow (the newest).
pub const WEBHOOK_LOG_MAX: isize = 100;

/// A counter of an account's minute bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat<'a> {
    Accepted,
    Completed,
    Error,
    /// A workflow moved on to its next message, and why: `deadline`,
    /// `rejected` or `undeliverable`.
    Failover(&'a str),
    /// ... from a message on this channel.
    FailoverFrom(&'a str),
    WebhookDelivered,
    WebhookFailed,
    DeadLetter,
}

impl Stat<'_> {
    pub fn field(&self) -> String {
        match self {
            Stat::Accepted => "accepted".into(),
            Stat::Completed => "completed".into(),
            Stat::Error => "error".into(),
            Stat::Failover(reason) => format!("failover:{reason}"),
            Stat::FailoverFrom(channel) => format!("failover-from:{channel}"),
            Stat::WebhookDelivered => "webhook:delivered".into(),
            Stat::WebhookFailed => "webhook:failed".into(),
            Stat::DeadLetter => "webhook:dead".into(),
        }
    }
}

/// The minute `ms` falls in (minutes since the epoch).
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// Appends to `pipe` the counting of `stats` in `account`'s bucket of the
/// minute of `now_ms`.
pub fn count_into(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    account: &str,
    stats: &[Stat<'_>],
    now_ms: i64,
) {
    if stats.is_empty() {
        return;
    }
    let key = keys.stats(account, minute_of(now_ms));
    for stat in stats {
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg(stat.field())
            .arg(1)
            .ignore();
    }
    pipe.cmd("EXPIRE").arg(&key).arg(STATS_KEEP_SECS).ignore();
}

/// An account's counters of the `minutes` minutes up to `now_ms`, oldest
/// first.
pub async fn window(
    redis: &Redis,
    keys: &Keys,
    account: &str,
    minutes: i64,
    now_ms: i64,
) -> redis::RedisResult<Vec<HashMap<String, i64>>> {
    let last = minute_of(now_ms);
    let mut pipe = redis::pipe();
    for minute in last - minutes + 1..=last {
        pipe.cmd("HGETALL").arg(keys.stats(account, minute));
    }
    pipe.query_async(&mut redis.clone()).await
}

/// A short, fixed-length digest of a searched value, for key names.
pub fn digest(value: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A recipient as searched and indexed: without spaces, dashes or a
/// leading `+` (E.164 numbers are stored without it).
pub fn recipient(value: &str) -> String {
    value
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect()
}

/// The search keys a workflow is entered in: every workflow of its
/// account, and each distinct recipient and `client_ref` of its messages.
pub fn search_keys(keys: &Keys, accepted: &WorkflowAccepted) -> Vec<String> {
    let account = &accepted.account;
    let mut found = vec![keys.search(account, "all", "")];
    for step in &accepted.steps {
        let to = step
            .message
            .to
            .as_ref()
            .and_then(|a| a.number.as_deref().or(a.id.as_deref()));
        let entries = [
            to.map(|to| keys.search(account, "to", &recipient(to))),
            step.message
                .client_ref
                .as_deref()
                .map(|r| keys.search(account, "ref", r)),
        ];
        for key in entries.into_iter().flatten() {
            if !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

/// Appends to `pipe` the entry of workflow `id`, accepted at
/// `accepted_ms`, in `search` keys; trims the first (every workflow of the
/// account) of members older than the records.
pub fn index_into(
    pipe: &mut redis::Pipeline,
    search: &[String],
    id: &str,
    accepted_ms: i64,
    ttl_secs: u64,
    now_ms: i64,
) {
    for (i, key) in search.iter().enumerate() {
        pipe.cmd("ZADD").arg(key).arg(accepted_ms).arg(id).ignore();
        pipe.cmd("EXPIRE").arg(key).arg(ttl_secs).ignore();
        if i == 0 {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(format!("({}", oldest_kept(ttl_secs, now_ms)))
                .ignore();
        }
    }
}

fn oldest_kept(ttl_secs: u64, now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// Most members a read of a search key checks for a gone record.
const TRIM_BATCH: isize = 100;

/// One page of a search key, newest first: the workflow ids, and how many
/// the key holds in all. Members accepted longer ago than a record lives
/// are trimmed first if their record is gone (a record may live longer,
/// from its last write).
pub async fn page(
    redis: &Redis,
    keys: &Keys,
    ttl_secs: u64,
    key: &str,
    offset: usize,
    count: usize,
    now_ms: i64,
) -> redis::RedisResult<(Vec<String>, usize)> {
    let stop = offset.saturating_add(count).saturating_sub(1);
    let (old, ids, total): (Vec<String>, Vec<String>, usize) = redis::pipe()
        .cmd("ZRANGEBYSCORE")
        .arg(key)
        .arg("-inf")
        .arg(format!("({}", oldest_kept(ttl_secs, now_ms)))
        .arg("LIMIT")
        .arg(0)
        .arg(TRIM_BATCH)
        .cmd("ZREVRANGE")
        .arg(key)
        .arg(offset)
        .arg(stop)
        .cmd("ZCARD")
        .arg(key)
        .query_async(&mut redis.clone())
        .await?;
    if old.is_empty() {
        return Ok((ids, total));
    }
    // One key per command: the records are in slots of their own.
    let mut pipe = redis::pipe();
    for id in &old {
        pipe.cmd("EXISTS").arg(keys.workflow(id));
    }
    let kept: Vec<bool> = pipe.query_async(&mut redis.clone()).await?;
    let gone: Vec<&String> = old
        .iter()
        .zip(kept)
        .filter_map(|(id, kept)| (!kept).then_some(id))
        .collect();
    if gone.is_empty() {
        return Ok((ids, total));
    }
    redis::cmd("ZREM")
        .arg(key)
        .arg(&gone)
        .exec_async(&mut redis.clone())
        .await?;
    let ids = ids.into_iter().filter(|id| !gone.contains(&id)).collect();
    Ok((ids, total.saturating_sub(gone.len())))
}

/// One webhook attempt, as the workflow's timeline shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookLog {
    pub webhook_id: String,
    /// `message_status`, `final_report`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_uuid: Option<String>,
    pub at_ms: i64,
    /// The HTTP status, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// `delivered`, `failed` or `dead` (failed, and dead-lettered).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Appends to `pipe` the keeping of `entry` in workflow `workflow_id`'s
/// webhook log.
pub fn log_into(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    workflow_id: &str,
    entry: &WebhookLog,
    ttl_secs: u64,
) {
    let key = keys.webhook_log(workflow_id);
    pipe.cmd("RPUSH")
        .arg(&key)
        .arg(serde_json::to_string(entry).unwrap_or_default())
        .ignore();
    pipe.cmd("LTRIM")
        .arg(&key)
        .arg(-WEBHOOK_LOG_MAX)
        .arg(-1)
        .ignore();
    pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).ignore();
}

/// A workflow's webhook attempts, oldest first.
pub async fn webhook_log(
    redis: &Redis,
    keys: &Keys,
    workflow_id: &str,
) -> redis::RedisResult<Vec<WebhookLog>> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.webhook_log(workflow_id))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.clone())
        .await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}
