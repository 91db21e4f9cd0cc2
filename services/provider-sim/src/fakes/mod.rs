//! Fakes of real providers' APIs, for testing their adapters: each
//! accepts requests exactly as the provider documents them (rejecting
//! what the provider would reject, in the provider's error format), lets
//! the simulator's [`Control`](crate::Control) decide the outcome by
//! recipient as for the simulator's own API, and calls back in the
//! provider's format with the provider's signature.
//!
//! Credentials: every fake accepts the simulator's secret where the
//! provider expects a secret (Twilio's auth token, Meta's access token,
//! Vonage's api secret) and signs its callbacks with it (Twilio's auth
//! token, Meta's app secret, Vonage's signature secret). Every request
//! is logged as it arrived ([`Control::requests`](crate::Control::requests)).
//!
//! Mounted under `/vonage`, `/twilio` and `/meta`: an adapter's `url`
//! setting is `http://{simulator}/{provider}`.

pub(crate) mod meta;
pub(crate) mod twilio;
pub(crate) mod vonage;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, Method, Uri};

use crate::control::RawRequest;
use crate::receipts::{Format, Post};
use crate::server::App;
use crate::wire::InboundRequest;

/// A provider fake: its receipts' format, and its inbound messages'.
pub(crate) trait Fake: Format {
    /// The callback for a user's message described by `request`, posted
    /// to `request.callback_url`.
    fn inbound(&self, request: &InboundRequest, message_id: &str, at_ms: i64) -> Option<Post>;
}

/// Every fake, by provider name.
pub(crate) struct Fakes {
    pub vonage: Arc<vonage::VonageFake>,
    pub twilio: Arc<twilio::TwilioFake>,
    pub meta: Arc<meta::MetaFake>,
}

impl Fakes {
    pub fn new(secret: &str) -> Self {
        Self {
            vonage: Arc::new(vonage::VonageFake::new(secret)),
            twilio: Arc::new(twilio::TwilioFake::new(secret)),
            meta: Arc::new(meta::MetaFake::new(secret)),
        }
    }

    pub fn get(&self, provider: &str) -> Option<Arc<dyn Fake>> {
        match provider {
            "vonage" => Some(self.vonage.clone()),
            "twilio" => Some(self.twilio.clone()),
            "meta" => Some(self.meta.clone()),
            _ => None,
        }
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .nest("/vonage", vonage::routes())
        .nest("/twilio", twilio::routes())
        .nest("/meta", meta::routes())
}

/// Logs a request as it arrived.
pub(crate) fn record(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
    app.control.record_request(RawRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}
