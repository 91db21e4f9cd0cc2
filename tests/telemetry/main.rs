//! One failover dispatch is one trace: the span tree recorded (in memory)
//! while a WhatsApp step is sent, never delivered, fails over on its
//! deadline to SMS, is delivered, and its webhooks are posted, across
//! ingest, workflow, senders, simulator, timer and notifier; and the same
//! run shows in `/metrics` on the admin port.
//!
//! Its own test binary, and one test: the global subscriber here exports
//! to memory, and the metrics recorder is the process's.

#[path = "../failover/system.rs"]
#[allow(dead_code)]
mod system;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};
use serde_json::{Value, json};
use system::{System, step};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .rev()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// A webhook receiver that answers 200 and keeps each request's
/// `traceparent` and body.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().expect("lock").push((traceparent, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn one_failover_dispatch_is_one_trace_and_shows_in_the_metrics() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_simple_exporter(exporter.clone())
        .build();
    let _telemetry = dispatch_infra::telemetry::install("test", "warn", provider);

    let sys = System::start_with_notifier(|c| c.allow_private_webhooks = true).await;
    let (url, received) = receiver().await;
    let (_, auth) = sys.application(&url).await;
    // `03`: accepted, never delivered, so the deadline (15 units of
    // 20 ms) moves the dispatch to SMS, which `00` delivers.
    let body = json!({"template": "failover", "workflow": [
        step("whatsapp", "447700170003", Some((15, "delivered"))),
        step("sms", "447700170000", None),
    ]});
    let id = sys.post_as(&auth, "/v0.1/dispatch", &body).await["dispatch_uuid"]
        .as_str()
        .expect("dispatch_uuid")
        .to_owned();
    let (final_traceparent, report) = sys
        .eventually(Duration::from_secs(15), || {
            received
                .lock()
                .expect("lock")
                .iter()
                .find(|(_, body)| body.get("template").is_some())
                .cloned()
        })
        .await
        .expect("a final report");
    assert_eq!(report["status"], "completed", "{report}");
    // Let the last spans (the webhook's own) end.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spans = exporter.get_finished_spans().expect("spans");
    let root = spans
        .iter()
        .find(|s| {
            s.name == "http.request"
                && attribute(s, "http.route").as_deref() == Some("/v0.1/dispatch")
                && s.parent_span_id == SpanId::INVALID
        })
        .expect("the POST is a root span");
    let trace: TraceId = root.span_context.trace_id();
    let ours: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();

    // A tree: every span but the root has its parent in the trace.
    let ids: HashSet<SpanId> = ours.iter().map(|s| s.span_context.span_id()).collect();
    for span in &ours {
        if span.span_context.span_id() != root.span_context.span_id() {
            assert!(
                ids.contains(&span.parent_span_id),
                "{} has a parent outside the trace",
                span.name
            );
        }
    }

    let named = |name: &str| -> Vec<&SpanData> {
        ours.iter()
            .copied()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    };
    let with = |name: &str, key: &str, value: &str| {
        named(name)
            .into_iter()
            .any(|s| attribute(s, key).as_deref() == Some(value))
    };
    let mut names: HashMap<&str, usize> = HashMap::new();
    for span in &ours {
        *names.entry(span.name.as_ref()).or_default() += 1;
    }
    let seen = format!("{names:?}");
    assert!(with("accept", "dispatch_uuid", &id), "{seen}");
    // Transitions are applied where their events arise: nothing goes
    // through the old `workflow` queue.
    for queue in ["send.whatsapp", "send.sms", "webhooks"] {
        let full = format!("{}.{queue}", sys.config.amqp_prefix);
        assert!(with("consume", "queue", &full), "consumed {queue}: {seen}");
    }
    for event in ["start", "status", "deadline"] {
        assert!(with("workflow.event", "event", event), "{event}: {seen}");
    }
    assert!(with("send", "channel", "whatsapp"), "{seen}");
    assert!(with("send", "channel", "sms"), "{seen}");
    assert!(with("provider.call", "channel", "whatsapp"), "{seen}");
    assert!(with("provider.call", "channel", "sms"), "{seen}");
    assert!(!named("timer.fire").is_empty(), "the deadline: {seen}");
    assert!(!named("simulator.receipts").is_empty(), "{seen}");
    assert!(
        with("http.request", "http.route", "/callbacks/simulator"),
        "the delivery receipt: {seen}"
    );
    assert!(!named("publish").is_empty(), "{seen}");
    assert!(
        named("webhook").len() >= 4,
        "status webhooks and the report: {seen}"
    );
    assert!(!named("webhook.post").is_empty(), "{seen}");

    // The receiver got the trace context with the final report.
    assert!(
        final_traceparent.contains(&trace.to_string()),
        "traceparent {final_traceparent:?} is of trace {trace}"
    );
    metrics_show_the_run(&sys).await;

    // The dispatch ended: nothing left in flight (the count lives in Redis,
    // under this run's prefix).
    let store = dispatch_infra::store::WorkflowStore::new(
        dispatch_infra::redis::connect(&sys.config).expect("redis"),
        dispatch_infra::redis::Keys::for_config(&sys.config),
        60,
    );
    assert_eq!(store.in_flight().await.expect("in flight"), 0);

    // No secrets or message text in any span.
    for span in &ours {
        for kv in &span.attributes {
            let value = kv.value.to_string();
            assert!(!value.contains(&sys.api_secret), "{}: secret", span.name);
            assert!(!value.contains("Hello"), "{}: message text", span.name);
        }
    }
}

/// The admin port's `/metrics` after the run: a series for each stage.
async fn metrics_show_the_run(sys: &System) {
    let connections =
        dispatch_infra::Connections::open(&sys.config, "metrics-test").expect("connections");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (addr, _) = dispatch_infra::admin::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        connections,
        shutdown.clone(),
    )
    .await
    .expect("admin port");
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("content type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.expect("body");
    let has = |name: &str, labels: &[&str]| {
        text.lines().any(|line| {
            line.starts_with(name)
                && line[name.len()..].starts_with(['{', ' '])
                && labels.iter().all(|l| line.contains(l))
        })
    };
    for (name, labels) in [
        ("dispatch_build_info", &[r#"service="test""#][..]),
        (
            "dispatch_http_request_duration_seconds_count",
            &[
                r#"route="/v0.1/dispatch""#,
                r#"method="POST""#,
                r#"status="202""#,
            ],
        ),
        (
            "dispatch_http_request_duration_seconds_bucket",
            &[r#"route="/callbacks/simulator""#],
        ),
        (
            "dispatch_amqp_publishes_total",
            &[r#"queue="send.sms""#, r#"outcome="confirmed""#],
        ),
        (
            "dispatch_amqp_deliveries_total",
            &[r#"queue="send.sms""#, r#"redelivered="false""#],
        ),
        (
            "dispatch_amqp_settled_total",
            &[r#"queue="webhooks""#, r#"outcome="ack""#],
        ),
        (
            "dispatch_amqp_handler_duration_seconds_count",
            &[r#"queue="send.sms""#],
        ),
        ("dispatch_queue_messages", &[r#"queue="send.sms""#]),
        (
            "dispatch_sends_total",
            &[
                r#"channel="sms""#,
                r#"provider="simulator""#,
                r#"outcome="submitted""#,
            ],
        ),
        (
            "dispatch_provider_requests_total",
            &[r#"channel="whatsapp""#, r#"outcome="accepted""#],
        ),
        (
            "dispatch_provider_request_duration_seconds_count",
            &[r#"channel="sms""#],
        ),
        ("dispatch_workflows_started_total", &[r#"kind="dispatch""#]),
        (
            "dispatch_workflows_finished_total",
            &[r#"kind="dispatch""#, r#"status="completed""#],
        ),
        ("dispatch_workflows_in_flight", &[]),
        ("dispatch_failovers_total", &[r#"reason="deadline""#]),
        (
            "dispatch_workflow_events_total",
            &[r#"event="deadline""#, r#"outcome="applied""#],
        ),
        ("dispatch_timer_fired_total", &[]),
        ("dispatch_timer_lateness_seconds_bucket", &[]),
        ("dispatch_timer_pending", &[]),
        (
            "dispatch_webhook_attempts_total",
            &[r#"kind="final_report""#, r#"outcome="delivered""#],
        ),
        ("dispatch_webhook_request_duration_seconds_count", &[]),
        (
            "dispatch_webhook_delivery_lag_seconds_count",
            &[r#"kind="message_status""#],
        ),
    ] {
        assert!(has(name, labels), "no {name} {labels:?} in:\n{text}");
    }
    // Bounded labels only: no uuids anywhere.
    let uuid = regex_free_uuid_check(&text);
    assert!(uuid.is_none(), "a uuid in a label: {uuid:?}");
    shutdown.cancel();
}

/// The first line holding something shaped like a uuid (8-4-4-4-12 hex).
fn regex_free_uuid_check(text: &str) -> Option<&str> {
    text.lines().find(|line| {
        line.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
            .any(|word| uuid::Uuid::parse_str(word).is_ok() && word.len() == 36)
    })
}
