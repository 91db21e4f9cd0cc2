//! A fake of the Vonage Messages API v1 (<https://developer.vonage.com/en/api/messages>),
//! mounted under `/vonage`: `POST /vonage/v1/messages`.
//!
//! **Authentication** (<https://developer.vonage.com/en/getting-started/concepts/authentication>):
//! `Basic base64(api_key:api_secret)` with any `api_key` and the
//! simulator's secret as `api_secret`, or `Bearer <JWT>`. The fake holds
//! no application's public key, so it checks a JWT's **structure only**:
//! three base64url parts, header `alg` `RS256`, claims `application_id`,
//! `iat` and `jti`, an `exp` (if any) still to come, and a signature
//! part. Anything else is 401 with Vonage's problem body (`#unauthorized`).
//!
//! **Validation**, as Vonage's reference describes each channel:
//! `message_type`, `channel`, `to`, `from`, the object `message_type`
//! names, which types each channel takes (templates on WhatsApp only, no
//! `custom` on SMS or MMS), the channel options (`messenger`,
//! `viber_service`, `whatsapp` of a template). A missing parameter is 422
//! `#1010`, an invalid one 422 `#1020`, both with `invalid_parameters`.
//! `custom` is accepted on Messenger and Viber as well as WhatsApp: the v1
//! reference documents it for WhatsApp, and our model (like the v0.1 API)
//! passes Messenger and Viber payloads through, which the fake does not
//! refuse in Vonage's place.
//!
//! **Outcomes**: the simulator's [`Control`](crate::Control) decides by
//! recipient, as for its own API: 202 `{"message_uuid"}`; 422 with the
//! rejection's code as the problem's anchor (`…/api-errors/messages#1300`,
//! its reason as `title`); a transient failure is 429 `#1000` with
//! `Retry-After` when the behaviour gives one, 503 otherwise.
//!
//! **Webhooks** (message status to the send's `webhook_url`, inbound
//! messages to the request's `callback_url`) are signed as Vonage signs
//! them (<https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks>):
//! `Authorization: Bearer <JWT HS256 over the simulator's secret>`,
//! claims `iat`, `jti`, `iss: "Vonage"`, `payload_hash` (hex SHA-256 of
//! the body), `api_key`, `application_id`. The JWT is built here by hand
//! (HMAC from aws-lc-rs, base64url below), independently of the adapter
//! that verifies it.

use std::sync::Arc;

use aws_lc_rs::{digest, hmac};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dispatch_model::Channel;
use dispatch_model::record::{iso_timestamp, now_ms};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::Fake;
use crate::control::Decision;
use crate::receipts::{Event, Format, Plan, Post};
use crate::server::App;
use crate::wire::{InboundRequest, SendRequest};

/// Where Vonage's problem types point, followed by the code.
const MESSAGES_ERRORS: &str = "https://developer.vonage.com/api-errors/messages#";

/// The `api_key` claim of the fake's webhooks: the fake knows no account.
pub(crate) const FAKE_API_KEY: &str = "provider-sim";
/// The `application_id` claim of the fake's webhooks.
pub(crate) const FAKE_APPLICATION_ID: &str = "00000000-0000-4000-8000-000000000000";

/// Prefix of the reference of a send without `client_ref` (a hash of its
/// body): such references are not echoed back as `client_ref`.
const HASHED_REFERENCE: &str = "body-sha256:";

/// The Vonage fake: its secret signs webhooks and checks Basic auth.
pub(crate) struct VonageFake {
    secret: Arc<str>,
}

impl VonageFake {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    /// Whether `headers` carry credentials Vonage would take (see the
    /// module documentation: a JWT's structure only).
    fn authorized(&self, headers: &HeaderMap, now_secs: i64) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        match value.trim().split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                self.basic_ok(rest.trim())
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                rs256_well_formed(rest.trim(), now_secs)
            }
            _ => false,
        }
    }

    /// `api_key:api_secret` with any key and the simulator's secret.
    fn basic_ok(&self, credentials: &str) -> bool {
        let Some(text) = base64_decode(credentials).and_then(|b| String::from_utf8(b).ok()) else {
            return false;
        };
        let Some((key, secret)) = text.split_once(':') else {
            return false;
        };
        !key.is_empty() && bool::from(secret.as_bytes().ct_eq(self.secret.as_bytes()))
    }

    /// `body` posted to `url`, signed as Vonage signs its webhooks.
    fn signed_post(&self, url: &str, body: &Value) -> Option<Post> {
        let body = match serde_json::to_vec(body) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a Vonage webhook");
                return None;
            }
        };
        let claims = json!({
            "iat": now_ms().div_euclid(1000),
            "jti": uuid::Uuid::new_v4().to_string(),
            "iss": "Vonage",
            "payload_hash": hex::encode(digest::digest(&digest::SHA256, &body).as_ref()),
            "api_key": FAKE_API_KEY,
            "application_id": FAKE_APPLICATION_ID,
        });
        Some(Post {
            url: url.to_owned(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (
                    "authorization".into(),
                    format!("Bearer {}", hs256_jwt(&self.secret, &claims)),
                ),
            ],
            body,
        })
    }
}

impl Format for VonageFake {
    /// The message-status webhook (v1): `submitted` when sent,
    /// `delivered` with `usage`, `read` (on the channels that report it),
    /// `undeliverable` with `error`.
    fn receipt(&self, plan: &Plan, event: &Event, at_ms: i64) -> Option<Post> {
        let mut body = Map::new();
        body.insert("message_uuid".into(), plan.message_id.clone().into());
        body.insert("to".into(), plan.to.clone().into());
        body.insert("from".into(), plan.from.clone().into());
        body.insert("timestamp".into(), iso_timestamp(at_ms).into());
        body.insert("channel".into(), channel_name(plan.channel).into());
        if !plan.reference.starts_with(HASHED_REFERENCE) {
            body.insert("client_ref".into(), plan.reference.clone().into());
        }
        let status = match event {
            Event::Sent => "submitted",
            Event::Delivered { usage } => {
                let usage = json!({"currency": usage.currency, "price": usage.price});
                body.insert("usage".into(), usage);
                "delivered"
            }
            Event::Read if plan.channel.rules().reports_read => "read",
            Event::Read => return None,
            Event::Undeliverable { error } => {
                let error = json!({
                    "type": format!("{MESSAGES_ERRORS}{}", error.code),
                    "title": error.code.to_string(),
                    "detail": error.reason,
                });
                body.insert("error".into(), error);
                "undeliverable"
            }
        };
        body.insert("status".into(), status.into());
        self.signed_post(&plan.url, &Value::Object(body))
    }
}

impl Fake for VonageFake {
    /// The inbound-message webhook (v1) for a text or media message.
    fn inbound(&self, request: &InboundRequest, message_id: &str, at_ms: i64) -> Option<Post> {
        let url = request.callback_url.as_deref()?;
        let content = request.message.get("content")?;
        let kind = content.get("type")?.as_str()?;
        let value = match kind {
            "text" => content.get("text")?.as_str()?.into(),
            "image" | "audio" | "video" | "file" => {
                let media = content.get(kind)?;
                let mut object = Map::new();
                object.insert("url".into(), media.get("url")?.as_str()?.into());
                if let Some(caption) = media.get("caption").and_then(Value::as_str) {
                    object.insert("caption".into(), caption.into());
                }
                Value::Object(object)
            }
            _ => return None,
        };
        // Vonage's message uuids are hyphenated.
        let message_uuid = uuid::Uuid::parse_str(message_id)
            .map_or_else(|_| message_id.to_owned(), |u| u.to_string());
        let mut body = Map::new();
        body.insert("channel".into(), channel_name(request.channel).into());
        body.insert("message_uuid".into(), message_uuid.into());
        body.insert("to".into(), request.to.clone().into());
        body.insert("from".into(), request.from.clone().into());
        body.insert("timestamp".into(), iso_timestamp(at_ms).into());
        body.insert("message_type".into(), kind.into());
        body.insert(kind.into(), value);
        self.signed_post(url, &Value::Object(body))
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new().route("/v1/messages", post(send))
}

/// `POST /vonage/v1/messages`.
async fn send(
    State(app): State<App>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    super::record(&app, &method, &uri, &headers, &body);
    if !app
        .fakes
        .vonage
        .authorized(&headers, now_ms().div_euclid(1000))
    {
        return problem(
            StatusCode::UNAUTHORIZED,
            "https://developer.vonage.com/api-errors#unauthorized",
            "Unauthorized",
            "You did not provide correct credentials.",
            &[],
        );
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "https://developer.vonage.com/api-errors#invalid-json",
            "The request body did not contain valid JSON",
            "The request body could not be parsed as JSON.",
            &[],
        );
    };
    let valid = match validate(&message) {
        Ok(valid) => valid,
        Err(problems) => return problems.into_response(),
    };
    let reference = valid.client_ref.unwrap_or_else(|| {
        let hash = digest::digest(&digest::SHA256, &body);
        format!("{HASHED_REFERENCE}{}", hex::encode(hash.as_ref()))
    });
    let request = SendRequest {
        reference,
        channel: valid.channel,
        to: valid.to,
        from: valid.from,
        status_callback: valid.webhook_url,
        message: Some(message),
    };
    let decision = app
        .control
        .decide_as(&request, now_ms(), || uuid::Uuid::new_v4().to_string());
    answer(&app, request, decision).await
}

/// The answer to a valid send, and its webhooks once accepted.
async fn answer(app: &App, request: SendRequest, decision: Decision) -> Response {
    match decision {
        Decision::Unavailable {
            retry_after_secs: Some(secs),
        } => {
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("{MESSAGES_ERRORS}1000"),
                "Throttled",
                "Please wait, then retry your request",
                &[],
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Decision::Unavailable {
            retry_after_secs: None,
        } => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MESSAGES_ERRORS}1030"),
            "Internal error",
            "There was an error processing your request in the Platform.",
            &[],
        ),
        Decision::Reject(e) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("{MESSAGES_ERRORS}{}", e.code),
            &e.reason,
            &e.reason,
            &[],
        ),
        Decision::Accept {
            message_id,
            behaviour,
        } => {
            if let Some(ms) = behaviour.response_delay_ms {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            if let Some(url) = request.status_callback.clone() {
                let format = app.fakes.vonage.clone();
                app.receipts.schedule(Plan::new(
                    url,
                    message_id.clone(),
                    request,
                    behaviour,
                    format,
                ));
            }
            let body = json!({ "message_uuid": message_id });
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
    }
}

/// An RFC 7807 problem as Vonage answers it.
fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
    invalid: &[(String, String)],
) -> Response {
    let mut body = json!({
        "type": kind,
        "title": title,
        "detail": detail,
        "instance": uuid::Uuid::new_v4().simple().to_string(),
    });
    if !invalid.is_empty()
        && let Some(object) = body.as_object_mut()
    {
        let list: Vec<Value> = invalid
            .iter()
            .map(|(name, reason)| json!({"name": name, "reason": reason}))
            .collect();
        object.insert("invalid_parameters".into(), list.into());
    }
    (status, axum::Json(body)).into_response()
}

/// Vonage's channel names.
fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "sms",
        Channel::Mms => "mms",
        Channel::Whatsapp => "whatsapp",
        Channel::Messenger => "messenger",
        Channel::ViberServiceMsg => "viber_service",
        Channel::Rcs => "rcs",
    }
}

fn parse_channel(name: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| channel_name(*c) == name)
}

/// The message types each channel takes in "Send a message".
fn message_types(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Sms => &["text"],
        Channel::Mms => &["image", "vcard", "audio", "video"],
        Channel::Whatsapp => &[
            "text", "image", "audio", "video", "file", "template", "sticker", "custom",
        ],
        Channel::Messenger => &["text", "image", "audio", "video", "file", "custom"],
        Channel::ViberServiceMsg => &["text", "image", "video", "file", "custom"],
        Channel::Rcs => &["text", "image", "video", "file", "custom"],
    }
}

/// Longest `text` per channel, in characters.
fn max_text(channel: Channel) -> usize {
    match channel {
        Channel::Whatsapp => 4096,
        Channel::Messenger => 640,
        Channel::Rcs => 3072,
        _ => 1000,
    }
}

/// What the simulator needs of a valid send.
struct Valid {
    channel: Channel,
    to: String,
    from: String,
    client_ref: Option<String>,
    webhook_url: Option<String>,
}

/// The problems found in one request.
#[derive(Default)]
struct Problems {
    missing: bool,
    invalid: Vec<(String, String)>,
}

impl Problems {
    fn missing(&mut self, name: &str) {
        self.missing = true;
        self.invalid.push((name.into(), "is required.".into()));
    }

    fn invalid(&mut self, name: &str, reason: impl Into<String>) {
        self.invalid.push((name.into(), reason.into()));
    }

    /// A required string parameter, non-empty.
    fn string<'a>(&mut self, body: &'a Value, name: &str) -> Option<&'a str> {
        match body.get(name) {
            None | Some(Value::Null) => {
                self.missing(name);
                None
            }
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(_) => {
                self.invalid(name, "must be a non-empty string.");
                None
            }
        }
    }

    fn into_response(self) -> Response {
        let (code, title, detail) = if self.missing {
            (
                1010,
                "Missing params",
                "Your request is incomplete and missing some mandatory parameters.",
            )
        } else {
            (
                1020,
                "Invalid params",
                "The value of one or more parameters is invalid.",
            )
        };
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("{MESSAGES_ERRORS}{code}"),
            title,
            detail,
            &self.invalid,
        )
    }
}

/// Checks a send as Vonage does; what is wrong with it otherwise (its
/// answer: [`Problems::into_response`]).
fn validate(body: &Value) -> Result<Valid, Problems> {
    let mut p = Problems::default();
    if !body.is_object() {
        p.invalid("body", "must be a JSON object.");
        return Err(p);
    }
    let message_type = p.string(body, "message_type");
    let channel = p.string(body, "channel").and_then(|name| {
        let channel = parse_channel(name);
        if channel.is_none() {
            p.invalid(
                "channel",
                "must be one of sms, mms, whatsapp, messenger, viber_service.",
            );
        }
        channel
    });
    let to = p.string(body, "to");
    let from = p.string(body, "from");
    if let Some(channel) = channel {
        check_parties(&mut p, channel, to, from);
        if let Some(kind) = message_type {
            check_content(&mut p, body, channel, kind);
        }
        check_options(&mut p, body, channel);
    }
    let client_ref = check_client_ref(&mut p, body);
    let webhook_url = check_webhook(&mut p, body);
    match (channel, to, from) {
        (Some(channel), Some(to), Some(from)) if p.invalid.is_empty() => Ok(Valid {
            channel,
            to: to.to_owned(),
            from: from.to_owned(),
            client_ref,
            webhook_url,
        }),
        _ => Err(p),
    }
}

/// `to` is an E.164 number (7–15 digits, no `+`) except on Messenger,
/// where both sides are ids of up to 50 characters, as is Viber's `from`.
fn check_parties(p: &mut Problems, channel: Channel, to: Option<&str>, from: Option<&str>) {
    let is_number = |s: &str| (7..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(to) = to {
        if channel == Channel::Messenger {
            if to.chars().count() > 50 {
                p.invalid("to", "must be at most 50 characters.");
            }
        } else if !is_number(to) {
            p.invalid(
                "to",
                "must be a number in E.164 format, 7 to 15 digits without a leading + or 00.",
            );
        }
    }
    if let Some(from) = from
        && from.chars().count() > 50
    {
        p.invalid("from", "must be at most 50 characters.");
    }
}

/// The message type is one the channel takes, and its object is there.
fn check_content(p: &mut Problems, body: &Value, channel: Channel, kind: &str) {
    if !message_types(channel).contains(&kind) {
        p.invalid(
            "message_type",
            format!(
                "`{kind}` is not supported on channel `{}`.",
                channel_name(channel)
            ),
        );
        return;
    }
    match kind {
        "text" => match body.get("text") {
            Some(Value::String(t)) if !t.is_empty() => {
                if t.chars().count() > max_text(channel) {
                    p.invalid(
                        "text",
                        format!("must be at most {} characters.", max_text(channel)),
                    );
                }
            }
            None | Some(Value::Null) => p.missing("text"),
            Some(_) => p.invalid("text", "must be a non-empty string."),
        },
        "template" => check_template(p, body),
        "custom" => {
            if !body.get("custom").is_some_and(Value::is_object) {
                p.missing("custom");
            }
        }
        "sticker" => {
            let sticker = body.get("sticker");
            let url_or_id = ["url", "id"]
                .iter()
                .any(|f| sticker.and_then(|s| s.get(f)).is_some_and(Value::is_string));
            if !url_or_id {
                p.missing("sticker.url");
            }
        }
        media => check_media(p, body, channel, media),
    }
}

/// A media object with an http(s) `url`; a Viber video also needs
/// `thumb_url` and `viber_service.duration` and `file_size`.
fn check_media(p: &mut Problems, body: &Value, channel: Channel, kind: &str) {
    let media = body.get(kind);
    let url_name = format!("{kind}.url");
    match media.and_then(|m| m.get("url")) {
        Some(Value::String(url)) if is_http_url(url) => {}
        None | Some(Value::Null) => p.missing(&url_name),
        Some(_) => p.invalid(&url_name, "must be an http(s) URL."),
    }
    if channel == Channel::ViberServiceMsg && kind == "video" {
        if !media
            .and_then(|m| m.get("thumb_url"))
            .is_some_and(Value::is_string)
        {
            p.missing("video.thumb_url");
        }
        let viber = body.get("viber_service");
        for field in ["duration", "file_size"] {
            if !viber
                .and_then(|v| v.get(field))
                .is_some_and(Value::is_string)
            {
                p.missing(&format!("viber_service.{field}"));
            }
        }
    }
}

/// `template: {name, parameters: [strings]}` and `whatsapp: {locale,
/// policy: "deterministic"}`.
fn check_template(p: &mut Problems, body: &Value) {
    let template = body.get("template");
    match template.and_then(|t| t.get("name")) {
        Some(Value::String(name)) if !name.is_empty() => {}
        None | Some(Value::Null) => p.missing("template.name"),
        Some(_) => p.invalid("template.name", "must be a non-empty string."),
    }
    match template.and_then(|t| t.get("parameters")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => p.invalid("template.parameters", "must be an array of strings."),
    }
    let whatsapp = body.get("whatsapp");
    match whatsapp.and_then(|w| w.get("locale")) {
        Some(Value::String(locale)) if !locale.is_empty() => {}
        None | Some(Value::Null) => p.missing("whatsapp.locale"),
        Some(_) => p.invalid("whatsapp.locale", "must be a non-empty string."),
    }
    match whatsapp.and_then(|w| w.get("policy")) {
        None | Some(Value::Null) => {}
        Some(Value::String(policy)) if policy == "deterministic" => {}
        Some(_) => p.invalid("whatsapp.policy", "must be `deterministic`."),
    }
}

/// `messenger: {category, tag}` and `viber_service: {category, ttl,
/// type}`, when given.
fn check_options(p: &mut Problems, body: &Value, channel: Channel) {
    let one_of = |value: Option<&Value>, allowed: &[&str]| match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => allowed.contains(&s.as_str()),
        Some(_) => false,
    };
    match channel {
        Channel::Messenger => {
            let Some(options) = body.get("messenger").filter(|v| !v.is_null()) else {
                return;
            };
            let category = options.get("category");
            if !one_of(category, &["response", "update", "message_tag"]) {
                p.invalid(
                    "messenger.category",
                    "Must be one of `response`, `update` or `message_tag`.",
                );
            }
            let tagged = category.and_then(Value::as_str) == Some("message_tag");
            if tagged && !options.get("tag").is_some_and(Value::is_string) {
                p.missing("messenger.tag");
            }
        }
        Channel::ViberServiceMsg => {
            let Some(options) = body.get("viber_service").filter(|v| !v.is_null()) else {
                return;
            };
            if !one_of(options.get("category"), &["transaction", "promotion"]) {
                p.invalid(
                    "viber_service.category",
                    "Must be one of `transaction` or `promotion`.",
                );
            }
            match options.get("ttl") {
                None | Some(Value::Null) => {}
                Some(ttl) if ttl.as_i64().is_some_and(|t| (30..=259_200).contains(&t)) => {}
                Some(_) => p.invalid("viber_service.ttl", "must be an integer from 30 to 259200."),
            }
            if !options
                .get("type")
                .is_none_or(|t| t.is_string() || t.is_null())
            {
                p.invalid("viber_service.type", "must be a string.");
            }
        }
        _ => {}
    }
}

/// `client_ref`: up to 100 characters.
fn check_client_ref(p: &mut Problems, body: &Value) -> Option<String> {
    match body.get("client_ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= 100 => Some(r.clone()),
        Some(_) => {
            p.invalid("client_ref", "must be a string of up to 100 characters.");
            None
        }
    }
}

/// `webhook_url` (an http(s) URL) and `webhook_version` (`v0.1` or `v1`).
fn check_webhook(p: &mut Problems, body: &Value) -> Option<String> {
    match body.get("webhook_version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == "v1" || v == "v0.1" => {}
        Some(_) => p.invalid("webhook_version", "must be `v0.1` or `v1`."),
    }
    match body.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if is_http_url(url) => Some(url.clone()),
        Some(_) => {
            p.invalid("webhook_url", "must be an http(s) URL.");
            None
        }
    }
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// Whether `token` looks like the RS256 JWT of a Vonage application:
/// structure and claims only, since the fake has no public key.
fn rs256_well_formed(token: &str, now_secs: i64) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let json =
        |part: &str| base64_decode(part).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims)) = (json(header), json(claims)) else {
        return false;
    };
    let non_empty = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    header.get("alg").and_then(Value::as_str) == Some("RS256")
        && claims.get("application_id").is_some_and(non_empty)
        && claims.get("iat").is_some_and(Value::is_number)
        && claims.get("jti").is_some_and(non_empty)
        && claims
            .get("exp")
            .is_none_or(|exp| exp.as_i64().is_some_and(|exp| exp > now_secs))
        && base64_decode(signature).is_some_and(|s| !s.is_empty())
}

/// A JWT signed HS256 with `secret`, header `{"alg":"HS256","typ":"JWT"}`.
fn hs256_jwt(secret: &str, claims: &Value) -> String {
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = base64url(claims.to_string().as_bytes());
    let input = format!("{header}.{claims}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", base64url(tag.as_ref()))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 §5), as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(
                BASE64URL.get(sextet as usize).copied().unwrap_or(b'A'),
            ));
        }
    }
    out
}

/// Base64 in either alphabet (standard or url-safe), padded or not;
/// `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        // RFC 4648 §10 vectors, in the url-safe alphabet without padding.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_decode("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("ab$c"), None);
    }

    #[test]
    fn hs256_jwts_verify_with_the_secret() {
        let token = hs256_jwt("s3cret", &json!({"iss": "Vonage"}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            base64_decode(parts[0]).and_then(|b| String::from_utf8(b).ok()),
            Some(r#"{"alg":"HS256","typ":"JWT"}"#.to_owned())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
        let signed = format!("{}.{}", parts[0], parts[1]);
        let tag = base64_decode(parts[2]).expect("signature");
        assert!(hmac::verify(&key, signed.as_bytes(), &tag).is_ok());
    }

    #[test]
    fn jwts_are_checked_for_structure() {
        let part = |v: Value| base64url(v.to_string().as_bytes());
        let token = |header: Value, claims: Value| {
            format!("{}.{}.{}", part(header), part(claims), base64url(b"sig"))
        };
        let rs = json!({"alg": "RS256", "typ": "JWT"});
        let claims = json!({"application_id": "app", "iat": 100, "jti": "j", "exp": 1000});
        assert!(rs256_well_formed(&token(rs.clone(), claims.clone()), 500));
        assert!(!rs256_well_formed(&token(rs.clone(), claims.clone()), 1000));
        assert!(!rs256_well_formed(
            &token(json!({"alg": "HS256"}), claims),
            500
        ));
        assert!(!rs256_well_formed(
            &token(rs.clone(), json!({"iat": 1, "jti": "j"})),
            500
        ));
        assert!(!rs256_well_formed(
            &token(rs, json!({"application_id": "a", "jti": "j"})),
            500
        ));
        assert!(!rs256_well_formed("a.b", 0));
        assert!(!rs256_well_formed("a.b.c.d", 0));
        assert!(!rs256_well_formed("", 0));
    }

    #[test]
    fn basic_auth_takes_any_key_and_the_secret() {
        let fake = VonageFake::new("s3cret");
        assert!(fake.basic_ok(&base64url(b"key:s3cret")));
        assert!(fake.basic_ok("a2V5OnMzY3JldA=="));
        assert!(!fake.basic_ok(&base64url(b":s3cret")));
        assert!(!fake.basic_ok(&base64url(b"key:other")));
        assert!(!fake.basic_ok(&base64url(b"keys3cret")));
        assert!(!fake.basic_ok("%%%"));
    }

    /// The status and problem `type` of an invalid send.
    async fn refusal(body: Value) -> Option<(u16, String)> {
        let response = validate(&body).err()?.into_response();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .ok()?;
        let problem: Value = serde_json::from_slice(&bytes).ok()?;
        Some((status, problem["type"].as_str()?.to_owned()))
    }

    #[tokio::test]
    async fn sends_are_validated_per_channel() {
        let ok = |body: Value| validate(&body).is_ok();
        let base = |channel: &str, to: &str, kind: &str, extra: Value| {
            let mut body =
                json!({"channel": channel, "to": to, "from": "447700900001", "message_type": kind});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            body
        };
        let n = "447700900000";
        assert!(ok(base("sms", n, "text", json!({"text": "hi"}))));
        assert!(!ok(base("sms", n, "custom", json!({"custom": {}}))));
        assert!(!ok(base("sms", n, "text", json!({}))));
        assert!(!ok(base(
            "sms",
            "+447700900000",
            "text",
            json!({"text": "hi"})
        )));
        assert!(!ok(base(
            "sms",
            n,
            "text",
            json!({"text": "x".repeat(1001)})
        )));
        assert!(ok(base(
            "mms",
            n,
            "image",
            json!({"image": {"url": "https://x/a.jpg"}})
        )));
        assert!(!ok(base(
            "mms",
            n,
            "image",
            json!({"image": {"url": "ftp://x/a.jpg"}})
        )));
        assert!(!ok(base(
            "messenger",
            "u1",
            "template",
            json!({"template": {"name": "a:b"}})
        )));
        assert!(ok(base(
            "whatsapp",
            n,
            "template",
            json!({"template": {"name": "a:b", "parameters": ["1"]}, "whatsapp": {"policy": "deterministic", "locale": "en_GB"}})
        )));
        assert!(!ok(base(
            "whatsapp",
            n,
            "template",
            json!({"template": {"name": "a:b"}})
        )));
        assert!(!ok(base(
            "messenger",
            "u1",
            "text",
            json!({"text": "hi", "messenger": {"category": "message_tag"}})
        )));
        assert!(ok(base(
            "messenger",
            "u1",
            "text",
            json!({"text": "hi", "messenger": {"category": "message_tag", "tag": "ACCOUNT_UPDATE"}})
        )));
        assert!(!ok(base(
            "viber_service",
            n,
            "text",
            json!({"text": "hi", "viber_service": {"ttl": 10}})
        )));
        assert!(ok(base("rcs", n, "text", json!({"text": "hi"}))));
        assert!(!ok(base("telegram", n, "text", json!({"text": "hi"}))));
        assert!(!ok(json!({"channel": "sms"})));
        assert!(!ok(json!([1])));
        assert!(!ok(base(
            "sms",
            n,
            "text",
            json!({"text": "hi", "webhook_url": "nope"})
        )));
        // A missing parameter is 1010, an invalid one 1020.
        assert_eq!(
            refusal(base("sms", n, "text", json!({}))).await,
            Some((422, format!("{MESSAGES_ERRORS}1010")))
        );
        assert_eq!(
            refusal(base("sms", n, "text", json!({"text": 5}))).await,
            Some((422, format!("{MESSAGES_ERRORS}1020")))
        );
    }

    #[test]
    fn receipts_in_vonages_format() {
        use crate::behaviour::Behaviour;
        use dispatch_model::record::{MessageError, Usage};
        let fake = Arc::new(VonageFake::new("s3cret"));
        let plan = |channel| Plan {
            url: "http://127.0.0.1:1/cb".into(),
            message_id: "m-1".into(),
            reference: "ref".into(),
            channel,
            from: "447700900001".into(),
            to: "447700900000".into(),
            behaviour: Behaviour::default(),
            traceparent: None,
            format: fake.clone(),
        };
        let body = |post: Option<Post>| -> Value {
            post.and_then(|p| serde_json::from_slice(&p.body).ok())
                .unwrap_or(Value::Null)
        };
        let sms = plan(Channel::Sms);
        assert_eq!(
            body(fake.receipt(&sms, &Event::Sent, 0))["status"],
            "submitted"
        );
        let delivered = body(fake.receipt(
            &sms,
            &Event::Delivered {
                usage: Usage::eur("0.0333"),
            },
            1_577_887_200_000,
        ));
        assert_eq!(
            delivered,
            json!({"message_uuid": "m-1", "to": "447700900000", "from": "447700900001",
                   "timestamp": "2020-01-01T14:00:00.000Z", "status": "delivered", "channel": "sms",
                   "client_ref": "ref", "usage": {"currency": "EUR", "price": "0.0333"}})
        );
        assert!(
            fake.receipt(&sms, &Event::Read, 0).is_none(),
            "SMS reports no read"
        );
        let viber = plan(Channel::ViberServiceMsg);
        assert_eq!(
            body(fake.receipt(&viber, &Event::Read, 0))["channel"],
            "viber_service"
        );
        let failed = body(fake.receipt(
            &viber,
            &Event::Undeliverable {
                error: MessageError {
                    code: 1330,
                    reason: "Undeliverable".into(),
                },
            },
            0,
        ));
        assert_eq!(
            failed["error"],
            json!({"type": "https://developer.vonage.com/api-errors/messages#1330", "title": "1330", "detail": "Undeliverable"})
        );
    }
}
