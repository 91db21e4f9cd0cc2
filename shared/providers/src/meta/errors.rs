//! Meta's error codes, and what each means for a message: which of the
//! spec's codes (1000–1382) it becomes, and whether a send that got it may
//! succeed if retried.
//!
//! Meta reports an error either synchronously, as the Graph API error of
//! the send (`{"error": {"message", "type", "code", "error_subcode",
//! "error_data": {"details"}, "fbtrace_id"}}`), or later, in the `errors`
//! of a WhatsApp `failed` status. Both are read through the one [`TABLE`],
//! so a code means the same whichever way it came.
//!
//! The rows follow these pages, named by their key in each row's comment:
//!
//! - `WA`: WhatsApp Cloud API error codes,
//!   <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
//! - `MSG`: Messenger Platform error codes,
//!   <https://developers.facebook.com/docs/messenger-platform/error-codes>
//! - `GRAPH`: Graph API error handling,
//!   <https://developers.facebook.com/docs/graph-api/guides/error-handling>

use std::time::Duration;

use dispatch_model::record::MessageError;
use serde_json::Value;

use crate::SendError;

/// One of Meta's error codes (or a range of them, or one code with one
/// subcode) and what it means for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The first and last codes of the row (equal but for ranges).
    pub first: i64,
    pub last: i64,
    /// Only with this `error_subcode`; rows with a subcode win over rows
    /// without one.
    pub subcode: Option<i64>,
    /// The spec's code for a message that failed with this error.
    pub spec: u32,
    /// Whether a send answered with it may succeed later (rate limits,
    /// outages): retried with backoff instead of failing the message.
    pub transient: bool,
    /// Meta's title, for a reason when Meta gives no message.
    pub title: &'static str,
}

impl Row {
    fn matches(&self, code: i64) -> bool {
        (self.first..=self.last).contains(&code)
    }
}

const fn permanent(code: i64, spec: u32, title: &'static str) -> Row {
    Row {
        first: code,
        last: code,
        subcode: None,
        spec,
        transient: false,
        title,
    }
}

const fn transient(code: i64, spec: u32, title: &'static str) -> Row {
    Row {
        transient: true,
        ..permanent(code, spec, title)
    }
}

const fn subcode(code: i64, subcode: i64, spec: u32, title: &'static str) -> Row {
    Row {
        subcode: Some(subcode),
        ..permanent(code, spec, title)
    }
}

const fn range(first: i64, last: i64, spec: u32, title: &'static str) -> Row {
    Row {
        last,
        ..permanent(first, spec, title)
    }
}

/// Every code we know. Transient rows carry the spec code a WhatsApp
/// `failed` status with that error becomes (the message did fail then):
/// 1000 for rate limits, 1241 for the pair rate limit, 1331 for outages,
/// 1330 for Meta's "something went wrong".
pub static TABLE: &[Row] = &[
    // Graph API codes, shared by both products.
    transient(1, 1331, "API Unknown"),                // GRAPH, WA
    transient(2, 1331, "API Service"),                // GRAPH, WA, MSG
    permanent(3, 1140, "API Method"),                 // GRAPH, WA
    transient(4, 1000, "API Too Many Calls"),         // GRAPH, WA
    permanent(10, 1060, "Permission Denied"),         // GRAPH, WA
    transient(17, 1000, "API User Too Many Calls"),   // GRAPH
    transient(32, 1000, "Page-level throttling"),     // GRAPH
    permanent(100, 1020, "Invalid parameter"),        // WA, MSG
    permanent(190, 1370, "Access token has expired"), // GRAPH, WA, MSG
    range(200, 299, 1060, "API Permission"),          // GRAPH, WA
    permanent(368, 1210, "Temporarily blocked for policies violations"), // WA
    transient(613, 1000, "Calls to this API have exceeded the rate limit"), // GRAPH, MSG
    // Messenger Send API.
    subcode(10, 2018278, 1340, "Message sent outside of allowed window"), // MSG
    subcode(10, 2018065, 1340, "Message sent outside of allowed window"), // MSG
    subcode(100, 2018001, 1300, "No matching user found"),                // MSG
    subcode(100, 2018047, 1380, "Upload attachment failure"),             // MSG
    subcode(
        100,
        2018109,
        1381,
        "Attachment size exceeds allowable limit",
    ), // MSG
    permanent(551, 1300, "This person isn't available right now"),        // MSG
    transient(1200, 1331, "Temporary send message failure"),              // MSG
    // WhatsApp Cloud API.
    permanent(470, 1340, "Re-engagement message"), // WA (older code of 131047)
    transient(80007, 1000, "Rate limit issues"),   // WA
    transient(130429, 1000, "Rate limit hit"),     // WA
    transient(131000, 1330, "Something went wrong"), // WA
    permanent(131005, 1060, "Access denied"),      // WA
    permanent(131008, 1010, "Required parameter is missing"), // WA
    permanent(131009, 1020, "Parameter value is not valid"), // WA
    transient(131016, 1331, "Service unavailable"), // WA
    permanent(131021, 1020, "Recipient cannot be sender"), // WA
    permanent(131026, 1300, "Message undeliverable"), // WA
    permanent(131030, 1160, "Recipient phone number not in allowed list"), // WA
    permanent(131031, 1060, "Account has been locked"), // WA
    permanent(131042, 1070, "Business eligibility payment issue"), // WA
    permanent(131045, 1060, "Incorrect certificate"), // WA
    permanent(131047, 1340, "Re-engagement message"), // WA
    transient(131048, 1210, "Spam rate limit hit"), // WA
    permanent(
        131049,
        1210,
        "Not delivered to maintain healthy ecosystem engagement",
    ), // WA
    permanent(131050, 1240, "User has stopped marketing messages"), // WA
    permanent(131051, 1020, "Unsupported message type"), // WA
    permanent(131052, 1380, "Media download error"), // WA
    permanent(131053, 1382, "Media upload error"), // WA
    transient(131056, 1241, "Pair rate limit hit"), // WA
    transient(131057, 1331, "Account in maintenance mode"), // WA
    permanent(132000, 1022, "Template param count mismatch"), // WA
    permanent(132001, 1022, "Template does not exist"), // WA
    permanent(132005, 1022, "Template hydrated text too long"), // WA
    permanent(132007, 1022, "Template format character policy violated"), // WA
    permanent(132012, 1022, "Template parameter format mismatch"), // WA
    permanent(132015, 1022, "Template is paused"), // WA
    permanent(132016, 1022, "Template is disabled"), // WA
    transient(133004, 1331, "Server temporarily unavailable"), // WA
    permanent(133010, 1060, "Phone number not registered"), // WA
    permanent(135000, 1020, "Generic user error"), // WA
];

/// The row for `code` (and `subcode`): the one naming that subcode, else
/// the one for the code alone.
pub fn lookup(code: i64, subcode: Option<i64>) -> Option<&'static Row> {
    let with_subcode = subcode.and_then(|s| {
        TABLE
            .iter()
            .find(|r| r.subcode == Some(s) && r.matches(code))
    });
    with_subcode.or_else(|| {
        TABLE
            .iter()
            .find(|r| r.subcode.is_none() && r.matches(code))
    })
}

/// A Graph API error object, or one entry of a status's `errors`, as far
/// as we read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphError {
    pub code: Option<i64>,
    pub subcode: Option<i64>,
    pub message: String,
    pub details: String,
}

impl GraphError {
    /// Reads an error object leniently: a field of the wrong type counts
    /// as absent. `error_data` is an object with `details` for messaging
    /// errors, and sometimes a plain string.
    pub fn read(error: &Value) -> Self {
        let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or_default();
        let message = match text("message") {
            "" => text("title"),
            m => m,
        };
        let details = match error.get("error_data") {
            Some(Value::String(s)) => s.as_str(),
            Some(data) => data
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            None => "",
        };
        Self {
            code: error.get("code").and_then(Value::as_i64),
            subcode: error.get("error_subcode").and_then(Value::as_i64),
            message: message.to_owned(),
            details: details.to_owned(),
        }
    }

    /// The error of a Graph API answer body, if it has one.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        value.get("error").filter(|e| e.is_object()).map(Self::read)
    }

    fn row(&self) -> Option<&'static Row> {
        self.code.and_then(|c| lookup(c, self.subcode))
    }

    /// Meta's message and details, for our `reason`.
    fn reason(&self, title: Option<&str>) -> String {
        let mut reason = if self.message.is_empty() {
            match (title, self.code) {
                (Some(t), _) => t.to_owned(),
                (None, Some(c)) => format!("Meta error {c}"),
                (None, None) => "Meta reported an error".to_owned(),
            }
        } else {
            self.message.clone()
        };
        if !self.details.is_empty() && !reason.contains(&self.details) {
            reason = format!("{reason}: {}", self.details);
        }
        reason
    }
}

/// What a failed send means, from Meta's HTTP status and answer body:
/// transient for 5xx, 429 and 408 whatever the code, and for the codes
/// the table marks so; else permanent with the table's spec code, 1060
/// for an unknown code on 401 or 403, 1020 for any other unknown 4xx.
pub fn send_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> SendError {
    let error = GraphError::from_body(body);
    let row = error.as_ref().and_then(GraphError::row);
    let reason = match &error {
        Some(e) => e.reason(row.map(|r| r.title)),
        None => format!("Meta answered HTTP {status}"),
    };
    if status >= 500 || status == 429 || status == 408 || row.is_some_and(|r| r.transient) {
        return SendError::Transient {
            reason,
            retry_after,
        };
    }
    let code = match row {
        Some(row) => row.spec,
        None if status == 401 || status == 403 => 1060,
        None => 1020,
    };
    SendError::Permanent(MessageError { code, reason })
}

/// The error of a WhatsApp `failed` status, from its `errors` array:
/// the table's spec code for the first error, 1330 (unknown) for a code
/// the table lacks or no error at all.
pub fn failed_status(errors: Option<&Value>) -> MessageError {
    let Some(first) = errors.and_then(Value::as_array).and_then(|e| e.first()) else {
        return MessageError {
            code: 1330,
            reason: "Undeliverable".into(),
        };
    };
    let error = GraphError::read(first);
    let row = error.row();
    MessageError {
        code: row.map_or(1330, |r| r.spec),
        reason: error.reason(row.map(|r| r.title)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(code: i64, subcode: Option<i64>) -> Vec<u8> {
        let mut error = json!({
            "message": format!("(#{code}) Something"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"details": "Some details"},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
        });
        if let Some(s) = subcode {
            error["error_subcode"] = json!(s);
        }
        serde_json::to_vec(&json!({ "error": error })).expect("json")
    }

    fn permanent_code(status: u16, code: i64, subcode: Option<i64>) -> Option<u32> {
        match send_error(status, &body(code, subcode), None) {
            SendError::Permanent(e) => Some(e.code),
            SendError::Transient { .. } => None,
        }
    }

    #[test]
    fn the_briefs_mappings() {
        let cases: &[(i64, Option<i64>, u32)] = &[
            (131047, None, 1340),
            (10, Some(2018278), 1340),
            (132000, None, 1022),
            (132001, None, 1022),
            (132005, None, 1022),
            (132007, None, 1022),
            (132012, None, 1022),
            (131026, None, 1300),
            (131021, None, 1020),
            (100, None, 1020),
            (131008, None, 1010),
            (131051, None, 1020),
            (131052, None, 1380),
            (131053, None, 1382),
            (190, None, 1370),
            (131031, None, 1060),
            (131030, None, 1160),
            (368, None, 1210),
            (470, None, 1340),
            (100, Some(2018001), 1300),
            (250, None, 1060),
        ];
        for &(code, subcode, spec) in cases {
            assert_eq!(
                permanent_code(400, code, subcode),
                Some(spec),
                "{code}/{subcode:?}"
            );
        }
    }

    #[test]
    fn transient_codes_and_statuses() {
        for code in [
            4, 80007, 130429, 131048, 131056, 131000, 131016, 133004, 2, 613,
        ] {
            assert_eq!(permanent_code(400, code, None), None, "{code}");
        }
        // 5xx, 429 and 408 are transient whatever the body says.
        assert_eq!(permanent_code(500, 100, None), None);
        assert_eq!(permanent_code(429, 131026, None), None);
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            send_error(503, b"<html>down</html>", wait),
            SendError::Transient {
                reason: "Meta answered HTTP 503".into(),
                retry_after: wait
            }
        );
    }

    #[test]
    fn unknown_codes_and_bodies() {
        let e = send_error(400, &body(999_999, None), None);
        assert_eq!(
            e,
            SendError::permanent(1020, "(#999999) Something: Some details")
        );
        // A subcode we do not know falls back to its code's row.
        assert_eq!(permanent_code(400, 10, Some(1)), Some(1060));
        assert_eq!(permanent_code(401, 999_999, None), Some(1060));
        assert_eq!(
            send_error(401, b"not json", None),
            SendError::permanent(1060, "Meta answered HTTP 401")
        );
        assert_eq!(
            send_error(400, br#"{"error":"text"}"#, None),
            SendError::permanent(1020, "Meta answered HTTP 400")
        );
        // Wrongly typed fields count as absent.
        let odd = br#"{"error":{"code":"131026","message":5,"error_data":"template is bad"}}"#;
        assert_eq!(
            send_error(400, odd, None),
            SendError::permanent(1020, "Meta reported an error: template is bad")
        );
    }

    #[test]
    fn failed_statuses() {
        let errors = json!([{
            "code": 131026,
            "title": "Message undeliverable",
            "message": "Message undeliverable",
            "error_data": {"details": "Message Undeliverable."},
        }]);
        let e = failed_status(Some(&errors));
        assert_eq!(e.code, 1300);
        assert_eq!(e.reason, "Message undeliverable: Message Undeliverable.");
        // Transient codes still end the message: the spec code of the row.
        assert_eq!(failed_status(Some(&json!([{"code": 131000}]))).code, 1330);
        assert_eq!(failed_status(Some(&json!([{"code": 130429}]))).code, 1000);
        assert_eq!(failed_status(Some(&json!([{"code": 131056}]))).code, 1241);
        assert_eq!(failed_status(Some(&json!([{"code": 7}]))).code, 1330);
        assert_eq!(failed_status(Some(&json!([{"title": "x"}]))).code, 1330);
        assert_eq!(failed_status(Some(&json!([]))).code, 1330);
        assert_eq!(failed_status(Some(&json!("x"))).code, 1330);
        assert_eq!(failed_status(None).code, 1330);
    }

    #[test]
    fn every_row_is_a_spec_code_and_unambiguous() {
        for (i, row) in TABLE.iter().enumerate() {
            assert!((1000..=1382).contains(&row.spec), "{row:?}");
            assert!(row.first <= row.last, "{row:?}");
            assert!(!row.title.is_empty());
            for other in &TABLE[i + 1..] {
                let overlap = row.first <= other.last && other.first <= row.last;
                assert!(
                    !(overlap && row.subcode == other.subcode),
                    "{row:?} and {other:?} overlap"
                );
            }
        }
    }
}
