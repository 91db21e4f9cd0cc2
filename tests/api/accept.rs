use serde_json::{Value, json};

use crate::cases;
use crate::harness::{TestApp, header, send};

#[tokio::test]
async fn a_message_is_confirmed_queued_and_visible() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    // Clients in the field send a trailing empty query string, and
    // fields of their own: `v1` is ours, but not on v0.1.
    let mut sms = cases::sms();
    sms["v1"] = serde_json::json!("not ours");
    let (status, body) = app.post_json("/v0.1/messages?", &sms).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message_uuid"]
        .as_str()
        .expect("message_uuid")
        .to_owned();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");

    let queued = app.drain_queued().await;
    assert_eq!(queued.len(), 1);
    let m = &queued[0].delivery;
    let envelope: Value = serde_json::from_slice(&m.data).expect("json");
    // Ingest applied the first transition: the send command is queued.
    assert_eq!(envelope["type"], "send.v1");
    assert_eq!(m.routing_key.as_str(), "send.sms");
    assert_eq!(envelope["workflow_id"], id.as_str());
    assert_eq!(envelope["message_uuid"], id.as_str());
    assert_eq!(envelope["message"]["to"]["number"], "447700900000");
    assert!(envelope["message"].get("v1").is_none(), "{envelope}");
    assert_eq!(envelope["account"], app.account.api_key.as_str());
    assert_eq!(m.properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.to_string()),
        Some(id.clone())
    );
    let traceparent = header(m, "traceparent").expect("traceparent header");
    assert!(traceparent.starts_with("00-"), "{traceparent}");

    let (status, view) = send(app.get(&format!("/v0.1/messages/{id}"), &app.account)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["message_uuid"], id.as_str());
    assert_eq!(view["status"], "accepted", "not yet with a provider");
    assert_eq!(view["channel"], "sms");
    assert_eq!(view["client_ref"], "ref-1");
    assert!(view["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test]
async fn a_dispatch_is_confirmed_queued_and_visible() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (status, body) = app.post_json("/v0.1/dispatch", &cases::two_steps()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["dispatch_uuid"]
        .as_str()
        .expect("dispatch_uuid")
        .to_owned();

    let queued = app.drain_queued().await;
    assert_eq!(queued.len(), 1);
    let envelope: Value = serde_json::from_slice(&queued[0].delivery.data).expect("json");
    // The first step only.
    assert_eq!(envelope["type"], "send.v1");
    assert_eq!(envelope["workflow_id"], id.as_str());
    assert_eq!(envelope["channel"], "whatsapp");
    assert_eq!(envelope["message"]["failover"]["condition_status"], "read");

    let (status, view) = send(app.get(&format!("/v0.1/dispatch/{id}"), &app.account)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["dispatch_uuid"], id.as_str());
    assert_eq!(view["template"], "failover");
    // Started by ingest itself: the first step's send is queued.
    assert_eq!(view["status"], "in_progress");
    assert_eq!(view["messages"][0]["channel"], "whatsapp");
    assert_eq!(view["messages"][1]["channel"], "sms");
    // The second step was never sent: no status of a message.
    assert_eq!(view["messages"][1]["status"], "not_sent", "{view}");
    assert!(view["messages"][1].get("timestamp").is_none(), "{view}");
    // A dispatch is not a message, and vice versa.
    let (status, _) = send(app.get(&format!("/v0.1/messages/{id}"), &app.account)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn trace_context_from_the_client_continues_on_the_queue() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, _) = send(
        app.post("/v0.1/messages", &app.account)
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&cases::sms()),
    )
    .await;
    assert_eq!(status, 202);
    let queued = app.drain_queued().await;
    let traceparent = header(&queued[0].delivery, "traceparent").expect("traceparent");
    assert!(traceparent.contains(trace_id), "{traceparent}");
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a child span, not the caller's"
    );
}

#[tokio::test]
async fn concurrent_requests_are_all_confirmed() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let body = cases::two_steps();
    let requests = (0..200).map(|_| app.post_json("/v0.1/dispatch", &body));
    let results = futures_util::future::join_all(requests).await;
    let mut ids: Vec<String> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["dispatch_uuid"].as_str().expect("id").to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(app.drain_queued().await.len(), 200);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let mut body = cases::sms();
    body["channel_hint"] = json!("ignored");
    body["message"]["content"]["extra"] = json!({"x": 1});
    let (status, _) = app.post_json("/v0.1/messages", &body).await;
    assert_eq!(status, 202);
    let queued = app.drain_queued().await;
    let envelope: Value = serde_json::from_slice(&queued[0].delivery.data).expect("json");
    assert!(envelope["message"].get("channel_hint").is_none());
}
