//! `POST /v1/messages` at the HTTP level: the answers, the v1 error
//! format, what is queued, `Idempotency-Key`, and `GET /v1/messages`.

use serde_json::{Value, json};

use crate::harness::{TestApp, send};

fn sms() -> Value {
    json!({"channel": "sms", "message_type": "text", "to": "447700900000",
           "from": "447700900001", "text": "Hi", "client_ref": "r1"})
}

fn chain() -> Value {
    json!({"channel": "rcs", "message_type": "text", "to": "447700900000", "from": "agent",
           "text": "Hi", "failover_condition": {"condition_status": "read", "expiry_time": 60},
           "failover": [sms()]})
}

#[tokio::test]
async fn a_v1_message_is_answered_queued_and_shown_as_v1() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (status, body) = app.post_json("/v1/messages", &sms()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only message_uuid: {body}"
    );
    let id = body["message_uuid"].as_str().expect("uuid").to_owned();
    let queued = app.drain_queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].delivery.routing_key.as_str(), "send.sms");
    let envelope: Value = serde_json::from_slice(&queued[0].delivery.data).expect("json");
    assert_eq!(envelope["message"]["v1"]["text"], "Hi");
    assert_eq!(envelope["message"]["to"]["number"], "447700900000");

    let (status, view) = send(app.get(&format!("/v1/messages/{id}"), &app.account)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["to"], "447700900000");
    assert_eq!(view["channel"], "sms");
    assert_eq!(view["message_type"], "text");
    assert_eq!(view["client_ref"], "r1");
    assert!(view.get("workflow").is_none());
    // The v0.1 lookup shows a v1 message in its v1 shape too.
    let (_, v0) = send(app.get(&format!("/v0.1/messages/{id}"), &app.account)).await;
    assert_eq!(v0["to"], "447700900000");
}

#[tokio::test]
async fn a_chain_answers_its_workflow_and_first_message() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (status, body) = app.post_json("/v1/messages", &chain()).await;
    assert_eq!(status, 202, "{body}");
    let workflow = body["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_owned();
    let first = body["message_uuid"]
        .as_str()
        .expect("message_uuid")
        .to_owned();
    let queued = app.drain_queued().await;
    assert_eq!(queued.len(), 1, "the first message only");
    assert_eq!(queued[0].delivery.routing_key.as_str(), "send.rcs");
    let envelope: Value = serde_json::from_slice(&queued[0].delivery.data).expect("json");
    assert_eq!(envelope["message_uuid"], first.as_str());
    assert_eq!(envelope["workflow_id"], workflow.as_str());

    let (_, view) = send(app.get(&format!("/v1/messages/{first}"), &app.account)).await;
    assert_eq!(
        view["workflow"],
        json!({"workflow_id": workflow, "items_number": "1", "items_total": "2", "status": "in_progress"})
    );
    let (_, lookup) = send(app.get(&format!("/v0.1/dispatch/{workflow}"), &app.account)).await;
    let second = lookup["messages"][1]["message_uuid"]
        .as_str()
        .expect("second");
    let (_, view) = send(app.get(&format!("/v1/messages/{second}"), &app.account)).await;
    assert_eq!(view["status"], "not_sent");
    assert_eq!(view["workflow"]["items_number"], "2");

    // The same chain under one key: the same uuids, one workflow.
    let key = uuid::Uuid::new_v4().to_string();
    let keyed = || {
        app.post("/v1/messages", &app.account)
            .header("idempotency-key", &key)
            .json(&chain())
    };
    let (status, a) = send(keyed()).await;
    assert_eq!(status, 202);
    let (status, b) = send(keyed()).await;
    assert_eq!(status, 202);
    assert_eq!(a, b);
    assert_eq!(app.drain_queued().await.len(), 1);
}

#[tokio::test]
async fn bad_v1_requests_get_the_v1_error_format_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let errors = "https://developer.vonage.com/api-errors/messages#";
    let cases = [
        (
            json!({"channel": "sms", "message_type": "text", "to": "447700900000", "from": "447700900001"}),
            format!("{errors}1150"),
            "text",
        ),
        (
            json!({"channel": "telegram", "message_type": "text", "to": "1", "from": "2", "text": "x"}),
            format!("{errors}1100"),
            "channel",
        ),
        (
            json!({"channel": "sms", "message_type": "image", "to": "447700900000", "from": "447700900001"}),
            format!("{errors}1140"),
            "message_type",
        ),
        (
            json!({"channel": "sms", "message_type": "text", "to": "+44 7700", "from": "447700900001", "text": "x"}),
            format!("{errors}1130"),
            "to",
        ),
        (
            json!({"channel": "sms", "message_type": "text", "to": "447700900000", "from": "447700900001",
                "text": 5}),
            format!("{errors}1150"),
            "text",
        ),
    ];
    for (body, kind, field) in cases {
        let (status, problem) = app.post_json("/v1/messages", &body).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["type"], kind, "{problem}");
        assert!(
            problem["title"].is_string()
                && problem["detail"].is_string()
                && problem["instance"].is_string()
        );
        let names: Vec<&str> = problem["invalid_parameters"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&field), "{field} in {problem}");
    }
    let (status, problem) = send(
        app.post("/v1/messages", &app.account)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["type"],
        "https://developer.vonage.com/api-errors#invalid-json"
    );
    let (status, problem) = send(
        app.client
            .post(format!("{}/v1/messages", app.url))
            .basic_auth("nobody", Some("wrong"))
            .json(&sms()),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        problem["type"],
        "https://developer.vonage.com/api-errors#unauthorized"
    );
    // RCS is v1's: the v0.1 APIs refuse it.
    let (status, _) = app
        .post_json("/v0.1/messages", &json!({"to": {"type": "rcs", "number": "447700900000"},
            "from": {"type": "rcs", "id": "agent"}, "message": {"content": {"type": "text", "text": "x"}}}))
        .await;
    assert_eq!(status, 400);
    assert!(app.drain_queued().await.is_empty());
}
