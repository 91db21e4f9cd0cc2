//! `/v0.1/providers` and `/v2/applications/{id}/providers`: provider
//! settings per account and application, stored encrypted, never shown.

use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, invalid_names, send};

fn twilio() -> Value {
    json!({
        "kind": "twilio",
        "credentials": {"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-s3cret-t0ken"},
        "templates": {"acme:verify": "{{1}} is your code"},
    })
}

#[tokio::test]
async fn credentials_are_stored_encrypted_and_never_answered() {
    let app = TestApp::spawn().await;
    let account = app.account.clone();
    let put = |path: &str, body: &Value| {
        app.client
            .put(format!("{}{path}", app.url))
            .basic_auth(&account.api_key, Some(&account.api_secret))
            .json(body)
    };

    let (status, shown) = send(put("/v0.1/providers/sms", &twilio())).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["channel"], "sms");
    assert_eq!(shown["kind"], "twilio");
    assert_eq!(shown["credentials"], json!(["account_sid", "auth_token"]));
    assert_eq!(
        shown["templates"],
        json!({"acme:verify": "{{1}} is your code"})
    );
    let callback = shown["callback_url"].as_str().expect("callback_url");
    assert!(
        callback.starts_with(&format!("{}/callbacks/twilio/", app.url)),
        "{callback}"
    );
    assert!(!shown.to_string().contains("tw-s3cret-t0ken"));

    // At rest: sealed, and not readable without the key.
    let raw: String = redis::AsyncCommands::hget(
        &mut app.state.redis(),
        app.state.keys.providers(&account.api_key),
        "sms",
    )
    .await
    .expect("HGET");
    assert!(raw.starts_with("v1."), "{raw}");
    assert!(!raw.contains("tw-s3cret-t0ken") && !raw.contains("account_sid"));

    // Listing shows names only; replacing keeps the callback URL.
    let (status, list) = send(app.get("/v0.1/providers", &account)).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(!list.to_string().contains("tw-s3cret-t0ken"));
    let (_, again) = send(put("/v0.1/providers/sms", &twilio())).await;
    assert_eq!(again["callback_url"], shown["callback_url"]);

    // Application scope: its own record, and another account cannot see it.
    let (status, created) = send(app.post("/v2/applications", &account).json(&json!({
        "name": "a", "capabilities": {"messages": {"webhooks": {}}}
    })))
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().expect("id");
    let path = format!("/v2/applications/{id}/providers/whatsapp");
    let meta = json!({"kind": "meta", "credentials": {
        "access_token": "EAAG-token", "phone_number_id": "1234", "app_secret": "app-s3cret", "verify_token": "v"}});
    let (status, shown) = send(put(&path, &meta)).await;
    assert_eq!(status, 200, "{shown}");
    assert!(
        shown["callback_url"]
            .as_str()
            .is_some_and(|u| u.contains("/callbacks/meta/"))
    );
    let other = app.create_account().await;
    let (status, problem) = send(
        app.client
            .put(format!("{}{path}", app.url))
            .basic_auth(&other.api_key, Some(&other.api_secret))
            .json(&meta),
    )
    .await;
    assert_problem(status, &problem, 404);
    let (status, list) = send(app.get(&format!("/v2/applications/{id}/providers"), &account)).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["kind"], "meta");

    let delete = |path: &str| {
        app.client
            .delete(format!("{}{path}", app.url))
            .basic_auth(&account.api_key, Some(&account.api_secret))
    };
    assert_eq!(send(delete("/v0.1/providers/sms")).await.0, 204);
    let (status, problem) = send(delete("/v0.1/providers/sms")).await;
    assert_problem(status, &problem, 404);
}

#[tokio::test]
async fn bad_settings_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let account = app.account.clone();
    let put = |path: &str, body: Value| {
        app.client
            .put(format!("{}{path}", app.url))
            .basic_auth(&account.api_key, Some(&account.api_secret))
            .json(&body)
    };
    // A credential missing, a channel the provider does not serve.
    let (status, problem) = send(put(
        "/v0.1/providers/sms",
        json!({"kind": "twilio", "credentials": {"account_sid": "AC1"}}),
    ))
    .await;
    assert_problem(status, &problem, 400);
    assert_eq!(invalid_names(&problem), ["credentials"]);
    let (status, problem) = send(put("/v0.1/providers/messenger", twilio())).await;
    assert_problem(status, &problem, 400);
    // Unknown kind or field, bad URL, unknown channel.
    let (status, problem) = send(put("/v0.1/providers/sms", json!({"kind": "telegraph"}))).await;
    assert_problem(status, &problem, 400);
    let (status, problem) = send(put(
        "/v0.1/providers/sms",
        json!({"kind": "twilio", "password": "x"}),
    ))
    .await;
    assert_problem(status, &problem, 400);
    let mut bad_url = twilio();
    bad_url["url"] = json!("ftp://example.com");
    let (status, problem) = send(put("/v0.1/providers/sms", bad_url)).await;
    assert_problem(status, &problem, 400);
    let (status, problem) = send(put("/v0.1/providers/fax", twilio())).await;
    assert_problem(status, &problem, 404);
    // No credentials, wrong credentials.
    let (status, problem) = send(
        app.client
            .put(format!("{}/v0.1/providers/sms", app.url))
            .json(&twilio()),
    )
    .await;
    assert_problem(status, &problem, 401);

    let (status, list) = send(app.get("/v0.1/providers", &account)).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]), "nothing was stored");
}

/// Twilio's `X-Twilio-Signature` for a form POST to `url`.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        token.as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(aws_lc_rs::hmac::sign(&key, data.as_bytes()))
}

/// Routes `account`'s SMS to Twilio; returns the record's callback URL.
async fn twilio_for(app: &TestApp, account: &crate::harness::Account) -> String {
    let (status, shown) = send(
        app.client
            .put(format!("{}/v0.1/providers/sms", app.url))
            .basic_auth(&account.api_key, Some(&account.api_secret))
            .json(&twilio()),
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    shown["callback_url"]
        .as_str()
        .expect("callback_url")
        .to_owned()
}

#[tokio::test]
async fn a_receipt_before_its_send_is_recorded_is_kept_for_the_sender() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let url = &twilio_for(&app, &app.account).await;
    let scope = format!("twilio:{}", url.rsplit('/').next().expect("route"));
    let params = [
        ("MessageSid", "SM0000000000000000000000000000fast"),
        ("MessageStatus", "delivered"),
    ];
    let body = serde_urlencoded::to_string(params).expect("form");
    let post = |signature: String| {
        app.client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body.clone())
    };

    // Signed with another token: refused, nothing kept.
    let (status, problem) = send(post(twilio_signature("not-the-token", url, &params))).await;
    assert_problem(status, &problem, 401);
    let parked = app
        .state
        .receipts
        .parked(&scope, params[0].1)
        .await
        .expect("parked");
    assert_eq!(parked.count, 0);

    // Signed with the record's token: kept until the send is recorded…
    let response = post(twilio_signature("tw-s3cret-t0ken", url, &params))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 204);
    // …and handed to the sender when it records the provider's id.
    let target = dispatch_infra::receipts::MessageRef {
        workflow_id: uuid::Uuid::new_v4(),
        message_uuid: uuid::Uuid::new_v4(),
    };
    let parked = app
        .state
        .receipts
        .record_sent(&scope, params[0].1, target, None)
        .await
        .expect("record");
    assert_eq!(parked.count, 1);
    assert_eq!(
        parked.receipts[0].status,
        dispatch_model::record::MessageStatus::Delivered
    );
}

/// Two accounts, each with its own Twilio record. A receipt that B's
/// credentials verify, naming the provider id of A's message, does not
/// touch A's message: it is matched only among B's sends (and kept for
/// one that might still come).
#[tokio::test]
async fn a_receipt_verified_by_one_record_cannot_touch_another_records_message() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let a = app.account.clone();
    let b = app.create_account().await;
    let callback = [twilio_for(&app, &a).await, twilio_for(&app, &b).await];
    let scope = |url: &str| format!("twilio:{}", url.rsplit('/').next().expect("route"));
    let sid = "SM00000000000000000000000000000a01";
    // A's message went out as `sid`.
    let target = dispatch_infra::receipts::MessageRef {
        workflow_id: uuid::Uuid::new_v4(),
        message_uuid: uuid::Uuid::new_v4(),
    };
    app.state
        .receipts
        .record_sent(&scope(&callback[0]), sid, target, None)
        .await
        .expect("record");
    app.drain_queued().await;

    // B, who knows or guessed the id, reports it undelivered.
    let params = [
        ("MessageSid", sid),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    let body = serde_urlencoded::to_string(params).expect("form");
    let response = app
        .client
        .post(&callback[1])
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            twilio_signature("tw-s3cret-t0ken", &callback[1], &params),
        )
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 204);
    assert!(
        app.drain_queued().await.is_empty(),
        "B's receipt reached A's workflow"
    );
    let kept = app
        .state
        .receipts
        .parked(&scope(&callback[1]), sid)
        .await
        .expect("parked");
    assert_eq!(kept.count, 1, "kept among B's sends only");
}
