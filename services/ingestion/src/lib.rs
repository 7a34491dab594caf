//! The ingestion service: the public front door for delivery requests.
//!
//! It validates a request, puts it on the `delivery-requests` queue and answers `202 Accepted`
//! only once the queue has durably stored it (the reference answered before sending). It keeps
//! no business data: only the ids it handed out and the responses to idempotency keys.

pub mod api;
pub mod domain;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use contracts::messages::DELIVERY_REQUESTS_QUEUE;
use platform::bus::{Queue, QueueOptions};
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::AppState;
pub use domain::Limits;
pub use store::{IngestionStore, PostgresIngestionStore, SqliteIngestionStore};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "ingestion";

/// Settings for the ingestion service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-ingestion",
    about = "Fabrikam ingestion service: accepts delivery requests and queues them durably"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FABRIKAM_INGESTION_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// The bus holding the delivery-requests queue: sqlite://PATH (embedded) or
    /// nats://HOST:PORT[,HOST:PORT...][?prefix=..&replicas=..] (NATS JetStream).
    #[arg(long, env = "FABRIKAM_BUS_URL", default_value = "sqlite://./data/bus.db")]
    pub bus_url: String,

    /// Where accepted ids and idempotent responses are kept: sqlite://PATH (embedded) or
    /// postgres://USER@HOST/DB (shared by several ingestion processes; postgresql:// works too).
    #[arg(long, env = "FABRIKAM_INGESTION_DB", default_value = "sqlite://./data/ingestion.db")]
    pub database_url: String,

    #[command(flatten)]
    pub settings: Settings,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Behaviour settings, separate from where things live so the all-in-one runner can reuse them.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "ingestion-settings")]
pub struct Settings {
    /// The heaviest package accepted, in kilograms (the largest drone payload).
    #[arg(long, env = "FABRIKAM_MAX_PACKAGE_WEIGHT", default_value_t = 25.0)]
    pub max_package_weight: f64,

    /// How long a response is replayed for a repeated Idempotency-Key, in hours.
    #[arg(long, env = "FABRIKAM_IDEMPOTENCY_HOURS", default_value_t = 24)]
    pub idempotency_hours: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { max_package_weight: 25.0, idempotency_hours: 24 }
    }
}

/// Opens ingestion's own store named by `url`: `sqlite://PATH`, or `postgres://...`
/// (`postgresql://...`).
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn IngestionStore>> {
    let store: Arc<dyn IngestionStore> = if platform::postgres::is_postgres_url(url) {
        // The URL stays out of the message: it may carry a password.
        Arc::new(PostgresIngestionStore::open(url).await.context("opening ingestion store on PostgreSQL")?)
    } else if url.starts_with("sqlite:") {
        let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
        Arc::new(SqliteIngestionStore::open(&path).await.with_context(|| format!("opening ingestion store {url}"))?)
    } else {
        anyhow::bail!("unsupported ingestion store URL: expected sqlite://PATH or postgres://USER@HOST/DB");
    };
    Ok(store)
}

/// The complete HTTP router; also starts the task that forgets expired idempotency keys.
pub fn router(
    queue: Arc<dyn Queue>,
    store: Arc<dyn IngestionStore>,
    clock: SharedClock,
    settings: &Settings,
    common: &CommonArgs,
    shutdown: CancellationToken,
) -> axum::Router {
    let window = chrono::Duration::hours(i64::from(settings.idempotency_hours));
    spawn_idempotency_purge(store.clone(), clock.clone(), window, shutdown);
    let state = AppState {
        queue: queue.clone(),
        store: store.clone(),
        clock,
        limits: Limits { max_package_weight: settings.max_package_weight },
        idempotency_window: window,
        identity: platform::identity_http::router_policy(common),
    };
    ServiceRouter::new(SERVICE, api::routes(state))
        .readiness(platform::bus::readiness_probe(queue))
        .readiness(platform::http::probe("ingestion-store", move || {
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
    let queue = platform::bus::open_queue(&config.bus_url, DELIVERY_REQUESTS_QUEUE, QueueOptions::default())
        .await
        .with_context(|| format!("opening the bus at {}", config.bus_url))?;
    let store = open_store(&config.database_url).await?;
    let app = router(queue, store, clock, &config.settings, &config.common, shutdown.clone());
    tracing::info!(service = SERVICE, addr = ?starting.addr(), "listening");
    starting.finish(app).await?;
    Ok(())
}

fn spawn_idempotency_purge(
    store: Arc<dyn IngestionStore>,
    clock: SharedClock,
    window: chrono::Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {
                    if let Err(err) = store.purge_responses(clock.now() - window).await {
                        tracing::warn!(error = %err, "purging expired idempotency keys failed");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
