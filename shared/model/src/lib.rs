//! The API model of Dispatch, shared by every service.
//!
//! - [`message`]: the outbound message as the Messages API and the Dispatch API
//!   accept it (`to`, `from`, `message`, `client_ref`, `failover`).
//! - [`channel`]: the per-channel rules (content types, text limits, media
//!   extensions, address kinds, read receipts) as data.
//! - [`validate`]: every rule of the specs, collecting each bad field.
//! - [`envelope`]: the versioned messages that travel through RabbitMQ.
//! - [`record`]: what is stored about a workflow and shown by the lookups.
//! - [`application`]: the application record, as ingest stores it and the
//!   notifier reads it.
//! - [`v1`]: the Messages API v1 body, its rules and its mapping onto
//!   [`message`].
//! - [`json`]: JSON syntax that refuses duplicate keys.
//!
//! Request types keep required fields as `Option` so that validation can name
//! every missing field at once instead of stopping at the first one, as a
//! plain `#[derive(Deserialize)]` would. Closed sets (channels, content types,
//! categories) are enums: an unknown value is a type error naming the field.

pub mod application;
pub mod channel;
pub mod envelope;
pub mod json;
pub mod message;
pub mod record;
pub mod v1;
pub mod validate;

pub use channel::{Channel, ChannelRules};
pub use message::{CreateWorkflow, OutboundMessage};
pub use validate::{InvalidParam, Limits};
