//! The Vonage adapter against the simulator's Vonage fake, over HTTP: the
//! exact requests per channel and content type, both authentications,
//! each class of error, and the signed webhooks the fake posts to a
//! receiver in this test, fed back to the adapter. No broker or Redis
//! needed.

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::{
    Captured, VERIFY_BODY, VERIFY_TEMPLATE as TEMPLATE, assert_unauthorized as unauthorized,
    events, id, json_body as body_of, number, permanent, with,
};
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::{MessageError, MessageStatus, Usage};
use dispatch_provider_sim::Behaviour;
use dispatch_provider_sim::Delivery;
use dispatch_provider_sim::wire::ProviderError;
use dispatch_providers::vonage::Vonage;
use dispatch_providers::{
    Accepted, CallbackError, CallbackEvent, CallbackOutcome, HeaderMap, Inbound, Provider,
    SendError,
};
use serde_json::{Value, json};

const SECRET: &str = "vonage-test-secret";
const API_KEY: &str = "abcd1234";

type Harness = common::Harness<Vonage>;

async fn start() -> Harness {
    common::start(Vonage::new(reqwest::Client::new()), Some(SECRET)).await
}

fn settings_with(url: String, credentials: &[(&str, &str)]) -> ProviderSettings {
    common::provider_settings(
        ProviderKind::Vonage,
        url,
        credentials,
        &[(TEMPLATE, VERIFY_BODY)],
        "default",
    )
}

impl Harness {
    fn url(&self) -> String {
        format!("http://{}/vonage", self.sim)
    }

    /// Basic auth with the simulator's secret.
    fn settings(&self) -> ProviderSettings {
        settings_with(
            self.url(),
            &[
                ("api_key", API_KEY),
                ("api_secret", SECRET),
                ("signature_secret", SECRET),
            ],
        )
    }

    /// Where the fake posts message statuses.
    fn status_url(&self) -> String {
        format!("{}/callbacks/vonage/default", self.receiver.base)
    }

    async fn send(
        &self,
        settings: &ProviderSettings,
        command: &SendCommand,
    ) -> Result<Accepted, SendError> {
        self.submit(settings, command, &self.status_url()).await
    }

    /// Waits until the receiver holds `n` posts to `path`, and returns them.
    async fn posts(&self, path: &str, n: usize) -> Vec<Captured> {
        self.receiver.exactly(n, |c| c.path == path).await
    }

    /// What the adapter makes of a captured webhook.
    fn callback(
        &self,
        settings: &ProviderSettings,
        hook: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        self.feed(settings, hook, &self.status_url(), headers, body)
    }
}

fn command(channel: Channel, to: Value, from: Value, message: Value) -> SendCommand {
    common::send_command(channel, API_KEY, to, from, message)
}

fn text_sms(to: &str) -> SendCommand {
    command(
        Channel::Sms,
        number("sms", to),
        number("sms", "447700900999"),
        json!({"content": {"type": "text", "text": "Hello from Dispatch"}}),
    )
}

/// The fields every send carries.
fn common(command: &SendCommand, status_url: &str) -> Value {
    json!({
        "client_ref": command.message_uuid.to_string(),
        "webhook_url": status_url,
        "webhook_version": "v1",
    })
}

/// A 2048-bit RSA key pair as PEM (public SPKI, private PKCS#8), as
/// ingest generates an application's keys.
fn generate_key_pair() -> (String, String) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let private: Pkcs8V1Der<'static> = pair.as_der().expect("PKCS#8");
    let public: PublicKeyX509Der<'static> = pair.public_key().as_der().expect("SPKI");
    (
        pem("PUBLIC KEY", public.as_ref()),
        pem("PRIVATE KEY", private.as_ref()),
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn now_secs() -> i64 {
    dispatch_model::record::now_ms() / 1000
}

/// A webhook JWT as Vonage would sign it, with any `payload_hash`.
fn vonage_jwt(secret: &str, payload_hash: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iat": now_secs(), "jti": uuid::Uuid::new_v4().to_string(), "iss": "Vonage",
                "payload_hash": payload_hash, "api_key": API_KEY}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("JWT")
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref())
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    headers
}

#[tokio::test]
async fn an_sms_is_sent_exactly_as_vonage_documents_it() {
    let h = start().await;
    let settings = h.settings();
    let c = text_sms("447700900000");
    let accepted = h.send(&settings, &c).await.expect("accepted");
    assert!(
        uuid::Uuid::parse_str(&accepted.provider_message_id).is_ok(),
        "{accepted:?}"
    );

    let requests = h.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/vonage/v1/messages");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:{SECRET}"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(
        body_of(r),
        json!({
            "message_type": "text",
            "text": "Hello from Dispatch",
            "to": "447700900000",
            "from": "447700900999",
            "channel": "sms",
            "client_ref": c.message_uuid.to_string(),
            "webhook_url": h.status_url(),
            "webhook_version": "v1",
        })
    );
    let sends = h.control.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].reference, c.message_uuid.to_string());
    assert_eq!(sends[0].channel, Channel::Sms);
    assert_eq!(
        sends[0].message_id.as_deref(),
        Some(accepted.provider_message_id.as_str())
    );
}

#[tokio::test]
async fn applications_authenticate_with_a_fresh_rs256_jwt_per_request() {
    let h = start().await;
    let (public, private) = generate_key_pair();
    let application_id = uuid::Uuid::new_v4().to_string();
    let settings = settings_with(
        h.url(),
        &[
            ("application_id", &application_id),
            // As an environment variable often carries it.
            ("private_key", &private.replace('\n', "\\n")),
            ("signature_secret", SECRET),
        ],
    );
    assert_eq!(h.adapter.check(Channel::Whatsapp, &settings), Ok(()));
    for to in ["447700900000", "447700900006"] {
        h.send(&settings, &text_sms(to)).await.expect("accepted");
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 0;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).expect("public key");
    let mut jtis = Vec::new();
    for r in h.requests() {
        let token = r
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .expect("bearer JWT");
        let header = jsonwebtoken::decode_header(token).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .expect("signed with the application's key")
            .claims;
        assert_eq!(claims["application_id"], application_id.as_str());
        let iat = claims["iat"].as_i64().expect("iat");
        assert!((iat - now_secs()).abs() <= 60, "iat {iat}");
        assert_eq!(claims["exp"].as_i64(), Some(iat + 900));
        let jti = claims["jti"].as_str().expect("jti").to_owned();
        assert!(uuid::Uuid::parse_str(&jti).is_ok());
        jtis.push(jti);
    }
    assert_eq!(jtis.len(), 2);
    assert_ne!(jtis[0], jtis[1], "a fresh token per request");
}

#[tokio::test]
async fn every_channel_and_content_type_has_vonages_shape() {
    let h = start().await;
    let settings = h.settings();
    let n = "447700900000";
    let wa = |message: Value| {
        command(
            Channel::Whatsapp,
            number("whatsapp", n),
            number("whatsapp", "447700900999"),
            message,
        )
    };
    let fb = |message: Value| {
        command(
            Channel::Messenger,
            id("messenger", "psid-100"),
            id("messenger", "page-7"),
            message,
        )
    };
    let viber = |message: Value| {
        command(
            Channel::ViberServiceMsg,
            number("viber_service_msg", n),
            id("viber_service_msg", "ACME"),
            message,
        )
    };
    let media = |kind: &str, caption: bool| {
        let mut object = json!({"url": format!("https://example.com/a.{kind}")});
        if caption && let Some(o) = object.as_object_mut() {
            o.insert("caption".into(), "A caption".into());
        }
        json!({"content": {"type": kind, kind: object}})
    };
    let url = |kind: &str| format!("https://example.com/a.{kind}");
    let cases: Vec<(SendCommand, Value)> = vec![
        (
            command(
                Channel::Mms,
                number("mms", n),
                number("mms", "12015550100"),
                media("image", true),
            ),
            json!({"message_type": "image", "image": {"url": url("image"), "caption": "A caption"},
                   "to": n, "from": "12015550100", "channel": "mms"}),
        ),
        (
            wa(json!({"content": {"type": "text", "text": "Hi"}})),
            json!({"message_type": "text", "text": "Hi", "to": n, "from": "447700900999", "channel": "whatsapp"}),
        ),
        (
            wa(media("image", true)),
            json!({"message_type": "image", "image": {"url": url("image"), "caption": "A caption"},
                   "to": n, "from": "447700900999", "channel": "whatsapp"}),
        ),
        (
            wa(media("audio", true)),
            json!({"message_type": "audio", "audio": {"url": url("audio")},
                   "to": n, "from": "447700900999", "channel": "whatsapp"}),
        ),
        (
            wa(media("video", true)),
            json!({"message_type": "video", "video": {"url": url("video"), "caption": "A caption"},
                   "to": n, "from": "447700900999", "channel": "whatsapp"}),
        ),
        (
            wa(media("file", true)),
            json!({"message_type": "file", "file": {"url": url("file"), "caption": "A caption"},
                   "to": n, "from": "447700900999", "channel": "whatsapp"}),
        ),
        (
            wa(
                json!({"content": {"type": "custom", "custom": {"type": "interactive", "interactive": {"type": "button"}}}}),
            ),
            json!({"message_type": "custom", "custom": {"type": "interactive", "interactive": {"type": "button"}},
                   "to": n, "from": "447700900999", "channel": "whatsapp"}),
        ),
        (
            fb(json!({"content": {"type": "text", "text": "Hi"},
                      "messenger": {"category": "message_tag", "tag": "ACCOUNT_UPDATE"}})),
            json!({"message_type": "text", "text": "Hi", "to": "psid-100", "from": "page-7", "channel": "messenger",
                   "messenger": {"category": "message_tag", "tag": "ACCOUNT_UPDATE"}}),
        ),
        (
            fb(media("image", true)),
            json!({"message_type": "image", "image": {"url": url("image")},
                   "to": "psid-100", "from": "page-7", "channel": "messenger"}),
        ),
        (
            fb(media("audio", false)),
            json!({"message_type": "audio", "audio": {"url": url("audio")},
                   "to": "psid-100", "from": "page-7", "channel": "messenger"}),
        ),
        (
            fb(media("video", false)),
            json!({"message_type": "video", "video": {"url": url("video")},
                   "to": "psid-100", "from": "page-7", "channel": "messenger"}),
        ),
        (
            fb(media("file", false)),
            json!({"message_type": "file", "file": {"url": url("file")},
                   "to": "psid-100", "from": "page-7", "channel": "messenger"}),
        ),
        (
            viber(json!({"content": {"type": "text", "text": "Hi"},
                         "viber_service_msg": {"category": "transaction", "ttl": 600, "type": "string"}})),
            json!({"message_type": "text", "text": "Hi", "to": n, "from": "ACME", "channel": "viber_service",
                   "viber_service": {"category": "transaction", "ttl": 600, "type": "string"}}),
        ),
        (
            viber(media("image", true)),
            json!({"message_type": "image", "image": {"url": url("image"), "caption": "A caption"},
                   "to": n, "from": "ACME", "channel": "viber_service"}),
        ),
    ];
    for (i, (c, expected)) in cases.iter().enumerate() {
        let accepted = h.send(&settings, c).await;
        assert!(accepted.is_ok(), "case {i}: {accepted:?}");
        let r = h.last_request();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/vonage/v1/messages")
        );
        assert_eq!(
            body_of(&r),
            with(expected, common(c, &h.status_url())),
            "case {i}"
        );
    }
    assert_eq!(h.requests().len(), cases.len());
}

#[tokio::test]
async fn whatsapp_templates_are_checked_then_sent_by_name() {
    let h = start().await;
    let settings = h.settings();
    let template = |parameters: &[&str], whatsapp: Value| {
        command(
            Channel::Whatsapp,
            number("whatsapp", "447700900000"),
            number("whatsapp", "447700900999"),
            json!({"content": common::template(TEMPLATE, parameters), "whatsapp": whatsapp}),
        )
    };
    let c = template(
        &["Dispatch", "64873", "10"],
        json!({"policy": "deterministic", "locale": "en_GB"}),
    );
    h.send(&settings, &c).await.expect("accepted");
    assert_eq!(
        body_of(&h.last_request()),
        with(
            &json!({"message_type": "template",
                   "template": {"name": TEMPLATE, "parameters": ["Dispatch", "64873", "10"]},
                   "whatsapp": {"policy": "deterministic", "locale": "en_GB"},
                   "to": "447700900000", "from": "447700900999", "channel": "whatsapp"}),
            common(&c, &h.status_url())
        )
    );
    // Without a locale: en_US.
    let c = template(&["Dispatch", "1", "2"], json!({}));
    h.send(&settings, &c).await.expect("accepted");
    assert_eq!(
        body_of(&h.last_request())["whatsapp"],
        json!({"policy": "deterministic", "locale": "en_US"})
    );
    // A parameter count that does not match the body: 1022, and Vonage
    // is never called.
    let before = h.requests().len();
    let e = permanent(h.send(&settings, &template(&["Dispatch"], json!({}))).await);
    assert_eq!(e.code, 1022, "{e:?}");
    assert_eq!(h.requests().len(), before);
}

#[tokio::test]
async fn rejections_are_permanent_with_vonages_code() {
    let h = start().await;
    let settings = h.settings();
    let e = permanent(h.send(&settings, &text_sms("447700900002")).await);
    assert_eq!(e.code, 1300);
    assert!(
        e.reason.contains("Not part of the provider network"),
        "{e:?}"
    );

    h.control.set(
        "447700900010",
        Behaviour {
            reject: Some(ProviderError::new(1170, "Invalid or Missing Msisdn Param")),
            ..Behaviour::default()
        },
    );
    let e = permanent(h.send(&settings, &text_sms("447700900010")).await);
    assert_eq!(e.code, 1170);
}

#[tokio::test]
async fn the_fake_refuses_what_vonage_refuses() {
    let h = start().await;
    let settings = h.settings();
    // `custom` is not an SMS message type: 422 #1020 from the fake.
    let custom = command(
        Channel::Sms,
        number("sms", "447700900000"),
        number("sms", "447700900999"),
        json!({"content": {"type": "custom", "custom": {"a": 1}}}),
    );
    let e = permanent(h.send(&settings, &custom).await);
    assert_eq!(e.code, 1020);
    assert!(e.reason.contains("message_type"), "{e:?}");
    // A Messenger tag category without its tag.
    let untagged = command(
        Channel::Messenger,
        id("messenger", "psid-1"),
        id("messenger", "page-1"),
        json!({"content": {"type": "text", "text": "hi"}, "messenger": {"category": "message_tag"}}),
    );
    let e = permanent(h.send(&settings, &untagged).await);
    assert_eq!(e.code, 1010);
    assert!(e.reason.contains("messenger.tag"), "{e:?}");
    assert_eq!(h.requests().len(), 2, "both reached the fake");
    assert!(h.control.sends().is_empty(), "neither was decided");
}

#[tokio::test]
async fn refused_credentials_are_1060() {
    let h = start().await;
    let wrong = settings_with(
        h.url(),
        &[
            ("api_key", API_KEY),
            ("api_secret", "not-the-secret"),
            ("signature_secret", SECRET),
        ],
    );
    let e = permanent(h.send(&wrong, &text_sms("447700900000")).await);
    assert_eq!(e.code, 1060);
    assert!(e.reason.contains("Unauthorized"), "{e:?}");
    assert_eq!(h.requests().len(), 1);
    assert!(h.control.sends().is_empty());

    // Credentials that cannot even be used: 1060 without a request.
    let broken = settings_with(
        h.url(),
        &[("application_id", "app"), ("private_key", "not a key")],
    );
    let e = permanent(h.send(&broken, &text_sms("447700900000")).await);
    assert_eq!(e.code, 1060);
    assert_eq!(h.requests().len(), 1);
}

#[tokio::test]
async fn throttling_is_transient_and_honours_retry_after() {
    let h = start().await;
    let settings = h.settings();
    let to = "447700900011";
    h.control.set(
        to,
        Behaviour {
            transient_failures: 1,
            retry_after_secs: Some(7),
            ..Behaviour::default()
        },
    );
    let c = text_sms(to);
    match h.send(&settings, &c).await {
        Err(SendError::Transient { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
    // The retry of the same message (same client_ref) goes through.
    h.send(&settings, &c).await.expect("accepted on retry");
}

#[tokio::test]
async fn server_errors_and_unreachable_vonage_are_transient() {
    let h = start().await;
    let settings = h.settings();
    let c = text_sms("447700900005");
    for _ in 0..2 {
        match h.send(&settings, &c).await {
            Err(SendError::Transient { retry_after, .. }) => assert_eq!(retry_after, None),
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }
    h.send(&settings, &c)
        .await
        .expect("accepted after two 503s");

    let addr = common::closed_addr();
    let mut unreachable = settings.clone();
    unreachable.url = format!("http://{addr}/vonage");
    assert!(matches!(
        h.send(&unreachable, &c).await,
        Err(SendError::Transient { .. })
    ));
}

#[tokio::test]
async fn status_webhooks_become_receipts() {
    let h = start().await;
    let settings = h.settings();
    let c = command(
        Channel::Whatsapp,
        number("whatsapp", "447700900001"),
        number("whatsapp", "447700900999"),
        json!({"content": {"type": "text", "text": "Hi"}}),
    );
    let accepted = h.send(&settings, &c).await.expect("accepted");
    let posts = h.posts("/callbacks/vonage/default", 3).await;

    let mut statuses = Vec::new();
    for post in &posts {
        let body: Value = serde_json::from_slice(&post.body).expect("JSON");
        assert_eq!(body["message_uuid"], accepted.provider_message_id.as_str());
        assert_eq!(body["client_ref"], c.message_uuid.to_string());
        assert_eq!(body["channel"], "whatsapp");
        let status = body["status"].as_str().expect("status").to_owned();
        let events = events(h.callback(&settings, "", &post.headers, &post.body));
        statuses.push((status, events));
    }
    let [(submitted, none), (delivered, d), (read, r)] = statuses.as_slice() else {
        panic!("three statuses: {statuses:?}");
    };
    assert_eq!(submitted, "submitted");
    assert!(none.is_empty(), "submitted is reported on acceptance");
    assert_eq!(delivered, "delivered");
    match d.as_slice() {
        [CallbackEvent::Receipt(receipt)] => {
            assert_eq!(receipt.provider_message_id, accepted.provider_message_id);
            assert_eq!(receipt.status, MessageStatus::Delivered);
            assert_eq!(receipt.usage, Some(Usage::eur("0.0150")));
            assert_eq!(receipt.error, None);
            assert!((receipt.at_ms - dispatch_model::record::now_ms()).abs() < 60_000);
        }
        other => panic!("delivered: {other:?}"),
    }
    assert_eq!(read, "read");
    assert!(matches!(
        r.as_slice(),
        [CallbackEvent::Receipt(Receipt {
            status: MessageStatus::Read,
            usage: None,
            ..
        })]
    ));

    // Signed as Vonage signs: HS256 over the signature secret.
    let token = posts[1]
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("bearer");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("HS256")
    .claims;
    assert_eq!(claims["iss"], "Vonage");
    assert_eq!(claims["payload_hash"], sha256_hex(&posts[1].body).as_str());
    assert!(claims["jti"].is_string() && claims["iat"].is_number());
    assert!(claims["api_key"].is_string() && claims["application_id"].is_string());
}

#[tokio::test]
async fn undeliverable_webhooks_carry_the_error_code() {
    let h = start().await;
    let settings = h.settings();
    let failed = |events: Vec<CallbackEvent>| match events.as_slice() {
        [CallbackEvent::Receipt(r)] if r.status == MessageStatus::Undeliverable => r.error.clone(),
        other => panic!("undeliverable: {other:?}"),
    };

    let accepted = h
        .send(&settings, &text_sms("447700900004"))
        .await
        .expect("accepted");
    let posts = h.posts("/callbacks/vonage/default", 2).await;
    let last = &posts[1];
    let body: Value = serde_json::from_slice(&last.body).expect("JSON");
    assert_eq!(body["message_uuid"], accepted.provider_message_id.as_str());
    assert_eq!(
        failed(events(h.callback(&settings, "", &last.headers, &last.body))),
        Some(MessageError {
            code: 1330,
            reason: "Undeliverable".into()
        })
    );

    let to = "447700900012";
    h.control.set(
        to,
        Behaviour {
            delivery: Delivery::Undeliverable,
            error: Some(MessageError {
                code: 1260,
                reason: "Destination unreachable".into(),
            }),
            ..Behaviour::default()
        },
    );
    h.send(&settings, &text_sms(to)).await.expect("accepted");
    let posts = h.posts("/callbacks/vonage/default", 4).await;
    let last = &posts[3];
    assert_eq!(
        failed(events(h.callback(&settings, "", &last.headers, &last.body))),
        Some(MessageError {
            code: 1260,
            reason: "Destination unreachable".into()
        })
    );
}

/// Makes a Viber user write "hi" to ACME through the fake, and returns
/// the webhook it posted.
async fn viber_inbound(h: &Harness) -> Captured {
    h.inbound(json!({
        "provider": "vonage",
        "channel": "viber_service_msg",
        "from": "447700900123",
        "to": "ACME",
        "message": {"content": {"type": "text", "text": "hi"}},
        "callback_url": format!("{}/inbound", h.receiver.base),
    }))
    .await;
    h.posts("/inbound", 1).await.remove(0)
}

#[tokio::test]
async fn inbound_webhooks_become_inbound_messages() {
    let h = start().await;
    let settings = h.settings();
    let post = viber_inbound(&h).await;
    let body: Value = serde_json::from_slice(&post.body).expect("JSON");
    assert_eq!(body["channel"], "viber_service");
    assert_eq!(body["message_type"], "text");
    match events(h.callback(&settings, "inbound", &post.headers, &post.body)).as_slice() {
        [
            CallbackEvent::Inbound(Inbound {
                provider_message_id,
                channel,
                from,
                to,
                timestamp_ms,
                message,
            }),
        ] => {
            assert_eq!(
                provider_message_id,
                body["message_uuid"].as_str().expect("uuid")
            );
            assert!(uuid::Uuid::parse_str(provider_message_id).is_ok());
            assert_eq!(*channel, Channel::ViberServiceMsg);
            assert_eq!((from.as_str(), to.as_str()), ("447700900123", "ACME"));
            assert!((timestamp_ms - dispatch_model::record::now_ms()).abs() < 60_000);
            assert_eq!(*message, json!({"content": {"type": "text", "text": "hi"}}));
        }
        other => panic!("inbound: {other:?}"),
    }
}

#[tokio::test]
async fn forged_or_tampered_webhooks_are_unauthorized() {
    let h = start().await;
    let settings = h.settings();
    let post = viber_inbound(&h).await;
    // The genuine one passes.
    assert!(
        h.callback(&settings, "inbound", &post.headers, &post.body)
            .is_ok()
    );
    // The body changed after signing.
    let tampered = String::from_utf8_lossy(&post.body).replace("\"hi\"", "\"pay me\"");
    unauthorized(h.callback(&settings, "inbound", &post.headers, tampered.as_bytes()));
    // Verified with another account's secret.
    let mut other = settings.clone();
    other
        .credentials
        .insert("signature_secret".into(), "another-secret".into());
    unauthorized(h.callback(&other, "inbound", &post.headers, &post.body));
    // Signed with the right secret, over another body.
    let forged = bearer(&vonage_jwt(SECRET, &sha256_hex(b"{}")));
    unauthorized(h.callback(&settings, "inbound", &forged, &post.body));
    // Signed with another secret, over this body.
    let foreign = bearer(&vonage_jwt("another-secret", &sha256_hex(&post.body)));
    unauthorized(h.callback(&settings, "inbound", &foreign, &post.body));
    // Not signed at all, or garbage.
    unauthorized(h.callback(&settings, "inbound", &HeaderMap::new(), &post.body));
    unauthorized(h.callback(&settings, "inbound", &bearer("a.b.c"), &post.body));
    // No secret to verify with.
    let mut none = settings.clone();
    none.credentials.remove("signature_secret");
    unauthorized(h.callback(&none, "inbound", &post.headers, &post.body));
}

#[tokio::test]
async fn signed_but_unreadable_webhooks_are_malformed() {
    let h = start().await;
    let settings = h.settings();
    for (hook, body) in [
        ("", &b"not json"[..]),
        ("", br#"{"status":"delivered"}"#),
        ("inbound", br#"{"channel":"sms"}"#),
        (
            "inbound",
            br#"{"channel":"telegram","message_uuid":"u","to":"a","from":"b","message_type":"text"}"#,
        ),
        ("elsewhere", b"{}"),
    ] {
        let headers = bearer(&vonage_jwt(SECRET, &sha256_hex(body)));
        let outcome = h.callback(&settings, hook, &headers, body);
        assert!(
            matches!(outcome, Err(CallbackError::Malformed(_))),
            "{hook} {}: {outcome:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn check_wants_a_credential_pair_and_the_signature_secret() {
    let vonage = Vonage::new(reqwest::Client::new());
    let basic = settings_with(
        String::new(),
        &[
            ("api_key", API_KEY),
            ("api_secret", SECRET),
            ("signature_secret", SECRET),
        ],
    );
    for channel in Channel::ALL {
        assert_eq!(vonage.check(channel, &basic), Ok(()), "{channel}");
    }
    let mut no_signature = basic.clone();
    no_signature.credentials.remove("signature_secret");
    assert!(vonage.check(Channel::Sms, &no_signature).is_err());
    let mut no_secret = basic.clone();
    no_secret.credentials.remove("api_secret");
    assert!(vonage.check(Channel::Sms, &no_secret).is_err());
    let mut bad_url = basic.clone();
    bad_url.url = "ftp://example.com".into();
    assert!(vonage.check(Channel::Sms, &bad_url).is_err());

    let (_, private) = generate_key_pair();
    let jwt = settings_with(
        String::new(),
        &[
            ("application_id", "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"),
            ("private_key", &private),
            ("signature_secret", SECRET),
        ],
    );
    assert_eq!(vonage.check(Channel::Messenger, &jwt), Ok(()));
    let mut bad_key = jwt.clone();
    bad_key
        .credentials
        .insert("private_key".into(), private.replace("MII", "XXX"));
    assert!(vonage.check(Channel::Messenger, &bad_key).is_err());
    let mut half = jwt.clone();
    half.credentials.remove("application_id");
    assert!(vonage.check(Channel::Messenger, &half).is_err());
}
