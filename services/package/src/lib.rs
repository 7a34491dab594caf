//! The package service: stores every package a delivery carries, answers lookups by id, and
//! sums an owner's package weight per month for invoicing.
//!
//! Internal API (called by workflow); only the monthly summary is public through the gateway.

pub mod api;
pub mod domain;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use store::{PackageStore, PostgresPackageStore, SqlitePackageStore};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "package";

/// Settings for the package service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-package",
    about = "Fabrikam package service: stores packages and sums their weight per owner and month"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FABRIKAM_PACKAGE_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,

    /// Where packages are stored: sqlite://PATH (embedded) or postgres://USER@HOST/DB (shared by
    /// several package processes; postgresql:// works too).
    #[arg(long, env = "FABRIKAM_PACKAGE_DB", default_value = "sqlite://./data/package.db")]
    pub database_url: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Opens the store named by `url`: `sqlite://PATH` or `postgres://...` (`postgresql://...`).
pub async fn open_store(url: &str, clock: SharedClock) -> anyhow::Result<Arc<dyn PackageStore>> {
    let store: Arc<dyn PackageStore> = if platform::postgres::is_postgres_url(url) {
        // The URL stays out of the message: it may carry a password.
        Arc::new(PostgresPackageStore::open(url, clock).await.context("opening package store on PostgreSQL")?)
    } else if url.starts_with("sqlite:") {
        let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
        Arc::new(SqlitePackageStore::open(&path, clock).await.with_context(|| format!("opening package store {url}"))?)
    } else {
        anyhow::bail!("unsupported package store URL: expected sqlite://PATH or postgres://USER@HOST/DB");
    };
    Ok(store)
}

/// The complete HTTP router: API routes plus health, metrics and the shared layers.
pub fn router(store: Arc<dyn PackageStore>, common: &CommonArgs) -> axum::Router {
    let identity = platform::identity_http::router_policy(common);
    ServiceRouter::new(SERVICE, api::routes(store.clone(), identity))
        .readiness(platform::http::probe("package-store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .options(common.http_options())
        .build()
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.common.identity_policy()?;
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let store = open_store(&config.database_url, clock).await?;
    let app = router(store, &config.common);
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
