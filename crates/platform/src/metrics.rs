//! Prometheus metrics: one recorder per process, rendered by every service's `/metrics`.
//!
//! In the all-in-one process the services share the recorder; each series carries a
//! `service` label so they stay apart. Every family is listed in docs/metrics.md.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
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
const LATENESS_FAMILIES: &[&str] =
    &["bus_message_lateness_seconds", "workflow_message_lateness_seconds", "delivery_accept_to_scheduled_seconds"];

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

/// Middleware recording `http_server_requests_total` (per service, method, route template,
/// status and status class) and `http_server_request_duration_seconds` (per status class only,
/// so the histogram's series stay few). Unmatched paths count as route `unmatched`: a raw path
/// would let any client mint new series.
pub async fn track_requests(service: &'static str, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record_request(service, &method, route, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

/// The two series one kind of request records into.
struct RequestSeries {
    duration: metrics::Histogram,
    total: metrics::Counter,
}

/// What picks a request's series, but the route template.
type SeriesGroup = (&'static str, Method, u16);

/// Series handles by group and route template. Registering a series builds its labels and
/// looks it up in the recorder (a few allocations and a hash per label): done once per kind of
/// request, not once per request.
static REQUEST_SERIES: LazyLock<RwLock<SeriesByGroup>> = LazyLock::new(Default::default);

type SeriesByGroup = HashMap<SeriesGroup, HashMap<Box<str>, RequestSeries>>;

fn record_request(service: &'static str, method: &Method, route: &str, status: u16, seconds: f64) {
    let group = (service, method.clone(), status);
    if let Ok(map) = REQUEST_SERIES.read()
        && let Some(series) = map.get(&group).and_then(|routes| routes.get(route))
    {
        series.record(seconds);
        return;
    }
    let series = RequestSeries::register(service, method, route, status);
    series.record(seconds);
    // Handles taken before the recorder is installed go nowhere: only keep real ones.
    if HANDLE.get().is_some()
        && let Ok(mut map) = REQUEST_SERIES.write()
    {
        map.entry(group).or_default().insert(route.into(), series);
    }
}

impl RequestSeries {
    fn register(service: &'static str, method: &Method, route: &str, status: u16) -> Self {
        let timing = [
            ("service", service.to_owned()),
            ("method", method.to_string()),
            ("route", route.to_owned()),
            ("status_class", status_class(status).to_owned()),
        ];
        let duration = metrics::histogram!("http_server_request_duration_seconds", &timing);
        let [service, method, route, class] = timing;
        let counting = [service, method, route, ("status", status.to_string()), class];
        let total = metrics::counter!("http_server_requests_total", &counting);
        Self { duration, total }
    }

    fn record(&self, seconds: f64) {
        self.duration.record(seconds);
        self.total.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handles kept after a request's first time count every later one, under the route
    /// template and the status it answered.
    #[tokio::test]
    async fn every_request_counts_once_in_its_series() {
        use axum::routing::get;
        use tower::ServiceExt;

        handle();
        let app = axum::Router::new()
            .route("/things/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(|req: Request, next: Next| track_requests("series-test", req, next)));
        for path in ["/things/1", "/things/2", "/things/3", "/nowhere"] {
            let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let text = render();
        let line = |route: &str, status: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("http_server_requests_total{")
                        && l.contains("service=\"series-test\"")
                        && l.contains(&format!("route=\"{route}\""))
                        && l.contains(&format!("status=\"{status}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(line("/things/{id}", "200").as_deref(), Some("3"), "{text}");
        assert_eq!(line("unmatched", "404").as_deref(), Some("1"), "{text}");
    }

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
