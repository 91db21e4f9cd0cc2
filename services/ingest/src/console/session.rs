//! Console sessions: signing in with an account's `api_key` and
//! `api_secret` (or the operator token), the session cookie, and the CSRF
//! tokens of forms.
//!
//! - **The session** is a random 256-bit token in an `HttpOnly`,
//!   `SameSite=Strict` cookie scoped to `/console` (`Secure` when
//!   `public_url` is https). Redis keeps it under the token's SHA-256, so
//!   a copy of Redis holds no usable session, for
//!   `console_session_ttl_secs` from the sign-in; signing out deletes it.
//! - **CSRF.** Each session has a token of its own, a hidden field of
//!   every form that changes something, compared in constant time. The
//!   sign-in form, before any session exists, is a double submit: its
//!   token is in a short-lived cookie and in the form, and both must match.
//! - **Sign-ins** are limited to `console_sign_ins_per_min` per account
//!   and per client address (GCRA in Redis, as the API's rates), counted
//!   before the secret is checked, so that guessing costs the same whether
//!   it succeeds or not.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Page;
use crate::accounts::sha256_hex;
use crate::state::AppState;

/// The session cookie.
pub const COOKIE: &str = "dispatch_console";
/// The sign-in form's CSRF cookie.
pub const FORM_COOKIE: &str = "dispatch_console_form";
/// How long a sign-in form stays valid.
const FORM_TTL_SECS: u64 = 3_600;

/// What a session is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The account signed in; `None` for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default)]
    pub operator: bool,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    pub created_at_ms: i64,
}

/// A random token, URL-safe.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name`, if the request sent it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, under `/console`;
/// `Secure` when the console is served over https; `max_age` 0 removes it.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The sign-in form's token: the one its cookie holds, or a new one (with
/// the cookie to set).
pub fn form_token(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, FORM_COOKIE).filter(|t| t.len() == 43) {
        Some(t) => (t.to_owned(), None),
        None => {
            let t = token();
            let set = set_cookie(state, FORM_COOKIE, &t, FORM_TTL_SECS);
            (t, Some(set))
        }
    }
}

/// Whether a sign-in form's token matches its cookie.
pub fn form_token_ok(headers: &HeaderMap, sent: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|t| same(t, sent))
}

/// Stores a new session; returns the cookie that carries it.
pub async fn start(state: &AppState, session: &Session) -> Result<HeaderValue, Page> {
    let token = token();
    let ttl = state.config.console_session_ttl_secs;
    redis::cmd("SET")
        .arg(state.keys.console_session(&sha256_hex(&token)))
        .arg(serde_json::to_string(session).unwrap_or_default())
        .arg("EX")
        .arg(ttl)
        .exec_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    Ok(set_cookie(state, COOKIE, &token, ttl))
}

/// Ends the request's session, if any; returns the cookie that removes it.
pub async fn end(state: &AppState, headers: &HeaderMap) -> Result<HeaderValue, Page> {
    if let Some(token) = cookie(headers, COOKIE) {
        redis::cmd("DEL")
            .arg(state.keys.console_session(&sha256_hex(token)))
            .exec_async(&mut state.redis())
            .await
            .map_err(Page::unavailable)?;
    }
    Ok(set_cookie(state, COOKIE, "", 0))
}

/// The request's session, if it has a live one.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, Page> {
    let Some(token) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let raw: Option<String> = redis::cmd("GET")
        .arg(state.keys.console_session(&sha256_hex(token)))
        .query_async(&mut state.redis())
        .await
        .map_err(Page::unavailable)?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Counts a sign-in of `who` (`account:…`, `addr:…`); `false` when over
/// the limit. A Redis that does not answer refuses (a sign-in can wait,
/// and an unlimited one would let guesses through).
pub async fn admit_sign_in(state: &AppState, who: &str) -> Result<bool, Page> {
    let per_min = state.config.console_sign_ins_per_min;
    let Some(rate) =
        dispatch_infra::rate::Gcra::per_sec(f64::from(per_min) / 60.0, per_min, per_min)
    else {
        return Ok(true);
    };
    let key = state.keys.console_sign_in_rate(who);
    let wait = dispatch_infra::rate::take(&state.redis, &key, rate, std::time::Duration::ZERO)
        .await
        .map_err(Page::unavailable)?;
    Ok(wait.is_zero())
}

/// The client's address as the connection shows it, for its sign-in
/// limit: an IPv6 address by its /64, which one host usually holds whole.
/// (Behind a proxy, every client has the proxy's address, and shares its
/// limit.)
pub fn client_address(info: Option<&ConnectInfo<SocketAddr>>) -> String {
    match info.map(|ConnectInfo(addr)| addr.ip().to_canonical()) {
        Some(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_limited_by_host_and_ipv6_by_its_64() {
        let of = |a: &str| client_address(Some(&ConnectInfo(a.parse().expect("addr"))));
        assert_eq!(of("192.0.2.7:4000"), "192.0.2.7");
        assert_eq!(of("[2001:db8:1:2:aaaa::1]:4000"), "2001:db8:1:2::/64");
        assert_eq!(of("[2001:db8:1:2:bbbb::9]:1"), "2001:db8:1:2::/64");
        assert_eq!(of("[::ffff:192.0.2.7]:4000"), "192.0.2.7");
    }
}

/// An account's signed-in session: a handler's argument that sends
/// whoever has none to the sign-in page.
pub struct Account {
    pub api_key: String,
    pub session: Session,
}

impl FromRequestParts<AppState> for Account {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // A refresh by htmx is told to load the page itself, not to put
        // the sign-in form in place of the figures.
        let away = |to: &'static str| {
            if parts.headers.contains_key("hx-request") {
                ([("hx-redirect", to)], "").into_response()
            } else {
                Redirect::to(to).into_response()
            }
        };
        match current(state, &parts.headers).await {
            Ok(Some(session)) => match session.account.clone() {
                Some(api_key) => Ok(Account { api_key, session }),
                None => Err(away("/console/operator")),
            },
            Ok(None) => Err(away("/console/login")),
            Err(page) => Err(page.into_response()),
        }
    }
}

impl Account {
    /// Whether a form's CSRF token is this session's.
    pub fn csrf_ok(&self, sent: &str) -> bool {
        same(&self.session.csrf, sent)
    }

    /// The navigation of this account's pages.
    pub fn nav(&self) -> super::Nav<'_> {
        super::Nav {
            who: &self.api_key,
            csrf: &self.session.csrf,
            operator: false,
        }
    }
}
