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
use crate::body::HashedJson;
use crate::error::{ApiError, ApiResult};
use crate::idempotency::{self, Claim};
use crate::state::AppState;

pub async fn message(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<HashedJson<OutboundMessage>, ApiError>,
) -> ApiResult<Accepted> {
    let principal = auth::any(&state, &headers).await?;
    let key = idempotency::key_of(&headers)?;
    let HashedJson {
        value: mut message,
        sha256,
    } = body?;
    // `failover` belongs to dispatch workflows; here it is an unknown
    // field, as `v1` (ours, for v1 messages) is in any v0.1 request.
    message.failover = None;
    message.v1 = None;
    validate_message(&message).map_err(ApiError::Invalid)?;
    let span = tracing::info_span!(
        "accept",
        message_uuid = tracing::field::Empty,
        application_id = field_app(&principal)
    );
    let work = Work {
        kind: WorkflowKind::Message,
        // A Messages API send is one step whose uuid is the workflow's.
        steps: Box::new(move |id| {
            vec![Step {
                message_uuid: id,
                message,
            }]
        }),
        answer: |id| json!({ "message_uuid": id }),
    };
    keyed(&state, principal, key, sha256, work)
        .instrument(span)
        .await
}

pub async fn dispatch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<HashedJson<CreateWorkflow>, ApiError>,
) -> ApiResult<Accepted> {
    let principal = auth::any(&state, &headers).await?;
    let key = idempotency::key_of(&headers)?;
    let HashedJson {
        value: workflow,
        sha256,
    } = body?;
    validate_workflow(&workflow, &state.limits).map_err(ApiError::Invalid)?;
    let mut messages = workflow.workflow.unwrap_or_default();
    for message in &mut messages {
        message.v1 = None;
    }
    let span = tracing::info_span!(
        "accept",
        dispatch_uuid = tracing::field::Empty,
        application_id = field_app(&principal)
    );
    let work = Work {
        kind: WorkflowKind::Dispatch,
        steps: chain_steps(messages),
        answer: |id| json!({ "dispatch_uuid": id }),
    };
    keyed(&state, principal, key, sha256, work)
        .instrument(span)
        .await
}

/// The uuid of message `i` (0 for the first) of workflow `workflow`: a
/// UUID v5 of the workflow's, so that the messages of a workflow whose
/// `Idempotency-Key` is taken over keep their uuids.
pub fn step_uuid(workflow: Uuid, i: usize) -> Uuid {
    Uuid::new_v5(&workflow, i.to_string().as_bytes())
}

/// The steps of a chain of `messages`, their uuids following from the
/// workflow's ([`step_uuid`]).
pub fn chain_steps(messages: Vec<OutboundMessage>) -> Box<dyn FnOnce(Uuid) -> Vec<Step> + Send> {
    Box::new(move |id| {
        messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| Step {
                message_uuid: step_uuid(id, i),
                message,
            })
            .collect()
    })
}

/// A 202 and its body; `Idempotent-Replayed: true` on the answer of an
/// earlier request with the same `Idempotency-Key`.
pub type Accepted = (StatusCode, HeaderMap, Json<Value>);

/// Accepted work, before it has its workflow id.
pub struct Work {
    pub kind: WorkflowKind,
    /// The steps of workflow `id`.
    pub steps: Box<dyn FnOnce(Uuid) -> Vec<Step> + Send>,
    /// The 202's body for workflow `id`: what it names (step uuids too)
    /// follows from `id` alone, so that a repeat can be answered alike.
    pub answer: fn(Uuid) -> Value,
}

/// Accepts `work` under the request's `Idempotency-Key`, if it has one
/// (see [`crate::idempotency`]).
pub async fn keyed(
    state: &AppState,
    principal: Principal,
    key: Option<String>,
    body_sha256: String,
    work: Work,
) -> ApiResult<Accepted> {
    let id = Uuid::new_v4();
    let Some(key) = key else {
        record_id(work.kind, id);
        accept(state, principal, work.kind, id, (work.steps)(id))
            .await
            .map_err(|r| r.error)?;
        return Ok(accepted((work.answer)(id), false));
    };
    let answer = (work.answer)(id);
    let claim =
        idempotency::claim(state, &principal.account, &key, body_sha256, id, answer).await?;
    let claimed = match claim {
        Claim::Replay(answer) => return Ok(accepted(answer, true)),
        Claim::Claimed(claimed) => claimed,
    };
    // Taken over from a holder that died before writing, the key keeps
    // its workflow id.
    let id = claimed.workflow_id();
    record_id(work.kind, id);
    let steps = (work.steps)(id);
    match accept(state, principal, work.kind, id, steps).await {
        Ok(()) => {
            let answer = claimed.answer().clone();
            claimed.answered(state).await;
            Ok(accepted(answer, false))
        }
        Err(refusal) => {
            // Kept when the work may run after all: a repeat finds it, or
            // takes the key over once its lease is over.
            if !refusal.maybe_written {
                claimed.release(state).await;
            }
            Err(refusal.error)
        }
    }
}

fn record_id(kind: WorkflowKind, id: Uuid) {
    let field = match kind {
        WorkflowKind::Message => "message_uuid",
        WorkflowKind::Dispatch => "dispatch_uuid",
        WorkflowKind::Failover => "workflow_id",
    };
    tracing::Span::current().record(field, tracing::field::display(id));
}

fn accepted(answer: Value, replayed: bool) -> Accepted {
    let mut headers = HeaderMap::new();
    if replayed {
        headers.insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    (StatusCode::ACCEPTED, headers, Json(answer))
}

pub fn field_app(principal: &Principal) -> String {
    principal
        .application_id
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// Why work was not accepted, and whether it may run nonetheless (its
/// write had an unknown outcome and could not be abandoned).
struct Refusal {
    error: ApiError,
    maybe_written: bool,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            maybe_written: false,
        }
    }
}

async fn accept(
    state: &AppState,
    principal: Principal,
    kind: WorkflowKind,
    id: Uuid,
    steps: Vec<Step>,
) -> Result<(), Refusal> {
    let accepted = WorkflowAccepted {
        workflow_id: id,
        kind,
        account: principal.account,
        application_id: principal.application_id,
        accepted_at_ms: now_ms(),
        steps,
        trace_id: dispatch_infra::telemetry::current_traceparent()
            .and_then(|t| t.split('-').nth(1).map(str::to_owned)),
    };
    let indexes = dispatch_infra::store::message_indexes(&state.keys, &accepted);
    if !state.broker.is_ready() {
        // Known to be down: refuse rather than pile work up in Redis for
        // the recovery. (Lost mid-request, it is the recovery's.)
        return Err(ApiError::Unavailable("The message broker is unavailable.").into());
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
            let maybe_written = if e.outcome_unknown() {
                match abandon(state, &id).await {
                    // Written after all, and already under way.
                    Some(Fate::Claimed) => return Ok(()),
                    Some(Fate::Abandoned) => false,
                    None => true,
                }
            } else {
                false
            };
            Err(Refusal {
                error: ApiError::Unavailable("The store is unavailable."),
                maybe_written,
            })
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
