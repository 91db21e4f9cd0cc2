//! Twilio's request signature, `X-Twilio-Signature`, as
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security> defines
//! it: take the full URL Twilio called (with its query), append each POST
//! parameter sorted by name as name then value (no separators), sign that
//! with HMAC-SHA1 under the account's auth token, and encode the tag in
//! Base64.
//!
//! Messaging webhooks (status callbacks, incoming messages) are always
//! form-encoded POSTs, so the JSON variant with a `bodySHA256` query
//! parameter does not apply here.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The HTTP header carrying the signature.
pub const HEADER: &str = "x-twilio-signature";

/// The text Twilio signs: `url`, then each parameter as name and value,
/// sorted by name (equal names by value, as Twilio's helper libraries
/// do).
fn signed_text(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut text = String::with_capacity(url.len() + params.len() * 16);
    text.push_str(url);
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    text
}

fn key(auth_token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes())
}

/// The `X-Twilio-Signature` of a POST to `url` with form `params`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let tag = hmac::sign(&key(auth_token), signed_text(url, params).as_bytes());
    STANDARD.encode(tag.as_ref())
}

/// Whether `signature` (the header's value) is Twilio's signature of a POST
/// to `url` with form `params` under `auth_token`. The tag comparison is
/// constant-time (`hmac::verify`).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    if auth_token.is_empty() {
        return false;
    }
    let Ok(tag) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    hmac::verify(&key(auth_token), signed_text(url, params).as_bytes(), &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn documented_params() -> Vec<(String, String)> {
        // Out of order on purpose: the signature sorts them.
        [
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The worked example of
    /// https://www.twilio.com/docs/usage/webhooks/webhooks-security
    /// (auth token 12345).
    #[test]
    fn twilios_documented_vector() {
        let params = documented_params();
        assert_eq!(sign("12345", URL, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify(
            "12345",
            URL,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn any_change_breaks_it() {
        let params = documented_params();
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert!(!verify("12346", URL, &params, good));
        assert!(!verify("", URL, &params, good));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            good
        ));
        let mut tampered = params.clone();
        tampered[2].1 = "9999".into();
        assert!(!verify("12345", URL, &tampered, good));
        let mut extra = params.clone();
        extra.push(("Extra".into(), String::new()));
        assert!(!verify(
            "12345",
            URL,
            &extra,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify(
            "12345",
            URL,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ"
        ));
        assert!(!verify("12345", URL, &params, ""));
        assert!(!verify("12345", URL, &params, "not base64 at all!"));
    }
}
