//! The delivery service: every scheduled or in-progress delivery, its tracking events (stage
//! changes), notify-me requests and confirmation. The workflow creates, reschedules and cancels
//! deliveries; customers read them through the gateway.

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

pub use store::{DeliveryStore, SqliteDeliveryStore};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "delivery";

/// Settings for the delivery service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-delivery",
    about = "Fabrikam delivery service: deliveries, their tracking, notify-me requests and confirmations"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FABRIKAM_DELIVERY_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,

    /// Where deliveries are stored: sqlite://PATH.
    #[arg(long, env = "FABRIKAM_DELIVERY_DB", default_value = "sqlite://./data/delivery.db")]
    pub database_url: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Opens the store named by `url`.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn DeliveryStore>> {
    let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
    let store = SqliteDeliveryStore::open(&path).await.with_context(|| format!("opening delivery store {url}"))?;
    Ok(Arc::new(store))
}

/// The complete HTTP router: API routes plus health, metrics and the shared layers.
pub fn router(store: Arc<dyn DeliveryStore>, clock: SharedClock, common: &CommonArgs) -> axum::Router {
    let state = api::AppState { store: store.clone(), clock };
    ServiceRouter::new(SERVICE, api::routes(state))
        .readiness(platform::http::probe("delivery-store", move || {
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
    let store = open_store(&config.database_url).await?;
    let app = router(store, clock, &config.common);
    tracing::info!(service = SERVICE, addr = %listener.local_addr()?, "listening");
    platform::http::serve(listener, app, shutdown, config.common.shutdown_grace()).await?;
    Ok(())
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
