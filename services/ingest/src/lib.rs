//! The ingest service: the HTTP front door of Dispatch.
//!
//! It authenticates and validates requests to the Messages, Dispatch and
//! Applications APIs, hands accepted work to RabbitMQ with a publisher
//! confirm before answering 202, and serves the lookups, `/openapi.json`,
//! `/healthz`, `/readyz` and the web console (`/console`, [`console`]).
//!
//! [`spawn`] binds (port 0 in tests) and serves in the background; [`run`]
//! serves until the shutdown token is cancelled.

pub mod accounts;
pub mod applications;
pub mod auth;
mod body;
mod console;
pub mod error;
mod idempotency;
mod middleware;
mod path;
pub mod rate;
mod routes;
mod server;
pub mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use dispatch_infra::redis::Keys;
use dispatch_infra::{Config, Connections};
use dispatch_model::Limits;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI description of everything ingest serves.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: AppState) -> Router {
    let console = if state.config.console_enabled {
        console::router()
    } else {
        Router::new()
    };
    Router::new()
        .merge(console)
        .route(
            "/v0.1/recipients/{number}",
            axum::routing::delete(console::recipient_api),
        )
        .route("/v0.1/messages", post(routes::accept::message))
        .route("/v1/messages", post(routes::v1::send))
        .route("/v1/messages/{id}", get(routes::v1::lookup))
        .route("/v0.1/messages/{id}", get(routes::lookup::message))
        .route("/v0.1/dispatch", post(routes::accept::dispatch))
        .route("/v0.1/dispatch/{id}", get(routes::lookup::dispatch))
        .route(
            "/v2/applications",
            post(applications::create).get(applications::list),
        )
        .route(
            "/v2/applications/{id}",
            get(applications::get)
                .put(applications::update)
                .delete(applications::delete),
        )
        .route(
            "/v1/applications/{id}/webhooks/failed",
            get(routes::webhooks::list),
        )
        .route(
            "/v1/applications/{id}/webhooks/failed/retry",
            post(routes::webhooks::retry_all),
        )
        .route(
            "/v1/applications/{id}/webhooks/failed/{webhook_id}/retry",
            post(routes::webhooks::retry_one),
        )
        .route("/v0.1/providers", get(routes::providers::account_list))
        .route(
            "/v0.1/providers/{channel}",
            axum::routing::put(routes::providers::account_put)
                .delete(routes::providers::account_delete),
        )
        .route(
            "/v2/applications/{id}/providers",
            get(routes::providers::app_list),
        )
        .route(
            "/v2/applications/{id}/providers/{channel}",
            axum::routing::put(routes::providers::app_put).delete(routes::providers::app_delete),
        )
        .route("/callbacks/simulator", post(routes::callbacks::simulator))
        .route(
            "/callbacks/simulator/inbound",
            post(routes::callbacks::simulator_inbound),
        )
        .route(
            "/callbacks/{kind}/{route}",
            get(routes::callbacks::provider).post(routes::callbacks::provider),
        )
        .route(
            "/callbacks/{kind}/{route}/{hook}",
            post(routes::callbacks::provider_hook),
        )
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// A running ingest service.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Connects (lazily: a missing broker or Redis makes `/readyz` red, not
/// start-up fail), binds `config.http_addr` and serves in the background.
pub async fn spawn(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    let connections =
        Connections::open(&config, "ingest").map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
    spawn_with(config, connections, shutdown).await
}

/// [`spawn`] on connections shared with other services.
pub async fn spawn_with(
    config: Config,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let redis = connections.redis.clone();
    let broker = connections.broker.clone();
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("http_addr: cannot listen on {}: {e}", config.http_addr))?;
    let addr = listener.local_addr()?;
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{addr}"));
    }
    if config.uses_simulator() {
        tracing::warn!(
            "the provider simulator is a configured provider, or its development secret is in use: not for production"
        );
    }
    config.warn_dev_credentials_key();
    let credentials_key = dispatch_infra::crypto::CredentialsKey::parse(&config.credentials_key)
        .map_err(|e| anyhow::anyhow!("credentials_key: {e}"))?;
    let state = AppState {
        providers: Arc::new(dispatch_providers::Providers::new(Duration::from_millis(
            config.provider_timeout_ms,
        ))?),
        providers_store: dispatch_infra::providers::ProviderStore::new(
            redis.clone(),
            Keys::for_config(&config),
            credentials_key,
        ),
        secrets: Arc::new(accounts::SecretCache::new(Duration::from_secs(5))),
        rates: Arc::new(rate::Limiter::new(rate::Rate {
            per_sec: config.account_rate_per_sec,
            burst: config.account_rate_burst,
        })),
        receipts: dispatch_infra::receipts::Receipts::new(
            redis.clone(),
            Keys::for_config(&config),
            config.record_ttl_secs,
        ),
        engine: dispatch_flow::Engine::new(&config, redis.clone(), broker.clone()),
        carry_outs: Arc::new(tokio::sync::Semaphore::new(state::CARRY_OUTS_IN_FLIGHT)),
        base_url: config.public_base().into(),
        keys: Keys::for_config(&config),
        limits: Limits {
            max_workflow_steps: config.max_workflow_steps,
        },
        config: Arc::new(config),
        broker,
        redis,
    };
    let app = router(state.clone());
    let limits = server::Limits::from_config(&state.config);
    let tls = tls::acceptor(&state.config)?;
    let task = tokio::spawn(async move {
        let served = server::serve(listener, app, limits, tls, shutdown).await;
        drop(connections);
        served
    });
    tracing::info!(%addr, "ingest listening");
    Ok(Running { addr, state, task })
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let connections =
        Connections::open(&config, "ingest").map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
    run_with(config, connections, shutdown).await
}

/// [`run`] on connections shared with other services.
pub async fn run_with(
    config: Config,
    connections: Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let running = spawn_with(config, connections, shutdown).await?;
    if !running
        .state
        .broker
        .wait_ready(Duration::from_secs(5))
        .await
    {
        tracing::warn!("RabbitMQ is not reachable yet; answering 503 until it is");
    }
    running.task.await??;
    Ok(())
}
