//! Provider URLs that accounts set reach only public targets: literal
//! internal addresses are refused when saved, names are checked on what
//! they resolve to when the sender calls, redirects are not followed, and
//! what the target said never reaches the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::system::System;

/// A server on 127.0.0.1 answering every request with `answer`; returns
/// its port and how many requests it got.
async fn server(
    answer: impl Fn() -> axum::response::Response + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let answer = Arc::new(answer);
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { answer() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, count)
}

async fn put_sms(sys: &System, body: Value) -> (u16, Value) {
    let response = sys
        .client()
        .put(format!("{}/v0.1/providers/sms", sys.url))
        .basic_auth(&sys.api_key, Some(&sys.api_secret))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends one SMS and waits for its message to end; returns its lookup.
async fn send_and_wait(sys: &System, to: &str) -> Value {
    let uuid = sys
        .message(json!({
            "to": {"type": "sms", "number": to},
            "from": {"type": "sms", "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Hi"}},
        }))
        .await;
    let path = format!("/v0.1/messages/{uuid}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, view) = sys.get_basic(&path).await;
        if view["status"] == "rejected" || view["status"] == "delivered" {
            return view;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn guarded(c: &mut dispatch_infra::Config) {
    c.allow_private_provider_urls = false;
}

#[tokio::test]
async fn internal_provider_urls_are_refused_when_saved() {
    let sys = System::start_configured(true, guarded).await;
    for (kind, url) in [
        ("simulator", "http://127.0.0.1:9090/metrics"),
        ("twilio", "http://0x7f000001/"),
        ("vonage", "http://169.254.169.254/latest/meta-data/"),
        ("simulator", "http://[::1]:8080/"),
        ("simulator", "http://10.0.0.1/"),
    ] {
        let (status, body) = put_sms(
            &sys,
            json!({"kind": kind, "url": url, "secret": "s", "credentials": {
                "account_sid": "AC0", "auth_token": "t", "api_key": "k", "api_secret": "s"}}),
        )
        .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["invalid_parameters"][0]["name"], "url", "{body}");
    }
    let (_, listed) = sys.get_basic("/v0.1/providers").await;
    assert_eq!(listed, json!([]), "nothing stored");
}

#[tokio::test]
async fn a_provider_name_that_resolves_inside_is_not_called() {
    let sys = System::start_configured(true, guarded).await;
    let (port, calls) = server(|| StatusCode::OK.into_response()).await;
    // A name: allowed when saved, refused by the resolver when sending.
    let (status, body) = put_sms(
        &sys,
        json!({"kind": "simulator", "url": format!("http://localhost:{port}"), "secret": "s"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let view = send_and_wait(&sys, "447700260100").await;
    assert_eq!(view["status"], "rejected", "{view}");
    assert_eq!(view["error"]["code"], 1331, "{view}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the target was called");
    let reason = view["error"]["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.contains("localhost") && !reason.contains("internal"),
        "{reason}"
    );
}

#[tokio::test]
async fn provider_calls_follow_no_redirect_and_show_nothing_of_the_target() {
    let sys = System::start().await;
    let (inner, inner_calls) = server(|| StatusCode::OK.into_response()).await;
    let (redirector, _) = server(move || {
        (
            StatusCode::FOUND,
            [("location", format!("http://127.0.0.1:{inner}/v1/messages"))],
        )
            .into_response()
    })
    .await;
    let (status, _) = put_sms(
        &sys,
        json!({"kind": "simulator", "url": format!("http://127.0.0.1:{redirector}"), "secret": "s"}),
    )
    .await;
    assert_eq!(status, 200);
    let view = send_and_wait(&sys, "447700260200").await;
    assert_eq!(view["status"], "rejected", "{view}");
    assert_eq!(
        inner_calls.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );

    // A target that answers 500 with text of its own, and a closed port:
    // the client sees neither its words nor the connection error.
    let (talker, _) = server(|| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "redis_version:7.0.15 internal banner",
        )
            .into_response()
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    for port in [talker, closed] {
        let (status, _) = put_sms(
            &sys,
            json!({"kind": "simulator", "url": format!("http://127.0.0.1:{port}"), "secret": "s"}),
        )
        .await;
        assert_eq!(status, 200);
        let view = send_and_wait(&sys, "447700260300").await;
        assert_eq!(view["error"]["code"], 1331, "{view}");
        let reason = view["error"]["reason"].as_str().unwrap_or_default();
        for leak in ["redis", "banner", "500", "refused", "onnect", "127.0.0.1"] {
            assert!(!reason.contains(leak), "{leak} in {reason:?}");
        }
    }
}
