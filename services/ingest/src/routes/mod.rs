pub mod accept;
pub mod callbacks;
pub mod health;
pub mod lookup;
pub mod providers;
pub mod v1;
pub mod webhooks;
