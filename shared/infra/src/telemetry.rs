//! Logs, traces and metrics.
//!
//! [`init`] installs `Registry + fmt (filtered by EnvFilter) + OpenTelemetry`
//! and the Prometheus recorder. Logs are JSON unless stderr is a terminal
//! (or `DISPATCH_LOG_FORMAT` says `text` or `json`), with the trace and span
//! ids of the current span; the level comes from `RUST_LOG` (default
//! `info`, with the AMQP client's own lines off: see [`install`]).
//!
//! Traces: the OpenTelemetry layer gives every span a W3C trace and span id
//! even when nothing is exported, so trace context is carried across AMQP
//! hops ([`inject_current`], [`set_parent_from`]), timer entries and HTTP
//! calls ([`trace_headers`]), and into logs. Spans are exported over OTLP
//! (HTTP/protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; the exporter reads the
//! other `OTEL_EXPORTER_OTLP_*` variables itself, the SDK reads
//! `OTEL_TRACES_SAMPLER`/`_ARG` (default: parent-based, always on) and
//! `OTEL_SERVICE_NAME`/`OTEL_RESOURCE_ATTRIBUTES` (default service name
//! `dispatch-<service>`).
//!
//! Metrics: one global Prometheus recorder per process ([`metrics_handle`]),
//! rendered at `/metrics` on the admin port. Names are listed in
//! docs/observability.md.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Keeps the tracer provider alive; call `shutdown` on exit to flush the
/// spans not yet exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    pub fn shutdown(self) {
        // Off the async threads (the batch exporter blocks while it
        // flushes), and bounded: an unreachable collector must not hold
        // the exit past the shutdown grace.
        let provider = self.provider;
        let _ = std::thread::spawn(move || {
            provider.shutdown_with_timeout(std::time::Duration::from_secs(1))
        })
        .join();
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
    let provider = match otlp_provider(service) {
        Ok(provider) => provider,
        Err(e) => {
            eprintln!("OTLP trace export is off: {e}");
            SdkTracerProvider::builder().build()
        }
    };
    install(service, level, provider)
}

/// Installs the subscriber with a tracer provider of the caller's (tests
/// pass one with an in-memory exporter).
pub fn install(service: &'static str, level: &str, provider: SdkTracerProvider) -> Telemetry {
    metrics_handle();
    metrics::gauge!(
        "dispatch_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "service" => service,
    )
    .set(1.0);
    let tracer = provider.tracer(service);
    // lapin logs connection losses and channel closings (every shutdown)
    // at ERROR from its I/O thread; the broker supervisor and consumers
    // report the same events once, with context, at WARN. `RUST_LOG`
    // (e.g. `info,lapin=debug`) brings lapin's own lines back.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},lapin=off")));
    let json = match std::env::var("DISPATCH_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    // The log filter applies to log output only: spans that carry trace
    // context across hops must exist whatever the log level.
    // Only what a trace viewer needs: no per-span code locations, thread
    // names or busy/idle timings (each costs work on every span).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    let dispatch = if json {
        tracing::Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            ),
        )
    } else {
        tracing::Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            ),
        )
    };
    let weak = dispatch.downgrade();
    if tracing::dispatcher::set_global_default(dispatch).is_ok() {
        let _ = GLOBAL.set(weak);
        let _ = tracing_log::LogTracer::init();
    }
    Telemetry { provider }
}

/// The installed subscriber, for the log formatter to find each span's
/// trace context (it cannot ask the current dispatcher while formatting:
/// tracing hides it from code running inside it).
static GLOBAL: OnceLock<tracing::dispatcher::WeakDispatch> = OnceLock::new();

/// One JSON object per line: `timestamp`, `level`, `target`, `fields`, the
/// current `span` (name and fields) and its `trace_id` and `span_id`, so a
/// log line leads to its trace.
struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt as _;
        let meta = event.metadata();
        let mut fields = FieldsVisitor(serde_json::Map::new());
        event.record(&mut fields);
        let mut line = serde_json::json!({
            "timestamp": now_rfc3339(),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "fields": fields.0,
        });
        if let Some(span) = ctx.lookup_current() {
            let span_fields = span
                .extensions()
                .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                .and_then(|f| serde_json::from_str::<serde_json::Value>(f.as_str()).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            line["span"] = serde_json::json!({ "name": span.name(), "fields": span_fields });
        }
        // The current span as the whole subscriber sees it: spans below the
        // log level still carry the trace.
        let dispatch = GLOBAL.get().and_then(|weak| weak.upgrade());
        let current = dispatch.as_ref().and_then(|d| {
            let current = d.current_span();
            Some((d, current.id()?.clone()))
        });
        if let Some((dispatch, id)) = current
            && let Some(context) = tracing_opentelemetry::get_otel_context(&id, dispatch)
        {
            let otel = context.span();
            let ids = otel.span_context();
            if ids.is_valid() {
                line["trace_id"] = ids.trace_id().to_string().into();
                line["span_id"] = ids.span_id().to_string().into();
            }
        }
        writeln!(writer, "{line}")
    }
}

/// RFC 3339 UTC, as the rest of the ecosystem logs.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct FieldsVisitor(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for FieldsVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// A provider exporting over OTLP when an endpoint is configured, else one
/// that only mints ids.
fn otlp_provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        // Nothing is exported: spans still get ids (carried across hops
        // and into logs) but are not recorded, which costs far less.
        return Ok(SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
            .build());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(format!("dispatch-{service}"));
    }
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build())
}

/// The process's Prometheus recorder, installed on first use. Histograms
/// whose names end in `_seconds` get buckets from 1 ms to 30 s.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; its handle then
        // renders nothing, which is what a process without ours shows.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        handle
    })
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

/// The current span's trace context as HTTP headers, for outgoing calls
/// (providers, webhooks).
pub fn trace_headers() -> reqwest_headers::HeaderMap {
    let mut headers = reqwest_headers::HeaderMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    headers
}

/// The `traceparent` of the current span, if it has a valid context.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    inject_current().remove("traceparent")
}

/// Makes `span` a child of the W3C `traceparent`, if any.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(value) = traceparent {
        let headers = HashMap::from([("traceparent".to_owned(), value.to_owned())]);
        set_parent_from(span, &headers);
    }
}

use axum::http as reqwest_headers;

struct HeaderInjector<'a>(&'a mut reqwest_headers::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            reqwest_headers::HeaderName::from_bytes(key.as_bytes()),
            reqwest_headers::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
