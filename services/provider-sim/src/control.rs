//! The simulator's in-memory state: per-recipient overrides, the sends
//! log and the transient-failure counters, behind a cheap-to-clone handle.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use dispatch_model::Channel;
use serde::{Deserialize, Serialize};

use crate::behaviour::{Behaviour, default_behaviour};
use crate::wire::{ProviderError, SendRequest};

/// Most records kept in the sends log; the oldest go first.
pub const MAX_SEND_RECORDS: usize = 100_000;

/// Most references whose transient failures are being counted; past this
/// the counters start over, so abandoned references cannot pile up.
const MAX_TRANSIENT_COUNTERS: usize = 100_000;

/// One send request, as the simulator answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    /// When it arrived, in ms since the Unix epoch.
    pub at_ms: i64,
    pub reference: String,
    pub channel: Channel,
    pub to: String,
    pub from: String,
    pub outcome: Outcome,
    /// The simulator's id, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// How a send request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 202.
    Accepted,
    /// 422.
    Rejected,
    /// 503, a transient failure.
    Unavailable,
}

/// What to answer a send with, decided under one lock.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept {
        message_id: String,
        behaviour: Behaviour,
    },
    Reject(ProviderError),
    Unavailable {
        retry_after_secs: Option<u64>,
    },
}

#[derive(Default)]
struct State {
    overrides: HashMap<String, Behaviour>,
    sends: VecDeque<SendRecord>,
    /// 503s answered so far, by reference.
    transient: HashMap<String, u32>,
    requests: VecDeque<RawRequest>,
}

/// Most raw requests kept; the oldest go first.
pub const MAX_RAW_REQUESTS: usize = 10_000;

/// A request to a provider fake as it arrived: what an adapter's test
/// checks byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body (UTF-8, lossy).
    pub body: String,
}

impl RawRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A handle on the simulator's state, for in-process tests: what the
/// `/control` HTTP API does, without HTTP. Clones share the same state.
#[derive(Clone, Default)]
pub struct Control {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Overrides the default table for sends to `to`.
    pub fn set(&self, to: &str, behaviour: Behaviour) {
        self.lock().overrides.insert(to.to_owned(), behaviour);
    }

    /// Removes the override for `to`, if any.
    pub fn clear(&self, to: &str) {
        self.lock().overrides.remove(to);
    }

    /// The behaviour sends to `to` get now: its override, or the default
    /// table's.
    pub fn behaviour(&self, to: &str) -> Behaviour {
        self.lock()
            .overrides
            .get(to)
            .cloned()
            .unwrap_or_else(|| default_behaviour(to))
    }

    /// Every send request received, oldest first (at most
    /// [`MAX_SEND_RECORDS`]).
    pub fn sends(&self) -> Vec<SendRecord> {
        self.lock().sends.iter().cloned().collect()
    }

    /// The send requests to `to`, oldest first.
    pub fn sends_to(&self, to: &str) -> Vec<SendRecord> {
        self.lock()
            .sends
            .iter()
            .filter(|r| r.to == to)
            .cloned()
            .collect()
    }

    /// Empties the sends log.
    pub fn clear_sends(&self) {
        self.lock().sends.clear();
    }

    /// Logs a request to one of the provider fakes, exactly as received.
    pub fn record_request(&self, request: RawRequest) {
        let mut state = self.lock();
        if state.requests.len() >= MAX_RAW_REQUESTS {
            state.requests.pop_front();
        }
        state.requests.push_back(request);
    }

    /// Requests to the provider fakes, oldest first (at most
    /// [`MAX_RAW_REQUESTS`]).
    pub fn requests(&self) -> Vec<RawRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Forgets everything: overrides, the sends log and the transient
    /// failure counters.
    pub fn reset(&self) {
        *self.lock() = State::default();
    }

    /// Decides the answer to `req` and logs it.
    pub(crate) fn decide(&self, req: &SendRequest, at_ms: i64) -> Decision {
        self.decide_as(req, at_ms, || format!("sim-{}", uuid::Uuid::new_v4()))
    }

    /// [`Control::decide`], with message ids in a provider's own form.
    pub(crate) fn decide_as(
        &self,
        req: &SendRequest,
        at_ms: i64,
        new_id: impl FnOnce() -> String,
    ) -> Decision {
        let mut state = self.lock();
        let behaviour = state
            .overrides
            .get(&req.to)
            .cloned()
            .unwrap_or_else(|| default_behaviour(&req.to));

        let failed = state.transient.get(&req.reference).copied().unwrap_or(0);
        let (decision, outcome, message_id) = if failed < behaviour.transient_failures {
            if state.transient.len() >= MAX_TRANSIENT_COUNTERS {
                state.transient.clear();
            }
            state.transient.insert(req.reference.clone(), failed + 1);
            let decision = Decision::Unavailable {
                retry_after_secs: behaviour.retry_after_secs,
            };
            (decision, Outcome::Unavailable, None)
        } else {
            if failed > 0 {
                state.transient.remove(&req.reference);
            }
            match behaviour.reject.clone() {
                Some(error) => (Decision::Reject(error), Outcome::Rejected, None),
                None => {
                    let message_id = new_id();
                    let decision = Decision::Accept {
                        message_id: message_id.clone(),
                        behaviour,
                    };
                    (decision, Outcome::Accepted, Some(message_id))
                }
            }
        };

        if state.sends.len() >= MAX_SEND_RECORDS {
            state.sends.pop_front();
        }
        state.sends.push_back(SendRecord {
            at_ms,
            reference: req.reference.clone(),
            channel: req.channel,
            to: req.to.clone(),
            from: req.from.clone(),
            outcome,
            message_id,
        });
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reference: &str, to: &str) -> SendRequest {
        SendRequest {
            reference: reference.into(),
            channel: Channel::Sms,
            to: to.into(),
            from: "Acme".into(),
            status_callback: None,
            message: None,
        }
    }

    #[test]
    fn transient_failures_count_per_reference() {
        let control = Control::new();
        let outcomes = |reference: &str| {
            (0..3)
                .map(|_| match control.decide(&request(reference, "05"), 0) {
                    Decision::Accept { .. } => Outcome::Accepted,
                    Decision::Reject(_) => Outcome::Rejected,
                    Decision::Unavailable { .. } => Outcome::Unavailable,
                })
                .collect::<Vec<_>>()
        };
        let expected = [
            Outcome::Unavailable,
            Outcome::Unavailable,
            Outcome::Accepted,
        ];
        assert_eq!(outcomes("a"), expected);
        assert_eq!(outcomes("b"), expected);
        let log = control.sends_to("05");
        assert_eq!(log.len(), 6);
        assert_eq!(log[2].outcome, Outcome::Accepted);
        assert!(
            log[2]
                .message_id
                .as_deref()
                .is_some_and(|id| id.starts_with("sim-"))
        );
        assert!(log[0].message_id.is_none());
    }

    #[test]
    fn overrides_beat_the_table_and_the_log_is_bounded() {
        let control = Control::new();
        control.set(
            "00",
            Behaviour {
                reject: Some(ProviderError::not_in_network()),
                ..Behaviour::default()
            },
        );
        assert!(matches!(
            control.decide(&request("r", "00"), 0),
            Decision::Reject(_)
        ));
        control.clear("00");
        assert!(matches!(
            control.decide(&request("r", "00"), 0),
            Decision::Accept { .. }
        ));

        for i in 0..MAX_SEND_RECORDS + 5 {
            control.decide(&request(&i.to_string(), "99"), 0);
        }
        let sends = control.sends();
        assert_eq!(sends.len(), MAX_SEND_RECORDS);
        assert_eq!(sends[0].reference, "5");
        control.reset();
        assert!(control.sends().is_empty());
    }
}
