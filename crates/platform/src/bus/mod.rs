//! The bus: how services hand work to each other without waiting.
//!
//! A [`Queue`] has work-queue semantics: each message goes to one consumer, at least once;
//! the consumer acks it, asks for a retry after a delay, or dead-letters it; a message that
//! was received and never settled (the consumer crashed) comes back after its lease expires;
//! a message retried `max_attempts` times goes to the dead letters with its last error.
//! Publishing with a message id already seen within the de-duplication window stores nothing.
//! An operator can look a dead letter up by message id, replay it (it is delivered again under
//! the same id, from attempt 1) or purge it.
//!
//! The trait is shaped after what both backends can do: the embedded SQLite backend here and
//! NATS JetStream (work-queue stream, explicit ack, `Nats-Msg-Id`, `nak` with delay, `term`,
//! in-progress acks). [`conformance`] holds the behaviour suite every backend must pass.

pub mod conformance;
pub mod consume;
pub mod meter;
mod nats;
mod sqlite;
pub mod stream;
pub mod stream_conformance;
mod stream_sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use nats::{NatsQueue, NatsSettings};
pub use sqlite::SqliteQueue;

/// Errors from the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backend cannot be reached or failed; the operation may be retried.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The message's lease expired and another consumer owns it now; this settlement was ignored.
    #[error("lease on message {0} was lost; it will be or has been redelivered")]
    LeaseLost(String),
    /// A URL or option the bus cannot use.
    #[error("bus configuration: {0}")]
    Config(String),
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// De-duplication key: publishing the same id again within the window stores nothing.
    pub id: String,
    pub payload: Bytes,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Durably stored; it will be delivered.
    Stored,
    /// A message with this id was already stored; nothing new was queued.
    Duplicate,
}

/// Settles one received message. Backends implement it per message.
#[async_trait]
pub trait Settlement: Send + Sync {
    /// Done: never deliver again.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// Deliver again after `delay`, or dead-letter with `error` when attempts are used up.
    async fn retry_after(self: Box<Self>, delay: Duration, error: &str) -> Result<Retried, BusError>;
    /// Give up now: keep it in the dead letters with `error`.
    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError>;
    /// Still working: extend the lease so it is not redelivered meanwhile.
    async fn in_progress(&self) -> Result<(), BusError>;
}

/// Outcome of [`ReceivedMessage::retry_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Will be delivered again after the delay.
    Scheduled,
    /// Its attempts were used up: it went to the dead letters.
    DeadLettered,
}

/// `messaging.system` of the embedded (SQLite) bus.
pub const EMBEDDED_SYSTEM: &str = "sqlite";
/// `messaging.system` of NATS JetStream.
pub const NATS_SYSTEM: &str = "nats";

/// A message handed to a consumer. Dropping it unsettled means it comes back after the lease.
pub struct ReceivedMessage {
    pub id: String,
    pub payload: Bytes,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub enqueued_at: DateTime<Utc>,
    /// The backend it came from (`messaging.system` in traces).
    system: &'static str,
    settlement: Box<dyn Settlement>,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("enqueued_at", &self.enqueued_at)
            .finish_non_exhaustive()
    }
}

impl ReceivedMessage {
    pub fn new(
        id: String,
        payload: Bytes,
        attempt: u32,
        enqueued_at: DateTime<Utc>,
        settlement: Box<dyn Settlement>,
    ) -> Self {
        Self { id, payload, attempt, enqueued_at, system: EMBEDDED_SYSTEM, settlement }
    }

    /// Marks the message as received from the backend `system`.
    pub fn from_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    /// The backend it came from (`sqlite` for the embedded bus, `nats`).
    pub fn system(&self) -> &'static str {
        self.system
    }

    pub async fn ack(self) -> Result<(), BusError> {
        self.settlement.ack().await
    }

    pub async fn retry_after(self, delay: Duration, error: &str) -> Result<Retried, BusError> {
        self.settlement.retry_after(delay, error).await
    }

    pub async fn dead_letter(self, error: &str) -> Result<(), BusError> {
        self.settlement.dead_letter(error).await
    }

    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.settlement.in_progress().await
    }
}

/// A message that failed for good, kept for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub payload: Bytes,
    pub attempts: u32,
    pub last_error: String,
    pub enqueued_at: DateTime<Utc>,
    /// When it went to the dead letters (its last one, if it was replayed and failed again).
    pub dead_lettered_at: DateTime<Utc>,
}

/// A work queue (see the module docs for its guarantees).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// The queue's name, e.g. `delivery-requests`.
    fn name(&self) -> &str;

    /// The backend (`messaging.system` in traces).
    fn system(&self) -> &'static str {
        EMBEDDED_SYSTEM
    }

    /// Stores `message` durably before returning `Ok`.
    async fn publish(&self, message: OutgoingMessage) -> Result<Published, BusError>;

    /// Up to `max` messages, waiting up to `wait` for the first one. Empty when none came.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError>;

    /// Messages that failed for good, oldest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// The dead letter with message id `id`, if any.
    async fn find_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, BusError>;

    /// Puts the dead letter `id` back on the queue: delivered again from attempt 1 with the same
    /// message id and payload, and gone from the dead letters. `false` when there is no such dead
    /// letter (so replaying the same one twice queues it once).
    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError>;

    /// Deletes the dead letter `id`; `false` when there is none.
    async fn purge_dead_letter(&self, id: &str) -> Result<bool, BusError>;

    /// Deletes every dead letter; returns how many.
    async fn purge_dead_letters(&self) -> Result<u64, BusError>;

    /// Messages waiting or in flight (not acked, not dead).
    async fn depth(&self) -> Result<u64, BusError>;

    /// `Ok` when the backend answers.
    async fn ping(&self) -> Result<(), BusError>;
}

/// Settings every queue backend honours.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// How long a received message stays invisible to others before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries before a retried message goes to the dead letters.
    pub max_attempts: u32,
    /// How long a message id is remembered for de-duplication after it was acked.
    pub dedup_window: Duration,
    /// How often an idle consumer looks for messages published by other processes or
    /// whose retry delay has passed (same-process publishes wake it at once).
    pub poll_interval: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_attempts: 10,
            dedup_window: Duration::from_secs(10 * 60),
            poll_interval: Duration::from_millis(50),
        }
    }
}

/// Opens the queue `name` on the backend named by `url`: `sqlite://PATH` (embedded) or
/// `nats://HOST:PORT[,HOST:PORT…][?options]` (JetStream; see [`NatsSettings`]).
pub async fn open_queue(url: &str, name: &str, options: QueueOptions) -> Result<Arc<dyn Queue>, BusError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let queue = SqliteQueue::open(std::path::Path::new(path), name, options).await?;
        return Ok(meter::metered_queue(Arc::new(queue)));
    }
    if url.starts_with("nats://") {
        return Ok(meter::metered_queue(Arc::new(NatsQueue::open(url, name, options).await?)));
    }
    Err(BusError::Config(format!("unsupported bus URL {url:?}: expected sqlite://PATH or nats://HOST:PORT")))
}

/// Readiness: the queue answers.
pub fn readiness_probe(queue: Arc<dyn Queue>) -> Arc<dyn crate::http::ReadinessProbe> {
    crate::http::probe("bus", move || {
        let queue = queue.clone();
        async move { queue.ping().await.map_err(|e| e.to_string()) }
    })
}
