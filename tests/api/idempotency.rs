//! `Idempotency-Key` on the three send endpoints: one workflow per key and
//! body, whatever repeats, races or crashes around it.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cases;
use crate::harness::{Account, TestApp, assert_problem, invalid_names, send};

fn keyed(
    app: &TestApp,
    path: &str,
    account: &Account,
    key: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    app.post(path, account)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("json"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How many sends ingest queued (each workflow queues its first).
async fn sends_queued(app: &TestApp) -> usize {
    app.drain_queued()
        .await
        .iter()
        .filter(|m| m.delivery.routing_key.as_str().starts_with("send."))
        .count()
}

#[tokio::test]
async fn a_repeat_gets_the_first_answer_and_creates_nothing() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    for (path, body, id_field) in [
        ("/v0.1/messages", cases::sms(), "message_uuid"),
        ("/v0.1/dispatch", cases::two_steps(), "dispatch_uuid"),
    ] {
        let key = format!("order-{}", uuid::Uuid::new_v4());
        let first = keyed(&app, path, &app.account, &key, &body)
            .send()
            .await
            .expect("sent");
        assert_eq!(first.status(), 202);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first: Value = first.json().await.expect("json");
        let again = keyed(&app, path, &app.account, &key, &body)
            .send()
            .await
            .expect("sent");
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.expect("json");
        assert_eq!(again, first, "{path}: the same answer");
        assert!(first[id_field].is_string(), "{first}");
        assert_eq!(sends_queued(&app).await, 1, "{path}: one workflow");

        // The same key with another body.
        let mut other = body.clone();
        other["client_ref"] = json!("changed");
        if path == "/v0.1/dispatch" {
            other["workflow"][0]["client_ref"] = json!("changed");
        }
        let (status, problem) = send(keyed(&app, path, &app.account, &key, &other)).await;
        assert_problem(status, &problem, 422);
        // Another account's identical key is its own.
        let other_account = app.create_account().await;
        let (status, theirs) = send(keyed(&app, path, &other_account, &key, &body)).await;
        assert_eq!(status, 202, "{theirs}");
        assert_ne!(theirs[id_field], first[id_field]);
        assert_eq!(sends_queued(&app).await, 1, "{path}: the other account's");
    }
}

#[tokio::test]
async fn twenty_concurrent_duplicates_make_one_workflow() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let body = cases::two_steps();
    let key = uuid::Uuid::new_v4().to_string();
    let answers = futures_util::future::join_all(
        (0..20).map(|_| send(keyed(&app, "/v0.1/dispatch", &app.account, &key, &body))),
    )
    .await;
    let mut ids: Vec<&Value> = Vec::new();
    for (status, body) in &answers {
        match status {
            202 => ids.push(&body["dispatch_uuid"]),
            409 => assert_problem(*status, body, 409),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!ids.is_empty(), "{answers:?}");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one dispatch uuid: {ids:?}"
    );
    assert_eq!(sends_queued(&app).await, 1, "one workflow");
    // Once answered, every repeat is the 202.
    let (status, again) = send(keyed(&app, "/v0.1/dispatch", &app.account, &key, &body)).await;
    assert_eq!(status, 202);
    assert_eq!(&again["dispatch_uuid"], ids[0]);
}

#[tokio::test]
async fn bad_keys_are_400_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let long = "k".repeat(256);
    let bad: [&[u8]; 4] = [long.as_bytes(), b"caf\xc3\xa9", b"", b"\"\""];
    for key in bad {
        let (status, body) = send(
            app.post("/v0.1/messages", &app.account)
                .header(
                    "idempotency-key",
                    reqwest::header::HeaderValue::from_bytes(key).expect("value"),
                )
                .json(&cases::sms()),
        )
        .await;
        assert_problem(status, &body, 400);
        assert_eq!(invalid_names(&body), ["Idempotency-Key"], "{body}");
    }
    let (status, _) = send(keyed(
        &app,
        "/v0.1/messages",
        &app.account,
        &"k".repeat(255),
        &cases::sms(),
    ))
    .await;
    assert_eq!(status, 202, "255 characters are fine");
    assert_eq!(sends_queued(&app).await, 1);
}

#[tokio::test]
async fn a_key_held_by_a_request_in_flight_is_409_until_its_lease_ends() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let body = cases::two_steps();
    let bytes = [
        &b"/v0.1/dispatch\n"[..],
        &serde_json::to_vec(&body).expect("json"),
    ]
    .concat();
    let key = uuid::Uuid::new_v4().to_string();
    // What a request holding the key leaves while it writes its workflow,
    // or when it died before writing.
    let workflow_id = uuid::Uuid::new_v4();
    let held = json!({
        "body_sha256": sha256_hex(&bytes),
        "workflow_id": workflow_id,
        "answer": {"dispatch_uuid": workflow_id},
        "claimed_at_ms": dispatch_model::record::now_ms(),
    });
    let keys = &app.state.keys;
    let key_sha256 = sha256_hex(key.as_bytes());
    let _: () = redis::pipe()
        .set(
            keys.idempotency(&app.account.api_key, &key_sha256),
            held.to_string(),
        )
        .ignore()
        .pset_ex(
            keys.idempotency_lease(&app.account.api_key, &key_sha256),
            1,
            400,
        )
        .ignore()
        .query_async(&mut app.state.redis())
        .await
        .expect("set");
    let (status, problem) = send(keyed(&app, "/v0.1/dispatch", &app.account, &key, &body)).await;
    assert_problem(status, &problem, 409);
    assert_eq!(sends_queued(&app).await, 0);

    // Its holder never wrote: past the lease, the repeat takes the key
    // over, with the workflow id it was claimed for.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let (status, answer) = send(keyed(&app, "/v0.1/dispatch", &app.account, &key, &body)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["dispatch_uuid"], workflow_id.to_string());
    assert_eq!(sends_queued(&app).await, 1);
    let (status, view) =
        send(app.get(&format!("/v0.1/dispatch/{workflow_id}"), &app.account)).await;
    assert_eq!(status, 200, "{view}");
}

/// A key whose workflow exists but was never answered: the repeat's 202
/// first settles the workflow as claimed, so that its first ingest (its
/// write's outcome unknown) cannot abandon it afterwards; and a workflow
/// abandoned already is not replayed as accepted.
#[tokio::test]
async fn a_replay_claims_the_workflow_it_answers_for() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let body = cases::two_steps();
    let bytes = [
        &b"/v0.1/dispatch\n"[..],
        &serde_json::to_vec(&body).expect("json"),
    ]
    .concat();
    for abandoned in [false, true] {
        // A workflow written without an answer given for its key.
        let (status, written) = app.post_json("/v0.1/dispatch", &body).await;
        assert_eq!(status, 202);
        let workflow_id = written["dispatch_uuid"].as_str().expect("id").to_owned();
        let key = uuid::Uuid::new_v4().to_string();
        let held = json!({
            "body_sha256": sha256_hex(&bytes),
            "workflow_id": workflow_id,
            "answer": {"dispatch_uuid": workflow_id},
            "claimed_at_ms": dispatch_model::record::now_ms(),
        });
        let keys = &app.state.keys;
        let mut pipe = redis::pipe();
        pipe.set(
            keys.idempotency(&app.account.api_key, &sha256_hex(key.as_bytes())),
            held.to_string(),
        )
        .ignore();
        if abandoned {
            pipe.set(keys.fate(&workflow_id), "abandoned").ignore();
        }
        let _: () = pipe.query_async(&mut app.state.redis()).await.expect("set");
        let (status, answer) = send(keyed(&app, "/v0.1/dispatch", &app.account, &key, &body)).await;
        if abandoned {
            assert_problem(status, &answer, 409);
            continue;
        }
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["dispatch_uuid"], workflow_id.as_str());
        let fate: Option<String> = redis::cmd("GET")
            .arg(keys.fate(&workflow_id))
            .query_async(&mut app.state.redis())
            .await
            .expect("get");
        assert_eq!(fate.as_deref(), Some("claimed"), "settled before the 202");
    }
    app.drain_queued().await;
}
