//! The admin port every service process serves: `/healthz` (the process
//! answers), `/readyz` (RabbitMQ and Redis reachable, so work can flow;
//! 503 otherwise) and `/metrics` (Prometheus text). Ingest answers the
//! first two on its API port too; metrics stay off the public port.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Connections;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when RabbitMQ and Redis are reachable, 503 naming what is not.
pub async fn readiness(
    broker: &crate::broker::Broker,
    redis: &crate::redis::Redis,
) -> (StatusCode, Json<Value>) {
    let broker = broker.is_ready();
    let redis = crate::redis::ping(redis).await;
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

/// The process's metrics in the Prometheus text format.
pub async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::metrics_handle().render(),
    )
}

pub fn router(connections: Connections) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/readyz",
            get(move || {
                let connections = connections.clone();
                async move { readiness(&connections.broker, &connections.redis).await }
            }),
        )
}

/// Serves the admin endpoints on `addr` (port 0: any) until `shutdown`;
/// returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin_addr: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(connections);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    tracing::info!(addr = %bound, "admin endpoints listening");
    Ok((bound, task))
}
