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
//! `GET /api/deliveries/{id}/status` carries the closure's `reason` (from the last tracking event
//! that has one); normal deliveries have none.

pub mod api;
pub mod domain;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
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

    #[command(flatten)]
    pub common: CommonArgs,
}

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
    let store = open_store_with_ttl(&config.database_url, Duration::from_secs(config.completed_ttl_secs)).await?;
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

    #[test]
    fn store_urls_never_show_a_password() {
        assert_eq!(super::redacted("redis://:secret@h:6379/0?prefix=p"), "redis://***@h:6379/0?prefix=p");
        assert_eq!(super::redacted("rediss://user:pw@h/1"), "rediss://***@h/1");
        assert_eq!(super::redacted("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(super::redacted("sqlite://./data/a@b.db"), "sqlite://./data/a@b.db");
    }

    #[tokio::test]
    async fn an_unknown_store_url_names_both_forms() {
        let Err(err) = super::open_store("postgres://h/db").await else { panic!("opened a postgres URL") };
        let message = err.to_string();
        assert!(message.contains("sqlite://PATH") && message.contains("redis://"), "{message}");
    }
}
