//! The provider adapters against the simulator's fakes of Vonage, Twilio
//! and Meta, over HTTP: exact requests, errors and signed callbacks. No
//! broker or Redis needed.

mod common;
mod meta;
mod twilio;
mod vonage;
