//! Statuses shown by the lookups and carried by events.

use serde::{Deserialize, Serialize};

/// A workflow's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Durably queued, not yet picked up by the workflow service.
    Accepted,
    InProgress,
    Completed,
    Error,
}

/// A message's latest status: the spec's five, plus `accepted` for a message
/// that is queued but not yet handed to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Accepted,
    Submitted,
    Delivered,
    Read,
    Rejected,
    Undeliverable,
}

/// `2020-01-01T14:00:00.000Z`, the timestamp format of every webhook and
/// lookup, from milliseconds since the Unix epoch.
pub fn iso_timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_have_milliseconds_and_zulu() {
        assert_eq!(
            super::iso_timestamp(1_577_887_200_000),
            "2020-01-01T14:00:00.000Z"
        );
        assert_eq!(
            super::iso_timestamp(1_577_887_200_042),
            "2020-01-01T14:00:00.042Z"
        );
    }
}

/// What is stored about a workflow, and what the lookups show. Ingest
/// writes it on acceptance; the workflow service takes it over from there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub workflow: crate::envelope::WorkflowAccepted,
    pub status: WorkflowStatus,
    pub updated_at_ms: i64,
}
