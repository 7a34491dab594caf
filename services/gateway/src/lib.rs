//! The gateway: the one public entry point. It routes the public API (see [`routes`]) to the
//! services behind it, under `/api/…` and the reference's `/v0.1.0/api/…`, and keeps every
//! internal route out of reach. TLS, authentication and rate limits come with a later issue.

pub mod proxy;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::response::Response;
use axum::routing::on;
use platform::Problem;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use routes::{PREFIXES, PUBLIC_ROUTES, Upstream};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "gateway";

/// Settings for the gateway.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fabrikam-gateway", about = "Fabrikam gateway: the public entry point routing to the services")]
pub struct Config {
    /// Public address to listen on.
    #[arg(long, env = "FABRIKAM_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub upstreams: UpstreamUrls,

    #[command(flatten)]
    pub options: GatewayOptions,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where the services behind the gateway listen.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamUrls {
    #[arg(long, env = "FABRIKAM_INGESTION_URL", default_value = "http://127.0.0.1:8081")]
    pub ingestion_url: String,
    #[arg(long, env = "FABRIKAM_DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    pub delivery_url: String,
    #[arg(long, env = "FABRIKAM_PACKAGE_URL", default_value = "http://127.0.0.1:8083")]
    pub package_url: String,
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_URL", default_value = "http://127.0.0.1:8084")]
    pub dronescheduler_url: String,
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_URL", default_value = "http://127.0.0.1:8087")]
    pub deliveryhistory_url: String,
}

/// How the gateway protects the services behind it.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "gateway-options")]
pub struct GatewayOptions {
    /// How long to wait for an upstream, in milliseconds.
    #[arg(long, env = "FABRIKAM_GATEWAY_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,

    /// Requests forwarded at once; more wait (see --queue-wait-ms), then get 503 + Retry-After
    /// instead of piling connections onto the services until they fail.
    #[arg(long, env = "FABRIKAM_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// How long a request waits for a free slot before it is shed, in milliseconds.
    #[arg(long, env = "FABRIKAM_GATEWAY_QUEUE_WAIT_MS", default_value_t = 1000)]
    pub queue_wait_ms: u64,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self { timeout_ms: 10_000, max_in_flight: 1024, queue_wait_ms: 1000 }
    }
}

#[derive(Clone)]
struct Gateway {
    client: reqwest::Client,
    upstreams: Arc<UpstreamUrls>,
    body_limit: usize,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    queue_wait: Duration,
}

impl Gateway {
    fn base(&self, upstream: Upstream) -> &str {
        let u = &self.upstreams;
        let url = match upstream {
            Upstream::Ingestion => &u.ingestion_url,
            Upstream::Delivery => &u.delivery_url,
            Upstream::Package => &u.package_url,
            Upstream::DroneScheduler => &u.dronescheduler_url,
            Upstream::DeliveryHistory => &u.deliveryhistory_url,
        };
        url.trim_end_matches('/')
    }
}

/// The complete router: every public route under both prefixes, health and metrics.
pub fn router(upstreams: UpstreamUrls, options: &GatewayOptions, common: &CommonArgs) -> Router {
    let gateway = Gateway {
        client: platform::client::http_client(Duration::from_millis(options.timeout_ms.max(1))),
        upstreams: Arc::new(upstreams),
        body_limit: common.body_limit,
        in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
        max_in_flight: options.max_in_flight.max(1),
        queue_wait: Duration::from_millis(options.queue_wait_ms),
    };
    let mut api = Router::new();
    for prefix in PREFIXES {
        for route in PUBLIC_ROUTES {
            let filter = axum::routing::MethodFilter::try_from(route.method.clone()).expect("standard method");
            let (upstream, target) = (route.upstream, route.target);
            let handler = move |State(gateway): State<Gateway>,
                                Path(params): Path<Vec<(String, String)>>,
                                RawQuery(query): RawQuery,
                                request: Request| async move {
                forward(gateway, upstream, target, prefix, params, query, request).await
            };
            api = api.route(&format!("{prefix}{}", route.public), on(filter, handler));
        }
    }
    ServiceRouter::new(SERVICE, api.with_state(gateway)).options(common.http_options()).build()
}

async fn forward(
    gateway: Gateway,
    upstream: Upstream,
    target: &'static str,
    prefix: &str,
    params: Vec<(String, String)>,
    query: Option<String>,
    request: Request,
) -> Result<Response, Problem> {
    let mut url = format!("{}{}", gateway.base(upstream), routes::fill(target, &params));
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(&query);
    }
    let name = match upstream {
        Upstream::Ingestion => "ingestion",
        Upstream::Delivery => "delivery",
        Upstream::Package => "package",
        Upstream::DroneScheduler => "dronescheduler",
        Upstream::DeliveryHistory => "deliveryhistory",
    };
    let Ok(Ok(_slot)) = tokio::time::timeout(gateway.queue_wait, gateway.in_flight.clone().acquire_owned()).await
    else {
        metrics::counter!("gateway_requests_shed_total", "service" => SERVICE).increment(1);
        return Err(Problem::unavailable("the system is at capacity; retry shortly", 1));
    };
    let in_flight = gateway.max_in_flight - gateway.in_flight.available_permits();
    metrics::gauge!("downstream_in_flight", "service" => SERVICE, "downstream" => "all").set(in_flight as f64);
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let forwarded = proxy::forward(&gateway.client, name, url, request, gateway.body_limit, prefix).await;
    record_call(name, method, &forwarded, started.elapsed());
    forwarded
}

/// The caller's view of one forwarded call, in the same families as the workflow's calls. An
/// error is what says the upstream is unwell: no answer, or a 5xx.
fn record_call(upstream: &'static str, method: String, result: &Result<Response, Problem>, took: Duration) {
    let status = match result {
        Ok(response) => Some(response.status().as_u16()),
        // A body over the limit never left the gateway; anything else is a failed hop.
        Err(problem) if problem.status == 413 => return,
        Err(_) => None,
    };
    let outcome = status.map_or("transport_error", platform::metrics::status_class);
    let unwell = status.is_none_or(|code| code >= 500);
    metrics::counter!(
        "downstream_calls_total",
        "service" => SERVICE,
        "downstream" => upstream,
        "outcome" => if unwell { "error" } else { "ok" }
    )
    .increment(1);
    metrics::histogram!(
        "downstream_call_duration_seconds",
        "service" => SERVICE,
        "downstream" => upstream,
        "method" => method,
        "outcome" => outcome
    )
    .record(took.as_secs_f64());
}

/// Runs the gateway on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let app = router(config.upstreams, &config.options, &config.common);
    tracing::info!(service = SERVICE, addr = ?starting.addr(), "listening");
    starting.finish(app).await?;
    Ok(())
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
