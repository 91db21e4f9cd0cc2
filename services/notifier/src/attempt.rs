//! One try at a webhook, and what became of it.
//!
//! A try takes its endpoint's and origin's slots ([`crate::slots`]),
//! signs the body ([`crate::sign`]) and sends it; the outcome is an
//! [`Attempted`], which the caller settles (a retry, a dead letter, a
//! parked webhook). Only a real HTTP request is an attempt: waiting for a
//! slot, finding the circuit open or the endpoint disabled spends none.

use std::time::{Duration, Instant};

use dispatch_infra::activity::{Stat, WebhookLog};
use dispatch_model::envelope::WebhookJob;
use dispatch_model::record::now_ms;
use tracing::Instrument;

use crate::{Attempt, Notifier, SLOT_WAIT, Target, count_attempt, sign};

/// How long a notifier keeps trying to mark a delivered webhook.
const MARK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// What became of one try.
pub(crate) enum Attempted {
    Delivered,
    /// Not an attempt: the endpoint or its origin had no free slot.
    Busy,
    /// Not an attempt: the endpoint's circuit opened while the webhook
    /// waited for its slot.
    Open,
    /// Not an attempt: the application's endpoint was disabled while the
    /// webhook waited for its slot; why.
    Disabled(String),
    /// A failed attempt.
    Failed(Failed),
    /// The receiver answered `410 Gone`, and the endpoint is now disabled
    /// for the job's application (the reason).
    Gone(Failed, String),
}

/// Whether a try is a circuit's probe.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Try {
    /// Waits [`SLOT_WAIT`] at most for a slot, and not at all once the
    /// endpoint's circuit is open.
    Normal,
    /// Waits for a slot as long as an attempt may take.
    Probe,
}

impl Notifier {
    /// One try, with the endpoint's and origin's slots; a delivered
    /// webhook is marked so.
    pub(crate) async fn attempt(&self, job: &WebhookJob, to: &Target, how: Try) -> Attempted {
        let wait = match how {
            Try::Normal => SLOT_WAIT,
            Try::Probe => Duration::from_millis(self.config.webhook_timeout_ms),
        };
        let Some(_slots) = self.slots.acquire(&to.origin, &to.endpoint, wait).await else {
            return Attempted::Busy;
        };
        if how == Try::Normal && self.slots.seen_open(&to.endpoint) {
            // The circuit opened while this webhook waited for its slot.
            return Attempted::Open;
        }
        // Disabled while this webhook waited for its slot (a 410 to one
        // of its siblings)?
        if let Some(reason) = self.disabled(job, to).await {
            return Attempted::Disabled(reason);
        }
        let started = Instant::now();
        let failed = |status: Option<u16>, error: String, retry_after: Option<Duration>| {
            Failed::now(
                status,
                error,
                retry_after,
                started.elapsed().as_millis() as u64,
            )
        };
        let body = serde_json::to_vec(&job.body).unwrap_or_default();
        let signer = sign::Signer {
            secret: &to.secret,
            issuer: &self.config.webhook_issuer,
            api_key: &job.account,
            application_id: job.application_id.map(|a| a.to_string()),
        };
        let headers = match signer.headers(&job.webhook_id, now_ms() / 1000, &body) {
            Ok(headers) => headers,
            Err(e) => return Attempted::Failed(failed(None, format!("signing: {e}"), None)),
        };
        let mut request = self
            .http
            .request(to.method.clone(), to.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let post = tracing::info_span!("webhook.post", otel.kind = "client", origin = %to.origin);
        request = request.headers(post.in_scope(dispatch_infra::telemetry::trace_headers));
        let result = request.send().instrument(post).await;
        metrics::histogram!("dispatch_webhook_request_duration_seconds", "kind" => job.kind.as_str())
            .record(started.elapsed());
        let response = match result {
            Ok(response) => response,
            // Without the URL: its query may hold the receiver's secrets.
            Err(e) => return Attempted::Failed(failed(None, error_chain(&e.without_url()), None)),
        };
        let status = response.status();
        if status == reqwest::StatusCode::GONE {
            let failed = failed(Some(status.as_u16()), format!("HTTP {status}"), None);
            // Disabled while this request still holds the endpoint's slot,
            // so that the next webhook to take it finds it disabled.
            return match self.disable(job, to).await {
                Ok(reason) => Attempted::Gone(failed, reason),
                Err(e) => {
                    tracing::warn!(error = %e, "could not disable a gone endpoint");
                    Attempted::Failed(failed)
                }
            };
        }
        if !status.is_success() {
            let asked = response.headers().get(reqwest::header::RETRY_AFTER);
            let retry_after = retry_after(asked.and_then(|v| v.to_str().ok()));
            return Attempted::Failed(failed(
                Some(status.as_u16()),
                format!("HTTP {status}"),
                retry_after,
            ));
        }
        self.slots.succeeded(&to.endpoint);
        // Waiting for replicas when asked: a mark lost with its master
        // means the webhook is delivered again.
        let mut mark = redis::pipe();
        let delivered = WebhookLog {
            status: Some(status.as_u16()),
            latency_ms: started.elapsed().as_millis() as u64,
            ..self.log_entry(job, "delivered")
        };
        self.log_into(&mut mark, job, &delivered, Stat::WebhookDelivered);
        mark.cmd("SET")
            .arg(self.keys.webhook_delivered(&job.webhook_id))
            .arg(1)
            .arg("EX")
            .arg(self.config.record_ttl_secs)
            .ignore();
        let replicated = dispatch_infra::redis::Replicated::of(&self.config);
        if let Some(replicated) = replicated {
            replicated.append(&mut mark);
        }
        // The receiver has it: until this is marked, a duplicate job (an
        // outbox recovered after its writer's mark was lost) would deliver
        // it again. So a Redis that does not answer (a master failing
        // over) is waited for here, for a while.
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(100);
        let reached: Result<Vec<i64>, _> = loop {
            match mark.query_async(&mut self.redis.clone()).await {
                Err(e) if started.elapsed() + wait < MARK_PATIENCE => {
                    tracing::warn!(error = %e, "delivered, not marked yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                other => break other,
            }
        };
        if let (Some(replicated), Ok(reached)) = (replicated, &reached)
            && let Some(reached) = reached.first()
        {
            replicated.note(*reached, "delivered");
        }
        tracing::debug!("webhook delivered");
        count_attempt(job.kind.as_str(), "delivered");
        let lag_ms = (now_ms() - job.event_at_ms).max(0);
        metrics::histogram!("dispatch_webhook_delivery_lag_seconds", "kind" => job.kind.as_str())
            .record(lag_ms as f64 / 1000.0);
        Attempted::Delivered
    }
}

/// A failed attempt, with what the receiver asked for.
pub(crate) struct Failed {
    pub(crate) at_ms: i64,
    pub(crate) status: Option<u16>,
    pub(crate) latency_ms: u64,
    pub(crate) error: String,
    pub(crate) retry_after: Option<Duration>,
}

impl Failed {
    pub(crate) fn now(
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
        latency_ms: u64,
    ) -> Self {
        Failed {
            at_ms: now_ms(),
            status,
            latency_ms,
            error,
            retry_after,
        }
    }

    pub(crate) fn log(&self, entry: WebhookLog) -> WebhookLog {
        WebhookLog {
            at_ms: self.at_ms,
            status: self.status,
            latency_ms: self.latency_ms,
            error: Some(self.error.clone()),
            ..entry
        }
    }

    pub(crate) fn record(&self) -> Attempt {
        Attempt {
            at_ms: self.at_ms,
            status: self.status,
            latency_ms: self.latency_ms,
            error: self.error.clone(),
        }
    }
}

/// The receiver's `Retry-After`, in seconds (an HTTP date is not read).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(retry_after(Some("120")), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(Some("0")), Some(Duration::ZERO));
        assert_eq!(retry_after(None), None);
        assert_eq!(retry_after(Some("-1")), None);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("request failed")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapped(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "request failed: connection refused");
    }
}
