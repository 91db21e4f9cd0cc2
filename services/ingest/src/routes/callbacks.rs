//! Provider callbacks: delivery and read receipts, and inbound messages.
//!
//! - `POST /callbacks/simulator[/inbound]`: the simulator, signed with
//!   `simulator_secret`.
//! - `GET|POST /callbacks/{kind}/{route}[/{hook}]`: Vonage, Twilio and
//!   Meta. The route names one stored provider record (or
//!   `default-{channel}`, the configuration's), whose credentials verify
//!   the callback's signature and whose owner receives inbound messages.
//!
//! A callback is believed only once its adapter verified the signature;
//! anything else is 401 and changes nothing. A believed receipt is matched
//! to its message and applied to its workflow here (the transition and
//! its webhooks' outbox written in Redis before the answer), or parked
//! until the sender records the provider's id (then applied by the
//! sender, never dropped). An inbound message opens the channel's reply
//! window for the user, and goes to the application as an
//! `inbound-message` webhook. When Redis is out (or, for an inbound
//! message, the broker) the answer is 503, and the provider retries.

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use dispatch_flow::Event;
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::providers::{Owner, RouteTarget};
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::{Envelope, StatusEvent, WebhookJob, WebhookKind};
use dispatch_model::record::{MessageStatus, iso_timestamp};
use dispatch_providers::{CallbackError, CallbackEvent, CallbackOutcome, CallbackRequest, Inbound};
use serde_json::json;
use uuid::Uuid;

use crate::body::RawBody;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

/// How long after a user's last message a business may answer freely on
/// WhatsApp (the customer care window) and Messenger (the standard
/// messaging window).
pub const REPLY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

pub async fn simulator(
    State(state): State<AppState>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    from_simulator(&state, "", &method, &uri, &headers, &body).await
}

pub async fn simulator_inbound(
    State(state): State<AppState>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    from_simulator(&state, "inbound", &method, &uri, &headers, &body).await
}

/// The simulator's callbacks have no route: they are signed with
/// `simulator_secret`, and the simulator is shared by every account, so
/// its inbound messages go to the registered owner of the number.
async fn from_simulator(
    state: &AppState,
    hook: &str,
    method: &Method,
    uri: &OriginalUri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let settings = ProviderSettings {
        kind: ProviderKind::Simulator,
        secret: state.config.simulator_secret.clone(),
        ..state.config.default_provider(Channel::Sms)
    };
    let call = Call {
        method,
        uri,
        hook,
        headers,
        body,
    };
    handle(state, ProviderKind::Simulator, None, &settings, call).await
}

pub async fn provider(
    State(state): State<AppState>,
    Path((kind, route)): Path<(String, String)>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    routed(state, kind, route, "", method, uri, headers, body).await
}

pub async fn provider_hook(
    State(state): State<AppState>,
    Path((kind, route, hook)): Path<(String, String, String)>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    if !matches!(hook.as_str(), "status" | "inbound") {
        return Err(ApiError::NotFound);
    }
    routed(state, kind, route, &hook, method, uri, headers, body).await
}

#[allow(clippy::too_many_arguments)]
async fn routed(
    state: AppState,
    kind: String,
    route: String,
    hook: &str,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let kind = ProviderKind::parse(&kind)
        .filter(|k| *k != ProviderKind::Simulator)
        .ok_or(ApiError::NotFound)?;
    let (owner, settings) = match route.strip_prefix("default-").and_then(Channel::parse) {
        Some(channel) => (None, state.config.default_provider(channel)),
        None => match state.providers_store.by_route(&route).await {
            Ok(Some((RouteTarget { owner, .. }, settings))) => (Some(owner), settings),
            Ok(None) => return Err(ApiError::NotFound),
            Err(e) => {
                tracing::warn!(error = %e, "could not read a provider route");
                return Err(ApiError::Unavailable("The data store is unreachable."));
            }
        },
    };
    if settings.kind != kind {
        return Err(ApiError::NotFound);
    }
    let call = Call {
        method: &method,
        uri: &uri,
        hook,
        headers: &headers,
        body: &body,
    };
    handle(&state, kind, owner, &settings, call).await
}

struct Call<'a> {
    method: &'a Method,
    uri: &'a OriginalUri,
    hook: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

async fn handle(
    state: &AppState,
    kind: ProviderKind,
    owner: Option<Owner>,
    settings: &ProviderSettings,
    call: Call<'_>,
) -> ApiResult<Response> {
    let path_and_query = call
        .uri
        .0
        .path_and_query()
        .map_or_else(|| call.uri.0.path().to_owned(), |p| p.as_str().to_owned());
    let url = format!("{}{path_and_query}", state.config.callback_base());
    let request = CallbackRequest {
        method: call.method,
        url: &url,
        hook: call.hook,
        query: call.uri.0.query().unwrap_or(""),
        headers: call.headers,
        body: call.body,
    };
    let outcome = state.providers.get(kind).callback(settings, &request);
    let events = match outcome {
        Ok(CallbackOutcome::Challenge(text)) => return Ok((StatusCode::OK, text).into_response()),
        Ok(CallbackOutcome::Events(events)) => events,
        Err(CallbackError::Unauthorized(why)) => {
            tracing::info!(provider = kind.as_str(), %why, "callback refused");
            return Err(ApiError::Unauthorized(
                "The callback signature is missing or does not match.",
            ));
        }
        Err(CallbackError::Forbidden(why)) => {
            tracing::info!(provider = kind.as_str(), %why, "callback refused");
            return Err(ApiError::Forbidden("The verify token does not match."));
        }
        Err(CallbackError::Malformed(why)) => {
            return Err(ApiError::MalformedJson(format!(
                "not a {} callback: {why}",
                kind.as_str()
            )));
        }
    };
    let scope = dispatch_infra::providers::receipt_scope(settings);
    for event in events {
        apply(state, kind, &scope, owner.as_ref(), event).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Applies one verified event; `scope` is the receipt scope of the record
/// whose credentials verified it, and bounds what it may touch.
async fn apply(
    state: &AppState,
    kind: ProviderKind,
    scope: &str,
    owner: Option<&Owner>,
    event: CallbackEvent,
) -> ApiResult<()> {
    match event {
        CallbackEvent::Receipt(receipt) => receipt_event(state, kind, scope, receipt).await,
        CallbackEvent::ReadUpTo {
            channel,
            ours,
            user,
            up_to_ms,
            at_ms,
        } => {
            let last: Option<String> = redis::AsyncCommands::get(
                &mut state.redis(),
                state.keys.last_sent(scope, channel.as_str(), &ours, &user),
            )
            .await?;
            let Some((id, sent_ms)) = last.as_deref().and_then(|l| l.rsplit_once(' ')) else {
                return Ok(());
            };
            if sent_ms.parse::<i64>().is_ok_and(|sent| sent <= up_to_ms) {
                let receipt = Receipt {
                    provider_message_id: id.to_owned(),
                    status: MessageStatus::Read,
                    at_ms,
                    error: None,
                    usage: None,
                };
                receipt_event(state, kind, scope, receipt).await?;
            }
            Ok(())
        }
        CallbackEvent::Inbound(inbound) => inbound_event(state, scope, owner, inbound).await,
    }
}

async fn receipt_event(
    state: &AppState,
    kind: ProviderKind,
    scope: &str,
    receipt: Receipt,
) -> ApiResult<()> {
    let Some(target) = state
        .receipts
        .resolve_or_park(scope, kind.as_str(), &receipt)
        .await?
    else {
        tracing::debug!(provider_id = %receipt.provider_message_id, "receipt parked until its send is recorded");
        return Ok(());
    };
    apply_receipt(state, receipt.into_event(target)).await
}

/// Applies a receipt's status to its workflow. Answered only once the
/// transition is written: a receipt that cannot be applied (Redis down)
/// gets a 503 and the provider sends it again; none is acknowledged
/// before it is durable.
async fn apply_receipt(state: &AppState, event: StatusEvent) -> ApiResult<()> {
    dispatch_infra::failpoint::hit("callback-before-apply", &event.message_uuid);
    let applied = state
        .engine
        .apply(event.workflow_id, Event::Status(&event))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not apply a receipt");
            ApiError::Unavailable("The data store is unreachable.")
        })?;
    dispatch_infra::failpoint::hit("callback-after-write", &event.message_uuid);
    if let Some(outbox) = applied.outbox() {
        state.engine.carry_out(outbox).await;
    }
    Ok(())
}

/// `KEYS` window, conversation (one hash tag: one slot of a cluster), and
/// on a standalone Redis the conversation from before tenants (clusters
/// came later); `ARGV` the message's time, when its window closes (ms).
/// Moves the window forward (never back: messages can arrive out of
/// order) and returns both conversations.
static OPEN_WINDOW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
local legacy = false
if KEYS[3] then legacy = redis.call('GET', KEYS[3]) end
return {redis.call('GET', KEYS[2]), legacy}
",
    )
});

/// Opens the reply window, then hands the message to its application.
/// Whose it is: the owner of the provider record it came through, or on a
/// shared provider the registered owner of the number (else nobody: 204,
/// logged). Which application: the owner's when it is one; else the
/// application of that account that last wrote to this user from this
/// address. Windows and conversations are kept per tenant (the record, or
/// the number's owner on a shared provider), so one account never opens,
/// reads or takes over another's.
async fn inbound_event(
    state: &AppState,
    scope: &str,
    owner: Option<&Owner>,
    inbound: Inbound,
) -> ApiResult<()> {
    let channel = inbound.channel.as_str();
    // A record's own traffic belongs to its owner; a shared provider's to
    // the owner of the number written to, and to nobody without one.
    let (owner, tenant) = match owner {
        Some(owner) => (owner.clone(), format!("record:{scope}")),
        None => {
            let registered = dispatch_infra::providers::number_owner(
                &state.redis(),
                &state.keys,
                inbound.channel,
                &inbound.to,
            )
            .await?;
            let Some(owner) = registered else {
                tracing::info!(%channel, "inbound message to a number nobody owns: dropped");
                metrics::counter!("dispatch_inbound_unowned_total", "channel" => channel)
                    .increment(1);
                return Ok(());
            };
            let tenant = dispatch_infra::providers::account_tenant(&owner.account);
            (owner, tenant)
        }
    };
    let mut conn = state.redis();
    let mut invocation = OPEN_WINDOW.key(state.keys.window(
        &tenant,
        channel,
        &inbound.to,
        &inbound.from,
    ));
    invocation.key(
        state
            .keys
            .conversation(&tenant, channel, &inbound.to, &inbound.from),
    );
    if !state.keys.is_cluster() {
        invocation.key(
            state
                .keys
                .legacy_conversation(channel, &inbound.to, &inbound.from),
        );
    }
    let (last, legacy): (Option<String>, Option<String>) = invocation
        .arg(inbound.timestamp_ms)
        .arg(inbound.timestamp_ms.saturating_add(REPLY_WINDOW_MS as i64))
        .invoke_async(&mut conn)
        .await?;
    let conversation = last.or(legacy).as_deref().and_then(|c| {
        let (account, app) = c.split_once(' ')?;
        Some(Owner {
            account: account.to_owned(),
            application_id: Uuid::parse_str(app).ok(),
        })
    });
    // The owner's application, else the application of the owner's
    // account that last wrote to this user (a conversation from before
    // tenants counts only when it is the owner's), else the account.
    let to = match conversation {
        _ if owner.application_id.is_some() => owner,
        Some(c) if c.account == owner.account => c,
        _ => owner,
    };
    let address = |value: &str| match inbound.channel {
        Channel::Messenger => json!({"type": channel, "id": value}),
        _ => json!({"type": channel, "number": value}),
    };
    let message_uuid = Uuid::new_v4();
    let v1 = match to.application_id {
        Some(app) => crate::applications::load(state, &app)
            .await?
            .and_then(|a| a.capabilities.messages)
            .is_some_and(|m| m.version.as_deref() == Some("v1")),
        None => false,
    };
    let body = if v1 {
        v1_inbound(&inbound, message_uuid)
    } else {
        json!({
            "message_uuid": message_uuid,
            "to": address(&inbound.to),
            "from": address(&inbound.from),
            "timestamp": iso_timestamp(inbound.timestamp_ms),
            "message": inbound.message,
        })
    };
    let job = WebhookJob {
        webhook_id: format!("inbound:{}", inbound.provider_message_id),
        kind: WebhookKind::InboundMessage,
        account: to.account.clone(),
        application_id: to.application_id,
        workflow_id: message_uuid,
        event_at_ms: inbound.timestamp_ms,
        body,
        url: None,
        attempts: 0,
        reason: None,
    };
    if let Err(e) = state.broker.publish(&Envelope::Webhook(job)).await {
        tracing::warn!(error = %e, "could not publish an inbound message");
        return Err(ApiError::Unavailable("The message broker is unavailable."));
    }
    Ok(())
}

/// An inbound message in the Messages API v1 shape, for an application
/// whose `capabilities.messages.version` is `v1`: `channel`, `to` and
/// `from` as strings, `message_type` and the content under the field it
/// names (a type only v1 has, which our model holds as `custom`, under
/// its own name again).
/// The inbound types our model holds as `custom`, which the v1 shape
/// names; any other name stays inside `custom` (it could be `from`).
const V1_ONLY_TYPES: &[&str] = &[
    "location",
    "vcard",
    "sticker",
    "reaction",
    "reply",
    "order",
    "button",
    "contact",
    "unsupported",
];

fn v1_inbound(inbound: &Inbound, message_uuid: Uuid) -> serde_json::Value {
    let mut body = json!({
        "channel": dispatch_model::v1::channel_name(inbound.channel),
        "message_uuid": message_uuid,
        "to": inbound.to,
        "from": inbound.from,
        "timestamp": iso_timestamp(inbound.timestamp_ms),
    });
    let content = &inbound.message["content"];
    let kind = content["type"].as_str().unwrap_or("unsupported");
    let v1_only = content["custom"]
        .get("message_type")
        .and_then(|t| t.as_str())
        .filter(|t| V1_ONLY_TYPES.contains(t));
    match (kind, v1_only) {
        ("custom", Some(v1_type)) => {
            body["message_type"] = json!(v1_type);
            body[v1_type] = content["custom"][v1_type].clone();
        }
        _ => {
            body["message_type"] = json!(kind);
            body[kind] = content[kind].clone();
        }
    }
    body
}
