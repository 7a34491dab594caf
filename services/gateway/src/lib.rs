//! The gateway: the one public entry point. It serves a route table (built in, or a file that
//! is reloaded when it changes; see [`routes`]) under `/api/…` and the reference's
//! `/v0.1.0/api/…`, keeps every internal route out of reach, authenticates callers once
//! ([`auth`]) and forwards them to the services as a signed identity, rate-limits per client IP
//! and per account ([`limits`]), terminates TLS ([`tls`]) and aggregates invoices ([`invoice`]).

pub mod admission;
pub mod auth;
pub mod invoice;
pub mod limits;
pub mod options;
pub mod proxy;
pub mod routes;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use platform::identity::IdentityKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use options::{AuthOptions, GatewayOptions, ProtectionOptions, TlsOptions, UpstreamUrls};
pub use platform::client::InProcess;

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

/// The gateway's routers: the public one, and the health/metrics one when those are served on
/// `--internal-listen`.
pub struct Routers {
    pub public: Router,
    pub internal: Option<Router>,
}

/// Builds the gateway: loads the route table (and starts watching its file until `shutdown`).
/// Callers' identities are signed with `identity`.
pub fn build(
    upstreams: UpstreamUrls,
    options: &GatewayOptions,
    common: &CommonArgs,
    identity: IdentityKey,
    shutdown: &CancellationToken,
) -> anyhow::Result<Routers> {
    build_with_in_process(upstreams, InProcess::default(), options, common, identity, shutdown)
}

/// As [`build`], calling the upstreams in `in_process` directly rather than over HTTP.
pub fn build_with_in_process(
    upstreams: UpstreamUrls,
    in_process: InProcess,
    options: &GatewayOptions,
    common: &CommonArgs,
    identity: IdentityKey,
    shutdown: &CancellationToken,
) -> anyhow::Result<Routers> {
    let live = table::Live::start(upstreams, in_process, options, common, identity, shutdown)?;
    let mut public = live.router();
    if options.internal_listen.is_some() {
        public = public.layer(middleware::from_fn(hide_operations_routes));
    }
    public = public.layer(CompressionLayer::new());
    if options.tls.tls_cert.is_some() {
        let hsts = format!("max-age={}", options.tls.hsts_max_age_secs);
        public = public.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&hsts).expect("ASCII header value"),
        ));
    }
    if let Some(cors) = cors(&options.protection.cors_origins)? {
        public = public.layer(cors);
    }
    let internal = options.internal_listen.map(|_| ServiceRouter::new(SERVICE, Router::new()).build());
    Ok(Routers { public, internal })
}

/// The public router alone, for callers that serve health on the same port (tests, embedded).
pub fn router(
    upstreams: UpstreamUrls,
    options: &GatewayOptions,
    common: &CommonArgs,
    identity: IdentityKey,
    shutdown: &CancellationToken,
) -> anyhow::Result<Router> {
    Ok(build(upstreams, options, common, identity, shutdown)?.public)
}

/// With `--internal-listen`, health and metrics are not answered on the public port.
async fn hide_operations_routes(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/metrics" || path == "/healthz" || path.starts_with("/healthz/") {
        return Problem::not_found("no such route").into_response();
    }
    next.run(request).await
}

fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o.trim()).with_context(|| format!("--cors-origins: {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::LOCATION, header::RETRY_AFTER, header::HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600)),
    ))
}

/// The signing key from `--identity-secret`, which the gateway cannot run without.
pub fn identity_key(common: &CommonArgs) -> anyhow::Result<IdentityKey> {
    let secret = common.identity_secret.as_deref().context(
        "the gateway needs --identity-secret (FABRIKAM_IDENTITY_SECRET): it signs the caller's identity for the \
         services with it",
    )?;
    IdentityKey::new(secret).map_err(|e| anyhow::anyhow!("--identity-secret: {e}"))
}

/// Runs the gateway on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let identity = identity_key(&config.common)?;
    let grace = config.common.shutdown_grace();
    let routers = build(config.upstreams, &config.options, &config.common, identity, &shutdown)?;
    if let (Some(addr), Some(internal)) = (config.options.internal_listen, routers.internal) {
        let internal_listener =
            TcpListener::bind(addr).await.with_context(|| format!("binding --internal-listen {addr}"))?;
        tracing::info!(service = SERVICE, addr = ?internal_listener.local_addr().ok(), "health and metrics listening");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = platform::http::serve(internal_listener, internal, stop, grace).await {
                tracing::error!(error = %err, "the internal listener failed");
            }
        });
    }
    tracing::info!(service = SERVICE, addr = ?listener.local_addr().ok(), tls = config.options.tls.tls_cert.is_some(), "listening");
    match (config.options.tls.tls_cert, config.options.tls.tls_key) {
        (Some(cert), Some(key)) => {
            let files = tls::TlsFiles { cert, key };
            let every = Duration::from_millis(config.options.reload_poll_ms.max(100));
            tls::serve(listener, routers.public, files, every, shutdown, grace).await
        }
        _ => Ok(platform::http::serve(listener, routers.public, shutdown, grace).await?),
    }
}

/// A 403 for a client address the access lists refuse.
fn forbidden() -> Problem {
    metrics::counter!("gateway_requests_rejected_total", "service" => SERVICE, "reason" => "ip_denied").increment(1);
    Problem::new(StatusCode::FORBIDDEN, "requests from this address are not allowed")
}

#[cfg(test)]
mod cli_tests {
    use clap::Parser;

    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn lists_and_tls_flags_parse() {
        let config = super::Config::try_parse_from([
            "fabrikam-gateway",
            "--allow-ips",
            "10.0.0.0/8,127.0.0.1",
            "--cors-origins",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert_eq!(config.options.protection.allow_ips.len(), 2);
        assert_eq!(config.options.protection.cors_origins.len(), 2);
        assert!(super::Config::try_parse_from(["fabrikam-gateway", "--tls-cert", "c.pem"]).is_err());
        assert!(super::Config::try_parse_from(["fabrikam-gateway", "--deny-ips", "nonsense"]).is_err());
    }
}
