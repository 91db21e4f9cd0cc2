//! Per-request context: a request id (`X-Request-Id`, and the `instance`
//! of error bodies), and a span that continues the caller's trace when a
//! `traceparent` header is present.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::REQUEST_ID;

pub async fn request_context(request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "http.request",
        http.method = %request.method(),
        http.route = %route,
        request_id = %id,
        http.status = tracing::field::Empty,
    );
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| {
            let v = request.headers().get(*k)?.to_str().ok()?;
            Some(((*k).to_owned(), v.to_owned()))
        })
        .collect();
    if !carrier.is_empty() {
        dispatch_infra::telemetry::set_parent_from(&span, &carrier);
    }
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    span.record("http.status", response.status().as_u16());
    metrics::histogram!(
        "dispatch_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The method as a label: the standard ones by name, anything else as
/// `other`, so that clients cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
