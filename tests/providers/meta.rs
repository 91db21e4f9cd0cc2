//! The Meta adapter against the simulator's Meta fake, over HTTP: the
//! exact request for each content type on each channel, how each class of
//! error comes back, the webhook subscription handshake, and the fake's
//! signed receipts and inbound messages read back into events. No broker
//! or Redis needed.
//!
//! The fake posts notifications to a small receiver in this test, which
//! keeps them (headers and raw body) for the adapter to read, and answers
//! the fake's verification `GET` through the adapter, as ingest does.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{
    Captured, VERIFY_BODY, VERIFY_TEMPLATE, assert_unauthorized, events, json_body as body,
    permanent, the_inbound, the_receipt, with,
};
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::{MessageError, MessageStatus};
use dispatch_provider_sim::wire::ProviderError;
use dispatch_provider_sim::{Behaviour, Delivery};
use dispatch_providers::meta::Meta;
use dispatch_providers::{
    Accepted, CallbackError, CallbackEvent, CallbackOutcome, CallbackRequest, Method, Provider,
    SendError,
};
use serde_json::{Value, json};

const PHONE_NUMBER_ID: &str = "106540352242922";
const PAGE_ID: &str = "1234567890";
const APP_ID: &str = "188559381496048";
const VERIFY_TOKEN: &str = "verify-me";

type Harness = common::Harness<Meta>;

/// The receiver's state: the settings it verifies with, by route, and
/// where it keeps the notifications.
#[derive(Clone)]
struct ReceiverState {
    meta: Arc<Meta>,
    whatsapp: ProviderSettings,
    messenger: ProviderSettings,
    captured: common::Receiver,
}

impl ReceiverState {
    fn settings(&self, route: &str) -> &ProviderSettings {
        if route == "default-messenger" {
            &self.messenger
        } else {
            &self.whatsapp
        }
    }
}

impl FromRef<ReceiverState> for common::Receiver {
    fn from_ref(receiver: &ReceiverState) -> Self {
        receiver.captured.clone()
    }
}

/// Meta's verification `GET`, answered by the adapter as ingest does.
async fn verification(
    State(receiver): State<ReceiverState>,
    Path(route): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request = CallbackRequest {
        method: &Method::GET,
        url: "",
        hook: "",
        query: query.as_deref().unwrap_or_default(),
        headers: &headers,
        body: &[],
    };
    match receiver.meta.callback(receiver.settings(&route), &request) {
        Ok(CallbackOutcome::Challenge(challenge)) => (StatusCode::OK, challenge).into_response(),
        Ok(other) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}")).into_response(),
        Err(CallbackError::Forbidden(why)) => (StatusCode::FORBIDDEN, why).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn settings(sim: SocketAddr, secret: &str, channel: Channel) -> ProviderSettings {
    let id = match channel {
        Channel::Whatsapp => ("phone_number_id", PHONE_NUMBER_ID),
        _ => ("page_id", PAGE_ID),
    };
    common::provider_settings(
        ProviderKind::Meta,
        format!("http://{sim}/meta"),
        &[
            ("access_token", secret),
            id,
            ("app_secret", secret),
            ("verify_token", VERIFY_TOKEN),
        ],
        &[],
        &format!("default-{channel}"),
    )
}

async fn start() -> Harness {
    common::start_with(
        Meta::new(reqwest::Client::new()),
        None,
        |sim, secret, captured| {
            let state = ReceiverState {
                meta: Arc::new(Meta::new(reqwest::Client::new())),
                whatsapp: settings(sim, secret, Channel::Whatsapp),
                messenger: settings(sim, secret, Channel::Messenger),
                captured,
            };
            axum::Router::new()
                .route(
                    "/callbacks/meta/{route}",
                    axum::routing::get(verification).post(common::capture),
                )
                .with_state(state)
        },
    )
    .await
}

/// A send command on `channel` to `to`, with `message` as the message's
/// `message` field.
fn command(channel: Channel, to: &str, message: Value) -> SendCommand {
    let (to, from) = match channel {
        Channel::Whatsapp => (
            common::number("whatsapp", to),
            common::number("whatsapp", "447700900999"),
        ),
        _ => (
            common::id("messenger", to),
            common::id("messenger", PAGE_ID),
        ),
    };
    common::send_command(channel, "acct", to, from, message)
}

fn text(text: &str) -> Value {
    json!({"content": {"type": "text", "text": text}})
}

fn spec_code(result: Result<Accepted, SendError>) -> u32 {
    permanent(result).code
}

fn is_transient(result: &Result<Accepted, SendError>) -> bool {
    matches!(result, Err(SendError::Transient { .. }))
}

impl Harness {
    fn settings(&self, channel: Channel) -> ProviderSettings {
        settings(self.sim, &self.secret, channel)
    }

    async fn send(
        &self,
        settings: &ProviderSettings,
        command: &SendCommand,
    ) -> Result<Accepted, SendError> {
        self.submit(
            settings,
            command,
            "http://ingest.invalid/callbacks/meta/unused",
        )
        .await
    }

    fn callback_url(&self, route: &str) -> String {
        format!("{}/callbacks/meta/{route}", self.receiver.base)
    }

    /// Subscribes the receiver's `route` to `object`, by form, as Meta's
    /// own example does.
    async fn subscribe(&self, object: &str, route: &str, verify_token: &str) -> reqwest::Response {
        let form = [
            ("object", object),
            ("callback_url", &self.callback_url(route)),
            ("fields", "messages,message_deliveries,message_reads"),
            ("verify_token", verify_token),
            ("access_token", &self.secret),
        ];
        self.http
            .post(format!(
                "http://{}/meta/v21.0/{APP_ID}/subscriptions",
                self.sim
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).expect("form"))
            .send()
            .await
            .expect("subscribe")
    }

    async fn subscribed(&self, object: &str, route: &str) {
        let response = self.subscribe(object, route, VERIFY_TOKEN).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({"success": true}));
    }

    /// Waits for `n` notifications matching `matches`.
    async fn wait_for(&self, n: usize, matches: impl Fn(&Value) -> bool) -> Vec<Captured> {
        self.receiver.exactly(n, |c| matches(&c.json())).await
    }

    /// Hands a captured notification to the adapter, as ingest would.
    fn read(
        &self,
        settings: &ProviderSettings,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        self.feed(
            settings,
            "",
            &self.callback_url(&settings.route),
            headers,
            body,
        )
    }

    /// Makes a user write to us through the fake (`/control/inbound`).
    async fn user_writes(&self, channel: Channel, from: &str, to: &str, message: Value) {
        self.inbound(json!({
            "provider": "meta",
            "channel": channel,
            "from": from,
            "to": to,
            "message": message,
            "callback_url": self.callback_url(&format!("default-{channel}")),
        }))
        .await;
    }

    /// Sends to `to` on WhatsApp, whose delivery fails, and reads the
    /// `failed` status back.
    async fn failed_receipt(&self, settings: &ProviderSettings, to: &str) -> Receipt {
        let id = self
            .send(settings, &command(Channel::Whatsapp, to, text("x")))
            .await
            .expect("accepted")
            .provider_message_id;
        let failed = self
            .wait_for(1, |n| status_of(n) == (id.clone(), "failed".into()))
            .await;
        let got = events(self.read(settings, &failed[0].headers, &failed[0].body));
        the_receipt(&got).clone()
    }
}

fn status_of(notification: &Value) -> (String, String) {
    let status = &notification["entry"][0]["changes"][0]["value"]["statuses"][0];
    (
        status["id"].as_str().unwrap_or_default().to_owned(),
        status["status"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn whatsapp_requests_per_content_type() {
    let h = start().await;
    let s = h.settings(Channel::Whatsapp);
    let envelope = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900000"});
    let cases = [
        (
            text("Hello"),
            json!({"type": "text", "text": {"preview_url": false, "body": "Hello"}}),
        ),
        (
            json!({"content": {"type": "image", "image": {"url": "https://example.com/cat.jpg", "caption": "A cat"}}}),
            json!({"type": "image", "image": {"link": "https://example.com/cat.jpg", "caption": "A cat"}}),
        ),
        (
            json!({"content": {"type": "audio", "audio": {"url": "https://example.com/a.mp3", "caption": "none"}}}),
            json!({"type": "audio", "audio": {"link": "https://example.com/a.mp3"}}),
        ),
        (
            json!({"content": {"type": "video", "video": {"url": "https://example.com/v.mp4", "caption": "Watch"}}}),
            json!({"type": "video", "video": {"link": "https://example.com/v.mp4", "caption": "Watch"}}),
        ),
        (
            json!({"content": {"type": "file", "file": {"url": "https://example.com/docs/Invoice%2042.pdf", "caption": "Your invoice"}}}),
            json!({"type": "document", "document": {"link": "https://example.com/docs/Invoice%2042.pdf",
                   "caption": "Your invoice", "filename": "Invoice 42.pdf"}}),
        ),
    ];
    for (message, expected) in cases {
        let accepted = h
            .send(&s, &command(Channel::Whatsapp, "+44 7700 900000", message))
            .await
            .expect("accepted");
        assert!(
            accepted.provider_message_id.starts_with("wamid."),
            "{accepted:?}"
        );
        let request = h.last_request();
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            format!("/meta/v21.0/{PHONE_NUMBER_ID}/messages")
        );
        let bearer = format!("Bearer {}", h.secret);
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(body(&request), with(&envelope, expected));
    }

    // Custom content is Meta's object; `messaging_product` and `to` are ours.
    let custom = json!({"content": {"type": "custom", "custom": {
        "messaging_product": "other", "to": "1", "type": "location",
        "location": {"latitude": 51.5, "longitude": -0.1, "name": "Office"}}}});
    h.send(&s, &command(Channel::Whatsapp, "447700900000", custom))
        .await
        .expect("accepted");
    assert_eq!(
        body(&h.last_request()),
        with(
            &envelope,
            json!({"type": "location", "location": {"latitude": 51.5, "longitude": -0.1, "name": "Office"}})
        )
    );

    // The Graph version is a credential.
    let mut v19 = s.clone();
    v19.credentials
        .insert("graph_version".into(), "v19.0".into());
    h.send(&v19, &command(Channel::Whatsapp, "447700900000", text("x")))
        .await
        .expect("accepted");
    assert_eq!(
        h.last_request().path,
        format!("/meta/v19.0/{PHONE_NUMBER_ID}/messages")
    );
}

#[tokio::test]
async fn whatsapp_templates_and_their_parameters() {
    let h = start().await;
    let mut s = h.settings(Channel::Whatsapp);
    s.templates
        .insert(VERIFY_TEMPLATE.into(), VERIFY_BODY.into());
    let template = |params: &[&str], whatsapp: Value| json!({"content": common::template(VERIFY_TEMPLATE, params), "whatsapp": whatsapp});
    let message = template(
        &["Nexmo Verification", "64873", "10"],
        json!({"policy": "deterministic", "locale": "en-GB"}),
    );
    h.send(&s, &command(Channel::Whatsapp, "447700900000", message))
        .await
        .expect("accepted");
    assert_eq!(
        body(&h.last_request()),
        json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900000",
            "type": "template",
            "template": {
                "name": "verify",
                "language": {"policy": "deterministic", "code": "en_GB"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Nexmo Verification"},
                    {"type": "text", "text": "64873"},
                    {"type": "text", "text": "10"},
                ]}],
            },
        })
    );

    // Without parameters: no components, and the default language.
    let bare = json!({"content": {"type": "template", "template": {"name": "acme:welcome"}}});
    h.send(&s, &command(Channel::Whatsapp, "447700900000", bare))
        .await
        .expect("accepted");
    assert_eq!(
        body(&h.last_request())["template"],
        json!({"name": "welcome", "language": {"policy": "deterministic", "code": "en_US"}})
    );

    // A parameter count that does not match the stored body: 1022, and
    // Meta is not called.
    let before = h.requests().len();
    let wrong = template(&["Nexmo Verification", "64873"], json!({}));
    assert_eq!(
        spec_code(
            h.send(&s, &command(Channel::Whatsapp, "447700900000", wrong))
                .await
        ),
        1022
    );
    assert_eq!(h.requests().len(), before);
}

#[tokio::test]
async fn messenger_requests_and_messaging_types() {
    let h = start().await;
    let s = h.settings(Channel::Messenger);
    let psid = "7654321000";
    let cases = [
        (
            text("Hi"),
            json!({"messaging_type": "RESPONSE", "message": {"text": "Hi"}}),
        ),
        (
            json!({"content": {"type": "image", "image": {"url": "https://example.com/cat.jpg", "caption": "dropped"}},
                   "messenger": {"category": "update"}}),
            json!({"messaging_type": "UPDATE", "message": {"attachment": {"type": "image",
                   "payload": {"url": "https://example.com/cat.jpg", "is_reusable": false}}}}),
        ),
        (
            json!({"content": {"type": "audio", "audio": {"url": "https://example.com/a.mp3"}},
                   "messenger": {"category": "response"}}),
            json!({"messaging_type": "RESPONSE", "message": {"attachment": {"type": "audio",
                   "payload": {"url": "https://example.com/a.mp3", "is_reusable": false}}}}),
        ),
        (
            json!({"content": {"type": "video", "video": {"url": "https://example.com/v.mp4"}}}),
            json!({"messaging_type": "RESPONSE", "message": {"attachment": {"type": "video",
                   "payload": {"url": "https://example.com/v.mp4", "is_reusable": false}}}}),
        ),
        (
            json!({"content": {"type": "file", "file": {"url": "https://example.com/terms.pdf"}},
                   "messenger": {"category": "message_tag", "tag": "ACCOUNT_UPDATE"}}),
            json!({"messaging_type": "MESSAGE_TAG", "tag": "ACCOUNT_UPDATE", "message": {"attachment": {"type": "file",
                   "payload": {"url": "https://example.com/terms.pdf", "is_reusable": false}}}}),
        ),
        (
            json!({"content": {"type": "custom", "custom": {"attachment": {"type": "template",
                   "payload": {"template_type": "button", "text": "Pick one", "buttons": []}}}}}),
            json!({"messaging_type": "RESPONSE", "message": {"attachment": {"type": "template",
                   "payload": {"template_type": "button", "text": "Pick one", "buttons": []}}}}),
        ),
    ];
    for (message, expected) in cases {
        let accepted = h
            .send(&s, &command(Channel::Messenger, psid, message))
            .await
            .expect("accepted");
        assert!(
            accepted.provider_message_id.starts_with("m_"),
            "{accepted:?}"
        );
        let request = h.last_request();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, format!("/meta/v21.0/{PAGE_ID}/messages"));
        let bearer = format!("Bearer {}", h.secret);
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
        assert_eq!(
            body(&request),
            with(&json!({"recipient": {"id": psid}}), expected)
        );
    }

    // `message_tag` without a tag: 1021, before any request.
    let before = h.requests().len();
    let untagged =
        json!({"content": {"type": "text", "text": "x"}, "messenger": {"category": "message_tag"}});
    assert_eq!(
        spec_code(
            h.send(&s, &command(Channel::Messenger, psid, untagged))
                .await
        ),
        1021
    );
    assert_eq!(h.requests().len(), before);
    // A tag Meta retired: Meta's code 100, our 1020.
    let retired = json!({"content": {"type": "text", "text": "x"},
                         "messenger": {"category": "message_tag", "tag": "SHIPPING_UPDATE"}});
    assert_eq!(
        spec_code(
            h.send(&s, &command(Channel::Messenger, psid, retired))
                .await
        ),
        1020
    );
}

#[tokio::test]
async fn rejections_come_back_as_spec_codes() {
    let h = start().await;
    let wa = h.settings(Channel::Whatsapp);
    let ms = h.settings(Channel::Messenger);

    // The default table: `…02` is not on the network.
    assert_eq!(
        spec_code(
            h.send(&wa, &command(Channel::Whatsapp, "447700900002", text("x")))
                .await
        ),
        1300
    );
    assert_eq!(
        spec_code(
            h.send(&ms, &command(Channel::Messenger, "psid-02", text("x")))
                .await
        ),
        1300
    );

    let reject = |to: &str, code: u32| {
        h.control.set(
            to,
            Behaviour {
                reject: Some(ProviderError::new(code, "because the test said so")),
                ..Behaviour::default()
            },
        );
    };
    let whatsapp_codes = [
        1010, 1020, 1022, 1060, 1070, 1140, 1160, 1210, 1240, 1300, 1340, 1370, 1380, 1382,
    ];
    for code in whatsapp_codes {
        reject("447700900050", code);
        let result = h
            .send(&wa, &command(Channel::Whatsapp, "447700900050", text("x")))
            .await;
        let Err(SendError::Permanent(error)) = result else {
            panic!("{code}: {result:?}");
        };
        assert_eq!(error.code, code, "{error:?}");
        assert!(
            error.reason.contains("because the test said so"),
            "{error:?}"
        );
    }
    for code in [1020, 1060, 1210, 1300, 1340, 1370, 1380, 1381] {
        reject("psid-50", code);
        let result = h
            .send(&ms, &command(Channel::Messenger, "psid-50", text("x")))
            .await;
        assert_eq!(spec_code(result), code);
    }
    // A spec code Meta has no equivalent of comes back as undeliverable.
    reject("447700900050", 1250);
    assert_eq!(
        spec_code(
            h.send(&wa, &command(Channel::Whatsapp, "447700900050", text("x")))
                .await
        ),
        1300
    );
}

#[tokio::test]
async fn a_wrong_access_token_is_an_expired_token() {
    let h = start().await;
    for channel in [Channel::Whatsapp, Channel::Messenger] {
        let mut s = h.settings(channel);
        s.credentials
            .insert("access_token".into(), "not-the-token".into());
        let result = h
            .send(&s, &command(channel, "447700900000", text("x")))
            .await;
        assert_eq!(spec_code(result), 1370);
        assert_eq!(
            h.last_request().header("authorization"),
            Some("Bearer not-the-token")
        );
    }
}

#[tokio::test]
async fn rate_limits_and_outages_are_transient() {
    let h = start().await;
    let wa = h.settings(Channel::Whatsapp);
    let ms = h.settings(Channel::Messenger);

    // 429 with Retry-After; the same request then goes through.
    h.control.set(
        "447700900060",
        Behaviour {
            transient_failures: 1,
            retry_after_secs: Some(7),
            ..Behaviour::default()
        },
    );
    let send = command(Channel::Whatsapp, "447700900060", text("x"));
    assert_eq!(
        h.send(&wa, &send).await,
        Err(SendError::Transient {
            reason: "(#130429) Rate limit hit".into(),
            retry_after: Some(Duration::from_secs(7)),
        })
    );
    assert!(h.send(&wa, &send).await.is_ok());

    h.control.set(
        "psid-60",
        Behaviour {
            transient_failures: 1,
            retry_after_secs: Some(3),
            ..Behaviour::default()
        },
    );
    let send = command(Channel::Messenger, "psid-60", text("x"));
    let Err(SendError::Transient { retry_after, .. }) = h.send(&ms, &send).await else {
        panic!("expected a transient failure");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(3)));
    assert!(h.send(&ms, &send).await.is_ok());

    // `…05`: two 503s, then accepted.
    let send = command(Channel::Whatsapp, "447700900005", text("x"));
    for _ in 0..2 {
        let result = h.send(&wa, &send).await;
        assert!(is_transient(&result), "{result:?}");
        assert!(
            matches!(
                result,
                Err(SendError::Transient {
                    retry_after: None,
                    ..
                })
            ),
            "{result:?}"
        );
    }
    assert!(h.send(&wa, &send).await.is_ok());

    // Meta out of reach.
    let addr = common::closed_addr();
    let mut away = wa.clone();
    away.url = format!("http://{addr}/meta");
    let result = h
        .send(
            &away,
            &command(Channel::Whatsapp, "447700900000", text("x")),
        )
        .await;
    assert!(is_transient(&result), "{result:?}");
}

#[tokio::test]
async fn the_handshake_through_the_adapter() {
    let h = start().await;
    let s = h.settings(Channel::Whatsapp);
    let handshake = |query: &str| {
        h.adapter.callback(
            &s,
            &CallbackRequest {
                method: &Method::GET,
                url: "",
                hook: "",
                query,
                headers: &HeaderMap::new(),
                body: &[],
            },
        )
    };
    assert_eq!(
        handshake("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me"),
        Ok(CallbackOutcome::Challenge("1158201444".into()))
    );
    assert!(matches!(
        handshake("hub.mode=subscribe&hub.challenge=1&hub.verify_token=guess"),
        Err(CallbackError::Forbidden(_))
    ));
    assert!(matches!(
        handshake("hub.mode=subscribe&hub.challenge=1"),
        Err(CallbackError::Malformed(_))
    ));
}

#[tokio::test]
async fn subscriptions_verify_the_callback_url_first() {
    let h = start().await;
    h.subscribed("whatsapp_business_account", "default-whatsapp")
        .await;
    let subscribe = h.last_request();
    assert_eq!(
        subscribe.path,
        format!("/meta/v21.0/{APP_ID}/subscriptions")
    );

    // A verify token the receiver does not know: Meta's 2200.
    let refused = h
        .subscribe("page", "default-messenger", "not-the-token")
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], 2200, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("403"), "{message}");

    // The app's token is needed, as a parameter or as bearer.
    let form = [("object", "page"), ("verify_token", VERIFY_TOKEN)];
    let unauthorized = h
        .http
        .post(format!(
            "http://{}/meta/v21.0/{APP_ID}/subscriptions",
            h.sim
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).expect("form"))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let error: Value = unauthorized.json().await.expect("json");
    assert_eq!(error["error"]["code"], 190);
    assert_eq!(error["error"]["type"], "OAuthException");

    let by_json = h
        .http
        .post(format!(
            "http://{}/meta/v21.0/{APP_ID}/subscriptions",
            h.sim
        ))
        .bearer_auth(&h.secret)
        .json(&json!({
            "object": "page",
            "callback_url": h.callback_url("default-messenger"),
            "verify_token": VERIFY_TOKEN,
            "fields": ["messages", "message_deliveries", "message_reads"],
        }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(by_json.status(), StatusCode::OK);
}

#[tokio::test]
async fn whatsapp_receipts_become_events() {
    let h = start().await;
    let s = h.settings(Channel::Whatsapp);
    h.subscribed("whatsapp_business_account", "default-whatsapp")
        .await;

    // `…01`: sent, delivered, then read.
    let id = h
        .send(&s, &command(Channel::Whatsapp, "447700900001", text("x")))
        .await
        .expect("accepted")
        .provider_message_id;
    let posted = h.wait_for(3, |n| status_of(n).0 == id).await;
    let mut seen = Vec::new();
    for notification in &posted {
        let json = notification.json();
        assert_eq!(json["object"], "whatsapp_business_account");
        let status = &json["entry"][0]["changes"][0]["value"]["statuses"][0];
        assert_eq!(status["recipient_id"], "447700900001");
        let at_ms = status["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .expect("timestamp in seconds")
            * 1000;
        let got = events(h.read(&s, &notification.headers, &notification.body));
        let expected = match status_of(&json).1.as_str() {
            "sent" => vec![],
            "delivered" => vec![receipt(&id, MessageStatus::Delivered, at_ms, None)],
            "read" => vec![receipt(&id, MessageStatus::Read, at_ms, None)],
            other => panic!("unexpected status {other}"),
        };
        assert_eq!(got, expected);
        seen.push(status_of(&json).1);
    }
    seen.sort();
    assert_eq!(seen, ["delivered", "read", "sent"]);

    // `…04`: undeliverable, Meta's 131000 "something went wrong" → 1330.
    let receipt = h.failed_receipt(&s, "447700900004").await;
    assert_eq!(receipt.status, MessageStatus::Undeliverable);
    assert_eq!(receipt.error.as_ref().map(|e| e.code), Some(1330));

    // A chosen error comes back as itself.
    h.control.set(
        "447700900070",
        Behaviour {
            delivery: Delivery::Undeliverable,
            error: Some(MessageError {
                code: 1340,
                reason: "window closed".into(),
            }),
            ..Behaviour::default()
        },
    );
    let receipt = h.failed_receipt(&s, "447700900070").await;
    assert_eq!(
        receipt.error,
        Some(MessageError {
            code: 1340,
            reason: "Re-engagement message: window closed".into()
        })
    );
}

fn receipt(
    id: &str,
    status: MessageStatus,
    at_ms: i64,
    error: Option<MessageError>,
) -> CallbackEvent {
    CallbackEvent::Receipt(Receipt {
        provider_message_id: id.to_owned(),
        status,
        at_ms,
        error,
        usage: None,
    })
}

#[tokio::test]
async fn messenger_receipts_become_events() {
    let h = start().await;
    let s = h.settings(Channel::Messenger);
    h.subscribed("page", "default-messenger").await;

    let psid = "psid-77701";
    let mid = h
        .send(&s, &command(Channel::Messenger, psid, text("x")))
        .await
        .expect("accepted")
        .provider_message_id;
    let posted = h
        .wait_for(2, |n| n["entry"][0]["messaging"][0]["sender"]["id"] == psid)
        .await;
    let mut kinds = Vec::new();
    for notification in &posted {
        let json = notification.json();
        assert_eq!(json["object"], "page");
        let messaging = &json["entry"][0]["messaging"][0];
        assert_eq!(messaging["recipient"]["id"], PAGE_ID);
        let at_ms = messaging["timestamp"].as_i64().expect("timestamp in ms");
        let got = events(h.read(&s, &notification.headers, &notification.body));
        if let Some(delivery) = messaging.get("delivery") {
            assert_eq!(delivery["mids"], json!([mid]));
            assert_eq!(
                got,
                vec![receipt(&mid, MessageStatus::Delivered, at_ms, None)]
            );
            kinds.push("delivery");
        } else {
            let watermark = messaging["read"]["watermark"].as_i64().expect("watermark");
            assert_eq!(
                got,
                vec![CallbackEvent::ReadUpTo {
                    channel: Channel::Messenger,
                    ours: PAGE_ID.into(),
                    user: psid.into(),
                    up_to_ms: watermark,
                    at_ms,
                }]
            );
            kinds.push("read");
        }
    }
    kinds.sort_unstable();
    assert_eq!(kinds, ["delivery", "read"]);
}

#[tokio::test]
async fn inbound_messages_become_events() {
    let h = start().await;
    let wa = h.settings(Channel::Whatsapp);
    let ms = h.settings(Channel::Messenger);

    h.user_writes(
        Channel::Whatsapp,
        "447700900123",
        "447700900001",
        text("hi"),
    )
    .await;
    let image = json!({"content": {"type": "image", "image": {"url": "https://example.com/cat.jpg", "caption": "cat"}}});
    h.user_writes(Channel::Whatsapp, "447700900123", "447700900001", image)
        .await;
    h.user_writes(Channel::Messenger, "psid-123", PAGE_ID, text("hello page"))
        .await;

    let posted: Vec<Captured> = h.receiver.all();
    assert_eq!(posted.len(), 3);

    let inbound = |settings: &ProviderSettings, c: &Captured| {
        the_inbound(events(h.read(settings, &c.headers, &c.body)))
    };
    let text_in = inbound(&wa, &posted[0]);
    assert!(text_in.provider_message_id.starts_with("wamid."));
    assert_eq!(text_in.channel, Channel::Whatsapp);
    assert_eq!(
        (text_in.from.as_str(), text_in.to.as_str()),
        ("447700900123", "447700900001")
    );
    assert_eq!(text_in.message, text("hi"));
    assert!(text_in.timestamp_ms > 0 && text_in.timestamp_ms % 1000 == 0);

    let image_in = inbound(&wa, &posted[1]);
    let media_id =
        posted[1].json()["entry"][0]["changes"][0]["value"]["messages"][0]["image"]["id"]
            .as_str()
            .expect("a media id")
            .to_owned();
    assert_eq!(
        image_in.message,
        json!({"content": {"type": "image", "image": {
            "url": format!("http://{}/meta/v21.0/{media_id}", h.sim),
            "caption": "cat",
        }}})
    );

    let page_in = inbound(&ms, &posted[2]);
    assert!(page_in.provider_message_id.starts_with("m_"));
    assert_eq!(page_in.channel, Channel::Messenger);
    assert_eq!(
        (page_in.from.as_str(), page_in.to.as_str()),
        ("psid-123", PAGE_ID)
    );
    assert_eq!(page_in.message, text("hello page"));
}

#[tokio::test]
async fn tampered_or_unsigned_notifications_are_refused() {
    let h = start().await;
    let s = h.settings(Channel::Whatsapp);
    h.user_writes(
        Channel::Whatsapp,
        "447700900123",
        "447700900001",
        text("hi"),
    )
    .await;
    let posted = h.receiver.all()[0].clone();
    assert!(h.read(&s, &posted.headers, &posted.body).is_ok());

    let tampered = String::from_utf8_lossy(&posted.body).replace("hi", "ho");
    assert_unauthorized(h.read(&s, &posted.headers, tampered.as_bytes()));
    let mut unsigned = posted.headers.clone();
    unsigned.remove("x-hub-signature-256");
    assert_unauthorized(h.read(&s, &unsigned, &posted.body));
    let mut other_secret = s.clone();
    other_secret
        .credentials
        .insert("app_secret".into(), "another app".into());
    assert_unauthorized(h.read(&other_secret, &posted.headers, &posted.body));

    // Signed but not JSON: malformed. Signed but not ours: no events.
    let sign = |body: &[u8]| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, h.secret.as_bytes());
        let mut headers = HeaderMap::new();
        let value = format!(
            "sha256={}",
            hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
        );
        headers.insert("x-hub-signature-256", value.parse().expect("header value"));
        headers
    };
    assert!(matches!(
        h.read(&s, &sign(b"not json"), b"not json"),
        Err(CallbackError::Malformed(_))
    ));
    let instagram = br#"{"object":"instagram","entry":[{"messaging":[{"read":{"watermark":1}}]}]}"#;
    assert_eq!(
        h.read(&s, &sign(instagram), instagram),
        Ok(CallbackOutcome::Events(vec![]))
    );
}
