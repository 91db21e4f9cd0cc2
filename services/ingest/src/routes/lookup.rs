//! `GET /v0.1/messages/{uuid}` and `GET /v0.1/dispatch/{uuid}`: what is
//! known so far. Unknown ids, malformed ids and another account's ids are
//! all the same 404.
//!
//! A message of a dispatch is found through its index entry
//! (`message:{uuid}` → dispatch uuid); a Messages API send is its own
//! one-step workflow.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use dispatch_model::record::{Usage, WorkflowRecord, iso_timestamp};
use redis::AsyncCommands;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

async fn load(state: &AppState, account: &str, id: Uuid) -> ApiResult<WorkflowRecord> {
    let found = state
        .engine
        .store()
        .load(&id.to_string())
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    match found {
        Some(v) if v.record.workflow.account == account => Ok(v.record),
        _ => Err(ApiError::NotFound),
    }
}

pub async fn message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (record, i) = find(&state, &headers, &id).await?;
    if record.workflow.steps[i].message.v1.is_some() {
        // Sent through v1: shown as v1 shows messages.
        return Ok(Json(v1_view(&state, &record, i)));
    }
    Ok(Json(message_view(&state, &record, i)))
}

/// `GET /v1/messages/{uuid}`: any message, in the v1 shape.
pub async fn message_v1(state: &AppState, headers: &HeaderMap, id: &str) -> ApiResult<Json<Value>> {
    let (record, i) = find(state, headers, id).await?;
    Ok(Json(v1_view(state, &record, i)))
}

/// The workflow holding message `id` of the caller's account, and the
/// message's place in it.
async fn find(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<(WorkflowRecord, usize)> {
    let principal = auth::any(state, headers).await?;
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    let dispatch: Option<String> = state
        .redis()
        .get(state.keys.message(&id.to_string()))
        .await?;
    let workflow_id = match dispatch {
        Some(raw) => Uuid::parse_str(&raw).map_err(|_| ApiError::NotFound)?,
        None => id,
    };
    let record = load(state, &principal.account, workflow_id).await?;
    let i = record.step_index(id).ok_or(ApiError::NotFound)?;
    Ok((record, i))
}

pub async fn dispatch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let principal = auth::any(&state, &headers).await?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let record = load(&state, &principal.account, id).await?;
    if !record.workflow.kind.is_chain() {
        return Err(ApiError::NotFound);
    }
    let messages: Vec<Value> = (0..record.steps.len())
        .map(|i| message_view(&state, &record, i))
        .collect();
    let sent = record.steps.iter().filter(|s| s.sent_at_ms.is_some());
    let mut view = json!({
        "dispatch_uuid": id,
        "template": "failover",
        "status": record.status,
        "current_step": record.current_step,
        "timestamp": iso_timestamp(record.updated_at_ms),
        "accepted_at": iso_timestamp(record.workflow.accepted_at_ms),
        "usage": Usage::total(sent.filter_map(|s| s.usage.as_ref())),
        "messages": messages,
        "_links": { "self": { "href": format!("{}/v0.1/dispatch/{id}", state.base_url) } },
    });
    if let Some(at) = record.finished_at_ms {
        view["finished_at"] = json!(iso_timestamp(at));
    }
    Ok(Json(view))
}

/// A message as the Messages API v1 would describe it: its v1 fields
/// (`to` and `from` as strings, `channel`, `message_type`), its latest
/// status and when each arrived, `usage` and `error` as v1 webhooks carry
/// them, and for a message of a chain its `workflow`.
fn v1_view(state: &AppState, record: &WorkflowRecord, i: usize) -> Value {
    let step = &record.steps[i];
    let request = &record.workflow.steps[i].message;
    let address = |a: &Option<dispatch_model::message::Address>| {
        a.as_ref()
            .and_then(|a| a.number.clone().or_else(|| a.id.clone()))
    };
    let v1 = request.v1.as_deref();
    let message_type = v1.and_then(|m| m.message_type.clone()).or_else(|| {
        request
            .message
            .as_ref()
            .and_then(|b| b.content.as_ref())
            .and_then(|c| c.kind)
            .map(|k| k.as_str().to_owned())
    });
    let v0 = message_view(state, record, i);
    let mut view = json!({
        "message_uuid": step.message_uuid,
        "to": address(&request.to),
        "from": address(&request.from),
        "channel": step.channel.map(dispatch_model::v1::channel_name),
        "message_type": message_type,
        "status": v0["status"],
        "timestamps": v0["timestamps"],
        "_links": { "self": { "href": format!("{}/v1/messages/{}", state.base_url, step.message_uuid) } },
    });
    for field in [
        "timestamp",
        "client_ref",
        "sent_at",
        "expires_at",
        "expired_at",
    ] {
        if let Some(value) = v0.get(field) {
            view[field] = value.clone();
        }
    }
    if let Some(c) = v1.and_then(|m| m.failover_condition.as_ref()) {
        view["failover_condition"] = json!(c);
    }
    if let Some(usage) = &step.usage {
        view["usage"] = json!({ "currency": usage.currency, "price": usage.price });
    }
    if let Some(error) = &step.error {
        view["error"] = json!({
            "type": format!("{}{}", dispatch_flow::machine::V1_ERRORS, error.code),
            "title": error.code.to_string(),
            "detail": error.reason,
        });
    }
    if record.workflow.kind.is_chain() {
        view["workflow"] = json!({
            "workflow_id": record.workflow.workflow_id,
            "items_number": (i + 1).to_string(),
            "items_total": record.steps.len().to_string(),
            "status": record.status,
        });
    }
    view
}

/// One message as the lookups show it: the latest status, when each
/// status arrived, and what failed or cost what.
fn message_view(state: &AppState, record: &WorkflowRecord, i: usize) -> Value {
    let step = &record.steps[i];
    let request = &record.workflow.steps[i].message;
    let timestamps: Map<String, Value> = step
        .history
        .iter()
        .map(|c| (c.status.as_str().to_owned(), json!(iso_timestamp(c.at_ms))))
        .collect();
    let latest = step
        .history
        .iter()
        .filter(|c| c.status == step.status)
        .map(|c| c.at_ms)
        .next()
        .unwrap_or(record.workflow.accepted_at_ms);
    let mut view = json!({
        "message_uuid": step.message_uuid,
        "channel": step.channel,
        "to": request.to,
        "from": request.from,
        "status": step.status,
        "timestamp": iso_timestamp(latest),
        "timestamps": timestamps,
        "_links": { "self": { "href": format!("{}/v0.1/messages/{}", state.base_url, step.message_uuid) } },
    });
    if step.sent_at_ms.is_none() {
        // Never handed to a provider: not a message status of any API.
        view["status"] = json!("not_sent");
        if let Some(o) = view.as_object_mut() {
            o.remove("timestamp");
        }
    }
    let mut put = |key: &str, value: Value| {
        view[key] = value;
    };
    if let Some(client_ref) = &request.client_ref {
        put("client_ref", json!(client_ref));
    }
    if let Some(failover) = &request.failover {
        put("failover", json!(failover));
    }
    if let Some(at) = step.sent_at_ms {
        put("sent_at", json!(iso_timestamp(at)));
    }
    if let Some(at) = step.deadline_ms.filter(|_| step.expired_at_ms.is_none()) {
        put("expires_at", json!(iso_timestamp(at)));
    }
    if let Some(at) = step.expired_at_ms {
        put("expired_at", json!(iso_timestamp(at)));
    }
    if let Some(error) = &step.error {
        put("error", json!(error));
    }
    if let Some(usage) = &step.usage {
        put("usage", json!(usage));
    }
    if record.workflow.kind.is_chain() {
        let id = record.workflow.workflow_id;
        view["_links"]["workflow"] = json!({
            "dispatch_uuid": id,
            "href": format!("{}/v0.1/dispatch/{id}", state.base_url),
        });
    }
    view
}
