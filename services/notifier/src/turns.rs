//! Per-message turns: within a notifier, one delivery at a time per
//! message, so that a message's webhooks go out in the order they were
//! consumed (the order the workflow published them: `submitted` before
//! `delivered`).
//!
//! A webhook that finds its message's turn taken does not wait in the
//! consumer (that would fill the prefetch other receivers' webhooks
//! need): it goes back to the timer, due just after the same message's
//! webhooks deferred before it ([`MessageTurns::behind`]), so deferred
//! webhooks come back in order too. Best effort, as the crate docs say:
//! turns are per process, and a new webhook can take a free turn ahead of
//! deferred ones.
//!
//! Both maps are bounded: a turn is forgotten as soon as nobody holds or
//! waits for it, and deferral times once they are past (when
//! `max_deferred` messages are remembered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

type Turn = Arc<tokio::sync::Mutex<()>>;

pub struct MessageTurns {
    /// The turns of messages with a delivery out or waiting.
    turns: Mutex<HashMap<String, Turn>>,
    /// Per message, when its last webhook deferred for its turn comes back.
    deferred: Mutex<HashMap<String, i64>>,
    /// Messages whose deferral is remembered before the past ones are
    /// forgotten.
    max_deferred: usize,
}

/// A message's turn, held until dropped.
pub struct MessageTurn<'a> {
    turns: &'a MessageTurns,
    message: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for MessageTurn<'_> {
    fn drop(&mut self) {
        self.turns.release(&self.message, self.guard.take());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MessageTurns {
    pub fn new(max_deferred: usize) -> Self {
        Self {
            turns: Mutex::new(HashMap::new()),
            deferred: Mutex::new(HashMap::new()),
            max_deferred,
        }
    }

    /// `message`'s turn, waiting at most `wait` for it; `None` when an
    /// earlier webhook of the message still holds it.
    pub async fn take(&self, message: &str, wait: Duration) -> Option<MessageTurn<'_>> {
        let turn = lock(&self.turns)
            .entry(message.to_owned())
            .or_default()
            .clone();
        let taken = tokio::time::timeout(wait, turn.lock_owned()).await;
        match taken {
            Ok(guard) => Some(MessageTurn {
                turns: self,
                message: message.to_owned(),
                guard: Some(guard),
            }),
            Err(_) => {
                self.release(message, None);
                None
            }
        }
    }

    /// Lets go of a turn (if held), and forgets it once nobody holds or
    /// waits for it: every holder and waiter has a clone, taken under the
    /// same lock.
    fn release(&self, message: &str, guard: Option<OwnedMutexGuard<()>>) {
        let mut turns = lock(&self.turns);
        drop(guard);
        if turns
            .get(message)
            .is_some_and(|t| Arc::strong_count(t) == 1)
        {
            turns.remove(message);
        }
    }

    /// When a webhook of `message` deferred for its turn comes back: at
    /// `due_ms`, or just after the same message's last deferred one,
    /// whichever is later.
    pub fn behind(&self, message: &str, due_ms: i64, now_ms: i64) -> i64 {
        let mut deferred = lock(&self.deferred);
        if deferred.len() >= self.max_deferred {
            deferred.retain(|_, due| *due > now_ms);
        }
        let due = deferred
            .get(message)
            .map_or(due_ms, |last| due_ms.max(last + 1));
        deferred.insert(message.to_owned(), due);
        due
    }

    #[cfg(test)]
    fn remembered(&self) -> (usize, usize) {
        (lock(&self.turns).len(), lock(&self.deferred).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;
    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn one_delivery_at_a_time_per_message() {
        let turns = MessageTurns::new(100);
        let first = turns.take("m1", NOW).await.expect("free");
        assert!(turns.take("m1", NOW).await.is_none(), "taken");
        let other = turns.take("m2", NOW).await;
        assert!(other.is_some(), "another message has its own turn");
        drop(first);
        assert!(turns.take("m1", NOW).await.is_some(), "free again");
    }

    #[tokio::test]
    async fn a_turn_is_forgotten_once_nobody_holds_it() {
        let turns = MessageTurns::new(100);
        let first = turns.take("m", NOW).await.expect("free");
        assert!(turns.take("m", NOW).await.is_none());
        assert_eq!(turns.remembered().0, 1, "still held");
        drop(first);
        assert_eq!(turns.remembered().0, 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_turn_when_it_is_let_go() {
        let turns = MessageTurns::new(100);
        let first = turns.take("m", NOW).await.expect("free");
        let (second, ()) = tokio::join!(turns.take("m", LONG), async {
            // The waiter is queued by now (polled first); let go.
            tokio::task::yield_now().await;
            assert_eq!(turns.remembered().0, 1);
            drop(first);
        });
        let second = second.expect("handed over");
        assert_eq!(turns.remembered().0, 1, "kept for its new holder");
        drop(second);
        assert_eq!(turns.remembered().0, 0);
    }

    #[test]
    fn deferred_webhooks_come_back_in_order() {
        let turns = MessageTurns::new(100);
        assert_eq!(turns.behind("m", 1_000, 0), 1_000);
        assert_eq!(turns.behind("m", 900, 0), 1_001, "just after the last");
        assert_eq!(turns.behind("m", 1_001, 0), 1_002);
        assert_eq!(turns.behind("m", 5_000, 0), 5_000, "later stays later");
        assert_eq!(turns.behind("other", 900, 0), 900, "per message");
    }

    #[test]
    fn past_deferrals_are_forgotten_at_the_bound() {
        let turns = MessageTurns::new(2);
        turns.behind("a", 100, 0);
        turns.behind("b", 300, 0);
        assert_eq!(turns.remembered().1, 2);
        // Full: at 200, "a" (due at 100) is past and forgotten, "b" not.
        assert_eq!(turns.behind("c", 250, 200), 250);
        assert_eq!(turns.remembered().1, 2);
        assert_eq!(turns.behind("a", 50, 200), 50, "a was forgotten");
        assert_eq!(turns.behind("b", 50, 200), 301, "b was kept");
    }
}
