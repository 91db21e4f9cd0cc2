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
use dispatch_model::envelope::Envelope;
use dispatch_provider_sim::wire::{self, Callback};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The provider name under which the simulator's message ids are kept.
const PROVIDER: &str = "simulator";

pub async fn simulator(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let signature = headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !wire::verify(&state.config.simulator_secret, &body, signature) {
        return Err(ApiError::Unauthorized(
            "The callback signature is missing or does not match.",
        ));
    }
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
