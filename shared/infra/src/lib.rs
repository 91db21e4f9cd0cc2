//! Plumbing every Dispatch service shares: configuration, the RabbitMQ
//! connection and confirmed publisher, the Redis pool, telemetry, and the
//! shutdown signal.

pub mod activity;
pub mod admin;
pub mod broker;
pub mod config;
pub mod consume;
pub mod crypto;
pub mod endpoints;
pub mod failpoint;
pub mod guard;
pub mod providers;
pub mod rate;
pub mod receipts;
pub mod redis;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod timer;
pub mod token;

pub use config::Config;

/// A service's connections: one RabbitMQ connection (with its confirmed
/// publisher) and one multiplexed Redis connection, shared by everything
/// in the process. `dispatch all` opens them once for every service.
///
/// The broker connection stays open while any clone is alive, so that a
/// service shutting down can still publish what its in-flight work
/// produces; it closes when the last clone is dropped.
#[derive(Clone)]
pub struct Connections {
    pub broker: broker::Broker,
    pub redis: redis::Redis,
    _close: std::sync::Arc<tokio_util::sync::DropGuard>,
}

impl Connections {
    /// Starts connecting (lazily: see [`broker::Broker`] and
    /// [`redis::connect`]); `name` labels the broker connection.
    pub fn open(config: &Config, name: &str) -> Result<Self, ::redis::RedisError> {
        let redis = redis::connect(config)?;
        let close = tokio_util::sync::CancellationToken::new();
        let broker = broker::Broker::start(config, name, close.clone());
        Ok(Self {
            broker,
            redis,
            _close: std::sync::Arc::new(close.drop_guard()),
        })
    }
}
