//! One account can never see or touch another's applications, messages or
//! workflows: to the other account they do not exist.

use serde_json::json;

use crate::cases;
use crate::harness::{TestApp, assert_problem, send};

#[tokio::test]
async fn accounts_are_isolated() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let other = app.create_account().await;

    let (_, created) = app
        .post_json("/v2/applications", &json!({"name": "mine"}))
        .await;
    let app_id = created["id"].as_str().expect("id").to_owned();
    let (_, message) = app.post_json("/v0.1/messages", &cases::sms()).await;
    let message_id = message["message_uuid"].as_str().expect("id").to_owned();
    let (_, dispatch) = app.post_json("/v0.1/dispatch", &cases::two_steps()).await;
    let dispatch_id = dispatch["dispatch_uuid"].as_str().expect("id").to_owned();

    for path in [
        format!("/v2/applications/{app_id}"),
        format!("/v0.1/messages/{message_id}"),
        format!("/v0.1/dispatch/{dispatch_id}"),
    ] {
        let (status, body) = send(app.get(&path, &other)).await;
        assert_problem(status, &body, 404);
        let (status, _) = send(app.get(&path, &app.account)).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = send(
        app.client
            .put(format!("{}/v2/applications/{app_id}", app.url))
            .basic_auth(&other.api_key, Some(&other.api_secret))
            .json(&json!({"name": "stolen"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        app.client
            .delete(format!("{}/v2/applications/{app_id}", app.url))
            .basic_auth(&other.api_key, Some(&other.api_secret)),
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = send(app.get("/v2/applications", &other)).await;
    assert_eq!(list["total_items"], 0);
    let (_, mine) = send(app.get(&format!("/v2/applications/{app_id}"), &app.account)).await;
    assert_eq!(mine["name"], "mine");

    // Unknown and malformed ids are the same 404.
    for path in [
        format!("/v0.1/messages/{}", uuid::Uuid::new_v4()),
        "/v0.1/dispatch/not-a-uuid".to_owned(),
    ] {
        let (status, body) = send(app.get(&path, &app.account)).await;
        assert_problem(status, &body, 404);
    }
}
