//! Erasing everything kept about one recipient of an account: the API
//! call `DELETE /v0.1/recipients/{number}` (Basic authentication) and
//! the console's form, both through [`erase_recipient`].
//!
//! The account's recipient index (`search … to`) names every workflow
//! that sent to the number. Of each, everything is deleted: the record,
//! its webhook log, the message index entries, the sent marks, every
//! webhook's attempts and delivered mark, its dead letters, and its
//! entries in the account's other search keys. A workflow that had not
//! ended is erased as well (it stops: a later receipt or deadline finds
//! no record and is dropped), and the count in flight goes down by one.
//!
//! What is not erased: the per-minute counters (numbers of workflows,
//! with no recipient), and the keys of two-way conversations
//! (`conversation`, `window`, `last-sent`), which name the number but
//! expire on their own; docs/api.md says so.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use dispatch_infra::activity;
use dispatch_infra::store::StoreError;
use dispatch_model::InvalidParam;
use dispatch_model::record::WorkflowRecord;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::pages::status_name;
use super::session::Account;
use super::{Form, Page, fields, layout};
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

/// The longest recipient (a number, or a Messenger or Viber id).
const RECIPIENT_MAX_CHARS: usize = 100;
/// Workflows read at once while erasing.
const BATCH: isize = 200;

/// Erases every workflow of `account` sent to `recipient`; returns how
/// many there were.
pub async fn erase_recipient(
    state: &AppState,
    account: &str,
    recipient: &str,
) -> Result<usize, StoreError> {
    let to = activity::recipient(recipient);
    let index = state.keys.search(account, "to", &to);
    let mut erased = 0;
    loop {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(BATCH - 1)
            .query_async(&mut state.redis())
            .await?;
        if ids.is_empty() {
            break;
        }
        for id in &ids {
            let loaded = state.engine.store().load(id).await?;
            if let Some(v) = loaded
                && v.record.workflow.account == account
            {
                erase_workflow(state, &v.record).await?;
                erased += 1;
            }
        }
        redis::cmd("ZREM")
            .arg(&index)
            .arg(&ids)
            .exec_async(&mut state.redis())
            .await?;
    }
    redis::cmd("DEL")
        .arg(&index)
        .exec_async(&mut state.redis())
        .await?;
    metrics::counter!("dispatch_recipients_erased_total").increment(1);
    Ok(erased)
}

/// Deletes `record` and everything kept beside it.
async fn erase_workflow(state: &AppState, record: &WorkflowRecord) -> redis::RedisResult<()> {
    let keys = &state.keys;
    let w = &record.workflow;
    let id = w.workflow_id.to_string();
    let mut webhooks = vec![format!("{id}:final")];
    let mut doomed = vec![keys.workflow(&id), keys.webhook_log(&id), keys.fate(&id)];
    for step in &record.steps {
        let uuid = step.message_uuid.to_string();
        doomed.extend([keys.message(&uuid), keys.sent(&uuid)]);
        webhooks.extend(
            step.history
                .iter()
                .map(|c| format!("{uuid}:{}", c.status.as_str())),
        );
    }
    for webhook in &webhooks {
        doomed.extend([
            keys.webhook_attempts(webhook),
            keys.webhook_delivered(webhook),
        ]);
    }
    let scope = w
        .application_id
        .map_or_else(|| w.account.clone(), |a| a.to_string());
    let mut pipe = redis::pipe();
    // One key per command: on a cluster they are in different slots.
    for key in &doomed {
        pipe.cmd("DEL").arg(key).ignore();
    }
    pipe.cmd("HDEL")
        .arg(keys.dead_letters(&scope))
        .arg(&webhooks)
        .ignore();
    for key in activity::search_keys(keys, w) {
        pipe.cmd("ZREM").arg(key).arg(&id).ignore();
    }
    if !record.is_finished() {
        pipe.cmd("DECR").arg(keys.workflows_in_flight()).ignore();
    }
    pipe.exec_async(&mut state.redis()).await
}

fn check(recipient: &str) -> Result<&str, String> {
    let recipient = recipient.trim();
    if activity::recipient(recipient).is_empty() {
        return Err("Give a recipient's number (or id).".into());
    }
    if recipient.chars().count() > RECIPIENT_MAX_CHARS {
        return Err(format!(
            "A recipient has at most {RECIPIENT_MAX_CHARS} characters."
        ));
    }
    Ok(recipient)
}

/// `DELETE /v0.1/recipients/{number}`.
pub async fn recipient_api(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> ApiResult<Json<Value>> {
    let principal = auth::basic(&state, &headers).await?;
    let number = check(&number)
        .map_err(|reason| ApiError::Invalid(vec![InvalidParam::new("number", reason)]))?;
    let erased = erase_recipient(&state, &principal.account, number)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "erasure failed");
            ApiError::Unavailable("The data store is unreachable.")
        })?;
    Ok(Json(json!({ "erased_workflows": erased })))
}

/// `GET /console/erase?number=…`: the form, and with a number, what
/// would be erased and the button that does it.
pub async fn confirm(
    State(state): State<AppState>,
    account: Account,
    RawQuery(query): RawQuery,
) -> Result<Markup, Page> {
    let query = fields(query.unwrap_or_default().as_bytes());
    let number = query.get("number").map_or("", |n| n.trim());
    let mut found = None;
    if !number.is_empty() {
        let number = check(number).map_err(Page::bad)?;
        let key = state
            .keys
            .search(&account.api_key, "to", &activity::recipient(number));
        let (ids, total) = activity::page(
            &state.redis,
            &state.keys,
            state.config.record_ttl_secs,
            &key,
            0,
            super::pages::PAGE_SIZE,
            dispatch_model::record::now_ms(),
        )
        .await
        .map_err(Page::unavailable)?;
        let records = super::pages::records(&state, &account.api_key, &ids).await?;
        found = Some((total, records));
    }
    Ok(layout(
        "Erase a recipient",
        Some(&account.nav()),
        html! {
            h1 { "Erase a recipient" }
            p.muted { "Deletes every workflow this account sent to the number, with its statuses, webhook attempts, dead letters and search entries. It cannot be undone." }
            form.stacked action="/console/erase" method="get" {
                label { "Recipient number (or id)" input name="number" value=(number) required; }
                button type="submit" { "Find what would be erased" }
            }
            @if let Some((total, records)) = found {
                @if total == 0 {
                    p.notice { "Nothing of this account was sent to " strong { (number) } "." }
                } @else {
                    p { strong { (total) } " workflows were sent to " strong { (number) } ", such as:" }
                    ul { @for r in &records { li.mono { (r.workflow.workflow_id) " " (status_name(r.status)) } } }
                    form.stacked action="/console/erase" method="post" {
                        input type="hidden" name="csrf" value=(account.session.csrf);
                        input type="hidden" name="number" value=(number);
                        button.danger #erase type="submit" { "Erase them for good" }
                    }
                }
            }
        },
    ))
}

/// `POST /console/erase`.
pub async fn erase(
    State(state): State<AppState>,
    account: Account,
    form: Form,
) -> Result<Markup, Page> {
    if !account.csrf_ok(form.get("csrf")) {
        return Err(Page::Forbidden);
    }
    let number = check(form.get("number")).map_err(Page::bad)?;
    let erased = erase_recipient(&state, &account.api_key, number)
        .await
        .map_err(Page::unavailable)?;
    Ok(layout(
        "Erased",
        Some(&account.nav()),
        html! {
            h1 { "Erased" }
            p.notice role="status" #erased { (erased) " workflows sent to " strong { (number) } " are erased." }
        },
    ))
}
