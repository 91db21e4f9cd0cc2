//! The provider simulator: an HTTP server that stands in for the SMS, MMS,
//! WhatsApp, Messenger and Viber providers in tests, demos and benchmarks.
//! It accepts sends on every channel and calls back with delivery and read
//! receipts, as a real provider would; what happens to a message is chosen
//! by its recipient, so a test picks an outcome by picking a number.
//!
//! It is **not** a provider: nothing is delivered anywhere. `dispatch
//! provider-sim` runs it ([`run`]); tests run it in-process ([`spawn`]) and
//! steer it through [`Control`].
//!
//! # Wire contract
//!
//! The types are in [`wire`], shared with the sender's adapter and ingest.
//!
//! **Send**: `POST /v1/messages` with `Authorization: Bearer
//! <simulator_secret>` and a [`wire::SendRequest`]:
//!
//! ```json
//! {"reference":"<our message uuid>","channel":"sms","to":"447700900000","from":"Acme",
//!  "status_callback":"http://127.0.0.1:8080/callbacks/simulator","message":{"text":"hi"}}
//! ```
//!
//! `channel` is `sms`, `mms`, `whatsapp`, `messenger` or
//! `viber_service_msg`; `message` (any JSON) and `status_callback` are
//! optional, and without a `status_callback` no receipts are sent. Answers:
//!
//! | status | body | meaning |
//! |---|---|---|
//! | 202 | `{"message_id":"sim-<uuid>"}` | accepted |
//! | 422 | `{"error":{"code":1300,"reason":"Not part of the provider network"}}` | permanent rejection |
//! | 503 | `{"error":{"code":1030,"reason":"…"}}`, maybe `Retry-After: <s>` | transient; try again |
//! | 401 | `{"error":{"code":1010,"reason":"…"}}` | missing or wrong bearer token |
//! | 400 | `{"error":{"code":1020,"reason":"…"}}` | not a valid send request |
//!
//! **Receipts**: after an accepted send with a `status_callback`, and after
//! the delay (`simulator_delay_ms`, 100 ms by default), the simulator posts
//! a [`wire::Callback`] there:
//!
//! ```json
//! {"message_id":"sim-…","reference":"…","status":"delivered","timestamp_ms":1712345678901,"usage":{"currency":"EUR","price":"0.0333"}}
//! {"message_id":"sim-…","reference":"…","status":"read","timestamp_ms":1712345678999}
//! {"message_id":"sim-…","reference":"…","status":"undeliverable","timestamp_ms":1712345678901,"error":{"code":1330,"reason":"Undeliverable"}}
//! ```
//!
//! `usage` comes with `delivered` only, priced per channel
//! ([`behaviour::price`]: sms 0.0333, mms 0.0550, whatsapp 0.0150,
//! messenger 0.0010, viber_service_msg 0.0120 EUR). Every callback carries
//! `X-Simulator-Signature: sha256=<lowercase hex HMAC-SHA256(simulator_secret,
//! body)>` ([`wire::sign`], [`wire::verify`]). A callback answered with a
//! non-2xx status, or not at all, is retried up to 6 times in all, 100 ms
//! apart and doubling, then logged and dropped.
//!
//! # Outcomes
//!
//! By default the last two characters of `to` (number or id) decide
//! ([`default_behaviour`]):
//!
//! | `to` ends in | outcome |
//! |---|---|
//! | `00` | delivered after the delay |
//! | `01` | delivered after the delay, then read after another delay |
//! | `02` | rejected at submit: 422, error 1300 |
//! | `03` | accepted, never delivered: no receipt |
//! | `04` | accepted, then undeliverable after the delay (error 1330) |
//! | `05` | 503 twice for each `reference`, then accepted and delivered |
//! | anything else | delivered after the delay |
//!
//! A per-recipient [`Behaviour`] overrides the table; every field is
//! optional:
//!
//! ```json
//! {"transient_failures":2,"retry_after_secs":1,"reject":{"code":1300,"reason":"…"},
//!  "delivery":"delivered","read":true,"delay_ms":50,"error":{"code":1330,"reason":"…"},"price":"0.05",
//!  "response_delay_ms":300}
//! ```
//!
//! `response_delay_ms` makes the send itself answer late (provider
//! latency); `delay_ms` is the wait before each receipt.
//!
//! `delivery` is `delivered`, `undeliverable` or `none`; transient failures
//! come before a `reject`.
//!
//! # Control API
//!
//! Unauthenticated, so never expose the simulator beyond a test network.
//!
//! - `PUT /control/recipients/{to}` with a [`Behaviour`] → 204;
//!   `DELETE /control/recipients/{to}` → 204.
//! - `GET /control/sends[?to=…]` → every authenticated, well-formed send
//!   request as a [`SendRecord`], oldest first, with its `outcome`
//!   (`accepted`, `rejected`, `unavailable`); the latest 100,000 are kept.
//!   `DELETE /control/sends` → 204 empties it.
//! - `GET /control/requests` → every request the provider fakes
//!   (`/vonage`, `/twilio`, `/meta`) received, exactly as it
//!   arrived ([`RawRequest`]), oldest first.
//! - `POST /control/inbound` (bearer `simulator_secret`, as for sends) with
//!   a [`wire::InboundRequest`] (`channel`,
//!   `from` the user, `to` our number or id, `message`) → a user writes to
//!   us: a signed [`wire::Inbound`] is posted to
//!   `{callback_url}/callbacks/simulator/inbound` (or the request's own
//!   `callback_url`), 204 once it was taken, 502 if not. With `"provider":
//!   "vonage" | "twilio" | "meta"` (and a `callback_url`), it is posted in
//!   that provider's format and signed as that provider signs.
//! - `GET /healthz` → 200.

pub mod behaviour;
pub mod control;
mod fakes;
mod receipts;
mod server;
pub use dispatch_providers::simulator::wire;

use std::net::SocketAddr;
use std::time::Duration;

use dispatch_infra::Config;
use dispatch_infra::config::DEV_SIMULATOR_SECRET;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use behaviour::{Behaviour, Delivery, default_behaviour};
pub use control::{Control, Outcome, RawRequest, SendRecord};
pub use receipts::{CALLBACK_ATTEMPTS, CALLBACK_RETRY_BASE, CALLBACK_TIMEOUT};

/// A running simulator.
pub struct Running {
    pub addr: SocketAddr,
    pub task: JoinHandle<std::io::Result<()>>,
    pub control: Control,
}

/// Binds `config.simulator_addr` (port 0 allowed) and serves in the
/// background until `shutdown` is cancelled; pending receipts are then
/// abandoned.
pub async fn spawn(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    anyhow::ensure!(
        !config.simulator_secret.is_empty(),
        "simulator_secret must not be empty"
    );
    let listener = tokio::net::TcpListener::bind(config.simulator_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "simulator_addr: cannot listen on {}: {e}",
                config.simulator_addr
            )
        })?;
    let addr = listener.local_addr()?;
    let control = Control::new();
    let app = server::App {
        control: control.clone(),
        receipts: receipts::Receipts::new(
            &config.simulator_secret,
            Duration::from_millis(config.simulator_delay_ms),
            shutdown.clone(),
        )?,
        secret: config.simulator_secret.as_str().into(),
        inbound_url: format!("{}/callbacks/simulator/inbound", config.callback_base()).into(),
        fakes: std::sync::Arc::new(fakes::Fakes::new(&config.simulator_secret)),
    };
    let router = server::router(app);
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });
    tracing::info!(%addr, "provider simulator listening");
    Ok(Running {
        addr,
        task,
        control,
    })
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::warn!(
        "this is the provider simulator: messages sent to it are not delivered anywhere"
    );
    if config.simulator_secret == DEV_SIMULATOR_SECRET {
        tracing::warn!(
            "simulator_secret is the development secret; set DISPATCH_SIMULATOR_SECRET outside local development"
        );
    } else {
        tracing::info!("simulator_secret is set (not the development secret)");
    }
    let running = spawn(&config, shutdown).await?;
    running.task.await??;
    Ok(())
}
