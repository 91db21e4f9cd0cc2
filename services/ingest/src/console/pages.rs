//! The console's pages. Each handler reads what it shows, checks that it
//! is the signed-in account's, and renders it; the drawing of charts and
//! timelines is in [`super::charts`] and [`super::timeline`], the pure
//! parts of what is shown here ([`failover_reason`], [`Overview`]) are
//! tested below.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use dispatch_infra::activity;
use dispatch_model::application::ApplicationRecord;
use dispatch_model::envelope::WebhookJob;
use dispatch_model::record::{MessageStatus, Usage, WorkflowRecord, WorkflowStatus, now_ms};
use maud::{Markup, html};
use uuid::Uuid;

use super::charts::{self, Series};
use super::session::{self, Account, Session};
use super::{Form, Nav, Page, Segment, at, clock, fields, layout};
use crate::state::AppState;

/// Workflows per page of search results.
pub const PAGE_SIZE: usize = 20;
/// The highest page number asked for that is answered.
pub const PAGE_MAX: usize = 10_000;
/// The longest search term.
const QUERY_MAX_CHARS: usize = 200;
/// Minutes the overview shows.
const MINUTES: i64 = 60;
/// Applications listed on one page.
const APPS_MAX: isize = 200;
/// Dead letters listed per application.
const LETTERS_SHOWN: usize = 200;

// ---------------------------------------------------------------- sign-in

pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session::current(&state, &headers).await {
        Ok(Some(s)) if s.account.is_some() => return Redirect::to("/console").into_response(),
        Err(page) => return page.into_response(),
        _ => {}
    }
    sign_in_page(&state, &headers, StatusCode::OK, None)
}

fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (csrf, set) = session::form_token(state, headers);
    let body = layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p.muted { "With your account's API key and secret." }
            @if let Some(error) = error { p.notice.error role="alert" { (error) } }
            form.stacked action="/console/login" method="post" {
                input type="hidden" name="csrf" value=(csrf);
                label { "API key" input name="api_key" autocomplete="username" required; }
                label { "API secret" input type="password" name="api_secret" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            p.muted { a href="/console/operator" { "Operator sign-in" } }
        },
    );
    with_form_cookie(status, body, set)
}

/// A sign-in form's page, with the cookie of its CSRF token when new.
fn with_form_cookie(status: StatusCode, body: Markup, set: Option<HeaderValue>) -> Response {
    let mut response = (status, body).into_response();
    if let Some(set) = set {
        response.headers_mut().append(header::SET_COOKIE, set);
    }
    response
}

fn address(extensions: &Extensions) -> String {
    session::client_address(extensions.get::<ConnectInfo<SocketAddr>>())
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    form: Form,
) -> Result<Response, Page> {
    if !session::form_token_ok(&headers, form.get("csrf")) {
        return Err(Page::Forbidden);
    }
    let (key, secret) = (form.get("api_key").trim(), form.get("api_secret"));
    if key.is_empty() || key.len() > 64 || secret.is_empty() || secret.len() > 256 {
        return Ok(sign_in_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            Some("Give the API key and the API secret."),
        ));
    }
    // Counted before the secret is checked: a wrong guess costs the same
    // as a right one.
    let (by_address, by_account) = (
        format!("addr:{}", address(&extensions)),
        format!("account:{key}"),
    );
    let by_address = session::admit_sign_in(&state, &by_address).await?;
    let by_account = session::admit_sign_in(&state, &by_account).await?;
    if !by_address || !by_account {
        return Err(Page::Throttled);
    }
    let ok = state
        .secrets
        .verify(&mut state.redis(), &state.keys, key, secret)
        .await
        .map_err(Page::unavailable)?;
    if !ok {
        return Ok(sign_in_page(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That API key and secret do not match an account."),
        ));
    }
    signed_in(
        &state,
        Session {
            account: Some(key.to_owned()),
            operator: false,
            csrf: session::token(),
            created_at_ms: now_ms(),
        },
        "/console",
    )
    .await
}

/// A new session's cookie, the sign-in form's cookie gone, and on to
/// `next`.
async fn signed_in(state: &AppState, s: Session, next: &str) -> Result<Response, Page> {
    let cookie = session::start(state, &s).await?;
    let mut response = Redirect::to(next).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookie);
    headers.append(
        header::SET_COOKIE,
        session::set_cookie(state, session::FORM_COOKIE, "", 0),
    );
    Ok(response)
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, Page> {
    if let Some(s) = session::current(&state, &headers).await?
        && !session::same(&s.csrf, form.get("csrf"))
    {
        return Err(Page::Forbidden);
    }
    let cookie = session::end(&state, &headers).await?;
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

// ---------------------------------------------------------------- overview

/// The overview's figures: an account's counters of the last hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub workflows: Vec<Series>,
    pub webhooks: Vec<Series>,
    /// Failovers of the hour by reason, in a fixed order.
    pub reasons: Vec<(String, i64)>,
    /// Failovers of the hour by the channel failed over from.
    pub channels: Vec<(String, i64)>,
    /// Delivered webhooks per attempt that got an answer or failed, in
    /// percent; `None` when there was none.
    pub webhook_success: Option<f64>,
    pub dead_letters: i64,
}

impl Overview {
    /// From the per-minute counters, oldest first.
    pub fn of(minutes: &[HashMap<String, i64>]) -> Overview {
        let series = |name, class, field: &str| Series {
            name,
            class,
            values: minutes
                .iter()
                .map(|m| m.get(field).copied().unwrap_or(0))
                .collect(),
        };
        let sum = |field: &str| -> i64 { minutes.iter().filter_map(|m| m.get(field)).sum() };
        let reasons = ["deadline", "rejected", "undeliverable"]
            .iter()
            .map(|r| ((*r).to_owned(), sum(&format!("failover:{r}"))))
            .collect();
        let mut channels: Vec<(String, i64)> = Vec::new();
        for m in minutes {
            for (field, n) in m {
                if let Some(channel) = field.strip_prefix("failover-from:") {
                    match channels.iter_mut().find(|(c, _)| c == channel) {
                        Some((_, total)) => *total += n,
                        None => channels.push((channel.to_owned(), *n)),
                    }
                }
            }
        }
        channels.sort();
        let (delivered, failed) = (sum("webhook:delivered"), sum("webhook:failed"));
        Overview {
            workflows: vec![
                series("accepted", "accepted", "accepted"),
                series("completed", "completed", "completed"),
                series("error", "error", "error"),
            ],
            webhooks: vec![
                series("delivered", "delivered", "webhook:delivered"),
                series("failed attempts", "failed", "webhook:failed"),
                series("dead-lettered", "dead", "webhook:dead"),
            ],
            reasons,
            channels,
            webhook_success: (delivered + failed > 0)
                .then(|| delivered as f64 * 100.0 / (delivered + failed) as f64),
            dead_letters: sum("webhook:dead"),
        }
    }
}

pub async fn overview(State(state): State<AppState>, account: Account) -> Result<Markup, Page> {
    let live = live_part(&state, &account).await?;
    Ok(layout(
        "Overview",
        Some(&account.nav()),
        html! {
            noscript { meta http-equiv="refresh" content="30"; }
            h1 { "Overview" }
            p.muted { "The last hour of account " span.mono { (account.api_key) } ", refreshed every 5 seconds." }
            (live)
        },
    ))
}

/// The overview's figures alone, which the overview fetches every 5 s.
pub async fn live(State(state): State<AppState>, account: Account) -> Result<Markup, Page> {
    live_part(&state, &account).await
}

async fn live_part(state: &AppState, account: &Account) -> Result<Markup, Page> {
    let now = now_ms();
    let minutes = activity::window(&state.redis, &state.keys, &account.api_key, MINUTES, now)
        .await
        .map_err(Page::unavailable)?;
    let o = Overview::of(&minutes);
    let key = state.keys.search(&account.api_key, "all", "");
    let ttl = state.config.record_ttl_secs;
    let (ids, total) = activity::page(&state.redis, &state.keys, ttl, &key, 0, 10, now)
        .await
        .map_err(Page::unavailable)?;
    let recent = records(state, &account.api_key, &ids).await?;
    Ok(html! {
        div #live hx-get="/console/live" hx-trigger="every 5s" hx-swap="outerHTML" {
            div.charts {
                (charts::lines("Workflows per minute", &o.workflows))
                (charts::lines("Webhooks per minute", &o.webhooks))
                (charts::bar_chart("Failovers by reason", "reason", &o.reasons))
                @if o.channels.is_empty() {
                    figure.chart { figcaption { "Failovers by channel" } p.muted { "No failovers in the last hour." } }
                } @else {
                    (charts::bar_chart("Failovers by channel failed over from", "channel", &o.channels))
                }
                figure.chart {
                    figcaption { "Webhooks" }
                    p { "Success rate: " span.figure-big #webhook-success {
                        @match o.webhook_success { Some(p) => (format!("{p:.1} %")), None => "–" }
                    } }
                    p { "Dead-lettered: " span.figure-big #dead-letters { (o.dead_letters) } " "
                        a href="/console/dead-letters" { "see them" } }
                }
            }
            p.muted { "Queue depths are global, in the operator view." }
            h2 { "Recent workflows " span.muted { "(" (total) " kept)" } }
            (workflow_table(&recent))
        }
    })
}

// ---------------------------------------------------------------- search

pub async fn search(
    State(state): State<AppState>,
    account: Account,
    RawQuery(query): RawQuery,
) -> Result<Response, Page> {
    let query = fields(query.unwrap_or_default().as_bytes());
    let q = query.get("q").map_or("", |q| q.trim());
    let page = match query.get("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(p)) if (1..=PAGE_MAX).contains(&p) => p,
        Some(_) => {
            return Err(Page::bad(format!(
                "The page must be a whole number from 1 to {PAGE_MAX}."
            )));
        }
    };
    if q.chars().count() > QUERY_MAX_CHARS {
        return Err(Page::bad(format!(
            "A search term has at most {QUERY_MAX_CHARS} characters."
        )));
    }
    let nav = account.nav();
    if q.is_empty() {
        return Ok(layout("Search", Some(&nav), search_form("", None)).into_response());
    }
    // A uuid names a dispatch or a message, or else may be a client_ref.
    if let Ok(id) = Uuid::parse_str(q)
        && let Some(record) = find(&state, &account.api_key, id).await?
    {
        let to = format!("/console/workflows/{}", record.workflow.workflow_id);
        return Ok(Redirect::to(&to).into_response());
    }
    let now = now_ms();
    let ttl = state.config.record_ttl_secs;
    let offset = (page - 1) * PAGE_SIZE;
    let by_number = state
        .keys
        .search(&account.api_key, "to", &activity::recipient(q));
    let (mut ids, mut total) = activity::page(
        &state.redis,
        &state.keys,
        ttl,
        &by_number,
        offset,
        PAGE_SIZE,
        now,
    )
    .await
    .map_err(Page::unavailable)?;
    let mut what = "recipient";
    if total == 0 {
        let by_ref = state.keys.search(&account.api_key, "ref", q);
        (ids, total) = activity::page(
            &state.redis,
            &state.keys,
            ttl,
            &by_ref,
            offset,
            PAGE_SIZE,
            now,
        )
        .await
        .map_err(Page::unavailable)?;
        what = "client_ref";
    }
    let found = records(&state, &account.api_key, &ids).await?;
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let link = |p: usize| {
        let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        format!("/console/search?q={q}&page={p}")
    };
    Ok(layout(
        "Search",
        Some(&nav),
        html! {
            (search_form(q, None))
            @if total == 0 {
                p.notice { "No workflow of yours has recipient or client_ref " strong { (q) } "." }
            } @else {
                p { (total) " workflows by " (what) " " strong { (q) } ", newest first. Page " (page) " of " (pages) "." }
                (workflow_table(&found))
                nav.pager {
                    @if page > 1 { a rel="prev" href=(link(page - 1)) { "← Newer" } }
                    @if page < pages { a rel="next" href=(link(page + 1)) { "Older →" } }
                }
            }
        },
    )
    .into_response())
}

fn search_form(q: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Search" }
        form.stacked action="/console/search" method="get" role="search" {
            label { "Dispatch or message uuid, recipient number, or client_ref"
                input type="search" name="q" value=(q) maxlength=(QUERY_MAX_CHARS) required; }
            button type="submit" { "Search" }
        }
        @if let Some(error) = error { p.notice.error { (error) } }
    }
}

fn workflow_table(records: &[WorkflowRecord]) -> Markup {
    html! {
        @if records.is_empty() {
            p.muted { "None yet." }
        } @else {
            table.workflows {
                thead { tr { th { "Accepted" } th { "Workflow" } th { "Status" } th { "Channels" } th { "To" } th { "client_ref" } } }
                tbody {
                    @for r in records {
                        tr {
                            td { (at(r.workflow.accepted_at_ms)) }
                            td.mono { a href=(format!("/console/workflows/{}", r.workflow.workflow_id)) { (r.workflow.workflow_id) } }
                            td { span class=(format!("tag {}", status_name(r.status))) { (status_name(r.status)) } }
                            td { (channels(r)) }
                            td.mono { (recipients(r)) }
                            td { (client_ref(r).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

/// A workflow's status as the API spells it.
pub fn status_name(status: WorkflowStatus) -> &'static str {
    match status {
        WorkflowStatus::Accepted => "accepted",
        WorkflowStatus::InProgress => "in_progress",
        WorkflowStatus::Completed => "completed",
        WorkflowStatus::Error => "error",
    }
}

fn channels(r: &WorkflowRecord) -> String {
    r.steps
        .iter()
        .map(|s| s.channel.map_or("?", |c| c.as_str()))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn to_of(r: &WorkflowRecord, i: usize) -> Option<&str> {
    let to = r.workflow.steps.get(i)?.message.to.as_ref()?;
    to.number.as_deref().or(to.id.as_deref())
}

fn recipients(r: &WorkflowRecord) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for i in 0..r.workflow.steps.len() {
        if let Some(to) = to_of(r, i)
            && !seen.contains(&to)
        {
            seen.push(to);
        }
    }
    seen.join(", ")
}

fn client_ref(r: &WorkflowRecord) -> Option<String> {
    r.workflow
        .steps
        .iter()
        .find_map(|s| s.message.client_ref.clone())
}

/// The records of `ids` that are `account`'s, in that order; those gone
/// (expired between the index and now) or another's are left out.
pub async fn records(
    state: &AppState,
    account: &str,
    ids: &[String],
) -> Result<Vec<WorkflowRecord>, Page> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGET").arg(state.keys.workflow(id)).arg("r");
    }
    let mut found: Vec<WorkflowRecord> = parsed(state, pipe).await?;
    found.retain(|r| r.workflow.account == account);
    Ok(found)
}

/// The JSON value each read of `pipe` answers (one key each), parsed;
/// those gone or unreadable left out.
async fn parsed<T: serde::de::DeserializeOwned>(
    state: &AppState,
    pipe: redis::Pipeline,
) -> Result<Vec<T>, Page> {
    let raw: Vec<Option<String>> = pipe
        .query_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    Ok(raw
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_str(&r).ok())
        .collect())
}

/// The workflow of `account` that `id` names: a dispatch, or a message
/// (through its index entry); `None` for anything else.
pub async fn find(
    state: &AppState,
    account: &str,
    id: Uuid,
) -> Result<Option<WorkflowRecord>, Page> {
    let dispatch: Option<String> = redis::cmd("GET")
        .arg(state.keys.message(&id.to_string()))
        .query_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    let workflow_id = dispatch
        .and_then(|d| Uuid::parse_str(&d).ok())
        .unwrap_or(id);
    let found = state
        .engine
        .store()
        .load(&workflow_id.to_string())
        .await
        .map_err(Page::unavailable)?;
    Ok(found
        .map(|v| v.record)
        .filter(|r| r.workflow.account == account))
}

// ---------------------------------------------------------------- timeline

/// Why the workflow failed over from step `i`, if it did: its deadline
/// fired, or the provider rejected it, or it could not be delivered.
pub fn failover_reason(record: &WorkflowRecord, i: usize) -> Option<&'static str> {
    let step = record.steps.get(i)?;
    let moved_on = record.steps[i + 1..]
        .iter()
        .any(|s| s.sent_at_ms.is_some() || !s.history.is_empty())
        || record.current_step.is_some_and(|c| c > i);
    if !moved_on {
        return None;
    }
    Some(if step.expired_at_ms.is_some() {
        "deadline"
    } else if step.status == MessageStatus::Rejected {
        "rejected"
    } else {
        "undeliverable"
    })
}

pub async fn workflow(
    State(state): State<AppState>,
    account: Account,
    Segment(id): Segment,
) -> Result<Markup, Page> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        Page::bad("That is not a dispatch or message id: they are UUIDs, such as 3fa85f64-5717-4562-b3fc-2c963f66afa6.")
    })?;
    let record = find(&state, &account.api_key, id)
        .await?
        .ok_or(Page::NotFound)?;
    let workflow_id = record.workflow.workflow_id.to_string();
    let log = activity::webhook_log(&state.redis, &state.keys, &workflow_id)
        .await
        .map_err(Page::unavailable)?;
    let now = now_ms();
    let drawn = super::timeline::layout(&record, &log, now);
    let trace = state
        .config
        .trace_url_template
        .as_deref()
        .zip(record.workflow.trace_id.as_deref())
        .map(|(template, trace)| template.replace("{trace_id}", trace));
    let usage = Usage::total(record.steps.iter().filter_map(|s| s.usage.as_ref()));
    let report = log.iter().rev().find(|l| l.message_uuid.is_none());
    Ok(layout(
        "Workflow",
        Some(&account.nav()),
        html! {
            h1 { "Workflow " span.mono { (workflow_id) } }
            dl.facts {
                dt { "Kind" } dd { (format!("{:?}", record.workflow.kind).to_lowercase()) }
                dt { "Status" } dd { span class=(format!("tag {}", status_name(record.status))) #workflow-status { (status_name(record.status)) } }
                dt { "Accepted" } dd { (at(record.workflow.accepted_at_ms)) }
                @if let Some(f) = record.finished_at_ms { dt { "Finished" } dd { (at(f)) } }
                @if let Some(r) = client_ref(&record) { dt { "client_ref" } dd { (r) } }
                dt { "Usage" } dd { (usage.price) " " (usage.currency) }
                dt { "Final report" } dd {
                    @match report {
                        Some(r) => { span class=(format!("tag {}", r.outcome)) { (r.outcome) } " " (at(r.at_ms)) }
                        None => span.muted { @if record.is_finished() { "none sent" } @else { "when it ends" } },
                    }
                }
                @if let Some(at_ms) = record.content_redacted_at_ms { dt { "Content" } dd { "redacted " (at(at_ms)) } }
                @if let Some(trace) = trace { dt { "Trace" } dd { a href=(trace) rel="noreferrer" { "open the trace" } } }
            }
            h2 { "Timeline" }
            (super::timeline::draw(&drawn))
            h2 { "Steps" }
            p.muted { "Times of day in UTC." }
            table #steps {
                thead { tr {
                    th { "#" } th { "Channel and message" } th { "Provider" } th { "To" } th { "Sent" }
                    th { "Status" } th { "Deadline" } th { "Failover" } th { "Error" } th { "Usage" }
                } }
                tbody {
                    @for (i, s) in record.steps.iter().enumerate() {
                        tr {
                            td { (i + 1) }
                            td { (s.channel.map_or("?", |c| c.as_str())) br; span.mono.small.message { (s.message_uuid) } }
                            td { (s.provider.as_deref().unwrap_or("–")) }
                            td.mono { (to_of(&record, i).unwrap_or("–")) }
                            td { @match s.sent_at_ms { Some(t) => (clock(t)), None => span.muted { "not sent" } } }
                            td {
                                span class=(format!("tag {}", s.status.as_str())) { (s.status.as_str()) }
                                @for c in &s.history { br; span.muted { (c.status.as_str()) " " (clock(c.at_ms)) } }
                            }
                            td {
                                @match (s.deadline_ms, s.expired_at_ms) {
                                    (_, Some(fired)) => { "fired " (clock(fired)) }
                                    (Some(due), None) => { (clock(due)) }
                                    (None, None) => span.muted { "none" },
                                }
                            }
                            td.failover { @if let Some(r) = failover_reason(&record, i) { "failed over: " strong { (r) } } }
                            td { @if let Some(e) = &s.error { (e.code) " " (e.reason) } }
                            td { @if let Some(u) = &s.usage { (u.price) " " (u.currency) } }
                        }
                    }
                }
            }
            h2 { "Webhook attempts" }
            @if log.is_empty() {
                p.muted { "None yet." }
            } @else {
                table #webhooks {
                    thead { tr { th { "At" } th { "Kind" } th { "Message" } th { "Outcome" } th { "HTTP" } th { "Latency" } th { "Error" } } }
                    tbody {
                        @for l in &log {
                            tr {
                                td { (clock(l.at_ms)) }
                                td { (l.kind) }
                                td.mono { (l.message_uuid.as_deref().unwrap_or("workflow")) }
                                td { span class=(format!("tag {}", l.outcome)) { (l.outcome) } }
                                td { (l.status.map(|s| s.to_string()).unwrap_or_else(|| "–".into())) }
                                td { (l.latency_ms) " ms" }
                                td { (l.error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

// ---------------------------------------------------------------- dead letters

/// Where dead letters of `account` are kept: its applications, then the
/// account's own (webhooks of work with no application).
async fn scopes(state: &AppState, account: &str) -> Result<Vec<(String, String)>, Page> {
    let apps = applications_of(state, account).await?;
    let mut scopes: Vec<(String, String)> = apps
        .into_iter()
        .map(|a| (a.id.to_string(), format!("{} ({})", a.name, a.id)))
        .collect();
    scopes.push((account.to_owned(), "No application".into()));
    Ok(scopes)
}

async fn applications_of(state: &AppState, account: &str) -> Result<Vec<ApplicationRecord>, Page> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(state.keys.account_applications(account))
        .arg(0)
        .arg(APPS_MAX - 1)
        .query_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("GET").arg(state.keys.application(id));
    }
    let mut apps: Vec<ApplicationRecord> = parsed(state, pipe).await?;
    apps.retain(|a| a.account == account);
    Ok(apps)
}

/// The dead letters of `scope`, oldest first.
async fn letters(state: &AppState, scope: &str) -> Result<Vec<WebhookJob>, Page> {
    let raw: Vec<String> = redis::cmd("HVALS")
        .arg(state.keys.dead_letters(scope))
        .query_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    Ok(jobs_of(raw))
}

/// Some of the dead letters of `scope` (about [`LETTERS_SHOWN`], oldest
/// of those first), and how many there are in all: a page does not grow
/// with an endpoint that has been down for days.
async fn some_letters(state: &AppState, scope: &str) -> Result<(Vec<WebhookJob>, usize), Page> {
    let key = state.keys.dead_letters(scope);
    let mut cursor = 0u64;
    let mut raw = Vec::new();
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(&key)
            .arg(cursor)
            .arg("COUNT")
            .arg(LETTERS_SHOWN)
            .query_async(&mut state.redis())
            .await
            .map_err(Page::unavailable)?;
        // Field, value, field, value...
        raw.extend(found.into_iter().skip(1).step_by(2));
        cursor = next;
        if cursor == 0 || raw.len() >= LETTERS_SHOWN {
            break;
        }
    }
    let total: usize = redis::cmd("HLEN")
        .arg(&key)
        .query_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    Ok((jobs_of(raw), total))
}

fn jobs_of(raw: Vec<String>) -> Vec<WebhookJob> {
    let mut jobs: Vec<WebhookJob> = raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    jobs.sort_by_key(|j| j.event_at_ms);
    jobs
}

pub async fn dead_letters(
    State(state): State<AppState>,
    account: Account,
    RawQuery(query): RawQuery,
) -> Result<Markup, Page> {
    let query = fields(query.unwrap_or_default().as_bytes());
    let replayed = query.get("replayed").and_then(|n| n.parse::<usize>().ok());
    let mut sections = Vec::new();
    for (scope, name) in scopes(&state, &account.api_key).await? {
        let (jobs, total) = some_letters(&state, &scope).await?;
        sections.push((scope, name, jobs, total));
    }
    let replay = |scope: &str, webhook: Option<&str>| {
        let mut link = format!("/console/dead-letters/replay?scope={scope}");
        if let Some(w) = webhook {
            let w: String = url::form_urlencoded::byte_serialize(w.as_bytes()).collect();
            link.push_str(&format!("&webhook={w}"));
        }
        link
    };
    Ok(layout(
        "Dead letters",
        Some(&account.nav()),
        html! {
            h1 { "Dead letters" }
            @if let Some(n) = replayed { p.notice role="status" #replayed { (n) " queued again." } }
            p.muted { "Webhooks that failed every attempt. A replay starts a new schedule of attempts and enables endpoints disabled by a 410." }
            @for (scope, name, jobs, total) in &sections {
                @if !jobs.is_empty() || scope != &account.api_key {
                    section.letters {
                        h2 { (name) " " span.muted { "(" (total) ")" } }
                        @if jobs.is_empty() {
                            p.muted { "None." }
                        } @else {
                            p { a.replay-all href=(replay(scope, None)) { "Replay all " (total) } }
                            @if jobs.len() < *total { p.muted { "Showing " (jobs.len()) " of them." } }
                            table {
                                thead { tr { th { "Event" } th { "Kind" } th { "Workflow" } th { "Attempts" } th { "Why" } th {} } }
                                tbody {
                                    @for j in jobs {
                                        tr {
                                            td { (at(j.event_at_ms)) }
                                            td { (j.kind.as_str()) }
                                            td.mono { a href=(format!("/console/workflows/{}", j.workflow_id)) { (j.workflow_id) } }
                                            td { (j.attempts) }
                                            td { (j.reason.as_deref().unwrap_or("")) }
                                            td { a.replay href=(replay(scope, Some(&j.webhook_id))) { "Replay" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The scope `scope` if it is one of `account`'s.
async fn own_scope(state: &AppState, account: &str, scope: &str) -> Result<(), Page> {
    if scope == account {
        return Ok(());
    }
    let id = Uuid::parse_str(scope).map_err(|_| Page::NotFound)?;
    match crate::applications::load(state, &id).await {
        Ok(Some(app)) if app.account == account => Ok(()),
        Ok(_) => Err(Page::NotFound),
        Err(e) => Err(Page::unavailable(format!("{e:?}"))),
    }
}

pub async fn replay_confirm(
    State(state): State<AppState>,
    account: Account,
    RawQuery(query): RawQuery,
) -> Result<Markup, Page> {
    let query = fields(query.unwrap_or_default().as_bytes());
    let scope = query.get("scope").map_or("", String::as_str);
    let webhook = query.get("webhook").map(String::as_str);
    own_scope(&state, &account.api_key, scope).await?;
    let jobs = letters(&state, scope).await?;
    let chosen: Vec<&WebhookJob> = jobs
        .iter()
        .filter(|j| webhook.is_none_or(|w| j.webhook_id == w))
        .collect();
    if chosen.is_empty() {
        return Err(Page::NotFound);
    }
    Ok(layout(
        "Replay",
        Some(&account.nav()),
        html! {
            h1 { "Replay " (chosen.len()) " dead-lettered webhook" @if chosen.len() > 1 { "s" } "?" }
            ul { @for j in &chosen { li.mono { (j.kind.as_str()) " of " (j.workflow_id) } } }
            form.stacked action="/console/dead-letters/replay" method="post" {
                input type="hidden" name="csrf" value=(account.session.csrf);
                input type="hidden" name="scope" value=(scope);
                @if let Some(w) = webhook { input type="hidden" name="webhook" value=(w); }
                button #confirm type="submit" { "Yes, replay" }
            }
            p { a href="/console/dead-letters" { "Cancel" } }
        },
    ))
}

pub async fn replay(
    State(state): State<AppState>,
    account: Account,
    form: Form,
) -> Result<Response, Page> {
    if !account.csrf_ok(form.get("csrf")) {
        return Err(Page::Forbidden);
    }
    let scope = form.get("scope");
    own_scope(&state, &account.api_key, scope).await?;
    let webhook = Some(form.get("webhook")).filter(|w| !w.is_empty());
    let jobs = letters(&state, scope).await?;
    let chosen: Vec<WebhookJob> = jobs
        .into_iter()
        .filter(|j| webhook.is_none_or(|w| j.webhook_id == w))
        .collect();
    if chosen.is_empty() {
        return Err(Page::NotFound);
    }
    if scope != account.api_key {
        crate::routes::webhooks::enable_endpoints(&state, scope)
            .await
            .map_err(|e| Page::unavailable(format!("{e:?}")))?;
    }
    let key = state.keys.dead_letters(scope);
    let mut replayed = 0;
    for job in chosen {
        crate::routes::webhooks::replay(&state, &key, job)
            .await
            .map_err(|e| Page::unavailable(format!("{e:?}")))?;
        replayed += 1;
    }
    Ok(Redirect::to(&format!("/console/dead-letters?replayed={replayed}")).into_response())
}

// ---------------------------------------------------------------- applications

/// A webhook URL as shown: without a user and password, query string or
/// fragment, any of which may carry a credential.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

pub async fn applications(State(state): State<AppState>, account: Account) -> Result<Markup, Page> {
    use dispatch_model::Channel;
    let apps = applications_of(&state, &account.api_key).await?;
    let store = &state.providers_store;
    let own: HashMap<Channel, String> = store
        .list(&account.api_key)
        .await
        .map_err(Page::unavailable)?
        .into_iter()
        .map(|(c, s)| (c, s.kind.as_str().to_owned()))
        .collect();
    let route = |c: Channel, app: &HashMap<Channel, String>| -> (String, &'static str) {
        if let Some(k) = app.get(&c) {
            (k.clone(), "application")
        } else if let Some(k) = own.get(&c) {
            (k.clone(), "account")
        } else {
            (
                state.config.default_provider(c).kind.as_str().to_owned(),
                "configuration",
            )
        }
    };
    let mut shown = Vec::new();
    for app in &apps {
        let per_app: HashMap<Channel, String> = store
            .list(&app.id.to_string())
            .await
            .map_err(Page::unavailable)?
            .into_iter()
            .map(|(c, s)| (c, s.kind.as_str().to_owned()))
            .collect();
        shown.push((app, per_app));
    }
    let none = HashMap::new();
    let routing = |app: &HashMap<Channel, String>| {
        html! {
            table.routing {
                thead { tr { th { "Channel" } th { "Provider" } th { "Set by" } } }
                tbody { @for c in Channel::ALL { @let (kind, by) = route(c, app); tr { td { (c.as_str()) } td { (kind) } td.muted { (by) } } } }
            }
        }
    };
    Ok(layout(
        "Applications",
        Some(&account.nav()),
        html! {
            h1 { "Applications and providers" }
            p.muted { "Credentials are never shown. Webhook URLs are shown without their query string." }
            @if shown.is_empty() { p.muted { "This account has no applications." } }
            @for (app, per_app) in &shown {
                section.application {
                    h2 { (app.name) " " span.muted.mono { (app.id) } }
                    @let hooks = app.capabilities.messages.as_ref();
                    dl.facts {
                        @let w = hooks.map(|m| &m.webhooks);
                        dt { "Status URL" } dd.mono { (w.and_then(|w| w.status_url.as_ref()).map_or("–".into(), |h| shown_url(&h.address))) }
                        dt { "Inbound URL" } dd.mono { (w.and_then(|w| w.inbound_url.as_ref()).map_or("–".into(), |h| shown_url(&h.address))) }
                        dt { "Final report URL" } dd.mono { (w.and_then(|w| w.final_report_url.as_ref()).map_or("–".into(), |h| shown_url(&h.address))) }
                        dt { "Webhook format" } dd { (hooks.and_then(|m| m.version.as_deref()).unwrap_or("v0.1")) }
                    }
                    (routing(per_app))
                }
            }
            h2 { "Without an application" }
            (routing(&none))
        },
    ))
}

// ---------------------------------------------------------------- operator

pub async fn operator(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Page> {
    let s = session::current(&state, &headers).await?;
    let Some(s) = s.filter(|s| s.operator) else {
        return Ok(operator_form(&state, &headers, StatusCode::OK, None));
    };
    let depths = queue_depths(&state).await;
    let in_flight = state.engine.store().in_flight().await.ok();
    Ok(layout(
        "Operator",
        Some(&Nav {
            who: "operator",
            csrf: &s.csrf,
            operator: true,
        }),
        html! {
            noscript { meta http-equiv="refresh" content="30"; }
            h1 { "Operator" }
            // Refreshed in place every 5 s: htmx takes this part of the
            // page as fetched again.
            div #operator-live hx-get="/console/operator" hx-trigger="every 5s"
                hx-select="#operator-live" hx-swap="outerHTML" {
                p { "Workflows in flight: " strong #in-flight { (in_flight.map_or("–".into(), |n| n.to_string())) } }
                @match depths {
                    Some(depths) => {
                        @let sends: Vec<(String, i64)> = depths
                            .iter()
                            .filter_map(|(name, ready, _)| {
                                let channel = name.rsplit_once(".send.")?.1;
                                Some((channel.to_owned(), i64::from(*ready)))
                            })
                            .collect();
                        div.charts { (charts::bar_chart("Send commands waiting, per channel", "channel", &sends)) }
                        h2 { "Queue depths" }
                        table #queues {
                            thead { tr { th { "Queue" } th { "Messages ready" } th { "Consumers" } } }
                            tbody { @for (name, ready, consumers) in &depths { tr { td.mono { (name) } td { (ready) } td { (consumers) } } } }
                        }
                    }
                    None => p.notice.error { "The message broker is not reachable." },
                }
            }
        },
    )
    .into_response())
}

fn operator_form(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (csrf, set) = session::form_token(state, headers);
    let enabled = state.config.console_operator_token.is_some();
    let body = layout(
        "Operator sign-in",
        None,
        html! {
            h1 { "Operator sign-in" }
            @if !enabled {
                p.notice { "The operator view is off: no console_operator_token is configured." }
            } @else {
                @if let Some(error) = error { p.notice.error role="alert" { (error) } }
                form.stacked action="/console/operator" method="post" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Operator token" input type="password" name="token" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
            }
        },
    );
    with_form_cookie(status, body, set)
}

pub async fn operator_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    form: Form,
) -> Result<Response, Page> {
    let Some(expected) = state.config.console_operator_token.as_deref() else {
        return Err(Page::NotFound);
    };
    if !session::form_token_ok(&headers, form.get("csrf")) {
        return Err(Page::Forbidden);
    }
    if !session::admit_sign_in(&state, &format!("addr:{}", address(&extensions))).await? {
        return Err(Page::Throttled);
    }
    if !session::same(expected, form.get("token")) {
        return Ok(operator_form(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That is not the operator token."),
        ));
    }
    signed_in(
        &state,
        Session {
            account: None,
            operator: true,
            csrf: session::token(),
            created_at_ms: now_ms(),
        },
        "/console/operator",
    )
    .await
}

/// Each queue's ready messages and consumers, from a passive declare;
/// `None` when the broker is not connected.
async fn queue_depths(state: &AppState) -> Option<Vec<(String, u32, u32)>> {
    let connection = state.broker.connection()?;
    let channel = connection.create_channel().await.ok()?;
    let topology = state.broker.topology();
    let mut names: Vec<String> = topology.queues().into_iter().map(|q| q.name).collect();
    names.push(topology.dead_letter_queue());
    let mut depths = Vec::new();
    for name in names {
        let declared = channel
            .queue_declare(
                name.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => depths.push((name, q.message_count(), q.consumer_count())),
            // A passive declare of a missing queue closes the channel.
            Err(_) => break,
        }
    }
    let _ = channel.close(200, "done".into()).await;
    Some(depths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_sums_the_hour_and_orders_reasons() {
        let minute = |pairs: &[(&str, i64)]| -> HashMap<String, i64> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let o = Overview::of(&[
            minute(&[
                ("accepted", 2),
                ("failover:deadline", 1),
                ("failover-from:sms", 1),
            ]),
            minute(&[]),
            minute(&[
                ("accepted", 1),
                ("completed", 3),
                ("failover:rejected", 2),
                ("failover-from:whatsapp", 2),
                ("webhook:delivered", 3),
                ("webhook:failed", 1),
                ("webhook:dead", 1),
            ]),
        ]);
        assert_eq!(o.workflows[0].values, vec![2, 0, 1]);
        assert_eq!(o.workflows[1].values, vec![0, 0, 3]);
        assert_eq!(
            o.reasons,
            vec![
                ("deadline".into(), 1),
                ("rejected".into(), 2),
                ("undeliverable".into(), 0)
            ]
        );
        assert_eq!(o.channels, vec![("sms".into(), 1), ("whatsapp".into(), 2)]);
        assert_eq!(o.webhook_success, Some(75.0));
        assert_eq!(o.dead_letters, 1);
        assert_eq!(Overview::of(&[]).webhook_success, None);
    }

    #[test]
    fn the_failover_reason_is_read_from_the_step_left() {
        let mut r = super::super::timeline::tests::two_steps();
        assert_eq!(failover_reason(&r, 0), Some("deadline"));
        assert_eq!(failover_reason(&r, 1), None, "the last step");
        r.steps[0].expired_at_ms = None;
        r.steps[0].status = MessageStatus::Rejected;
        assert_eq!(failover_reason(&r, 0), Some("rejected"));
        r.steps[0].status = MessageStatus::Undeliverable;
        assert_eq!(failover_reason(&r, 0), Some("undeliverable"));
        // Delivered in time: the next step never started.
        r.steps[0].status = MessageStatus::Delivered;
        r.steps[1].sent_at_ms = None;
        r.steps[1].history.clear();
        r.current_step = Some(0);
        assert_eq!(failover_reason(&r, 0), None);
    }

    #[test]
    fn webhook_urls_are_shown_without_their_query() {
        assert_eq!(
            shown_url("https://x.test/hook?token=s3cret"),
            "https://x.test/hook"
        );
        assert_eq!(shown_url("https://x.test/a#f"), "https://x.test/a");
        assert_eq!(shown_url("https://x.test/a"), "https://x.test/a");
        assert_eq!(
            shown_url("https://user:s3cret@x.test:8443/a"),
            "https://x.test:8443/a"
        );
        assert_eq!(shown_url("nonsense"), "(not a URL)");
    }
}
