//! The web console under `/console`: pages rendered on the server (maud),
//! for the person on call to find a message, read its workflow's
//! timeline, replay dead webhooks and watch the figures of the last hour.
//!
//! - **One more router of ingest**, merged in when `console_enabled`; it
//!   reads what the workers write where it arises ([`dispatch_infra::activity`]),
//!   so a page costs a few Redis reads and no broker traffic (the operator
//!   view's queue depths aside).
//! - **No script is needed.** Every page is a plain page with plain forms;
//!   the vendored htmx (`/console/assets/htmx.min.js`, 0BSD) only
//!   refreshes the figures of the overview and of the operator view in
//!   place. With scripts off, those pages reload themselves (`<noscript>`
//!   refresh).
//! - **Strict headers on every response** ([`secure`]): a
//!   Content-Security-Policy that allows only our own scripts, styles and
//!   images (no inline ones, so the SVG is styled by classes), no framing,
//!   no referrer, no caching.
//! - **Sessions and CSRF**: [`session`]. An account sees only its own
//!   workflows, counters, applications and dead letters: every lookup
//!   checks the record's account, and a workflow of another account is the
//!   same "not found" as one that does not exist.
//! - **Bad input** (a malformed id, a page number out of range, a search
//!   term too long) is a 4xx page that says what is wrong; maud escapes
//!   everything it renders.

mod charts;
mod erase;
mod pages;
mod session;
mod timeline;

pub use erase::recipient_api;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use maud::{DOCTYPE, Markup, html};

use crate::state::AppState;

/// The console's routes, all under `/console`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/live", get(pages::live))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/search", get(pages::search))
        .route("/console/workflows/{id}", get(pages::workflow))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route(
            "/console/dead-letters/replay",
            get(pages::replay_confirm).post(pages::replay),
        )
        .route("/console/applications", get(pages::applications))
        .route("/console/erase", get(erase::confirm).post(erase::erase))
        .route(
            "/console/operator",
            get(pages::operator).post(pages::operator_login),
        )
        .route("/console/assets/{name}", get(asset))
        .route("/console/{*rest}", any(|| async { Page::NotFound }))
        // Before the layer, so that a 405 is a page with its headers too
        // (the API's JSON one is set only where none is).
        .method_not_allowed_fallback(|| async { Page::MethodNotAllowed })
        .layer(axum::middleware::from_fn(secure))
}

/// The Content-Security-Policy of every console response: our own
/// scripts, styles and images only, nothing inline, no framing, forms
/// posted only to us.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Puts the security headers on every console response.
async fn secure(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

const HTMX: &str = include_str!("../../assets/htmx.min.js");
const CSS: &str = include_str!("../../assets/console.css");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// The console's static files, cached for an hour (they change only
/// with a release).
async fn asset(Segment(name): Segment) -> Response {
    let (body, kind) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return Page::NotFound.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page that could not be shown, as a page that says why. Never a 500:
/// what fails on our side is Redis or the broker, a 503.
#[derive(Debug)]
pub enum Page {
    BadRequest(String),
    NotFound,
    /// A form whose CSRF token is not its session's.
    Forbidden,
    Throttled,
    MethodNotAllowed,
    Unavailable,
}

impl Page {
    /// Redis or the broker failed: logged, shown as a 503.
    pub fn unavailable(e: impl std::fmt::Display) -> Page {
        tracing::warn!(error = %e, "console: a store did not answer");
        Page::Unavailable
    }

    pub fn bad(why: impl Into<String>) -> Page {
        Page::BadRequest(why.into())
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            Page::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", why),
            Page::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "Nothing of yours is here. It may never have existed, belong to another account, or have expired.".into(),
            ),
            Page::Forbidden => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form is out of date or was not sent from the console. Go back, reload the page and try again.".into(),
            ),
            Page::Throttled => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins",
                "Too many sign-in attempts. Wait a minute and try again.".into(),
            ),
            Page::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "This page does not take that kind of request.".into(),
            ),
            Page::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Redis or the message broker did not answer. Try again shortly.".into(),
            ),
        };
        let body = layout(
            title,
            None,
            html! {
                h1 { (title) }
                p.notice { (text) }
                p { a href="/console" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}

/// Who the page is for, for its navigation: the account (or operator)
/// and the session's CSRF token, for the sign-out form.
pub struct Nav<'a> {
    pub who: &'a str,
    pub csrf: &'a str,
    pub operator: bool,
}

/// A whole page: head, navigation, `body`.
pub fn layout(title: &str, nav: Option<&Nav<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx may not evaluate script or inject its own styles:
                // the CSP forbids both.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · Dispatch console" }
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/htmx.min.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "Dispatch" }
                    @if let Some(nav) = nav {
                        nav {
                            @if nav.operator {
                                a href="/console/operator" { "Operator" }
                            } @else {
                                a href="/console" { "Overview" }
                                a href="/console/dead-letters" { "Dead letters" }
                                a href="/console/applications" { "Applications" }
                                a href="/console/erase" { "Erase a recipient" }
                                form.inline-search action="/console/search" method="get" role="search" {
                                    input type="search" name="q" placeholder="uuid, number or client_ref" aria-label="Search";
                                    button type="submit" { "Search" }
                                }
                            }
                        }
                        form.signout action="/console/logout" method="post" {
                            span.who { (nav.who) }
                            input type="hidden" name="csrf" value=(nav.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The one path parameter of a console route; one that cannot be read
/// (not UTF-8 once percent-decoded) names nothing: the 404 page.
pub struct Segment(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = Page;

    #[allow(clippy::disallowed_types)] // wrapped for its rejection, as crate::path
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Page> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| Segment(s))
            .map_err(|_| Page::NotFound)
    }
}

/// The fields of a posted form (`application/x-www-form-urlencoded`);
/// a body that is not one is a 400 page.
pub struct Form(pub std::collections::HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Page;

    async fn from_request(request: Request, state: &S) -> Result<Self, Page> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|_| Page::bad("The form could not be read."))?;
        if body.len() > 16 * 1024 {
            return Err(Page::bad("The form is too large."));
        }
        Ok(Form(fields(&body)))
    }
}

/// The fields of a query string or form body; of a repeated name, the
/// first.
pub fn fields(raw: &[u8]) -> std::collections::HashMap<String, String> {
    let mut found = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        found
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    found
}

/// A time as the console shows it: UTC, to the millisecond.
pub fn at(ms: i64) -> String {
    dispatch_model::record::iso_timestamp(ms)
}

/// The time of day of `ms` (UTC, to the millisecond), for tables whose
/// date is said once above them.
pub fn clock(ms: i64) -> String {
    let t = at(ms);
    t.get(11..23).map(str::to_owned).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_the_time_of_day() {
        assert_eq!(clock(1_700_000_000_123), "22:13:20.123");
    }

    #[test]
    fn fields_take_the_first_of_a_name_and_decode() {
        let f = fields(b"q=%2B44+7700&q=other&page=2");
        assert_eq!(f["q"], "+44 7700");
        assert_eq!(f["page"], "2");
    }

    #[test]
    fn error_pages_escape_what_they_echo() {
        let page = layout("x", None, html! { p { ("<script>alert(1)</script>") } });
        let s = page.into_string();
        assert!(!s.contains("<script>alert"));
        assert!(s.contains("&lt;script&gt;"));
    }
}
