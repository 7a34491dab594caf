//! Event streams: publish once, every consumer group reads everything.
//!
//! An [`EventStream`] keeps its events (for its retention), and any number of consumer groups
//! read it. Each group gets every event at least once, in publication order for a first
//! delivery; within a group each event goes to one member, which settles it as it would a
//! queue message (ack, retry after a delay, dead-letter, extend). A group seen for the first
//! time starts at the beginning of the retained events (replay) or at new events only, as the
//! subscriber asks. Publishing an event id already stored stores nothing.
//!
//! Backends: embedded SQLite ([`SqliteEventStream`]) and NATS JetStream (a limits-retention
//! stream with one durable consumer per group). [`super::stream_conformance`] holds the suite
//! both pass.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{BusError, DeadLetter, OutgoingMessage, Published, QueueOptions, ReceivedMessage};

pub use super::nats::NatsEventStream;
pub use super::stream_sqlite::SqliteEventStream;

/// Where a consumer group new to the stream starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Every retained event: a new read model replays history.
    Beginning,
    /// Only events published from now on.
    New,
}

/// A stream of events (see the module docs).
#[async_trait]
pub trait EventStream: Send + Sync + 'static {
    /// The stream's name, e.g. `drone-events`.
    fn name(&self) -> &str;

    /// The backend (`messaging.system` in traces).
    fn system(&self) -> &'static str {
        super::EMBEDDED_SYSTEM
    }

    /// Stores `event` durably before returning `Ok`.
    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError>;

    /// Stores `events` durably and in order before returning `Ok` with each one's outcome: one
    /// round trip (or commit) for all where the backend allows, instead of one each. On an error
    /// an event may be stored only if every event before it is; publishing again stores the rest
    /// (ids already stored are duplicates).
    async fn publish_all(&self, events: Vec<OutgoingMessage>) -> Result<Vec<Published>, BusError> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(self.publish(event).await?);
        }
        Ok(outcomes)
    }

    /// Joins consumer group `group`, creating it at `start` when new (an existing group keeps
    /// its position). `options` set the group's lease, attempts and polling.
    async fn subscribe(
        &self,
        group: &str,
        start: StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn Subscription>, BusError>;

    /// `Ok` when the backend answers.
    async fn ping(&self) -> Result<(), BusError>;
}

/// One member's handle on a consumer group.
#[async_trait]
pub trait Subscription: Send + Sync {
    /// The stream's name.
    fn stream(&self) -> &str;

    /// The consumer group's name.
    fn group(&self) -> &str;

    /// Up to `max` events, waiting up to `wait` for the first one. Empty when none came.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError>;

    /// Events the group gave up on, oldest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// Events the group has not settled yet (its lag).
    async fn pending(&self) -> Result<u64, BusError>;
}

/// Opens the stream `name` on the backend named by `url` (`sqlite://PATH` or `nats://…`).
pub async fn open_stream(url: &str, name: &str, dedup_window: Duration) -> Result<Arc<dyn EventStream>, BusError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let stream = SqliteEventStream::open(std::path::Path::new(path), name).await?;
        return Ok(super::meter::metered_stream(Arc::new(stream)));
    }
    if url.starts_with("nats://") {
        let stream = NatsEventStream::open(url, name, dedup_window).await?;
        return Ok(super::meter::metered_stream(Arc::new(stream)));
    }
    Err(BusError::Config(format!("unsupported bus URL {url:?}: expected sqlite://PATH or nats://HOST:PORT")))
}
