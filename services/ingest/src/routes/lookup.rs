//! `GET /v0.1/messages/{uuid}` and `GET /v0.1/dispatch/{uuid}`: what is
//! known so far. Unknown ids, malformed ids and another account's ids are
//! all the same 404.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use dispatch_model::envelope::WorkflowKind;
use dispatch_model::record::{MessageStatus, WorkflowRecord, iso_timestamp};
use redis::AsyncCommands;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

async fn load(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    kind: WorkflowKind,
) -> ApiResult<WorkflowRecord> {
    let principal = auth::any(state, headers).await?;
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    let mut conn = state.redis();
    let raw: Option<String> = conn
        .get(state.keys.workflow(&id.to_string()))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let record: WorkflowRecord = match raw {
        Some(raw) => serde_json::from_str(&raw).map_err(|e| ApiError::Internal(e.into()))?,
        None => return Err(ApiError::NotFound),
    };
    if record.workflow.account != principal.account || record.workflow.kind != kind {
        return Err(ApiError::NotFound);
    }
    Ok(record)
}

pub async fn message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = load(&state, &headers, &id, WorkflowKind::Message).await?;
    let step = record.workflow.steps.first().ok_or(ApiError::NotFound)?;
    let m = &step.message;
    let mut view = json!({
        "message_uuid": step.message_uuid,
        "channel": m.channel(),
        "to": m.to,
        "from": m.from,
        "status": MessageStatus::Accepted,
        "timestamp": iso_timestamp(record.updated_at_ms),
        "_links": { "self": { "href": format!("{}/v0.1/messages/{}", state.base_url, step.message_uuid) } },
    });
    if let Some(client_ref) = &m.client_ref {
        view["client_ref"] = json!(client_ref);
    }
    Ok(Json(view))
}

pub async fn dispatch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = load(&state, &headers, &id, WorkflowKind::Dispatch).await?;
    let w = &record.workflow;
    let messages: Vec<Value> = w
        .steps
        .iter()
        .map(|s| {
            let mut step = json!({
                "message_uuid": s.message_uuid,
                "channel": s.message.channel(),
                "to": s.message.to,
                "from": s.message.from,
            });
            if let Some(f) = &s.message.failover {
                step["failover"] = json!(f);
            }
            step
        })
        .collect();
    Ok(Json(json!({
        "dispatch_uuid": w.workflow_id,
        "template": "failover",
        "status": record.status,
        "timestamp": iso_timestamp(record.updated_at_ms),
        "accepted_at": iso_timestamp(w.accepted_at_ms),
        "current_step": Value::Null,
        "messages": messages,
        "_links": { "self": { "href": format!("{}/v0.1/dispatch/{}", state.base_url, w.workflow_id) } },
    })))
}
