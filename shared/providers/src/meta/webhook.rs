//! What Meta's webhooks have in common, whichever product sends them:
//! the subscription handshake, the `X-Hub-Signature-256` signature, and
//! lenient readers for their JSON.
//!
//! Both follow Graph API webhooks, "Getting started"
//! (<https://developers.facebook.com/docs/graph-api/webhooks/getting-started>):
//! Meta verifies a callback URL with a `GET` carrying `hub.mode=subscribe`,
//! `hub.verify_token` (the token we gave when subscribing) and
//! `hub.challenge` (to be answered verbatim); it signs every notification
//! with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw
//! body)>`.

use aws_lc_rs::hmac;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::{CallbackError, HeaderMap};

/// The header carrying a notification's signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The subscription handshake: `hub.challenge`, to be answered verbatim,
/// when `hub.mode` is `subscribe` and `hub.verify_token` is ours
/// (compared in constant time).
pub fn handshake(verify_token: &str, query: &str) -> Result<String, CallbackError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| CallbackError::Malformed(format!("unreadable query: {e}")))?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(mode), Some(token), Some(challenge)) = (
        param("hub.mode"),
        param("hub.verify_token"),
        param("hub.challenge"),
    ) else {
        return Err(CallbackError::Malformed(
            "a verification request needs hub.mode, hub.verify_token and hub.challenge".into(),
        ));
    };
    if mode != "subscribe" {
        return Err(CallbackError::Malformed(format!(
            "hub.mode is `{mode}`, not `subscribe`"
        )));
    }
    let matches: bool = token.as_bytes().ct_eq(verify_token.as_bytes()).into();
    if verify_token.is_empty() || !matches {
        return Err(CallbackError::Forbidden(
            "hub.verify_token does not match".into(),
        ));
    }
    Ok(challenge.to_owned())
}

/// Whether `headers` carry the signature of exactly `body` under
/// `app_secret`; the comparison is constant-time.
pub fn verify(app_secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), CallbackError> {
    let unauthorized = |why: &str| Err(CallbackError::Unauthorized(why.into()));
    if app_secret.is_empty() {
        return unauthorized("no app_secret to verify the signature with");
    }
    let Some(value) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return unauthorized("X-Hub-Signature-256 is missing");
    };
    let Some(tag) = value
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return unauthorized("X-Hub-Signature-256 is not sha256=<hex>");
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, app_secret.as_bytes());
    match hmac::verify(&key, body, &tag) {
        Ok(()) => Ok(()),
        Err(_) => unauthorized("X-Hub-Signature-256 does not match the body"),
    }
}

/// The string at `key`, if it is one.
pub fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// The elements of the array at `key`; none when absent or not an array.
pub fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + 'a {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// An integer at `key`, written as a number or as a string of digits
/// (WhatsApp writes timestamps as strings, Messenger as numbers).
pub fn integer(value: &Value, key: &str) -> Option<i64> {
    match value.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn signed(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    /// Computed independently:
    /// `printf '%s' '{"object":"page","entry":[]}' | openssl dgst -sha256 -hmac app-secret`.
    const VECTOR: &str = "sha256=e6e9d7a842a48e17f43a34d6125d0d933e2aab92ee37f0993a4d493b50e3d438";

    #[test]
    fn a_hand_computed_signature() {
        let body = br#"{"object":"page","entry":[]}"#;
        assert_eq!(verify("app-secret", &signed(VECTOR), body), Ok(()));
        assert_eq!(
            verify(
                "app-secret",
                &signed(&VECTOR.to_uppercase().replace("SHA256=", "sha256=")),
                body
            ),
            Ok(()),
            "upper-case hex is the same signature"
        );
        let refused =
            |r: Result<(), CallbackError>| matches!(r, Err(CallbackError::Unauthorized(_)));
        assert!(refused(verify("other", &signed(VECTOR), body)));
        assert!(refused(verify("app-secret", &signed(VECTOR), b"{}")));
        assert!(refused(verify("app-secret", &HeaderMap::new(), body)));
        assert!(refused(verify("app-secret", &signed(&VECTOR[7..]), body)));
        assert!(refused(verify("app-secret", &signed("sha256=zz"), body)));
        assert!(refused(verify("", &signed(VECTOR), body)));
        // RFC 4231, test case 2.
        let rfc = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(
            verify("Jefe", &signed(rfc), b"what do ya want for nothing?"),
            Ok(())
        );
    }

    #[test]
    fn the_handshake() {
        let q = "hub.mode=subscribe&hub.verify_token=t%C3%B6ken&hub.challenge=1158201444";
        assert_eq!(handshake("töken", q), Ok("1158201444".into()));
        assert!(matches!(
            handshake("other", q),
            Err(CallbackError::Forbidden(_))
        ));
        assert!(matches!(handshake("", q), Err(CallbackError::Forbidden(_))));
        let unsubscribe = "hub.mode=unsubscribe&hub.verify_token=t&hub.challenge=1";
        assert!(matches!(
            handshake("t", unsubscribe),
            Err(CallbackError::Malformed(_))
        ));
        for missing in [
            "",
            "hub.mode=subscribe&hub.verify_token=t",
            "hub.challenge=1&hub.verify_token=t",
        ] {
            assert!(
                matches!(handshake("t", missing), Err(CallbackError::Malformed(_))),
                "{missing}"
            );
        }
    }

    #[test]
    fn lenient_readers() {
        let v = serde_json::json!({"s": "12", "n": 7, "a": [1, 2], "o": {}, "x": "y"});
        assert_eq!(integer(&v, "s"), Some(12));
        assert_eq!(integer(&v, "n"), Some(7));
        assert_eq!(integer(&v, "x"), None);
        assert_eq!(integer(&v, "o"), None);
        assert_eq!(items(&v, "a").count(), 2);
        assert_eq!(items(&v, "o").count(), 0);
        assert_eq!(items(&v, "missing").count(), 0);
        assert_eq!(text(&v, "s"), Some("12"));
        assert_eq!(text(&v, "n"), None);
    }
}
