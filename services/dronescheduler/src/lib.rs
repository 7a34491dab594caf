//! The drone scheduler: owns the fleet, assigns to each delivery the free drone able to carry its
//! package that is nearest the pickup, flies it (simulated), publishes what the drone does on the
//! `drone-events` stream, releases it on cancel, and reports the miles and hours flown per owner
//! and month.
//!
//! A flight goes depot → pickup → drop-off → depot along great circles at the drone's speed, its
//! times shortened by the time scale ([`flight`]); a release before the pickup turns the drone
//! back home. The flight clock ([`flight_clock`]) publishes each flight's events ([`events`]) as
//! their time comes, with the store as its outbox.

pub mod api;
pub mod domain;
pub mod events;
pub mod fleet_gauge;
pub mod flight;
pub mod flight_clock;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use contracts::events::DRONE_EVENTS_STREAM;
use platform::bus::stream::EventStream;
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use domain::FleetConfig;
pub use flight_clock::{FlightClock, flight_clock};
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

    /// The bus holding the drone-events stream: sqlite://PATH (embedded) or
    /// nats://HOST:PORT[,HOST:PORT...][?prefix=..] (NATS JetStream).
    #[arg(long, env = "FABRIKAM_BUS_URL", default_value = "sqlite://./data/bus.db")]
    pub bus_url: String,

    /// How often the flight clock publishes the drone events that have come due, milliseconds.
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_TICK_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tick_ms: u64,

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

    /// Seconds an expedited request that found no drone keeps first call on the next free one
    /// without asking again (each retry extends it); longer than the workflow's longest retry
    /// backoff. 0: expedited requests never wait ahead of others.
    #[arg(long, env = "FABRIKAM_EXPEDITED_WAIT_SECS", default_value_t = domain::DEFAULT_EXPEDITED_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub expedited_wait_secs: u64,

    /// Real seconds between the DronePosition events of a drone flying for a delivery (from
    /// its departure to the drop-off); 0: none. Applies to flights assigned from then on.
    #[arg(long, env = "FABRIKAM_POSITION_EVERY_SECS", default_value_t = 5)]
    pub position_every_secs: u64,
}

impl From<FleetArgs> for FleetConfig {
    fn from(a: FleetArgs) -> Self {
        FleetConfig {
            size: a.fleet_size,
            speed_mph: a.drone_speed_mph,
            time_scale: a.time_scale,
            retry_after_secs: a.retry_after_secs,
            expedited_wait_secs: a.expedited_wait_secs,
            position_every_secs: a.position_every_secs,
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

/// Opens the `drone-events` stream on the bus at `bus_url` (`sqlite://PATH` or `nats://...`).
pub async fn open_events(bus_url: &str) -> anyhow::Result<Arc<dyn EventStream>> {
    // Ten minutes of de-duplication (NATS; the embedded stream keeps every id): far longer than
    // a flight clock's lease, after which a crashed claimer's events are published again.
    platform::bus::stream::open_stream(bus_url, DRONE_EVENTS_STREAM, Duration::from_secs(600))
        .await
        .with_context(|| format!("opening the {DRONE_EVENTS_STREAM} stream"))
}

/// The complete HTTP router: API routes plus health (readiness: the store answers), metrics and
/// the shared layers.
pub fn router(
    store: Arc<dyn DroneStore>,
    fleet: &FleetConfig,
    clock: SharedClock,
    common: &CommonArgs,
) -> axum::Router {
    service_router(store, fleet, clock, common).build()
}

/// [`router`] whose readiness also requires the `drone-events` stream to answer: what a process
/// running the flight clock serves.
pub fn router_with_stream(
    store: Arc<dyn DroneStore>,
    stream: Arc<dyn EventStream>,
    fleet: &FleetConfig,
    clock: SharedClock,
    common: &CommonArgs,
) -> axum::Router {
    service_router(store, fleet, clock, common)
        .readiness(platform::http::probe("drone-events", move || {
            let stream = stream.clone();
            async move { stream.ping().await.map_err(|e| e.to_string()) }
        }))
        .build()
}

fn service_router(
    store: Arc<dyn DroneStore>,
    fleet: &FleetConfig,
    clock: SharedClock,
    common: &CommonArgs,
) -> ServiceRouter {
    let identity = platform::identity_http::router_policy(common);
    let state = api::AppState { store: store.clone(), fleet: Arc::new(fleet.clone()), clock, identity };
    ServiceRouter::new(SERVICE, api::routes(state))
        .readiness(platform::http::probe("dronescheduler-store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .options(common.http_options())
}

/// Runs the service (HTTP and the flight clock) on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.common.identity_policy()?;
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let fleet = FleetConfig::from(config.fleet.clone());
    let store = open_store(&config.database_url, &fleet).await?;
    let stream = open_events(&config.bus_url).await?;
    // Its own token, so a server that fails stops the clock without cancelling the caller's.
    let ticking = shutdown.child_token();
    let tick = Duration::from_millis(config.tick_ms);
    let clocked = tokio::spawn(flight_clock(store.clone(), stream.clone(), clock.clone(), tick, ticking.clone()));
    let gauged =
        tokio::spawn(fleet_gauge::run(store.clone(), clock.clone(), fleet_gauge::REFRESH_EVERY, ticking.clone()));
    let app = router_with_stream(store, stream, &fleet, clock, &config.common);
    tracing::info!(service = SERVICE, addr = ?starting.addr(), drones = fleet.size, "listening");
    let served = starting.finish(app).await;
    ticking.cancel();
    clocked.await?;
    gauged.await?;
    served?;
    Ok(())
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn the_bus_and_the_flight_clock_tick_are_flags() {
        use clap::Parser;
        let config =
            super::Config::try_parse_from(["x", "--bus-url", "nats://127.0.0.1:4222", "--tick-ms", "50"]).unwrap();
        assert_eq!((config.bus_url.as_str(), config.tick_ms), ("nats://127.0.0.1:4222", 50));
        assert!(super::Config::try_parse_from(["x", "--tick-ms", "0"]).is_err(), "a clock that never waits");
    }
}
