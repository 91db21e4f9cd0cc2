//! Webhooks delivered by the notifier to a receiver on port 0.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::system::{System, step};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A webhook receiver answering with `answer(n)` for its n-th request
/// (from 0); returns its URL and what it received.
pub(crate) async fn receiver(
    answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    receiver_on("127.0.0.1", Duration::ZERO, answer).await
}

/// A receiver on `host` that takes `delay` to answer.
async fn receiver_on(
    host: &str,
    delay: Duration,
    answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    receiver_timed(host, move |_| delay, answer).await
}

/// A receiver on `host` that takes `delay(n)` to answer its n-th request
/// (counted on arrival); requests are logged when answered.
async fn receiver_timed(
    host: &str,
    delay: impl Fn(usize) -> Duration + Send + Sync + 'static,
    answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let answer = Arc::new(answer);
    let delay = Arc::new(delay);
    let arrivals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            let answer = answer.clone();
            let arrival = arrivals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let delay = delay(arrival);
            async move {
                tokio::time::sleep(delay).await;
                let mut log = log.lock().expect("lock");
                let n = log.len();
                log.push(Received {
                    headers,
                    body: body.to_vec(),
                });
                StatusCode::from_u16(answer(n)).unwrap_or(StatusCode::OK)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = format!("http://{host}:{port}/hook");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

pub(crate) fn fast_retries(c: &mut dispatch_infra::Config) {
    c.allow_private_webhooks = true;
    c.webhook_retry_schedule_ms = vec![0, 50, 50, 50, 50];
}

pub(crate) fn bodies(received: &Arc<Mutex<Vec<Received>>>) -> Vec<Received> {
    received.lock().expect("lock").clone()
}

#[tokio::test]
async fn webhooks_are_signed_and_shaped_as_the_specs_say() {
    let sys = System::start_with_notifier(fast_retries).await;
    let (url, received) = receiver(|_| 200).await;
    let (app, auth) = sys.application(&url).await;
    let body = json!({"template": "failover", "workflow": [
        step("whatsapp", "447700160102", Some((600, "delivered"))),
        step("sms", "447700160200", None),
    ]});
    let id = sys.post_as(&auth, "/v0.1/dispatch", &body).await["dispatch_uuid"]
        .as_str()
        .expect("id")
        .to_owned();
    let all = sys
        .eventually(Duration::from_secs(10), || {
            let all = bodies(&received);
            all.iter()
                .any(|r| r.json().get("template").is_some())
                .then_some(all)
        })
        .await
        .expect("a final report");

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_secret(sys.signature_secret.as_bytes());
    for r in &all {
        // The original service's signature.
        let token = r.header("authorization");
        let claims = jsonwebtoken::decode::<Value>(&token["Bearer ".len()..], &key, &validation)
            .expect("JWT verifies with the signature secret")
            .claims;
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &r.body);
        assert_eq!(claims["payload_hash"], hex::encode(hash.as_ref()));
        assert_eq!(claims["api_key"], sys.api_key);
        assert_eq!(claims["application_id"], app);
        assert!(claims["iat"].is_i64() && claims["jti"].is_string() && claims["iss"].is_string());
        // Standard Webhooks.
        let (wid, ts) = (r.header("webhook-id"), r.header("webhook-timestamp"));
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                sys.signature_secret.as_bytes(),
            ),
            &[format!("{wid}.{ts}.").as_bytes(), &r.body].concat(),
        );
        assert_eq!(
            r.header("webhook-signature"),
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.as_ref())
            )
        );
    }

    let statuses: Vec<Value> = all
        .iter()
        .map(Received::json)
        .filter(|b| b.get("template").is_none())
        .collect();
    let rejected = statuses
        .iter()
        .find(|b| b["status"] == "rejected")
        .expect("rejected");
    for field in [
        "message_uuid",
        "to",
        "from",
        "timestamp",
        "status",
        "error",
        "_links",
    ] {
        assert!(
            rejected.get(field).is_some(),
            "message-status lacks {field}: {rejected}"
        );
    }
    assert_eq!(rejected["error"]["code"], 1300);
    assert_eq!(rejected["_links"]["workflow"]["dispatch_uuid"], id);
    let href = rejected["_links"]["workflow"]["href"]
        .as_str()
        .expect("href");
    assert!(href.ends_with(&format!("/v0.1/dispatch/{id}")));
    let delivered = statuses
        .iter()
        .find(|b| b["status"] == "delivered")
        .expect("delivered");
    // The simulator's price, with the segments the sender counted.
    assert_eq!(
        delivered["usage"],
        json!({"currency": "EUR", "price": "0.0333", "encoding": "gsm7", "segments": 1})
    );

    let report = all
        .iter()
        .map(Received::json)
        .find(|b| b.get("template").is_some())
        .expect("report");
    assert_eq!(report["dispatch_uuid"], id);
    assert_eq!(report["template"], "failover");
    assert_eq!(report["status"], "completed");
    assert!(
        report["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        report["usage"],
        json!({"price": "0.0333", "currency": "EUR"})
    );
    let links = report["_links"]["messages"].as_array().expect("messages");
    assert_eq!(links.len(), 2);
    for link in links {
        for field in ["message_uuid", "href", "channel", "status"] {
            assert!(
                link.get(field).is_some(),
                "final-report message lacks {field}"
            );
        }
    }
    // The hrefs answer.
    let href = links[1]["href"].as_str().expect("href");
    let path = &href[href.find("/v0.1/").expect("path")..];
    let (status, message) = sys.get_basic(path).await;
    assert_eq!((status, &message["status"]), (200, &json!("delivered")));
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_webhook_until_it_takes_it() {
    let sys = System::start_with_notifier(fast_retries).await;
    // 500 three times, then 200.
    let (url, received) = receiver(|n| if n < 3 { 500 } else { 200 }).await;
    let (_, auth) = sys.application(&url).await;
    let message = json!({
        "to": {"type": "sms", "number": "447700170003"},
        "from": {"type": "sms", "number": "447700900999"},
        "message": {"content": {"type": "text", "text": "Hi"}},
        "client_ref": "mine",
    });
    sys.post_as(&auth, "/v0.1/messages", &message).await;
    let all = sys
        .eventually(Duration::from_secs(10), || {
            let all = bodies(&received);
            (all.len() >= 4).then_some(all)
        })
        .await
        .expect("four attempts");
    let ids: Vec<String> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id across retries: {ids:?}"
    );
    // A Messages API send: no workflow link.
    let body = all[3].json();
    assert_eq!(body["status"], "submitted");
    assert_eq!(body["to"], json!({"type": "sms", "number": "447700170003"}));
    assert_eq!(
        body["from"],
        json!({"type": "sms", "number": "447700900999"})
    );
    assert!(body["message_uuid"].is_string());
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(body.get("error").is_none() && body.get("usage").is_none());
    assert_eq!(body["client_ref"], "mine");
    assert!(body.get("_links").is_none(), "{body}");
    // The three failures are on record.
    let mut redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = dispatch_infra::redis::Keys::for_config(&sys.config);
    let attempts: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.webhook_attempts(&ids[0]))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts.iter().all(|a| a.contains("\"status\":500")),
        "{attempts:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bodies(&received).len(), 4, "nothing after it was taken");
}

#[tokio::test]
async fn a_dead_receiver_dead_letters_and_a_replay_delivers() {
    let sys = System::start_with_notifier(fast_retries).await;
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = alive.clone();
    let (url, received) = receiver(move |_| {
        if up.load(std::sync::atomic::Ordering::SeqCst) {
            200
        } else {
            503
        }
    })
    .await;
    let (app, auth) = sys.application(&url).await;
    let message = json!({
        "to": {"type": "sms", "number": "447700180003"},
        "from": {"type": "sms", "number": "447700900999"},
        "message": {"content": {"type": "text", "text": "Hi"}},
    });
    sys.post_as(&auth, "/v0.1/messages", &message).await;
    let path = format!("/v1/applications/{app}/webhooks/failed");
    let listed = sys.eventually(Duration::from_secs(10), || Some(())).await;
    assert!(listed.is_some());
    let mut failed = Value::Null;
    for _ in 0..200 {
        let (status, body) = sys.get_basic(&path).await;
        assert_eq!(status, 200);
        if body["count"] == 1 {
            failed = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let webhook = &failed["_embedded"]["webhooks"][0];
    assert_eq!(webhook["body"]["status"], "submitted", "{failed}");
    let attempts = webhook["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 5, "the whole schedule was tried");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(bodies(&received).len(), 5);

    alive.store(true, std::sync::atomic::Ordering::SeqCst);
    let webhook_id = webhook["webhook_id"].as_str().expect("id");
    assert_eq!(
        sys.post_basic(&format!("{path}/{webhook_id}/retry")).await,
        202
    );
    sys.eventually(Duration::from_secs(10), || {
        (bodies(&received).len() == 6).then_some(())
    })
    .await
    .expect("replayed");
    let (_, after) = sys.get_basic(&path).await;
    assert_eq!(after["count"], 0);
    assert_eq!(
        sys.post_basic(&format!("{path}/{webhook_id}/retry")).await,
        404
    );
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let sys = System::start_with_notifier(|c| {
        c.allow_private_webhooks = false;
        c.webhook_retry_schedule_ms = vec![0, 50, 50];
    })
    .await;
    let (url, received) = receiver(|_| 200).await;
    let (app, auth) = sys.application(&url).await;
    let message = json!({
        "to": {"type": "sms", "number": "447700190003"},
        "from": {"type": "sms", "number": "447700900999"},
        "message": {"content": {"type": "text", "text": "Hi"}},
    });
    sys.post_as(&auth, "/v0.1/messages", &message).await;
    let path = format!("/v1/applications/{app}/webhooks/failed");
    let mut failed = Value::Null;
    for _ in 0..200 {
        let (_, body) = sys.get_basic(&path).await;
        if body["count"] == 1 {
            failed = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let attempts = failed["_embedded"]["webhooks"][0]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(attempts.len(), 1, "refused at once, not retried: {failed}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("internal"))
    );
    assert!(
        bodies(&received).is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn a_users_answer_reaches_the_applications_inbound_url() {
    let sys = System::start_with_notifier(fast_retries).await;
    let (status_url, statuses) = receiver(|_| 200).await;
    let (inbound_url, inbound) = receiver(|_| 200).await;
    let (app, auth) = sys.application_with(&status_url, &inbound_url).await;
    let user = "447700210000";
    let ours = "447700900999";
    sys.post_as(
        &auth,
        "/v0.1/messages",
        &json!({
            "to": {"type": "whatsapp", "number": user},
            "from": {"type": "whatsapp", "number": ours},
            "message": {"content": {"type": "text", "text": "Still coming?"}},
        }),
    )
    .await;
    // `submitted` is reported after the send (and its conversation) is
    // recorded.
    sys.eventually(Duration::from_secs(10), || {
        bodies(&statuses)
            .iter()
            .any(|r| r.json()["status"] == "submitted")
            .then_some(())
    })
    .await
    .expect("submitted");

    // The simulator is shared by every account: its numbers' answers go
    // to their registered owner.
    sys.assign_number("whatsapp", ours, &app).await;
    let callback = format!("{}/callbacks/simulator/inbound", sys.url);
    let unsigned = sys
        .client()
        .post(&callback)
        .json(&json!({"anything": 1}))
        .send()
        .await
        .expect("POST");
    assert_eq!(unsigned.status().as_u16(), 401);

    let answered = sys
        .client()
        .post(format!("{}/control/inbound", sys.config.simulator_url))
        .bearer_auth(&sys.config.simulator_secret)
        .json(&json!({
            "channel": "whatsapp", "from": user, "to": ours,
            "message": {"content": {"type": "text", "text": "Yes"}},
            "callback_url": callback,
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(answered.status().as_u16(), 204);
    let got = sys
        .eventually(Duration::from_secs(10), || {
            bodies(&inbound).into_iter().next()
        })
        .await
        .expect("an inbound webhook");
    let body = got.json();
    assert!(body["message_uuid"].is_string());
    assert_eq!(body["to"], json!({"type": "whatsapp", "number": ours}));
    assert_eq!(body["from"], json!({"type": "whatsapp", "number": user}));
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        body["message"]["content"],
        json!({"type": "text", "text": "Yes"})
    );
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let token = got.header("authorization");
    let claims = jsonwebtoken::decode::<Value>(
        &token["Bearer ".len()..],
        &jsonwebtoken::DecodingKey::from_secret(sys.signature_secret.as_bytes()),
        &validation,
    )
    .expect("signed")
    .claims;
    assert_eq!(claims["application_id"], app);
}

#[tokio::test]
async fn a_killed_notifier_loses_no_webhook() {
    let sys = System::start_without_notifier(fast_retries).await;
    let (url, received) = receiver(|_| 200).await;
    let (_, auth) = sys.application(&url).await;
    let mut notifier = sys.process("notifier");
    let mut ids = Vec::new();
    for i in 0..30 {
        let body = json!({
            "to": {"type": "sms", "number": format!("4477002200{i:02}")},
            "from": {"type": "sms", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
        });
        sys.sim.set(
            &format!("4477002200{i:02}"),
            dispatch_provider_sim::Behaviour::default(),
        );
        let id = sys.post_as(&auth, "/v0.1/messages", &body).await["message_uuid"]
            .as_str()
            .expect("id")
            .to_owned();
        ids.push(id);
    }
    sys.eventually(Duration::from_secs(15), || {
        (bodies(&received).len() >= 10).then_some(())
    })
    .await
    .expect("some delivered");
    // Mid-run: most of the 60 webhooks are queued or in flight.
    notifier.kill().await.expect("kill -9");
    let mut again = sys.process("notifier");
    // Every message's submitted and delivered arrive, duplicates allowed.
    let complete = sys
        .eventually(Duration::from_secs(20), || {
            let seen: std::collections::HashSet<(String, String)> = bodies(&received)
                .iter()
                .map(|r| {
                    let b = r.json();
                    (
                        b["message_uuid"].as_str().unwrap_or_default().to_owned(),
                        b["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            ids.iter()
                .all(|id| {
                    seen.contains(&(id.clone(), "submitted".into()))
                        && seen.contains(&(id.clone(), "delivered".into()))
                })
                .then_some(())
        })
        .await;
    let _ = again.kill().await;
    assert!(complete.is_some(), "webhooks lost across the kill");
}

#[tokio::test]
async fn final_reports_can_go_to_their_own_url() {
    let sys = System::start_with_notifier(fast_retries).await;
    let (status_url, statuses) = receiver(|_| 200).await;
    let (report_url, reports) = receiver(|_| 200).await;
    let (_, auth) = sys
        .application_webhooks(json!({
            "status_url": {"address": status_url, "http_method": "POST"},
            "final_report_url": {"address": report_url, "http_method": "POST"},
        }))
        .await;
    let body = json!({"template": "failover", "workflow": [
        step("whatsapp", "447700230000", Some((600, "delivered"))),
        step("sms", "447700230100", None),
    ]});
    sys.post_as(&auth, "/v0.1/dispatch", &body).await;
    let report = sys
        .eventually(Duration::from_secs(10), || {
            bodies(&reports).into_iter().next()
        })
        .await
        .expect("a final report");
    assert_eq!(report.json()["status"], "completed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bodies(&reports).len(), 1, "only the report");
    assert!(
        bodies(&statuses)
            .iter()
            .all(|r| r.json().get("template").is_none()),
        "no report at the status_url"
    );
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_paused_not_hammered() {
    let sys = System::start_with_notifier(|c| {
        fast_retries(c);
        c.webhook_retry_schedule_ms = vec![0, 20, 20, 20, 20, 20, 20, 20];
        c.webhook_circuit_failures = 3;
        c.webhook_circuit_open_ms = 60_000;
    })
    .await;
    let (url, received) = receiver(|_| 500).await;
    let (app, auth) = sys.application(&url).await;
    for i in 0..3 {
        let to = format!("4477002400{i:02}");
        sys.sim
            .set(&to, dispatch_provider_sim::Behaviour::default());
        let body = json!({
            "to": {"type": "sms", "number": to},
            "from": {"type": "sms", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
        });
        sys.post_as(&auth, "/v0.1/messages", &body).await;
    }
    sys.eventually(Duration::from_secs(10), || {
        (bodies(&received).len() >= 3).then_some(())
    })
    .await
    .expect("three failures");
    // Six webhooks with eight attempts each, 20 ms apart: without the
    // breaker the receiver would take 48 calls within half a second. With
    // it, the calls stop after the third failure in a row (give or take
    // those already under way), and the webhooks wait for the circuit to
    // close without spending their attempts: none is dead-lettered.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calls = bodies(&received).len();
    assert!(
        calls <= 6,
        "{calls} calls to a receiver whose circuit was open"
    );
    let (_, failed) = sys
        .get_basic(&format!("/v1/applications/{app}/webhooks/failed"))
        .await;
    assert_eq!(
        failed["count"], 0,
        "attempts spent while the circuit was open"
    );
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_the_others() {
    let sys = System::start_with_notifier(|c| {
        fast_retries(c);
        c.notifier_concurrency = 4;
        c.webhook_concurrency_per_host = 2;
    })
    .await;
    // One application behind a receiver taking 300 ms per webhook, on
    // "localhost"; another behind a fast one on 127.0.0.1.
    let (slow_url, slow) = receiver_on("localhost", Duration::from_millis(300), |_| 200).await;
    let (fast_url, fast) = receiver(|_| 200).await;
    let (_, slow_app) = sys.application(&slow_url).await;
    let (_, fast_app) = sys.application(&fast_url).await;
    let sms = |to: String| {
        json!({
            "to": {"type": "sms", "number": to},
            "from": {"type": "sms", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
        })
    };
    for i in 0..10 {
        let to = format!("4477002500{i:02}");
        sys.sim
            .set(&to, dispatch_provider_sim::Behaviour::default());
        sys.post_as(&slow_app, "/v0.1/messages", &sms(to)).await;
    }
    // 20 webhooks for the slow receiver: at 2 at a time, over 3 s of work.
    sys.eventually(Duration::from_secs(10), || {
        (!bodies(&slow).is_empty()).then_some(())
    })
    .await
    .expect("the slow receiver is being served");
    let started = std::time::Instant::now();
    let to = "447700250100".to_owned();
    sys.sim
        .set(&to, dispatch_provider_sim::Behaviour::default());
    sys.post_as(&fast_app, "/v0.1/messages", &sms(to)).await;
    sys.eventually(Duration::from_secs(10), || {
        (bodies(&fast).len() >= 2).then_some(())
    })
    .await
    .expect("the fast receiver gets its webhooks");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1500),
        "the fast receiver waited {waited:?} behind the slow one"
    );
    assert!(
        bodies(&slow).len() < 20,
        "the slow receiver was not done yet"
    );
}

#[tokio::test]
async fn a_messages_webhooks_arrive_in_status_order() {
    let sys = System::start_with_notifier(fast_retries).await;
    // The first webhook takes 400 ms to answer, the later ones none: were
    // they sent side by side, `delivered` and `read` would be answered
    // (and logged) before `submitted`.
    let (url, received) = receiver_timed(
        "127.0.0.1",
        |n| Duration::from_millis(if n == 0 { 400 } else { 0 }),
        |_| 200,
    )
    .await;
    let (_, auth) = sys.application(&url).await;
    // `01`: delivered, then read.
    sys.post_as(
        &auth,
        "/v0.1/messages",
        &json!({
            "to": {"type": "whatsapp", "number": "447700260001"},
            "from": {"type": "whatsapp", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
        }),
    )
    .await;
    let statuses = sys
        .eventually(Duration::from_secs(10), || {
            let all = bodies(&received);
            (all.len() == 3).then(|| {
                all.iter()
                    .map(|r| r.json()["status"].as_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
        })
        .await
        .expect("three webhooks");
    assert_eq!(statuses, ["submitted", "delivered", "read"]);
}

/// On a shared provider, a user's answer goes to the owner of the number
/// it was sent to, whoever else wrote to that user from it; an answer to
/// a number nobody owns goes to nobody, and opens no one's window.
#[tokio::test]
async fn a_users_answer_through_a_shared_provider_reaches_only_the_numbers_owner() {
    let sys = System::start_with_notifier(fast_retries).await;
    let (status_url, _) = receiver(|_| 200).await;
    let (owner_inbound, owner_got) = receiver(|_| 200).await;
    let (other_inbound, other_got) = receiver(|_| 200).await;
    let (owner_app, owner_auth) = sys.application_with(&status_url, &owner_inbound).await;
    let other = sys.account().await;
    let (_, other_auth) = sys
        .application_of(
            &other,
            json!({
                "status_url": {"address": status_url, "http_method": "POST"},
                "inbound_url": {"address": other_inbound, "http_method": "POST"}
            }),
        )
        .await;
    let user = "447700220000";
    let (owned, unowned) = ("447700900777", "447700900778");
    sys.assign_number("sms", owned, &owner_app).await;
    let write = |auth: String, from: &'static str| {
        let sys = &sys;
        async move {
            let body = json!({
                "to": {"type": "sms", "number": user},
                "from": {"type": "sms", "number": from},
                "message": {"content": {"type": "text", "text": "Hello"}},
            });
            sys.post_as(&auth, "/v0.1/messages", &body).await;
        }
    };
    // The other account writes last, from the owned number and from one
    // nobody owns.
    write(owner_auth.clone(), owned).await;
    write(other_auth.clone(), owned).await;
    write(other_auth.clone(), unowned).await;
    let callback = format!("{}/callbacks/simulator/inbound", sys.url);
    let answer = |to: &'static str| {
        let sys = &sys;
        let callback = callback.clone();
        async move {
            let answered = sys
                .client()
                .post(format!("{}/control/inbound", sys.config.simulator_url))
                .bearer_auth(&sys.config.simulator_secret)
                .json(&json!({
                    "channel": "sms", "from": user, "to": to,
                    "message": {"content": {"type": "text", "text": "Who is this?"}},
                    "callback_url": callback,
                }))
                .send()
                .await
                .expect("POST");
            assert_eq!(answered.status().as_u16(), 204);
        }
    };
    answer(unowned).await;
    answer(owned).await;
    sys.eventually(Duration::from_secs(10), || {
        (!bodies(&owner_got).is_empty()).then_some(())
    })
    .await
    .expect("the owner gets the answer");
    assert_eq!(bodies(&owner_got).len(), 1, "only the answer to its number");
    assert_eq!(bodies(&owner_got)[0].json()["to"]["number"], owned);
    assert!(
        bodies(&other_got).is_empty(),
        "the other account got an answer"
    );
    // Nobody's window was opened by the answer to the unowned number.
    let mut redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = dispatch_infra::redis::Keys::for_config(&sys.config);
    let tenant = dispatch_infra::providers::account_tenant(&other.0);
    let opened: bool =
        redis::AsyncCommands::exists(&mut redis, keys.window(&tenant, "sms", unowned, user))
            .await
            .expect("EXISTS");
    assert!(!opened, "the other account's window was opened");
}

/// A v1 message's own `webhook_url` takes its statuses, signed, with no
/// application; `webhook_version: v0.1` keeps the v0.1 shape; a chain's
/// report goes to the application's `final_report_url` only.
#[tokio::test]
async fn v1_webhooks_follow_the_message_and_the_application() {
    let sys = System::start_with_notifier(fast_retries).await;
    let (own_url, own) = receiver(|_| 200).await;
    let sms = |to: &str| {
        json!({"channel": "sms", "message_type": "text", "to": to,
               "from": "447700900999", "text": "Hi"})
    };
    let mut body = sms("447700240000");
    body["webhook_url"] = json!(own_url);
    let id = sys.post("/v1/messages", &body).await["message_uuid"].clone();
    let delivered = sys
        .eventually(Duration::from_secs(10), || {
            bodies(&own)
                .into_iter()
                .find(|r| r.json()["status"] == "delivered")
        })
        .await
        .expect("delivered at the message's own URL");
    assert_eq!(delivered.json()["message_uuid"], id);
    assert_eq!(delivered.json()["to"], "447700240000", "the v1 shape");
    let key = jsonwebtoken::DecodingKey::from_secret(sys.signature_secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let token = delivered.header("authorization");
    assert!(
        jsonwebtoken::decode::<Value>(&token["Bearer ".len()..], &key, &validation).is_ok(),
        "signed: {token}"
    );

    let mut old = sms("447700240100");
    old["webhook_url"] = json!(own_url);
    old["webhook_version"] = json!("v0.1");
    let id = sys.post("/v1/messages", &old).await["message_uuid"].clone();
    let v0 = sys
        .eventually(Duration::from_secs(10), || {
            bodies(&own)
                .into_iter()
                .map(|r| r.json())
                .find(|b| b["message_uuid"] == id && b["status"] == "delivered")
        })
        .await
        .expect("delivered");
    assert_eq!(v0["to"]["number"], "447700240100", "the v0.1 shape");

    let (status_url, statuses) = receiver(|_| 200).await;
    let (report_url, reports) = receiver(|_| 200).await;
    let (_, auth) = sys
        .application_webhooks(json!({
            "status_url": {"address": status_url, "http_method": "POST"},
            "final_report_url": {"address": report_url, "http_method": "POST"},
        }))
        .await;
    let mut chain = sms("447700240202");
    chain["failover"] = json!([sms("447700240300")]);
    let answer = sys.post_as(&auth, "/v1/messages", &chain).await;
    let report = sys
        .eventually(Duration::from_secs(10), || {
            bodies(&reports).into_iter().next()
        })
        .await
        .expect("the chain's report");
    assert_eq!(report.json()["workflow_id"], answer["workflow_id"]);
    assert_eq!(report.json()["status"], "completed");
    let rejected = bodies(&statuses)
        .into_iter()
        .map(|r| r.json())
        .find(|b| b["status"] == "rejected")
        .expect("rejected at the status_url");
    assert_eq!(rejected["workflow"]["items_total"], "2");
}

/// The official Python SDK (`vonage`, pinned in
/// scripts/lib/sdk-requirements.txt), unchanged but for its host, sends
/// SMS and WhatsApp text and an image, and a failover chain, over HTTPS
/// to an ingest with its own certificate; the application's status URL
/// gets their v1 webhooks. Needs the SDK's venv: `scripts/test` makes it
/// and runs this with `DISPATCH_SDK_PYTHON` set.
#[tokio::test]
#[ignore = "needs the Vonage SDK's venv; scripts/test runs it (stage sdk)"]
async fn the_official_python_sdk_sends_and_gets_its_webhooks() {
    let python = std::env::var("DISPATCH_SDK_PYTHON")
        .expect("DISPATCH_SDK_PYTHON: a python with the vonage SDK (scripts/test sets it)");
    let certs = crate::tls::Certs::make();
    let sys = System::start_with_notifier(fast_retries).await;
    let (status_url, statuses) = receiver(|_| 200).await;
    let account = (sys.api_key.clone(), sys.api_secret.clone());
    let (app, key) = sys
        .application_keyed(
            &account,
            json!({"webhooks": {"status_url": {"address": status_url, "http_method": "POST"}}}),
        )
        .await;
    let port = crate::tls::free_port();
    let _ingest = sys
        .command("ingest")
        .env("DISPATCH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DISPATCH_TLS_CERT", certs.path("server.pem"))
        .env("DISPATCH_TLS_KEY", certs.path("server.key"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ingest starts");
    // Ready once it answers over TLS.
    let ca = std::fs::read(certs.path("ca.pem")).expect("ca.pem");
    let probe = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("certificate"))
        .build()
        .expect("client");
    let mut ready = false;
    for _ in 0..200 {
        let up = probe
            .get(format!("https://localhost:{port}/readyz"))
            .send()
            .await;
        if up.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the HTTPS ingest never got ready");

    let output = tokio::process::Command::new(&python)
        .arg("tests/sdk/send.py")
        .env("DISPATCH_SDK_HOST", format!("localhost:{port}"))
        .env("DISPATCH_SDK_APPLICATION", &app)
        .env("DISPATCH_SDK_PRIVATE_KEY", &key)
        .env("DISPATCH_SDK_TO", "4477002500")
        .env("REQUESTS_CA_BUNDLE", certs.path("ca.pem"))
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON");
    let status_of = |uuid: &Value, status: &str| {
        bodies(&statuses)
            .into_iter()
            .map(|r| r.json())
            .find(|b| &b["message_uuid"] == uuid && b["status"] == status)
    };
    for (message, status) in [
        (&sent["sms"], "delivered"),
        (&sent["whatsapp_text"], "read"),
        (&sent["whatsapp_image"], "delivered"),
        (&sent["chain"]["message_uuid"], "rejected"),
        (&sent["conditional_chain"]["message_uuid"], "delivered"),
    ] {
        let hook = sys
            .eventually(Duration::from_secs(10), || status_of(message, status))
            .await
            .unwrap_or_else(|| panic!("no {status} webhook for {message}: {sent}"));
        assert!(hook["to"].is_string(), "the v1 shape: {hook}");
        assert!(hook["channel"].is_string(), "{hook}");
    }
    assert_eq!(
        status_of(&sent["sms"], "delivered").expect("sms")["client_ref"],
        "sdk-sms"
    );
    // Each chain reached its SMS.
    for (chain, sms_to) in [
        ("chain", "447700250020"),
        ("conditional_chain", "447700250040"),
    ] {
        let workflow = &sent[chain]["workflow_id"];
        sys.eventually(Duration::from_secs(10), || {
            bodies(&statuses).into_iter().map(|r| r.json()).find(|b| {
                &b["workflow"]["workflow_id"] == workflow
                    && b["workflow"]["items_number"] == "2"
                    && b["status"] == "delivered"
            })
        })
        .await
        .unwrap_or_else(|| panic!("{chain}'s SMS was not delivered: {sent}"));
        assert_eq!(sys.sim.sends_to(sms_to).len(), 1, "{chain}");
    }
}

/// An application whose `capabilities.messages.version` is `v1` gets its
/// users' messages in the v1 shape.
#[tokio::test]
async fn a_v1_application_gets_inbound_messages_in_the_v1_shape() {
    let sys = System::start_with_notifier(fast_retries).await;
    let (inbound_url, inbound) = receiver(|_| 200).await;
    let account = (sys.api_key.clone(), sys.api_secret.clone());
    let (app, _) = sys
        .application_keyed(
            &account,
            json!({"version": "v1", "webhooks": {
                "inbound_url": {"address": inbound_url, "http_method": "POST"}}}),
        )
        .await;
    let (user, ours) = ("447700260000", "447700900997");
    sys.assign_number("whatsapp", ours, &app).await;
    let answered = sys
        .client()
        .post(format!("{}/control/inbound", sys.config.simulator_url))
        .bearer_auth(&sys.config.simulator_secret)
        .json(&json!({
            "channel": "whatsapp", "from": user, "to": ours,
            "message": {"content": {"type": "text", "text": "Yes"}},
            "callback_url": format!("{}/callbacks/simulator/inbound", sys.url),
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(answered.status().as_u16(), 204);
    let body = sys
        .eventually(Duration::from_secs(10), || {
            bodies(&inbound).into_iter().next()
        })
        .await
        .expect("an inbound webhook")
        .json();
    assert_eq!(body["channel"], "whatsapp");
    assert_eq!(body["to"], ours);
    assert_eq!(body["from"], user);
    assert_eq!(body["message_type"], "text");
    assert_eq!(body["text"], "Yes");
    assert!(body["message_uuid"].is_string() && body["timestamp"].is_string());
}

/// What the console reads is written where it arises: the account's
/// counters, its search entries, every webhook attempt (delivered ones
/// too), and, after `content_retention_secs`, the record without its
/// messages' content.
#[tokio::test]
async fn counters_search_entries_and_webhook_attempts_are_kept_and_content_is_redacted() {
    use dispatch_infra::activity;
    let sys = System::start_with_notifier(|c| {
        fast_retries(c);
        c.content_retention_secs = 2;
    })
    .await;
    let (url, received) = receiver(|_| 200).await;
    let (_, auth) = sys.application(&url).await;
    let mut first = step("viber_service_msg", "447700180103", Some((15, "delivered")));
    first["client_ref"] = json!("order-7");
    let body =
        json!({"template": "failover", "workflow": [first, step("sms", "447700180200", None)]});
    let id = sys.post_as(&auth, "/v0.1/dispatch", &body).await["dispatch_uuid"]
        .as_str()
        .expect("id")
        .to_owned();
    sys.eventually(Duration::from_secs(10), || {
        bodies(&received)
            .iter()
            .any(|r| r.json().get("template").is_some())
            .then_some(())
    })
    .await
    .expect("a final report");

    let redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = dispatch_infra::redis::Keys::for_config(&sys.config);
    let now = dispatch_model::record::now_ms();
    // The record's entries must not expire before it (the erasure finds
    // records through them): shortened here, before the redaction
    // rewrites the ended record, they must be moved again by it.
    let view = sys.get(&format!("/v0.1/dispatch/{id}")).await;
    let first_uuid = view["messages"][0]["message_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let to_key = keys.search(&sys.api_key, "to", "447700180103");
    let mut conn = redis.clone();
    for key in [to_key.clone(), keys.message(&first_uuid)] {
        redis::cmd("EXPIRE")
            .arg(&key)
            .arg(100)
            .exec_async(&mut conn)
            .await
            .expect("EXPIRE");
    }
    // The delivered marks come after the receiver's answers: wait for them.
    let mut totals = std::collections::HashMap::<String, i64>::new();
    for _ in 0..200 {
        let window = activity::window(&redis, &keys, &sys.api_key, 3, now + 60_000)
            .await
            .expect("counters");
        totals.clear();
        for bucket in window {
            for (field, n) in bucket {
                *totals.entry(field).or_default() += n;
            }
        }
        if totals.get("webhook:delivered") >= Some(&4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let count = |f: &str| totals.get(f).copied().unwrap_or(0);
    assert_eq!(count("accepted"), 1, "{totals:?}");
    assert_eq!(count("completed"), 1, "{totals:?}");
    assert_eq!(count("error"), 0, "{totals:?}");
    assert_eq!(count("failover:deadline"), 1, "{totals:?}");
    assert_eq!(count("failover-from:viber_service_msg"), 1, "{totals:?}");
    // submitted twice, delivered, the final report.
    assert_eq!(count("webhook:delivered"), 4, "{totals:?}");

    for (field, value) in [("all", ""), ("to", "+44 7700-180103"), ("ref", "order-7")] {
        let value = match field {
            "to" => activity::recipient(value),
            _ => value.to_owned(),
        };
        let key = keys.search(&sys.api_key, field, &value);
        let ttl = sys.config.record_ttl_secs;
        let (ids, total) = activity::page(&redis, &keys, ttl, &key, 0, 10, now)
            .await
            .expect("search");
        assert_eq!((ids, total), (vec![id.clone()], 1), "{field}");
    }
    // A read trims members accepted longer ago than a record lives only
    // when their record is gone: a record lives from its last write.
    let by_ref = keys.search(&sys.api_key, "ref", "order-7");
    for member in [id.as_str(), "0f0f0f0f-0000-4000-8000-000000000000"] {
        redis::cmd("ZADD")
            .arg(&by_ref)
            .arg(1)
            .arg(member)
            .exec_async(&mut conn)
            .await
            .expect("ZADD");
    }
    let ttl = sys.config.record_ttl_secs;
    let (ids, total) = activity::page(&redis, &keys, ttl, &by_ref, 0, 10, now)
        .await
        .expect("search");
    assert_eq!(
        (ids, total),
        (vec![id.clone()], 1),
        "only the gone one trimmed"
    );
    let log = activity::webhook_log(&redis, &keys, &id)
        .await
        .expect("log");
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log.iter()
            .all(|l| l.outcome == "delivered" && l.status == Some(200))
    );
    assert_eq!(
        log.iter().filter(|l| l.message_uuid.is_none()).count(),
        1,
        "the report"
    );

    let store = dispatch_infra::store::WorkflowStore::new(redis.clone(), keys.clone(), 60);
    let mut redacted = None;
    for _ in 0..500 {
        let record = store
            .load(&id)
            .await
            .expect("load")
            .expect("a record")
            .record;
        if record.content_redacted_at_ms.is_some() {
            redacted = Some(record);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let redacted = redacted.expect("redacted after content_retention_secs");
    // The redaction moved the record's expiry, and its entries' with it.
    for key in [to_key, keys.message(&first_uuid)] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TTL");
        assert!(ttl > 100, "{key}: {ttl} s left");
    }
    for step in &redacted.workflow.steps {
        assert_eq!(step.message.message, None, "content gone");
        assert!(step.message.to.is_some(), "the recipient stays");
    }
    assert_eq!(
        redacted.steps[1].status,
        dispatch_model::record::MessageStatus::Delivered
    );
    assert_eq!(redacted.steps[1].provider.as_deref(), Some("simulator"));
    assert_eq!(
        redacted.workflow.steps[0].message.client_ref.as_deref(),
        Some("order-7")
    );
}
