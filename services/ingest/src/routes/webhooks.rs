//! Dead-lettered webhooks of an application: listed with their attempts,
//! and sent again on request.
//!
//! - `GET /v1/applications/{id}/webhooks/failed`
//! - `POST /v1/applications/{id}/webhooks/failed/retry` (all of them)
//! - `POST /v1/applications/{id}/webhooks/failed/{webhook_id}/retry`
//!
//! Basic auth of the account that owns the application, as for the rest of
//! the Applications API: an application's JWT (any application's) is a
//! 401, since a token speaks for one application and these letters are the
//! account's to manage; another account's application is a 404.
//!
//! A replayed webhook starts a new retry schedule (its attempts so far stay
//! listed in its history) and leaves the list once it is queued again.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dispatch_model::envelope::{Envelope, WebhookJob};
use dispatch_model::record::iso_timestamp;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::applications::load_owned;
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

async fn dead_letters(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
) -> ApiResult<(String, Vec<WebhookJob>, String)> {
    let principal = auth::basic(state, headers).await?;
    let app = load_owned(state, &principal.account, app).await?;
    let key = state.keys.dead_letters(&app.id.to_string());
    let raw: Vec<String> = state.redis().hvals(&key).await?;
    let mut jobs: Vec<WebhookJob> = raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    jobs.sort_by_key(|j| j.event_at_ms);
    Ok((key, jobs, app.id.to_string()))
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    let (_, jobs, _) = dead_letters(&state, &headers, &app).await?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        let attempts: Vec<String> = state
            .redis()
            .lrange(state.keys.webhook_attempts(&job.webhook_id), 0, -1)
            .await?;
        let attempts: Vec<Value> = attempts
            .iter()
            .filter_map(|a| serde_json::from_str::<Value>(a).ok())
            .map(|mut a| {
                if let Some(ms) = a["at_ms"].as_i64() {
                    a["at"] = json!(iso_timestamp(ms));
                }
                a
            })
            .collect();
        items.push(json!({
            "webhook_id": job.webhook_id,
            "kind": job.kind,
            "event_at": iso_timestamp(job.event_at_ms),
            "body": job.body,
            "reason": job.reason,
            "attempts": attempts,
        }));
    }
    Ok(Json(json!({
        "count": items.len(),
        "_embedded": { "webhooks": items },
    })))
}

pub async fn retry_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (key, jobs, app) = dead_letters(&state, &headers, &app).await?;
    enable_endpoints(&state, &app).await?;
    let mut replayed = 0;
    for job in jobs {
        replay(&state, &key, job).await?;
        replayed += 1;
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": replayed }))))
}

pub async fn retry_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, webhook_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (key, jobs, app) = dead_letters(&state, &headers, &app).await?;
    let job = jobs
        .into_iter()
        .find(|j| j.webhook_id == webhook_id)
        .ok_or(ApiError::NotFound)?;
    enable_endpoints(&state, &app).await?;
    replay(&state, &key, job).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": 1 }))))
}

/// A replay is the application's word that its endpoints take webhooks
/// again: those disabled by a `410 Gone` are enabled.
pub(crate) async fn enable_endpoints(state: &AppState, app: &str) -> ApiResult<()> {
    dispatch_infra::endpoints::enable_all(&state.redis(), &state.keys, app).await?;
    Ok(())
}

/// Queues `job` again with a fresh schedule, then forgets the dead letter.
pub(crate) async fn replay(state: &AppState, key: &str, job: WebhookJob) -> ApiResult<()> {
    // Out of the list first: the replayed job may fail and be listed again
    // before this returns, and that new entry must stay.
    let stored = serde_json::to_string(&job).map_err(|e| ApiError::Internal(e.into()))?;
    let _: usize = state.redis().hdel(key, &job.webhook_id).await?;
    let fresh = WebhookJob {
        attempts: 0,
        reason: None,
        ..job
    };
    if let Err(e) = state
        .broker
        .publish(&Envelope::Webhook(fresh.clone()))
        .await
    {
        tracing::warn!(error = %e, "could not replay a webhook");
        let _: Result<usize, _> = state.redis().hset(key, &fresh.webhook_id, stored).await;
        return Err(ApiError::Unavailable("The message broker is unavailable."));
    }
    Ok(())
}
