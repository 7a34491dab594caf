//! Where deliveries live: the [`DeliveryStore`] port and its backends.

#[doc(hidden)]
pub mod conformance;
mod redis;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent, NotifyMeRequest, RescheduledDelivery};
use contracts::events::{DronePosition, Flight};
use contracts::{DeliveryStage, Location};
use platform::query::Month;

use crate::domain::Action;
use crate::notifications::{Notification, NotificationRecord, Outcome};

pub use redis::{DEFAULT_COMPLETED_TTL, RedisDeliveryStore};
pub use sqlite::SqliteDeliveryStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("cannot encode a stored value: {0}")]
    Encode(#[source] BoxError),
    #[error("a stored value does not decode: {0}")]
    Decode(#[source] BoxError),
    /// Optimistic stage changes kept losing to concurrent writers of the same delivery.
    #[error("delivery {0} is changing too often to update; try again")]
    Contended(String),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// Whether retrying later may succeed: the backend is unreachable or busy, not broken.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Sqlite(e) => matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)),
            Self::Redis(e) => redis_is_unavailable(e),
            Self::Contended(_) => true,
            Self::Encode(_) | Self::Decode(_) => false,
        }
    }
}

fn redis_is_unavailable(e: &::redis::RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    // Besides a lost connection, these are the server saying "not now": loading its dump, a
    // failover in progress (no master, or we reached a replica), a cluster resharding.
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// As for the platform's `sqlx::Error`: 503 (with a retry hint) while the store is unreachable,
/// 500 otherwise. The cause goes to the log, not to the client.
impl From<StoreError> for platform::Problem {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Sqlite(e) => e.into(),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "store unavailable");
                platform::Problem::unavailable("the store is unavailable; try again", 1)
            }
            e => platform::Problem::internal(e),
        }
    }
}

/// Whether a PUT created the delivery or found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Upserted {
    Created(Box<Delivery>),
    Updated,
}

/// The outcome of a change that depends on the delivery's stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// Applied, or already applied before: the delivery as it is now.
    Done(Box<Delivery>),
    NotFound,
    /// The stage rules refused it; the reason says why.
    Refused(String),
}

/// The outcome of a closure ([`DeliveryStore::close`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// The delivery was unknown; it now exists in the closing stage.
    Created(Box<Delivery>),
    /// Closed now, or closed the same way before: the delivery as it is now.
    Done(Box<Delivery>),
    /// The stage rules refused it; the reason says why.
    Refused(String),
}

/// The delivery repository. Changes that read the stage then write are atomic.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Creates the delivery (stage Created, a Created event at the pickup) or, when it exists,
    /// replaces its descriptive fields and keeps its stage and history.
    async fn upsert(&self, delivery: Delivery, now: DateTime<Utc>) -> Result<Upserted, StoreError>;
    /// The delivery with its current stage.
    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// Its tracking events, oldest first.
    async fn tracking(&self, id: &str) -> Result<Vec<DeliveryTrackingEvent>, StoreError>;
    async fn reschedule(
        &self,
        id: &str,
        change: &RescheduledDelivery,
        now: DateTime<Utc>,
    ) -> Result<Changed, StoreError>;
    async fn cancel(&self, id: &str, now: DateTime<Utc>) -> Result<Changed, StoreError>;
    async fn confirm(&self, id: &str, confirmation: &Confirmation, now: DateTime<Utc>) -> Result<Changed, StoreError>;
    /// Records that the delivery will never fly: moves it to `stage` (Failed or Cancelled, by
    /// [`crate::domain::close`]) with an event carrying `reason`. When it does not exist it is
    /// created from `delivery` directly in `stage`, with one such event at the pickup; when it
    /// does, its fields are kept and `delivery` is ignored. Atomic, like the other changes.
    async fn close(
        &self,
        delivery: Delivery,
        stage: DeliveryStage,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Closed, StoreError>;
    /// Moves the delivery along its flight (`action` is [`Action::HeadToPickup`] or
    /// [`Action::HeadToDropoff`]) by the stage rules, with a tracking event at `location` and `at`
    /// (the drone's report). `Done` also when there was nothing to do: the delivery had already
    /// passed that stage, or is finished. Atomic, like the other changes.
    async fn advance(
        &self,
        id: &str,
        action: Action,
        location: Location,
        at: DateTime<Utc>,
    ) -> Result<Changed, StoreError>;
    /// Records on the delivery that `action` was just refused (`reason`: why another service
    /// refused it), when the rules want such a refusal shown ([`crate::domain::refusal_note`]): a tracking event in the current stage
    /// carrying the note, once per note ([`crate::domain::already_noted`]). `true` when it added
    /// one; `false` when there is no such delivery, nothing to show, or it was already shown.
    async fn record_refusal(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The confirmation stored when the delivery was completed.
    async fn confirmation(&self, id: &str) -> Result<Option<Confirmation>, StoreError>;
    /// Stores the drone's flight for delivery `id`, whether or not the delivery exists yet (the
    /// drone is assigned before the workflow creates it). A flight replaces the stored one only
    /// when it is newer: a later `departed_at`, or the same and a later `observed_at` (the time
    /// of the event that carried it), so a re-planned flight wins whatever order the events come
    /// in. `true` when it was stored.
    async fn record_flight(&self, id: &str, flight: &Flight, observed_at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// The flight stored for delivery `id`.
    async fn flight(&self, id: &str) -> Result<Option<Flight>, StoreError>;
    /// Stores where the drone of delivery `id` reported itself, whether or not the delivery
    /// exists yet (like its flight), unless a report of the same or a later `at` is stored:
    /// positions redelivered or out of order never move it back. `true` when it was stored.
    async fn record_position(&self, id: &str, position: &DronePosition) -> Result<bool, StoreError>;
    /// The latest position stored for delivery `id`.
    async fn position(&self, id: &str) -> Result<Option<DronePosition>, StoreError>;
    /// Stores a notify-me request; `false` when there is no such delivery.
    async fn add_notify_request(
        &self,
        id: &str,
        request: &NotifyMeRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The delivery's notify-me requests, oldest first (none when there is no such delivery).
    async fn notify_requests(&self, id: &str) -> Result<Vec<NotifyMeRequest>, StoreError>;
    /// The notification outbox: adds `notification` as pending unless a record with its id
    /// exists, and returns the record as stored, which tells whether it was sent or given up
    /// already. Atomic: of concurrent calls with one id, one creates it.
    async fn record_notification(
        &self,
        notification: &Notification,
        now: DateTime<Utc>,
    ) -> Result<NotificationRecord, StoreError>;
    /// Records how a try at sending the pending notification `id` of delivery `delivery_id`
    /// went: its new status and error (an error is kept until the next one), one more attempt
    /// unless it was [`Outcome::Abandoned`], and the time when it was sent. A record that is not
    /// pending (settled by a concurrent try) or does not exist is left alone: `false`.
    async fn mark_notification(
        &self,
        delivery_id: &str,
        id: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The outbox records of the delivery's notifications, oldest first.
    async fn notifications(&self, delivery_id: &str) -> Result<Vec<NotificationRecord>, StoreError>;
    /// Deliveries of `owner_user_id` created in `month`: of every account when `account_id` is
    /// `None` (no identity policy, nothing scoped), otherwise only those whose current
    /// `owner.account_id` is that account. A delivery whose owner changes is counted under its
    /// new owner and account, still in the month it was created.
    async fn count(&self, account_id: Option<&str>, owner_user_id: &str, month: Month) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Both backends keep documents as JSON text.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Encode(Box::new(e)))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Decode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use ::redis::{ErrorKind, RedisError, ServerErrorKind};

    use super::StoreError;

    fn status(err: StoreError) -> u16 {
        platform::Problem::from(err).status
    }

    #[test]
    fn unreachable_or_busy_stores_are_503_and_the_rest_500() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(status(RedisError::from(refused).into()), 503);
        assert_eq!(status(RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "failover")).into()), 503);
        assert_eq!(status(RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading")).into()), 503);
        assert_eq!(status(StoreError::Contended("d1".into())), 503);
        assert_eq!(status(sqlx::Error::PoolTimedOut.into()), 503);

        assert_eq!(
            status(RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "WRONGTYPE")).into()),
            500
        );
        assert_eq!(status(sqlx::Error::RowNotFound.into()), 500);
        assert_eq!(status(StoreError::Decode("not json".into())), 500);
    }
}
