//! The meta adapter (being written).

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_model::Channel;

use crate::{
    Accepted, BoxFuture, CallbackError, CallbackOutcome, CallbackRequest, Provider,
    ProviderRequest, SendError,
};

pub struct Meta {
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Meta {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

impl Provider for Meta {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Meta
    }

    fn check(&self, _channel: Channel, _settings: &ProviderSettings) -> Result<(), String> {
        Err("not available yet".into())
    }

    fn send<'a>(
        &'a self,
        _request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async { Err(SendError::permanent(1140, "not available yet")) })
    }

    fn callback(
        &self,
        _settings: &ProviderSettings,
        _request: &CallbackRequest<'_>,
    ) -> Result<CallbackOutcome, CallbackError> {
        Err(CallbackError::Unauthorized("not available yet".into()))
    }
}
