//! Provider callbacks are believed only when signed.

use dispatch_provider_sim::wire;
use serde_json::json;

use crate::harness::{TestApp, assert_problem, send};

fn receipt() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "message_id": "sim-unknown",
        "reference": "00000000-0000-0000-0000-000000000000",
        "status": "delivered",
        "timestamp_ms": 1_700_000_000_000i64,
    }))
    .expect("json")
}

#[tokio::test]
async fn unsigned_or_forged_receipts_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let url = format!("{}/callbacks/simulator", app.url);
    let body = receipt();
    let forged = wire::sign("not-the-secret", &body);
    for signature in [None, Some("sha256=00"), Some(forged.as_str())] {
        let mut request = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header(wire::SIGNATURE_HEADER, signature);
        }
        let (status, problem) = send(request).await;
        assert_problem(status, &problem, 401);
    }
    // A signed body that is not a receipt is a 400.
    let junk = b"{\"status\":42}".to_vec();
    let (status, problem) = send(
        app.client
            .post(&url)
            .header(
                wire::SIGNATURE_HEADER,
                wire::sign(&app.config.simulator_secret, &junk),
            )
            .body(junk),
    )
    .await;
    assert_problem(status, &problem, 400);
    assert!(app.drain_queued().await.is_empty(), "nothing published");

    // Signed, for a message not yet known: kept for its sender, 204.
    let (status, _) = send(
        app.client
            .post(&url)
            .header(
                wire::SIGNATURE_HEADER,
                wire::sign(&app.config.simulator_secret, &body),
            )
            .body(body),
    )
    .await;
    assert_eq!(status, 204);
    assert!(app.drain_queued().await.is_empty(), "parked, not published");
}

#[tokio::test]
async fn an_oversized_callback_is_refused_in_the_error_format() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let big = vec![b'a'; 3 * 1024 * 1024];
    for path in ["/callbacks/simulator", "/callbacks/twilio/some-route"] {
        let (status, problem) = send(
            app.client
                .post(format!("{}{path}", app.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(big.clone()),
        )
        .await;
        assert_problem(status, &problem, 413);
    }
}
