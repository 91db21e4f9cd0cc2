pub mod accept;
pub mod health;
pub mod lookup;
