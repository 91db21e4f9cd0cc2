//! Health, readiness and the OpenAPI document.

use serde_json::Value;

use crate::harness::{TestApp, send};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (status, body) = send(app.client.get(format!("{}/healthz", app.url))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = send(app.client.get(format!("{}/readyz", app.url))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["rabbitmq"], "up");
    assert_eq!(body["checks"]["redis"], "up");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = TestApp::spawn().await;
    let (status, doc) = send(app.client.get(format!("{}/openapi.json", app.url))).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v0.1/messages", &["post"][..]),
        ("/v0.1/messages/{message_uuid}", &["get"]),
        ("/v0.1/dispatch", &["post"]),
        ("/v0.1/dispatch/{dispatch_uuid}", &["get"]),
        ("/v1/messages", &["post"]),
        ("/v1/messages/{message_uuid}", &["get"]),
        ("/v2/applications", &["post", "get"]),
        ("/v2/applications/{id}", &["get", "put", "delete"]),
        ("/v1/applications/{id}/webhooks/failed", &["get"]),
        ("/v1/applications/{id}/webhooks/failed/retry", &["post"]),
        (
            "/v1/applications/{id}/webhooks/failed/{webhook_id}/retry",
            &["post"],
        ),
        ("/callbacks/simulator", &["post"]),
        ("/callbacks/simulator/inbound", &["post"]),
        ("/callbacks/{kind}/{route}", &["get", "post"]),
        ("/callbacks/{kind}/{route}/{hook}", &["post"]),
        ("/v0.1/providers", &["get"]),
        ("/v0.1/providers/{channel}", &["delete"]),
        ("/v2/applications/{id}/providers", &["get"]),
        ("/v2/applications/{id}/providers/{channel}", &["delete"]),
        ("/v0.1/recipients/{number}", &["delete"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} missing from /openapi.json"
            );
        }
    }
    // A PUT of provider settings per channel: the providers allowed, and
    // so the body, depend on the channel.
    for channel in dispatch_model::Channel::ALL {
        for prefix in ["/v0.1/providers", "/v2/applications/{id}/providers"] {
            let path = format!("{prefix}/{channel}");
            assert!(
                paths.get(&path).and_then(|p| p.get("put")).is_some(),
                "put {path} missing from /openapi.json"
            );
        }
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", &piece[..piece.find('"').expect("end of ref")]);
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
    let _: &Value = &doc;
}

#[tokio::test]
async fn every_process_answers_health_on_its_admin_port() {
    let config = crate::harness::test_config();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let connections = dispatch_infra::Connections::open(&config, "test").expect("connections");
    let (addr, _) = dispatch_infra::admin::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        connections.clone(),
        shutdown.clone(),
    )
    .await
    .expect("admin");
    assert!(
        connections
            .broker
            .wait_ready(std::time::Duration::from_secs(10))
            .await
    );
    let client = reqwest::Client::new();
    let (status, _) = send(client.get(format!("http://{addr}/healthz"))).await;
    assert_eq!(status, 200);
    let (status, body) = send(client.get(format!("http://{addr}/readyz"))).await;
    assert_eq!((status, &body["status"]), (200, &Value::from("ready")));

    // `dispatch healthcheck`, as a container runs it.
    let check = |url: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(["healthcheck", "--url", &url])
            .output()
            .await
            .expect("dispatch healthcheck runs")
            .status
            .success()
    };
    assert!(check(format!("http://{addr}/readyz")).await);

    // Redis gone: not ready, and the check fails.
    let mut broken = config.clone();
    broken.redis_url = "redis://127.0.0.1:1/".into();
    let down = dispatch_infra::Connections::open(&broken, "test").expect("connections");
    assert!(
        down.broker
            .wait_ready(std::time::Duration::from_secs(10))
            .await
    );
    let (down_addr, _) =
        dispatch_infra::admin::spawn("127.0.0.1:0".parse().expect("addr"), down, shutdown.clone())
            .await
            .expect("admin");
    let (status, body) = send(client.get(format!("http://{down_addr}/readyz"))).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["rabbitmq"], "up");
    assert!(!check(format!("http://{down_addr}/readyz")).await);
    shutdown.cancel();
}
