//! Authentication of `/v0.1/*`: either Basic (`api_key:api_secret`) or a
//! Bearer JWT signed RS256 with an application's private key, never both.
//!
//! JWT claims: `application_id` and `iat` are required, `jti` is accepted,
//! `exp` is optional. Clients in the field send no `exp`, so a token's age
//! is bounded by `iat`: older than `jwt_max_age_secs` is refused, as is an
//! `iat` in the future; when `exp` is present it is honoured too. Both
//! checks allow `jwt_leeway_secs` of clock skew.
//!
//! An authenticated request then counts against its account's request
//! rate ([`crate::rate`]): over it, the answer is 429.
//!
//! Every failure is the same 401 to the client, with a short reason; the
//! reason never reveals whether an account or application exists.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::applications;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The account's `api_key`.
    pub account: String,
    /// Set when the request was authenticated with an application's JWT.
    pub application_id: Option<Uuid>,
}

const INVALID: &str = "Invalid credentials.";

enum Credentials<'a> {
    Basic(&'a str),
    Bearer(&'a str),
}

fn credentials(headers: &HeaderMap) -> ApiResult<Credentials<'_>> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::Unauthorized(
            "Authenticate with Basic (api_key:api_secret) or a Bearer JWT.",
        ));
    };
    if values.next().is_some() {
        return Err(ApiError::Unauthorized(
            "Use either Basic or Bearer authentication, not both.",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized(INVALID))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        Ok(Credentials::Basic(rest))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credentials::Bearer(rest))
    } else {
        Err(ApiError::Unauthorized(
            "Unsupported authorization scheme; use Basic or Bearer.",
        ))
    }
}

/// Basic auth only (the Applications API), then the account's rate.
pub async fn basic(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let principal = match credentials(headers)? {
        Credentials::Basic(encoded) => check_basic(state, encoded).await?,
        Credentials::Bearer(_) => {
            return Err(ApiError::Unauthorized(
                "This API takes Basic authentication (api_key:api_secret).",
            ));
        }
    };
    admit(state, principal).await
}

/// Basic or Bearer (the Messages and Dispatch APIs and the lookups), then
/// the account's rate.
pub async fn any(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let principal = match credentials(headers)? {
        Credentials::Basic(encoded) => check_basic(state, encoded).await?,
        Credentials::Bearer(token) => check_bearer(state, token).await?,
    };
    admit(state, principal).await
}

/// Every authenticated request counts against its account's rate.
async fn admit(state: &AppState, principal: Principal) -> ApiResult<Principal> {
    state
        .rates
        .admit(&state.redis, &state.keys, &principal.account)
        .await?;
    Ok(principal)
}

async fn check_basic(state: &AppState, encoded: &str) -> ApiResult<Principal> {
    let decoded = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(ApiError::Unauthorized(INVALID))?;
    let (key, secret) = decoded
        .split_once(':')
        .ok_or(ApiError::Unauthorized(INVALID))?;
    if key.is_empty() || key.len() > 64 || secret.is_empty() {
        return Err(ApiError::Unauthorized(INVALID));
    }
    let ok = state
        .secrets
        .verify(&mut state.redis(), &state.keys, key, secret)
        .await?;
    if ok {
        Ok(Principal {
            account: key.to_owned(),
            application_id: None,
        })
    } else {
        Err(ApiError::Unauthorized(INVALID))
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    application_id: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
}

/// Reads the claims without checking the signature: only to learn which
/// application's key checks it.
fn unverified_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn check_bearer(state: &AppState, token: &str) -> ApiResult<Principal> {
    let claims = unverified_claims(token).ok_or(ApiError::Unauthorized("Malformed token."))?;
    let app_id = claims
        .application_id
        .as_deref()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ApiError::Unauthorized(
            "The token needs an `application_id` claim naming an application.",
        ))?;
    let app = applications::load(state, &app_id)
        .await?
        .ok_or(ApiError::Unauthorized(INVALID))?;
    let key = DecodingKey::from_rsa_pem(app.public_key.as_bytes())
        .map_err(|_| ApiError::Unauthorized(INVALID))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = state.config.jwt_leeway_secs;
    // `exp` is checked below, so that a token without one is accepted.
    validation.validate_exp = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map_err(|_| ApiError::Unauthorized(INVALID))?;
    check_times(
        &claims,
        dispatch_model::record::now_ms() / 1000,
        secs(state.config.jwt_max_age_secs),
        secs(state.config.jwt_leeway_secs),
    )?;
    Ok(Principal {
        account: app.account,
        application_id: Some(app_id),
    })
}

/// The time rules of a token, in whole seconds. Claims are whatever the
/// client sent, so every sum saturates: an `iat` of `i64::MIN` is very
/// old, not recent, and an `exp` of `i64::MAX` is far off, not past.
fn check_times(claims: &Claims, now: i64, max_age: i64, leeway: i64) -> ApiResult<()> {
    let iat = claims
        .iat
        .ok_or(ApiError::Unauthorized("The token needs an `iat` claim."))?;
    if iat > now.saturating_add(leeway) {
        return Err(ApiError::Unauthorized(
            "The token was issued in the future.",
        ));
    }
    if now.saturating_sub(iat) > max_age.saturating_add(leeway) {
        return Err(ApiError::Unauthorized("The token is too old."));
    }
    if let Some(exp) = claims.exp
        && exp.saturating_add(leeway) < now
    {
        return Err(ApiError::Unauthorized("The token has expired."));
    }
    Ok(())
}

/// A setting in seconds as the signed seconds of JWT claims.
fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: Option<i64>, exp: Option<i64>) -> Claims {
        Claims {
            application_id: None,
            iat,
            exp,
        }
    }

    #[test]
    fn token_times() {
        let now = 1_000_000;
        let ok = |c: Claims| check_times(&c, now, 900, 60).is_ok();
        assert!(ok(claims(Some(now), None)));
        assert!(ok(claims(Some(now - 900), None)));
        assert!(ok(claims(Some(now + 60), None)), "skew allowed");
        assert!(!ok(claims(None, None)), "iat required");
        assert!(!ok(claims(Some(now + 61), None)), "future");
        assert!(!ok(claims(Some(now - 961), None)), "too old");
        assert!(ok(claims(Some(now - 10), Some(now + 50))));
        assert!(!ok(claims(Some(now - 100), Some(now - 61))), "expired");
    }

    #[test]
    fn token_times_at_the_extremes() {
        let now = 1_000_000;
        let check = |c: Claims| check_times(&c, now, 900, 60).map_err(|e| e.to_string());
        let too_old = Err("unauthorized: The token is too old.".to_owned());
        let future = Err("unauthorized: The token was issued in the future.".to_owned());
        let expired = Err("unauthorized: The token has expired.".to_owned());
        assert_eq!(check(claims(Some(i64::MIN), None)), too_old);
        assert_eq!(check(claims(Some(i64::MIN + 1), None)), too_old);
        assert_eq!(check(claims(Some(i64::MAX), None)), future);
        assert_eq!(check(claims(Some(now), Some(i64::MAX))), Ok(()));
        assert_eq!(check(claims(Some(now), Some(i64::MIN))), expired);
        assert_eq!(check(claims(Some(i64::MIN), Some(i64::MAX))), too_old);
        // The settings at their extremes too: no rule wraps into its opposite.
        let lenient = |c: Claims| check_times(&c, now, i64::MAX, i64::MAX).is_ok();
        assert!(lenient(claims(Some(i64::MIN), None)));
        assert!(lenient(claims(Some(i64::MAX), Some(i64::MAX))));
        for clock in [i64::MIN, i64::MAX] {
            let c = claims(Some(now), Some(now));
            assert!(check_times(&c, clock, 900, 60).is_err(), "now = {clock}");
        }
    }
}
