//! Failover through real providers' wire formats: WhatsApp through Meta,
//! SMS through Twilio, both faked by the simulator (`/meta`, `/twilio`),
//! which speaks and signs exactly as they document. Ingest verifies every
//! callback with the credentials of the record its route names.

use std::time::Duration;

use serde_json::{Value, json};

use crate::system::{System, step};

const OURS: &str = "447700900999";
const PHONE_NUMBER_ID: &str = "106540352242922";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// Routes the account's WhatsApp to the Meta fake and its SMS to the
/// Twilio fake, through the API; subscribes the Meta fake to our
/// callback URL as one would in Meta's dashboard (the fake checks the
/// URL with the `hub.challenge` handshake first, as Meta does). Returns
/// the two callback URLs.
async fn route_to_fakes(sys: &System) -> (String, String) {
    let sim = &sys.config.simulator_url;
    let secret = &sys.config.simulator_secret;
    let put = |channel: &str, body: Value| {
        sys.client()
            .put(format!("{}/v0.1/providers/{channel}", sys.url))
            .basic_auth(&sys.api_key, Some(&sys.api_secret))
            .json(&body)
            .send()
    };
    let meta = put(
        "whatsapp",
        json!({"kind": "meta", "url": format!("{sim}/meta"), "credentials": {
            "access_token": secret, "phone_number_id": PHONE_NUMBER_ID,
            "app_secret": secret, "verify_token": "let-me-in"}}),
    )
    .await
    .expect("PUT");
    assert_eq!(meta.status().as_u16(), 200);
    let meta: Value = meta.json().await.expect("JSON");
    let twilio = put(
        "sms",
        json!({"kind": "twilio", "url": format!("{sim}/twilio"), "credentials": {
            "account_sid": ACCOUNT_SID, "auth_token": secret}}),
    )
    .await
    .expect("PUT");
    assert_eq!(twilio.status().as_u16(), 200);
    let twilio: Value = twilio.json().await.expect("JSON");
    let meta_callback = meta["callback_url"].as_str().expect("url").to_owned();
    let twilio_callback = twilio["callback_url"].as_str().expect("url").to_owned();

    let subscribed = sys
        .client()
        .post(format!("{sim}/meta/v21.0/1234567890/subscriptions"))
        .bearer_auth(secret)
        .json(&json!({
            "object": "whatsapp_business_account",
            "callback_url": meta_callback,
            "verify_token": "let-me-in",
            "fields": "messages",
        }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(
        subscribed.status().as_u16(),
        200,
        "{}",
        subscribed.text().await.unwrap_or_default()
    );
    (meta_callback, twilio_callback)
}

/// The user writes to our WhatsApp number, through Meta's webhook.
async fn user_writes(sys: &System, user: &str, meta_callback: &str) {
    let answered = sys
        .client()
        .post(format!("{}/control/inbound", sys.config.simulator_url))
        .bearer_auth(&sys.config.simulator_secret)
        .json(&json!({
            "provider": "meta", "channel": "whatsapp", "from": user, "to": OURS,
            "message": {"content": {"type": "text", "text": "Hi"}},
            "callback_url": meta_callback,
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(answered.status().as_u16(), 204);
}

fn link(report: &Value, i: usize) -> &Value {
    &report["_links"]["messages"][i]
}

#[tokio::test]
async fn whatsapp_through_meta_not_read_in_time_fails_over_to_sms_through_twilio() {
    let sys = System::start().await;
    let (meta_callback, twilio_callback) = route_to_fakes(&sys).await;
    // …03: accepted, never delivered, never read.
    let user = "447700310003";
    let sms_user = "447700310000";
    user_writes(&sys, user, &meta_callback).await;

    let id = sys
        .dispatch(vec![
            step("whatsapp", user, Some((15, "read"))),
            step("sms", sms_user, None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(link(&report, 0)["channel"], "whatsapp");
    assert_eq!(link(&report, 0)["status"], "submitted");
    assert_eq!(link(&report, 1)["channel"], "sms");
    assert_eq!(link(&report, 1)["status"], "delivered");
    let usage = json!({"currency": "EUR", "price": "0.0333", "encoding": "gsm7", "segments": 1});
    assert_eq!(link(&report, 1)["usage"], usage, "{report}");
    assert_eq!(report["usage"]["price"], "0.0333");

    let sms_uuid = link(&report, 1)["message_uuid"].as_str().expect("uuid");
    let delivered = sys
        .eventually(Duration::from_secs(5), || {
            sys.webhooks()
                .into_iter()
                .find(|j| j.body["message_uuid"] == sms_uuid && j.body["status"] == "delivered")
        })
        .await
        .expect("a delivered webhook for the SMS");
    assert_eq!(delivered.body["usage"], usage);

    // What the providers were sent.
    let requests = sys.sim.requests();
    let to_meta: Vec<_> = requests
        .iter()
        .filter(|r| r.path == format!("/meta/v21.0/{PHONE_NUMBER_ID}/messages"))
        .collect();
    assert_eq!(to_meta.len(), 1, "one WhatsApp send");
    let body: Value = serde_json::from_str(&to_meta[0].body).expect("JSON");
    assert_eq!(body["to"], user);
    assert_eq!(body["type"], "text");
    let to_twilio: Vec<_> = requests
        .iter()
        .filter(|r| r.path == format!("/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"))
        .collect();
    assert_eq!(to_twilio.len(), 1, "one SMS send");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(to_twilio[0].body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("To"), Some(format!("+{sms_user}").as_str()));
    assert_eq!(field("StatusCallback"), Some(twilio_callback.as_str()));
}

#[tokio::test]
async fn free_form_whatsapp_outside_the_window_fails_over_at_once_with_1340() {
    let sys = System::start().await;
    let _ = route_to_fakes(&sys).await;
    // …00 would be delivered, but the user never wrote: no window.
    let user = "447700320000";
    let id = sys
        .dispatch(vec![
            // A long expiry: only the rejection can move on this quickly.
            step("whatsapp", user, Some((86_400, "read"))),
            step("sms", "447700320100", None),
        ])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(link(&report, 0)["status"], "rejected");
    assert_eq!(link(&report, 1)["status"], "delivered");
    let wa_uuid = link(&report, 0)["message_uuid"].as_str().expect("uuid");
    let rejected = sys
        .webhooks()
        .into_iter()
        .find(|j| j.body["message_uuid"] == wa_uuid && j.body["status"] == "rejected")
        .expect("a rejected webhook");
    assert_eq!(rejected.body["error"]["code"], 1340, "{}", rejected.body);
    assert!(
        !sys.sim
            .requests()
            .iter()
            .any(|r| r.path.contains("/messages") && r.path.starts_with("/meta")),
        "Meta was never called"
    );
}

#[tokio::test]
async fn forged_provider_callbacks_are_refused_and_change_nothing() {
    let sys = System::start().await;
    let (meta_callback, twilio_callback) = route_to_fakes(&sys).await;
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": OURS, "phone_number_id": PHONE_NUMBER_ID},
        "messages": [{"from": "447700330000", "id": "wamid.x", "timestamp": "1700000000",
                      "type": "text", "text": {"body": "hi"}}]}}]}]});
    for signature in [None, Some("sha256=00")] {
        let mut request = sys.client().post(&meta_callback).json(&body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let answer = request.send().await.expect("POST");
        assert_eq!(answer.status().as_u16(), 401);
    }
    let answer = sys
        .client()
        .post(&twilio_callback)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM1&MessageStatus=delivered")
        .header("x-twilio-signature", "bm90IGl0")
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status().as_u16(), 401);
    // The handshake with the wrong verify token.
    let answer = sys
        .client()
        .get(format!(
            "{meta_callback}?hub.mode=subscribe&hub.challenge=42&hub.verify_token=wrong"
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status().as_u16(), 403);
    // An unknown route.
    let unknown = format!("{}/callbacks/meta/0000", sys.url);
    let answer = sys
        .client()
        .post(&unknown)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status().as_u16(), 404);
    // No window was opened by the forged message: a free-form WhatsApp
    // to that user is refused.
    let id = sys
        .dispatch(vec![step("whatsapp", "447700330000", None)])
        .await;
    let report = sys.final_report(id).await;
    assert_eq!(link(&report, 0)["status"], "rejected", "{report}");
}

#[tokio::test]
async fn a_users_message_through_an_applications_record_goes_to_that_application() {
    let sys = System::start().await;
    let (app, _) = sys.application("http://127.0.0.1:9/status").await;
    let sim = &sys.config.simulator_url;
    let secret = &sys.config.simulator_secret;
    let record: Value = sys
        .client()
        .put(format!(
            "{}/v2/applications/{app}/providers/whatsapp",
            sys.url
        ))
        .basic_auth(&sys.api_key, Some(&sys.api_secret))
        .json(
            &json!({"kind": "meta", "url": format!("{sim}/meta"), "credentials": {
            "access_token": secret, "phone_number_id": PHONE_NUMBER_ID,
            "app_secret": secret, "verify_token": "v"}}),
        )
        .send()
        .await
        .expect("PUT")
        .json()
        .await
        .expect("JSON");
    let callback = record["callback_url"].as_str().expect("callback_url");
    // Nobody ever wrote to this user: the record's owner decides.
    user_writes(&sys, "447700340000", callback).await;
    let job = sys
        .eventually(Duration::from_secs(5), || {
            sys.webhooks()
                .into_iter()
                .find(|j| j.kind == dispatch_model::envelope::WebhookKind::InboundMessage)
        })
        .await
        .expect("an inbound-message webhook");
    assert_eq!(job.application_id.map(|a| a.to_string()), Some(app));
    assert_eq!(job.account, sys.api_key);
    assert_eq!(
        job.body["from"],
        json!({"type": "whatsapp", "number": "447700340000"})
    );
    assert_eq!(job.body["to"], json!({"type": "whatsapp", "number": OURS}));
    assert_eq!(
        job.body["message"]["content"],
        json!({"type": "text", "text": "Hi"})
    );
}

/// Two accounts, each with its own Meta record for the same number. A
/// user who writes through the first account's record opens the reply
/// window of that account only: the other's free-form message to the user
/// is still refused with 1340.
#[tokio::test]
async fn a_users_message_opens_only_its_records_reply_window() {
    let sys = System::start().await;
    let (meta_callback, _) = route_to_fakes(&sys).await;
    let other = sys.account().await;
    let sim = &sys.config.simulator_url;
    let secret = &sys.config.simulator_secret;
    let put = sys
        .client()
        .put(format!("{}/v0.1/providers/whatsapp", sys.url))
        .basic_auth(&other.0, Some(&other.1))
        .json(
            &json!({"kind": "meta", "url": format!("{sim}/meta"), "credentials": {
            "access_token": secret, "phone_number_id": PHONE_NUMBER_ID,
            "app_secret": secret, "verify_token": "let-me-in"}}),
        )
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);

    let user = "447700330000";
    user_writes(&sys, user, &meta_callback).await;
    let send = |account: (String, String)| {
        let sys = &sys;
        async move {
            let sent: Value = sys
                .client()
                .post(format!("{}/v0.1/messages", sys.url))
                .basic_auth(&account.0, Some(&account.1))
                .json(&json!({
                    "to": {"type": "whatsapp", "number": user},
                    "from": {"type": "whatsapp", "number": OURS},
                    "message": {"content": {"type": "text", "text": "Thanks for writing"}},
                }))
                .send()
                .await
                .expect("POST")
                .json()
                .await
                .expect("JSON");
            let uuid = sent["message_uuid"].as_str().expect("uuid").to_owned();
            let path = format!("{}/v0.1/messages/{uuid}", sys.url);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let view: Value = sys
                    .client()
                    .get(&path)
                    .basic_auth(&account.0, Some(&account.1))
                    .send()
                    .await
                    .expect("GET")
                    .json()
                    .await
                    .expect("JSON");
                if view["status"] != "accepted" && !view["status"].is_null() {
                    return view;
                }
                assert!(tokio::time::Instant::now() < deadline, "{view}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let theirs = send(other).await;
    assert_eq!(theirs["status"], "rejected", "{theirs}");
    assert_eq!(theirs["error"]["code"], 1340, "{theirs}");
    let ours = send((sys.api_key.clone(), sys.api_secret.clone())).await;
    assert_ne!(ours["status"], "rejected", "{ours}");
}
