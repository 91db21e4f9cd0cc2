//! HTTP-level tests of the ingest service against real RabbitMQ and Redis.

mod harness;

#[path = "../../shared/model/src/validate/cases.rs"]
mod cases;

mod accept;
mod applications;
mod auth;
mod callbacks;
mod connections;
mod dead_letters;
mod idempotency;
mod isolation;
mod outage;
mod providers;
mod rate;
mod service;
mod v1;
mod validation;
