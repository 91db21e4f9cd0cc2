//! The path-parameter extractor: axum's `Path`, with its rejections in the
//! API's error format (never axum's plain-text ones).
//!
//! Every path parameter of this API names something (an id, a channel, a
//! provider route), so a parameter that cannot be read (not UTF-8 once
//! percent-decoded, or not of the expected type) names nothing: the same
//! 404 as an unknown id. A route whose parameters do not fit its handler
//! is our bug, logged and answered 500.

use axum::extract::FromRequestParts;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    #[allow(clippy::disallowed_types)] // the one place that wraps it
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(rejection: PathRejection) -> ApiError {
    let internal = |why: String| ApiError::Internal(anyhow::anyhow!("path parameters: {why}"));
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
            kind @ (ErrorKind::WrongNumberOfParameters { .. }
            | ErrorKind::UnsupportedType { .. }) => internal(kind.to_string()),
            _ => ApiError::NotFound,
        },
        other => internal(other.body_text()),
    }
}
