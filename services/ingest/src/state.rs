use std::sync::Arc;

use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::redis::Keys;
use dispatch_model::Limits;

/// What every handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub broker: Broker,
    pub redis: deadpool_redis::Pool,
    pub keys: Keys,
    pub limits: Limits,
    /// `public_url` without a trailing slash, for `href`s.
    pub base_url: Arc<str>,
}

impl AppState {
    pub async fn redis(&self) -> Result<deadpool_redis::Connection, crate::error::ApiError> {
        self.redis
            .get()
            .await
            .map_err(|_| crate::error::ApiError::Unavailable("The data store is unreachable."))
    }
}
