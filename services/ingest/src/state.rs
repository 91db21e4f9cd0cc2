use std::sync::Arc;

use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::redis::Keys;
use dispatch_model::Limits;

/// Most outboxes of accepted work being published at once; beyond it, a
/// request waits for one to finish before it is answered.
pub const CARRY_OUTS_IN_FLIGHT: usize = 1024;

/// What every handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub broker: Broker,
    pub redis: dispatch_infra::redis::Redis,
    pub keys: Keys,
    /// Applies `accepted` and receipts to workflow records.
    pub engine: dispatch_flow::Engine,
    /// Outboxes being published after their 202, at most
    /// [`CARRY_OUTS_IN_FLIGHT`] at once.
    pub carry_outs: Arc<tokio::sync::Semaphore>,
    pub receipts: dispatch_infra::receipts::Receipts,
    pub secrets: Arc<crate::accounts::SecretCache>,
    /// Each account's request rate.
    pub rates: Arc<crate::rate::Limiter>,
    /// Provider adapters, to read their callbacks.
    pub providers: Arc<dispatch_providers::Providers>,
    /// Provider settings per account and application, encrypted.
    pub providers_store: dispatch_infra::providers::ProviderStore,
    pub limits: Limits,
    /// `public_url` without a trailing slash, for `href`s.
    pub base_url: Arc<str>,
}

impl AppState {
    /// A handle on the shared Redis connection (a cheap clone).
    pub fn redis(&self) -> dispatch_infra::redis::Redis {
        self.redis.clone()
    }
}
