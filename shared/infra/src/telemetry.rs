//! Logging and trace context.
//!
//! `init` installs `Registry + fmt (filtered by EnvFilter) + OpenTelemetry`. Logs are
//! JSON unless stderr is a terminal (or `DISPATCH_LOG_FORMAT` says `text` or
//! `json`); the level comes from `RUST_LOG` (default `info`).
//!
//! The OpenTelemetry layer gives every span a W3C trace and span id even
//! when nothing is exported, so trace context can be carried across AMQP
//! hops ([`inject_current`], [`set_parent_from`]) and into logs.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Keeps the tracer provider alive; drop it (or call `shutdown`) on exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    pub fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. Safe to call more than once (tests):
/// later calls keep the first subscriber.
pub fn init(service: &'static str) -> Telemetry {
    init_with_default_level(service, "info")
}

/// As [`init`], with another level when `RUST_LOG` is not set (tests use
/// `warn` to keep their output readable).
pub fn init_with_default_level(service: &'static str, level: &str) -> Telemetry {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer(service);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = match std::env::var("DISPATCH_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    // The log filter applies to log output only: spans that carry trace
    // context across hops must exist whatever the log level.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    };
    drop(result);
    Telemetry { provider }
}

/// The current span's context as W3C headers (`traceparent`, `tracestate`).
pub fn inject_current() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    headers
}

/// Makes `span` a child of the context carried in `headers`, if any.
pub fn set_parent_from(span: &tracing::Span, headers: &HashMap<String, String>) {
    let context = TraceContextPropagator::new().extract(headers);
    let _ = span.set_parent(context);
}
