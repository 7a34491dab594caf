//! Logging set-up: JSON lines on stdout, level per module through `RUST_LOG`.
//!
//! Every service calls [`init`] once from `main`; the all-in-one process calls it once for all.
//! Fields such as `service` and `delivery_id` come from spans, so a log line carries them
//! without each call site repeating them.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    #[default]
    Json,
    /// Human-readable lines (for a terminal).
    Pretty,
}

/// Installs the global subscriber. Safe to call twice (the second call does nothing), which
/// keeps tests that build several services in one process simple.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_span_events(FmtSpan::NONE)
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::fmt().with_env_filter(filter).try_init(),
    };
    // An error means a subscriber is already installed: fine.
    let _ = result;
}
