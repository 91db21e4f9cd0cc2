//! Delivery and read receipts: one spawned task per accepted send, which
//! sleeps, then posts signed callbacks, retrying those that fail.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use dispatch_model::Channel;
use dispatch_model::record::{MessageError, MessageStatus, Usage, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::behaviour::{Behaviour, Delivery};
use crate::wire::{Callback, SIGNATURE_HEADER, sign};

/// Attempts per callback before it is dropped.
pub const CALLBACK_ATTEMPTS: u32 = 6;
/// Delay before the first retry; doubled for each further one.
pub const CALLBACK_RETRY_BASE: Duration = Duration::from_millis(100);
/// Timeout of one callback attempt.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Receipts still to be sent for one accepted message.
pub(crate) struct Plan {
    pub url: String,
    pub message_id: String,
    pub reference: String,
    pub channel: Channel,
    /// The sender's and recipient's number or id, as the send named them.
    pub from: String,
    pub to: String,
    pub behaviour: Behaviour,
    /// The send request's W3C `traceparent`: its receipts continue that
    /// trace, as a provider propagating trace context would.
    pub traceparent: Option<String>,
    /// How the provider being imitated writes and signs its callbacks.
    pub format: Arc<dyn Format>,
}

impl Plan {
    /// The receipts of the accepted send `request`, posted to `url` in
    /// `format`; no trace context (real providers do not continue ours).
    pub fn new(
        url: String,
        message_id: String,
        request: crate::wire::SendRequest,
        behaviour: Behaviour,
        format: Arc<dyn Format>,
    ) -> Self {
        Plan {
            url,
            message_id,
            reference: request.reference,
            channel: request.channel,
            from: request.from,
            to: request.to,
            behaviour,
            traceparent: None,
            format,
        }
    }
}

/// What happens to an accepted message, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Handed to the network (providers that report it: Twilio, Meta).
    Sent,
    Delivered {
        usage: Usage,
    },
    Read,
    Undeliverable {
        error: MessageError,
    },
}

/// One callback, ready to post.
pub(crate) struct Post {
    pub url: String,
    /// Content type and signature headers.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A provider's callback format: the body and signature of each receipt.
pub(crate) trait Format: Send + Sync {
    /// The callback reporting `event`, or `None` when this provider does
    /// not report it.
    fn receipt(&self, plan: &Plan, event: &Event, at_ms: i64) -> Option<Post>;
}

/// The simulator's own format ([`Callback`], `X-Simulator-Signature`).
pub(crate) struct SimulatorFormat {
    pub secret: Arc<str>,
}

impl SimulatorFormat {
    pub fn post<T: serde::Serialize>(&self, url: &str, callback: &T) -> Option<Post> {
        let body = match serde_json::to_vec(callback) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a callback");
                return None;
            }
        };
        Some(Post {
            url: url.to_owned(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (SIGNATURE_HEADER.into(), sign(&self.secret, &body)),
            ],
            body,
        })
    }
}

impl Format for SimulatorFormat {
    fn receipt(&self, plan: &Plan, event: &Event, at_ms: i64) -> Option<Post> {
        let callback = |status| Callback {
            message_id: plan.message_id.clone(),
            reference: plan.reference.clone(),
            status,
            timestamp_ms: at_ms,
            usage: None,
            error: None,
        };
        let callback = match event {
            Event::Sent => return None,
            Event::Delivered { usage } => Callback {
                usage: Some(usage.clone()),
                ..callback(MessageStatus::Delivered)
            },
            Event::Read => callback(MessageStatus::Read),
            Event::Undeliverable { error } => Callback {
                error: Some(error.clone()),
                ..callback(MessageStatus::Undeliverable)
            },
        };
        self.post(&plan.url, &callback)
    }
}

/// Sends receipts; cheap to clone.
#[derive(Clone)]
pub(crate) struct Receipts {
    client: reqwest::Client,
    secret: Arc<str>,
    default_delay: Duration,
    shutdown: CancellationToken,
}

impl Receipts {
    pub fn new(
        secret: &str,
        default_delay: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            client,
            secret: secret.into(),
            default_delay,
            shutdown,
        })
    }

    /// Sends `plan`'s receipts in the background, unless it has none; they
    /// are abandoned at shutdown.
    pub fn schedule(&self, plan: Plan) {
        if plan.behaviour.delivery == Delivery::None {
            return;
        }
        let this = self.clone();
        let span =
            tracing::info_span!(parent: None, "simulator.receipts", reference = %plan.reference);
        dispatch_infra::telemetry::set_parent_from_traceparent(&span, plan.traceparent.as_deref());
        tokio::spawn(
            async move {
                tokio::select! {
                    () = this.shutdown.cancelled() => {}
                    () = this.run(plan) => {}
                }
            }
            .instrument(span),
        );
    }

    async fn run(&self, plan: Plan) {
        let delay = plan
            .behaviour
            .delay_ms
            .map_or(self.default_delay, Duration::from_millis);
        let emit = |event: Event| plan.format.receipt(&plan, &event, now_ms());

        if let Some(post) = emit(Event::Sent) {
            self.deliver(post).await;
        }
        tokio::time::sleep(delay).await;
        match plan.behaviour.delivery {
            Delivery::None => {}
            Delivery::Undeliverable => {
                let error = plan.behaviour.undeliverable_error();
                if let Some(post) = emit(Event::Undeliverable { error }) {
                    self.deliver(post).await;
                }
            }
            Delivery::Delivered => {
                let usage = plan.behaviour.usage(plan.channel);
                if let Some(post) = emit(Event::Delivered { usage }) {
                    self.deliver(post).await;
                }
                if plan.behaviour.read {
                    tokio::time::sleep(delay).await;
                    if let Some(post) = emit(Event::Read) {
                        self.deliver(post).await;
                    }
                }
            }
        }
    }

    /// Posts `callback` in the simulator's format to `url`, retrying with
    /// backoff; false if it was dropped.
    pub async fn post<T: serde::Serialize>(&self, url: &str, callback: &T) -> bool {
        let format = SimulatorFormat {
            secret: self.secret.clone(),
        };
        match format.post(url, callback) {
            Some(post) => self.deliver(post).await,
            None => false,
        }
    }

    /// Posts one callback, retrying with backoff; false if it was dropped.
    pub async fn deliver(&self, post: Post) -> bool {
        let url = post.url.as_str();
        let mut backoff = CALLBACK_RETRY_BASE;
        let mut last_error = String::new();
        for attempt in 1..=CALLBACK_ATTEMPTS {
            let mut request = self
                .client
                .post(url)
                .headers(dispatch_infra::telemetry::trace_headers());
            for (name, value) in &post.headers {
                request = request.header(name, value);
            }
            let sent = request.body(post.body.clone()).send().await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    // Read the answer so the connection goes back to the pool.
                    let _ = response.bytes().await;
                    return true;
                }
                Ok(response) => last_error = format!("answered {}", response.status()),
                Err(e) => last_error = e.to_string(),
            }
            if attempt < CALLBACK_ATTEMPTS {
                tracing::debug!(
                    url,
                    attempt,
                    error = %last_error,
                    "callback failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        tracing::warn!(
            url,
            error = %last_error,
            attempts = CALLBACK_ATTEMPTS,
            "callback dropped"
        );
        false
    }

    /// The simulator's own receipt format.
    pub fn simulator_format(&self) -> Arc<dyn Format> {
        Arc::new(SimulatorFormat {
            secret: self.secret.clone(),
        })
    }
}
