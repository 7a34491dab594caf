//! Prometheus metrics: one recorder per process, rendered by every service's `/metrics`.
//!
//! In the all-in-one process the services share the recorder; each series carries a
//! `service` label so they stay apart. Every family is listed in docs/metrics.md.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets for waits that last longer than a request: message lateness, accept → scheduled.
/// Up to 10 minutes, since a message that waited out retries or a paused consumer is late by that much.
const LATENESS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The histograms measured in [`LATENESS_BUCKETS`].
const LATENESS_FAMILIES: &[&str] = &[
    "bus_message_lateness_seconds",
    "workflow_message_lateness_seconds",
    "delivery_accept_to_scheduled_seconds",
    "drone_event_lateness_seconds",
];

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .expect("bucket list is not empty");
        // Full names: the exporter tries full-name matchers before suffix ones.
        for name in LATENESS_FAMILIES {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).to_owned()), LATENESS_BUCKETS)
                .expect("bucket list is not empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may exist (a test harness); then ours only renders what it sees.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn metrics upkeep thread");
        handle
    })
}

/// Prometheus text for `/metrics`: what the recorder holds, then the process collector's
/// families, read afresh for every scrape.
pub fn render() -> String {
    let mut text = handle().render();
    text.push_str(&crate::process::render());
    text
}

/// `2xx`, `4xx`, …: the status class that error-ratio alerts group by.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(308), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(499), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
