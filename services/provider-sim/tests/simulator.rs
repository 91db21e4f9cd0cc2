//! The simulator end to end over HTTP: sends, signed receipts posted to a
//! local receiver, the control API. No broker or Redis needed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dispatch_infra::Config;
use dispatch_model::record::MessageStatus;
use dispatch_provider_sim::wire::{self, Callback, ErrorBody, SendAccepted};
use dispatch_provider_sim::{Behaviour, Delivery, Outcome, SendRecord};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret";
const WAIT: Duration = Duration::from_secs(3);

/// A received callback, with its signature checked against the raw body.
#[derive(Debug, Clone)]
struct Received {
    callback: Callback,
    signed: bool,
}

#[derive(Clone, Default)]
struct Inbox {
    received: Arc<Mutex<Vec<Received>>>,
    /// Attempts still to answer with 500.
    fail_next: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
}

struct Harness {
    sim: SocketAddr,
    callback_url: String,
    inbox: Inbox,
    control: dispatch_provider_sim::Control,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.attempts.fetch_add(1, Ordering::SeqCst);
    if inbox
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let signed = headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| wire::verify(SECRET, &body, sig));
    let callback: Callback = serde_json::from_slice(&body).expect("callback JSON");
    inbox
        .received
        .lock()
        .expect("lock")
        .push(Received { callback, signed });
    StatusCode::NO_CONTENT
}

async fn start() -> Harness {
    let shutdown = CancellationToken::new();
    let inbox = Inbox::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let receiver = listener.local_addr().expect("receiver addr");
    let app = axum::Router::new()
        .route("/callbacks/simulator", axum::routing::post(receive))
        .with_state(inbox.clone());
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });

    let config = Config {
        simulator_addr: "127.0.0.1:0".parse().expect("addr"),
        simulator_secret: SECRET.into(),
        simulator_delay_ms: 20,
        ..Default::default()
    };
    let running = dispatch_provider_sim::spawn(&config, shutdown.clone())
        .await
        .expect("spawn simulator");
    Harness {
        sim: running.addr,
        callback_url: format!("http://{receiver}/callbacks/simulator"),
        inbox,
        control: running.control,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim)
    }

    async fn send_as(
        &self,
        token: &str,
        reference: &str,
        channel: &str,
        to: &str,
    ) -> reqwest::Response {
        self.http
            .post(self.url("/v1/messages"))
            .bearer_auth(token)
            .json(&json!({
                "reference": reference,
                "channel": channel,
                "to": to,
                "from": "Acme",
                "status_callback": self.callback_url,
                "message": {"content": {"type": "text", "text": "hello"}},
            }))
            .send()
            .await
            .expect("send")
    }

    async fn send(&self, reference: &str, channel: &str, to: &str) -> reqwest::Response {
        self.send_as(SECRET, reference, channel, to).await
    }

    async fn accepted(&self, reference: &str, channel: &str, to: &str) -> String {
        let response = self.send(reference, channel, to).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: SendAccepted = response.json().await.expect("202 body");
        assert!(accepted.message_id.starts_with("sim-"), "{accepted:?}");
        accepted.message_id
    }

    fn callbacks_for(&self, reference: &str) -> Vec<Received> {
        self.inbox
            .received
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.callback.reference == reference)
            .cloned()
            .collect()
    }

    /// Waits until `reference` has `n` callbacks, failing after [`WAIT`].
    async fn wait_callbacks(&self, reference: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.callbacks_for(reference);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {WAIT:?} for {n} callbacks for {reference}, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn sends_over_http(&self, to: &str) -> Vec<SendRecord> {
        self.http
            .get(self.url(&format!("/control/sends?to={to}")))
            .send()
            .await
            .expect("get sends")
            .json()
            .await
            .expect("sends JSON")
    }
}

async fn error_code(response: reqwest::Response) -> u32 {
    response
        .json::<ErrorBody>()
        .await
        .expect("error body")
        .error
        .code
}

#[tokio::test]
async fn delivered_receipt_is_signed_and_priced() {
    let h = start().await;
    let id = h.accepted("ref-00", "sms", "447700900000").await;
    let got = h.wait_callbacks("ref-00", 1).await;
    let cb = &got[0].callback;
    assert!(got[0].signed, "signature must verify");
    assert_eq!(cb.message_id, id);
    assert_eq!(cb.status, MessageStatus::Delivered);
    let usage = cb.usage.as_ref().expect("usage with delivered");
    assert_eq!(
        (usage.currency.as_str(), usage.price.as_str()),
        ("EUR", "0.0333")
    );
    assert!(cb.error.is_none() && cb.timestamp_ms > 0);

    let log = h.control.sends();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, Outcome::Accepted);
    assert_eq!(log[0].message_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        (log[0].from.as_str(), log[0].to.as_str()),
        ("Acme", "447700900000")
    );
}

#[tokio::test]
async fn read_follows_delivered() {
    let h = start().await;
    h.accepted("ref-01", "whatsapp", "447700900001").await;
    let got = h.wait_callbacks("ref-01", 2).await;
    let statuses: Vec<_> = got.iter().map(|r| r.callback.status).collect();
    assert_eq!(statuses, [MessageStatus::Delivered, MessageStatus::Read]);
    assert!(got.iter().all(|r| r.signed));
    assert_eq!(
        got[0].callback.usage.as_ref().map(|u| u.price.as_str()),
        Some("0.0150")
    );
    assert!(got[1].callback.usage.is_none());
    assert!(got[1].callback.timestamp_ms >= got[0].callback.timestamp_ms);
}

#[tokio::test]
async fn rejected_silent_and_undeliverable() {
    let h = start().await;
    let rejected = h.send("ref-02", "sms", "447700900002").await;
    assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(rejected).await, 1300);
    h.accepted("ref-03", "mms", "447700900003").await;
    h.accepted("ref-04", "messenger", "psid-1234504").await;

    let got = h.wait_callbacks("ref-04", 1).await;
    assert_eq!(got[0].callback.status, MessageStatus::Undeliverable);
    assert_eq!(got[0].callback.error.as_ref().map(|e| e.code), Some(1330));
    assert!(got[0].callback.usage.is_none() && got[0].signed);

    // `04` was sent after `02` and `03` and has the same delay: by now
    // their receipts, had there been any, would have arrived too.
    h.accepted("ref-last", "sms", "447700900099").await;
    h.wait_callbacks("ref-last", 1).await;
    assert!(h.callbacks_for("ref-02").is_empty());
    assert!(h.callbacks_for("ref-03").is_empty());

    let outcomes: Vec<_> = h.control.sends().iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Rejected,
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::Accepted
        ]
    );
}

#[tokio::test]
async fn transient_failures_then_delivery() {
    let h = start().await;
    let to = "447700900005";
    for _ in 0..2 {
        let response = h.send("ref-05", "viber_service_msg", to).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get("retry-after").is_none());
        assert_eq!(error_code(response).await, 1030);
    }
    let id = h.accepted("ref-05", "viber_service_msg", to).await;
    let got = h.wait_callbacks("ref-05", 1).await;
    assert_eq!(got[0].callback.status, MessageStatus::Delivered);
    assert_eq!(got[0].callback.message_id, id);

    let log = h.sends_over_http(to).await;
    let outcomes: Vec<_> = log.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Unavailable,
            Outcome::Unavailable,
            Outcome::Accepted
        ]
    );
    assert!(log.iter().all(|r| r.reference == "ref-05"));
    assert_eq!(log[2].message_id.as_deref(), Some(id.as_str()));
    assert!(h.sends_over_http("447700900000").await.is_empty());

    // A new reference starts its own count.
    let again = h.send("ref-05b", "viber_service_msg", to).await;
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn bad_credentials_and_bodies_are_refused() {
    let h = start().await;
    let wrong = h
        .send_as("not-the-secret", "ref-x", "sms", "447700900000")
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(wrong).await, 1010);

    let missing = h
        .http
        .post(h.url("/v1/messages"))
        .json(&json!({"reference": "r", "channel": "sms", "to": "1", "from": "A"}))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(missing).await, 1010);

    for body in [
        "{not json".to_owned(),
        json!({"reference": "r", "channel": "fax", "to": "1", "from": "A"}).to_string(),
        json!({"reference": "r", "channel": "sms", "to": "1", "from": "A",
               "status_callback": "not a url"})
        .to_string(),
    ] {
        let bad = h
            .http
            .post(h.url("/v1/messages"))
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(bad).await, 1020);
    }
    assert!(h.control.sends().is_empty());
}

#[tokio::test]
async fn overrides_change_the_outcome() {
    let h = start().await;
    let to = "447700900000";
    let put = h
        .http
        .put(h.url(&format!("/control/recipients/{to}")))
        .json(&json!({"reject": {"code": 1300, "reason": "Not today"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let rejected = h.send("ref-o1", "sms", to).await;
    assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: ErrorBody = rejected.json().await.expect("error body");
    assert_eq!(body.error.reason, "Not today");

    let put = h
        .http
        .put(h.url(&format!("/control/recipients/{to}")))
        .json(&json!({"delivery": "undeliverable", "delay_ms": 1,
                      "error": {"code": 1340, "reason": "Gone"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    h.accepted("ref-o2", "sms", to).await;
    let got = h.wait_callbacks("ref-o2", 1).await;
    assert_eq!(got[0].callback.status, MessageStatus::Undeliverable);
    assert_eq!(got[0].callback.error.as_ref().map(|e| e.code), Some(1340));

    let typo = h
        .http
        .put(h.url(&format!("/control/recipients/{to}")))
        .json(&json!({"delay": 5}))
        .send()
        .await
        .expect("put");
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);

    let delete = h
        .http
        .delete(h.url(&format!("/control/recipients/{to}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    h.accepted("ref-o3", "sms", to).await;
    let got = h.wait_callbacks("ref-o3", 1).await;
    assert_eq!(got[0].callback.status, MessageStatus::Delivered);

    // The same, in-process: a `02` number made to deliver with a price.
    h.control.set(
        "447700900002",
        Behaviour {
            delivery: Delivery::Delivered,
            price: Some("0.05".into()),
            ..Behaviour::default()
        },
    );
    h.accepted("ref-o4", "sms", "447700900002").await;
    let got = h.wait_callbacks("ref-o4", 1).await;
    assert_eq!(
        got[0].callback.usage.as_ref().map(|u| u.price.as_str()),
        Some("0.05")
    );
    h.control.clear("447700900002");
    let rejected = h.send("ref-o5", "sms", "447700900002").await;
    assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn failed_callbacks_are_retried() {
    let h = start().await;
    h.inbox.fail_next.store(2, Ordering::SeqCst);
    h.accepted("ref-retry", "sms", "447700900000").await;
    let got = h.wait_callbacks("ref-retry", 1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].signed);
    assert_eq!(h.inbox.attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn health_and_log_control() {
    let h = start().await;
    let health = h.http.get(h.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);

    h.send("ref-a", "sms", "447700900002").await;
    h.send("ref-b", "sms", "447700900003").await;
    let all: Vec<SendRecord> = h
        .http
        .get(h.url("/control/sends"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let refs: Vec<_> = all.iter().map(|r| r.reference.as_str()).collect();
    assert_eq!(refs, ["ref-a", "ref-b"]);
    assert_eq!(h.control.sends_to("447700900003").len(), 1);

    let cleared = h
        .http
        .delete(h.url("/control/sends"))
        .send()
        .await
        .expect("delete");
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    assert!(h.control.sends().is_empty());

    h.control.reset();
    assert!(h.control.sends().is_empty());
}
