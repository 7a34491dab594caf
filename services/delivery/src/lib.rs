//! The delivery service: every scheduled or in-progress delivery, its tracking events (stage
//! changes), notify-me requests and confirmation. The workflow creates, reschedules and cancels
//! deliveries; customers read them through the gateway.
//!
//! Besides the routes in the shared API document, the workflow uses one internal route:
//!
//! `PUT /api/deliveries/{id}/closure` with a [`DeliveryClosure`](contracts::delivery::DeliveryClosure)
//! `{ delivery, stage, reason }` records that a delivery will never fly: `stage` is `Failed` (the
//! workflow gave up on the request and compensated) or `Cancelled` (a cancel arrived before the
//! request was processed), `reason` is 1 to 500 characters (trimmed), and `delivery` is what a
//! `PUT /api/deliveries/{id}` would carry except that `droneId` may be empty. Answers:
//! - `201` + `Location` with the delivery when the service did not have it: it is created
//!   directly in `stage`, with one tracking event of that stage at the pickup carrying the reason;
//! - `200` with the delivery when it moved to `stage` (an event with the reason is added; its
//!   stored fields are kept, the body's are ignored), or was already in `stage` (nothing changes);
//! - `409` problem when the stage rules refuse: already in another final stage, or `Cancelled`
//!   after the drone picked the package up (`Failed` is allowed from any stage not yet final);
//! - `422` problem naming the field (`/stage`, `/reason`, `/delivery/…`).
//!
//! `Failed` is final like `Completed` and `Cancelled`, but for one thing: a `PUT` of a failed
//! delivery (the workflow running its replayed request) reopens it at stage `Created`.
//! `GET /api/deliveries/{id}/status` carries the closure's `reason` (from the latest tracking
//! event of the current stage that has one); normal deliveries have none. A cancel refused
//! because the drone has the package is recorded the same way (once), so the status shows it.
//!
//! Tracking (issue 6): [`tracking`] consumes `drone-events` (the drone's flight, its stages, its
//! arrival, which completes the delivery); the status computes the drone's position and the
//! ETAs from the stored flight ([`flight`]). Every change is published to `delivery-events`
//! ([`events`]) before the call answers; a publish that fails answers 503 + `Retry-After`.
//!
//! Notifications (issue 6): [`notifications`] reads `delivery-events` in a group of its own and
//! tells everyone who asked (notify-me requests) that their delivery finished: email and SMS are
//! recorded, not sent (no mail or SMS server exists here), a webhook gets one POST per finished
//! delivery when `--webhook-url` is set, and a log line is always written. Each notification is
//! sent once through an outbox in the store. The internal route
//! `GET /api/deliveries/{id}/notifications` lists a delivery's notifications: `200` with
//! `[{ id, deliveryId, eventType, reason, channel, recipient, text, status, attempts, lastError,
//! createdAt, sentAt }]` (oldest first; `status` is `pending`, `sent` or `failed`), `404` when
//! the delivery is unknown.

pub mod api;
pub mod domain;
pub mod events;
pub mod flight;
pub mod notifications;
pub mod store;
pub mod tracking;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::builder::TypedValueParser;
use contracts::events::{DELIVERY_EVENTS_STREAM, DRONE_EVENTS_STREAM};
use platform::bus::stream::{EventStream, open_stream};
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use platform::http::{ReadinessProbe, ServiceRouter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use store::{DeliveryStore, RedisDeliveryStore, SqliteDeliveryStore};

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

    /// Where deliveries are stored: sqlite://PATH (an embedded file, one process), or
    /// redis://HOST:PORT/DB[?prefix=fabrikam] (shared by any number of processes; every key
    /// starts with the prefix). TLS (rediss://) is not built in yet.
    #[arg(long, env = "FABRIKAM_DELIVERY_DB", default_value = "sqlite://./data/delivery.db")]
    pub database_url: String,

    /// Redis backend only: seconds a finished (completed, cancelled or failed) delivery stays
    /// readable before its keys expire. Monthly counts are kept apart and outlive it.
    #[arg(
        long,
        env = "FABRIKAM_DELIVERY_COMPLETED_TTL_SECS",
        default_value_t = store::DEFAULT_COMPLETED_TTL.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub completed_ttl_secs: u64,

    /// The bus holding the event streams: sqlite://PATH (embedded) or nats://HOST:PORT[,…][?…].
    /// The service consumes `drone-events` and publishes to `delivery-events`.
    #[arg(long, env = "FABRIKAM_BUS_URL", default_value = "sqlite://./data/bus.db")]
    pub bus_url: String,

    /// The consumer group this service reads `drone-events` in; processes sharing it share the
    /// work. A new group starts at the beginning of the stream.
    #[arg(long, env = "FABRIKAM_DELIVERY_GROUP", default_value = tracking::DEFAULT_GROUP)]
    pub group: String,

    /// Drone events this process handles at once. Each mostly waits on the store, so a store
    /// with more room (PostgreSQL, Redis) can take more.
    #[arg(
        long,
        env = "FABRIKAM_DELIVERY_TRACKING_CONCURRENCY",
        default_value_t = tracking::DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u64).range(1..=4096).map(|n| n as usize)
    )]
    pub tracking_concurrency: usize,

    /// Seconds a drone event whose delivery does not exist is retried before it is dropped (the
    /// workflow failed after assigning the drone, so the delivery never comes).
    #[arg(
        long,
        env = "FABRIKAM_DELIVERY_ORPHAN_EVENT_SECS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub orphan_event_secs: u64,

    /// Where to POST one JSON notification for each finished delivery someone asked to be
    /// notified of (http:// or https://), with an `Idempotency-Key` header naming the
    /// notification; none by default. Email and SMS requests are recorded, not sent: no mail or
    /// SMS server exists here (see GET /api/deliveries/{id}/notifications).
    #[arg(long, env = "FABRIKAM_DELIVERY_WEBHOOK_URL", value_parser = notifications::webhook::parse_url)]
    pub webhook_url: Option<String>,

    /// Milliseconds one webhook call may take before it counts as failed and is retried later.
    /// Kept well under the 30 s a delivery event is leased for.
    #[arg(
        long,
        env = "FABRIKAM_DELIVERY_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..=20_000)
    )]
    pub webhook_timeout_ms: u64,

    /// The consumer group the notifications are sent from: it reads `delivery-events`, and a new
    /// group starts at the beginning of the stream.
    #[arg(long, env = "FABRIKAM_DELIVERY_NOTIFICATIONS_GROUP", default_value = notifications::DEFAULT_GROUP)]
    pub notifications_group: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// The tracking consumer's settings from these flags.
    pub fn tracking_options(&self) -> tracking::TrackingOptions {
        tracking::TrackingOptions {
            concurrency: self.tracking_concurrency,
            orphan_after: Duration::from_secs(self.orphan_event_secs),
            drain: self.common.shutdown_grace(),
            ..tracking::TrackingOptions::default()
        }
    }

    /// The notifiers these flags ask for: the webhook when `--webhook-url` is set.
    pub fn notifiers(&self) -> anyhow::Result<notifications::Notifiers> {
        let timeout = Duration::from_millis(self.webhook_timeout_ms);
        let webhook = self.webhook_url.as_deref().map(|url| notifications::WebhookNotifier::new(url, timeout));
        Ok(notifications::Notifiers::new(webhook.transpose().map_err(anyhow::Error::msg)?))
    }

    /// The notifications dispatcher's settings from these flags.
    pub fn notification_options(&self) -> notifications::NotificationOptions {
        notifications::NotificationOptions {
            drain: self.common.shutdown_grace(),
            ..notifications::NotificationOptions::default()
        }
    }
}

/// How long an event stream remembers a message id to drop a copy (NATS; the embedded stream
/// remembers ids for as long as it keeps the events).
pub const STREAM_DEDUP_WINDOW: Duration = Duration::from_secs(600);

/// Opens the store named by `url`, with the default completed TTL on Redis.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn DeliveryStore>> {
    open_store_with_ttl(url, store::DEFAULT_COMPLETED_TTL).await
}

/// Opens the store named by `url`: `sqlite://PATH` or `redis://…`. On Redis a
/// finished (completed, cancelled or failed) delivery expires `completed_ttl` after it finished.
pub async fn open_store_with_ttl(url: &str, completed_ttl: Duration) -> anyhow::Result<Arc<dyn DeliveryStore>> {
    let context = || format!("opening delivery store {}", redacted(url));
    if url.starts_with("sqlite:") {
        let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(SqliteDeliveryStore::open(&path).await.with_context(context)?))
    } else if url.starts_with("redis://") {
        Ok(Arc::new(RedisDeliveryStore::open(url, completed_ttl).await.with_context(context)?))
    } else {
        anyhow::bail!(
            "unsupported delivery store URL {:?}: use sqlite://PATH or redis://HOST:PORT/DB[?prefix=NAME]",
            redacted(url)
        )
    }
}

/// `url` without the password a Redis URL may carry, for error messages and logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_credentials, host)) => format!("{scheme}://***@{host}{}", &rest[authority_end..]),
        None => url.to_owned(),
    }
}

/// The complete HTTP router: API routes plus health, metrics and the shared layers. `events` is
/// the `delivery-events` stream every change is published to; readiness checks the store and it.
pub fn router(
    store: Arc<dyn DeliveryStore>,
    events: Arc<dyn EventStream>,
    clock: SharedClock,
    common: &CommonArgs,
) -> axum::Router {
    service_router(store, events, clock, common).build()
}

fn service_router(
    store: Arc<dyn DeliveryStore>,
    events: Arc<dyn EventStream>,
    clock: SharedClock,
    common: &CommonArgs,
) -> ServiceRouter {
    let identity = platform::identity_http::router_policy(common);
    let state = api::AppState { store: store.clone(), events: events.clone(), clock, identity };
    ServiceRouter::new(SERVICE, api::routes(state))
        .readiness(platform::http::probe("delivery-store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .readiness(stream_probe(DELIVERY_EVENTS_STREAM, events))
        .options(common.http_options())
}

/// Readiness: the stream `name` answers.
fn stream_probe(name: &'static str, stream: Arc<dyn EventStream>) -> Arc<dyn ReadinessProbe> {
    platform::http::probe(name, move || {
        let stream = stream.clone();
        async move { stream.ping().await.map_err(|e| e.to_string()) }
    })
}

/// Runs the service on `listener` until `shutdown` is cancelled: the HTTP API, the tracking
/// consumer of `drone-events` and the notifications dispatcher on `delivery-events`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.common.identity_policy()?;
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let notifiers = config.notifiers()?;
    let store = open_store_with_ttl(&config.database_url, Duration::from_secs(config.completed_ttl_secs)).await?;
    let bus = redacted(&config.bus_url);
    let drone_events = open_stream(&config.bus_url, DRONE_EVENTS_STREAM, STREAM_DEDUP_WINDOW)
        .await
        .with_context(|| format!("opening stream {DRONE_EVENTS_STREAM} on {bus}"))?;
    let delivery_events = open_stream(&config.bus_url, DELIVERY_EVENTS_STREAM, STREAM_DEDUP_WINDOW)
        .await
        .with_context(|| format!("opening stream {DELIVERY_EVENTS_STREAM} on {bus}"))?;
    let subscription = tracking::subscribe(&*drone_events, &config.group)
        .await
        .with_context(|| format!("joining group {:?} of {DRONE_EVENTS_STREAM}", config.group))?;
    let finished = notifications::subscribe(&*delivery_events, &config.notifications_group)
        .await
        .with_context(|| format!("joining group {:?} of {DELIVERY_EVENTS_STREAM}", config.notifications_group))?;
    let app = service_router(store.clone(), delivery_events.clone(), clock.clone(), &config.common)
        .readiness(stream_probe(DRONE_EVENTS_STREAM, drone_events))
        .build();
    // Its own token, so a server that stops on its own (failed) stops the consumer too.
    let consumer_shutdown = shutdown.child_token();
    let consumer = tokio::spawn(tracking::run(
        subscription,
        store.clone(),
        delivery_events,
        clock.clone(),
        config.tracking_options(),
        consumer_shutdown.clone(),
    ));
    let dispatcher = tokio::spawn(notifications::run(
        finished,
        store,
        notifiers,
        clock,
        config.notification_options(),
        consumer_shutdown.clone(),
    ));
    tracing::info!(service = SERVICE, addr = ?starting.addr(), "listening");
    let served = starting.finish(app).await;
    consumer_shutdown.cancel();
    consumer.await.context("the tracking consumer panicked")?;
    dispatcher.await.context("the notifications dispatcher panicked")?;
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
    fn store_urls_never_show_a_password() {
        assert_eq!(super::redacted("redis://:secret@h:6379/0?prefix=p"), "redis://***@h:6379/0?prefix=p");
        assert_eq!(super::redacted("rediss://user:pw@h/1"), "rediss://***@h/1");
        assert_eq!(super::redacted("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(super::redacted("sqlite://./data/a@b.db"), "sqlite://./data/a@b.db");
    }

    #[test]
    fn the_webhook_is_optional_and_must_be_an_http_url() {
        use clap::Parser;
        let config = super::Config::try_parse_from(["fabrikam-delivery"]).unwrap();
        assert_eq!((config.webhook_url.as_deref(), config.notifications_group.as_str()), (None, "notifications"));
        assert!(config.notifiers().unwrap().webhook.is_none());
        let args =
            ["fabrikam-delivery", "--webhook-url", "https://hooks.example/n?token=t", "--notifications-group", "n2"];
        let config = super::Config::try_parse_from(args).unwrap();
        assert_eq!(config.notifications_group, "n2");
        assert_eq!(config.notifiers().unwrap().webhook_recipient(), Some("https://hooks.example/n"));
        assert!(super::Config::try_parse_from(["fabrikam-delivery", "--webhook-url", "hooks.example/n"]).is_err());
    }

    #[tokio::test]
    async fn an_unknown_store_url_names_both_forms() {
        let Err(err) = super::open_store("postgres://h/db").await else { panic!("opened a postgres URL") };
        let message = err.to_string();
        assert!(message.contains("sqlite://PATH") && message.contains("redis://"), "{message}");
    }
}
