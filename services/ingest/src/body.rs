//! The JSON body extractor: every way a body can be wrong becomes an
//! [`ApiError`] in the API's format (never axum's plain-text rejections).
//!
//! Order of checks: a body declared as something other than JSON is 415; a
//! body over the limit is 413 (from `Content-Length` before reading, or
//! while reading a chunked body); a body that does not arrive within
//! `http_body_timeout_ms` is 408; an empty body is 400; a body without a
//! content type is 415; then syntax (a key twice in one object is a 400
//! naming it), then shape.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use dispatch_model::validate::{JsonError, parse_json};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::BodyTimeout;
use crate::state::AppState;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// A JSON body with the SHA-256 (hex) of the request's path and the
/// body's bytes, which tells two requests under one `Idempotency-Key`
/// apart (the same body sent to another endpoint is another request).
pub struct HashedJson<T> {
    pub value: T,
    pub sha256: String,
}

impl<T: DeserializeOwned> FromRequest<AppState> for HashedJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let path = req.uri().path().to_owned();
        let bytes = json_bytes(req, state).await?;
        let hashed = [path.as_bytes(), b"\n", &bytes].concat();
        Ok(HashedJson {
            value: parse(&bytes)?,
            sha256: crate::accounts::sha256_hex(hashed),
        })
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match parse_json(bytes) {
        Ok(value) => Ok(value),
        Err(JsonError::Malformed(e)) => Err(ApiError::MalformedJson(e)),
        Err(JsonError::Invalid(p)) => Err(ApiError::Invalid(vec![p])),
    }
}

/// The bytes of a JSON body, after every check but its syntax.
async fn json_bytes(req: Request, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    {
        let limit = state.config.max_body_bytes;
        let headers = req.headers();
        let declared_len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if content_type.as_deref().is_some_and(|ct| !is_json(ct)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        if declared_len.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes = read_limited(req.into_body(), limit).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::MissingBody);
        }
        if content_type.is_none() {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(bytes)
    }
}

/// A body read whole, whatever its type (provider callbacks come
/// form-encoded or as JSON, and are read by their adapters), up to
/// [`RAW_BODY_LIMIT`]; a body too large, late or broken is an [`ApiError`]
/// like any other.
pub struct RawBody(pub axum::body::Bytes);

/// The most a provider callback may carry (axum's default limit).
pub const RAW_BODY_LIMIT: usize = 2 * 1024 * 1024;

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, ApiError> {
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_len.is_some_and(|n| n > RAW_BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge {
                limit: RAW_BODY_LIMIT,
            });
        }
        Ok(RawBody(
            read_limited(req.into_body(), RAW_BODY_LIMIT).await?,
        ))
    }
}

/// `application/json`, with parameters, or any `+json` type.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::PayloadTooLarge { limit })
            } else if caused_by::<BodyTimeout>(&e) {
                Err(ApiError::RequestTimeout)
            } else {
                // The client went away or sent a broken chunked body.
                Err(ApiError::MalformedJson("the body could not be read".into()))
            }
        }
    }
}

fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<T>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(super::is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ] {
            assert!(!super::is_json(bad), "{bad}");
        }
    }
}
