//! `POST /v0.1/messages` and `POST /v0.1/dispatch`.
//!
//! Ingest applies the workflow's first transition itself: one script in
//! Redis writes the record with its first send in the outbox, schedules
//! the step's deadline, indexes the messages and arms the outbox's
//! recovery. A request is answered 202 exactly when that write succeeded:
//! ingest then publishes the send command (with a confirm) and marks the
//! outbox done, and if it cannot (RabbitMQ down, or this process dies),
//! the recovery publishes it `outbox_recovery_ms` later.
//! When the write fails the answer is 503; if it may have happened after
//! all (the connection dropped mid-script), ingest first abandons it,
//! removing the record unless something moved it on, so 503 means
//! nothing will be sent (docs/architecture.md, "202 and 503").

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dispatch_infra::store::Fate;
use dispatch_model::envelope::{Step, WorkflowAccepted, WorkflowKind};
use dispatch_model::record::now_ms;
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
    // A dispatch's messages are found by their own uuid too.
    let indexes: Vec<(String, String)> = match kind {
        WorkflowKind::Dispatch => accepted
            .steps
            .iter()
            .map(|s| {
                (
                    state.keys.message(&s.message_uuid.to_string()),
                    id.to_string(),
                )
            })
            .collect(),
        WorkflowKind::Message => Vec::new(),
    };
    if !state.broker.is_ready() {
        // Known to be down: refuse rather than pile work up in Redis for
        // the recovery. (Lost mid-request, it is the recovery's.)
        return Err(ApiError::Unavailable("The message broker is unavailable."));
    }
    match state.engine.start(accepted, &indexes).await {
        Ok(applied) => {
            // Durable from here: the record holds the first send, and the
            // recovery publishes it if this process goes no further.
            dispatch_infra::failpoint::hit("ingest-after-write", &id);
            if let Some(outbox) = applied.outbox() {
                // After the answer: it adds nothing to what 202 promises,
                // only to its latency. Bounded, so a slow broker slows
                // the answers down rather than piling up tasks.
                let permit = state.carry_outs.clone().acquire_owned().await;
                let engine = state.engine.clone();
                let span = tracing::Span::current();
                tokio::spawn(
                    async move {
                        engine.carry_out(outbox).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not write the workflow");
            if e.outcome_unknown() && abandon(state, &id).await == Some(Fate::Claimed) {
                // Written after all, and already under way.
                return Ok(());
            }
            Err(ApiError::Unavailable("The store is unavailable."))
        }
    }
}

/// Makes sure work whose write outcome is unknown never runs: removes the
/// record if it was written and nothing moved it on since; `None` when
/// Redis cannot say (then it may run despite the 503).
async fn abandon(state: &AppState, id: &Uuid) -> Option<Fate> {
    match state.engine.store().abandon(&id.to_string()).await {
        Ok(fate) => Some(fate),
        Err(e) => {
            tracing::error!(error = %e, workflow_id = %id, "could not abandon work; it may still be sent");
            None
        }
    }
}
