//! `/healthz`: the process answers. `/readyz`: RabbitMQ and Redis are
//! reachable, so accepted work can be handed off; 503 otherwise. The same
//! answers as every service's admin port.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use crate::state::AppState;

pub use dispatch_infra::admin::healthz;

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    dispatch_infra::admin::readiness(&state.broker, &state.redis).await
}
