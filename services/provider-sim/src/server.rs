//! The HTTP side: the send endpoint, the control API and `/healthz`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use dispatch_model::record::now_ms;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::behaviour::Behaviour;
use crate::control::{Control, Decision};
use crate::receipts::{Plan, Receipts};
use crate::wire::{ErrorBody, ProviderError, SEND_PATH, SendAccepted, SendRequest};

#[derive(Clone)]
pub(crate) struct App {
    pub control: Control,
    pub receipts: Receipts,
    pub secret: Arc<str>,
    /// Where inbound messages go unless the request names a URL.
    pub inbound_url: Arc<str>,
    /// The fakes of real providers' APIs.
    pub fakes: Arc<crate::fakes::Fakes>,
}

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(SEND_PATH, post(send))
        .route(
            "/control/recipients/{to}",
            put(set_recipient).delete(clear_recipient),
        )
        .route("/control/sends", get(list_sends).delete(clear_sends))
        .route("/control/requests", get(list_requests))
        .route("/control/inbound", post(inbound))
        .route("/healthz", get(healthz))
        .merge(crate::fakes::routes())
        .with_state(app)
}

fn error(status: StatusCode, error: ProviderError) -> Response {
    (status, Json(ErrorBody::from(error))).into_response()
}

fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    token.as_bytes().ct_eq(secret.as_bytes()).into()
}

async fn send(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &app.secret) {
        return error(StatusCode::UNAUTHORIZED, ProviderError::unauthorized());
    }
    let req: SendRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return error(StatusCode::BAD_REQUEST, ProviderError::invalid(e)),
    };
    if let Some(url) = &req.status_callback {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    ProviderError::invalid("status_callback must be an http(s) URL"),
                );
            }
        }
    }

    match app.control.decide(&req, now_ms()) {
        Decision::Unavailable { retry_after_secs } => {
            tracing::debug!(reference = %req.reference, to = %req.to, "send: 503");
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                ProviderError::unavailable(),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Decision::Reject(e) => {
            tracing::debug!(reference = %req.reference, to = %req.to, code = e.code, "send: rejected");
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Decision::Accept {
            message_id,
            behaviour,
        } => {
            tracing::debug!(reference = %req.reference, to = %req.to, %message_id, "send: accepted");
            // Provider latency; receipts follow the answer.
            if let Some(ms) = behaviour.response_delay_ms {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            if let Some(url) = req.status_callback.clone() {
                let format = app.receipts.simulator_format();
                app.receipts.schedule(Plan {
                    traceparent: headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    ..Plan::new(url, message_id.clone(), req, behaviour, format)
                });
            }
            (StatusCode::ACCEPTED, Json(SendAccepted { message_id })).into_response()
        }
    }
}

async fn set_recipient(State(app): State<App>, Path(to): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<Behaviour>(&body) {
        Ok(behaviour) => {
            app.control.set(&to, behaviour);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, ProviderError::invalid(e)),
    }
}

async fn clear_recipient(State(app): State<App>, Path(to): Path<String>) -> StatusCode {
    app.control.clear(&to);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct SendsQuery {
    to: Option<String>,
}

async fn list_sends(State(app): State<App>, Query(q): Query<SendsQuery>) -> Response {
    let sends = match q.to {
        Some(to) => app.control.sends_to(&to),
        None => app.control.sends(),
    };
    Json(sends).into_response()
}

async fn list_requests(State(app): State<App>) -> Response {
    Json(app.control.requests()).into_response()
}

async fn clear_sends(State(app): State<App>) -> StatusCode {
    app.control.clear_sends();
    StatusCode::NO_CONTENT
}

/// Makes a user write to us: the inbound message is posted (signed, with
/// retries) before the answer, 204 when it was taken, 502 when not. Needs
/// the bearer secret.
async fn inbound(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    // It makes the simulator sign and post on demand: only for those who
    // hold its secret, like sends.
    if !authorized(&headers, &app.secret) {
        return error(StatusCode::UNAUTHORIZED, ProviderError::unauthorized());
    }
    let request: crate::wire::InboundRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, ProviderError::invalid(e)),
    };
    if let Some(provider) = &request.provider {
        let Some(fake) = app.fakes.get(provider) else {
            return error(
                StatusCode::BAD_REQUEST,
                ProviderError::invalid("provider must be vonage, twilio or meta"),
            );
        };
        if request.callback_url.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                ProviderError::invalid("callback_url is required with provider"),
            );
        }
        let message_id = uuid::Uuid::new_v4().simple().to_string();
        let Some(post) = fake.inbound(&request, &message_id, now_ms()) else {
            return error(
                StatusCode::BAD_REQUEST,
                ProviderError::invalid("this fake cannot send that inbound message"),
            );
        };
        return if app.receipts.deliver(post).await {
            StatusCode::NO_CONTENT.into_response()
        } else {
            StatusCode::BAD_GATEWAY.into_response()
        };
    }
    let message = crate::wire::Inbound {
        message_id: format!("sim-in-{}", uuid::Uuid::new_v4()),
        channel: request.channel,
        from: request.from,
        to: request.to,
        timestamp_ms: dispatch_model::record::now_ms(),
        message: request.message,
    };
    let url = request
        .callback_url
        .unwrap_or_else(|| app.inbound_url.to_string());
    if app.receipts.post(&url, &message).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::BAD_GATEWAY.into_response()
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
