//! Twilio's error codes and what they mean to us.
//!
//! Twilio answers a refused send with a JSON error body
//! (`{"code": 21211, "message": "…", "more_info": "…", "status": 400}`,
//! <https://www.twilio.com/docs/usage/twilios-response>)
//! and reports a failed delivery with `ErrorCode` in the status callback
//! (<https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks>).
//! Both carry codes from Twilio's error dictionary
//! (<https://www.twilio.com/docs/api/errors>); [`TABLE`] maps the ones a
//! messaging send can meet to the spec's codes (1000–1382), and says
//! whether a send refused with it may succeed if retried.
//!
//! Codes not in the table: a refused send is error 1020 with Twilio's own
//! message (the request was wrong in a way we do not know better), a
//! failed delivery error 1330 (unknown).

use std::time::Duration;

use dispatch_model::record::MessageError;
use serde::Deserialize;

use crate::SendError;

/// Whether a send refused with a code may succeed if retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reject the message: retrying sends the same request to the same
    /// refusal.
    Permanent,
    /// Retry with backoff: a rate or queue limit that passes.
    Transient,
}

/// One Twilio error code and its meaning to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub twilio: u32,
    /// The spec's code (1000–1382).
    pub spec: u32,
    pub class: Class,
    /// Twilio's title of the error, as its page gives it.
    pub title: &'static str,
}

use Class::{Permanent as P, Transient as T};

const fn row(twilio: u32, spec: u32, class: Class, title: &'static str) -> Row {
    Row {
        twilio,
        spec,
        class,
        title,
    }
}

/// Twilio's codes we know, each following its page
/// `https://www.twilio.com/docs/api/errors/{code}` (cited per row).
pub const TABLE: &[Row] = &[
    // https://www.twilio.com/docs/api/errors/11751
    row(
        11751,
        1381,
        P,
        "Media Message - Media exceeds messaging provider size limit",
    ),
    // https://www.twilio.com/docs/api/errors/20003: wrong account SID or
    // auth token. Our configuration is wrong; retrying will not fix it.
    row(20003, 1060, P, "Authentication failed"),
    // https://www.twilio.com/docs/api/errors/20429
    row(20429, 1000, T, "Too Many Requests"),
    // https://www.twilio.com/docs/api/errors/21211
    row(21211, 1170, P, "Invalid 'To' Phone Number"),
    // https://www.twilio.com/docs/api/errors/21408
    row(
        21408,
        1140,
        P,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
    ),
    // https://www.twilio.com/docs/api/errors/21602 ("The Body OR MediaURL
    // parameter is required")
    row(21602, 1010, P, "Message body is required"),
    // https://www.twilio.com/docs/api/errors/21603
    row(
        21603,
        1010,
        P,
        "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    ),
    // https://www.twilio.com/docs/api/errors/21604
    row(21604, 1170, P, "A 'To' phone number is required"),
    // https://www.twilio.com/docs/api/errors/21606
    row(
        21606,
        1120,
        P,
        "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account",
    ),
    // https://www.twilio.com/docs/api/errors/21610: the user replied STOP.
    row(21610, 1240, P, "Attempt to send to unsubscribed recipient"),
    // https://www.twilio.com/docs/api/errors/21611: the sender's queue is
    // full (more than 10 hours of messages); it drains.
    row(
        21611,
        1000,
        T,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
    // https://www.twilio.com/docs/api/errors/21612
    row(
        21612,
        1250,
        P,
        "Message cannot be sent with the current combination of 'To' and/or 'From' parameters",
    ),
    // https://www.twilio.com/docs/api/errors/21614
    row(21614, 1310, P, "'To' number is not a valid mobile number"),
    // https://www.twilio.com/docs/api/errors/21617
    row(
        21617,
        1090,
        P,
        "The concatenated message body exceeds the 1600 character limit",
    ),
    // https://www.twilio.com/docs/api/errors/21619
    row(
        21619,
        1010,
        P,
        "A text message body or media urls must be specified",
    ),
    // https://www.twilio.com/docs/api/errors/21620
    row(21620, 1380, P, "Invalid media URL(s)"),
    // https://www.twilio.com/docs/api/errors/30001: the sender's queue
    // overflowed; a later attempt gets a place in it.
    row(30001, 1000, T, "Queue overflow"),
    // https://www.twilio.com/docs/api/errors/30002
    row(30002, 1060, P, "Account suspended"),
    // https://www.twilio.com/docs/api/errors/30003
    row(30003, 1180, P, "Unreachable destination handset"),
    // https://www.twilio.com/docs/api/errors/30004
    row(30004, 1280, P, "Message blocked"),
    // https://www.twilio.com/docs/api/errors/30005
    row(30005, 1190, P, "Unknown destination handset"),
    // https://www.twilio.com/docs/api/errors/30006
    row(30006, 1310, P, "Landline or unreachable carrier"),
    // https://www.twilio.com/docs/api/errors/30007
    row(30007, 1210, P, "Message filtered"),
    // https://www.twilio.com/docs/api/errors/30008
    row(30008, 1330, P, "Unknown error"),
    // https://www.twilio.com/docs/api/errors/63003
    row(63003, 1300, P, "Channel could not find To address"),
    // https://www.twilio.com/docs/api/errors/63007
    row(
        63007,
        1120,
        P,
        "Twilio could not find a Channel with the specified 'From' address",
    ),
    // https://www.twilio.com/docs/api/errors/63016
    row(
        63016,
        1340,
        P,
        "Failed to send freeform message because you are outside the allowed window",
    ),
    // https://www.twilio.com/docs/api/errors/63018 (WhatsApp's 429 and
    // 471, per https://www.twilio.com/docs/whatsapp/api/error-code-mapping)
    row(63018, 1000, T, "Rate limit exceeded for Channel"),
    // https://www.twilio.com/docs/api/errors/63024
    row(63024, 1300, P, "Invalid message recipient"),
];

/// The row of Twilio's `code`, if we know it.
pub fn lookup(code: u32) -> Option<&'static Row> {
    TABLE.iter().find(|r| r.twilio == code)
}

/// Twilio's page about `code`.
pub fn page(code: u32) -> String {
    format!("https://www.twilio.com/docs/api/errors/{code}")
}

/// Twilio's error body
/// (<https://www.twilio.com/docs/usage/twilios-response>).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What a send answered with HTTP `status` (4xx) and `body` means: a
/// transient failure for the rate and queue limits, a permanent one with
/// the spec's code otherwise.
pub fn refused(status: u16, body: Option<ErrorBody>, retry_after: Option<Duration>) -> SendError {
    let body = body.unwrap_or_default();
    let message = body.message.unwrap_or_default();
    let Some(code) = body.code else {
        return without_code(status, &message);
    };
    let reason = |title: &str| {
        let text = if message.is_empty() { title } else { &message };
        format!("{text} (Twilio error {code}, {})", page(code))
    };
    match lookup(code) {
        Some(row) if row.class == Class::Transient => SendError::Transient {
            reason: reason(row.title),
            retry_after,
        },
        Some(row) => SendError::permanent(row.spec, reason(row.title)),
        None if status == 401 || status == 403 => SendError::permanent(1060, reason("Forbidden")),
        None => SendError::permanent(1020, reason("The request was refused")),
    }
}

/// A 4xx without Twilio's error body (a proxy's answer, say).
fn without_code(status: u16, message: &str) -> SendError {
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    if status == 401 || status == 403 {
        SendError::permanent(
            1060,
            format!("Twilio refused our credentials (HTTP {status}){detail}"),
        )
    } else {
        SendError::permanent(
            1020,
            format!("Twilio refused the message (HTTP {status}){detail}"),
        )
    }
}

/// The error of a failed delivery, from the status callback's
/// `ErrorCode` (absent or unknown: 1330, unknown).
pub fn delivery_error(code: Option<u32>) -> MessageError {
    match code {
        Some(code) => match lookup(code) {
            Some(row) => MessageError {
                code: row.spec,
                reason: format!("{} (Twilio error {code})", row.title),
            },
            None => MessageError {
                code: 1330,
                reason: format!("Undeliverable (Twilio error {code}, {})", page(code)),
            },
        },
        None => MessageError {
            code: 1330,
            reason: "Undeliverable".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: u32, message: &str) -> Option<ErrorBody> {
        Some(ErrorBody {
            code: Some(code),
            message: Some(message.into()),
        })
    }

    #[test]
    fn the_table_has_one_row_per_code_and_only_spec_codes() {
        for (i, row) in TABLE.iter().enumerate() {
            assert!(
                TABLE[i + 1..].iter().all(|r| r.twilio != row.twilio),
                "{} twice",
                row.twilio
            );
            assert!((1000..=1382).contains(&row.spec), "{row:?}");
            assert!(!row.title.is_empty());
        }
    }

    #[test]
    fn the_codes_the_brief_names_map_as_documented() {
        let expected = [
            (21211, 1170, P),
            (21614, 1310, P),
            (21610, 1240, P),
            (21612, 1250, P),
            (21408, 1140, P),
            (21617, 1090, P),
            (21602, 1010, P),
            (63016, 1340, P),
            (63003, 1300, P),
            (63024, 1300, P),
            (20003, 1060, P),
            (30003, 1180, P),
            (30004, 1280, P),
            (30005, 1190, P),
            (30006, 1310, P),
            (30007, 1210, P),
            (30008, 1330, P),
            (21606, 1120, P),
            (20429, 1000, T),
            (30001, 1000, T),
        ];
        for (twilio, spec, class) in expected {
            let row = lookup(twilio).expect("known code");
            assert_eq!((row.spec, row.class), (spec, class), "{twilio}");
        }
        assert!(lookup(99999).is_none());
    }

    #[test]
    fn refused_sends_become_spec_errors() {
        match refused(400, body(21211, "The 'To' number 1 is not valid."), None) {
            SendError::Permanent(e) => {
                assert_eq!(e.code, 1170);
                assert!(
                    e.reason.contains("The 'To' number 1 is not valid."),
                    "{e:?}"
                );
                assert!(e.reason.contains("21211"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            refused(429, body(20429, "Too Many Requests"), wait),
            SendError::Transient {
                reason: format!("Too Many Requests (Twilio error 20429, {})", page(20429)),
                retry_after: wait,
            }
        );
        let unknown = refused(400, body(21999, "Something new"), None);
        assert!(
            matches!(&unknown, SendError::Permanent(e) if e.code == 1020 && e.reason.contains("Something new")),
            "{unknown:?}"
        );
        let forbidden = refused(403, body(20999, ""), None);
        assert!(matches!(forbidden, SendError::Permanent(e) if e.code == 1060));
        assert!(matches!(refused(401, None, None), SendError::Permanent(e) if e.code == 1060));
        assert!(matches!(refused(400, None, None), SendError::Permanent(e) if e.code == 1020));
        // A known code without a message still says something.
        let bare = refused(400, body(21610, ""), None);
        assert!(
            matches!(&bare, SendError::Permanent(e) if e.code == 1240 && e.reason.starts_with("Attempt to send")),
            "{bare:?}"
        );
    }

    #[test]
    fn delivery_errors() {
        assert_eq!(delivery_error(Some(30003)).code, 1180);
        assert_eq!(delivery_error(Some(30007)).code, 1210);
        // Transient at submit, but a delivery that failed has failed.
        assert_eq!(delivery_error(Some(30001)).code, 1000);
        let unknown = delivery_error(Some(12345));
        assert_eq!(unknown.code, 1330);
        assert!(unknown.reason.contains("12345"));
        assert_eq!(delivery_error(None).code, 1330);
    }
}
