//! Provider adapters: how a send command becomes a provider call.
//!
//! An adapter turns our message into the provider's request, and the
//! provider's answer into one of three outcomes: accepted (with the
//! provider's message id, which its receipts will name), a permanent
//! failure with one of the spec's error codes (the workflow fails over at
//! once), or a transient failure (the sender retries with backoff).
//! Adapters are stateless apart from their HTTP client: where to send and
//! with which credentials comes with each call, because it can differ per
//! account and application.

pub mod simulator;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::MessageError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One provider call.
pub struct ProviderRequest<'a> {
    pub command: &'a SendCommand,
    pub settings: &'a ProviderSettings,
    /// Where the provider should send this message's receipts.
    pub status_callback: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Will not succeed if retried: reject the message with this error.
    #[error("rejected by the provider: {} {}", .0.code, .0.reason)]
    Permanent(MessageError),
    /// May succeed later (timeouts, 5xx, 429), after at least `retry_after`
    /// when the provider said so.
    #[error("provider unavailable: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

pub trait Provider: Send + Sync {
    /// Stable name, part of the Redis keys that match receipts.
    fn name(&self) -> &'static str;

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>>;
}

/// The adapter for each provider kind.
pub struct Providers {
    simulator: simulator::Simulator,
}

impl Providers {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            simulator: simulator::Simulator::new(timeout)?,
        })
    }

    pub fn get(&self, kind: ProviderKind) -> &dyn Provider {
        match kind {
            ProviderKind::Simulator => &self.simulator,
        }
    }
}

/// A `Retry-After` header in seconds, as most providers send it.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
