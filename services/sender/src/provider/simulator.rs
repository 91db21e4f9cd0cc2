//! The adapter for `dispatch provider-sim` (wire contract in the
//! simulator's crate documentation).

use std::time::Duration;

use dispatch_model::record::MessageError;
use dispatch_provider_sim::wire::{ErrorBody, SendAccepted, SendRequest};

use super::{Accepted, BoxFuture, Provider, ProviderRequest, SendError, retry_after};

pub struct Simulator {
    http: reqwest::Client,
}

impl Simulator {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .build()?,
        })
    }

    async fn call(&self, request: ProviderRequest<'_>) -> Result<Accepted, SendError> {
        let command = request.command;
        let address = |a: &Option<dispatch_model::message::Address>| {
            a.as_ref()
                .and_then(|a| a.number.clone().or_else(|| a.id.clone()))
                .unwrap_or_default()
        };
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
        let url = format!("{}/v1/messages", request.settings.url.trim_end_matches('/'));
        let response = self
            .http
            .post(url)
            .bearer_auth(&request.settings.secret)
            .headers(dispatch_infra::telemetry::trace_headers())
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::Transient {
                reason: e.to_string(),
                retry_after: None,
            })?;
        let status = response.status();
        let wait = retry_after(response.headers());
        if status.is_success() {
            let accepted: SendAccepted =
                response.json().await.map_err(|e| SendError::Transient {
                    reason: format!("unreadable answer: {e}"),
                    retry_after: None,
                })?;
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
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.call(request))
    }
}
