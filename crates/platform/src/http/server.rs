use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::RequestMetricsLayer;
use crate::problem::Problem;

/// Header carrying the request id, set when the client sent none and echoed back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Something a service needs before it can take traffic (its store, its bus).
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    /// What is checked, for the readiness report.
    fn name(&self) -> &str;
    /// `Err` with a reason when the dependency cannot be used now.
    async fn check(&self) -> Result<(), String>;
}

/// A readiness probe made of a name and an async check.
pub fn probe<F, Fut>(name: &'static str, check: F) -> Arc<dyn ReadinessProbe>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    struct FnProbe<F> {
        name: &'static str,
        check: F,
    }

    #[async_trait]
    impl<F, Fut> ReadinessProbe for FnProbe<F>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        fn name(&self) -> &str {
            self.name
        }

        async fn check(&self) -> Result<(), String> {
            (self.check)().await
        }
    }

    Arc::new(FnProbe { name, check })
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Largest request body accepted, in bytes; larger gets 413.
    pub body_limit_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { body_limit_bytes: 64 * 1024 }
    }
}

/// Wraps a service's API routes with the shared routes and layers.
pub struct ServiceRouter {
    service: &'static str,
    api: Router,
    probes: Vec<Arc<dyn ReadinessProbe>>,
    options: HttpOptions,
}

impl ServiceRouter {
    pub fn new(service: &'static str, api: Router) -> Self {
        Self { service, api, probes: Vec::new(), options: HttpOptions::default() }
    }

    pub fn readiness(mut self, probe: Arc<dyn ReadinessProbe>) -> Self {
        self.probes.push(probe);
        self
    }

    pub fn options(mut self, options: HttpOptions) -> Self {
        self.options = options;
        self
    }

    /// The finished router: API routes, `/healthz*`, `/metrics`, layers, problem+json fallback.
    pub fn build(self) -> Router {
        let service = self.service;
        // Install the recorder now: series recorded before it exists would be lost.
        crate::metrics::handle();
        let probes = Arc::new(self.probes);
        let health = Router::new()
            .route("/healthz", get(|| async { axum::Json(json!({ "status": "OK" })) }))
            .route("/healthz/live", get(|| async { axum::Json(json!({ "status": "live" })) }))
            // Built once start-up work is done (see `Starting` for the answer before that).
            .route("/healthz/startup", get(|| async { axum::Json(json!({ "status": "started" })) }))
            .route(
                "/healthz/ready",
                get(move || {
                    let probes = probes.clone();
                    async move { readiness_report(&probes).await }
                }),
            )
            .route("/metrics", get(|| async { crate::metrics::render() }));

        // One span per request, a child of the caller's (W3C traceparent), with the
        // OpenTelemetry HTTP attributes and the delivery id when the route has one.
        let trace = TraceLayer::new_for_http()
            .make_span_with(move |req: &Request| crate::telemetry::spans::http_server(service, req))
            .on_request(())
            .on_response(|response: &axum::http::Response<_>, latency: Duration, span: &tracing::Span| {
                crate::telemetry::spans::http_server_response(response, span);
                tracing::debug!(
                    status = response.status().as_u16(),
                    latency_us = latency.as_micros() as u64,
                    "finished"
                );
            });

        self.api
            .merge(health)
            .fallback(|| async { Problem::not_found("no such route") })
            .layer(MapResponseLayer::new(problem_for_bare_errors))
            .layer(RequestMetricsLayer::new(service))
            .layer(DefaultBodyLimit::max(self.options.body_limit_bytes))
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                    .layer(trace)
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    .layer(CatchPanicLayer::custom(|_| Problem::internal("handler panicked").into_response())),
            )
    }
}

async fn readiness_report(probes: &[Arc<dyn ReadinessProbe>]) -> Response {
    let mut failures = serde_json::Map::new();
    for probe in probes {
        if let Err(reason) = probe.check().await {
            failures.insert(probe.name().to_owned(), reason.into());
        }
    }
    if failures.is_empty() {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "not ready", "failing": failures })))
            .into_response()
    }
}

/// axum answers an unknown method (405) or a routing miss with an empty body; turn those into
/// problem documents so every error a client sees has the same shape.
fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_bare = response.headers().get(header::CONTENT_TYPE).is_none();
    if is_bare && (status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND) {
        let allow = response.headers().get(header::ALLOW).cloned();
        let mut problem = Problem::new(status, "this route does not accept that method").into_response();
        if status == StatusCode::NOT_FOUND {
            problem = Problem::not_found("no such resource").into_response();
        }
        if let Some(allow) = allow {
            problem.headers_mut().insert(header::ALLOW, allow);
        }
        return problem;
    }
    response
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish (bounded by `drain`) before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let stopping = shutdown.clone();
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(?addr, "in-flight requests did not finish within the drain period");
            Ok(())
        }
    }
}
