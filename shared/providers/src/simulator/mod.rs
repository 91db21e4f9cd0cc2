//! The adapter for `dispatch provider-sim` (wire contract in the
//! simulator's crate documentation; its types in [`wire`]).

pub mod wire;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::receipts::Receipt;
use dispatch_model::Channel;
use dispatch_model::record::MessageError;

use wire::{ErrorBody, SendAccepted, SendRequest};

use crate::{
    Accepted, BoxFuture, CallbackError, CallbackEvent, CallbackOutcome, CallbackRequest, Inbound,
    Provider, ProviderRequest, SendError, address, retry_after,
};

pub struct Simulator {
    http: reqwest::Client,
}

impl Simulator {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn call(&self, request: ProviderRequest<'_>) -> Result<Accepted, SendError> {
        let command = request.command;
        let body = SendRequest {
            reference: command.message_uuid.to_string(),
            channel: command.channel,
            to: address(&command.message.to),
            from: address(&command.message.from),
            status_callback: Some(request.status_callback.to_owned()),
            message: command
                .message
                .message
                .as_ref()
                .and_then(|m| serde_json::to_value(m).ok()),
        };
        let url = format!("{}{}", request.settings.base_url(""), wire::SEND_PATH);
        let response = self
            .http
            .post(url)
            .bearer_auth(&request.settings.secret)
            .headers(dispatch_infra::telemetry::trace_headers())
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::transient(e.to_string()))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        if status.is_success() {
            let accepted: SendAccepted = response
                .json()
                .await
                .map_err(|e| SendError::transient(format!("unreadable answer: {e}")))?;
            return Ok(Accepted {
                provider_message_id: accepted.message_id,
            });
        }
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(SendError::Transient {
                reason: format!("HTTP {status}"),
                retry_after: wait,
            });
        }
        // 4xx: the provider will not take this message. Its error code is
        // one of the spec's; without one, it is ours to say why.
        let error = match response.json::<ErrorBody>().await {
            Ok(body) => MessageError {
                code: body.error.code,
                reason: body.error.reason,
            },
            Err(_) if status.as_u16() == 401 || status.as_u16() == 403 => MessageError {
                code: 1060,
                reason: "The provider refused our credentials".into(),
            },
            Err(_) => MessageError {
                code: 1020,
                reason: format!("The provider refused the message (HTTP {status})"),
            },
        };
        Err(SendError::Permanent(error))
    }
}

impl Provider for Simulator {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }

    fn check(&self, _channel: Channel, settings: &ProviderSettings) -> Result<(), String> {
        if settings.url.is_empty() || settings.secret.is_empty() {
            return Err("the simulator needs `url` and `secret`".into());
        }
        Ok(())
    }

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.call(request))
    }

    /// Receipts at `/callbacks/simulator`, inbound messages at
    /// `/callbacks/simulator/inbound`, both signed with the secret.
    fn callback(
        &self,
        settings: &ProviderSettings,
        request: &CallbackRequest<'_>,
    ) -> Result<CallbackOutcome, CallbackError> {
        let signature = request
            .headers
            .get(wire::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !wire::verify(&settings.secret, request.body, signature) {
            return Err(CallbackError::Unauthorized(
                "The callback signature is missing or does not match.".into(),
            ));
        }
        let malformed = |e: serde_json::Error| CallbackError::Malformed(e.to_string());
        let event = if request.hook == "inbound" {
            let inbound: wire::Inbound = serde_json::from_slice(request.body).map_err(malformed)?;
            CallbackEvent::Inbound(Inbound {
                provider_message_id: inbound.message_id,
                channel: inbound.channel,
                from: inbound.from,
                to: inbound.to,
                timestamp_ms: inbound.timestamp_ms,
                message: inbound.message,
            })
        } else {
            let callback: wire::Callback =
                serde_json::from_slice(request.body).map_err(malformed)?;
            CallbackEvent::Receipt(Receipt {
                provider_message_id: callback.message_id,
                status: callback.status,
                at_ms: callback.timestamp_ms,
                error: callback.error,
                usage: callback.usage,
            })
        };
        Ok(CallbackOutcome::Events(vec![event]))
    }
}
