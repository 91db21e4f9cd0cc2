//! Vonage's error answers, as our three outcomes.
//!
//! Vonage answers a refused send with an RFC 7807 problem
//! (<https://developer.vonage.com/en/api/messages>, "Send a message",
//! responses 401, 402, 422, 429, 500):
//!
//! ```json
//! {"type":"https://developer.vonage.com/api-errors/messages#1150","title":"Invalid params",
//!  "detail":"The value of one or more parameters is invalid.","instance":"bf0ca0bf…",
//!  "invalid_parameters":[{"name":"messenger.tag","reason":"invalid value"}]}
//! ```
//!
//! (older answers link `https://developer.nexmo.com/api-errors/messages-olympus#1120`).
//! The anchor of `type` is one of the Messages error codes of
//! <https://developer.vonage.com/en/api-errors/messages> when it is a
//! number in 1000–1382, which are also the codes of our spec
//! (`x-errors`): those are used as they are. The other anchors
//! (`#unauthorized`, `#invalid-json`, `#low-balance`, `#throttled`) say
//! what went wrong by the HTTP status.
//!
//! [`CODES`] classifies every code: transient ones (the errors page says
//! "retry later" or describes a passing condition) are retried by the
//! sender, the rest fail the message over at once.

use std::time::Duration;

use dispatch_model::record::MessageError;
use serde::Deserialize;

use crate::SendError;

/// Whether an error may go away if the same send is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Permanent,
    Transient,
}

use Class::{Permanent as P, Transient as T};

/// Every Messages error code (1000–1382) with its title, as listed on
/// <https://developer.vonage.com/en/api-errors/messages> and in our spec's
/// `x-errors`, and whether retrying may help.
pub const CODES: &[(u32, &str, Class)] = &[
    (1000, "Throttled", T),
    (1010, "Missing params", P),
    (1020, "Invalid params", P),
    (1021, "Invalid tag", P),
    (1022, "Invalid template", P),
    (1030, "Internal error", T),
    (1040, "Invalid message", P),
    (1050, "Number barred", P),
    (1060, "Partner account barred", P),
    (1070, "Partner quota exceeded", P),
    (1080, "Account not enabled for REST", P),
    (1090, "Message too long", P),
    (1100, "Communication failed", T),
    (1120, "Illegal sender address - rejected", P),
    (1130, "Invalid TTL", P),
    (1140, "Facility not allowed", P),
    (1150, "Invalid message class", P),
    (1160, "Non white-listed destination", P),
    (1170, "Invalid or missing MSISDN param", P),
    // "This is a temporary failure, retry later for a positive result."
    (1180, "Absent subscriber temporary", T),
    (1190, "Absent subscriber permanent", P),
    (1200, "Portability error", P),
    (1210, "Anti-spam rejection", P),
    // "If status is rejected, this is a temporary failure; retry later."
    (1220, "Handset busy", T),
    // "This is a temporary failure, retry later for a positive result."
    (1230, "Network error", T),
    (1240, "Illegal number", P),
    // Throttling per destination, like 1000.
    (1241, "Too many send requests", T),
    (1250, "Unroutable", P),
    (1260, "Destination unreachable", P),
    (1270, "Subscriber age restriction", P),
    (1280, "Number blocked by carrier", P),
    (1290, "Pre-paid - insufficient funds", P),
    (1300, "Not part of the provider network", P),
    (1310, "Not suitable device", P),
    (1320, "Message already sent", P),
    (1330, "Unknown", P),
    // "Please try sending your message in a few minutes time."
    (1331, "Provider error", T),
    (1340, "Outside of the allowed window", P),
    (1350, "Phone matching fee not paid", P),
    (1360, "TTL was activated", P),
    (1370, "Expired access token", P),
    (1380, "Invalid resource", P),
    (1381, "Resource size is too large", P),
    (1382, "Resource type is invalid", P),
];

/// The range of the Messages error codes, which is our spec's.
pub const RANGE: std::ops::RangeInclusive<u32> = 1000..=1382;

/// The title and class of `code`; codes in [`RANGE`] that the errors page
/// does not list are permanent.
pub fn lookup(code: u32) -> (&'static str, Class) {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(("Error", Class::Permanent), |(_, title, class)| {
            (title, *class)
        })
}

/// Whether retrying a send refused with `code` may help.
pub fn is_transient(code: u32) -> bool {
    lookup(code).1 == Class::Transient
}

/// The Messages error code a problem's `type` URL links to
/// (`…/api-errors/messages#1150` → 1150), when it is one of [`RANGE`].
pub fn code_from_type(type_url: &str) -> Option<u32> {
    let (_, anchor) = type_url.rsplit_once('#')?;
    spec_code(anchor)
}

/// `text` as a code of [`RANGE`].
pub fn spec_code(text: &str) -> Option<u32> {
    let code = text.trim().parse::<u32>().ok()?;
    RANGE.contains(&code).then_some(code)
}

/// An RFC 7807 problem as Vonage writes it. Every field is optional: a
/// proxy in between may answer with anything.
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<serde_json::Value>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub invalid_parameters: Option<Vec<InvalidParameter>>,
}

/// One entry of `invalid_parameters`.
#[derive(Debug, Default, Deserialize)]
pub struct InvalidParameter {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Problem {
    /// `body` as a problem; an empty one when it is not JSON.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The Messages error code: the anchor of `type`, or a numeric
    /// `title` (as the status webhook's `error` writes it).
    pub fn code(&self) -> Option<u32> {
        self.kind
            .as_deref()
            .and_then(code_from_type)
            .or_else(|| self.title_text().as_deref().and_then(spec_code))
    }

    /// `title`, whether Vonage wrote it as a string or a number.
    pub fn title_text(&self) -> Option<String> {
        match self.title.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A one-line reason: title, detail and the invalid parameters,
    /// whichever are there; `fallback` when none is.
    pub fn reason(&self, fallback: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        let title = self.title_text().filter(|t| !t.is_empty());
        if let Some(title) = &title {
            parts.push(title.clone());
        }
        if let Some(detail) = self
            .detail
            .as_ref()
            .filter(|d| !d.is_empty() && Some(*d) != title.as_ref())
        {
            parts.push(detail.clone());
        }
        let mut reason = if parts.is_empty() {
            fallback.to_owned()
        } else {
            parts.join(": ")
        };
        let invalid: Vec<String> = self
            .invalid_parameters
            .iter()
            .flatten()
            .filter_map(|p| {
                let name = p.name.as_deref()?;
                Some(match p.reason.as_deref() {
                    Some(why) => format!("{name} {why}"),
                    None => name.to_owned(),
                })
            })
            .collect();
        if !invalid.is_empty() {
            reason.push_str(&format!(" ({})", invalid.join("; ")));
        }
        reason
    }
}

/// A refused send (any status but 2xx), as a [`SendError`].
///
/// - 401/403: our credentials → 1060, permanent.
/// - 402 (`#low-balance`): the account has no credit → 1070, permanent.
/// - 429 (`#1000`, throttled), 408 and 5xx: transient, after
///   `Retry-After` when given.
/// - anything else (422, 400, …): the problem's code, or 1020; transient
///   or permanent by [`CODES`].
pub fn from_response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    let problem = Problem::parse(body);
    let http = format!("HTTP {status}");
    let transient = |reason: String| SendError::Transient {
        reason,
        retry_after,
    };
    match status {
        401 | 403 => SendError::Permanent(MessageError {
            code: 1060,
            reason: format!("Vonage refused our credentials: {}", problem.reason(&http)),
        }),
        402 => SendError::Permanent(MessageError {
            code: 1070,
            reason: problem.reason("Partner quota exceeded"),
        }),
        408 | 429 => transient(problem.reason(&http)),
        s if s >= 500 => transient(problem.reason(&http)),
        _ => {
            let code = problem.code().unwrap_or(1020);
            let reason = problem.reason(lookup(code).0);
            if is_transient(code) {
                transient(reason)
            } else {
                SendError::Permanent(MessageError { code, reason })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: &SendError) -> Option<u32> {
        match e {
            SendError::Permanent(e) => Some(e.code),
            SendError::Transient { .. } => None,
        }
    }

    #[test]
    fn the_table_is_the_spec_list_sorted_and_in_range() {
        assert_eq!(CODES.len(), 44);
        assert!(CODES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(CODES.iter().all(|(c, _, _)| RANGE.contains(c)));
        let transient: Vec<u32> = CODES
            .iter()
            .filter(|(_, _, class)| *class == Class::Transient)
            .map(|(c, _, _)| *c)
            .collect();
        assert_eq!(transient, [1000, 1030, 1100, 1180, 1220, 1230, 1241, 1331]);
        assert!(!is_transient(1300));
        assert!(!is_transient(1330));
        assert!(!is_transient(1022));
        assert_eq!(lookup(1300).0, "Not part of the provider network");
        assert_eq!(lookup(1111), ("Error", Class::Permanent));
    }

    #[test]
    fn codes_come_from_the_type_anchor_or_a_numeric_title() {
        assert_eq!(
            code_from_type("https://developer.vonage.com/api-errors/messages#1150"),
            Some(1150)
        );
        assert_eq!(
            code_from_type("https://developer.nexmo.com/api-errors/messages-olympus#1120"),
            Some(1120)
        );
        for not_ours in [
            "https://developer.vonage.com/api-errors#unauthorized",
            "https://developer.nexmo.com/api-errors#invalid-json",
            "https://developer.nexmo.com/api-errors/messages-olympus#110",
            "https://developer.nexmo.com/api-errors/messages-olympus#1400",
            "https://developer.vonage.com/api-errors/messages",
            "#",
            "",
            "#99999999999999999999",
        ] {
            assert_eq!(code_from_type(not_ours), None, "{not_ours}");
        }
        let numeric: Problem = serde_json::from_str(r#"{"title":1260}"#).expect("json");
        assert_eq!(numeric.code(), Some(1260));
        let text: Problem = serde_json::from_str(r#"{"title":"1330"}"#).expect("json");
        assert_eq!(text.code(), Some(1330));
        let words: Problem = serde_json::from_str(r#"{"title":"Invalid params"}"#).expect("json");
        assert_eq!(words.code(), None);
    }

    #[test]
    fn statuses_and_codes_become_outcomes() {
        let problem = |anchor: &str, title: &str| {
            format!(
                r#"{{"type":"https://developer.vonage.com/api-errors/messages#{anchor}","title":"{title}","detail":"d","instance":"i"}}"#
            )
            .into_bytes()
        };
        let e = from_response(
            422,
            None,
            &problem("1300", "Not part of the provider network"),
        );
        assert_eq!(code(&e), Some(1300));
        assert!(
            e.to_string()
                .contains("Not part of the provider network: d")
        );
        // Our codes by their anchor, whatever the status.
        assert_eq!(
            code(&from_response(400, None, &problem("1170", "x"))),
            Some(1170)
        );
        // Codes outside the spec's range, or none: 1020.
        assert_eq!(
            code(&from_response(422, None, &problem("1400", "x"))),
            Some(1020)
        );
        assert_eq!(code(&from_response(422, None, b"not json")), Some(1020));
        // A transient code in a 4xx is retried.
        assert_eq!(code(&from_response(422, None, &problem("1230", "x"))), None);
        // Credentials.
        let unauthorized = br#"{"type":"https://developer.vonage.com/api-errors#unauthorized","title":"Unauthorized","detail":"You did not provide correct credentials."}"#;
        for status in [401, 403] {
            let e = from_response(status, None, unauthorized);
            assert_eq!(code(&e), Some(1060));
        }
        assert_eq!(code(&from_response(401, None, b"")), Some(1060));
        assert_eq!(code(&from_response(402, None, b"")), Some(1070));
        // Throttling and server errors, with Retry-After.
        let wait = Some(Duration::from_secs(3));
        for status in [408, 429, 500, 502, 503, 504] {
            match from_response(status, wait, &problem("1000", "Throttled")) {
                SendError::Transient { retry_after, .. } => assert_eq!(retry_after, wait),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn reasons_name_the_invalid_parameters() {
        let problem = Problem::parse(
            br#"{"type":"https://developer.vonage.com/api-errors/messages#1020","title":"Invalid params","detail":"The value of one or more parameters is invalid.","invalid_parameters":[{"name":"messenger.tag","reason":"invalid value"},{"name":"to"}]}"#,
        );
        assert_eq!(
            problem.reason("x"),
            "Invalid params: The value of one or more parameters is invalid. (messenger.tag invalid value; to)"
        );
        assert_eq!(Problem::default().reason("fallback"), "fallback");
        let same = Problem::parse(br#"{"title":"Throttled","detail":"Throttled"}"#);
        assert_eq!(same.reason("x"), "Throttled");
    }
}
