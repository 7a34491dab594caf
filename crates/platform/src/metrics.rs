//! Prometheus metrics: one recorder per process, rendered by every service's `/metrics`.
//!
//! In the all-in-one process the services share the recorder; each series carries a
//! `service` label so they stay apart.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .expect("bucket list is not empty");
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

/// Prometheus text for `/metrics`.
pub fn render() -> String {
    handle().render()
}

/// Middleware recording `http_server_requests_total` and `http_server_request_duration_seconds`
/// per service, method, route template and status.
pub async fn track_requests(service: &'static str, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("service", service.to_owned()), ("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_server_requests_total", &labels).increment(1);
    metrics::histogram!("http_server_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}
