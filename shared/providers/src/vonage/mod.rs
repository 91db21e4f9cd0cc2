//! The adapter for the Vonage Messages API v1, on all five channels: the
//! migration path for teams leaving the hosted Dispatch API, who keep
//! Vonage as their provider and gain our failover.
//!
//! Each part follows one page of Vonage's public reference, cited where
//! the mapping is made:
//!
//! - `auth`: Basic or JWT authentication,
//!   <https://developer.vonage.com/en/getting-started/concepts/authentication>.
//! - `request`: the body of "Send a message",
//!   <https://developer.vonage.com/en/api/messages> (`POST /v1/messages`).
//! - [`errors`]: the RFC 7807 answers and the Messages error codes,
//!   <https://developer.vonage.com/en/api-errors/messages>.
//! - `callbacks`: the message-status and inbound-message webhooks of
//!   the same reference, and their signature,
//!   <https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks>.
//!
//! Credentials (`settings.credentials`): `api_key` + `api_secret`, or
//! `application_id` + `private_key` (preferred when both are there, as
//! Vonage recommends JWTs), and always `signature_secret`, which verifies
//! Vonage's signed webhooks.

mod auth;
mod callbacks;
pub mod errors;
mod request;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_model::Channel;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;

use crate::{
    Accepted, BoxFuture, CallbackError, CallbackOutcome, CallbackRequest, Provider,
    ProviderRequest, SendError, require, retry_after,
};

/// Vonage's public API, when `settings.url` is empty.
pub const DEFAULT_BASE_URL: &str = "https://api.nexmo.com";

/// The send endpoint, below the base URL.
pub const SEND_PATH: &str = "/v1/messages";

/// The Vonage Messages API adapter. Stateless apart from its HTTP client:
/// credentials come with each call.
pub struct Vonage {
    http: reqwest::Client,
}

/// The 202 answer of "Send a message".
#[derive(Deserialize)]
struct SendAccepted {
    message_uuid: String,
}

impl Vonage {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn call(&self, request: ProviderRequest<'_>) -> Result<Accepted, SendError> {
        let settings = request.settings;
        // Everything that can fail without Vonage fails before the call:
        // a template that does not match its body (1022), unusable
        // credentials (1060).
        let body = request::body(request.command, settings, request.status_callback)
            .map_err(SendError::Permanent)?;
        let authorization = auth::Auth::from_settings(settings)
            .and_then(|auth| auth.authorization())
            .map_err(|e| SendError::permanent(1060, format!("Vonage credentials: {e}")))?;
        let url = format!("{}{SEND_PATH}", settings.base_url(DEFAULT_BASE_URL));
        let response = self
            .http
            .post(url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .headers(dispatch_infra::telemetry::trace_headers())
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("Vonage unreachable: {e}")))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let answer = response.bytes().await;
        if status.is_success() {
            let answer =
                answer.map_err(|e| SendError::transient(format!("unreadable answer: {e}")))?;
            return accepted(&answer);
        }
        let answer = answer.unwrap_or_default();
        Err(errors::from_response(status.as_u16(), wait, &answer))
    }
}

/// The message uuid of a 2xx answer.
fn accepted(answer: &[u8]) -> Result<Accepted, SendError> {
    match serde_json::from_slice::<SendAccepted>(answer) {
        Ok(a) if !a.message_uuid.is_empty() => Ok(Accepted {
            provider_message_id: a.message_uuid,
        }),
        Ok(_) => Err(SendError::transient(
            "Vonage answered without a message_uuid",
        )),
        Err(e) => Err(SendError::transient(format!("unreadable answer: {e}"))),
    }
}

/// Whether `settings.url`, when set, is an http(s) URL.
fn check_url(settings: &ProviderSettings) -> Result<(), String> {
    if settings.url.is_empty() {
        return Ok(());
    }
    match url::Url::parse(&settings.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!("url `{}` is not an http(s) URL", settings.url)),
    }
}

impl Provider for Vonage {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Vonage
    }

    /// Every channel; one complete credential pair (a private key that
    /// does not sign is an error), and `signature_secret`, without which
    /// no receipt could be verified.
    fn check(&self, _channel: Channel, settings: &ProviderSettings) -> Result<(), String> {
        check_url(settings)?;
        auth::Auth::from_settings(settings)?.authorization()?;
        require(settings, &["signature_secret"])
    }

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.call(request))
    }

    /// Message statuses at `/callbacks/vonage/{route}` (the `webhook_url`
    /// of each send), inbound messages at `/callbacks/vonage/{route}/inbound`
    /// (the application's inbound URL), both signed by Vonage with the
    /// signature secret.
    fn callback(
        &self,
        settings: &ProviderSettings,
        request: &CallbackRequest<'_>,
    ) -> Result<CallbackOutcome, CallbackError> {
        callbacks::verify(settings, request.headers, request.body)?;
        let events = match request.hook {
            "" | "status" => callbacks::status(request.body)?,
            "inbound" => callbacks::inbound(request.body)?,
            other => {
                return Err(CallbackError::Malformed(format!(
                    "no Vonage webhook is called `{other}`"
                )));
            }
        };
        Ok(CallbackOutcome::Events(events))
    }
}

/// Vonage's name of a channel (`viber_service` for our
/// `viber_service_msg`), as "Send a message" and both webhooks write it.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "sms",
        Channel::Mms => "mms",
        Channel::Whatsapp => "whatsapp",
        Channel::Messenger => "messenger",
        Channel::ViberServiceMsg => "viber_service",
        Channel::Rcs => "rcs",
    }
}

/// Our channel for Vonage's name; the v0.1 name `viber_service_msg` too.
pub fn parse_channel(name: &str) -> Option<Channel> {
    match name {
        "viber_service" => Some(Channel::ViberServiceMsg),
        other => Channel::parse(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for channel in Channel::ALL {
            assert_eq!(parse_channel(channel_name(channel)), Some(channel));
        }
        assert_eq!(
            parse_channel("viber_service_msg"),
            Some(Channel::ViberServiceMsg)
        );
        assert_eq!(parse_channel("rcs"), Some(Channel::Rcs));
        assert_eq!(parse_channel("telegram"), None);
    }

    #[test]
    fn accepted_answers_need_a_uuid() {
        assert_eq!(
            accepted(br#"{"message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}"#),
            Ok(Accepted {
                provider_message_id: "aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into()
            })
        );
        for answer in [&b""[..], b"{}", br#"{"message_uuid":""}"#, b"\xff"] {
            assert!(matches!(accepted(answer), Err(SendError::Transient { .. })));
        }
    }
}
