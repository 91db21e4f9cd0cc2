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
//!   the same uuids), whether or not the first request lived to answer;
//! - a repeat whose workflow does not exist yet is 409 while the first
//!   request may still write it (`idempotency_lease_ms`); after that its
//!   holder is taken to have died before writing, and the repeat takes
//!   the key over **with the same workflow id**, so that a holder that was
//!   only slow cannot create a second workflow: its write finds the
//!   record there and changes nothing.
//!
//! Only accepted work is remembered. A request answered 4xx before it
//! claimed its key (authentication, validation, rate) stores nothing, so
//! the key may be used again with a corrected body; a 503 releases the
//! claim, so that a retry may succeed.

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

/// What the key's record holds.
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
        let result: redis::RedisResult<i64> = redis::Script::new(SWAP)
            .key(&self.key)
            .arg(&self.value)
            .arg(done)
            .arg(0)
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
            .arg(&self.value)
            .invoke_async(&mut state.redis())
            .await;
        if let Err(e) = result {
            // A repeat takes it over once its lease is over.
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    }
}

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` ms unless it exists; returns
/// what it holds otherwise.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Replaces `KEYS[1]`'s value `ARGV[1]` by `ARGV[2]`, keeping its expiry
/// (`ARGV[3]` = 0) or setting it to `ARGV[3]` ms; 1 if it still held it.
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// Deletes `KEYS[1]` if it still holds `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
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
    let redis_key = state
        .keys
        .idempotency(account, &crate::accounts::sha256_hex(key));
    let ttl_ms = state.config.idempotency_ttl_secs.saturating_mul(1000);
    let mine = Held {
        body_sha256,
        workflow_id,
        answer,
        claimed_at_ms: now_ms(),
        done: false,
    };
    let value = serde_json::to_string(&mine).unwrap_or_default();
    let held: Option<String> = redis::Script::new(CLAIM)
        .key(&redis_key)
        .arg(&value)
        .arg(ttl_ms)
        .invoke_async(&mut state.redis())
        .await?;
    let Some(raw) = held else {
        count("claimed");
        return Ok(Claim::Claimed(Claimed {
            key: redis_key,
            held: mine,
            value,
        }));
    };
    let theirs: Held = serde_json::from_str(&raw)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("idempotency record unreadable: {e}")))?;
    if theirs.body_sha256 != mine.body_sha256 {
        count("mismatch");
        return Err(ApiError::IdempotencyMismatch);
    }
    if theirs.done || workflow_exists(state, theirs.workflow_id).await? {
        count("replayed");
        return Ok(Claim::Replay(theirs.answer));
    }
    let lease_ms = i64::try_from(state.config.idempotency_lease_ms).unwrap_or(i64::MAX);
    if now_ms().saturating_sub(theirs.claimed_at_ms) < lease_ms {
        count("conflict");
        return Err(ApiError::IdempotencyConflict);
    }
    // Its holder died before writing, or is very late: take the key over,
    // with its workflow id and answer.
    let taken = Held {
        claimed_at_ms: now_ms(),
        ..theirs
    };
    let taken_value = serde_json::to_string(&taken).unwrap_or_default();
    let swapped: i64 = redis::Script::new(SWAP)
        .key(&redis_key)
        .arg(&raw)
        .arg(&taken_value)
        .arg(ttl_ms)
        .invoke_async(&mut state.redis())
        .await?;
    if swapped == 0 {
        // Another repeat took it over first.
        count("conflict");
        return Err(ApiError::IdempotencyConflict);
    }
    count("taken_over");
    Ok(Claim::Claimed(Claimed {
        key: redis_key,
        held: taken,
        value: taken_value,
    }))
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
