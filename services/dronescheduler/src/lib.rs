//! The drone scheduler (first version): owns the fleet, assigns to each delivery the free drone
//! able to carry its package that is nearest the pickup, releases it on cancel, and reports the
//! miles and hours flown per owner and month from the assigned flight plans.
//!
//! A drone is busy for its planned flight (depot → pickup → drop-off → depot at its speed,
//! shortened by the time scale); the flight simulation with live positions comes later.

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

pub use domain::FleetConfig;
pub use store::{DroneStore, PostgresDroneStore, SqliteDroneStore};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "dronescheduler";

/// Settings for the drone scheduler.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-dronescheduler",
    about = "Fabrikam drone scheduler: the fleet, drone assignment and utilization per owner and month"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_LISTEN", default_value = "127.0.0.1:8084")]
    pub listen: SocketAddr,

    /// Where the fleet and assignments are stored: sqlite://PATH (embedded) or
    /// postgres://USER@HOST/DB (shared by several scheduler processes; postgresql:// works too).
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_DB", default_value = "sqlite://./data/dronescheduler.db")]
    pub database_url: String,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Fleet settings as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Drones created on first start (an existing fleet is kept).
    #[arg(long, env = "FABRIKAM_FLEET_SIZE", default_value_t = 300)]
    pub fleet_size: u32,

    /// Drone cruising speed, miles per hour.
    #[arg(long, env = "FABRIKAM_DRONE_SPEED_MPH", default_value_t = 40.0)]
    pub drone_speed_mph: f64,

    /// Simulated seconds per real second: how much faster than life flights pass.
    #[arg(long, env = "FABRIKAM_TIME_SCALE", default_value_t = 60.0)]
    pub time_scale: f64,

    /// Seconds a caller is told to wait (Retry-After) when no drone is free.
    #[arg(long, env = "FABRIKAM_NO_DRONE_RETRY_AFTER", default_value_t = 5)]
    pub retry_after_secs: u64,
}

impl From<FleetArgs> for FleetConfig {
    fn from(a: FleetArgs) -> Self {
        FleetConfig {
            size: a.fleet_size,
            speed_mph: a.drone_speed_mph,
            time_scale: a.time_scale,
            retry_after_secs: a.retry_after_secs,
            ..FleetConfig::default()
        }
    }
}

/// Opens the store named by `url` (`sqlite://PATH`, or `postgres://...`/`postgresql://...`) and
/// creates the fleet on first start.
pub async fn open_store(url: &str, fleet: &FleetConfig) -> anyhow::Result<Arc<dyn DroneStore>> {
    fleet.check().map_err(anyhow::Error::msg)?;
    let store: Arc<dyn DroneStore> = if platform::postgres::is_postgres_url(url) {
        // The URL stays out of the message: it may carry a password.
        Arc::new(PostgresDroneStore::open(url).await.context("opening drone store on PostgreSQL")?)
    } else if url.starts_with("sqlite:") {
        let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
        Arc::new(SqliteDroneStore::open(&path).await.with_context(|| format!("opening drone store {url}"))?)
    } else {
        anyhow::bail!("unsupported drone store URL: expected sqlite://PATH or postgres://USER@HOST/DB");
    };
    store.seed(&fleet.depots, &domain::initial_fleet(fleet)).await.context("creating the fleet")?;
    Ok(store)
}

/// The complete HTTP router: API routes plus health, metrics and the shared layers.
pub fn router(
    store: Arc<dyn DroneStore>,
    fleet: &FleetConfig,
    clock: SharedClock,
    common: &CommonArgs,
) -> axum::Router {
    let state = api::AppState { store: store.clone(), fleet: Arc::new(fleet.clone()), clock };
    ServiceRouter::new(SERVICE, api::routes(state))
        .readiness(platform::http::probe("dronescheduler-store", move || {
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
    let fleet = FleetConfig::from(config.fleet.clone());
    let store = open_store(&config.database_url, &fleet).await?;
    let app = router(store, &fleet, clock, &config.common);
    tracing::info!(service = SERVICE, addr = %listener.local_addr()?, drones = fleet.size, "listening");
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
