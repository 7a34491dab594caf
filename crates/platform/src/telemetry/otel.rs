//! The OpenTelemetry tracer provider: the SDK, configured from the standard `OTEL_*` variables.
//!
//! Spans are always created (their ids go into log lines and across process boundaries), but
//! they leave the process only when an OTLP endpoint is configured. The export runs on the SDK's
//! batch processor: its own thread, a bounded queue that drops spans when full, so neither a
//! request nor shutdown waits on a collector that is down or slow.

use std::time::Duration;

use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

/// The variables that turn export on (the OTLP exporter reads them itself too).
const ENDPOINT_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// How long one export may take when the environment does not say: a collector that does not
/// answer costs a dropped batch, not a stuck exporter thread.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Nowhere: spans exist for their ids only.
    Off,
    /// OTLP over gRPC to this endpoint.
    Otlp(String),
}

/// Reads the export choice from `var` (the environment, or a map in tests). An empty or
/// `OTEL_TRACES_EXPORTER=none` value turns export off, as the specification says.
pub fn export_from(var: impl Fn(&str) -> Option<String>) -> Export {
    if var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return Export::Off;
    }
    ENDPOINT_VARIABLES
        .iter()
        .filter_map(|name| var(name))
        .map(|value| value.trim().to_owned())
        .find(|value| !value.is_empty())
        .map_or(Export::Off, Export::Otlp)
}

/// The resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK) win over
/// `default_service`, the process's own name.
pub fn resource(default_service: &str, var: impl Fn(&str) -> Option<String>) -> Resource {
    let builder = Resource::builder();
    let named = var("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    if named { builder.build() } else { builder.with_service_name(default_service.to_owned()).build() }
}

/// A provider for `export`; the sampler comes from `OTEL_TRACES_SAMPLER`/`_ARG` (the SDK's
/// default configuration reads them; parent-based always-on when unset).
pub fn provider(export: &Export, resource: Resource) -> Result<SdkTracerProvider, String> {
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Export::Otlp(endpoint) = export else { return Ok(builder.build()) };
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis);
    // The tonic channel connects lazily: building it needs a Tokio runtime but no collector.
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(timeout)
        .build()
        .map_err(|err| format!("OTLP exporter for {endpoint}: {err}"))?;
    // BatchConfigBuilder::default() honours OTEL_BSP_* (queue size, delay, batch size).
    let batch = BatchSpanProcessor::builder(exporter).with_batch_config(BatchConfigBuilder::default().build()).build();
    Ok(builder.with_span_processor(batch).build())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn exports_only_when_an_endpoint_is_set() {
        assert_eq!(export_from(env(&[])), Export::Off);
        assert_eq!(export_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), Export::Off);
        assert_eq!(
            export_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")])),
            Export::Otlp("http://127.0.0.1:4317".to_owned())
        );
        let both = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
        ]);
        assert_eq!(export_from(both), Export::Otlp("http://b:4317".to_owned()), "the traces-specific one wins");
        let none = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), ("OTEL_TRACES_EXPORTER", "none")]);
        assert_eq!(export_from(none), Export::Off);
    }

    #[test]
    fn the_process_name_is_the_default_service_name() {
        let named = resource("gateway", env(&[]));
        let service = named.get(&opentelemetry::Key::new("service.name")).map(|v| v.to_string());
        assert_eq!(service.as_deref(), Some("gateway"));
        // An explicit OTEL_SERVICE_NAME is left for the SDK's own detector to apply.
        let explicit = resource("gateway", env(&[("OTEL_SERVICE_NAME", "edge")]));
        assert_ne!(
            explicit.get(&opentelemetry::Key::new("service.name")).map(|v| v.to_string()).as_deref(),
            Some("gateway")
        );
    }
}
