//! Counts and times every request a service answers: `http_server_requests_total` (per service,
//! method, route template, status and status class) and `http_server_request_duration_seconds`
//! (per status class only, so the histogram's series stay few). Unmatched paths count as route
//! `unmatched`: a raw path would let any client mint new series.
//!
//! A tower layer rather than `axum::middleware::from_fn`, and the series' handles are looked up
//! in the recorder once and kept: the middleware boxed the rest of the stack and its future, and
//! the recorder hashed freshly allocated labels, on every request (together a few per cent of
//! the CPU of an accepted delivery request, which passes two routers).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::Method;
use metrics::{Counter, Histogram};
use tower::{Layer, Service};

use crate::metrics::status_class;

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Adds [`RequestMetrics`] to a service.
#[derive(Clone)]
pub struct RequestMetricsLayer {
    series: Arc<SeriesCache>,
}

impl RequestMetricsLayer {
    /// Requests answered by `service` (the `service` label).
    pub fn new(service: &'static str) -> Self {
        Self { series: Arc::new(SeriesCache { service, by_route: RwLock::default() }) }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics { inner, series: self.series.clone() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    series: Arc<SeriesCache>,
}

impl<S> Service<Request> for RequestMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        Timed { inner: self.inner.call(request), started: Instant::now(), method, route, series: self.series.clone() }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, counted and timed when it is ready.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: Method,
        route: Option<MatchedPath>,
        series: Arc<SeriesCache>,
    }
}

impl<F, E> Future for Timed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let route = this.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            let series = this.series.get(this.method, route, response.status().as_u16());
            series.duration.record(this.started.elapsed().as_secs_f64());
            series.total.increment(1);
        }
        Poll::Ready(result)
    }
}

/// The handles of one method, route and status.
#[derive(Clone)]
struct Series {
    duration: Histogram,
    total: Counter,
}

/// A route's series: one per method and status it answered with.
type RouteSeries = Vec<(Method, u16, Series)>;

/// The series of one service, by route, then method and status (a route sees few of those).
struct SeriesCache {
    service: &'static str,
    by_route: RwLock<HashMap<String, RouteSeries>>,
}

impl SeriesCache {
    fn get(&self, method: &Method, route: &str, status: u16) -> Series {
        let find = |found: &RouteSeries| {
            found.iter().find(|(m, s, _)| m == method && *s == status).map(|(_, _, series)| series.clone())
        };
        let known = self.by_route.read().unwrap_or_else(|e| e.into_inner()).get(route).and_then(find);
        if let Some(series) = known {
            return series;
        }
        let mut by_route = self.by_route.write().unwrap_or_else(|e| e.into_inner());
        let of_route = by_route.entry(route.to_owned()).or_default();
        if let Some(series) = find(of_route) {
            return series;
        }
        let series = self.register(method, route, status);
        of_route.push((method.clone(), status, series.clone()));
        series
    }

    fn register(&self, method: &Method, route: &str, status: u16) -> Series {
        let (service, method, route) = (self.service.to_owned(), method.as_str().to_owned(), route.to_owned());
        let class = status_class(status);
        let timing = [("service", service), ("method", method), ("route", route), ("status_class", class.to_owned())];
        let duration = metrics::histogram!("http_server_request_duration_seconds", &timing);
        let [service, method, route, class] = timing;
        let counting = [service, method, route, ("status", status.to_string()), class];
        let total = metrics::counter!("http_server_requests_total", &counting);
        Series { duration, total }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn count(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[tokio::test]
    async fn counts_each_request_under_its_route_method_and_status() {
        let handle = crate::metrics::handle();
        let router = Router::new()
            .route("/items/{id}", get(|| async { "ok" }))
            .layer(RequestMetricsLayer::new("metrics-layer-test"));
        let send = |uri: &'static str| {
            let router = router.clone();
            async move { router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap().status() }
        };
        for _ in 0..3 {
            assert_eq!(send("/items/1").await, 200);
        }
        assert_eq!(send("/nowhere").await, 404);

        let text = handle.render();
        let ok = r#"http_server_requests_total{service="metrics-layer-test",method="GET",route="/items/{id}",status="200",status_class="2xx"}"#;
        assert_eq!(count(&text, ok), 3.0, "{text}");
        let missed = r#"http_server_requests_total{service="metrics-layer-test",method="GET",route="unmatched",status="404",status_class="4xx"}"#;
        assert_eq!(count(&text, missed), 1.0, "{text}");
        let timed = r#"http_server_request_duration_seconds_count{service="metrics-layer-test",method="GET",route="/items/{id}",status_class="2xx"}"#;
        assert_eq!(count(&text, timed), 3.0, "{text}");
    }
}
