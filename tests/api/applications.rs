//! The Applications API v2.

use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, invalid_names, send};

fn full_body(name: &str) -> Value {
    json!({
        "name": name,
        "capabilities": {
            "messages": {"webhooks": {
                "inbound_url": {"address": "https://example.com/inbound", "http_method": "POST"},
                "status_url": {"address": "https://example.com/status", "http_method": "POST"}
            }},
            "voice": {"webhooks": {"answer_url": {"address": "https://example.com/answer", "http_method": "GET"}}}
        }
    })
}

#[tokio::test]
async fn create_get_update_delete() {
    let app = TestApp::spawn().await;
    let (status, created) = app.post_json("/v2/applications", &full_body("Demo")).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "Demo");
    assert_eq!(
        created["capabilities"]["messages"]["webhooks"]["status_url"]["address"],
        "https://example.com/status"
    );
    assert_eq!(
        created["capabilities"]["voice"]["webhooks"]["answer_url"]["http_method"],
        "GET"
    );
    let public = created["keys"]["public_key"]
        .as_str()
        .expect("public key")
        .to_owned();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(
        created["keys"]["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );
    assert!(
        created["_links"]["self"]["href"]
            .as_str()
            .is_some_and(|h| h.ends_with(&id))
    );

    let path = format!("/v2/applications/{id}");
    let (status, got) = send(app.get(&path, &app.account)).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Demo");
    assert_eq!(got["keys"]["public_key"], public.as_str());
    assert!(
        got["keys"].get("private_key").is_none(),
        "the private key is shown once"
    );

    let (status, updated) = send(
        app.client
            .put(format!("{}{path}", app.url))
            .basic_auth(&app.account.api_key, Some(&app.account.api_secret))
            .json(&json!({"name": "Renamed"})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(
        updated["keys"]["public_key"],
        public.as_str(),
        "kept when absent"
    );
    assert_eq!(
        updated["capabilities"]["messages"]["webhooks"]["inbound_url"]["address"],
        "https://example.com/inbound",
        "kept when absent"
    );
    let (_, got) = send(app.get(&path, &app.account)).await;
    assert_eq!(got["name"], "Renamed");

    let (status, _) = send(
        app.client
            .delete(format!("{}{path}", app.url))
            .basic_auth(&app.account.api_key, Some(&app.account.api_secret)),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = send(app.get(&path, &app.account)).await;
    assert_problem(status, &body, 404);
    let (_, list) = send(app.get("/v2/applications", &app.account)).await;
    assert_eq!(list["total_items"], 0);
}

#[tokio::test]
async fn listing_pages() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = app
            .post_json("/v2/applications", &json!({"name": format!("app {i}")}))
            .await;
        assert_eq!(status, 200);
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    let (status, page1) = send(app.get("/v2/applications?page_size=2", &app.account)).await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["page_size"], 2);
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["total_items"], 5);
    assert_eq!(page1["total_pages"], 3);
    let names = |v: &Value| -> Vec<String> {
        v["_embedded"]["applications"]
            .as_array()
            .expect("applications")
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ids[0..2]);
    let (_, page3) = send(app.get("/v2/applications?page_size=2&page=3", &app.account)).await;
    assert_eq!(names(&page3), ids[4..5]);
    let (_, page9) = send(app.get("/v2/applications?page_size=2&page=9", &app.account)).await;
    assert!(names(&page9).is_empty());
    let (_, default) = send(app.get("/v2/applications", &app.account)).await;
    assert_eq!(default["page_size"], 10);
    assert_eq!(names(&default).len(), 5);

    for bad in ["page_size=0", "page_size=101", "page=0", "page_size=ten"] {
        let (status, body) = send(app.get(&format!("/v2/applications?{bad}"), &app.account)).await;
        assert_problem(status, &body, 400);
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("#list-validation")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn invalid_payloads_name_each_field() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post_json(
            "/v2/applications",
            &json!({
                "keys": {"public_key": "not a key"},
                "capabilities": {"messages": {"webhooks": {
                    "inbound_url": {"address": "ftp://example.com/x"},
                    "status_url": {"address": "https://example.com/s", "http_method": "GET"}
                }}}
            }),
        )
        .await;
    assert_problem(status, &body, 400);
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("#payload-validation"))
    );
    let mut names = invalid_names(&body);
    names.sort();
    assert_eq!(
        names,
        [
            "capabilities.messages.webhooks.inbound_url.address",
            "capabilities.messages.webhooks.status_url.http_method",
            "keys.public_key",
            "name",
        ]
    );
    let (status, body) = app.post_json("/v2/applications", &json!({"name": 5})).await;
    assert_problem(status, &body, 400);
    assert_eq!(invalid_names(&body), ["name"]);
    let (_, list) = send(app.get("/v2/applications", &app.account)).await;
    assert_eq!(list["total_items"], 0, "nothing was created");
}
