//! Logging and traces: one function sets both up. It takes the log's
//! writer, so tests can capture what would be logged (and prove no
//! personal data is in it). Traces, when `telemetry.otlp_endpoint` is set,
//! are the call spans (the same fields as the call's log line, nothing
//! personal), exported over OTLP/gRPC and continuing the caller's W3C
//! `traceparent`.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings, TelemetrySettings};

/// Set when traces are exported: incoming `traceparent`s are then read.
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

/// The trace exporter, to flush when the process ends.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    /// Exports the spans still buffered (waits at most the exporter's
    /// timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.0 {
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "traces not all exported at exit");
            }
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured
/// filter. Fails if a subscriber is already installed. With an OTLP
/// endpoint it must run inside the Tokio runtime the exporter will use.
pub fn init<W>(
    settings: &LogSettings,
    telemetry: &TelemetrySettings,
    writer: W,
) -> Result<Traces, String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .map_err(|e| format!("bad log filter: {e}"))?;
    let log = tracing_subscriber::fmt::layer().with_writer(writer);
    let log = match settings.format {
        LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => log.with_filter(filter).boxed(),
    };
    let provider = telemetry
        .endpoint()?
        .map(|endpoint| exporter(telemetry, endpoint))
        .transpose()?;
    // vnid's own spans only (the call span, and the events logged in it):
    // never a library's, which might carry a statement or a header.
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("vnid"))
            .with_filter(Targets::new().with_target("vnid", tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init()
        .map_err(|e| e.to_string())?;
    if provider.is_some() {
        let _ = PROPAGATOR.set(TraceContextPropagator::new());
    }
    Ok(Traces(provider))
}

fn exporter(
    telemetry: &TelemetrySettings,
    endpoint: http::Uri,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(telemetry.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            telemetry.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Makes `span` continue the trace of the caller's `traceparent` (W3C
/// Trace Context), when traces are exported.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(propagator) = PROPAGATOR.get() {
        let parent = propagator.extract(&Headers(headers));
        // Refused only when the span is disabled: nothing to continue.
        let _ = span.set_parent(parent);
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
