//! The Twilio adapter against the simulator's Twilio fake, in-process:
//! the exact requests it makes for each channel and content type, how it
//! reads Twilio's refusals, and the signed callbacks the fake posts back
//! (captured by a small receiver here, then fed to the adapter as ingest
//! would).

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::{
    Captured, VERIFY_BODY, VERIFY_TEMPLATE as VERIFY, assert_unauthorized as unauthorized, number,
    pairs, permanent, the_inbound, the_receipt,
};
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::{MessageError, MessageStatus};
use dispatch_provider_sim::wire::ProviderError;
use dispatch_provider_sim::{Behaviour, Delivery, RawRequest};
use dispatch_providers::twilio::Twilio;
use dispatch_providers::{Accepted, CallbackEvent, CallbackOutcome, HeaderMap, SendError};
use serde_json::{Value, json};

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const OURS: &str = "447700900100";

type Harness = common::Harness<Twilio>;

async fn start() -> Harness {
    common::start(Twilio::new(reqwest::Client::new()), None).await
}

fn command(channel: Channel, to: &str, content: Value) -> SendCommand {
    common::send_command(
        channel,
        "acct",
        number(channel, to),
        number(channel, OURS),
        json!({"content": content}),
    )
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

impl Harness {
    fn settings(&self) -> ProviderSettings {
        common::provider_settings(
            ProviderKind::Twilio,
            format!("http://{}/twilio", self.sim),
            &[("account_sid", ACCOUNT), ("auth_token", &self.secret)],
            &[(VERIFY, VERIFY_BODY)],
            "test-route",
        )
    }

    fn status_callback(&self) -> String {
        format!("{}/callbacks/twilio/test-route", self.receiver.base)
    }

    async fn send_with(
        &self,
        settings: &ProviderSettings,
        command: &SendCommand,
    ) -> Result<Accepted, SendError> {
        self.submit(settings, command, &self.status_callback())
            .await
    }

    async fn send(&self, command: &SendCommand) -> Result<Accepted, SendError> {
        self.send_with(&self.settings(), command).await
    }

    async fn accepted(&self, command: &SendCommand) -> String {
        let accepted = self.send(command).await.expect("accepted");
        let sid = accepted.provider_message_id;
        assert!(
            sid.starts_with("SM") && sid.len() == 34,
            "a Twilio message SID: {sid}"
        );
        sid
    }

    /// The requests that reached the Twilio fake.
    fn twilio_requests(&self) -> Vec<RawRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/twilio/"))
            .collect()
    }

    /// The status callbacks about `sid`, once there are `count`.
    async fn receipts_of(&self, sid: &str, count: usize) -> Vec<Captured> {
        self.receiver
            .at_least(count, |c| c.param("MessageSid").as_deref() == Some(sid))
            .await
    }

    fn events(&self, hook: &str, captured: &Captured) -> Vec<CallbackEvent> {
        match self.feed(
            &self.settings(),
            hook,
            &captured.url,
            &captured.headers,
            &captured.body,
        ) {
            Ok(CallbackOutcome::Events(events)) => events,
            other => panic!("{other:?} for {captured:?}"),
        }
    }
}

fn form(request: &RawRequest) -> Vec<(String, String)> {
    serde_urlencoded::from_str(&request.body).expect("a form body")
}

// --- requests ---------------------------------------------------------------

/// Method, path, Basic authentication, content type and the exact form.
fn assert_twilio_request(h: &Harness, request: &RawRequest, expected: &[(&str, &str)]) {
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{}", h.secret));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {credentials}").as_str())
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(form(request), pairs(expected));
}

#[tokio::test]
async fn sms_text_is_sent_as_twilios_form() {
    let h = start().await;
    let sid = h
        .accepted(&command(
            Channel::Sms,
            "447700900000",
            text("Hello & good day"),
        ))
        .await;
    let callback = h.status_callback();
    assert_twilio_request(
        &h,
        &h.last_request(),
        &[
            ("To", "+447700900000"),
            ("From", "+447700900100"),
            ("Body", "Hello & good day"),
            ("StatusCallback", &callback),
        ],
    );
    let sends = h.control.sends_to("447700900000");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].channel, Channel::Sms);
    assert_eq!(sends[0].message_id.as_deref(), Some(sid.as_str()));
}

#[tokio::test]
async fn mms_image_sends_media_url_and_caption() {
    let h = start().await;
    h.accepted(&command(
        Channel::Mms,
        "447700900000",
        json!({"type": "image", "image": {"url": "https://cdn.example/cat.jpg", "caption": "A cat"}}),
    ))
    .await;
    let callback = h.status_callback();
    assert_twilio_request(
        &h,
        &h.last_request(),
        &[
            ("To", "+447700900000"),
            ("From", "+447700900100"),
            ("Body", "A cat"),
            ("MediaUrl", "https://cdn.example/cat.jpg"),
            ("StatusCallback", &callback),
        ],
    );
    assert_eq!(h.control.sends_to("447700900000")[0].channel, Channel::Mms);
}

#[tokio::test]
async fn whatsapp_sends_every_content_type() {
    let h = start().await;
    let callback = h.status_callback();
    let to = ("To", "whatsapp:+447700900000");
    let from = ("From", "whatsapp:+447700900100");
    let status = ("StatusCallback", callback.as_str());
    h.accepted(&command(Channel::Whatsapp, "447700900000", text("hi")))
        .await;
    assert_twilio_request(&h, &h.last_request(), &[to, from, ("Body", "hi"), status]);
    for kind in ["image", "audio", "video", "file"] {
        let url = format!("https://cdn.example/{kind}");
        h.accepted(&command(
            Channel::Whatsapp,
            "447700900000",
            json!({"type": kind, kind: {"url": url}}),
        ))
        .await;
        assert_twilio_request(
            &h,
            &h.last_request(),
            &[to, from, ("MediaUrl", &url), status],
        );
    }
    h.accepted(&command(
        Channel::Whatsapp,
        "447700900000",
        json!({"type": "file", "file": {"url": "https://cdn.example/a.pdf", "caption": "Your invoice"}}),
    ))
    .await;
    assert_twilio_request(
        &h,
        &h.last_request(),
        &[
            to,
            from,
            ("Body", "Your invoice"),
            ("MediaUrl", "https://cdn.example/a.pdf"),
            status,
        ],
    );
    let sends = h.control.sends_to("447700900000");
    assert_eq!(sends.len(), 6);
    assert!(sends.iter().all(|s| s.channel == Channel::Whatsapp));
}

fn verify_template(parameters: &[&str]) -> Value {
    common::template(VERIFY, parameters)
}

#[tokio::test]
async fn whatsapp_template_is_sent_rendered() {
    let h = start().await;
    h.accepted(&command(
        Channel::Whatsapp,
        "447700900000",
        verify_template(&["Nexmo Verification", "64873", "10"]),
    ))
    .await;
    let callback = h.status_callback();
    assert_twilio_request(
        &h,
        &h.last_request(),
        &[
            ("To", "whatsapp:+447700900000"),
            ("From", "whatsapp:+447700900100"),
            (
                "Body",
                "Nexmo Verification code: 64873. Valid for 10 minutes.",
            ),
            ("StatusCallback", &callback),
        ],
    );
}

#[tokio::test]
async fn template_parameter_mismatch_is_1022_without_a_request() {
    let h = start().await;
    let e = permanent(
        h.send(&command(
            Channel::Whatsapp,
            "447700900000",
            verify_template(&["Nexmo Verification", "64873"]),
        ))
        .await,
    );
    assert_eq!(e.code, 1022, "{e:?}");
    let e = permanent(
        h.send(&command(
            Channel::Whatsapp,
            "447700900000",
            json!({"type": "template", "template": {"name": "unknown:template"}}),
        ))
        .await,
    );
    assert_eq!(e.code, 1022, "{e:?}");
    assert!(h.twilio_requests().is_empty());
}

#[tokio::test]
async fn custom_content_is_refused_without_a_request() {
    let h = start().await;
    let e = permanent(
        h.send(&command(
            Channel::Whatsapp,
            "447700900000",
            json!({"type": "custom", "custom": {"type": "template", "template": {}}}),
        ))
        .await,
    );
    assert_eq!(e.code, 1020);
    assert!(e.reason.contains("custom"), "{e:?}");
    assert!(h.twilio_requests().is_empty());
}

#[tokio::test]
async fn messaging_service_sid_replaces_from() {
    let h = start().await;
    let mut settings = h.settings();
    settings.credentials.insert(
        "messaging_service_sid".into(),
        "MG00000000000000000000000000000001".into(),
    );
    h.send_with(
        &settings,
        &command(Channel::Sms, "447700900000", text("hi")),
    )
    .await
    .expect("accepted");
    let callback = h.status_callback();
    assert_twilio_request(
        &h,
        &h.last_request(),
        &[
            ("To", "+447700900000"),
            ("MessagingServiceSid", "MG00000000000000000000000000000001"),
            ("Body", "hi"),
            ("StatusCallback", &callback),
        ],
    );
}

// --- errors -----------------------------------------------------------------

#[tokio::test]
async fn rejection_by_the_fake_maps_back_to_1300() {
    let h = start().await;
    let e = permanent(
        h.send(&command(Channel::Whatsapp, "447700900002", text("hi")))
            .await,
    );
    assert_eq!(e.code, 1300, "{e:?}");
    assert!(e.reason.contains("63003"), "Twilio's code is kept: {e:?}");
}

#[tokio::test]
async fn every_rejection_maps_back_to_its_spec_code() {
    let h = start().await;
    let codes = [
        1010, 1060, 1090, 1120, 1140, 1170, 1180, 1190, 1210, 1240, 1250, 1280, 1300, 1310, 1330,
        1340, 1380, 1381,
    ];
    for (i, code) in codes.into_iter().enumerate() {
        let to = format!("4477009{i:05}");
        h.control.set(
            &to,
            Behaviour {
                reject: Some(ProviderError::new(code, "refused")),
                ..Behaviour::default()
            },
        );
        let e = permanent(h.send(&command(Channel::Sms, &to, text("hi"))).await);
        assert_eq!(e.code, code, "{e:?}");
    }
    // A spec code Twilio has no counterpart for comes back as the fake's
    // fallback, 21211 (invalid To).
    h.control.set(
        "447700999999",
        Behaviour {
            reject: Some(ProviderError::new(1050, "barred")),
            ..Behaviour::default()
        },
    );
    let e = permanent(
        h.send(&command(Channel::Sms, "447700999999", text("hi")))
            .await,
    );
    assert_eq!(e.code, 1170, "{e:?}");
}

#[tokio::test]
async fn wrong_credentials_are_1060() {
    let h = start().await;
    let mut settings = h.settings();
    settings
        .credentials
        .insert("auth_token".into(), "not-the-token".into());
    let e = permanent(
        h.send_with(
            &settings,
            &command(Channel::Sms, "447700900000", text("hi")),
        )
        .await,
    );
    assert_eq!(e.code, 1060, "{e:?}");
    assert!(e.reason.contains("20003"), "{e:?}");

    let mut settings = h.settings();
    settings
        .credentials
        .insert("auth_token".into(), String::new());
    let e = permanent(
        h.send_with(
            &settings,
            &command(Channel::Sms, "447700900000", text("hi")),
        )
        .await,
    );
    assert_eq!(e.code, 1060, "{e:?}");
    assert!(h.control.sends_to("447700900000").is_empty());
}

#[tokio::test]
async fn rate_limit_429_is_transient_with_retry_after() {
    let h = start().await;
    h.control.set(
        "447700900010",
        Behaviour {
            transient_failures: 1,
            retry_after_secs: Some(7),
            ..Behaviour::default()
        },
    );
    let c = command(Channel::Sms, "447700900010", text("hi"));
    match h.send(&c).await {
        Err(SendError::Transient { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("{other:?}"),
    }
    // The retry is the same request, which the fake now takes.
    h.accepted(&c).await;
}

#[tokio::test]
async fn unavailable_503_is_transient_then_accepted() {
    let h = start().await;
    let c = command(Channel::Sms, "447700900005", text("hi"));
    for _ in 0..2 {
        match h.send(&c).await {
            Err(SendError::Transient { retry_after, .. }) => assert_eq!(retry_after, None),
            other => panic!("{other:?}"),
        }
    }
    h.accepted(&c).await;
}

#[tokio::test]
async fn unreachable_twilio_is_transient() {
    let h = start().await;
    let closed = common::closed_addr();
    let mut settings = h.settings();
    settings.url = format!("http://{closed}/twilio");
    let result = h
        .send_with(
            &settings,
            &command(Channel::Sms, "447700900000", text("hi")),
        )
        .await;
    assert!(
        matches!(result, Err(SendError::Transient { .. })),
        "{result:?}"
    );
}

// --- callbacks --------------------------------------------------------------

fn status_param(c: &Captured) -> String {
    c.param("MessageStatus").unwrap_or_default()
}

#[tokio::test]
async fn status_callbacks_sent_then_delivered() {
    let h = start().await;
    // …01 asks for a read receipt, which Twilio sends on WhatsApp only.
    let sid = h
        .accepted(&command(Channel::Sms, "447700900001", text("hi")))
        .await;
    let got = h.receipts_of(&sid, 2).await;
    let statuses: Vec<String> = got.iter().map(status_param).collect();
    assert_eq!(statuses, ["sent", "delivered"]);
    for c in &got {
        assert_eq!(c.url, h.status_callback(), "posted to the StatusCallback");
        assert_eq!(
            c.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/x-www-form-urlencoded")
        );
        assert!(c.headers.contains_key("x-twilio-signature"));
        assert_eq!(c.param("To").as_deref(), Some("+447700900001"));
        assert_eq!(c.param("From").as_deref(), Some("+447700900100"));
    }
    assert_eq!(h.events("", &got[0]), Vec::new(), "sent reports nothing");
    let events = h.events("", &got[1]);
    let r = the_receipt(&events);
    assert_eq!(r.provider_message_id, sid);
    assert_eq!(r.status, MessageStatus::Delivered);
    assert!(r.error.is_none() && r.usage.is_none());
    // The `status` hook reads the same.
    let events = h.events("status", &got[1]);
    assert_eq!(the_receipt(&events).status, MessageStatus::Delivered);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.receipts_of(&sid, 2).await.len(), 2, "no read on SMS");
}

#[tokio::test]
async fn whatsapp_read_receipt() {
    let h = start().await;
    let sid = h
        .accepted(&command(Channel::Whatsapp, "447700900001", text("hi")))
        .await;
    let got = h.receipts_of(&sid, 3).await;
    let statuses: Vec<String> = got.iter().map(status_param).collect();
    assert_eq!(statuses, ["sent", "delivered", "read"]);
    assert_eq!(
        got[2].param("To").as_deref(),
        Some("whatsapp:+447700900001")
    );
    assert_eq!(got[2].param("ChannelPrefix").as_deref(), Some("whatsapp"));
    let events = h.events("", &got[2]);
    let r = the_receipt(&events);
    assert_eq!(
        (r.status, r.provider_message_id.as_str()),
        (MessageStatus::Read, sid.as_str())
    );
}

#[tokio::test]
async fn undelivered_carries_the_mapped_error() {
    let h = start().await;
    let sid = h
        .accepted(&command(Channel::Sms, "447700900004", text("hi")))
        .await;
    let got = h.receipts_of(&sid, 2).await;
    assert_eq!(status_param(&got[1]), "undelivered");
    assert_eq!(got[1].param("ErrorCode").as_deref(), Some("30008"));
    let events = h.events("", &got[1]);
    let r = the_receipt(&events);
    assert_eq!(r.status, MessageStatus::Undeliverable);
    assert_eq!(r.error.as_ref().map(|e| e.code), Some(1330));

    h.control.set(
        "447700900014",
        Behaviour {
            delivery: Delivery::Undeliverable,
            error: Some(MessageError {
                code: 1180,
                reason: "absent".into(),
            }),
            ..Behaviour::default()
        },
    );
    let sid = h
        .accepted(&command(Channel::Sms, "447700900014", text("hi")))
        .await;
    let got = h.receipts_of(&sid, 2).await;
    assert_eq!(got[1].param("ErrorCode").as_deref(), Some("30003"));
    let events = h.events("", &got[1]);
    assert_eq!(
        the_receipt(&events).error.as_ref().map(|e| e.code),
        Some(1180)
    );
}

/// Makes a user write to us through the fake, and returns the callback
/// it posted.
async fn inbound(h: &Harness, request: Value) -> Captured {
    h.inbound(request).await;
    let got = h
        .receiver
        .at_least(1, |c| c.url.ends_with("/inbound"))
        .await;
    got.last().cloned().expect("one inbound")
}

#[tokio::test]
async fn inbound_whatsapp_text_is_read() {
    let h = start().await;
    let captured = inbound(
        &h,
        json!({
            "provider": "twilio",
            "channel": "whatsapp",
            "from": "447700900123",
            "to": "447700900001",
            "message": {"content": {"type": "text", "text": "hi"}},
            "callback_url": format!("{}/callbacks/twilio/test-route/inbound", h.receiver.base),
        }),
    )
    .await;
    assert_eq!(
        captured.param("From").as_deref(),
        Some("whatsapp:+447700900123")
    );
    let i = the_inbound(h.events("inbound", &captured));
    assert_eq!(i.channel, Channel::Whatsapp);
    assert_eq!(i.from, "447700900123");
    assert_eq!(i.to, "447700900001");
    assert!(i.provider_message_id.starts_with("SM"), "{i:?}");
    assert_eq!(
        i.message,
        json!({"content": {"type": "text", "text": "hi"}})
    );
}

#[tokio::test]
async fn inbound_mms_image_is_read() {
    let h = start().await;
    let captured = inbound(
        &h,
        json!({
            "provider": "twilio",
            "channel": "mms",
            "from": "14155550100",
            "to": "14155550001",
            "message": {"content": {"type": "image", "image": {"url": "https://media.example/1.jpg"}}},
            "callback_url": format!("{}/callbacks/twilio/test-route/inbound", h.receiver.base),
        }),
    )
    .await;
    let i = the_inbound(h.events("inbound", &captured));
    assert_eq!(i.channel, Channel::Mms);
    assert_eq!(
        (i.from.as_str(), i.to.as_str()),
        ("14155550100", "14155550001")
    );
    assert_eq!(
        i.message,
        json!({"content": {"type": "image", "image": {"url": "https://media.example/1.jpg"}}})
    );
}

#[tokio::test]
async fn tampered_or_wrongly_signed_callbacks_are_unauthorized() {
    let h = start().await;
    let sid = h
        .accepted(&command(Channel::Sms, "447700900000", text("hi")))
        .await;
    let got = h.receipts_of(&sid, 2).await;
    let delivered = &got[1];
    let settings = h.settings();
    let feed = |settings: &ProviderSettings, url: &str, headers: &HeaderMap, body: &[u8]| {
        h.feed(settings, "", url, headers, body)
    };
    let (url, headers, body) = (&delivered.url, &delivered.headers, &delivered.body);
    // As received, it holds.
    assert!(feed(&settings, url, headers, body).is_ok());
    // Another status in the same body.
    let tampered = String::from_utf8_lossy(body).replace("delivered", "undelivered");
    unauthorized(feed(&settings, url, headers, tampered.as_bytes()));
    // No signature, or the signature of another callback.
    unauthorized(feed(&settings, url, &HeaderMap::new(), body));
    unauthorized(feed(&settings, url, &got[0].headers, body));
    let mut garbled = headers.clone();
    garbled.insert("x-twilio-signature", "AAAA".parse().expect("header"));
    unauthorized(feed(&settings, url, &garbled, body));
    // Another URL than the one Twilio signed.
    let elsewhere = format!("{url}?x=1");
    unauthorized(feed(&settings, &elsewhere, headers, body));
    // Another record's auth token.
    let mut other = h.settings();
    other
        .credentials
        .insert("auth_token".into(), "another-token".into());
    unauthorized(feed(&other, url, headers, body));
}
