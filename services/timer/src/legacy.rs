//! The `workflow` queue of the topology before transitions were applied
//! where their events arise. Services of that version published accepted
//! work (`workflow.accepted`), statuses (`workflow.status`) and fired
//! deadlines (`workflow.deadline`) there for a workflow service to apply.
//! During a rolling upgrade some are still queued, and old services may
//! still be publishing; every timer consumes the queue and applies them
//! with the same machine, so they all end. Nothing of this version
//! publishes there; once the queue stays empty after an upgrade, this
//! consumer is idle.

use dispatch_flow::{Engine, EngineError, Event};
use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::consume::{ConsumeOptions, Incoming, Outcome, consume};
use dispatch_infra::redis::Keys;
use dispatch_infra::store::Fate;
use dispatch_model::envelope::Envelope;
use dispatch_model::record::WorkflowRecord;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub async fn consume_old_queue(
    config: Config,
    broker: Broker,
    engine: Engine,
    shutdown: CancellationToken,
) {
    let keys = Keys::for_config(&config);
    let options = ConsumeOptions::new(broker.topology().workflow_queue(), config.workflow_prefetch)
        .with_grace(config.shutdown_grace());
    consume(broker, options, shutdown, move |incoming| {
        let engine = engine.clone();
        let keys = keys.clone();
        async move { handle(&engine, &keys, incoming).await }
    })
    .await;
}

async fn handle(engine: &Engine, keys: &Keys, incoming: Incoming) -> Outcome {
    let envelope: Envelope = match serde_json::from_slice(&incoming.payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            tracing::warn!(error = %e, routing_key = %incoming.routing_key, "undecodable event");
            return Outcome::Reject;
        }
    };
    let span = tracing::info_span!("workflow.old_event", routing_key = %incoming.routing_key);
    let result = async {
        let applied = match &envelope {
            Envelope::WorkflowAccepted(accepted) => {
                let id = accepted.workflow_id;
                // The ingest of then answered 503 for work it abandoned.
                if engine
                    .store()
                    .settle_fate(&id.to_string(), Fate::Claimed)
                    .await
                    .map_err(|e| Some(EngineError::from(e)))?
                    == Fate::Abandoned
                {
                    tracing::info!(workflow_id = %id, "dropping work that ingest answered 503 for");
                    return Ok(());
                }
                let indexes = dispatch_infra::store::message_indexes(keys, accepted);
                let initial = WorkflowRecord::new(accepted.clone());
                engine
                    .apply_or_start(id, Event::Start, initial, &indexes)
                    .await
                    .map_err(Some)?
            }
            Envelope::Status(status) => engine
                .apply(status.workflow_id, Event::Status(status))
                .await
                .map_err(Some)?,
            Envelope::Deadline(fired) => engine
                .apply(fired.workflow_id, Event::Deadline(fired))
                .await
                .map_err(Some)?,
            _ => return Err(None),
        };
        if let Some(outbox) = applied.outbox() {
            engine.carry_out(outbox).await;
        }
        Ok::<(), Option<EngineError>>(())
    }
    .instrument(span.clone())
    .await;
    match result {
        Ok(()) => Outcome::Ack,
        Err(None) => {
            tracing::warn!(routing_key = %incoming.routing_key, "not a workflow event");
            Outcome::Reject
        }
        Err(Some(e)) if e.is_permanent() => {
            span.in_scope(|| tracing::error!(error = %e, "event cannot be handled; rejecting it"));
            Outcome::Reject
        }
        Err(Some(e)) => {
            span.in_scope(|| tracing::warn!(error = %e, "event not handled; will retry"));
            Outcome::Retry
        }
    }
}
