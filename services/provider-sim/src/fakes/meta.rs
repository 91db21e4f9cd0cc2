//! A fake of Meta's API (being written).

use std::sync::Arc;

use axum::Router;

use super::Fake;
use crate::receipts::{Event, Format, Plan, Post};
use crate::server::App;
use crate::wire::InboundRequest;

pub(crate) struct MetaFake {
    #[allow(dead_code)]
    secret: Arc<str>,
}

impl MetaFake {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.into(),
        }
    }
}

impl Format for MetaFake {
    fn receipt(&self, _plan: &Plan, _event: &Event, _at_ms: i64) -> Option<Post> {
        None
    }
}

impl Fake for MetaFake {
    fn inbound(&self, _request: &InboundRequest, _message_id: &str, _at_ms: i64) -> Option<Post> {
        None
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
}
