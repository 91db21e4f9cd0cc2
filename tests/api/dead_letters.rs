//! An application's dead-lettered webhooks are its account's business:
//! Basic auth of the owning account only. A JWT (even the application's
//! own) is a 401; another account's application is a 404.

use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::auth::{server_keyed_app, sign};
use crate::harness::{Account, TestApp, assert_problem, send};

/// Stores a dead letter for `app_id` as the notifier would.
async fn dead_letter(app: &TestApp, account: &Account, app_id: &str) -> String {
    let webhook_id = format!("{}:delivered", uuid::Uuid::new_v4());
    let job = dispatch_model::envelope::WebhookJob {
        webhook_id: webhook_id.clone(),
        kind: dispatch_model::envelope::WebhookKind::MessageStatus,
        account: account.api_key.clone(),
        application_id: Some(app_id.parse().expect("uuid")),
        workflow_id: uuid::Uuid::new_v4(),
        event_at_ms: 1_700_000_000_000,
        body: json!({"status": "delivered"}),
        url: None,
        attempts: 8,
        reason: Some("8 attempts failed, the last: HTTP 500".into()),
    };
    let _: usize = app
        .state
        .redis()
        .hset(
            app.state.keys.dead_letters(app_id),
            &webhook_id,
            serde_json::to_string(&job).expect("json"),
        )
        .await
        .expect("hset");
    webhook_id
}

fn token(app_id: &str, private: &str) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    sign(
        private,
        &json!({"application_id": app_id, "iat": now, "jti": uuid::Uuid::new_v4().to_string()}),
    )
}

/// The three routes of `app_id`: (method, path).
fn routes(app_id: &str, webhook_id: &str) -> [(reqwest::Method, String); 3] {
    let base = format!("/v1/applications/{app_id}/webhooks/failed");
    [
        (reqwest::Method::GET, base.clone()),
        (reqwest::Method::POST, format!("{base}/{webhook_id}/retry")),
        (reqwest::Method::POST, format!("{base}/retry")),
    ]
}

#[tokio::test]
async fn dead_letters_belong_to_the_owning_account() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    // Account one has applications one and two; account two has three.
    let one = app.account.clone();
    let (app_one, key_one) = server_keyed_app(&app).await;
    let (app_two, key_two) = server_keyed_app(&app).await;
    let two = app.create_account().await;
    let (status, created) = send(
        app.post("/v2/applications", &two)
            .json(&json!({"name": "theirs"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let app_three = created["id"].as_str().expect("id").to_owned();
    let letter_one = dead_letter(&app, &one, &app_one).await;
    let letter_three = dead_letter(&app, &two, &app_three).await;

    // Application two's token, and application one's own, are refused.
    for bearer in [token(&app_two, &key_two), token(&app_one, &key_one)] {
        for (method, path) in routes(&app_one, &letter_one) {
            let (status, body) = send(
                app.client
                    .request(method.clone(), format!("{}{path}", app.url))
                    .bearer_auth(&bearer),
            )
            .await;
            assert_problem(status, &body, 401);
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Basic"),
                "{method} {path}: {body}"
            );
        }
    }
    // Another account's application does not exist.
    for (method, path) in routes(&app_one, &letter_one) {
        let (status, body) = send(
            app.client
                .request(method.clone(), format!("{}{path}", app.url))
                .basic_auth(&two.api_key, Some(&two.api_secret)),
        )
        .await;
        assert_problem(status, &body, 404);
    }
    for (method, path) in routes(&app_three, &letter_three) {
        let (status, body) = send(
            app.client
                .request(method.clone(), format!("{}{path}", app.url))
                .basic_auth(&one.api_key, Some(&one.api_secret)),
        )
        .await;
        assert_problem(status, &body, 404);
    }
    // Nothing was replayed by any of that: each still has its letter.
    let list = |account: &Account, app_id: &str| {
        app.get(
            &format!("/v1/applications/{app_id}/webhooks/failed"),
            account,
        )
    };
    let (status, listed) = send(list(&one, &app_one)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["count"], 1);
    assert_eq!(
        listed["_embedded"]["webhooks"][0]["webhook_id"],
        Value::from(letter_one.clone())
    );
    let (_, listed) = send(list(&two, &app_three)).await;
    assert_eq!(listed["count"], 1);
    let (_, listed) = send(list(&one, &app_two)).await;
    assert_eq!(listed["count"], 0);

    // The owner replays its own.
    let (status, body) = send(app.post(
        &format!("/v1/applications/{app_one}/webhooks/failed/{letter_one}/retry"),
        &one,
    ))
    .await;
    assert_eq!((status, body["replayed"].clone()), (202, json!(1)));
    let (_, listed) = send(list(&one, &app_one)).await;
    assert_eq!(listed["count"], 0);
}
