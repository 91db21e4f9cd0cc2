//! `POST /v1/messages` and `GET /v1/messages/{uuid}`: the Messages API v1,
//! on the same workflows as v0.1 (docs/api.md, "Messages API v1").
//!
//! A message without `failover` is a one-step workflow whose id is the
//! message uuid, as a v0.1 send. With `failover` it is a chain
//! ([`WorkflowKind::Failover`]): the answer's `workflow_id` is the
//! workflow's id, and each message's uuid follows from it (a UUID v5 of
//! the workflow id and the message's place), so that a repeat under the
//! same `Idempotency-Key` is answered with the same uuids.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use dispatch_model::OutboundMessage;
use dispatch_model::envelope::{Step, WorkflowKind};
use dispatch_model::v1::{V1Message, validate};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::auth::{self, Principal};
use crate::body::HashedJson;
use crate::error::{ApiError, ApiResult, V1Problem};
use crate::idempotency;
use crate::path::Path;
use crate::routes::accept::{Accepted, Work, chain_steps, field_app, keyed, step_uuid};
use crate::state::AppState;

pub async fn send(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<HashedJson<V1Message>, ApiError>,
) -> Result<Accepted, V1Problem> {
    let principal = auth::any(&state, &headers).await?;
    let key = idempotency::key_of(&headers)?;
    let HashedJson {
        value: mut request,
        sha256,
    } = body?;
    validate(&request, state.limits.max_workflow_steps).map_err(ApiError::InvalidV1)?;
    let chain = request.failover.take();
    let mut messages = vec![request];
    messages.extend(chain.into_iter().flatten());
    if let Some(version) = application_version(&state, &principal).await? {
        for m in messages.iter_mut().filter(|m| m.webhook_version.is_none()) {
            m.webhook_version = Some(version.clone());
        }
    }
    let outbound: Vec<OutboundMessage> = messages.iter().map(V1Message::to_outbound).collect();
    let is_chain = outbound.len() > 1;
    let span = tracing::info_span!(
        "accept",
        message_uuid = tracing::field::Empty,
        workflow_id = tracing::field::Empty,
        api = "v1",
        application_id = field_app(&principal)
    );
    let work = if is_chain {
        Work {
            kind: WorkflowKind::Failover,
            steps: chain_steps(outbound),
            answer: |id| json!({ "message_uuid": step_uuid(id, 0), "workflow_id": id }),
        }
    } else {
        Work {
            kind: WorkflowKind::Message,
            steps: Box::new(move |id| {
                outbound
                    .into_iter()
                    .map(|message| Step {
                        message_uuid: id,
                        message,
                    })
                    .collect()
            }),
            answer: |id| json!({ "message_uuid": id }),
        }
    };
    Ok(keyed(&state, principal, key, sha256, work)
        .instrument(span)
        .await?)
}

/// The application's `capabilities.messages.version`, the format of the
/// webhooks of messages that name none.
async fn application_version(state: &AppState, principal: &Principal) -> ApiResult<Option<String>> {
    let Some(id) = principal.application_id else {
        return Ok(None);
    };
    let app = crate::applications::load(state, &id).await?;
    Ok(app.and_then(|a| a.capabilities.messages.and_then(|m| m.version)))
}

/// `GET /v1/messages/{uuid}`: a message in the v1 shape.
pub async fn lookup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, V1Problem> {
    Ok(super::lookup::message_v1(&state, &headers, &id).await?)
}
