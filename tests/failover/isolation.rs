//! Webhook endpoints stay apart: one that fails, hangs or is gone never
//! holds up another, even on the same host and port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use dispatch_infra::broker::Broker;
use dispatch_model::envelope::{Envelope, WebhookJob, WebhookKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::system::{System, step};

/// How a receiver's path answers.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Holds the request for a minute (longer than any webhook timeout).
    Hang,
}

/// A receiver on 127.0.0.1 whose paths answer as `answer(path)` says;
/// returns its base URL, what each path received (bodies), and a token
/// that stops it.
struct Receiver {
    base: String,
    received: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        let received = Arc::new(Mutex::new(HashMap::<String, Vec<Value>>::new()));
        let log = received.clone();
        let answer = Arc::new(answer);
        let app = axum::Router::new().route(
            "/{path}",
            axum::routing::post(move |Path(path): Path<String>, body: axum::body::Bytes| {
                let log = log.clone();
                let answer = answer(&path);
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.lock()
                        .expect("lock")
                        .entry(path)
                        .or_default()
                        .push(body);
                    match answer {
                        Answer::Status(code) => {
                            StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
                        }
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            StatusCode::OK
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Receiver {
            base,
            received,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn count(&self, path: &str) -> usize {
        self.received
            .lock()
            .expect("lock")
            .get(path)
            .map_or(0, Vec::len)
    }

    /// Final reports `path` received, one per dispatch.
    fn final_reports(&self, path: &str) -> usize {
        let received = self.received.lock().expect("lock");
        let mut ids: Vec<&str> = received
            .get(path)
            .into_iter()
            .flatten()
            .filter(|b| b.get("dispatch_uuid").is_some() && b.get("message_uuid").is_none())
            .filter_map(|b| b["dispatch_uuid"].as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

fn isolated(c: &mut dispatch_infra::Config) {
    c.allow_private_webhooks = true;
    c.webhook_retry_schedule_ms = vec![0, 100, 100, 100, 100, 100, 100, 100];
    c.webhook_circuit_failures = 3;
    c.webhook_circuit_open_ms = 200;
    c.webhook_circuit_open_max_ms = 1_000;
    c.webhook_concurrency_per_host = 4;
}

/// Posts `n` one-step dispatches as the application `auth`.
async fn dispatches(sys: &System, auth: &str, n: usize, tag: &str) {
    for i in 0..n {
        let to = format!("44770{tag}{i:04}00");
        let body = json!({"template": "failover", "workflow": [step("sms", &to, None)]});
        sys.post_as(auth, "/v0.1/dispatch", &body).await;
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two applications on one host and port, their endpoints two paths: the
/// bad one answers `bad`; the healthy one gets every final report of its
/// 200 dispatches, and the bad one is tried.
async fn sibling_gets_everything(tweak: impl FnOnce(&mut dispatch_infra::Config), bad: Answer) {
    let sys = System::start_with_notifier(|c| {
        isolated(c);
        tweak(c);
    })
    .await;
    let receiver = Receiver::start(move |path| match path {
        "bad" => bad,
        _ => Answer::Status(200),
    })
    .await;
    let (_, bad_app) = sys.application(&receiver.url("bad")).await;
    let (_, healthy) = sys.application(&receiver.url("healthy")).await;
    dispatches(&sys, &bad_app, 200, "31").await;
    dispatches(&sys, &healthy, 200, "32").await;
    wait_for(
        "the healthy endpoint's reports",
        Duration::from_secs(30),
        || receiver.final_reports("healthy") == 200,
    )
    .await;
    // At least until its circuit opened.
    assert!(receiver.count("bad") >= 3, "the bad endpoint was tried");
}

/// A path that always fails does not pause its sibling.
#[tokio::test]
async fn a_failing_endpoint_does_not_pause_its_sibling_on_the_same_port() {
    sibling_gets_everything(|_| {}, Answer::Status(500)).await;
}

/// A path that hangs until the webhook timeout holds at most its share
/// of the origin's slots.
#[tokio::test]
async fn a_hanging_endpoint_does_not_take_its_origin() {
    sibling_gets_everything(|c| c.webhook_timeout_ms = 1_000, Answer::Hang).await;
}

/// Receiver A goes away with 2,000 webhooks pending; an application
/// behind receiver B, same host and another port, is served at once.
#[tokio::test]
async fn a_dead_receiver_does_not_hold_up_another_port_of_its_host() {
    let sys = System::start_with_notifier(isolated).await;
    let a = Receiver::start(|_| Answer::Status(200)).await;
    let (app_a, _) = sys.application(&a.url("hook")).await;
    a.stop.cancel();
    // Let A's port refuse connections.
    wait_for("receiver A to go away", Duration::from_secs(5), || {
        std::net::TcpStream::connect(a.base.trim_start_matches("http://")).is_err()
    })
    .await;
    publish_webhooks(&sys, &app_a, 2_000).await;

    let b = Receiver::start(|_| Answer::Status(200)).await;
    let (_, app_b) = sys.application(&b.url("hook")).await;
    dispatches(&sys, &app_b, 50, "35").await;
    wait_for("receiver B's reports", Duration::from_secs(20), || {
        b.final_reports("hook") == 50
    })
    .await;
}

/// `n` webhook jobs for the application `app`, straight onto the queue.
async fn publish_webhooks(sys: &System, app: &str, n: usize) {
    let stop = CancellationToken::new();
    let broker = Broker::start(&sys.config, "test-publisher", stop.clone());
    assert!(broker.wait_ready(Duration::from_secs(10)).await);
    let app: uuid::Uuid = app.parse().expect("uuid");
    let jobs = (0..n).map(|i| {
        let broker = broker.clone();
        let job = WebhookJob {
            webhook_id: format!("pending-{i}"),
            kind: WebhookKind::MessageStatus,
            account: sys.api_key.clone(),
            application_id: Some(app),
            workflow_id: app,
            event_at_ms: dispatch_model::record::now_ms(),
            body: json!({"message_uuid": format!("pending-{i}"), "status": "delivered"}),
            url: None,
            attempts: 0,
            reason: None,
        };
        async move { broker.publish(&Envelope::Webhook(job)).await }
    });
    for published in futures_util::future::join_all(jobs).await {
        published.expect("published");
    }
    stop.cancel();
}

/// A `410 Gone` disables the endpoint: what was pending and what comes
/// later are dead letters saying so. A replay, or setting the
/// application's webhook URLs again, enables it.
#[tokio::test]
async fn a_gone_endpoint_is_disabled_until_replayed_or_set_again() {
    let sys = System::start_with_notifier(isolated).await;
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answer = gone.clone();
    let receiver = Receiver::start(move |_| {
        if answer.load(std::sync::atomic::Ordering::SeqCst) {
            Answer::Status(410)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let (app, auth) = sys.application(&receiver.url("hook")).await;
    dispatches(&sys, &auth, 5, "36").await;
    let failed = format!("/v1/applications/{app}/webhooks/failed");
    // Five dispatches, three webhooks each: all dead letters.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (_, listed) = sys.get_basic(&failed).await;
        if listed["count"] == 15 {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every webhook dead-lettered: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tried = receiver.count("hook");
    assert!(
        tried <= 2,
        "{tried} requests to an endpoint that said it was gone"
    );
    let reasons: Vec<&str> = listed["_embedded"]["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .filter_map(|w| w["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 15, "{listed}");
    assert!(
        reasons.iter().all(|r| r.contains("410 Gone")),
        "{reasons:?}"
    );

    // The receiver is back: a replay enables the endpoint and delivers.
    gone.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sys.post_basic(&format!("{failed}/retry")).await, 202);
    wait_for("the replayed webhooks", Duration::from_secs(20), || {
        receiver.count("hook") >= tried + 15
    })
    .await;
    dispatches(&sys, &auth, 1, "37").await;
    wait_for("a new dispatch's report", Duration::from_secs(20), || {
        receiver.final_reports("hook") == 6
    })
    .await;

    // Gone again, then the application's webhook URL is set again.
    gone.store(true, std::sync::atomic::Ordering::SeqCst);
    dispatches(&sys, &auth, 1, "38").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sys.get_basic(&failed).await.1["count"] != 3 {
        assert!(tokio::time::Instant::now() < deadline, "disabled again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gone.store(false, std::sync::atomic::Ordering::SeqCst);
    let status = sys
        .client()
        .put(format!("{}/v2/applications/{app}", sys.url))
        .basic_auth(&sys.api_key, Some(&sys.api_secret))
        .json(
            &json!({"name": "test", "capabilities": {"messages": {"webhooks": {
            "status_url": {"address": receiver.url("hook"), "http_method": "POST"}}}}}),
        )
        .send()
        .await
        .expect("PUT application")
        .status();
    assert_eq!(status, 200);
    dispatches(&sys, &auth, 1, "39").await;
    wait_for(
        "a report after the URL was set again",
        Duration::from_secs(20),
        || receiver.final_reports("hook") == 7,
    )
    .await;
}

/// Webhooks parked longer than the retry schedule's span are dead letters
/// that say why.
#[tokio::test]
async fn webhooks_parked_past_the_retry_span_are_dead_lettered() {
    let sys = System::start_with_notifier(|c| {
        isolated(c);
        c.webhook_retry_schedule_ms = vec![0, 100, 100];
        c.webhook_circuit_open_ms = 300;
        c.webhook_circuit_open_max_ms = 300;
    })
    .await;
    let receiver = Receiver::start(|_| Answer::Status(500)).await;
    let (app, _) = sys.application(&receiver.url("hook")).await;
    publish_webhooks(&sys, &app, 200).await;
    let failed = format!("/v1/applications/{app}/webhooks/failed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (_, listed) = sys.get_basic(&failed).await;
        if listed["count"] == 200 {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every webhook dead-lettered: {}",
            listed["count"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = listed["_embedded"]["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .filter(|w| w["reason"].as_str().is_some_and(|r| r.contains("circuit")))
        .count();
    assert!(
        waited >= 150,
        "{waited} dead letters say they waited for the circuit"
    );
    assert!(
        receiver.count("hook") < 50,
        "{} requests: parked webhooks are not tried",
        receiver.count("hook")
    );
}
