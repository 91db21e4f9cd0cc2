//! What the provider tests share: the simulator started in-process, a
//! small receiver that keeps the callbacks the fakes post to it (URL,
//! headers and raw body), and the helpers that build commands and
//! settings, feed callbacks to an adapter and read its answers.
//!
//! Each test file includes this with `mod common;` and uses what it
//! needs, hence `dead_code` is allowed.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use dispatch_infra::Config;
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::MessageError;
use dispatch_provider_sim::{Control, RawRequest};
use dispatch_providers::{
    Accepted, CallbackError, CallbackEvent, CallbackOutcome, CallbackRequest, HeaderMap, Inbound,
    Method, Provider, ProviderRequest, SendError,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How long to wait for the fakes' callbacks.
pub const WAIT: Duration = Duration::from_secs(5);

/// The WhatsApp template the tests send, and the body it is stored with.
pub const VERIFY_TEMPLATE: &str = "whatsapp:hsm:technology:nexmo:verify";
pub const VERIFY_BODY: &str = "{{1}} code: {{2}}. Valid for {{3}} minutes.";

// --- the receiver -------------------------------------------------------------

/// A request the receiver got: the URL it was called at, as the caller
/// saw it, its path, headers and body.
#[derive(Debug, Clone)]
pub struct Captured {
    pub url: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Captured {
    /// The body as a form.
    pub fn params(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&self.body).expect("a form body")
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The body as JSON, `null` if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// The receiver's address and what it has captured so far.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:port`.
    pub base: String,
    got: Arc<Mutex<Vec<Captured>>>,
}

impl Receiver {
    /// Everything captured so far, in order of arrival.
    pub fn all(&self) -> Vec<Captured> {
        self.got.lock().expect("lock").clone()
    }

    /// What `keep` picks, once it picks at least `count` or `WAIT` has
    /// passed.
    async fn poll(&self, count: usize, keep: impl Fn(&Captured) -> bool) -> Vec<Captured> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got: Vec<Captured> = self
                .got
                .lock()
                .expect("lock")
                .iter()
                .filter(|c| keep(c))
                .cloned()
                .collect();
            if got.len() >= count || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The captured requests `keep` picks, once there are at least `count`.
    pub async fn at_least(&self, count: usize, keep: impl Fn(&Captured) -> bool) -> Vec<Captured> {
        let got = self.poll(count, keep).await;
        assert!(got.len() >= count, "{count} callbacks expected: {got:?}");
        got
    }

    /// The captured requests `keep` picks, once there are `count`; no more
    /// may have come by then.
    pub async fn exactly(&self, count: usize, keep: impl Fn(&Captured) -> bool) -> Vec<Captured> {
        let got = self.poll(count, keep).await;
        assert_eq!(got.len(), count, "callbacks: {got:?}");
        got
    }
}

/// The receiver's handler: keeps the request, answers 200.
pub async fn capture(
    State(receiver): State<Receiver>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    receiver.got.lock().expect("lock").push(Captured {
        url: format!("{}{path}", receiver.base),
        path: uri.path().to_owned(),
        headers,
        body,
    });
    StatusCode::OK
}

// --- the harness --------------------------------------------------------------

/// The simulator and the receiver, running until this is dropped, and
/// the adapter under test.
pub struct Harness<P> {
    pub sim: SocketAddr,
    pub control: Control,
    /// The simulator's secret: its fakes' credentials and signing key.
    pub secret: String,
    pub receiver: Receiver,
    pub adapter: P,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl<P> Drop for Harness<P> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the simulator (with `secret`, or its default) and a receiver
/// that captures every request.
pub async fn start<P>(adapter: P, secret: Option<&str>) -> Harness<P> {
    start_with(adapter, secret, |_, _, receiver| {
        axum::Router::new().fallback(capture).with_state(receiver)
    })
    .await
}

/// Starts the simulator, then a receiver serving what `app` makes of the
/// simulator's address, its secret and the receiver's state (whose
/// `capture` it routes to).
pub async fn start_with<P>(
    adapter: P,
    secret: Option<&str>,
    app: impl FnOnce(SocketAddr, &str, Receiver) -> axum::Router,
) -> Harness<P> {
    let shutdown = CancellationToken::new();
    let mut config = Config {
        simulator_addr: "127.0.0.1:0".parse().expect("addr"),
        simulator_delay_ms: 20,
        ..Config::default()
    };
    if let Some(secret) = secret {
        config.simulator_secret = secret.to_owned();
    }
    let sim = dispatch_provider_sim::spawn(&config, shutdown.clone())
        .await
        .expect("spawn the simulator");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let receiver = Receiver {
        base: format!("http://{}", listener.local_addr().expect("receiver addr")),
        got: Arc::default(),
    };
    let app = app(sim.addr, &config.simulator_secret, receiver.clone());
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });
    Harness {
        sim: sim.addr,
        control: sim.control,
        secret: config.simulator_secret,
        receiver,
        adapter,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl<P: Provider> Harness<P> {
    /// The requests that reached the fakes.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.control.requests()
    }

    pub fn last_request(&self) -> RawRequest {
        self.requests().pop().expect("a request reached the fake")
    }

    /// Sends through the adapter, as the sender does.
    pub async fn submit(
        &self,
        settings: &ProviderSettings,
        command: &SendCommand,
        status_callback: &str,
    ) -> Result<Accepted, SendError> {
        self.adapter
            .send(ProviderRequest {
                command,
                settings,
                status_callback,
            })
            .await
    }

    /// Hands a callback posted to `url` to the adapter, as ingest does.
    pub fn feed(
        &self,
        settings: &ProviderSettings,
        hook: &str,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        self.adapter.callback(
            settings,
            &CallbackRequest {
                method: &Method::POST,
                url,
                hook,
                query: url.split_once('?').map_or("", |(_, q)| q),
                headers,
                body,
            },
        )
    }

    /// Makes a user write to us through the fake (`/control/inbound`).
    pub async fn inbound(&self, request: Value) {
        let answer = self
            .http
            .post(format!("http://{}/control/inbound", self.sim))
            .bearer_auth(&self.secret)
            .json(&request)
            .send()
            .await
            .expect("control/inbound");
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    }
}

// --- building -----------------------------------------------------------------

/// A send command, with the message's `to`, `from` and `message` fields.
pub fn send_command(
    channel: Channel,
    account: &str,
    to: Value,
    from: Value,
    message: Value,
) -> SendCommand {
    SendCommand {
        workflow_id: uuid::Uuid::new_v4(),
        message_uuid: uuid::Uuid::new_v4(),
        channel,
        account: account.into(),
        application_id: None,
        message: serde_json::from_value(json!({"to": to, "from": from, "message": message}))
            .expect("message"),
        paced: None,
    }
}

/// An address by number: `{"type": kind, "number": n}`.
pub fn number(kind: impl serde::Serialize, n: &str) -> Value {
    json!({"type": kind, "number": n})
}

/// An address by id: `{"type": kind, "id": id}`.
pub fn id(kind: impl serde::Serialize, id: &str) -> Value {
    json!({"type": kind, "id": id})
}

/// Template content naming `name`, with these parameters.
pub fn template(name: &str, parameters: &[&str]) -> Value {
    let parameters: Vec<Value> = parameters.iter().map(|p| json!({"default": p})).collect();
    json!({"type": "template", "template": {"name": name, "parameters": parameters}})
}

pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A provider record: `kind` at `url`, with these credentials and
/// templates, on `route`.
pub fn provider_settings(
    kind: ProviderKind,
    url: String,
    credentials: &[(&str, &str)],
    templates: &[(&str, &str)],
    route: &str,
) -> ProviderSettings {
    ProviderSettings {
        kind,
        url,
        secret: String::new(),
        credentials: pairs(credentials).into_iter().collect(),
        templates: pairs(templates).into_iter().collect(),
        route: route.into(),
    }
}

/// An address nothing listens on.
pub fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

// --- reading ------------------------------------------------------------------

/// The JSON body of a logged request.
pub fn json_body(request: &RawRequest) -> Value {
    serde_json::from_str(&request.body).expect("JSON body")
}

/// `base` with `extra`'s fields added.
pub fn with(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

pub fn permanent(result: Result<Accepted, SendError>) -> MessageError {
    match result {
        Err(SendError::Permanent(e)) => e,
        other => panic!("a permanent error expected: {other:?}"),
    }
}

pub fn events(outcome: Result<CallbackOutcome, CallbackError>) -> Vec<CallbackEvent> {
    match outcome {
        Ok(CallbackOutcome::Events(events)) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

pub fn the_receipt(events: &[CallbackEvent]) -> &Receipt {
    match events {
        [CallbackEvent::Receipt(r)] => r,
        other => panic!("one receipt expected: {other:?}"),
    }
}

pub fn the_inbound(events: Vec<CallbackEvent>) -> Inbound {
    match events.as_slice() {
        [CallbackEvent::Inbound(i)] => i.clone(),
        other => panic!("one inbound message expected: {other:?}"),
    }
}

#[track_caller]
pub fn assert_unauthorized(outcome: Result<CallbackOutcome, CallbackError>) {
    assert!(
        matches!(outcome, Err(CallbackError::Unauthorized(_))),
        "{outcome:?}"
    );
}
