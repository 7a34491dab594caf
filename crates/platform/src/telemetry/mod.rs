//! Logs and traces.
//!
//! Every process calls [`init`] once from `main` (the all-in-one process once for all its
//! services) and [`shutdown`] before it exits. Logs are JSON lines on stdout (or human-readable
//! lines), level per module through `RUST_LOG`. Spans are exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set ([`otel`]):
//! then they are OpenTelemetry spans through `tracing-opentelemetry`; otherwise they only get
//! trace and span ids ([`ids`]), for log lines and the `traceparent` of calls and messages. Every span the services open
//! carries a `service` attribute: in the all-in-one process, one process with one OpenTelemetry
//! resource (`service.name` = `fabrikam`), that attribute says which service a span belongs to.

mod ids;
pub mod json;
pub mod otel;
pub mod propagation;
pub mod spans;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use propagation::{continue_from, current_traceparent};
pub use spans::{record_delivery_id, record_owner_id};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    #[default]
    Json,
    /// Human-readable lines (for a terminal).
    Pretty,
}

/// How long [`shutdown`] waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The provider [`init`] installed, kept to flush it at [`shutdown`].
static PROVIDER: OnceLock<Mutex<Option<SdkTracerProvider>>> = OnceLock::new();

/// What [`init_with`] installs.
pub struct Setup {
    /// The process's name: the default `service.name` of its spans.
    pub service: String,
    pub format: LogFormat,
    /// Where log lines go.
    pub writer: BoxMakeWriter,
    pub spans: Spans,
}

/// What becomes of spans.
pub enum Spans {
    /// Exported when the `OTEL_*` environment names a collector, else ids only.
    FromEnvironment,
    /// OpenTelemetry spans, through this provider.
    Provider(SdkTracerProvider),
    /// Trace and span ids only: nothing is exported.
    IdsOnly,
}

impl Setup {
    /// Logs to stdout, spans per the environment.
    pub fn new(service: &str, format: LogFormat) -> Self {
        Self {
            service: service.to_owned(),
            format,
            writer: BoxMakeWriter::new(std::io::stdout),
            spans: Spans::FromEnvironment,
        }
    }

    pub fn writer<W: for<'w> MakeWriter<'w> + Send + Sync + 'static>(mut self, writer: W) -> Self {
        self.writer = BoxMakeWriter::new(writer);
        self
    }

    pub fn provider(mut self, provider: SdkTracerProvider) -> Self {
        self.spans = Spans::Provider(provider);
        self
    }

    pub fn ids_only(mut self) -> Self {
        self.spans = Spans::IdsOnly;
        self
    }
}

/// Installs logging and tracing for the process `service` from the environment. Safe to call
/// twice (the second call does nothing), which keeps tests that start several services simple.
/// Must run inside a Tokio runtime when OTLP export is configured.
pub fn init(service: &str, format: LogFormat) {
    init_with(Setup::new(service, format));
}

/// Installs `setup`; `false` when a subscriber was installed already (nothing changes then).
pub fn init_with(setup: Setup) -> bool {
    let (subscriber, provider) = subscriber(setup);
    let installed = subscriber.try_init().is_ok();
    if installed {
        *PROVIDER.get_or_init(|| Mutex::new(None)).lock().expect("provider lock") = provider;
    }
    installed
}

/// The subscriber `setup` describes, and the tracer provider its span layer exports through
/// (none when spans only get ids).
fn subscriber(setup: Setup) -> (impl tracing::Subscriber + Send + Sync + 'static, Option<SdkTracerProvider>) {
    let env = |name: &str| std::env::var(name).ok();
    let provider = match setup.spans {
        Spans::Provider(provider) => Some(provider),
        Spans::IdsOnly => None,
        Spans::FromEnvironment => match otel::export_from(env) {
            otel::Export::Off => None,
            export => match otel::provider(&export, otel::resource(&setup.service, env)) {
                Ok(provider) => Some(provider),
                Err(err) => {
                    // Tracing is an aid: a bad collector setting must not keep the service down.
                    eprintln!("tracing export disabled: {err}");
                    None
                }
            },
        },
    };
    let exported_spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fabrikam"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Activation puts the span's context in OpenTelemetry's thread-local on every poll of
            // every traced future; nothing here reads it (propagation and the JSON log lines ask the
            // span itself), and it was a few per cent of the CPU per request.
            .with_context_activation(false)
            .with_filter(filter_fn(exported))
    });
    let span_ids = provider.is_none().then(|| ids::IdsLayer.with_filter(filter_fn(exported)));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match setup.format {
        LogFormat::Json => json::JsonLayer::new(setup.writer).with_filter(filter).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(setup.writer).with_filter(filter).boxed(),
    };
    (tracing_subscriber::registry().with(exported_spans).with(span_ids).with(logs), provider)
}

/// What becomes part of a trace: spans at info and above, and warnings and errors as span
/// events (an error also marks its span). Libraries' own spans (HTTP/2, gRPC, the exporter)
/// stay out, so exporting never traces itself.
fn exported(meta: &Metadata<'_>) -> bool {
    let ours = !["h2", "hyper", "tonic", "tower", "opentelemetry", "reqwest", "sqlx", "async_nats"]
        .iter()
        .any(|prefix| meta.target().starts_with(prefix));
    let level = if meta.is_span() { Level::INFO } else { Level::WARN };
    ours && *meta.level() <= level
}

/// Flushes the spans still queued (waiting at most a couple of seconds for a collector) and
/// stops the exporter. Call once, as the process ends.
pub fn shutdown() {
    let Some(provider) = PROVIDER.get().and_then(|slot| slot.lock().ok()?.take()) else { return };
    // The SDK's shutdown blocks; off the async worker it cannot hold up other tasks.
    let done = std::thread::spawn(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
    let _ = done.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CapturedLogs;

    #[test]
    fn a_log_line_carries_the_trace_of_the_nearest_traced_span() {
        let provider = otel::provider(&otel::Export::Off, otel::resource("test", |_| None)).unwrap();
        log_lines_carry_the_trace_of_the_nearest_traced_span(|setup| setup.provider(provider));
    }

    #[test]
    fn with_ids_only_a_log_line_carries_the_trace_of_the_nearest_traced_span() {
        log_lines_carry_the_trace_of_the_nearest_traced_span(Setup::ids_only);
    }

    fn log_lines_carry_the_trace_of_the_nearest_traced_span(spans: impl FnOnce(Setup) -> Setup) {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let setup = spans(Setup::new("test", LogFormat::Json).writer(move || writer.clone()));
        let (subscriber, _provider) = subscriber(setup);
        let traceparent = "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01";
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", service = "ingestion");
            assert!(propagation::continue_from(&request, Some(traceparent)));
            let _in_request = request.enter();
            tracing::warn!("in a traced span");
            // A library's span: the log layer sees it, the span layer does not.
            let library = tracing::info_span!(target: "hyper::client", "library");
            let _in_library = library.enter();
            tracing::warn!("in a library's span inside it");
        });
        let text = logs.text();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_eq!(line["trace_id"], "5b8efff798038103d269b633813fc60c", "{line}");
            assert_eq!(line["service"], "ingestion", "{line}");
        }
        assert_eq!(lines[0]["span_id"], lines[1]["span_id"], "the request's span, not the library's");
        assert_ne!(lines[0]["span_id"], "eee19b7ec3c1b174", "a span of its own, a child of the caller's");
    }
}
