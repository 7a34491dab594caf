//! Follows the drones: consumes `drone-events` with bounded concurrency and turns them into the
//! deliveries' stages, flights and completions (the rules are [`domain::drone_step`] and the
//! stage rules; this module is the I/O around them).
//!
//! Settling an event:
//! - applied, or nothing to do (a stage already passed, a finished delivery, an ignored kind):
//!   ack;
//! - its delivery does not exist: retry later with backoff, since the workflow creates the
//!   delivery just after the drone is assigned; once the event is older than
//!   [`TrackingOptions::orphan_after`] it is dropped (ack, a warning and
//!   `delivery_orphan_drone_events_total`): a workflow that failed after the assignment never
//!   creates it;
//! - unreadable: dead-lettered with the reason;
//! - the store or the delivery-events stream failed: retry later (the event is applied again;
//!   every step is idempotent).
//!
//! Events of one delivery may be handled at once and in any order: each store change is atomic,
//! the stage rules only move forward, and a flight or a reported position only replaces an older
//! one.

use std::sync::Arc;
use std::time::Duration;

use contracts::events::{DRONE_EVENTS_STREAM, DroneEvent, EventEnvelope};
use platform::backoff::Backoff;
use platform::bus::consume::ConsumeOptions;
use platform::bus::stream::{EventStream, StartAt, Subscription};
use platform::bus::{BusError, QueueOptions, ReceivedMessage, Retried};
use platform::clock::SharedClock;
use platform::telemetry::spans::{self, MessageOrigin};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{self, DroneStep};
use crate::events::{self, PublishError};
use crate::store::{Changed, DeliveryStore, StoreError};

/// The consumer group's default name.
pub const DEFAULT_GROUP: &str = "delivery";

/// Events the consumer handles at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct TrackingOptions {
    /// Events handled at once. Most of an event's time is spent waiting on the store, so more in
    /// flight means fewer idle waits: 64 rather than 16 cut the embedded system's CPU per
    /// delivery by about 12% and its catch-up time by about a third (BENCHMARKS.md, session 11).
    pub concurrency: usize,
    /// Delays before an event is tried again (by its attempt), and between failed receives.
    pub backoff: Backoff,
    /// A drone event whose delivery still does not exist this long after it happened is dropped.
    pub orphan_after: Duration,
    /// How long in-flight events may take to finish on shutdown before they are left to
    /// redelivery.
    pub drain: Duration,
}

impl Default for TrackingOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            backoff: Backoff::default(),
            orphan_after: Duration::from_secs(600),
            drain: Duration::from_secs(20),
        }
    }
}

/// The group's queue settings. Attempts are only a safety net: how long an event whose delivery
/// is missing is retried is up to [`TrackingOptions::orphan_after`], and a store that is down
/// for hours must not push events into the dead letters.
pub fn queue_options() -> QueueOptions {
    QueueOptions { max_attempts: 10_000, ..QueueOptions::default() }
}

/// Joins consumer group `group` of `drone-events`. A new group starts at the beginning of the
/// stream: the drone scheduler may have published before this service first started, and
/// nothing it published may be missed.
pub async fn subscribe(stream: &dyn EventStream, group: &str) -> Result<Arc<dyn Subscription>, BusError> {
    stream.subscribe(group, StartAt::Beginning, queue_options()).await
}

/// What the consumer works with.
#[derive(Clone)]
struct Context {
    store: Arc<dyn DeliveryStore>,
    events: Arc<dyn EventStream>,
    clock: SharedClock,
    options: TrackingOptions,
}

/// Consumes `subscription` (a group of `drone-events`) until `shutdown`, then gives in-flight
/// events `options.drain` to finish. Completions are published to `events` (`delivery-events`).
pub async fn run(
    subscription: Arc<dyn Subscription>,
    store: Arc<dyn DeliveryStore>,
    events: Arc<dyn EventStream>,
    clock: SharedClock,
    options: TrackingOptions,
    shutdown: CancellationToken,
) {
    // Install the metrics recorder now (as the router does): counts made before it exists are lost.
    platform::metrics::handle();
    let context = Context { store, events, clock, options };
    let consume = ConsumeOptions {
        concurrency: context.options.concurrency,
        backoff: context.options.backoff,
        drain: context.options.drain,
        what: "drone events",
    };
    platform::bus::consume::run(subscription, consume, shutdown, move |message| {
        let context = context.clone();
        async move { handle(message, &context).await }
    })
    .await;
}

/// How applying an event went.
enum Applied {
    /// Done, or nothing to do; the label is for the metrics.
    Done(&'static str),
    /// Its delivery does not exist (yet).
    NotFound,
}

/// Why applying an event failed; all of these may succeed later.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

async fn handle(message: ReceivedMessage, context: &Context) {
    let envelope: EventEnvelope<DroneEvent> = match serde_json::from_slice(&message.payload) {
        Ok(envelope) => envelope,
        Err(err) => return dead_letter(message, format!("unreadable drone event: {err}")).await,
    };
    if envelope.delivery_id.trim().is_empty() {
        return dead_letter(message, "a drone event without a delivery id".to_owned()).await;
    }
    let kind = envelope.event.kind();
    let origin = MessageOrigin {
        system: message.system(),
        destination: DRONE_EVENTS_STREAM,
        traceparent: envelope.traceparent.as_deref(),
    };
    let span = spans::message_process(crate::SERVICE, origin, &message.id, message.attempt, &envelope.delivery_id);
    async {
        let (id, occurred_at) = (envelope.delivery_id.clone(), envelope.occurred_at);
        let settled = match apply(envelope, context).await {
            Ok(Applied::Done(outcome)) => {
                record(kind, outcome);
                message.ack().await
            }
            Ok(Applied::NotFound) => {
                let max_age = chrono::Duration::from_std(context.options.orphan_after).unwrap_or(chrono::Duration::MAX);
                if domain::is_orphan(occurred_at, context.clock.now(), max_age) {
                    tracing::warn!(%occurred_at, "no such delivery long after its drone event; dropping the event");
                    metrics::counter!("delivery_orphan_drone_events_total", "service" => crate::SERVICE, "type" => kind)
                        .increment(1);
                    record(kind, "orphaned");
                    message.ack().await
                } else {
                    retry(message, context, kind, &format!("delivery {id} does not exist yet")).await
                }
            }
            Err(failure) => {
                tracing::warn!(error = %failure, "applying a drone event failed");
                retry(message, context, kind, &failure.to_string()).await
            }
        };
        if let Err(err) = settled {
            tracing::warn!(error = %err, "settling a drone event failed; it will be redelivered");
        }
    }
    .instrument(span)
    .await;
}

/// Carries out what the event asks of its delivery.
async fn apply(envelope: EventEnvelope<DroneEvent>, context: &Context) -> Result<Applied, Failure> {
    let id = envelope.delivery_id.as_str();
    let store = &*context.store;
    match domain::drone_step(envelope.event) {
        DroneStep::RecordFlight(flight) => {
            let stored = store.record_flight(id, &flight, envelope.occurred_at).await?;
            Ok(Applied::Done(if stored { "flight_recorded" } else { "flight_outdated" }))
        }
        DroneStep::Advance { action, location, at } => match store.advance(id, action, location, at).await? {
            Changed::Done(_) => Ok(Applied::Done("applied")),
            Changed::NotFound => Ok(Applied::NotFound),
            Changed::Refused(reason) => Ok(refused(&reason)),
        },
        DroneStep::Arrive { location, at } => {
            let Some(delivery) = store.get(id).await? else { return Ok(Applied::NotFound) };
            let confirmation = domain::arrival_confirmation(&delivery, location, at);
            match store.confirm(id, &confirmation, at).await? {
                Changed::Done(_) => {
                    // Also when it was already completed: a redelivered arrival re-publishes,
                    // in case the first publish failed; the stream drops the copy.
                    events::finished(&*context.events, store, id, context.clock.now()).await?;
                    Ok(Applied::Done("completed"))
                }
                Changed::NotFound => Ok(Applied::NotFound),
                Changed::Refused(reason) => Ok(refused(&reason)),
            }
        }
        DroneStep::Report(position) => {
            let stored = store.record_position(id, &position).await?;
            Ok(Applied::Done(if stored { "position_recorded" } else { "position_outdated" }))
        }
        DroneStep::Ignore => Ok(Applied::Done("ignored")),
    }
}

/// The stage rules refused the event (the drone arrived for a delivery cancelled or failed
/// meanwhile): nothing to apply, and retrying would not change that.
fn refused(reason: &str) -> Applied {
    tracing::info!(%reason, "drone event not applied");
    Applied::Done("refused")
}

async fn retry(message: ReceivedMessage, context: &Context, kind: &'static str, reason: &str) -> Result<(), BusError> {
    let delay = context.options.backoff.delay(message.attempt);
    match message.retry_after(delay, reason).await? {
        Retried::Scheduled => record(kind, "retried"),
        Retried::DeadLettered => {
            tracing::error!(%reason, "attempts used up; the drone event is dead-lettered");
            record(kind, "dead_lettered");
        }
    }
    Ok(())
}

async fn dead_letter(message: ReceivedMessage, reason: String) {
    tracing::error!(message_id = %message.id, %reason, "dead-lettering a drone event");
    record("unknown", "dead_lettered");
    if let Err(err) = message.dead_letter(&reason).await {
        tracing::warn!(error = %err, "dead-lettering failed; the event will come back");
    }
}

fn record(kind: &'static str, outcome: &'static str) {
    metrics::counter!("delivery_drone_events_total", "service" => crate::SERVICE, "type" => kind, "outcome" => outcome)
        .increment(1);
}
