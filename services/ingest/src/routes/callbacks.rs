//! `POST /callbacks/simulator`: delivery and read receipts from the
//! provider simulator.
//!
//! A callback is believed only with a valid signature (HMAC-SHA256 of the
//! exact body with `simulator_secret`); anything else is 401 and changes
//! nothing. A believed receipt is matched to its message and published as
//! a status event (204 after the broker's confirm), or parked until the
//! sender records the provider's id (also 204: it will be applied).
//! When the broker is out the answer is 503, and the simulator retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dispatch_infra::receipts::Receipt;
use dispatch_model::envelope::{Envelope, WebhookJob, WebhookKind};
use dispatch_model::record::iso_timestamp;
use dispatch_provider_sim::wire::{self, Callback};
use serde_json::json;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The provider name under which the simulator's message ids are kept.
const PROVIDER: &str = "simulator";

/// 401 unless `body` carries the simulator's signature.
fn verify(state: &AppState, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let signature = headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !wire::verify(&state.config.simulator_secret, body, signature) {
        return Err(ApiError::Unauthorized(
            "The callback signature is missing or does not match.",
        ));
    }
    Ok(())
}

pub async fn simulator(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    verify(&state, &headers, &body)?;
    let callback: Callback = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("not a simulator callback: {e}")))?;
    let receipt = Receipt {
        provider_message_id: callback.message_id,
        status: callback.status,
        at_ms: callback.timestamp_ms,
        error: callback.error,
        usage: callback.usage,
    };
    let Some(target) = state.receipts.resolve_or_park(PROVIDER, &receipt).await? else {
        tracing::debug!(provider_id = %receipt.provider_message_id, "receipt parked until its send is recorded");
        return Ok(StatusCode::NO_CONTENT);
    };
    let event = Envelope::Status(receipt.into_event(target));
    if let Err(e) = state.broker.publish(&event).await {
        tracing::warn!(error = %e, "could not publish a receipt");
        return Err(ApiError::Unavailable("The message broker is unavailable."));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /callbacks/simulator/inbound`: a user wrote to one of our numbers
/// or ids. It goes, as an `inbound-message` webhook, to the application
/// that last wrote to that user from that address (recorded by the
/// sender); a message from a user nobody wrote to has no application and
/// is dropped (204, logged).
pub async fn simulator_inbound(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    verify(&state, &headers, &body)?;
    let inbound: wire::Inbound = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("not a simulator inbound message: {e}")))?;
    let channel = inbound.channel.as_str();
    let conversation: Option<String> = redis::AsyncCommands::get(
        &mut state.redis(),
        state.keys.conversation(channel, &inbound.to, &inbound.from),
    )
    .await?;
    let Some((account, app)) = conversation.as_deref().and_then(|c| c.split_once(' ')) else {
        tracing::info!(%channel, "inbound message from a user nobody wrote to: dropped");
        return Ok(StatusCode::NO_CONTENT);
    };
    let address = |value: &str| match inbound.channel {
        dispatch_model::Channel::Messenger => json!({"type": channel, "id": value}),
        _ => json!({"type": channel, "number": value}),
    };
    let message_uuid = Uuid::new_v4();
    let job = WebhookJob {
        webhook_id: format!("inbound:{}", inbound.message_id),
        kind: WebhookKind::InboundMessage,
        account: account.to_owned(),
        application_id: Uuid::parse_str(app).ok(),
        workflow_id: message_uuid,
        event_at_ms: inbound.timestamp_ms,
        body: json!({
            "message_uuid": message_uuid,
            "to": address(&inbound.to),
            "from": address(&inbound.from),
            "timestamp": iso_timestamp(inbound.timestamp_ms),
            "message": inbound.message,
        }),
        attempts: 0,
    };
    if let Err(e) = state.broker.publish(&Envelope::Webhook(job)).await {
        tracing::warn!(error = %e, "could not publish an inbound message");
        return Err(ApiError::Unavailable("The message broker is unavailable."));
    }
    Ok(StatusCode::NO_CONTENT)
}
