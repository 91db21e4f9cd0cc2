//! Webhook signatures, two of them on every request:
//!
//! - `Authorization: Bearer <JWT>`, HS256 with the account's signature
//!   secret, claims `iat`, `jti`, `iss`, `payload_hash` (hex SHA-256 of the
//!   exact body), `api_key` and, when there is one, `application_id`: what
//!   receivers written for the original service verify.
//! - Standard Webhooks: `webhook-id` (stable across retries),
//!   `webhook-timestamp` (seconds) and `webhook-signature: v1,<base64
//!   HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The HMAC key is the
//!   signature secret's bytes, so off-the-shelf verifiers take the secret
//!   as `whsec_` + base64(signature secret).

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Claims<'a> {
    iat: i64,
    jti: String,
    iss: &'a str,
    payload_hash: String,
    api_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_id: Option<String>,
}

/// The headers that sign `body`, as (name, value) pairs.
pub struct Signer<'a> {
    pub secret: &'a str,
    pub issuer: &'a str,
    pub api_key: &'a str,
    pub application_id: Option<String>,
}

impl Signer<'_> {
    pub fn headers(
        &self,
        webhook_id: &str,
        now_secs: i64,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, jsonwebtoken::errors::Error> {
        let claims = Claims {
            iat: now_secs,
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer,
            payload_hash: hex::encode(digest::digest(&digest::SHA256, body).as_ref()),
            api_key: self.api_key,
            application_id: self.application_id.clone(),
        };
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?;
        Ok(vec![
            ("authorization", format!("Bearer {jwt}")),
            ("webhook-id", webhook_id.to_owned()),
            ("webhook-timestamp", now_secs.to_string()),
            (
                "webhook-signature",
                standard_signature(self.secret, webhook_id, now_secs, body),
            ),
        ])
    }
}

/// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &str, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{webhook_id}.{timestamp}.").as_bytes());
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwt_verifies_with_the_secret_and_hashes_the_body() {
        let signer = Signer {
            secret: "s3cret",
            issuer: "Vonage",
            api_key: "key",
            application_id: Some("app".into()),
        };
        let body = br#"{"status":"delivered"}"#;
        let headers = signer.headers("w1", 1_700_000_000, body).expect("signed");
        let bearer = &headers[0].1["Bearer ".len()..];
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            bearer,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .expect("verifies")
        .claims;
        assert_eq!(
            claims["payload_hash"],
            hex::encode(digest::digest(&digest::SHA256, body).as_ref())
        );
        assert_eq!(claims["api_key"], "key");
        assert_eq!(claims["application_id"], "app");
        assert_eq!(claims["iss"], "Vonage");
        assert!(claims["jti"].is_string() && claims["iat"].is_number());
    }

    #[test]
    fn standard_signature_matches_the_specification_example() {
        // The Standard Webhooks test vector: secret
        // whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek,
        // timestamp 1614265330, body {"test": 2432232314}.
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            &STANDARD
                .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .expect("base64"),
        );
        let tag = hmac::sign(
            &key,
            b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}",
        );
        assert_eq!(
            STANDARD.encode(tag.as_ref()),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Our function computes the same construction over a UTF-8 secret.
        let ours = standard_signature("abc", "id", 1, b"{}");
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"abc"), b"id.1.{}");
        assert_eq!(ours, format!("v1,{}", STANDARD.encode(expected.as_ref())));
    }
}
