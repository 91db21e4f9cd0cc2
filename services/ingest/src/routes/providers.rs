//! Which provider serves each channel of an account or application, and
//! with which credentials (an extension of ours; docs/providers.md).
//!
//! - `GET /v0.1/providers`, `PUT|DELETE /v0.1/providers/{channel}`: the
//!   account's.
//! - `GET /v2/applications/{id}/providers`,
//!   `PUT|DELETE /v2/applications/{id}/providers/{channel}`: one of its
//!   applications', which win over the account's.
//!
//! Basic auth with the account's key and secret. Credentials are stored
//! encrypted and never answered: a record shows the names of its
//! credentials, and the `callback_url` to give the provider.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::providers::{Owner, Redacted};
use dispatch_model::{Channel, InvalidParam};
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::applications::load_owned;
use crate::auth;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

/// The body of a `PUT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    pub kind: ProviderKind,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
}

async fn owner(state: &AppState, headers: &HeaderMap, app: Option<&str>) -> ApiResult<Owner> {
    let principal = auth::basic(state, headers).await?;
    let application_id = match app {
        Some(id) => Some(load_owned(state, &principal.account, id).await?.id),
        None => None,
    };
    Ok(Owner {
        account: principal.account,
        application_id,
    })
}

fn channel(name: &str) -> ApiResult<Channel> {
    Channel::parse(name).ok_or(ApiError::NotFound)
}

async fn list(state: &AppState, owner: Owner) -> ApiResult<Json<Vec<Redacted>>> {
    let base = state.config.callback_base();
    let all = state
        .providers_store
        .list(&owner.scope())
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(
        all.iter()
            .map(|(c, s)| Redacted::new(*c, s, &base))
            .collect(),
    ))
}

async fn put(
    state: &AppState,
    owner: Owner,
    channel: Channel,
    body: ProviderBody,
) -> ApiResult<Json<Redacted>> {
    let settings = ProviderSettings {
        kind: body.kind,
        url: body.url,
        secret: body.secret,
        credentials: body.credentials,
        templates: body.templates,
        route: String::new(),
    };
    // What can be checked now: the scheme and a literal address. A name
    // is checked by the sender on what it resolves to when it sends.
    if !settings.url.is_empty()
        && let Err(why) = dispatch_infra::guard::check_url(
            &settings.url,
            state.config.allow_private_provider_urls,
        )
    {
        return Err(ApiError::Invalid(vec![InvalidParam::new(
            "url",
            format!("must be an http(s) URL of a public address: {why}"),
        )]));
    }
    if let Err(why) = state.providers.get(settings.kind).check(channel, &settings) {
        return Err(ApiError::Invalid(vec![InvalidParam::new(
            "credentials",
            why,
        )]));
    }
    let stored = state
        .providers_store
        .put(&owner, channel, settings)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    tracing::info!(%channel, provider = stored.kind.as_str(), application_id = ?owner.application_id, "provider settings stored");
    Ok(Json(Redacted::new(
        channel,
        &stored,
        &state.config.callback_base(),
    )))
}

async fn delete(state: &AppState, owner: Owner, channel: Channel) -> ApiResult<Response> {
    let removed = state
        .providers_store
        .delete(&owner, channel)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound)
    }
}

pub async fn account_list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<Redacted>>> {
    let owner = owner(&state, &headers, None).await?;
    list(&state, owner).await
}

pub async fn account_put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<JsonBody<ProviderBody>, ApiError>,
) -> ApiResult<Json<Redacted>> {
    let owner = owner(&state, &headers, None).await?;
    let channel = channel(&name)?;
    let JsonBody(body) = body?;
    put(&state, owner, channel, body).await
}

pub async fn account_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let owner = owner(&state, &headers, None).await?;
    delete(&state, owner, channel(&name)?).await
}

pub async fn app_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Redacted>>> {
    let owner = owner(&state, &headers, Some(&id)).await?;
    list(&state, owner).await
}

pub async fn app_put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Result<JsonBody<ProviderBody>, ApiError>,
) -> ApiResult<Json<Redacted>> {
    let owner = owner(&state, &headers, Some(&id)).await?;
    let channel = channel(&name)?;
    let JsonBody(body) = body?;
    put(&state, owner, channel, body).await
}

pub async fn app_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = owner(&state, &headers, Some(&id)).await?;
    delete(&state, owner, channel(&name)?).await
}
