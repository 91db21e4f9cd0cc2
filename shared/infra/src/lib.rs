//! Plumbing every Dispatch service shares: configuration, the RabbitMQ
//! connection and confirmed publisher, the Redis pool, telemetry, and the
//! shutdown signal.

pub mod broker;
pub mod config;
pub mod consume;
pub mod receipts;
pub mod redis;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use config::Config;
