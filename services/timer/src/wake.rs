//! The wake-up subscription: a message on the `timer_wake` channel means
//! an entry earlier than any other was just scheduled, so a sleeping timer
//! must look again now rather than at the deadline it was sleeping towards.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Subscribes to `channel` and calls `wake.notify_one()` per message until
/// `shutdown`, resubscribing with capped exponential backoff whenever the
/// subscription cannot be made or drops. While it is down, the timer still
/// looks at Redis every `timer_max_idle_ms`.
///
/// `clients` are tried in turn, one per attempt: on a cluster, a message
/// published on any node reaches subscribers on every node, so any seed
/// that answers will do.
pub(crate) async fn listen(
    clients: Vec<redis::Client>,
    channel: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 0usize;
    loop {
        let Some(client) = clients.get(attempt % clients.len().max(1)) else {
            return;
        };
        attempt += 1;
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, subscribe(client, &channel)) => r,
        };
        match subscribed {
            Ok(Ok(pubsub)) => {
                backoff = MIN_BACKOFF;
                tracing::debug!(%channel, "subscribed to timer wake-ups");
                // A wake-up may have been missed while unsubscribed.
                wake.notify_one();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(_) => wake.notify_one(),
                            None => break,
                        },
                    }
                }
                tracing::warn!(%channel, "lost the timer wake-up subscription; resubscribing");
            }
            Ok(Err(e)) => {
                tracing::warn!(%channel, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot subscribe to timer wake-ups");
            }
            Err(_) => {
                tracing::warn!(%channel, retry_in_ms = backoff.as_millis() as u64,
                    "timed out subscribing to timer wake-ups");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
