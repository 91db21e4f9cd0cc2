//! The Applications API v2: `/v2/applications` create, list (paged), get,
//! update and delete, with Basic authentication.
//!
//! An application holds a name, the `messages` capability's webhooks
//! (`inbound_url`, `status_url`) and an RSA public key that verifies the
//! application's JWTs. Created without a key, the server makes an RSA-2048
//! pair and returns the private key once; only the public key is stored.
//! Other capabilities (`voice`, `rtc`, `vbc`) are kept as given, so
//! clients that send them round-trip unchanged, but have no effect here.
//!
//! `PUT` replaces `name`; it replaces `keys.public_key` and `capabilities`
//! when given and keeps them when absent.
//!
//! The stored record is [`ApplicationRecord`], which the notifier reads
//! too; responses show it without its owner.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use dispatch_model::InvalidParam;
use dispatch_model::application::{
    ApplicationRecord, Capabilities, MessagesCapability, MessagesWebhooks, Webhook,
};
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

pub const NAME_MAX_CHARS: usize = 255;
pub const WEBHOOK_URL_MAX_CHARS: usize = 2000;
pub const PAGE_SIZE_DEFAULT: u64 = 10;
pub const PAGE_SIZE_MAX: u64 = 100;

/// The request body of create and update, before validation.
#[derive(Debug, Default, Deserialize)]
pub struct ApplicationBody {
    name: Option<String>,
    keys: Option<KeysBody>,
    capabilities: Option<CapabilitiesBody>,
}

#[derive(Debug, Default, Deserialize)]
struct KeysBody {
    public_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct CapabilitiesBody {
    messages: Option<MessagesBody>,
    voice: Option<Map<String, Value>>,
    rtc: Option<Map<String, Value>>,
    vbc: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
struct MessagesBody {
    /// The format of the webhooks of v1 sends: `v0.1` or `v1`.
    version: Option<String>,
    webhooks: Option<WebhooksBody>,
}

#[derive(Debug, Default, Deserialize)]
struct WebhooksBody {
    inbound_url: Option<WebhookBody>,
    status_url: Option<WebhookBody>,
    final_report_url: Option<WebhookBody>,
}

#[derive(Debug, Default, Deserialize)]
struct WebhookBody {
    address: Option<String>,
    http_method: Option<String>,
}

struct Validated {
    name: String,
    public_key: Option<String>,
    capabilities: Option<Capabilities>,
}

fn validate(body: ApplicationBody) -> Result<Validated, Vec<InvalidParam>> {
    let mut errs = Vec::new();
    let name = match body.name {
        Some(n) if !n.trim().is_empty() && n.chars().count() <= NAME_MAX_CHARS => n,
        Some(_) => {
            errs.push(InvalidParam::new(
                "name",
                format!("must be 1 to {NAME_MAX_CHARS} characters"),
            ));
            String::new()
        }
        None => {
            errs.push(InvalidParam::new("name", "is required"));
            String::new()
        }
    };
    let public_key = body.keys.and_then(|k| k.public_key);
    if let Some(pem) = &public_key
        && jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_err()
    {
        errs.push(InvalidParam::new(
            "keys.public_key",
            "must be an RSA public key in PEM form",
        ));
    }
    let capabilities = body.capabilities.map(|c| {
        let webhooks = c.messages.map(|m| {
            let version = m.version.filter(|v| {
                let ok = matches!(v.as_str(), "v0.1" | "v1");
                if !ok {
                    errs.push(InvalidParam::new(
                        "capabilities.messages.version",
                        "must be `v0.1` or `v1`",
                    ));
                }
                ok
            });
            let w = m.webhooks.unwrap_or_default();
            (
                version,
                MessagesWebhooks {
                    inbound_url: w.inbound_url.and_then(|h| {
                        webhook(h, "capabilities.messages.webhooks.inbound_url", &mut errs)
                    }),
                    status_url: w.status_url.and_then(|h| {
                        webhook(h, "capabilities.messages.webhooks.status_url", &mut errs)
                    }),
                    final_report_url: w.final_report_url.and_then(|h| {
                        webhook(
                            h,
                            "capabilities.messages.webhooks.final_report_url",
                            &mut errs,
                        )
                    }),
                },
            )
        });
        Capabilities {
            messages: webhooks.map(|(version, webhooks)| MessagesCapability { version, webhooks }),
            voice: c.voice,
            rtc: c.rtc,
            vbc: c.vbc,
        }
    });
    if errs.is_empty() {
        Ok(Validated {
            name,
            public_key,
            capabilities,
        })
    } else {
        Err(errs)
    }
}

fn webhook(h: WebhookBody, path: &str, errs: &mut Vec<InvalidParam>) -> Option<Webhook> {
    let method = h.http_method.unwrap_or_else(|| "POST".to_owned());
    if method != "POST" {
        errs.push(InvalidParam::new(
            format!("{path}.http_method"),
            "must be one of: POST",
        ));
    }
    let Some(address) = h.address else {
        errs.push(InvalidParam::new(format!("{path}.address"), "is required"));
        return None;
    };
    let ok = address.chars().count() <= WEBHOOK_URL_MAX_CHARS
        && url::Url::parse(&address)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        errs.push(InvalidParam::new(
            format!("{path}.address"),
            format!("must be an absolute http or https URL of at most {WEBHOOK_URL_MAX_CHARS} characters"),
        ));
        return None;
    }
    Some(Webhook {
        address,
        http_method: method,
    })
}

/// An application in responses: the stored record without its owner.
fn view(state: &AppState, app: &ApplicationRecord, private_key: Option<String>) -> Value {
    let mut keys = json!({ "public_key": app.public_key });
    if let Some(private_key) = private_key {
        keys["private_key"] = Value::String(private_key);
    }
    json!({
        "id": app.id,
        "name": app.name,
        "capabilities": app.capabilities,
        "keys": keys,
        "_links": { "self": { "href": format!("{}/v2/applications/{}", state.base_url, app.id) } },
    })
}

fn as_app_error(e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid(p) => ApiError::InvalidApplication(p),
        ApiError::Throttled { retry_after_secs } => {
            ApiError::ApplicationThrottled { retry_after_secs }
        }
        other => other,
    }
}

/// Loads an application by id, whoever owns it.
pub async fn load(state: &AppState, id: &Uuid) -> ApiResult<Option<ApplicationRecord>> {
    let mut conn = state.redis();
    let raw: Option<String> = conn.get(state.keys.application(&id.to_string())).await?;
    raw.map(|r| serde_json::from_str(&r))
        .transpose()
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Loads an application of `account`; another account's is "not found".
pub(crate) async fn load_owned(
    state: &AppState,
    account: &str,
    id: &str,
) -> ApiResult<ApplicationRecord> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    match load(state, &id).await? {
        Some(app) if app.account == account => Ok(app),
        _ => Err(ApiError::NotFound),
    }
}

async fn store(state: &AppState, app: &ApplicationRecord, index: bool) -> ApiResult<()> {
    let mut conn = state.redis();
    let json = serde_json::to_string(app).map_err(|e| ApiError::Internal(e.into()))?;
    // The record, then the account's index of it (another slot of a
    // cluster): a crash in between leaves an application reachable by id
    // but not listed, never a listed one that is not there.
    let mut pipe = redis::pipe();
    pipe.set(state.keys.application(&app.id.to_string()), json)
        .ignore();
    if index {
        pipe.zadd(
            state.keys.account_applications(&app.account),
            app.id.to_string(),
            app.created_at_ms,
        )
        .ignore();
    }
    pipe.exec_async(&mut conn)
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}

/// An RSA-2048 key pair as (public SPKI PEM, private PKCS#8 PEM).
pub fn generate_key_pair() -> anyhow::Result<(String, String)> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
    let private: Pkcs8V1Der<'static> = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("PKCS#8 encoding failed"))?;
    let public: PublicKeyX509Der<'static> = pair
        .public_key()
        .as_der()
        .map_err(|_| anyhow::anyhow!("SPKI encoding failed"))?;
    Ok((
        pem("PUBLIC KEY", public.as_ref()),
        pem("PRIVATE KEY", private.as_ref()),
    ))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<ApplicationBody>, ApiError>,
) -> ApiResult<Response> {
    let principal = auth::basic(&state, &headers).await.map_err(as_app_error)?;
    let JsonBody(body) = body.map_err(as_app_error)?;
    let valid = validate(body).map_err(ApiError::InvalidApplication)?;
    let (public_key, private_key) = match valid.public_key {
        Some(key) => (key, None),
        None => {
            let (public, private) = tokio::task::spawn_blocking(generate_key_pair)
                .await
                .map_err(|e| ApiError::Internal(e.into()))??;
            (public, Some(private))
        }
    };
    let app = ApplicationRecord {
        id: Uuid::new_v4(),
        account: principal.account,
        name: valid.name,
        capabilities: valid.capabilities.unwrap_or_default(),
        public_key,
        created_at_ms: dispatch_model::record::now_ms(),
    };
    store(&state, &app, true).await?;
    tracing::info!(application_id = %app.id, "application created");
    Ok((StatusCode::OK, Json(view(&state, &app, private_key))).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let principal = auth::basic(&state, &headers).await.map_err(as_app_error)?;
    let app = load_owned(&state, &principal.account, &id).await?;
    Ok(Json(view(&state, &app, None)))
}

pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<JsonBody<ApplicationBody>, ApiError>,
) -> ApiResult<Json<Value>> {
    let principal = auth::basic(&state, &headers).await.map_err(as_app_error)?;
    let mut app = load_owned(&state, &principal.account, &id).await?;
    let JsonBody(body) = body.map_err(as_app_error)?;
    let valid = validate(body).map_err(ApiError::InvalidApplication)?;
    app.name = valid.name;
    if let Some(key) = valid.public_key {
        app.public_key = key;
    }
    let webhooks_set = valid.capabilities.is_some();
    if let Some(capabilities) = valid.capabilities {
        app.capabilities = capabilities;
    }
    store(&state, &app, false).await?;
    if webhooks_set {
        // Webhook URLs set again: endpoints disabled by a 410 get another
        // chance.
        dispatch_infra::endpoints::enable_all(&state.redis(), &state.keys, &app.id.to_string())
            .await?;
    }
    Ok(Json(view(&state, &app, None)))
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let principal = auth::basic(&state, &headers).await.map_err(as_app_error)?;
    let app = load_owned(&state, &principal.account, &id).await?;
    let mut conn = state.redis();
    // The record first: it stops working at once; the listing skips an
    // id whose record is gone.
    redis::pipe()
        .del(state.keys.application(&app.id.to_string()))
        .ignore()
        .zrem(
            state.keys.account_applications(&app.account),
            app.id.to_string(),
        )
        .ignore()
        .exec_async(&mut conn)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `page_size` (1–100, default 10) and `page` (from 1, default 1).
fn paging(query: Option<&str>) -> Result<(u64, u64), Vec<InvalidParam>> {
    let mut page_size = PAGE_SIZE_DEFAULT;
    let mut page = 1;
    let mut errs = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "page_size" => match value.parse::<u64>() {
                Ok(n) if (1..=PAGE_SIZE_MAX).contains(&n) => page_size = n,
                _ => errs.push(InvalidParam::new(
                    "page_size",
                    format!("must be between 1 and {PAGE_SIZE_MAX}"),
                )),
            },
            "page" => match value.parse::<u64>() {
                Ok(n) if n >= 1 => page = n,
                _ => errs.push(InvalidParam::new("page", "must be a whole number from 1")),
            },
            _ => {}
        }
    }
    if errs.is_empty() {
        Ok((page_size, page))
    } else {
        Err(errs)
    }
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let principal = auth::basic(&state, &headers).await.map_err(as_app_error)?;
    let (page_size, page) = paging(query.as_deref()).map_err(ApiError::InvalidListParams)?;
    let index = state.keys.account_applications(&principal.account);
    let mut conn = state.redis();
    let total: u64 = conn.zcard(&index).await?;
    let start = (page - 1).saturating_mul(page_size);
    let mut apps = Vec::new();
    if start < total {
        let stop = start + page_size - 1;
        let ids: Vec<String> = conn.zrange(&index, start as isize, stop as isize).await?;
        if !ids.is_empty() {
            let keys: Vec<String> = ids.iter().map(|id| state.keys.application(id)).collect();
            let raws: Vec<Option<String>> = conn.mget(&keys).await?;
            for raw in raws.into_iter().flatten() {
                let app: ApplicationRecord =
                    serde_json::from_str(&raw).map_err(|e| ApiError::Internal(e.into()))?;
                apps.push(view(&state, &app, None));
            }
        }
    }
    Ok(Json(json!({
        "page_size": page_size,
        "page": page,
        "total_items": total,
        "total_pages": total.div_ceil(page_size),
        "_embedded": { "applications": apps },
        "_links": { "self": { "href": format!("{}/v2/applications?page_size={page_size}&page={page}", state.base_url) } },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_rules() {
        assert_eq!(paging(None), Ok((10, 1)));
        assert_eq!(paging(Some("page_size=100&page=3")), Ok((100, 3)));
        for bad in [
            "page_size=0",
            "page_size=101",
            "page_size=x",
            "page=0",
            "page=-1",
        ] {
            assert!(paging(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_keys_verify_tokens() {
        let (public, private) = generate_key_pair().expect("keys");
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &json!({"iat": 1}),
            &jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).expect("private"),
        )
        .expect("sign");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).expect("public"),
            &v,
        )
        .expect("verify");
    }
}
