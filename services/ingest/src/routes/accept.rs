//! `POST /v0.1/messages` and `POST /v0.1/dispatch`.
//!
//! A request is answered 202 only after RabbitMQ confirmed the envelope.
//! When the publish fails the client gets 503; if the broker might still
//! hold the envelope (a lost or late confirm), ingest first settles the
//! request's fate as abandoned, so the workflow service drops it: 503
//! means nothing will be sent. If the workflow service claimed it first,
//! the work is under way and the answer is 202 after all. The lookup record is written after the confirm, only if absent,
//! so it never overwrites state the workflow service already wrote.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dispatch_infra::store::Fate;
use dispatch_model::envelope::{Envelope, Step, WorkflowAccepted, WorkflowKind};
use dispatch_model::record::{WorkflowRecord, now_ms};
use dispatch_model::validate::{validate_message, validate_workflow};
use dispatch_model::{CreateWorkflow, OutboundMessage};
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::{self, Principal};
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub async fn message(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<OutboundMessage>, ApiError>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let principal = auth::any(&state, &headers).await?;
    let JsonBody(mut message) = body?;
    // `failover` belongs to dispatch workflows; here it is an unknown field.
    message.failover = None;
    validate_message(&message).map_err(ApiError::Invalid)?;
    let id = Uuid::new_v4();
    let steps = vec![Step {
        message_uuid: id,
        message,
    }];
    let span =
        tracing::info_span!("accept", message_uuid = %id, application_id = field_app(&principal));
    accept(&state, principal, WorkflowKind::Message, id, steps)
        .instrument(span)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "message_uuid": id }))))
}

pub async fn dispatch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<CreateWorkflow>, ApiError>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let principal = auth::any(&state, &headers).await?;
    let JsonBody(workflow) = body?;
    validate_workflow(&workflow, &state.limits).map_err(ApiError::Invalid)?;
    let id = Uuid::new_v4();
    let steps = workflow
        .workflow
        .unwrap_or_default()
        .into_iter()
        .map(|message| Step {
            message_uuid: Uuid::new_v4(),
            message,
        })
        .collect();
    let span =
        tracing::info_span!("accept", dispatch_uuid = %id, application_id = field_app(&principal));
    accept(&state, principal, WorkflowKind::Dispatch, id, steps)
        .instrument(span)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "dispatch_uuid": id }))))
}

fn field_app(principal: &Principal) -> String {
    principal
        .application_id
        .map(|id| id.to_string())
        .unwrap_or_default()
}

async fn accept(
    state: &AppState,
    principal: Principal,
    kind: WorkflowKind,
    id: Uuid,
    steps: Vec<Step>,
) -> ApiResult<()> {
    let accepted = WorkflowAccepted {
        workflow_id: id,
        kind,
        account: principal.account,
        application_id: principal.application_id,
        accepted_at_ms: now_ms(),
        steps,
    };
    let envelope = Envelope::WorkflowAccepted(accepted.clone());
    if let Err(e) = state.broker.publish(&envelope).await {
        tracing::warn!(error = %e, "publish failed");
        if e.outcome_unknown() && abandon(state, &id).await == Some(Fate::Claimed) {
            // The broker had it after all, and the work has started.
            return Ok(());
        }
        return Err(ApiError::Unavailable("The message broker is unavailable."));
    }
    write_record(state, accepted).await;
    Ok(())
}

/// Tries to make sure work whose publish outcome is unknown never runs;
/// `None` when Redis cannot say (then it may run despite the 503).
async fn abandon(state: &AppState, id: &Uuid) -> Option<Fate> {
    match state
        .store
        .settle_fate(&id.to_string(), Fate::Abandoned)
        .await
    {
        Ok(fate) => Some(fate),
        Err(e) => {
            tracing::error!(error = %e, workflow_id = %id, "could not abandon work; it may still be sent");
            None
        }
    }
}

async fn write_record(state: &AppState, workflow: WorkflowAccepted) {
    let id = workflow.workflow_id.to_string();
    // A dispatch's messages are found by their own uuid too.
    let indexes: Vec<(String, String)> = match workflow.kind {
        WorkflowKind::Dispatch => workflow
            .steps
            .iter()
            .map(|s| (state.keys.message(&s.message_uuid.to_string()), id.clone()))
            .collect(),
        WorkflowKind::Message => Vec::new(),
    };
    // Only if absent: the workflow service may have picked the work up
    // already, and its state is newer. Either way the work is durably
    // queued; at worst the lookup lags until the workflow service writes.
    let record = WorkflowRecord::new(workflow);
    if let Err(e) = state.store.create(&id, &record, &indexes).await {
        tracing::warn!(error = %e, workflow_id = %id, "could not write the lookup record");
    }
}
