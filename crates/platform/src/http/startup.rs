//! Start-up: a process answers its health endpoints from the moment it listens, before its
//! start-up work (migrations, fleet seeding, opening the bus) is done. Meanwhile it is live,
//! not started and not ready, and any other request gets 503 with Retry-After; then it serves
//! the finished router. Kubernetes' startup probe (`/healthz/startup`) then sees "starting"
//! instead of a connection that never answers, and liveness cannot kill a slow migration.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::problem::Problem;

/// A listener already answering while the process starts; [`Starting::finish`] hands it the
/// finished router.
pub struct Starting {
    app: Arc<OnceLock<Router>>,
    addr: Option<SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Starting {
    /// Starts answering on `listener` (health only) until `shutdown`.
    pub fn serve(listener: TcpListener, shutdown: CancellationToken, drain: Duration) -> Self {
        let app: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
        let addr = listener.local_addr().ok();
        let current = app.clone();
        let router = Router::new().fallback_service(tower::service_fn(move |req: Request| {
            let finished = current.get().cloned();
            async move {
                Ok::<_, std::convert::Infallible>(match finished {
                    Some(app) => app.oneshot(req).await.unwrap_or_else(|never| match never {}),
                    None => while_starting(req.uri().path()),
                })
            }
        }));
        let server = tokio::spawn(super::serve(listener, router, shutdown, drain));
        Self { app, addr, server }
    }

    /// Where it listens.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Start-up is done: serves `app` from now on, until shutdown.
    pub async fn finish(self, app: Router) -> std::io::Result<()> {
        let _ = self.app.set(app);
        self.server.await.map_err(std::io::Error::other)?
    }
}

/// The answer to `path` before start-up is done.
pub fn while_starting(path: &str) -> Response {
    let unavailable = |status: &str| (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": status })));
    match path {
        "/healthz/live" | "/healthz" => axum::Json(json!({ "status": "live" })).into_response(),
        "/healthz/startup" => unavailable("starting").into_response(),
        "/healthz/ready" => unavailable("not ready").into_response(),
        "/metrics" => crate::metrics::render().into_response(),
        _ => Problem::unavailable("the service is starting", 1).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn answers_health_while_starting_then_serves_the_app() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let starting = Starting::serve(listener, shutdown.clone(), Duration::from_secs(1));
        let addr = starting.addr().unwrap();
        assert_eq!(get(addr, "/healthz/live").await.0, 200);
        assert_eq!(get(addr, "/healthz/startup").await, (503, r#"{"status":"starting"}"#.to_owned()));
        assert_eq!(get(addr, "/healthz/ready").await.0, 503);
        assert_eq!(get(addr, "/api/things").await.0, 503);

        let app = Router::new().route("/api/things", axum::routing::get(|| async { "things" }));
        let served = tokio::spawn(starting.finish(app));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(get(addr, "/api/things").await, (200, "things".to_owned()));
        shutdown.cancel();
        served.await.unwrap().unwrap();
    }
}
