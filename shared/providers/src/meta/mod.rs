//! The Meta adapter: WhatsApp through the Cloud API, Messenger through the
//! Send API, both on the Graph API.
//!
//! Credentials (`settings.credentials`), per channel:
//!
//! | channel | credentials |
//! |---|---|
//! | whatsapp | `access_token`, `phone_number_id`, `app_secret`, `verify_token` |
//! | messenger | `access_token` (the Page's), `page_id`, `app_secret`, `verify_token` |
//!
//! and optionally `graph_version` ([`DEFAULT_GRAPH_VERSION`] by default).
//! `url` is the Graph API's base URL, [`GRAPH_URL`] when empty.
//!
//! A send is `POST {base}/{version}/{phone_number_id or page_id}/messages`
//! with the access token as bearer ([`whatsapp::body`], [`messenger::body`]);
//! Meta's answer gives the message id its receipts will name (`wamid.…`,
//! `m_…`). Errors are read through [`errors::TABLE`].
//!
//! Meta calls back on one URL per app and object: the subscription
//! handshake as a `GET`, notifications as signed `POST`s
//! ([`webhook`]). Meta reports no prices: the sender computes them.

pub mod errors;
pub mod messenger;
pub mod webhook;
pub mod whatsapp;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_model::Channel;
use serde_json::Value;

use crate::{
    Accepted, BoxFuture, CallbackError, CallbackOutcome, CallbackRequest, Method, Provider,
    ProviderRequest, SendError, require, retry_after,
};

/// The Graph API, when `url` is empty.
pub const GRAPH_URL: &str = "https://graph.facebook.com";

/// The Graph API version, unless the `graph_version` credential says.
pub const DEFAULT_GRAPH_VERSION: &str = "v21.0";

/// Every credential a channel needs.
fn needed(channel: Channel) -> Option<&'static [&'static str]> {
    match channel {
        Channel::Whatsapp => Some(&[
            "access_token",
            "phone_number_id",
            "app_secret",
            "verify_token",
        ]),
        Channel::Messenger => Some(&["access_token", "page_id", "app_secret", "verify_token"]),
        _ => None,
    }
}

/// The Graph API version to call.
fn graph_version(settings: &ProviderSettings) -> &str {
    match settings.credential("graph_version") {
        "" => DEFAULT_GRAPH_VERSION,
        version => version,
    }
}

/// `{base}/{version}/{id}/messages`, with `version` and `id` as path
/// segments (escaped, so that an id cannot change the path).
fn messages_url(settings: &ProviderSettings, id: &str) -> Result<url::Url, SendError> {
    let base = settings.base_url(GRAPH_URL);
    let bad = |why: String| SendError::permanent(1140, format!("Invalid Meta URL `{base}`: {why}"));
    let mut url = url::Url::parse(base).map_err(|e| bad(e.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| bad("it cannot be a base".into()))?
        .pop_if_empty()
        .extend([graph_version(settings), id, "messages"]);
    Ok(url)
}

/// The message id in Meta's answer to a send: `messages[0].id` for
/// WhatsApp, `message_id` for Messenger.
fn message_id(channel: Channel, answer: &Value) -> Option<&str> {
    let id = match channel {
        Channel::Whatsapp => answer.get("messages")?.get(0)?.get("id"),
        _ => answer.get("message_id"),
    };
    id.and_then(Value::as_str).filter(|id| !id.is_empty())
}

/// Sends through Meta and reads Meta's webhooks; stateless but for its
/// HTTP client.
pub struct Meta {
    http: reqwest::Client,
}

impl Meta {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn call(&self, request: ProviderRequest<'_>) -> Result<Accepted, SendError> {
        let command = request.command;
        let settings = request.settings;
        self.check(command.channel, settings)
            .map_err(|why| SendError::permanent(1140, why))?;
        let (id, body) = match command.channel {
            Channel::Whatsapp => (
                settings.credential("phone_number_id"),
                whatsapp::body(command, settings)?,
            ),
            _ => (settings.credential("page_id"), messenger::body(command)?),
        };
        let response = self
            .http
            .post(messages_url(settings, id)?)
            .bearer_auth(settings.credential("access_token"))
            .headers(dispatch_infra::telemetry::trace_headers())
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("Meta is unreachable: {e}")))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let answer = response
            .bytes()
            .await
            .map_err(|e| SendError::transient(format!("Meta's answer was cut short: {e}")))?;
        if !status.is_success() {
            return Err(errors::send_error(status.as_u16(), &answer, wait));
        }
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
        match message_id(command.channel, &answer) {
            Some(id) => Ok(Accepted {
                provider_message_id: id.to_owned(),
            }),
            None => Err(SendError::transient(format!(
                "Meta answered {status} without a message id"
            ))),
        }
    }
}

impl Provider for Meta {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Meta
    }

    fn check(&self, channel: Channel, settings: &ProviderSettings) -> Result<(), String> {
        let names = needed(channel)
            .ok_or_else(|| format!("Meta sends on whatsapp and messenger, not {channel}"))?;
        require(settings, names)
    }

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.call(request))
    }

    /// The handshake (`GET`) answers the challenge when the verify token
    /// is ours; a notification (`POST`) is believed once its signature
    /// matches the app secret, then read by its `object`:
    /// `whatsapp_business_account` ([`whatsapp::events`]) or `page`
    /// ([`messenger::events`]). Anything else in a signed body is skipped.
    fn callback(
        &self,
        settings: &ProviderSettings,
        request: &CallbackRequest<'_>,
    ) -> Result<CallbackOutcome, CallbackError> {
        if *request.method == Method::GET {
            return webhook::handshake(settings.credential("verify_token"), request.query)
                .map(CallbackOutcome::Challenge);
        }
        if *request.method != Method::POST {
            return Err(CallbackError::Malformed(format!(
                "Meta calls back with GET or POST, not {}",
                request.method
            )));
        }
        webhook::verify(
            settings.credential("app_secret"),
            request.headers,
            request.body,
        )?;
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|e| CallbackError::Malformed(format!("not JSON: {e}")))?;
        let events = match body.get("object").and_then(Value::as_str) {
            Some("whatsapp_business_account") => {
                let media_base = format!(
                    "{}/{}",
                    settings.base_url(GRAPH_URL),
                    graph_version(settings)
                );
                whatsapp::events(&body, &media_base)
            }
            Some("page") => messenger::events(&body),
            _ => Vec::new(),
        };
        Ok(CallbackOutcome::Events(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_model::envelope::SendCommand;
    use serde_json::json;

    fn settings(credentials: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings {
            kind: ProviderKind::Meta,
            url: String::new(),
            secret: String::new(),
            credentials: credentials
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            templates: Default::default(),
            route: String::new(),
        }
    }

    fn command(channel: Channel, message: Value) -> SendCommand {
        SendCommand {
            workflow_id: uuid::Uuid::nil(),
            message_uuid: uuid::Uuid::nil(),
            channel,
            account: "acct".into(),
            application_id: None,
            message: serde_json::from_value(message).expect("message"),
            paced: None,
        }
    }

    #[test]
    fn check_names_what_is_missing() {
        let meta = Meta::new(reqwest::Client::new());
        let all = settings(&[
            ("access_token", "t"),
            ("phone_number_id", "1"),
            ("page_id", "2"),
            ("app_secret", "s"),
            ("verify_token", "v"),
        ]);
        assert_eq!(meta.check(Channel::Whatsapp, &all), Ok(()));
        assert_eq!(meta.check(Channel::Messenger, &all), Ok(()));
        assert!(meta.check(Channel::Sms, &all).is_err());
        assert!(meta.check(Channel::ViberServiceMsg, &all).is_err());
        let some = settings(&[("access_token", "t"), ("page_id", "2")]);
        assert_eq!(
            meta.check(Channel::Messenger, &some),
            Err("missing credentials: app_secret, verify_token".into())
        );
        assert_eq!(
            meta.check(Channel::Whatsapp, &some),
            Err("missing credentials: phone_number_id, app_secret, verify_token".into())
        );
    }

    #[test]
    fn urls() {
        let mut s = settings(&[]);
        let url = |s: &ProviderSettings, id: &str| messages_url(s, id).map(|u| u.to_string());
        assert_eq!(
            url(&s, "123"),
            Ok("https://graph.facebook.com/v21.0/123/messages".into())
        );
        s.url = "http://127.0.0.1:9/meta/".into();
        s.credentials.insert("graph_version".into(), "v19.0".into());
        assert_eq!(
            url(&s, "a/b?c"),
            Ok("http://127.0.0.1:9/meta/v19.0/a%2Fb%3Fc/messages".into())
        );
        s.url = "not a url".into();
        assert!(matches!(url(&s, "1"), Err(SendError::Permanent(e)) if e.code == 1140));
    }

    #[test]
    fn message_ids() {
        let wa = json!({"messaging_product": "whatsapp", "contacts": [{"input": "+1 555", "wa_id": "1555"}], "messages": [{"id": "wamid.X"}]});
        assert_eq!(message_id(Channel::Whatsapp, &wa), Some("wamid.X"));
        let ms = json!({"recipient_id": "1", "message_id": "m_1"});
        assert_eq!(message_id(Channel::Messenger, &ms), Some("m_1"));
        assert_eq!(
            message_id(Channel::Whatsapp, &json!({"messages": []})),
            None
        );
        assert_eq!(
            message_id(Channel::Whatsapp, &json!({"messages": [{"id": 5}]})),
            None
        );
        assert_eq!(message_id(Channel::Messenger, &json!(null)), None);
    }

    #[test]
    fn whatsapp_bodies() {
        let s = settings(&[]);
        let body = |content: Value, extra: Value| {
            let mut message = json!({"to": {"type": "whatsapp", "number": "+44 7700 900000"}, "message": {"content": content}});
            if let (Some(m), Some(extra)) = (message["message"].as_object_mut(), extra.as_object())
            {
                m.extend(extra.clone());
            }
            whatsapp::body(&command(Channel::Whatsapp, message), &s)
        };
        assert_eq!(
            body(
                json!({"type": "audio", "audio": {"url": "https://x/a.mp3", "caption": "dropped"}}),
                json!({})
            ),
            Ok(
                json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900000",
                      "type": "audio", "audio": {"link": "https://x/a.mp3"}})
            )
        );
        assert_eq!(
            body(
                json!({"type": "template", "template": {"name": "ns:hello"}}),
                json!({"whatsapp": {"locale": "de_DE"}})
            ),
            Ok(
                json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900000",
                      "type": "template", "template": {"name": "hello", "language": {"policy": "deterministic", "code": "de_DE"}}})
            )
        );
        let code = |r: Result<Value, SendError>| match r {
            Err(SendError::Permanent(e)) => Some(e.code),
            _ => None,
        };
        assert_eq!(code(body(json!({"type": "text"}), json!({}))), Some(1010));
        assert_eq!(
            code(body(json!({"type": "image", "image": {}}), json!({}))),
            Some(1010)
        );
        assert_eq!(code(body(json!({}), json!({}))), Some(1010));
        assert_eq!(
            code(body(
                json!({"type": "template", "template": {"name": "ns:"}}),
                json!({})
            )),
            Some(1022)
        );
        assert_eq!(code(body(json!({"type": "custom"}), json!({}))), Some(1010));
    }

    #[test]
    fn messenger_bodies() {
        let body = |message: Value| {
            let mut m = json!({"to": {"type": "messenger", "id": "psid-1"}});
            if let (Some(m), Some(extra)) = (m.as_object_mut(), message.as_object()) {
                m.extend(extra.clone());
            }
            messenger::body(&command(Channel::Messenger, m))
        };
        assert_eq!(
            body(
                json!({"message": {"content": {"type": "video", "video": {"url": "https://x/v.mp4", "caption": "c"}},
                                    "messenger": {"category": "update"}}})
            ),
            Ok(
                json!({"recipient": {"id": "psid-1"}, "messaging_type": "UPDATE",
                      "message": {"attachment": {"type": "video", "payload": {"url": "https://x/v.mp4", "is_reusable": false}}}})
            )
        );
        let code = |r: Result<Value, SendError>| match r {
            Err(SendError::Permanent(e)) => Some(e.code),
            _ => None,
        };
        assert_eq!(
            code(body(
                json!({"message": {"content": {"type": "text", "text": "x"}, "messenger": {"category": "message_tag"}}})
            )),
            Some(1021)
        );
        assert_eq!(
            code(body(
                json!({"message": {"content": {"type": "template", "template": {"name": "a:b"}}}})
            )),
            Some(1020)
        );
        assert_eq!(code(body(json!({"message": {}}))), Some(1010));
    }

    #[test]
    fn callbacks_never_panic() {
        let meta = Meta::new(reqwest::Client::new());
        let s = settings(&[("app_secret", "s"), ("verify_token", "v")]);
        let headers = crate::HeaderMap::new();
        for method in [Method::PUT, Method::DELETE, Method::POST, Method::GET] {
            for body in [&b""[..], b"\xff\xfe", b"{\"object\":5}"] {
                let request = CallbackRequest {
                    method: &method,
                    url: "",
                    hook: "",
                    query: "hub.mode=%ZZ&&&==",
                    headers: &headers,
                    body,
                };
                assert!(meta.callback(&s, &request).is_err(), "{method} {body:?}");
            }
        }
    }
}
