//! Every rule of the model's table, over HTTP: a 400 in the API's error
//! format naming the field, and nothing queued.

use serde_json::json;

use crate::cases;
use crate::harness::{TestApp, assert_problem, invalid_names, send};

/// Posts every case of a table; checks the status, the named field and
/// that exactly the valid requests were queued.
async fn run_table(
    path: &str,
    table: Vec<(&'static str, serde_json::Value, Option<&'static str>)>,
) {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let mut failures = Vec::new();
    let mut accepted = 0;
    for (what, body, expected) in table {
        let (status, response) = app.post_json(path, &body).await;
        match expected {
            None if status == 202 => accepted += 1,
            Some(field) if status == 400 && invalid_names(&response).iter().any(|n| n == field) => {
                assert_problem(status, &response, 400);
            }
            _ => failures.push(format!(
                "{what}: expected {expected:?}, got {status} {response}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        app.drain_queued().await.len(),
        accepted,
        "only valid requests are queued"
    );
}

#[tokio::test]
async fn every_message_rule_over_http() {
    run_table("/v0.1/messages", cases::message_cases()).await;
}

#[tokio::test]
async fn every_workflow_rule_over_http() {
    run_table("/v0.1/dispatch", cases::workflow_cases()).await;
}

#[tokio::test]
async fn bad_bodies_get_4xx_in_the_error_format() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let url = "/v0.1/dispatch";
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut r = app.post(url, &app.account).body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r
    };
    let json_ct = Some("application/json");
    for (what, request, expected) in [
        ("malformed", raw("{\"template\":", json_ct), 400),
        ("not json", raw("hello", json_ct), 400),
        ("array", raw("[]", json_ct), 400),
        (
            "wrong type",
            raw("{\"template\": 1, \"workflow\": {}}", json_ct),
            400,
        ),
        ("empty body", raw("", json_ct), 400),
        ("no body, no type", app.post(url, &app.account), 400),
        ("text/plain", raw("{}", Some("text/plain")), 415),
        ("no content type", raw("{}", None), 415),
        (
            "form",
            raw("a=b", Some("application/x-www-form-urlencoded")),
            415,
        ),
    ] {
        let (status, body) = send(request).await;
        assert_eq!(status, expected, "{what}: {body}");
        assert_problem(status, &body, expected);
    }

    let huge = json!({"template": "failover", "padding": "x".repeat(app.config.max_body_bytes)});
    let (status, body) = app.post_json(url, &huge).await;
    assert_problem(status, &body, 413);

    // A chunked body without Content-Length is limited while reading.
    let chunks =
        futures_util::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8 * 1024])));
    let (status, body) = send(
        app.post(url, &app.account)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_problem(status, &body, 413);

    let steps: Vec<_> = (0..=app.config.max_workflow_steps)
        .map(|_| {
            let mut s = cases::sms();
            s["failover"] = json!({"expiry_time": 60, "condition_status": "delivered"});
            s
        })
        .collect();
    let (status, body) = app
        .post_json(url, &json!({"template": "failover", "workflow": steps}))
        .await;
    assert_problem(status, &body, 400);
    assert_eq!(invalid_names(&body), ["workflow"]);

    assert!(app.drain_queued().await.is_empty(), "nothing queued");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_format() {
    let app = TestApp::spawn().await;
    let (status, body) = send(app.get("/v0.1/nothing", &app.account)).await;
    assert_problem(status, &body, 404);
    let (status, body) = send(app.get("/v0.1/dispatch", &app.account)).await;
    assert_problem(status, &body, 405);
    let (status, body) = send(app.client.delete(format!("{}/v0.1/messages", app.url))).await;
    assert_problem(status, &body, 405);
}

/// A path segment that is not UTF-8 once percent-decoded names nothing:
/// a 404 in the error format on every route with a path parameter.
#[tokio::test]
async fn paths_that_are_not_utf8_answer_in_the_error_format() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    let bad = "%ff%fe";
    let routes = [
        ("GET", format!("/v0.1/messages/{bad}")),
        ("GET", format!("/v0.1/dispatch/{bad}")),
        ("GET", format!("/v2/applications/{bad}")),
        ("PUT", format!("/v2/applications/{bad}")),
        ("DELETE", format!("/v2/applications/{bad}")),
        ("GET", format!("/v1/applications/{bad}/webhooks/failed")),
        (
            "POST",
            format!("/v1/applications/{bad}/webhooks/failed/retry"),
        ),
        (
            "POST",
            format!("/v1/applications/{id}/webhooks/failed/{bad}/retry"),
        ),
        ("PUT", format!("/v0.1/providers/{bad}")),
        ("DELETE", format!("/v0.1/providers/{bad}")),
        ("GET", format!("/v2/applications/{bad}/providers")),
        ("PUT", format!("/v2/applications/{id}/providers/{bad}")),
        ("DELETE", format!("/v2/applications/{bad}/providers/sms")),
        ("GET", format!("/callbacks/{bad}/route")),
        ("POST", format!("/callbacks/vonage/{bad}")),
        ("POST", format!("/callbacks/vonage/route/{bad}")),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let request = app
            .client
            .request(method.clone(), format!("{}{path}", app.url))
            .basic_auth(&app.account.api_key, Some(&app.account.api_secret))
            .json(&json!({"name": "x", "kind": "simulator"}));
        let (status, body) = send(request).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_problem(status, &body, 404);
    }
}

/// A key twice in one object is refused wherever it is, on every route
/// that takes a JSON body, naming the key and where it is.
#[tokio::test]
async fn duplicate_keys_are_refused_on_every_json_route() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (_, created) = app
        .post_json("/v2/applications", &json!({"name": "mine"}))
        .await;
    let app_id = created["id"].as_str().expect("id").to_owned();
    let sms = r#"{"to":{"type":"sms","number":"447700900000"},"from":{"type":"sms","number":"447700900001"},"message":{"content":{"type":"text","text":"a","text":"b"}}}"#;
    let whatsapp = r#"{"to":{"type":"whatsapp","number":"447700900000"},"from":{"type":"whatsapp","number":"447700900001"},"message":{"content":{"type":"text","text":"Hello"}},"failover":{"expiry_time":600,"condition_status":"read"}}"#;
    let dispatch = format!(r#"{{"template":"failover","workflow":[{whatsapp},{sms}]}}"#);
    let cases = [
        (
            "POST",
            "/v0.1/messages".to_owned(),
            sms.to_owned(),
            "message.content.text",
            "/message/content/text",
        ),
        (
            "POST",
            "/v0.1/messages".to_owned(),
            r#"{"client_ref":"a","client_ref":"a","to":{}}"#.to_owned(),
            "client_ref",
            "/client_ref",
        ),
        (
            "POST",
            "/v0.1/messages".to_owned(),
            r#"{"extra":[{}, {"a/b~":1,"a/b~":2}]}"#.to_owned(),
            "extra[1].a/b~",
            "/extra/1/a~1b~0",
        ),
        (
            "POST",
            "/v0.1/dispatch".to_owned(),
            dispatch,
            "workflow[1].message.content.text",
            "/workflow/1/message/content/text",
        ),
        (
            "POST",
            "/v2/applications".to_owned(),
            r#"{"name":"a","name":"b"}"#.to_owned(),
            "name",
            "/name",
        ),
        (
            "PUT",
            format!("/v2/applications/{app_id}"),
            r#"{"name":"a","capabilities":{"messages":{"webhooks":{},"webhooks":{}}}}"#.to_owned(),
            "capabilities.messages.webhooks",
            "/capabilities/messages/webhooks",
        ),
        (
            "PUT",
            "/v0.1/providers/sms".to_owned(),
            r#"{"kind":"simulator","kind":"twilio"}"#.to_owned(),
            "kind",
            "/kind",
        ),
        (
            "PUT",
            format!("/v2/applications/{app_id}/providers/sms"),
            r#"{"kind":"simulator","credentials":{"a":"1","a":"2"}}"#.to_owned(),
            "credentials.a",
            "/credentials/a",
        ),
    ];
    for (method, path, body, name, pointer) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let request = app
            .client
            .request(method.clone(), format!("{}{path}", app.url))
            .basic_auth(&app.account.api_key, Some(&app.account.api_secret))
            .header("content-type", "application/json")
            .body(body.clone());
        let (status, response) = send(request).await;
        assert_problem(status, &response, 400);
        assert_eq!(invalid_names(&response), [name], "{method} {path} {body}");
        let reason = response["invalid_parameters"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains(pointer), "{method} {path}: {reason}");
    }
    assert!(app.drain_queued().await.is_empty(), "nothing queued");
    // The same key in different objects is no duplicate.
    let (status, body) = app.post_json("/v0.1/dispatch", &cases::two_steps()).await;
    assert_eq!(status, 202, "{body}");
}
