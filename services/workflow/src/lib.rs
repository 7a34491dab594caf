//! The workflow service (the guide's "scheduler"): drains the `delivery-requests` queue and,
//! for each request, stores the package, gets a drone and creates the delivery by calling
//! package, dronescheduler and delivery over HTTP. Reschedules and cancels are applied to the
//! delivery (and a cancel releases the drone). Every step is idempotent, so a redelivered
//! message is harmless; transient failures come back later with backoff, and a message that
//! cannot succeed goes to the dead letters with its last error.
//!
//! Its own HTTP port serves health, metrics and a read-only list of dead letters.

pub mod accounts;
pub mod admin;
pub mod cli;
pub mod consumer;
pub mod domain;
pub mod downstream;
mod keyed_lock;
pub mod processor;
pub mod resilience;
pub mod state;
pub mod store;
pub mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use contracts::messages::DELIVERY_REQUESTS_QUEUE;
use platform::backoff::Backoff;
use platform::bus::{Queue, QueueOptions};
use platform::clock::{SharedClock, SystemClock};
use platform::config::CommonArgs;
use platform::geo::HashingGeocoder;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use consumer::ConsumerOptions;
pub use downstream::{Downstreams, Endpoints};
pub use processor::Processor;
pub use store::{WorkflowStore, open_store};
pub use supervisor::{Supervisor, SupervisorOptions};

use crate::resilience::{BreakerSettings, BudgetSettings, GuardSettings};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "workflow";

/// Settings for the workflow service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-workflow",
    about = "Fabrikam workflow service: turns queued delivery requests into scheduled deliveries"
)]
pub struct Config {
    /// Address of the health/metrics/dead-letter endpoint.
    #[arg(long, env = "FABRIKAM_WORKFLOW_LISTEN", default_value = "127.0.0.1:8085")]
    pub listen: SocketAddr,

    /// The bus holding the delivery-requests queue: sqlite://PATH (embedded) or
    /// nats://HOST:PORT[,HOST:PORT...][?prefix=..&replicas=..] (NATS JetStream).
    #[arg(long, env = "FABRIKAM_BUS_URL", default_value = "sqlite://./data/bus.db")]
    pub bus_url: String,

    /// Where workflow state is kept: sqlite://PATH (one workflow process) or
    /// postgres://USER@HOST/DB (shared by every workflow and supervisor process).
    #[arg(long, env = "FABRIKAM_WORKFLOW_STORE_URL", default_value = "sqlite://./data/workflow.db")]
    pub store_url: String,

    /// Base URL of the package service.
    #[arg(long, env = "FABRIKAM_PACKAGE_URL", default_value = "http://127.0.0.1:8083")]
    pub package_url: String,

    /// Base URL of the drone scheduler.
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_URL", default_value = "http://127.0.0.1:8084")]
    pub dronescheduler_url: String,

    /// Base URL of the delivery service.
    #[arg(long, env = "FABRIKAM_DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    pub delivery_url: String,

    #[command(flatten)]
    pub settings: Settings,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Messages the workflow processes at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// How the workflow consumes, retries, protects its downstreams and gives up.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "workflow-settings")]
pub struct Settings {
    /// Messages processed at once. A message spends most of its time waiting on the stores'
    /// commits, so this, not CPU, bounded how many deliveries a second were scheduled: 256
    /// rather than 64 scheduled about a quarter more on two cores (BENCHMARKS.md, "Session 15").
    #[arg(long, env = "FABRIKAM_WORKFLOW_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    /// Seconds after it was accepted that a request must be done by; past that it is given up:
    /// its drone is released, the delivery shows failed with the reason, and the message goes
    /// to the dead letters. Waiting for a free drone or a downstream to recover counts.
    #[arg(long, env = "FABRIKAM_WORKFLOW_COMPLETE_WITHIN", default_value_t = 3600)]
    pub complete_within_secs: u64,

    /// Deliveries of a message before the queue dead-letters it (a safety net: the
    /// complete-within deadline normally ends retries first).
    #[arg(long, env = "FABRIKAM_WORKFLOW_MAX_ATTEMPTS", default_value_t = 200)]
    pub max_attempts: u32,

    /// Seconds a received message stays leased before it is redelivered (extended while working).
    #[arg(long, env = "FABRIKAM_WORKFLOW_ACK_WAIT", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// Timeout of one downstream call, in milliseconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_CALL_TIMEOUT_MS", default_value_t = 5000)]
    pub call_timeout_ms: u64,

    /// First retry delay of a message in milliseconds; doubles per attempt (with jitter) up to
    /// the maximum.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BACKOFF_BASE_MS", default_value_t = 200)]
    pub backoff_base_ms: u64,

    /// Longest retry delay of a message, in seconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BACKOFF_MAX_SECS", default_value_t = 60)]
    pub backoff_max_secs: u64,

    /// Quick retries inside one downstream call, for blips (connection errors, 5xx without
    /// Retry-After); bounded by the retry budget.
    #[arg(long, env = "FABRIKAM_WORKFLOW_CALL_RETRIES", default_value_t = 2)]
    pub call_retries: u32,

    /// Retry budget: retries allowed per call made, over a 10 s window (plus 10 per window).
    #[arg(long, env = "FABRIKAM_WORKFLOW_RETRY_BUDGET", default_value_t = 0.2)]
    pub retry_budget: f64,

    /// Bulkhead: calls in flight at once per downstream.
    #[arg(long, env = "FABRIKAM_WORKFLOW_DOWNSTREAM_MAX_IN_FLIGHT", default_value_t = 64)]
    pub downstream_max_in_flight: usize,

    /// Bulkhead: how long a call waits for a free slot, in milliseconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BULKHEAD_WAIT_MS", default_value_t = 2000)]
    pub bulkhead_wait_ms: u64,

    /// Circuit breaker: share of failed calls (0..1) over the last 10 s that opens it.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    pub breaker_failure_ratio: f64,

    /// Circuit breaker: calls in the window before it may open.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BREAKER_MIN_CALLS", default_value_t = 20)]
    pub breaker_min_calls: u32,

    /// Circuit breaker: how long it stays open before a probe call, in milliseconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BREAKER_BREAK_MS", default_value_t = 5000)]
    pub breaker_break_ms: u64,

    /// How often the supervisor looks for overdue workflows and unfinished compensations, in
    /// milliseconds. `0` runs no supervisor in this process (run `fabrikam-supervisor`).
    #[arg(long, env = "FABRIKAM_WORKFLOW_SUPERVISE_EVERY_MS", default_value_t = 10_000)]
    pub supervise_every_ms: u64,

    /// Accept and queue requests but do not consume them (maintenance, ingest benchmarks).
    #[arg(long, env = "FABRIKAM_WORKFLOW_PAUSED")]
    pub paused: bool,

    /// Base URL of the account service. Set: a request that came with an account is scheduled
    /// only while that account is active (a suspended or unknown account fails the request
    /// with that reason). Unset: accounts are not checked.
    #[arg(long, env = "FABRIKAM_ACCOUNT_URL")]
    pub account_url: Option<String>,

    /// How long an account the account service called active is trusted without asking again,
    /// in milliseconds; a suspension stops new deliveries within this time. 0 asks every time.
    #[arg(long, env = "FABRIKAM_WORKFLOW_ACCOUNT_CACHE_MS", default_value_t = 2000)]
    pub account_cache_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            complete_within_secs: 3600,
            max_attempts: 200,
            ack_wait_secs: 30,
            call_timeout_ms: 5000,
            backoff_base_ms: 200,
            backoff_max_secs: 60,
            call_retries: 2,
            retry_budget: 0.2,
            downstream_max_in_flight: 64,
            bulkhead_wait_ms: 2000,
            breaker_failure_ratio: 0.5,
            breaker_min_calls: 20,
            breaker_break_ms: 5000,
            supervise_every_ms: 10_000,
            paused: false,
            account_url: None,
            account_cache_ms: 2000,
        }
    }
}

impl Settings {
    /// Options for opening the queue this service consumes.
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
            heartbeat: Duration::from_secs(self.ack_wait_secs.max(1)) / 3,
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms.max(1)),
                max: Duration::from_secs(self.backoff_max_secs.max(1)),
            },
            drain,
        }
    }

    /// What guards each downstream.
    pub fn guard_settings(&self) -> GuardSettings {
        let defaults = GuardSettings::default();
        GuardSettings {
            breaker: BreakerSettings {
                failure_ratio: self.breaker_failure_ratio.clamp(0.01, 1.0),
                min_calls: self.breaker_min_calls.max(1),
                break_for: Duration::from_millis(self.breaker_break_ms.max(1)),
                ..BreakerSettings::default()
            },
            budget: BudgetSettings { ratio: self.retry_budget.max(0.0), ..BudgetSettings::default() },
            max_in_flight: self.downstream_max_in_flight.max(1),
            bulkhead_wait: Duration::from_millis(self.bulkhead_wait_ms),
            call_retries: self.call_retries,
            ..defaults
        }
    }

    /// The supervisor's settings; `None` when this process runs none.
    pub fn supervisor_options(&self) -> Option<SupervisorOptions> {
        (self.supervise_every_ms > 0)
            .then(|| SupervisorOptions { every: Duration::from_millis(self.supervise_every_ms), batch: 100 })
    }
}

/// The processor wired to the downstream services and the workflow store.
pub fn processor(
    endpoints: &Endpoints,
    settings: &Settings,
    store: Arc<dyn WorkflowStore>,
    clock: SharedClock,
) -> Processor {
    let timeout = Duration::from_millis(settings.call_timeout_ms.max(1));
    let guards = settings.guard_settings();
    let mut downstreams = Downstreams::new(endpoints, timeout, &guards);
    if let Some(url) = &settings.account_url {
        let cache_for = Duration::from_millis(settings.account_cache_ms);
        downstreams = downstreams.with_accounts(url, timeout, &guards, cache_for);
    }
    Processor {
        downstreams,
        geocoder: Arc::new(HashingGeocoder::default()),
        store,
        clock,
        complete_within: Duration::from_secs(settings.complete_within_secs.max(1)),
    }
}

/// A supervisor for `processor`'s store, named after this process.
pub fn supervisor(processor: &Processor, options: SupervisorOptions) -> Supervisor {
    Supervisor {
        store: processor.store.clone(),
        processor: processor.clone(),
        options,
        holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4()),
    }
}

/// Health (readiness: the bus and the workflow store answer), metrics, and the operator API
/// (dead letters, workflow state).
pub fn router(queue: Arc<dyn Queue>, store: Arc<dyn WorkflowStore>, common: &CommonArgs) -> axum::Router {
    let store_probe = store.clone();
    ServiceRouter::new(SERVICE, admin::routes(queue.clone(), store))
        .readiness(platform::bus::readiness_probe(queue))
        .readiness(platform::http::probe("workflow-store", move || {
            let store = store_probe.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .options(common.http_options())
        .build()
}

/// Runs the consumer, the supervisor (unless disabled) and the HTTP endpoint until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let queue = platform::bus::open_queue(&config.bus_url, DELIVERY_REQUESTS_QUEUE, config.settings.queue_options())
        .await
        .with_context(|| format!("opening the bus at {}", config.bus_url))?;
    let store = open_store(&config.store_url).await?;
    let endpoints = Endpoints {
        package: config.package_url.clone(),
        dronescheduler: config.dronescheduler_url.clone(),
        delivery: config.delivery_url.clone(),
    };
    let processor = processor(&endpoints, &config.settings, store.clone(), Arc::new(SystemClock));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(options) = config.settings.supervisor_options() {
        tasks.spawn(supervisor(&processor, options).run(shutdown.clone()));
    }
    let options = config.settings.consumer_options(config.common.shutdown_grace());
    if config.settings.paused {
        tracing::warn!(service = SERVICE, "paused: requests stay queued until the workflow runs unpaused");
    } else {
        tasks.spawn(consumer::run(queue.clone(), processor, options, shutdown.clone()));
    }
    let app = router(queue, store, &config.common);
    tracing::info!(service = SERVICE, addr = ?starting.addr(), "listening");
    starting.finish(app).await?;
    tasks.join_all().await;
    Ok(())
}

/// Settings for the supervisor run as its own process (`fabrikam-supervisor`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-supervisor",
    about = "Fabrikam workflow supervisor: gives up overdue deliveries and finishes their compensation \
             (releases the drone, marks the delivery failed). Run any number; one acts at a time."
)]
pub struct SupervisorConfig {
    /// Address of the health/metrics endpoint.
    #[arg(long, env = "FABRIKAM_SUPERVISOR_LISTEN", default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,

    /// The workflow store (the workflows' own): postgres://USER@HOST/DB, or sqlite://PATH.
    #[arg(long, env = "FABRIKAM_WORKFLOW_STORE_URL", default_value = "sqlite://./data/workflow.db")]
    pub store_url: String,

    /// Base URL of the package service.
    #[arg(long, env = "FABRIKAM_PACKAGE_URL", default_value = "http://127.0.0.1:8083")]
    pub package_url: String,

    /// Base URL of the drone scheduler.
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_URL", default_value = "http://127.0.0.1:8084")]
    pub dronescheduler_url: String,

    /// Base URL of the delivery service.
    #[arg(long, env = "FABRIKAM_DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    pub delivery_url: String,

    /// How often it looks, in milliseconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_SUPERVISE_EVERY_MS", default_value_t = 10_000)]
    pub supervise_every_ms: u64,

    /// Timeout of one downstream call, in milliseconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_CALL_TIMEOUT_MS", default_value_t = 5000)]
    pub call_timeout_ms: u64,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the supervisor alone, with health and metrics, until `shutdown`.
pub async fn run_supervisor(
    config: SupervisorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let store = open_store(&config.store_url).await?;
    let endpoints = Endpoints {
        package: config.package_url.clone(),
        dronescheduler: config.dronescheduler_url.clone(),
        delivery: config.delivery_url.clone(),
    };
    let settings = Settings { call_timeout_ms: config.call_timeout_ms, ..Settings::default() };
    let processor = processor(&endpoints, &settings, store.clone(), Arc::new(SystemClock));
    let every = Duration::from_millis(config.supervise_every_ms.max(10));
    let task = tokio::spawn(supervisor(&processor, SupervisorOptions { every, batch: 100 }).run(shutdown.clone()));
    let app = ServiceRouter::new("supervisor", axum::Router::new())
        .readiness(platform::http::probe("workflow-store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .options(config.common.http_options())
        .build();
    tracing::info!(service = "supervisor", addr = ?starting.addr(), "listening");
    starting.finish(app).await?;
    task.await?;
    Ok(())
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
        <super::SupervisorConfig as clap::CommandFactory>::command().debug_assert();
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
