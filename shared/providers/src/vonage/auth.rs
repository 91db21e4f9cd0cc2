//! How we authenticate to the Messages API, following
//! <https://developer.vonage.com/en/getting-started/concepts/authentication>:
//!
//! - Basic: `Authorization: Basic base64(api_key:api_secret)`.
//! - JWT: `Authorization: Bearer <JWT>`, signed RS256 with the Vonage
//!   application's private key, claims `application_id`, `iat`, `jti`
//!   (unique per token) and `exp`. A fresh token per request, valid
//!   [`JWT_TTL_SECS`]: nothing to cache or renew, and a leaked token
//!   expires quickly.
//!
//! The JWT pair wins when both are configured, as Vonage recommends JWTs
//! for the Messages API.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dispatch_infra::config::ProviderSettings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How long each JWT is valid: 15 minutes, far longer than a request.
pub const JWT_TTL_SECS: i64 = 900;

/// Credentials ready to authorize a request.
pub enum Auth {
    Basic {
        api_key: String,
        api_secret: String,
    },
    Jwt {
        application_id: String,
        key: EncodingKey,
    },
}

#[derive(Serialize)]
struct Claims<'a> {
    application_id: &'a str,
    iat: i64,
    jti: String,
    exp: i64,
}

/// A PEM as configuration files and environment variables often carry
/// it: with `\n` escapes instead of line breaks.
fn unescape_pem(pem: &str) -> String {
    if pem.contains('\n') {
        pem.to_owned()
    } else {
        pem.replace("\\n", "\n")
    }
}

impl Auth {
    /// The credentials of `settings`: the JWT pair if set, else the Basic
    /// pair. A half-set pair, or a private key that is not an RSA PEM, is
    /// an error.
    pub fn from_settings(settings: &ProviderSettings) -> Result<Self, String> {
        let application_id = settings.credential("application_id");
        let private_key = settings.credential("private_key");
        match (application_id.is_empty(), private_key.is_empty()) {
            (false, false) => {
                let key = EncodingKey::from_rsa_pem(unescape_pem(private_key).as_bytes())
                    .map_err(|e| format!("private_key is not an RSA private key in PEM: {e}"))?;
                return Ok(Auth::Jwt {
                    application_id: application_id.to_owned(),
                    key,
                });
            }
            (false, true) => return Err("application_id needs private_key".into()),
            (true, false) => return Err("private_key needs application_id".into()),
            (true, true) => {}
        }
        let api_key = settings.credential("api_key");
        let api_secret = settings.credential("api_secret");
        if api_key.is_empty() || api_secret.is_empty() {
            return Err(
                "Vonage needs `api_key` and `api_secret`, or `application_id` and `private_key`"
                    .into(),
            );
        }
        Ok(Auth::Basic {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
        })
    }

    /// The `Authorization` header value for one request.
    pub fn authorization(&self) -> Result<String, String> {
        match self {
            Auth::Basic {
                api_key,
                api_secret,
            } => Ok(format!(
                "Basic {}",
                STANDARD.encode(format!("{api_key}:{api_secret}"))
            )),
            Auth::Jwt {
                application_id,
                key,
            } => jwt(application_id, key, now_secs()).map(|t| format!("Bearer {t}")),
        }
    }
}

fn now_secs() -> i64 {
    dispatch_model::record::now_ms().div_euclid(1000)
}

/// A JWT for `application_id` issued at `iat`.
fn jwt(application_id: &str, key: &EncodingKey, iat: i64) -> Result<String, String> {
    let claims = Claims {
        application_id,
        iat,
        jti: uuid::Uuid::new_v4().to_string(),
        exp: iat.saturating_add(JWT_TTL_SECS),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
        .map_err(|e| format!("cannot sign a JWT with private_key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_infra::config::ProviderKind;

    fn settings(pairs: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings {
            kind: ProviderKind::Vonage,
            url: String::new(),
            secret: String::new(),
            credentials: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            templates: Default::default(),
            route: String::new(),
        }
    }

    #[test]
    fn basic_auth_is_key_colon_secret() {
        let auth = Auth::from_settings(&settings(&[("api_key", "abc"), ("api_secret", "s3")]))
            .expect("basic");
        assert_eq!(auth.authorization().as_deref(), Ok("Basic YWJjOnMz"));
    }

    #[test]
    fn incomplete_or_broken_credentials_are_refused() {
        for pairs in [
            &[][..],
            &[("api_key", "abc")][..],
            &[("api_secret", "x")][..],
            &[
                ("application_id", "app"),
                ("api_key", "k"),
                ("api_secret", "s"),
            ][..],
            &[("private_key", "pem")][..],
            &[("application_id", "app"), ("private_key", "not a pem")][..],
            &[
                ("application_id", "app"),
                (
                    "private_key",
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ),
            ][..],
        ] {
            let result = Auth::from_settings(&settings(pairs)).and_then(|a| a.authorization());
            assert!(result.is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn escaped_pems_are_unescaped() {
        assert_eq!(unescape_pem("a\\nb"), "a\nb");
        assert_eq!(unescape_pem("a\nb\\n"), "a\nb\\n");
    }
}
