//! The workflow service (the guide's "scheduler"): drains the `delivery-requests` queue and,
//! for each request, stores the package, gets a drone and creates the delivery by calling
//! package, dronescheduler and delivery over HTTP. Reschedules and cancels are applied to the
//! delivery (and a cancel releases the drone). Every step is idempotent, so a redelivered
//! message is harmless; transient failures come back later with backoff, and a message that
//! cannot succeed goes to the dead letters with its last error.
//!
//! Its own HTTP port serves health, metrics and a read-only list of dead letters.

pub mod consumer;
pub mod domain;
pub mod downstream;
mod keyed_lock;
pub mod processor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use contracts::messages::DELIVERY_REQUESTS_QUEUE;
use platform::Problem;
use platform::backoff::Backoff;
use platform::bus::{Queue, QueueOptions};
use platform::config::CommonArgs;
use platform::geo::HashingGeocoder;
use platform::http::ServiceRouter;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use consumer::ConsumerOptions;
pub use downstream::{Downstreams, Endpoints};
pub use processor::Processor;

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

/// How the workflow consumes and retries.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "workflow-settings")]
pub struct Settings {
    /// Messages processed at once.
    #[arg(long, env = "FABRIKAM_WORKFLOW_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Deliveries of a message before it goes to the dead letters.
    #[arg(long, env = "FABRIKAM_WORKFLOW_MAX_ATTEMPTS", default_value_t = 20)]
    pub max_attempts: u32,

    /// Seconds a received message stays leased before it is redelivered (extended while working).
    #[arg(long, env = "FABRIKAM_WORKFLOW_ACK_WAIT", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// Timeout of one downstream call, in milliseconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_CALL_TIMEOUT_MS", default_value_t = 5000)]
    pub call_timeout_ms: u64,

    /// First retry delay in milliseconds; doubles per attempt (with jitter) up to the maximum.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BACKOFF_BASE_MS", default_value_t = 200)]
    pub backoff_base_ms: u64,

    /// Longest retry delay, in seconds.
    #[arg(long, env = "FABRIKAM_WORKFLOW_BACKOFF_MAX_SECS", default_value_t = 60)]
    pub backoff_max_secs: u64,

    /// Accept and queue requests but do not consume them (maintenance, ingest benchmarks).
    #[arg(long, env = "FABRIKAM_WORKFLOW_PAUSED")]
    pub paused: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            max_attempts: 20,
            ack_wait_secs: 30,
            call_timeout_ms: 5000,
            backoff_base_ms: 200,
            backoff_max_secs: 60,
            paused: false,
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
}

/// The processor wired to the downstream services.
pub fn processor(endpoints: &Endpoints, settings: &Settings) -> Processor {
    Processor {
        downstreams: Downstreams::new(endpoints, Duration::from_millis(settings.call_timeout_ms.max(1))),
        geocoder: Arc::new(HashingGeocoder::default()),
    }
}

/// Health, metrics and `GET /api/deadletters`.
pub fn router(queue: Arc<dyn Queue>, common: &CommonArgs) -> axum::Router {
    let api = axum::Router::new().route("/api/deadletters", get(dead_letters)).with_state(queue.clone());
    ServiceRouter::new(SERVICE, api)
        .readiness(platform::bus::readiness_probe(queue))
        .options(common.http_options())
        .build()
}

/// Lists messages that failed for good, oldest first (`?limit=`, default 100).
async fn dead_letters(
    State(queue): State<Arc<dyn Queue>>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    let limit = match params.get("limit") {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| Problem::invalid_field("limit", "must be a number from 1 to 1000"))?,
    };
    let letters = queue.dead_letters(limit).await.map_err(|e| Problem::unavailable(e.to_string(), 1))?;
    let items: Vec<Value> = letters
        .into_iter()
        .map(|d| {
            let payload = serde_json::from_slice::<Value>(&d.payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.payload).into_owned()));
            json!({
                "messageId": d.id,
                "attempts": d.attempts,
                "lastError": d.last_error,
                "enqueuedAt": d.enqueued_at,
                "message": payload,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Runs the consumer and the HTTP endpoint until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let queue = platform::bus::open_queue(&config.bus_url, DELIVERY_REQUESTS_QUEUE, config.settings.queue_options())
        .await
        .with_context(|| format!("opening the bus at {}", config.bus_url))?;
    let endpoints = Endpoints {
        package: config.package_url.clone(),
        dronescheduler: config.dronescheduler_url.clone(),
        delivery: config.delivery_url.clone(),
    };
    let processor = processor(&endpoints, &config.settings);
    let options = config.settings.consumer_options(config.common.shutdown_grace());
    let consumer = if config.settings.paused {
        tracing::warn!(service = SERVICE, "paused: requests stay queued until the workflow runs unpaused");
        tokio::spawn(async {})
    } else {
        tokio::spawn(consumer::run(queue.clone(), processor, options, shutdown.clone()))
    };
    let app = router(queue, &config.common);
    tracing::info!(service = SERVICE, addr = %listener.local_addr()?, "listening");
    platform::http::serve(listener, app, shutdown, config.common.shutdown_grace()).await?;
    consumer.await?;
    Ok(())
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
