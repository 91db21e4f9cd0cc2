//! `Idempotency-Key` on `POST /v0.1/messages`, `/v0.1/dispatch` and
//! `/v1/messages`, as the IETF draft "The Idempotency-Key HTTP Header
//! Field" describes it.
//!
//! A request with a key **claims** it before its workflow is written:
//! one record per account and key (`Keys::idempotency`) holding the
//! SHA-256 of the body, the workflow id chosen for it and the answer it
//! will get. The workflow's own record is the proof that the work exists,
//! so nothing has to be written atomically with it:
//!
//! - a repeat with another body is 422, whatever state the key is in;
//! - a repeat whose workflow exists gets the stored answer again (202,
//!   the same uuids), whether or not the first request lived to answer.
//!   The workflow's fate is settled as claimed first: a first request
//!   whose write had an unknown outcome would otherwise abandon it (and
//!   answer 503) after the repeat was told 202;
//! - a repeat whose workflow does not exist yet is 409 while the first
//!   request may still write it: its lease (`idempotency_lease_ms`), a key
//!   of its own that expires in Redis, so no replica's clock matters.
//!   After that its holder is taken to have died before writing, and the
//!   repeat takes the key over **with the same workflow id** (claimed
//!   first), so that a holder that was only slow cannot create a second
//!   workflow: its write finds the record there and changes nothing. (A
//!   holder that abandoned its work and died before releasing the key
//!   leaves that id abandoned: the repeat takes the key over with an id
//!   of its own.)
//!
//! Only accepted work is remembered. A request answered 4xx before it
//! claimed its key (authentication, validation, rate) stores nothing, so
//! the key may be used again with a corrected body; a 503 for which
//! nothing was written releases the claim, so that a retry may succeed.
//! (A 503 whose write may have happened keeps it: the repeat finds the
//! workflow, or takes the key over once the lease is over.)

use dispatch_infra::store::Fate;
use dispatch_model::record::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The request's key: `None` without the header, 400 when it is not one
/// printable ASCII string of 1 to [`MAX_KEY_LEN`] characters. The draft
/// makes the value a structured-field string (`"…"`); a bare token, as
/// many clients send, is taken as it is.
pub fn key_of(headers: &axum::http::HeaderMap) -> ApiResult<Option<String>> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("Send one Idempotency-Key header, not several."));
    }
    let raw = value.as_bytes();
    if !raw.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(invalid("An Idempotency-Key is printable ASCII."));
    }
    let raw = String::from_utf8_lossy(raw).trim().to_owned();
    let key = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => unescape(inner)
            .ok_or_else(|| invalid("A quoted Idempotency-Key is a structured-field string."))?,
        None => raw,
    };
    if key.is_empty() || key.chars().count() > MAX_KEY_LEN {
        return Err(invalid("An Idempotency-Key has 1 to 255 characters."));
    }
    Ok(Some(key))
}

/// The inside of a structured-field string: `\"` and `\\` escaped, no
/// other backslash, no bare quote.
fn unescape(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn invalid(reason: &'static str) -> ApiError {
    ApiError::InvalidIdempotencyKey(reason)
}

/// What the key's record holds. (`claimed_at_ms` is for people reading
/// Redis: the lease decides.)
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    /// SHA-256 of the request body, hex.
    body_sha256: String,
    workflow_id: Uuid,
    /// The 202's body.
    answer: Value,
    /// When the request holding it claimed it (ms since the epoch).
    claimed_at_ms: i64,
    /// Set once the answer was given.
    #[serde(default)]
    done: bool,
}

/// What became of a claim.
pub enum Claim {
    /// The key is this request's: write [`Claimed::workflow_id`], then
    /// call [`Claimed::answered`], or on a 503 [`Claimed::release`].
    Claimed(Claimed),
    /// The key was answered already: this is that 202's body.
    Replay(Value),
}

pub struct Claimed {
    key: String,
    lease: String,
    held: Held,
    value: String,
}

impl Claimed {
    /// The workflow id to write (the one the key was first claimed with).
    pub fn workflow_id(&self) -> Uuid {
        self.held.workflow_id
    }

    /// The answer to give.
    pub fn answer(&self) -> &Value {
        &self.held.answer
    }

    /// Marks the answer given, so that repeats need not look for the
    /// workflow. A failure changes nothing a repeat sees.
    pub async fn answered(self, state: &AppState) {
        let mut held = self.held;
        held.done = true;
        let done = serde_json::to_string(&held).unwrap_or_default();
        let result: redis::RedisResult<i64> = redis::Script::new(ANSWERED)
            .key(&self.key)
            .key(&self.lease)
            .arg(&self.value)
            .arg(done)
            .invoke_async(&mut state.redis())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not mark an idempotency key answered");
        }
    }

    /// Gives the key up: nothing was accepted (503), so a retry may be.
    pub async fn release(self, state: &AppState) {
        let result: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(&self.key)
            .key(&self.lease)
            .arg(&self.value)
            .invoke_async(&mut state.redis())
            .await;
        if let Err(e) = result {
            // A repeat takes it over once its lease is over.
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    }
}

/// Sets the key `KEYS[1]` to `ARGV[1]` for `ARGV[2]` ms, and its lease
/// `KEYS[2]` for `ARGV[3]` ms, unless the key exists; returns what it
/// holds and whether its lease is alive otherwise.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return {held, redis.call('EXISTS', KEYS[2])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return false
";

/// Takes the key `KEYS[1]` over from its holder (value `ARGV[1]`) once
/// its lease `KEYS[2]` is gone: value `ARGV[2]` for `ARGV[3]` ms, a new
/// lease for `ARGV[4]` ms. 1 if taken.
const TAKE_OVER: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return 1
";

/// Marks the key answered (`ARGV[1]` becomes `ARGV[2]`, keeping its
/// expiry) and ends its lease.
const ANSWERED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('DEL', KEYS[2])
return 1
";

/// Deletes the key `KEYS[1]` and its lease if it still holds `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1
";

/// Claims `key` of `account` for a request whose body hashes to
/// `body_sha256`, to be written as `workflow_id` and answered `answer`;
/// or, when the key was claimed before, says what that means for this
/// request.
pub async fn claim(
    state: &AppState,
    account: &str,
    key: &str,
    body_sha256: String,
    workflow_id: Uuid,
    answer: Value,
) -> ApiResult<Claim> {
    let key_sha256 = crate::accounts::sha256_hex(key);
    let redis_key = state.keys.idempotency(account, &key_sha256);
    let lease = state.keys.idempotency_lease(account, &key_sha256);
    let ttl_ms = state.config.idempotency_ttl_secs.saturating_mul(1000);
    let lease_ms = state.config.idempotency_lease_ms;
    let mine = Held {
        body_sha256,
        workflow_id,
        answer,
        claimed_at_ms: now_ms(),
        done: false,
    };
    let value = serde_json::to_string(&mine).unwrap_or_default();
    let held: Option<(String, i64)> = redis::Script::new(CLAIM)
        .key(&redis_key)
        .key(&lease)
        .arg(&value)
        .arg(ttl_ms)
        .arg(lease_ms)
        .invoke_async(&mut state.redis())
        .await?;
    let claimed = |held, value| {
        Claim::Claimed(Claimed {
            key: redis_key.clone(),
            lease: lease.clone(),
            held,
            value,
        })
    };
    let Some((raw, leased)) = held else {
        count("claimed");
        return Ok(claimed(mine, value));
    };
    let theirs: Held = serde_json::from_str(&raw)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("idempotency record unreadable: {e}")))?;
    if theirs.body_sha256 != mine.body_sha256 {
        count("mismatch");
        return Err(ApiError::IdempotencyMismatch);
    }
    if theirs.done {
        count("replayed");
        return Ok(Claim::Replay(theirs.answer));
    }
    if workflow_exists(state, theirs.workflow_id).await? {
        // Not answered yet, or its answer was lost: it stands only once
        // its first writer can no longer abandon it.
        if fate(state, theirs.workflow_id).await? == Fate::Claimed {
            count("replayed");
            return Ok(Claim::Replay(theirs.answer));
        }
        count("conflict");
        return Err(ApiError::IdempotencyConflict);
    }
    if leased == 1 {
        count("conflict");
        return Err(ApiError::IdempotencyConflict);
    }
    // Its holder died before writing, or is very late: take the key over,
    // with its workflow id and answer, claimed so that the holder cannot
    // abandon what this request writes; or with this request's own, if
    // the holder abandoned its work already.
    let taken = match fate(state, theirs.workflow_id).await? {
        Fate::Claimed => Held {
            claimed_at_ms: now_ms(),
            ..theirs
        },
        Fate::Abandoned => mine,
    };
    let taken_value = serde_json::to_string(&taken).unwrap_or_default();
    let swapped: i64 = redis::Script::new(TAKE_OVER)
        .key(&redis_key)
        .key(&lease)
        .arg(&raw)
        .arg(&taken_value)
        .arg(ttl_ms)
        .arg(lease_ms)
        .invoke_async(&mut state.redis())
        .await?;
    if swapped == 0 {
        // Another repeat took it over first.
        count("conflict");
        return Err(ApiError::IdempotencyConflict);
    }
    count("taken_over");
    Ok(claimed(taken, taken_value))
}

/// Settles workflow `id` as claimed, unless it was abandoned.
async fn fate(state: &AppState, id: Uuid) -> ApiResult<Fate> {
    state
        .engine
        .store()
        .settle_fate(&id.to_string(), Fate::Claimed)
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}

async fn workflow_exists(state: &AppState, id: Uuid) -> ApiResult<bool> {
    let found = state
        .engine
        .store()
        .load(&id.to_string())
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(found.is_some())
}

fn count(outcome: &'static str) {
    metrics::counter!("dispatch_idempotency_keys_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::key_of;

    fn key(value: &[u8]) -> Result<Option<String>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_bytes(value).expect("header value"),
        );
        key_of(&headers).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_printable_ascii_of_at_most_255() {
        assert_eq!(key_of(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(key(b"abc-123").ok(), Some(Some("abc-123".into())));
        assert_eq!(key(br#""8e03978e""#).ok(), Some(Some("8e03978e".into())));
        assert_eq!(key(br#""a\"b""#).ok(), Some(Some("a\"b".into())));
        assert_eq!(key(&[b'k'; 255]).ok().flatten().map(|k| k.len()), Some(255));
        // A bare key may hold a quote.
        assert_eq!(key(b"\"open").ok(), Some(Some("\"open".into())));
        for bad in [
            &[b'k'; 256][..],
            b"",
            b"caf\xc3\xa9",
            b"tab\there",
            b"\"\"",
            br#""a\nb""#,
        ] {
            assert!(key(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
