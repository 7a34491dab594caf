//! Where deliveries live: the [`DeliveryStore`] port and its backends.

mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent, NotifyMeRequest, RescheduledDelivery};
use platform::query::Month;

pub use sqlite::SqliteDeliveryStore;

pub type StoreError = sqlx::Error;

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
    /// Stores a notify-me request; `false` when there is no such delivery.
    async fn add_notify_request(
        &self,
        id: &str,
        request: &NotifyMeRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Deliveries of `owner_user_id` created in `month`.
    async fn count(&self, owner_user_id: &str, month: Month) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
