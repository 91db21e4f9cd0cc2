//! Delivery and read receipts: one spawned task per accepted send, which
//! sleeps, then posts signed callbacks, retrying those that fail.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use dispatch_model::Channel;
use dispatch_model::record::{MessageStatus, now_ms};
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
    pub behaviour: Behaviour,
    /// The send request's W3C `traceparent`: its receipts continue that
    /// trace, as a provider propagating trace context would.
    pub traceparent: Option<String>,
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
        let callback = |status| Callback {
            message_id: plan.message_id.clone(),
            reference: plan.reference.clone(),
            status,
            timestamp_ms: now_ms(),
            usage: None,
            error: None,
        };

        tokio::time::sleep(delay).await;
        match plan.behaviour.delivery {
            Delivery::None => {}
            Delivery::Undeliverable => {
                let receipt = Callback {
                    error: Some(plan.behaviour.undeliverable_error()),
                    ..callback(MessageStatus::Undeliverable)
                };
                self.post(&plan.url, &receipt).await;
            }
            Delivery::Delivered => {
                let receipt = Callback {
                    usage: Some(plan.behaviour.usage(plan.channel)),
                    ..callback(MessageStatus::Delivered)
                };
                self.post(&plan.url, &receipt).await;
                if plan.behaviour.read {
                    tokio::time::sleep(delay).await;
                    self.post(&plan.url, &callback(MessageStatus::Read)).await;
                }
            }
        }
    }

    /// Posts `callback` to `url`, retrying with backoff; false if it was
    /// dropped.
    pub async fn post<T: serde::Serialize>(&self, url: &str, callback: &T) -> bool {
        let body = match serde_json::to_vec(callback) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a callback");
                return false;
            }
        };
        let signature = sign(&self.secret, &body);
        let mut backoff = CALLBACK_RETRY_BASE;
        let mut last_error = String::new();
        for attempt in 1..=CALLBACK_ATTEMPTS {
            let sent = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .headers(dispatch_infra::telemetry::trace_headers())
                .body(body.clone())
                .send()
                .await;
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
}
