//! The flight clock: publishes each flight's `drone-events` when their time comes.
//!
//! Every tick it claims, in the store, the flights with an event due now (a bounded batch,
//! earliest first), publishes each one's due events in order in one append, and records how far
//! each flight got. The store is the outbox: it keeps per flight how many of its events
//! ([`crate::events`]) are out, so an event is published once its time has come and until it is
//! marked, whatever crashes in between:
//!
//! - published, then the process died before marking it: the next claimer publishes it again
//!   under the same message id (`{deliveryId}:{type}`, or `{deliveryId}:DronePosition:{ms}`),
//!   and the stream drops the repeat;
//! - several scheduler processes tick at once: a claim holds a flight for one of them until it
//!   finishes or its lease ends, so at most one publishes a flight's events at a time, in order;
//!   a claimer that died is taken over once its lease has expired.
//!
//! Time comes from the [`SharedClock`], so tests move a `ManualClock` instead of waiting for
//! simulated minutes; only the pause between ticks is real time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use platform::bus::OutgoingMessage;
use platform::bus::stream::EventStream;
use platform::clock::SharedClock;
use platform::telemetry::spans;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::{self, DueEvent};
use crate::store::{ClaimedFlight, DroneStore, FlightProgress, StoreError};

/// Flights claimed per round (each has at most five events, most have one or two due at once).
pub const DEFAULT_BATCH: usize = 500;

/// How long a claim holds a flight for its claimer. Far longer than a round takes; a claimer that
/// died holds its flights this long before another takes them over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Flights whose events are being published at once (each flight's due events go out as one
/// append). A publish waits for its stream's commit and flights publishing together share
/// commits, so this caps the clock's rate: 16 held the embedded stream near 16 events per
/// fsync'd commit, about 1,400 flights a second, and at a steady 2,000 deliveries a second the
/// drone events fell further behind for as long as the load lasted. 64 keeps up there with less CPU per delivery;
/// under overload it takes a share of the CPU from scheduling (BENCHMARKS.md, "Session 15").
const CONCURRENT_FLIGHTS: usize = 64;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Flights claimed.
    pub flights: usize,
    /// Events handed to the stream (including repeats it dropped).
    pub published: usize,
    /// Events that failed to publish; they are tried again next round.
    pub failed: usize,
    /// Whether the round claimed a full batch, so more may be due right away.
    pub full: bool,
}

/// Publishes the drone events of every flight in the store as they come due (see the module).
pub struct FlightClock {
    store: Arc<dyn DroneStore>,
    stream: Arc<dyn EventStream>,
    clock: SharedClock,
    tick: Duration,
    batch: usize,
    lease: Duration,
    /// This clock's name in its claims: unique per instance, so two processes never share one.
    claimer: String,
}

impl FlightClock {
    /// A clock that looks for due events every `tick`.
    pub fn new(store: Arc<dyn DroneStore>, stream: Arc<dyn EventStream>, clock: SharedClock, tick: Duration) -> Self {
        Self {
            store,
            stream,
            clock,
            tick,
            batch: DEFAULT_BATCH,
            lease: DEFAULT_LEASE,
            claimer: format!("flight-clock-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Claims at most `batch` flights per round (at least one).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Holds claimed flights for `lease`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// This clock's name in the store's claims.
    pub fn claimer(&self) -> &str {
        &self.claimer
    }

    /// One round: publishes the events due now of up to one batch of flights, and records it.
    pub async fn publish_due(&self) -> Result<Round, StoreError> {
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let claimed = self.store.claim_due_flights(&self.claimer, now, lease, self.batch).await?;
        let flights = claimed.len();
        let progress: Vec<(FlightProgress, usize, usize)> = futures::stream::iter(claimed)
            .map(|flight| self.fly(flight, now))
            .buffer_unordered(CONCURRENT_FLIGHTS)
            .collect()
            .await;
        let published = progress.iter().map(|p| p.1).sum();
        let failed = progress.iter().map(|p| p.2).sum();
        let progress: Vec<FlightProgress> = progress.into_iter().map(|p| p.0).collect();
        self.store.finish_flights(&self.claimer, &progress).await?;
        Ok(Round { flights, published, failed, full: flights >= self.batch })
    }

    /// Publishes one claimed flight's events due at `now`, in order and together (one append,
    /// one commit, where each used to wait for its own). Returns its progress, and how many
    /// were published and failed.
    ///
    /// A position that a later event also due now supersedes is passed over unpublished
    /// ([`events::superseded`]): after a pause only the latest position goes out.
    async fn fly(&self, claimed: ClaimedFlight, now: DateTime<Utc>) -> (FlightProgress, usize, usize) {
        let schedule = events::schedule(&claimed.flight);
        let mut due = Vec::new();
        let mut through = claimed.events_published;
        while let Some(&(due_at, slot)) = schedule.get(through).filter(|(due_at, _)| *due_at <= now) {
            if !events::superseded(&schedule, through, now) {
                due.push(events::event(&claimed.delivery_id, &claimed.flight, due_at, slot));
            }
            through += 1;
        }
        let (done, published, failed) = match self.publish(&due, claimed.traceparent.as_deref()).await {
            Ok(()) => (through, due.len(), 0),
            Err(error) => {
                let id = due.first().map(DueEvent::message_id).unwrap_or_default();
                tracing::warn!(message_id = id, %error, "drone events not published; retrying next tick");
                // An event may have gone out before the failure: the retry's copy is dropped.
                (claimed.events_published, 0, 1)
            }
        };
        let progress = FlightProgress {
            delivery_id: claimed.delivery_id,
            events_published: done,
            next_event_at: schedule.get(done).map(|e| e.0),
            plan_version: claimed.plan_version,
        };
        (progress, published, failed)
    }

    /// Each event continues the trace of the request that assigned the drone (`assignment`, kept
    /// with the flight), so one delivery's drone events and their consumers' spans join its trace;
    /// a flight stored before trace contexts were kept starts a trace per event.
    async fn publish(&self, due: &[DueEvent], assignment: Option<&str>) -> Result<(), String> {
        if due.is_empty() {
            return Ok(());
        }
        let spans: Vec<tracing::Span> = due
            .iter()
            .map(|event| {
                let (id, delivery_id) = (event.message_id(), event.envelope.delivery_id.as_str());
                let span =
                    spans::message_publish(crate::SERVICE, self.stream.system(), self.stream.name(), id, delivery_id);
                platform::telemetry::continue_from(&span, assignment);
                span
            })
            .collect();
        let messages = due
            .iter()
            .zip(&spans)
            .map(|(event, span)| {
                let mut envelope = event.envelope.clone();
                envelope.traceparent = span.in_scope(platform::telemetry::current_traceparent);
                let payload = serde_json::to_vec(&envelope)?;
                Ok(OutgoingMessage { id: event.message_id().to_owned(), payload: payload.into() })
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| e.to_string())?;
        // Every event's span lasts until the append holding it is stored.
        self.stream.publish_all(messages).instrument(spans[0].clone()).await.map_err(|e| e.to_string())?;
        drop(spans);
        let published_at = self.clock.now();
        // A clock that falls behind publishes late rather than not at all; only this shows it.
        let lateness = metrics::histogram!("drone_event_lateness_seconds", "service" => crate::SERVICE);
        for event in due {
            let kind = event.envelope.event.kind();
            metrics::counter!("drone_events_published_total", "service" => crate::SERVICE, "type" => kind).increment(1);
            lateness.record((published_at - event.due_at).to_std().unwrap_or_default().as_secs_f64());
        }
        Ok(())
    }

    /// Ticks until `shutdown` is cancelled. A round that claimed a full batch is followed by
    /// another at once, so a backlog drains without waiting for ticks; a failing store is
    /// logged and tried again next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        let tick_ms = u64::try_from(self.tick.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(service = crate::SERVICE, tick_ms, claimer = %self.claimer, "flight clock started");
        loop {
            let more = match self.publish_due().await {
                // A failing stream is not hammered: the failed events wait for the next tick.
                Ok(round) => round.full && round.failed == 0,
                Err(error) => {
                    metrics::counter!("drone_events_round_failures_total", "service" => crate::SERVICE).increment(1);
                    tracing::warn!(%error, "flight clock round failed; trying again next tick");
                    false
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.tick) => {}
            }
        }
        tracing::info!(service = crate::SERVICE, "flight clock stopped");
    }
}

/// The flight clock over `store` and `stream`, ticking every `tick` until `shutdown`: what the
/// service's `run` spawns, and what a process that opens its own store and stream (the
/// all-in-one) spawns next to [`crate::router`].
pub fn flight_clock(
    store: Arc<dyn DroneStore>,
    stream: Arc<dyn EventStream>,
    clock: SharedClock,
    tick: Duration,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    FlightClock::new(store, stream, clock, tick).run(shutdown)
}
