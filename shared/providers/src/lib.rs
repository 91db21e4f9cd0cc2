//! Provider adapters: how a send command becomes a provider call, and how
//! a provider's callbacks become our events.
//!
//! An adapter turns our message into the provider's request, and the
//! provider's answer into one of three outcomes: accepted (with the
//! provider's message id, which its receipts will name), a permanent
//! failure with one of the spec's error codes (the workflow fails over at
//! once), or a transient failure (the sender retries with backoff).
//!
//! The same adapter reads the provider's callbacks (delivery receipts,
//! read receipts, inbound messages): it verifies the provider's signature
//! with the credentials of the record the callback URL names, and parses
//! the body into [`CallbackEvent`]s. Ingest matches those to our messages
//! and applications (`dispatch_infra::receipts`).
//!
//! Adapters are stateless apart from their HTTP client: where to send and
//! with which credentials comes with each call, because it can differ per
//! account and application. One folder per provider; each cites the
//! public reference its mappings follow. [`rules`] holds the channel rules
//! that apply whichever provider sends.

pub mod meta;
pub mod rules;
pub mod simulator;
pub mod twilio;
pub mod vonage;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::envelope::SendCommand;
use dispatch_model::record::MessageError;
pub use reqwest::Method;
pub use reqwest::header::HeaderMap;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One provider call.
pub struct ProviderRequest<'a> {
    pub command: &'a SendCommand,
    pub settings: &'a ProviderSettings,
    /// Where the provider should send this message's receipts
    /// (`{callback_base}/callbacks/{kind}/{route}`), for providers that
    /// take it per message.
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

impl SendError {
    pub fn permanent(code: u32, reason: impl Into<String>) -> Self {
        SendError::Permanent(MessageError {
            code,
            reason: reason.into(),
        })
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        SendError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// A provider's HTTP callback as ingest received it, at
/// `/callbacks/{kind}/{route}[/{hook}]`.
pub struct CallbackRequest<'a> {
    pub method: &'a Method,
    /// The URL the provider called, as the provider saw it (the public
    /// callback base, the path and the query): Twilio signs it.
    pub url: &'a str,
    /// What follows the route in the path: `""`, `"status"` or
    /// `"inbound"`.
    pub hook: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What a verified callback asks of us.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackOutcome {
    /// Apply these (possibly none), then answer 200.
    Events(Vec<CallbackEvent>),
    /// Answer 200 with this text, and change nothing (Meta's
    /// subscription handshake, `hub.challenge`).
    Challenge(String),
}

/// One fact a callback reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackEvent {
    /// A status of one of the provider's message ids.
    Receipt(Receipt),
    /// Everything sent from `ours` to `user` on `channel` until `up_to_ms`
    /// was read: a read receipt naming no message (Messenger's watermark).
    ReadUpTo {
        channel: Channel,
        ours: String,
        user: String,
        up_to_ms: i64,
        at_ms: i64,
    },
    /// A user wrote to us.
    Inbound(Inbound),
}

/// A message a user sent to one of our numbers or ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub provider_message_id: String,
    pub channel: Channel,
    /// The user's number (E.164 digits, no `+`) or id.
    pub from: String,
    /// Our number (E.164 digits, no `+`) or id.
    pub to: String,
    pub timestamp_ms: i64,
    /// As the Messages API's inbound webhook shows it:
    /// `{"content": {"type": "text", "text": "…"}}`.
    pub message: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// 401: the signature is missing or wrong. Nothing changes.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a handshake with the wrong verify token.
    #[error("{0}")]
    Forbidden(String),
    /// 400: signed, but not a callback we can read.
    #[error("{0}")]
    Malformed(String),
}

pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// Stable name, part of the Redis keys that match receipts, and a
    /// metric label.
    fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Whether `settings` can send on `channel`: the channel is supported
    /// and every credential it needs is there. The reason otherwise, for
    /// the API's 422 and the configuration's error.
    fn check(&self, channel: Channel, settings: &ProviderSettings) -> Result<(), String>;

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>>;

    /// Verifies and reads a callback sent for the record `settings`.
    fn callback(
        &self,
        settings: &ProviderSettings,
        request: &CallbackRequest<'_>,
    ) -> Result<CallbackOutcome, CallbackError>;
}

/// The adapter for each provider kind.
pub struct Providers {
    simulator: simulator::Simulator,
    vonage: vonage::Vonage,
    twilio: twilio::Twilio,
    meta: meta::Meta,
}

impl Providers {
    /// Adapters for the operator's provider URLs (the configuration's):
    /// any target, but no redirects.
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Self::with(Self::client(timeout).redirect(reqwest::redirect::Policy::none()))
    }

    /// Adapters for provider URLs that accounts set: public targets only
    /// ([`dispatch_infra::guard`]); check literal addresses with
    /// [`dispatch_infra::guard::check_url`] before each send.
    pub fn public_only(timeout: Duration) -> anyhow::Result<Self> {
        Self::with(dispatch_infra::guard::public_only(Self::client(timeout)))
    }

    fn client(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
    }

    fn with(http: reqwest::ClientBuilder) -> anyhow::Result<Self> {
        let http = http.build()?;
        Ok(Self {
            simulator: simulator::Simulator::new(http.clone()),
            vonage: vonage::Vonage::new(http.clone()),
            twilio: twilio::Twilio::new(http.clone()),
            meta: meta::Meta::new(http),
        })
    }

    pub fn get(&self, kind: ProviderKind) -> &dyn Provider {
        match kind {
            ProviderKind::Simulator => &self.simulator,
            ProviderKind::Vonage => &self.vonage,
            ProviderKind::Twilio => &self.twilio,
            ProviderKind::Meta => &self.meta,
        }
    }
}

/// A `Retry-After` header in seconds, as most providers send it.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The credentials `names` that `settings` lacks, as an error for
/// [`Provider::check`].
pub fn require(settings: &ProviderSettings, names: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| settings.credential(n).is_empty())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing credentials: {}", missing.join(", ")))
    }
}

/// A number as our API writes it: E.164 digits, without `+`, `00` or a
/// channel prefix such as Twilio's `whatsapp:`.
pub fn digits(number: &str) -> String {
    let number = number.rsplit(':').next().unwrap_or(number);
    number.chars().filter(char::is_ascii_digit).collect()
}

/// The number or id of an address.
pub fn address(a: &Option<dispatch_model::message::Address>) -> String {
    a.as_ref()
        .and_then(|a| a.number.clone().or_else(|| a.id.clone()))
        .unwrap_or_default()
}
