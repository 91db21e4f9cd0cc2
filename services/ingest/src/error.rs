//! The one error type of the HTTP API, rendered in the specs' error format:
//! `type`, `title`, `detail`, `instance` and, for validation failures,
//! `invalid_parameters` naming each bad field.
//!
//! `instance` is the request id, also sent as `X-Request-Id` and logged, so
//! a client's error report leads straight to the log lines. Internal errors
//! are logged with their cause and answered without it.
//!
//! The `type` URIs are those of the API we implement, so that clients that
//! match on them keep working.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_model::InvalidParam;
use serde::Serialize;

const MESSAGES_ERRORS: &str = "https://www.nexmo.com/messages/Errors";
const APPLICATION_ERRORS: &str = "https://developer.nexmo.com/api-errors/application";

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id, or a fresh one outside a request.
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().simple().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid parameters")]
    Invalid(Vec<InvalidParam>),
    /// A Messages API v1 body that breaks its reference's rules.
    #[error("invalid v1 message")]
    InvalidV1(dispatch_model::v1::V1Invalid),
    /// Applications API payload validation (its own `type`).
    #[error("invalid application payload")]
    InvalidApplication(Vec<InvalidParam>),
    /// Applications API list parameters.
    #[error("invalid list parameters")]
    InvalidListParams(Vec<InvalidParam>),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing body")]
    MissingBody,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request timeout")]
    RequestTimeout,
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Over the account's request rate (Messages, Dispatch, lookups).
    #[error("throttled")]
    Throttled { retry_after_secs: u64 },
    /// Over the account's request rate, on the Applications API (its own
    /// `type`).
    #[error("rate limited")]
    ApplicationThrottled { retry_after_secs: u64 },
    /// A malformed `Idempotency-Key` header.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(&'static str),
    /// A request with the same `Idempotency-Key` is still being answered.
    #[error("idempotency key in use")]
    IdempotencyConflict,
    /// The `Idempotency-Key` was used with another body.
    #[error("idempotency key reused with another body")]
    IdempotencyMismatch,
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub detail: String,
    pub instance: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_parameters: Vec<InvalidParam>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_)
            | ApiError::InvalidApplication(_)
            | ApiError::InvalidListParams(_)
            | ApiError::MalformedJson(_)
            | ApiError::MissingBody
            | ApiError::InvalidIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyConflict => StatusCode::CONFLICT,
            ApiError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidV1(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Throttled { .. } | ApiError::ApplicationThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn problem(self) -> Problem {
        let m = |anchor: &str| format!("{MESSAGES_ERRORS}#{anchor}");
        let (kind, title, detail, params) = match self {
            ApiError::Invalid(p) => (
                m("InvalidParams"),
                "Invalid Parameters",
                "Your request parameters did not validate.".to_owned(),
                p,
            ),
            ApiError::InvalidV1(v) => (
                format!("{V1_ERRORS}{}", v.error.code()),
                v.error.title(),
                v.error.detail().to_owned(),
                v.params,
            ),
            ApiError::InvalidApplication(p) => (
                format!("{APPLICATION_ERRORS}#payload-validation"),
                "Bad Request",
                "The request failed due to validation errors".to_owned(),
                p,
            ),
            ApiError::InvalidListParams(p) => (
                format!("{APPLICATION_ERRORS}#list-validation"),
                "Bad Request",
                "The request failed due to validation errors".to_owned(),
                p,
            ),
            ApiError::MalformedJson(e) => (
                m("InvalidJson"),
                "Malformed JSON",
                format!("The request body is not valid JSON: {e}"),
                vec![],
            ),
            ApiError::MissingBody => (
                m("InvalidJson"),
                "Missing Body",
                "The request needs a JSON body.".to_owned(),
                vec![],
            ),
            ApiError::UnsupportedMediaType => (
                m("UnsupportedMediaType"),
                "Unsupported Media Type",
                "Send the body as `Content-Type: application/json`.".to_owned(),
                vec![],
            ),
            ApiError::PayloadTooLarge { limit } => (
                m("PayloadTooLarge"),
                "Payload Too Large",
                format!("The request body is larger than {limit} bytes."),
                vec![],
            ),
            ApiError::RequestTimeout => (
                m("RequestTimeout"),
                "Request Timeout",
                "The request body did not arrive in time.".to_owned(),
                vec![],
            ),
            ApiError::Unauthorized(why) => {
                (m("Unauthorized"), "Unauthorized", why.to_owned(), vec![])
            }
            ApiError::Forbidden(why) => (m("Forbidden"), "Forbidden", why.to_owned(), vec![]),
            ApiError::NotFound => (
                m("NotFound"),
                "Not Found",
                "No such resource for this account.".to_owned(),
                vec![],
            ),
            ApiError::MethodNotAllowed => (
                m("MethodNotAllowed"),
                "Method Not Allowed",
                "This resource does not support that method.".to_owned(),
                vec![],
            ),
            // The Messages API's error 1000.
            ApiError::Throttled { .. } => (
                m("Throttled"),
                "Throttled",
                "You have exceeded the submission capacity allowed on this account. \
                 Please wait and retry."
                    .to_owned(),
                vec![],
            ),
            ApiError::ApplicationThrottled { .. } => (
                format!("{APPLICATION_ERRORS}#rate-limit"),
                "Too Many Requests",
                "The request was rate limited. Reduce the frequency of your requests.".to_owned(),
                vec![],
            ),
            ApiError::InvalidIdempotencyKey(why) => (
                m("InvalidParams"),
                "Invalid Parameters",
                "Your request parameters did not validate.".to_owned(),
                vec![InvalidParam::new("Idempotency-Key", why)],
            ),
            ApiError::IdempotencyConflict => (
                m("IdempotencyKeyInUse"),
                "Conflict",
                "A request with this Idempotency-Key is still being processed; \
                 retry once it has been answered."
                    .to_owned(),
                vec![],
            ),
            ApiError::IdempotencyMismatch => (
                m("IdempotencyKeyReused"),
                "Unprocessable Content",
                "This Idempotency-Key was used with a different request body; \
                 use a new key for a new request."
                    .to_owned(),
                vec![],
            ),
            ApiError::Unavailable(why) => (
                m("ServiceUnavailable"),
                "Service Unavailable",
                format!("{why} Nothing was accepted; retry later."),
                vec![],
            ),
            ApiError::Internal(_) => (
                m("InternalError"),
                "Internal Error",
                "Something went wrong on our side.".to_owned(),
                vec![],
            ),
        };
        Problem {
            kind,
            title: title.to_owned(),
            detail,
            instance: request_id(),
            invalid_parameters: params,
        }
    }
}

/// Where the Messages API v1 reference's errors point.
const V1_ERRORS: &str = "https://developer.vonage.com/api-errors/messages#";
const V1_GENERAL_ERRORS: &str = "https://developer.vonage.com/api-errors#";

/// An error of `POST /v1/messages`, rendered as the v1 reference renders
/// it: its `type` URLs, and 422 for a body that is not JSON or not of
/// the right shape, as the hosted v1 answers.
pub struct V1Problem(pub ApiError);

impl From<ApiError> for V1Problem {
    fn from(e: ApiError) -> Self {
        V1Problem(e)
    }
}

impl IntoResponse for V1Problem {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match &e {
            ApiError::Invalid(_) | ApiError::MalformedJson(_) | ApiError::MissingBody => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            other => other.status(),
        };
        let v1 = match &e {
            ApiError::Invalid(_) => Some((
                format!("{V1_ERRORS}1150"),
                "Invalid params",
                "The value of one or more parameters is invalid.",
            )),
            ApiError::MalformedJson(_) | ApiError::MissingBody => Some((
                format!("{V1_GENERAL_ERRORS}invalid-json"),
                "The request body did not contain valid JSON",
                "",
            )),
            ApiError::Unauthorized(_) => Some((
                format!("{V1_GENERAL_ERRORS}unauthorized"),
                "You did not provide correct credentials.",
                "",
            )),
            ApiError::Throttled { .. } => Some((
                format!("{V1_ERRORS}1000"),
                "Rate Limit Hit",
                "Please wait, then retry your request",
            )),
            _ => None,
        };
        e.respond_as(status, |problem| {
            if let Some((kind, title, detail)) = v1 {
                problem.kind = kind;
                problem.title = title.to_owned();
                if !detail.is_empty() {
                    problem.detail = detail.to_owned();
                }
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond()
    }
}

impl ApiError {
    fn respond(self) -> Response {
        let status = self.status();
        self.respond_as(status, |_| {})
    }

    /// The answer with `status`, its problem changed by `edit` first.
    fn respond_as(self, status: StatusCode, edit: impl FnOnce(&mut Problem)) -> Response {
        let retry_after = match &self {
            ApiError::Throttled { retry_after_secs }
            | ApiError::ApplicationThrottled { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "answered 503");
        }
        let mut problem = self.problem();
        edit(&mut problem);
        let mut response = (status, axum::Json(problem)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // What is left of the body would be read as the next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dispatch\", Bearer"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Redis failing is the data store being unreachable: a 503 the client may
/// retry, not a 500.
impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis command failed");
        ApiError::Unavailable("The data store is unreachable.")
    }
}
