//! The delivery history service: a read model of every finished (completed, cancelled or
//! failed) delivery, with its tracking and confirmation, kept for invoicing and customer
//! queries long after the delivery service lets it go.
//!
//! It is fed only by the `delivery-events` stream, from its own consumer group starting at the
//! beginning of the retained events, so a new group on an empty store rebuilds the whole
//! history. A delivery finished more than once (failed, replayed, then completed) keeps its
//! latest finish.
//!
//! Public API (through the gateway):
//! - `GET /api/deliveryhistory/{deliveryId}` → `200` with the `FinishedDelivery`, or `404`.
//! - `GET /api/deliveryhistory?ownerId=&from=&to=&limit=&after=` → `200 { items, next }`: the
//!   owner's finished deliveries in order of finish time (then delivery id), `from` inclusive,
//!   `to` exclusive; `next` is the cursor to pass as `after` for the next page, `null` on the
//!   last. Bad parameters are a `400` problem naming each one (see [`params`]).

pub mod api;
pub mod consumer;
pub mod cursor;
pub mod domain;
pub mod params;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use contracts::events::DELIVERY_EVENTS_STREAM;
use platform::backoff::Backoff;
use platform::bus::QueueOptions;
use platform::bus::stream::{EventStream, StartAt, Subscription};
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use consumer::ConsumerOptions;
pub use store::{HistoryStore, PostgresHistoryStore, SqliteHistoryStore};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "deliveryhistory";

/// Settings for the delivery history service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-deliveryhistory",
    about = "Fabrikam delivery history: every finished delivery, fed by the delivery-events stream"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_LISTEN", default_value = "127.0.0.1:8087")]
    pub listen: SocketAddr,

    /// The bus holding the delivery-events stream: sqlite://PATH (embedded) or
    /// nats://HOST:PORT[,HOST:PORT...][?prefix=..] (NATS JetStream).
    #[arg(long, env = "FABRIKAM_BUS_URL", default_value = "sqlite://./data/bus.db")]
    pub bus_url: String,

    /// Where the history is stored: sqlite://PATH (embedded, one process) or
    /// postgres://USER@HOST/DB (shared by several history processes; postgresql:// works too).
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_DB", default_value = "sqlite://./data/deliveryhistory.db")]
    pub database_url: String,

    #[command(flatten)]
    pub settings: Settings,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// How the history consumes the stream.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "deliveryhistory-settings")]
pub struct Settings {
    /// Consumer group on delivery-events. Processes sharing one store share a group; a new
    /// group starts from the beginning of the stream, so a new group on an empty store
    /// rebuilds the history.
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_GROUP", default_value = "deliveryhistory")]
    pub group: String,

    /// Events handled at once.
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// Deliveries of an event before the stream dead-letters it. Store failures (and a process
    /// dying mid-event) use them up, so keep it high enough to ride out a store outage (with the
    /// backoff maximum, the default is about eight hours).
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_MAX_ATTEMPTS", default_value_t = 500)]
    pub max_attempts: u32,

    /// Seconds a received event stays leased before it is redelivered.
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_ACK_WAIT", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// First retry delay after a store failure, in milliseconds; doubles per attempt (with
    /// jitter) up to the maximum.
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_BACKOFF_BASE_MS", default_value_t = 200)]
    pub backoff_base_ms: u64,

    /// Longest retry delay after a store failure, in seconds.
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_BACKOFF_MAX_SECS", default_value_t = 60)]
    pub backoff_max_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            group: SERVICE.to_owned(),
            concurrency: 16,
            max_attempts: 500,
            ack_wait_secs: 30,
            backoff_base_ms: 200,
            backoff_max_secs: 60,
        }
    }
}

impl Settings {
    /// The group's lease and attempts.
    pub fn queue_options(&self) -> QueueOptions {
        QueueOptions {
            ack_wait: Duration::from_secs(self.ack_wait_secs.max(1)),
            max_attempts: self.max_attempts.max(1),
            ..QueueOptions::default()
        }
    }

    pub fn consumer_options(&self, drain: Duration) -> ConsumerOptions {
        ConsumerOptions {
            concurrency: self.concurrency.max(1),
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms.max(1)),
                max: Duration::from_secs(self.backoff_max_secs.max(1)),
            },
            drain,
        }
    }
}

/// Opens the store named by `url`: `sqlite://PATH` or `postgres://...` (`postgresql://...`).
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn HistoryStore>> {
    let store: Arc<dyn HistoryStore> = if platform::postgres::is_postgres_url(url) {
        // The URL stays out of the message: it may carry a password.
        Arc::new(PostgresHistoryStore::open(url).await.context("opening the delivery history store on PostgreSQL")?)
    } else if url.starts_with("sqlite:") {
        let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
        Arc::new(
            SqliteHistoryStore::open(&path)
                .await
                .with_context(|| format!("opening the delivery history store {url}"))?,
        )
    } else {
        anyhow::bail!("unsupported delivery history store URL: expected sqlite://PATH or postgres://USER@HOST/DB");
    };
    Ok(store)
}

/// Opens the `delivery-events` stream on the bus at `bus_url`.
pub async fn open_events(bus_url: &str) -> anyhow::Result<Arc<dyn EventStream>> {
    // The window only matters to publishers; the queue default keeps every process in step.
    let dedup_window = QueueOptions::default().dedup_window;
    platform::bus::stream::open_stream(bus_url, DELIVERY_EVENTS_STREAM, dedup_window)
        .await
        .with_context(|| format!("opening the {DELIVERY_EVENTS_STREAM} stream"))
}

/// Joins the history's consumer group, which starts at the beginning of the stream when new.
pub async fn subscribe(stream: &dyn EventStream, settings: &Settings) -> anyhow::Result<Arc<dyn Subscription>> {
    stream
        .subscribe(&settings.group, StartAt::Beginning, settings.queue_options())
        .await
        .with_context(|| format!("joining consumer group {:?} on {}", settings.group, stream.name()))
}

/// The HTTP router: API routes, health (readiness: the store answers) and metrics.
pub fn router(store: Arc<dyn HistoryStore>, common: &CommonArgs) -> axum::Router {
    service_router(store, common).build()
}

/// [`router`] whose readiness also requires the stream to answer: what a process running the
/// consumer serves.
pub fn router_with_stream(
    store: Arc<dyn HistoryStore>,
    stream: Arc<dyn EventStream>,
    common: &CommonArgs,
) -> axum::Router {
    service_router(store, common)
        .readiness(platform::http::probe("delivery-events", move || {
            let stream = stream.clone();
            async move { stream.ping().await.map_err(|e| e.to_string()) }
        }))
        .build()
}

fn service_router(store: Arc<dyn HistoryStore>, common: &CommonArgs) -> ServiceRouter {
    let identity = platform::identity_http::router_policy(common);
    ServiceRouter::new(SERVICE, api::routes(store.clone(), identity))
        .readiness(platform::http::probe("deliveryhistory-store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .options(common.http_options())
}

/// Runs the consumer and the HTTP endpoint on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.common.identity_policy()?;
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let store = open_store(&config.database_url).await?;
    let stream = open_events(&config.bus_url).await?;
    let subscription = subscribe(stream.as_ref(), &config.settings).await?;
    let options = config.settings.consumer_options(config.common.shutdown_grace());
    // Its own token, so a server that fails stops the consumer without cancelling the caller's.
    let consuming = shutdown.child_token();
    let consumer = tokio::spawn(consumer::run(subscription, store.clone(), options, consuming.clone()));
    let app = router_with_stream(store, stream, &config.common);
    tracing::info!(service = SERVICE, addr = ?starting.addr(), group = %config.settings.group, "listening");
    let served = starting.finish(app).await;
    consuming.cancel();
    consumer.await?;
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
    fn defaults_match_the_flags_defaults() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: super::Settings,
        }
        // Parsed without the environment's say: only the flags' own defaults.
        let parsed = Only::try_parse_from(["x"]).unwrap().settings;
        let default = super::Settings::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}
