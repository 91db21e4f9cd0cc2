//! `/healthz`: the process answers. `/readyz`: RabbitMQ and Redis are
//! reachable, so accepted work can be handed off; 503 otherwise.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let broker = state.broker.is_ready();
    let redis = dispatch_infra::redis::ping(&state.redis).await;
    let word = |up: bool| if up { "up" } else { "down" };
    let status = if broker && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
            "checks": { "rabbitmq": word(broker), "redis": word(redis) },
        })),
    )
}
