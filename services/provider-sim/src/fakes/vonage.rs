//! A fake of Vonage's API (being written).

use std::sync::Arc;

use axum::Router;

use super::Fake;
use crate::receipts::{Event, Format, Plan, Post};
use crate::server::App;
use crate::wire::InboundRequest;

pub(crate) struct VonageFake {
    #[allow(dead_code)]
    secret: Arc<str>,
}

impl VonageFake {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.into(),
        }
    }
}

impl Format for VonageFake {
    fn receipt(&self, _plan: &Plan, _event: &Event, _at_ms: i64) -> Option<Post> {
        None
    }
}

impl Fake for VonageFake {
    fn inbound(&self, _request: &InboundRequest, _message_id: &str, _at_ms: i64) -> Option<Post> {
        None
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
}
