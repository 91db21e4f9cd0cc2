//! What one notifier knows of the destinations it sends to, in memory:
//! request slots per origin (scheme, host, port) and per endpoint, and
//! each endpoint's consecutive failures and whether its circuit was seen
//! open.
//!
//! An origin has `webhook_concurrency_per_host` slots. One endpoint may
//! hold at most `webhook_endpoint_share` of them (at least one), so an
//! endpoint that hangs until the timeout leaves the rest of its origin to
//! its siblings. A webhook takes its endpoint's slot, then its origin's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Origins and endpoints remembered before idle ones are forgotten.
const MAX_ENTRIES: usize = 10_000;

/// The two permits a request holds while it is out.
pub struct Held {
    _endpoint: OwnedSemaphorePermit,
    _origin: OwnedSemaphorePermit,
}

struct Endpoint {
    slots: Arc<Semaphore>,
    failures: u32,
    open: bool,
}

pub struct Slots {
    per_origin: usize,
    per_endpoint: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    origins: HashMap<String, Arc<Semaphore>>,
    endpoints: HashMap<String, Endpoint>,
}

impl Slots {
    pub fn new(per_origin: usize, endpoint_share: f64) -> Self {
        let per_endpoint =
            ((per_origin as f64 * endpoint_share).floor() as usize).clamp(1, per_origin);
        Self {
            per_origin,
            per_endpoint,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The semaphores of `endpoint` and its `origin`.
    fn semaphores(&self, origin: &str, endpoint: &str) -> (Arc<Semaphore>, Arc<Semaphore>) {
        let mut state = self.lock();
        if state.endpoints.len() >= MAX_ENTRIES && !state.endpoints.contains_key(endpoint) {
            let per_endpoint = self.per_endpoint;
            state.endpoints.retain(|_, e| {
                e.failures > 0 || e.open || e.slots.available_permits() < per_endpoint
            });
        }
        if state.origins.len() >= MAX_ENTRIES && !state.origins.contains_key(origin) {
            let per_origin = self.per_origin;
            state
                .origins
                .retain(|_, o| o.available_permits() < per_origin);
        }
        let per_origin = self.per_origin;
        let origin = state
            .origins
            .entry(origin.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(per_origin)))
            .clone();
        let endpoint = self.endpoint(&mut state, endpoint).slots.clone();
        (endpoint, origin)
    }

    fn endpoint<'a>(&self, state: &'a mut State, endpoint: &str) -> &'a mut Endpoint {
        let per_endpoint = self.per_endpoint;
        state
            .endpoints
            .entry(endpoint.to_owned())
            .or_insert_with(|| Endpoint {
                slots: Arc::new(Semaphore::new(per_endpoint)),
                failures: 0,
                open: false,
            })
    }

    /// Both slots, waiting at most `wait` for them; `None` when the
    /// endpoint or its origin stayed busy.
    pub async fn acquire(
        &self,
        origin: &str,
        endpoint: &str,
        wait: std::time::Duration,
    ) -> Option<Held> {
        let (endpoint, origin) = self.semaphores(origin, endpoint);
        tokio::time::timeout(wait, async move {
            let endpoint = endpoint.acquire_owned().await.ok()?;
            let origin = origin.acquire_owned().await.ok()?;
            Some(Held {
                _endpoint: endpoint,
                _origin: origin,
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether this notifier saw the endpoint's circuit open.
    pub fn seen_open(&self, endpoint: &str) -> bool {
        self.lock().endpoints.get(endpoint).is_some_and(|e| e.open)
    }

    /// Remembers whether the endpoint's circuit is open.
    pub fn set_open(&self, endpoint: &str, open: bool) {
        let mut state = self.lock();
        let entry = self.endpoint(&mut state, endpoint);
        entry.open = open;
        if !open {
            entry.failures = 0;
        }
    }

    /// Counts a successful attempt: no failures in a row, and the circuit
    /// no longer seen open.
    pub fn succeeded(&self, endpoint: &str) {
        let mut state = self.lock();
        let entry = self.endpoint(&mut state, endpoint);
        entry.failures = 0;
        entry.open = false;
    }

    /// Counts a failed attempt; returns the failures in a row.
    pub fn failed(&self, endpoint: &str) -> u32 {
        let mut state = self.lock();
        let entry = self.endpoint(&mut state, endpoint);
        entry.failures = entry.failures.saturating_add(1);
        entry.failures
    }
}
