//! The Twilio adapter: Programmable Messaging for SMS, MMS and WhatsApp.
//!
//! Credentials (`settings.credentials`): `account_sid` and `auth_token`
//! (both required), and optionally `messaging_service_sid`, which then
//! replaces `From`. The base URL is `https://api.twilio.com` unless the
//! settings' `url` says otherwise (the simulator's fake, in tests).
//!
//! - Send: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//!   with HTTP Basic authentication (account SID and auth token,
//!   <https://www.twilio.com/docs/usage/requests-to-twilio>)
//!   and a form ([`request`]), following
//!   <https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>.
//!   201 with the Message resource is accepted, its `sid` the id our
//!   receipts name; errors are mapped by [`errors`].
//! - Callbacks: verified with `X-Twilio-Signature` ([`signature`]), then
//!   read by [`callback`].

pub mod callback;
pub mod errors;
pub mod request;
pub mod signature;

use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_model::Channel;
use serde::Deserialize;

use crate::{
    Accepted, BoxFuture, CallbackError, CallbackOutcome, CallbackRequest, Method, Provider,
    ProviderRequest, SendError, require, retry_after,
};

/// Twilio's public API.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The credentials every Twilio record needs.
const REQUIRED: [&str; 2] = ["account_sid", "auth_token"];

/// The channels Twilio's Messages API sends on.
const CHANNELS: [Channel; 3] = [Channel::Sms, Channel::Mms, Channel::Whatsapp];

/// The Twilio adapter; stateless apart from its HTTP client, since the
/// account and its credentials come with each call.
pub struct Twilio {
    http: reqwest::Client,
}

/// The part of the Message resource we read from a 201.
#[derive(Deserialize)]
struct Created {
    sid: String,
}

impl Twilio {
    /// An adapter sending with `http` (its timeouts apply to Twilio's
    /// answers).
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn call(&self, request: ProviderRequest<'_>) -> Result<Accepted, SendError> {
        let settings = request.settings;
        let form = request::form(request.command, settings, request.status_callback)
            .map_err(SendError::Permanent)?;
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| SendError::permanent(1020, format!("Invalid params: {e}")))?;
        let account = settings.credential("account_sid");
        let url = format!(
            "{}/2010-04-01/Accounts/{account}/Messages.json",
            settings.base_url(DEFAULT_BASE_URL)
        );
        let response = self
            .http
            .post(url)
            .basic_auth(account, Some(settings.credential("auth_token")))
            .headers(dispatch_infra::telemetry::trace_headers())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("Twilio unreachable: {e}")))?;
        answer(response).await
    }
}

/// What Twilio's answer to a send means.
async fn answer(response: reqwest::Response) -> Result<Accepted, SendError> {
    let status = response.status();
    let wait = retry_after(response.headers());
    if status.is_success() {
        let created: Created = response
            .json()
            .await
            .map_err(|e| SendError::transient(format!("unreadable answer from Twilio: {e}")))?;
        return Ok(Accepted {
            provider_message_id: created.sid,
        });
    }
    // https://www.twilio.com/docs/usage/twilios-response: 429 is a rate
    // limit, 5xx Twilio's own trouble; both pass.
    if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        return Err(SendError::Transient {
            reason: format!("Twilio answered HTTP {status}"),
            retry_after: wait,
        });
    }
    let body = response.json::<errors::ErrorBody>().await.ok();
    Err(errors::refused(status.as_u16(), body, wait))
}

impl Provider for Twilio {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Twilio
    }

    fn check(&self, channel: Channel, settings: &ProviderSettings) -> Result<(), String> {
        if !CHANNELS.contains(&channel) {
            return Err(format!(
                "Twilio does not send on {channel}; it sends on sms, mms and whatsapp"
            ));
        }
        require(settings, &REQUIRED)
    }

    fn send<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.call(request))
    }

    /// Status callbacks at `/callbacks/twilio/{route}` (or `…/status`),
    /// incoming messages at `/callbacks/twilio/{route}/inbound`; both
    /// form-encoded and signed with the auth token over the URL Twilio
    /// called.
    fn callback(
        &self,
        settings: &ProviderSettings,
        request: &CallbackRequest<'_>,
    ) -> Result<CallbackOutcome, CallbackError> {
        let params = verified(settings, request)?;
        let events = if request.hook == "inbound" {
            callback::inbound(&params)?
        } else {
            callback::status(&params)?
        };
        Ok(CallbackOutcome::Events(events))
    }
}

/// The callback's parameters, once its signature holds. A webhook
/// configured as `GET` carries its parameters in the query, which the
/// signed URL already holds; a `POST` in its form body, signed after the
/// URL (<https://www.twilio.com/docs/usage/webhooks/webhooks-security>).
fn verified(
    settings: &ProviderSettings,
    request: &CallbackRequest<'_>,
) -> Result<callback::Params, CallbackError> {
    let unauthorized = || {
        CallbackError::Unauthorized("The X-Twilio-Signature is missing or does not match.".into())
    };
    let signature = request
        .headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let form = |raw: &[u8]| -> Result<Vec<(String, String)>, CallbackError> {
        serde_urlencoded::from_bytes(raw).map_err(|_| unauthorized())
    };
    let (signed, params) = if request.method == Method::GET {
        (Vec::new(), form(request.query.as_bytes())?)
    } else {
        let params = form(request.body)?;
        (params.clone(), params)
    };
    let token = settings.credential("auth_token");
    if !signature::verify(token, request.url, &signed, signature) {
        return Err(unauthorized());
    }
    Ok(callback::Params(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallbackEvent, HeaderMap};
    use dispatch_model::record::MessageStatus;

    fn settings(token: &str) -> ProviderSettings {
        ProviderSettings {
            kind: ProviderKind::Twilio,
            url: String::new(),
            secret: String::new(),
            credentials: [
                ("account_sid".to_owned(), "AC1".to_owned()),
                ("auth_token".to_owned(), token.to_owned()),
            ]
            .into_iter()
            .collect(),
            templates: Default::default(),
            route: "r".into(),
        }
    }

    const URL: &str = "https://dispatch.example/callbacks/twilio/r";

    fn signed(token: &str, url: &str, body: &str) -> HeaderMap {
        let params: Vec<(String, String)> = serde_urlencoded::from_str(body).expect("form");
        let mut headers = HeaderMap::new();
        headers.insert(
            signature::HEADER,
            signature::sign(token, url, &params)
                .parse()
                .expect("header"),
        );
        headers
    }

    fn call(
        token: &str,
        hook: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        Twilio::new(reqwest::Client::new()).callback(
            &settings(token),
            &CallbackRequest {
                method: &Method::POST,
                url: URL,
                hook,
                query: "",
                headers,
                body,
            },
        )
    }

    #[test]
    fn check_channels_and_credentials() {
        let t = Twilio::new(reqwest::Client::new());
        for channel in CHANNELS {
            assert_eq!(t.check(channel, &settings("x")), Ok(()));
        }
        assert!(t.check(Channel::Messenger, &settings("x")).is_err());
        assert!(t.check(Channel::ViberServiceMsg, &settings("x")).is_err());
        let missing = t.check(Channel::Sms, &settings("")).expect_err("no token");
        assert!(missing.contains("auth_token"), "{missing}");
    }

    #[test]
    fn a_signed_status_callback_is_read() {
        let body = "MessageSid=SM1&MessageStatus=delivered&To=%2B447700900000";
        let outcome = call("tok", "", &signed("tok", URL, body), body.as_bytes());
        let Ok(CallbackOutcome::Events(events)) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(matches!(
            events.as_slice(),
            [CallbackEvent::Receipt(r)] if r.status == MessageStatus::Delivered && r.provider_message_id == "SM1"
        ));
    }

    #[test]
    fn a_get_webhook_is_signed_over_its_url() {
        let get = |url: &str, query: &str, signed_url: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                signature::HEADER,
                signature::sign("tok", signed_url, &[])
                    .parse()
                    .expect("header"),
            );
            Twilio::new(reqwest::Client::new()).callback(
                &settings("tok"),
                &CallbackRequest {
                    method: &Method::GET,
                    url,
                    hook: "",
                    query,
                    headers: &headers,
                    body: b"",
                },
            )
        };
        let query = "MessageSid=SM2&MessageStatus=read";
        let url = format!("{URL}?{query}");
        let outcome = get(&url, query, &url);
        let Ok(CallbackOutcome::Events(events)) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(matches!(
            events.as_slice(),
            [CallbackEvent::Receipt(r)] if r.status == MessageStatus::Read && r.provider_message_id == "SM2"
        ));
        let other = "MessageSid=SM2&MessageStatus=delivered";
        let forged = get(&format!("{URL}?{other}"), other, &url);
        assert!(matches!(forged, Err(CallbackError::Unauthorized(_))));
    }

    #[test]
    fn unsigned_or_tampered_callbacks_are_unauthorized() {
        let body = "MessageSid=SM1&MessageStatus=delivered";
        let headers = signed("tok", URL, body);
        let unauthorized = |r: Result<CallbackOutcome, CallbackError>| {
            matches!(r, Err(CallbackError::Unauthorized(_)))
        };
        assert!(unauthorized(call(
            "tok",
            "",
            &HeaderMap::new(),
            body.as_bytes()
        )));
        assert!(unauthorized(call("other", "", &headers, body.as_bytes())));
        assert!(unauthorized(call("", "", &headers, body.as_bytes())));
        assert!(unauthorized(call(
            "tok",
            "",
            &headers,
            b"MessageSid=SM1&MessageStatus=undelivered"
        )));
        assert!(unauthorized(call(
            "tok",
            "",
            &signed("tok", "https://elsewhere/", body),
            body.as_bytes()
        )));
    }

    #[test]
    fn signed_but_malformed() {
        let body = "MessageStatus=delivered";
        let r = call("tok", "", &signed("tok", URL, body), body.as_bytes());
        assert!(matches!(r, Err(CallbackError::Malformed(_))), "{r:?}");
        let body = "From=%2B1&To=%2B2&Body=hi";
        let r = call("tok", "inbound", &signed("tok", URL, body), body.as_bytes());
        assert!(matches!(r, Err(CallbackError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn no_input_panics() {
        let bodies: [&[u8]; 6] = [
            b"",
            b"&&&===",
            b"%ZZ=%%%",
            b"\xff\xfe\x00garbage",
            b"MessageSid=%F0%9F%98%80&MessageStatus=%00",
            b"NumMedia=99999999999999999999&MediaUrl0=&From=whatsapp:&To=",
        ];
        for body in bodies {
            for hook in ["", "status", "inbound", "other"] {
                let text = String::from_utf8_lossy(body).into_owned();
                // Signed with whatever parameters the body decodes to, or
                // not at all when it does not decode.
                let headers = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                    .map(|params| {
                        let mut h = HeaderMap::new();
                        if let Ok(v) = signature::sign("tok", URL, &params).parse() {
                            h.insert(signature::HEADER, v);
                        }
                        h
                    })
                    .unwrap_or_default();
                let _ = call("tok", hook, &headers, body);
                let _ = call("tok", hook, &HeaderMap::new(), text.as_bytes());
            }
        }
    }
}
