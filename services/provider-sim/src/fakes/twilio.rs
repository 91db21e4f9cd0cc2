//! A fake of Twilio's Programmable Messaging API, for testing the Twilio
//! adapter against Twilio's documented behaviour.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` ("Create a
//!   Message resource",
//!   <https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>):
//!   HTTP Basic authentication with the path's account SID and the
//!   simulator's secret as the auth token, a form with `To`, `From` or
//!   `MessagingServiceSid`, `Body` and/or `MediaUrl`, and an optional
//!   `StatusCallback`. Refusals are Twilio's error body
//!   (`{"code", "message", "more_info", "status"}`) with Twilio's codes.
//!   Accepted sends answer 201 with the Message resource.
//! - Status callbacks
//!   (<https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks>):
//!   form-encoded `sent`, `delivered`, `read` (WhatsApp only, as with
//!   Twilio) and `undelivered` with an `ErrorCode`, posted to the
//!   send's `StatusCallback`.
//! - Incoming messages
//!   (<https://www.twilio.com/docs/messaging/guides/webhook-request>),
//!   posted on demand by `POST /control/inbound`.
//!
//! Callbacks carry `X-Twilio-Signature`, computed as
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security>
//! describes, with the simulator's secret as the auth token. This file
//! has its own form codec, Base64 and signature, written apart from the
//! adapter's, so that a mistake in one shows up against the other (and
//! against Twilio's published example, tested below).

use std::sync::Arc;

use aws_lc_rs::{digest, hmac};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dispatch_model::Channel;
use dispatch_model::record::now_ms;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::Fake;
use crate::control::Decision;
use crate::receipts::{Event, Format, Plan, Post};
use crate::server::App;
use crate::wire::{InboundRequest, SendRequest};

/// The API version in every path and callback.
const API_VERSION: &str = "2010-04-01";

/// The account SID the fake's callbacks name (Twilio's form: `AC` and 32
/// hex digits). Adapters verify callbacks by signature, not by this.
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// The header carrying the signature of a callback.
const SIGNATURE_HEADER: &str = "x-twilio-signature";

const FORM: &str = "application/x-www-form-urlencoded";

/// Spec error codes and the Twilio codes that stand for them, for the
/// fake's refusals and failed deliveries; each Twilio code's page is
/// `https://www.twilio.com/docs/api/errors/{code}`.
const TWILIO_CODES: &[(u32, u32)] = &[
    (1010, 21602), // Message body is required
    (1060, 20003), // Authentication failed
    (1090, 21617), // Body exceeds the 1600 character limit
    (1120, 21606), // 'From' is not a valid message-capable number
    (1140, 21408), // Permission not enabled for the region
    (1170, 21211), // Invalid 'To' Phone Number
    (1180, 30003), // Unreachable destination handset
    (1190, 30005), // Unknown destination handset
    (1210, 30007), // Message filtered
    (1240, 21610), // Attempt to send to unsubscribed recipient
    (1250, 21612), // Cannot be sent with this combination of To and From
    (1280, 30004), // Message blocked
    (1300, 63003), // Channel could not find To address
    (1310, 21614), // 'To' number is not a valid mobile number
    (1330, 30008), // Unknown error
    (1340, 63016), // Freeform message outside the allowed window
    (1380, 21620), // Invalid media URL(s)
    (1381, 11751), // Media exceeds messaging provider size limit
];

/// The Twilio code standing for the spec's `code`, if any.
fn twilio_code(code: u32) -> Option<u32> {
    TWILIO_CODES
        .iter()
        .find(|(spec, _)| *spec == code)
        .map(|(_, twilio)| *twilio)
}

pub(crate) struct TwilioFake {
    secret: Arc<str>,
}

impl TwilioFake {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    /// Whether `headers` carry HTTP Basic credentials `account:secret`.
    fn authorized(&self, headers: &HeaderMap, account: &str) -> bool {
        let Some((scheme, given)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
        else {
            return false;
        };
        let expected = base64(format!("{account}:{}", self.secret).as_bytes());
        scheme.eq_ignore_ascii_case("basic")
            && !account.is_empty()
            && bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes()))
    }

    /// A signed form-encoded callback to `url`.
    fn post(&self, url: &str, params: Vec<(String, String)>) -> Post {
        let signature = sign(&self.secret, url, &params);
        Post {
            url: url.to_owned(),
            headers: vec![
                ("content-type".into(), FORM.into()),
                (SIGNATURE_HEADER.into(), signature),
            ],
            body: Bytes::from(encode_form(&params)),
        }
    }
}

impl Format for TwilioFake {
    /// Twilio's status callback: `sent` when handed to the carrier, then
    /// `delivered` or `undelivered` (with `ErrorCode`), and `read` on
    /// WhatsApp only.
    fn receipt(&self, plan: &Plan, event: &Event, _at_ms: i64) -> Option<Post> {
        let whatsapp = plan.channel == Channel::Whatsapp;
        let (status, error) = match event {
            Event::Sent => ("sent", None),
            Event::Delivered { .. } => ("delivered", None),
            Event::Read if whatsapp => ("read", None),
            Event::Read => return None,
            Event::Undeliverable { error } => (
                "undelivered",
                Some(twilio_code(error.code).unwrap_or(30008)),
            ),
        };
        let mut params = pairs(&[
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", API_VERSION),
            ("MessageSid", &plan.message_id),
            ("MessageStatus", status),
            ("SmsSid", &plan.message_id),
            ("SmsStatus", status),
            ("To", &address(plan.channel, &plan.to)),
        ]);
        if is_number(&plan.from) {
            params.push(("From".into(), address(plan.channel, &plan.from)));
        }
        if whatsapp {
            params.push(("ChannelPrefix".into(), "whatsapp".into()));
        }
        if let Some(code) = error {
            params.push(("ErrorCode".into(), code.to_string()));
        }
        Some(self.post(&plan.url, params))
    }
}

impl Fake for TwilioFake {
    /// Twilio's incoming-message webhook for an SMS, MMS or WhatsApp
    /// message: the text as `Body`, a media file as `MediaUrl0` and
    /// `MediaContentType0`.
    fn inbound(&self, request: &InboundRequest, message_id: &str, _at_ms: i64) -> Option<Post> {
        let url = request.callback_url.as_deref()?;
        if !matches!(
            request.channel,
            Channel::Sms | Channel::Mms | Channel::Whatsapp
        ) {
            return None;
        }
        let sid = format!("SM{message_id}");
        let content = &request.message["content"];
        let media = inbound_media(content);
        let body = content["text"]
            .as_str()
            .or_else(|| media.as_ref().and_then(|m| m.caption.as_deref()))
            .unwrap_or_default();
        let mut params = pairs(&[
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", API_VERSION),
            ("Body", body),
            ("From", &address(request.channel, &request.from)),
            ("MessageSid", &sid),
            ("NumMedia", if media.is_some() { "1" } else { "0" }),
            ("NumSegments", "1"),
            ("SmsMessageSid", &sid),
            ("SmsSid", &sid),
            ("SmsStatus", "received"),
            ("To", &address(request.channel, &request.to)),
        ]);
        if let Some(media) = media {
            params.push(("MediaContentType0".into(), media.mime.into()));
            params.push(("MediaUrl0".into(), media.url));
        }
        if request.channel == Channel::Whatsapp {
            params.push(("WaId".into(), number_digits(&request.from)));
        }
        Some(self.post(url, params))
    }
}

/// A media file of an inbound message.
struct InboundMedia {
    url: String,
    mime: &'static str,
    caption: Option<String>,
}

/// The media file of `content` (`{"type": "image", "image": {"url": …}}`
/// and the like), if any.
fn inbound_media(content: &Value) -> Option<InboundMedia> {
    let kind = content["type"].as_str()?;
    let mime = match kind {
        "image" => "image/jpeg",
        "audio" => "audio/mpeg",
        "video" => "video/mp4",
        "file" => "application/pdf",
        _ => return None,
    };
    let media = &content[kind];
    Some(InboundMedia {
        url: media["url"].as_str()?.to_owned(),
        mime,
        caption: media["caption"].as_str().map(str::to_owned),
    })
}

pub(crate) fn routes() -> Router<App> {
    Router::new().route(
        "/2010-04-01/Accounts/{account_sid}/Messages.json",
        post(send),
    )
}

/// Twilio's error answer.
fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let body = json!({
        "code": code,
        "message": message.into(),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// The account SID of a path relative to the mount point.
fn account_of(path: &str) -> &str {
    path.strip_prefix("/2010-04-01/Accounts/")
        .and_then(|p| p.strip_suffix("/Messages.json"))
        .unwrap_or_default()
}

async fn send(
    State(app): State<App>,
    method: Method,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    super::record(&app, &method, &original, &headers, &body);
    let account = account_of(uri.path());
    if !app.fakes.twilio.authorized(&headers, account) {
        let mut response = error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return response;
    }
    let message = match Outgoing::parse(&headers, &body) {
        Ok(message) => message,
        Err(refusal) => return error(StatusCode::BAD_REQUEST, refusal.code, refusal.message),
    };
    let request = message.send_request(&body);
    let decision = app.control.decide_as(&request, now_ms(), || {
        format!("SM{}", uuid::Uuid::new_v4().simple())
    });
    match decision {
        Decision::Accept {
            message_id,
            behaviour,
        } => {
            if let Some(ms) = behaviour.response_delay_ms {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let created = message.resource(account, &message_id);
            if let Some(url) = request.status_callback.clone() {
                let format = app.fakes.twilio.clone();
                app.receipts
                    .schedule(Plan::new(url, message_id, request, behaviour, format));
            }
            (StatusCode::CREATED, Json(created)).into_response()
        }
        Decision::Reject(e) => {
            let code = twilio_code(e.code).unwrap_or(21211);
            let status = if code == 20003 {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, code, e.reason)
        }
        Decision::Unavailable { retry_after_secs } => unavailable(retry_after_secs),
    }
}

/// 429 with `Retry-After` when the behaviour names a wait, 503 otherwise.
fn unavailable(retry_after_secs: Option<u64>) -> Response {
    match retry_after_secs {
        Some(secs) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            20503,
            "Service Unavailable",
        ),
    }
}

/// Why Twilio refuses a send's form: its error code and message.
struct Refusal {
    code: u32,
    message: String,
}

/// A send request's form, checked as Twilio checks it.
struct Outgoing {
    to: String,
    from: Option<String>,
    service: Option<String>,
    body: Option<String>,
    media: Vec<String>,
    status_callback: Option<String>,
}

impl Outgoing {
    /// The form of a send, or Twilio's refusal of it (a 400). A body that
    /// is not form-encoded has no parameters, as far as Twilio is
    /// concerned.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, Refusal> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(FORM));
        let params = if is_form {
            decode_form(body)
        } else {
            Vec::new()
        };
        let first = |name: &str| {
            params
                .iter()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let message = Self {
            to: first("To").unwrap_or_default(),
            from: first("From"),
            service: first("MessagingServiceSid"),
            body: first("Body"),
            media: params
                .iter()
                .filter(|(n, v)| n == "MediaUrl" && !v.is_empty())
                .map(|(_, v)| v.clone())
                .collect(),
            status_callback: first("StatusCallback"),
        };
        message.check()?;
        Ok(message)
    }

    /// Twilio's checks, in the order it makes them.
    fn check(&self) -> Result<(), Refusal> {
        let bad = |code, message: String| Err(Refusal { code, message });
        if self.to.is_empty() {
            return bad(21604, "A 'To' phone number is required.".into());
        }
        if self.from.is_none() && self.service.is_none() {
            return bad(
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required to send a message.".into(),
            );
        }
        if self.body.is_none() && self.media.is_empty() {
            return bad(21602, "Message body is required.".into());
        }
        if !is_address(&self.to) {
            return bad(
                21211,
                format!("The 'To' number {} is not a valid phone number.", self.to),
            );
        }
        if let Some(from) = &self.from
            && is_whatsapp(from) != is_whatsapp(&self.to)
        {
            return bad(
                63007,
                "Twilio could not find a Channel with the specified From address".into(),
            );
        }
        if self.body.as_ref().is_some_and(|b| b.chars().count() > 1600) {
            return bad(
                21617,
                "The concatenated message body exceeds the 1600 character limit.".into(),
            );
        }
        if self.media.iter().any(|u| !is_http_url(u)) {
            return bad(21620, "Invalid media URL(s)".into());
        }
        if let Some(url) = self.status_callback.as_ref().filter(|u| !is_http_url(u)) {
            return bad(11100, format!("Invalid URL format: StatusCallback {url}"));
        }
        Ok(())
    }

    fn channel(&self) -> Channel {
        if is_whatsapp(&self.to) {
            Channel::Whatsapp
        } else if self.media.is_empty() {
            Channel::Sms
        } else {
            Channel::Mms
        }
    }

    /// The send as the simulator's control decides on it. The reference
    /// (which counts transient failures) is the body's hash: the adapter
    /// retries with the same body.
    fn send_request(&self, body: &[u8]) -> SendRequest {
        SendRequest {
            reference: hex::encode(digest::digest(&digest::SHA256, body)),
            channel: self.channel(),
            to: number_digits(&self.to),
            from: match (&self.from, &self.service) {
                (Some(from), _) => number_digits(from),
                (None, service) => service.clone().unwrap_or_default(),
            },
            status_callback: self.status_callback.clone(),
            message: Some(json!({"Body": self.body, "MediaUrl": self.media})),
        }
    }

    /// The Message resource of an accepted send
    /// (<https://www.twilio.com/docs/messaging/api/message-resource#message-properties>).
    fn resource(&self, account: &str, sid: &str) -> Value {
        let date = rfc2822(now_ms());
        let uri = format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}");
        // With a Messaging Service the message is `accepted` until a
        // sender is picked; otherwise `queued`.
        let status = if self.service.is_some() {
            "accepted"
        } else {
            "queued"
        };
        json!({
            "account_sid": account,
            "api_version": API_VERSION,
            "body": self.body.clone().unwrap_or_default(),
            "date_created": date,
            "date_sent": null,
            "date_updated": date,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": self.from,
            "messaging_service_sid": self.service,
            "num_media": self.media.len().to_string(),
            "num_segments": self.segments().to_string(),
            "price": null,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": format!("{uri}/Media.json")},
            "to": self.to,
            "uri": format!("{uri}.json"),
        })
    }

    /// Roughly Twilio's count: 160 characters in one SMS, 153 per part
    /// beyond; one WhatsApp message whatever its length.
    fn segments(&self) -> usize {
        let chars = self.body.as_deref().map_or(0, |b| b.chars().count());
        if is_whatsapp(&self.to) || chars <= 160 {
            1
        } else {
            chars.div_ceil(153)
        }
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn is_whatsapp(address: &str) -> bool {
    address.starts_with("whatsapp:")
}

/// `+` and 2 to 15 digits, the first not 0 (E.164), optionally behind
/// `whatsapp:`.
fn is_address(address: &str) -> bool {
    let number = address.strip_prefix("whatsapp:").unwrap_or(address);
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// The digits of a Twilio address (`whatsapp:+447…` → `447…`).
fn number_digits(address: &str) -> String {
    address
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(char::from)
        .collect()
}

/// Our number as Twilio writes it on `channel`; a short code (six digits
/// or fewer) as it is.
fn address(channel: Channel, number: &str) -> String {
    let digits = number_digits(number);
    match channel {
        Channel::Whatsapp => format!("whatsapp:+{digits}"),
        _ if digits.len() <= 6 => digits,
        _ => format!("+{digits}"),
    }
}

// --- Twilio's signature -------------------------------------------------

/// `X-Twilio-Signature`: Base64 of HMAC-SHA1 under the auth token of the
/// URL followed by every parameter's name and value, sorted by name.
fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut names: Vec<&(String, String)> = params.iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut data = url.as_bytes().to_vec();
    for (name, value) in names {
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(value.as_bytes());
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    base64(hmac::sign(&key, &data).as_ref())
}

// --- application/x-www-form-urlencoded and Base64 -------------------------

/// Form-encodes `params` (WHATWG URL, "application/x-www-form-urlencoded
/// serializer"): alphanumerics and `*-._` as they are, space as `+`,
/// every other byte as `%XX`.
fn encode_form(params: &[(String, String)]) -> String {
    fn encode(out: &mut String, s: &str) {
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(&mut out, name);
        out.push('=');
        encode(&mut out, value);
    }
    out
}

/// Decodes a form body: `+` is a space, `%XX` a byte (a malformed escape
/// stays as it is), invalid UTF-8 is replaced.
fn decode_form(body: &[u8]) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    fn decode(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            let escaped = (b == b'%')
                .then(|| Some(hex(*s.get(i + 1)?)? * 16 + hex(*s.get(i + 2)?)?))
                .flatten();
            match (b, escaped) {
                (_, Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (b'+', None) => {
                    out.push(b' ');
                    i += 1;
                }
                (b, None) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.iter().position(|b| *b == b'=') {
            Some(eq) => (decode(&part[..eq]), decode(&part[eq + 1..])),
            None => (decode(part), String::new()),
        })
        .collect()
}

/// Standard Base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Thu, 01 Jan 1970 00:00:00 +0000`: Twilio's dates (RFC 2822, GMT).
fn rfc2822(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (year, month, day) = civil(days);
    let weekday = DAYS[usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(month - 1).unwrap_or(0).min(11)];
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} +0000",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Year, month (1–12) and day of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of
    /// https://www.twilio.com/docs/usage/webhooks/webhooks-security.
    #[test]
    fn twilios_documented_signature() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(sign("12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        let mut reversed = params.clone();
        reversed.reverse();
        assert_eq!(
            sign("12345", url, &reversed),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn form_round_trip() {
        let params = pairs(&[
            ("To", "whatsapp:+447700900000"),
            ("Body", "Grüße & 50% off = a+b ~ ok"),
            ("Empty", ""),
        ]);
        let encoded = encode_form(&params);
        assert_eq!(
            encoded,
            "To=whatsapp%3A%2B447700900000&Body=Gr%C3%BC%C3%9Fe+%26+50%25+off+%3D+a%2Bb+%7E+ok&Empty="
        );
        assert_eq!(decode_form(encoded.as_bytes()), params);
        assert_eq!(
            decode_form(b"a=%zz%4&&b&c=%41%42+"),
            pairs(&[("a", "%zz%4"), ("b", ""), ("c", "AB ")])
        );
        assert_eq!(decode_form(b"x=%FF"), pairs(&[("x", "\u{FFFD}")]));
    }

    #[test]
    fn addresses() {
        assert!(is_address("+447700900000"));
        assert!(is_address("whatsapp:+447700900000"));
        for bad in [
            "447700900000",
            "+",
            "+0447",
            "+44 77",
            "whatsapp:447",
            "+1234567890123456",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
        assert_eq!(address(Channel::Sms, "447700900000"), "+447700900000");
        assert_eq!(address(Channel::Mms, "12345"), "12345");
        assert_eq!(
            address(Channel::Whatsapp, "447700900000"),
            "whatsapp:+447700900000"
        );
        assert_eq!(number_digits("whatsapp:+447700900000"), "447700900000");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2010-08-18T20:01:40Z, the date in Twilio's examples.
        assert_eq!(
            rfc2822(1_282_161_700_000),
            "Wed, 18 Aug 2010 20:01:40 +0000"
        );
        assert_eq!(rfc2822(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn every_spec_code_has_one_twilio_code() {
        for (i, (spec, twilio)) in TWILIO_CODES.iter().enumerate() {
            assert!(
                TWILIO_CODES[i + 1..]
                    .iter()
                    .all(|(s, t)| s != spec && t != twilio)
            );
        }
        assert_eq!(twilio_code(1300), Some(63003));
        assert_eq!(twilio_code(1999), None);
    }
}
