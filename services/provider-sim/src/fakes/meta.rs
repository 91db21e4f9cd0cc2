//! A fake of Meta's Graph API, for the Meta adapter's tests and the
//! end-to-end tests: the WhatsApp Cloud API and the Messenger Send API
//! (both `POST /{version}/{id}/messages`), and the app's webhook
//! subscriptions (`POST /{version}/{app_id}/subscriptions`).
//!
//! Sends are checked as Meta checks them and answered in Meta's shapes
//! (Graph API errors included); the simulator's
//! [`Control`](crate::Control) decides their outcome by recipient. The
//! fake calls back like Meta: only once a callback URL was subscribed for
//! the object (`whatsapp_business_account` for WhatsApp, `page` for
//! Messenger), after the same verification `GET` Meta makes, and with
//! bodies signed `X-Hub-Signature-256` by the simulator's secret (Meta's
//! app secret). The access token is the simulator's secret too.
//!
//! References: WhatsApp Cloud API messages
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages>),
//! webhooks (<https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components>)
//! and error codes (<https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>);
//! the Messenger Send API
//! (<https://developers.facebook.com/docs/messenger-platform/reference/send-api/>)
//! and error codes (<https://developers.facebook.com/docs/messenger-platform/error-codes>);
//! Graph API webhooks (<https://developers.facebook.com/docs/graph-api/webhooks/getting-started>)
//! and the subscriptions edge
//! (<https://developers.facebook.com/docs/graph-api/webhooks/subscriptions-edge>).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dispatch_model::Channel;
use dispatch_model::record::now_ms;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::Fake;
use crate::control::Decision;
use crate::receipts::{Event, Format, Plan, Post};
use crate::server::App;
use crate::wire::{InboundRequest, SendRequest};

/// The webhook object of WhatsApp notifications.
const WHATSAPP: &str = "whatsapp_business_account";
/// The webhook object of Messenger (Page) notifications.
const PAGE: &str = "page";
/// The header of Meta's notification signatures.
const SIGNATURE: &str = "x-hub-signature-256";
/// Timeout of the subscription's verification request.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct MetaFake {
    /// Meta's app secret and access token both.
    secret: Arc<str>,
    /// The subscribed callback URL, by webhook object.
    subscriptions: Mutex<HashMap<String, String>>,
}

impl MetaFake {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.into(),
            subscriptions: Mutex::new(HashMap::new()),
        }
    }

    /// The callback URL subscribed for `object`, if any.
    fn subscription(&self, object: &str) -> Option<String> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(object)
            .cloned()
    }

    fn subscribe(&self, object: &str, url: &str) {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(object.to_owned(), url.to_owned());
    }

    /// A notification to `url`, signed as Meta signs them.
    fn notification(&self, url: &str, body: &Value) -> Option<Post> {
        let body = match serde_json::to_vec(body) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a Meta notification");
                return None;
            }
        };
        Some(Post {
            url: url.to_owned(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (SIGNATURE.into(), signature(&self.secret, &body)),
            ],
            body,
        })
    }
}

/// `sha256=<hex HMAC-SHA256(app secret, body)>`, as Graph API webhooks
/// sign (kept apart from the adapter's check on purpose).
fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, body);
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// A number's digits (Meta accepts `+44 7700 900000` and answers with
/// the WhatsApp id `447700900000`).
fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// A stable numeric id derived from `seed` (media ids, challenges).
fn numeric_id(seed: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let n = digest
        .as_ref()
        .iter()
        .take(8)
        .fold(0u64, |n, b| (n << 8) | u64::from(*b));
    (n % 10_u64.pow(16)).to_string()
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/{version}/{id}/messages", post(send))
        .route("/{version}/{id}/subscriptions", post(subscribe))
}

// --- Graph API errors -------------------------------------------------

/// A Graph API error answer:
/// `{"error":{"message","type","code","error_subcode","error_data","fbtrace_id"}}`.
struct GraphError {
    status: StatusCode,
    code: i64,
    subcode: Option<i64>,
    message: String,
    details: Option<String>,
    retry_after_secs: Option<u64>,
}

impl GraphError {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            subcode: None,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    /// 400, code 100: a request Meta would not take.
    fn invalid(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 100, format!("(#100) {message}"))
    }

    /// 401, code 190: a missing or wrong access token.
    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "fbtrace_id": format!("A{}", &uuid::Uuid::new_v4().simple().to_string()[..22]),
        });
        if let Some(subcode) = self.subcode {
            error["error_subcode"] = json!(subcode);
        }
        if let Some(details) = self.details {
            error["error_data"] = json!({ "details": details });
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Meta's WhatsApp error code (and title) for a spec code: the code the
/// adapter reads back as that spec code; 131026 (undeliverable) for spec
/// codes Meta has no equivalent of.
fn whatsapp_code(spec: u32) -> (i64, &'static str) {
    match spec {
        1000 => (130429, "Rate limit hit"),
        1010 => (131008, "Required parameter is missing"),
        1020 => (131009, "Parameter value is not valid"),
        1022 => (132001, "Template name does not exist in the translation"),
        1060 => (131031, "Business Account locked"),
        1070 => (131042, "Business eligibility payment issue"),
        1140 => (3, "Capability or permissions issue"),
        1160 => (131030, "Recipient phone number not in allowed list"),
        1210 => (368, "Temporarily blocked for policies violations"),
        1240 => (131050, "User has stopped marketing messages"),
        1241 => (
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
        ),
        1330 => (131000, "Something went wrong"),
        1331 => (131016, "Service unavailable"),
        1340 => (131047, "Re-engagement message"),
        1370 => (190, "Access token has expired"),
        1380 => (131052, "Media download error"),
        1382 => (131053, "Media upload error"),
        _ => (131026, "Message undeliverable"),
    }
}

/// [`whatsapp_code`] for a send's rejection: codes Meta means as "try
/// again" would not reject, so those spec codes get 131026 too.
fn whatsapp_rejection(spec: u32) -> (i64, &'static str) {
    match whatsapp_code(spec) {
        (130429 | 131056 | 131000 | 131016, _) => whatsapp_code(0),
        code => code,
    }
}

/// Meta's Messenger error code, subcode and message for a spec code;
/// 551 ("This person isn't available right now") for the others.
fn messenger_code(spec: u32) -> (i64, Option<i64>, &'static str) {
    match spec {
        1020 => (100, None, "Invalid parameter"),
        1060 => (
            10,
            None,
            "Application does not have permission for this action",
        ),
        1210 => (
            368,
            None,
            "The action attempted has been deemed abusive or is otherwise disallowed",
        ),
        1300 => (100, Some(2018001), "No matching user found"),
        1340 => (
            10,
            Some(2018278),
            "This message is sent outside of allowed window.",
        ),
        1370 => (190, None, "Invalid OAuth access token."),
        1380 => (100, Some(2018047), "Upload attachment failure."),
        1381 => (
            100,
            Some(2018109),
            "Attachment size exceeds allowable limit",
        ),
        _ => (551, None, "This person isn't available right now."),
    }
}

/// The rejection of a send on `channel` for a spec error, as Meta writes
/// it; the spec's reason goes in `error_data.details`.
fn rejection(channel: Channel, error: &crate::wire::ProviderError) -> GraphError {
    let (code, subcode, title) = match channel {
        Channel::Messenger => messenger_code(error.code),
        _ => {
            let (code, title) = whatsapp_rejection(error.code);
            (code, None, title)
        }
    };
    GraphError {
        subcode,
        details: Some(error.reason.clone()),
        ..GraphError::new(StatusCode::BAD_REQUEST, code, format!("(#{code}) {title}"))
    }
}

/// A transient failure: 429 (Meta's rate limit) when the behaviour gives
/// a `Retry-After`, else 503 (Meta's "service unavailable").
fn unavailable(channel: Channel, retry_after_secs: Option<u64>) -> GraphError {
    let (code, message) = match (channel, retry_after_secs) {
        (Channel::Messenger, Some(_)) => (
            613,
            "(#613) Calls to this api have exceeded the rate limit.",
        ),
        (Channel::Messenger, None) => (
            2,
            "An unexpected error has occurred. Please retry your request later.",
        ),
        (_, Some(_)) => (130429, "(#130429) Rate limit hit"),
        (_, None) => (131016, "(#131016) Service unavailable"),
    };
    let status = match retry_after_secs {
        Some(_) => StatusCode::TOO_MANY_REQUESTS,
        None => StatusCode::SERVICE_UNAVAILABLE,
    };
    GraphError {
        retry_after_secs,
        ..GraphError::new(status, code, message)
    }
}

// --- Sends ------------------------------------------------------------

fn bearer_ok(headers: &HeaderMap, secret: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token.as_bytes().ct_eq(secret.as_bytes()).into())
}

/// What the fake needs of a valid send.
struct Send {
    channel: Channel,
    /// The recipient as the request wrote it.
    input: String,
    /// The recipient as the outcome table keys it (digits, or the PSID).
    to: String,
}

/// The send `body` names, checked as Meta checks it: WhatsApp when
/// `messaging_product` is `whatsapp`, Messenger when it has a
/// `recipient`.
fn read_send(body: &Value) -> Result<Send, GraphError> {
    if !body.is_object() {
        return Err(GraphError::invalid(
            "The request body must be a JSON object",
        ));
    }
    match body.get("messaging_product") {
        Some(product) if product == "whatsapp" => read_whatsapp(body),
        Some(_) => Err(GraphError::invalid(
            "Param messaging_product must be whatsapp",
        )),
        None if body.get("recipient").is_some() => read_messenger(body),
        None => Err(GraphError::invalid(
            "The parameter messaging_product is required.",
        )),
    }
}

fn non_empty<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Every `type` of the Cloud API's messages endpoint.
const WHATSAPP_TYPES: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "template",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

fn read_whatsapp(body: &Value) -> Result<Send, GraphError> {
    let input = non_empty(body, "to")
        .ok_or_else(|| GraphError::invalid("The parameter to is required."))?;
    let to = digits(input);
    if to.is_empty() {
        return Err(GraphError::invalid("Param to must be a phone number"));
    }
    if let Some(kind) = body.get("recipient_type")
        && kind != "individual"
        && kind != "group"
    {
        return Err(GraphError::invalid(
            "Param recipient_type must be individual",
        ));
    }
    // Meta defaults `type` to text.
    let kind = match body.get("type") {
        None => "text",
        Some(Value::String(kind)) if WHATSAPP_TYPES.contains(&kind.as_str()) => kind.as_str(),
        Some(_) => {
            return Err(GraphError::invalid(format!(
                "Param type must be one of {{{}}}",
                WHATSAPP_TYPES.join(", ")
            )));
        }
    };
    let object = body
        .get(kind)
        .filter(|o| o.is_object() || (kind == "contacts" && o.is_array()))
        .ok_or_else(|| GraphError::invalid(format!("The parameter {kind} is required.")))?;
    check_whatsapp_object(kind, object)?;
    Ok(Send {
        channel: Channel::Whatsapp,
        input: input.to_owned(),
        to,
    })
}

/// The object named by `type`: a text needs a body, media a link (http or
/// https) or an id, a template a name and a language code with well-formed
/// components.
fn check_whatsapp_object(kind: &str, object: &Value) -> Result<(), GraphError> {
    match kind {
        "text" => non_empty(object, "body")
            .map(|_| ())
            .ok_or_else(|| GraphError::invalid("The parameter text['body'] is required.")),
        "image" | "audio" | "video" | "document" | "sticker" => {
            match (non_empty(object, "link"), non_empty(object, "id")) {
                (Some(link), None) if is_http_url(link) => Ok(()),
                (Some(_), None) => Err(GraphError::invalid(format!(
                    "Param {kind}['link'] must be a valid URL"
                ))),
                (None, Some(_)) => Ok(()),
                _ => Err(GraphError::invalid(format!(
                    "Param {kind} must have exactly one of link or id"
                ))),
            }
        }
        "template" => check_template(object),
        _ => Ok(()),
    }
}

fn is_http_url(link: &str) -> bool {
    reqwest::Url::parse(link).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

fn check_template(template: &Value) -> Result<(), GraphError> {
    non_empty(template, "name")
        .ok_or_else(|| GraphError::invalid("The parameter template['name'] is required."))?;
    template
        .get("language")
        .and_then(|l| non_empty(l, "code"))
        .ok_or_else(|| {
            GraphError::invalid("The parameter template['language']['code'] is required.")
        })?;
    let Some(components) = template.get("components") else {
        return Ok(());
    };
    let components = components
        .as_array()
        .ok_or_else(|| GraphError::invalid("Param template['components'] must be an array"))?;
    for component in components {
        non_empty(component, "type").ok_or_else(|| {
            GraphError::invalid("The parameter template['components'][0]['type'] is required.")
        })?;
        let parameters = component.get("parameters").map(Value::as_array);
        if parameters == Some(None) {
            return Err(GraphError::invalid("Param parameters must be an array"));
        }
        for parameter in parameters.flatten().into_iter().flatten() {
            non_empty(parameter, "type").ok_or_else(|| {
                GraphError::invalid("The parameter parameters[0]['type'] is required.")
            })?;
        }
    }
    Ok(())
}

/// The message tags the Send API takes today.
const MESSENGER_TAGS: &[&str] = &[
    "ACCOUNT_UPDATE",
    "CONFIRMED_EVENT_UPDATE",
    "CUSTOMER_FEEDBACK",
    "HUMAN_AGENT",
    "POST_PURCHASE_UPDATE",
];

fn read_messenger(body: &Value) -> Result<Send, GraphError> {
    let psid = body
        .get("recipient")
        .and_then(|r| non_empty(r, "id"))
        .ok_or_else(|| GraphError::invalid("The parameter recipient['id'] is required."))?;
    match non_empty(body, "messaging_type") {
        Some("RESPONSE" | "UPDATE") => {}
        Some("MESSAGE_TAG") => {
            let tag = non_empty(body, "tag").ok_or_else(|| {
                GraphError::invalid("The parameter tag is required with MESSAGE_TAG.")
            })?;
            if !MESSENGER_TAGS.contains(&tag) {
                return Err(GraphError::invalid(format!(
                    "Param tag must be one of {{{}}}",
                    MESSENGER_TAGS.join(", ")
                )));
            }
        }
        Some(_) => {
            return Err(GraphError::invalid(
                "Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}",
            ));
        }
        None => {
            return Err(GraphError::invalid(
                "The parameter messaging_type is required.",
            ));
        }
    }
    let message = body
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| GraphError::invalid("The parameter message is required."))?;
    check_messenger_message(message)?;
    Ok(Send {
        channel: Channel::Messenger,
        input: psid.to_owned(),
        to: psid.to_owned(),
    })
}

/// A message is exactly one of a text and an attachment (a media by URL,
/// or a template).
fn check_messenger_message(message: &Value) -> Result<(), GraphError> {
    match (message.get("text"), message.get("attachment")) {
        (Some(text), None) if text.as_str().is_some_and(|t| !t.is_empty()) => Ok(()),
        (None, Some(attachment)) => {
            let kind = non_empty(attachment, "type");
            let payload = attachment.get("payload").filter(|p| p.is_object());
            match (kind, payload) {
                (Some("image" | "audio" | "video" | "file"), Some(payload)) => {
                    match non_empty(payload, "url") {
                        Some(url) if is_http_url(url) => Ok(()),
                        _ if payload.get("attachment_id").is_some() => Ok(()),
                        _ => Err(GraphError::invalid(
                            "Param message[attachment][payload][url] must be a valid URL",
                        )),
                    }
                }
                (Some("template"), Some(_)) => Ok(()),
                _ => Err(GraphError::invalid(
                    "Param message[attachment] needs a type (image, audio, video, file, template) and a payload",
                )),
            }
        }
        _ => Err(GraphError::invalid(
            "Message must have exactly one of text or attachment",
        )),
    }
}

/// The id of a send's body, to count its transient failures: a retry of
/// the same request is the same reference.
fn reference(body: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref())
}

fn new_message_id(channel: Channel) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    match channel {
        Channel::Messenger => format!("m_{id}"),
        _ => format!("wamid.{}", id.to_uppercase()),
    }
}

/// Meta's answer to an accepted send.
fn accepted(send: &Send, message_id: &str) -> Value {
    match send.channel {
        Channel::Messenger => json!({"recipient_id": send.to, "message_id": message_id}),
        _ => json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": send.input, "wa_id": send.to}],
            "messages": [{"id": message_id}],
        }),
    }
}

/// `POST /{version}/{id}/messages`: a WhatsApp or Messenger send.
async fn send(
    State(app): State<App>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    axum::extract::Path((_version, id)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    super::record(&app, &method, &uri, &headers, &body);
    if !bearer_ok(&headers, &app.secret) {
        return GraphError::unauthorized().into_response();
    }
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| GraphError::invalid(format!("Invalid JSON: {e}")))
        .and_then(|value| read_send(&value).map(|send| (send, value)));
    let (send, value) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let request = SendRequest {
        reference: reference(&body),
        channel: send.channel,
        to: send.to.clone(),
        from: id,
        status_callback: None,
        message: Some(value),
    };
    let decision = app
        .control
        .decide_as(&request, now_ms(), || new_message_id(send.channel));
    match decision {
        Decision::Unavailable { retry_after_secs } => {
            unavailable(send.channel, retry_after_secs).into_response()
        }
        Decision::Reject(error) => {
            tracing::debug!(to = %send.to, code = error.code, "meta send: rejected");
            rejection(send.channel, &error).into_response()
        }
        Decision::Accept {
            message_id,
            behaviour,
        } => {
            if let Some(ms) = behaviour.response_delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let object = match send.channel {
                Channel::Messenger => PAGE,
                _ => WHATSAPP,
            };
            if let Some(url) = app.fakes.meta.subscription(object) {
                let format = app.fakes.meta.clone();
                app.receipts.schedule(Plan::new(
                    url,
                    message_id.clone(),
                    request,
                    behaviour,
                    format,
                ));
            }
            Json(accepted(&send, &message_id)).into_response()
        }
    }
}

// --- Subscriptions ------------------------------------------------------

/// Graph API parameters from the query string and the body (JSON, or
/// `application/x-www-form-urlencoded`); the body wins.
fn parameters(uri: &axum::http::Uri, headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = form_pairs(uri.query().unwrap_or_default());
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
            params.extend(fields.into_iter().map(|(k, v)| (k, json_parameter(v))));
        }
    } else {
        params.extend(form_pairs(&String::from_utf8_lossy(body)));
    }
    params
}

/// A JSON value as a Graph API parameter: strings as they are, arrays of
/// strings joined by commas (`fields`), anything else as JSON.
fn json_parameter(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn form_pairs(raw: &str) -> HashMap<String, String> {
    let Ok(mut url) = reqwest::Url::parse("http://form.invalid/") else {
        return HashMap::new();
    };
    url.set_query(Some(raw));
    url.query_pairs().into_owned().collect()
}

/// `POST /{version}/{app_id}/subscriptions`: subscribe a callback URL to
/// an object's notifications, once it passed Meta's verification.
async fn subscribe(
    State(app): State<App>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    super::record(&app, &method, &uri, &headers, &body);
    let params = parameters(&uri, &headers, &body);
    let token_ok = params
        .get("access_token")
        .is_some_and(|t| t.as_bytes().ct_eq(app.secret.as_bytes()).into());
    if !(token_ok || bearer_ok(&headers, &app.secret)) {
        return GraphError::unauthorized().into_response();
    }
    let object = params.get("object").map(String::as_str).unwrap_or_default();
    if object != WHATSAPP && object != PAGE {
        return GraphError::invalid(format!(
            "Param object must be one of {{{WHATSAPP}, {PAGE}}}"
        ))
        .into_response();
    }
    let Some(callback_url) = params.get("callback_url").filter(|u| is_http_url(u)) else {
        return GraphError::invalid("Param callback_url must be a valid http(s) URL")
            .into_response();
    };
    let Some(verify_token) = params.get("verify_token").filter(|t| !t.is_empty()) else {
        return GraphError::invalid("The parameter verify_token is required.").into_response();
    };
    match verify_callback(callback_url, verify_token).await {
        Ok(()) => {
            app.fakes.meta.subscribe(object, callback_url);
            tracing::debug!(object, callback_url, "meta: subscribed");
            Json(json!({"success": true})).into_response()
        }
        Err(why) => GraphError::new(
            StatusCode::BAD_REQUEST,
            2200,
            format!("(#2200) Callback verification failed with the following errors: {why}"),
        )
        .into_response(),
    }
}

/// Meta's verification request: `GET {callback_url}?hub.mode=subscribe&
/// hub.challenge=…&hub.verify_token=…`, which must answer 200 with the
/// challenge as its whole body.
async fn verify_callback(callback_url: &str, verify_token: &str) -> Result<(), String> {
    let challenge = numeric_id(&uuid::Uuid::new_v4().to_string());
    let mut url = reqwest::Url::parse(callback_url).map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.challenge", &challenge)
        .append_pair("hub.verify_token", verify_token);
    let client = reqwest::Client::builder()
        .timeout(VERIFY_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("couldn't connect to server: {e}"))?;
    let status = response.status();
    let answer = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "HTTP Status Code = {}; HTTP Message = {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        ));
    }
    if answer != challenge {
        return Err(format!(
            "The URL couldn't be validated. Response does not match challenge, expected value=\"{challenge}\", received=\"{answer}\""
        ));
    }
    Ok(())
}

// --- Receipts -----------------------------------------------------------

/// One WhatsApp `statuses[]` notification, as the Cloud API's webhook
/// writes it; `display_phone_number` is the phone number id, since the
/// fake keeps no registry of numbers.
fn whatsapp_status(plan: &Plan, status: &str, at_ms: i64, errors: Option<Value>) -> Value {
    let mut entry = json!({
        "id": plan.message_id,
        "status": status,
        "timestamp": (at_ms / 1000).to_string(),
        "recipient_id": plan.to,
    });
    if status == "sent" || status == "delivered" {
        entry["conversation"] = json!({
            "id": numeric_id(&format!("{} {}", plan.from, plan.to)),
            "origin": {"type": "service"},
        });
        entry["pricing"] = json!({"billable": true, "pricing_model": "CBP", "category": "service"});
    }
    if let Some(errors) = errors {
        entry["errors"] = errors;
    }
    whatsapp_notification(&plan.from, json!({ "statuses": [entry] }))
}

/// `{"object":"whatsapp_business_account","entry":[{"changes":[{"field":
/// "messages","value":…}]}]}` around `value`, from our number `ours`.
fn whatsapp_notification(ours: &str, value: Value) -> Value {
    let mut value = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    value.insert("messaging_product".into(), "whatsapp".into());
    value.insert(
        "metadata".into(),
        json!({"display_phone_number": ours, "phone_number_id": ours}),
    );
    json!({
        "object": WHATSAPP,
        "entry": [{"id": ours, "changes": [{"field": "messages", "value": value}]}],
    })
}

/// A `failed` status's `errors`, the spec error reverse-mapped to Meta's.
fn whatsapp_errors(error: &dispatch_model::record::MessageError) -> Value {
    let (code, title) = whatsapp_code(error.code);
    json!([{
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": error.reason},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }])
}

/// One Messenger `messaging` event of the page `page` with the user `psid`.
fn page_notification(page: &str, psid: &str, at_ms: i64, event: (&str, Value)) -> Value {
    let mut messaging = json!({
        "sender": {"id": psid},
        "recipient": {"id": page},
        "timestamp": at_ms,
    });
    messaging[event.0] = event.1;
    json!({
        "object": PAGE,
        "entry": [{"id": page, "time": at_ms, "messaging": [messaging]}],
    })
}

/// Meta reports `sent`, `delivered`, `read` and `failed` for WhatsApp;
/// `delivery` and `read` (watermarks) for Messenger, which reports no
/// failures by webhook.
impl Format for MetaFake {
    fn receipt(&self, plan: &Plan, event: &Event, at_ms: i64) -> Option<Post> {
        let body = match (plan.channel, event) {
            (Channel::Messenger, Event::Delivered { .. }) => page_notification(
                &plan.from,
                &plan.to,
                at_ms,
                (
                    "delivery",
                    json!({"mids": [plan.message_id], "watermark": at_ms}),
                ),
            ),
            (Channel::Messenger, Event::Read) => page_notification(
                &plan.from,
                &plan.to,
                at_ms,
                ("read", json!({ "watermark": at_ms })),
            ),
            (Channel::Messenger, _) => return None,
            (_, Event::Sent) => whatsapp_status(plan, "sent", at_ms, None),
            (_, Event::Delivered { .. }) => whatsapp_status(plan, "delivered", at_ms, None),
            (_, Event::Read) => whatsapp_status(plan, "read", at_ms, None),
            (_, Event::Undeliverable { error }) => {
                whatsapp_status(plan, "failed", at_ms, Some(whatsapp_errors(error)))
            }
        };
        self.notification(&plan.url, &body)
    }
}

// --- Inbound messages -----------------------------------------------------

/// The media of our `content` (`{"type":"image","image":{"url",
/// "caption"}}`): its URL and caption.
fn media_of<'a>(content: &'a Value, kind: &str) -> Option<(&'a str, Option<&'a str>)> {
    let media = content.get(kind)?;
    let url = non_empty(media, "url")?;
    Some((url, non_empty(media, "caption")))
}

/// A user's WhatsApp message as the Cloud API notifies it: media by id
/// (derived from the message id) with a MIME type, never by URL.
fn whatsapp_message(content: &Value, message_id: &str) -> Option<(&'static str, Value)> {
    let kind = content.get("type")?.as_str()?;
    let media = |wa_kind: &'static str, mime: &str| {
        let (url, caption) = media_of(content, kind)?;
        let mut object = json!({
            "id": numeric_id(message_id),
            "mime_type": mime,
            "sha256": reference(url.as_bytes()),
        });
        if let Some(caption) = caption.filter(|_| kind != "audio") {
            object["caption"] = json!(caption);
        }
        if wa_kind == "document" {
            object["filename"] = json!(url.rsplit('/').next().unwrap_or(url));
        }
        Some((wa_kind, object))
    };
    match kind {
        "text" => Some(("text", json!({ "body": non_empty(content, "text")? }))),
        "image" => media("image", "image/jpeg"),
        "audio" => media("audio", "audio/ogg; codecs=opus"),
        "video" => media("video", "video/mp4"),
        "file" => media("document", "application/pdf"),
        "location" => {
            let location = content.get("location")?;
            let coordinate = |key: &str| -> Option<f64> {
                match location.get(key)? {
                    Value::String(s) => s.parse().ok(),
                    other => other.as_f64(),
                }
            };
            let mut object =
                json!({"latitude": coordinate("lat")?, "longitude": coordinate("long")?});
            for key in ["name", "address"] {
                if let Some(v) = non_empty(location, key) {
                    object[key] = json!(v);
                }
            }
            Some(("location", object))
        }
        _ => None,
    }
}

fn whatsapp_inbound(request: &InboundRequest, message_id: &str, at_ms: i64) -> Option<Value> {
    let content = request.message.get("content")?;
    let (kind, object) = whatsapp_message(content, message_id)?;
    let (from, ours) = (digits(&request.from), digits(&request.to));
    let mut message = json!({
        "from": from,
        "id": format!("wamid.{}", message_id.to_uppercase()),
        "timestamp": (at_ms / 1000).to_string(),
        "type": kind,
    });
    message[kind] = object;
    Some(whatsapp_notification(
        &ours,
        json!({
            "contacts": [{"profile": {"name": "Simulated user"}, "wa_id": from}],
            "messages": [message],
        }),
    ))
}

/// A user's Messenger message: `message.text`, or one attachment by URL.
fn messenger_inbound(request: &InboundRequest, message_id: &str, at_ms: i64) -> Option<Value> {
    let content = request.message.get("content")?;
    let kind = content.get("type")?.as_str()?;
    let mut message = json!({ "mid": format!("m_{message_id}") });
    match kind {
        "text" => message["text"] = json!(non_empty(content, "text")?),
        "image" | "audio" | "video" | "file" => {
            let (url, _) = media_of(content, kind)?;
            message["attachments"] = json!([{"type": kind, "payload": {"url": url}}]);
        }
        _ => return None,
    }
    Some(page_notification(
        &request.to,
        &request.from,
        at_ms,
        ("message", message),
    ))
}

impl Fake for MetaFake {
    fn inbound(&self, request: &InboundRequest, message_id: &str, at_ms: i64) -> Option<Post> {
        let url = request.callback_url.as_deref()?;
        let body = match request.channel {
            Channel::Whatsapp => whatsapp_inbound(request, message_id, at_ms)?,
            Channel::Messenger => messenger_inbound(request, message_id, at_ms)?,
            _ => return None,
        };
        self.notification(url, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_graph_apis() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sends_are_checked_like_metas() {
        let ok = |body: Value| {
            read_send(&body)
                .map(|s| (s.channel, s.to))
                .map_err(|e| e.code)
        };
        assert_eq!(
            ok(
                json!({"messaging_product": "whatsapp", "to": "+44 7700 900000", "text": {"body": "hi"}})
            ),
            Ok((Channel::Whatsapp, "447700900000".into()))
        );
        assert_eq!(
            ok(
                json!({"recipient": {"id": "psid"}, "messaging_type": "MESSAGE_TAG", "tag": "ACCOUNT_UPDATE",
                      "message": {"attachment": {"type": "file", "payload": {"url": "https://x/y.pdf"}}}})
            ),
            Ok((Channel::Messenger, "psid".into()))
        );
        for bad in [
            json!([]),
            json!({}),
            json!({"messaging_product": "sms", "to": "1"}),
            json!({"messaging_product": "whatsapp", "text": {"body": "hi"}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "fax", "fax": {}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {"body": ""}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "image", "image": {"link": "ftp://x"}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "image", "image": {"link": "https://x", "id": "1"}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "template", "template": {"name": "x"}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "template",
                   "template": {"name": "x", "language": {"code": "en"}, "components": [{"type": "body", "parameters": [{}]}]}}),
            json!({"recipient": {"id": "p"}, "message": {"text": "x"}}),
            json!({"recipient": {"id": "p"}, "messaging_type": "MESSAGE_TAG", "message": {"text": "x"}}),
            json!({"recipient": {"id": "p"}, "messaging_type": "MESSAGE_TAG", "tag": "SHIPPING_UPDATE", "message": {"text": "x"}}),
            json!({"recipient": {"id": "p"}, "messaging_type": "RESPONSE"}),
            json!({"recipient": {"id": "p"}, "messaging_type": "RESPONSE", "message": {"text": "x", "attachment": {}}}),
            json!({"recipient": {}, "messaging_type": "RESPONSE", "message": {"text": "x"}}),
        ] {
            assert_eq!(ok(bad.clone()).err(), Some(100), "{bad}");
        }
    }

    #[test]
    fn rejections_name_metas_codes() {
        let error = |code| crate::wire::ProviderError::new(code, "why");
        let wa = |code| {
            let e = rejection(Channel::Whatsapp, &error(code));
            (e.code, e.subcode)
        };
        assert_eq!(wa(1300), (131026, None));
        assert_eq!(wa(1340), (131047, None));
        assert_eq!(wa(1000), (131026, None), "rate limits do not reject");
        assert_eq!(wa(1999), (131026, None));
        let ms = |code| {
            let e = rejection(Channel::Messenger, &error(code));
            (e.code, e.subcode)
        };
        assert_eq!(ms(1340), (10, Some(2018278)));
        assert_eq!(ms(1300), (100, Some(2018001)));
        assert_eq!(ms(1999), (551, None));
    }

    #[test]
    fn parameters_from_forms_and_json() {
        let pairs =
            form_pairs("object=page&callback_url=http%3A%2F%2Fx%2Fy%3Fa%3D1&fields=a,b&v=a+b");
        assert_eq!(
            pairs.get("callback_url").map(String::as_str),
            Some("http://x/y?a=1")
        );
        assert_eq!(pairs.get("v").map(String::as_str), Some("a b"));
        assert_eq!(
            json_parameter(json!(["messages", "message_reads"])),
            "messages,message_reads"
        );
        assert_eq!(json_parameter(json!(true)), "true");
    }
}
