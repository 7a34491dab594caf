//! What ingestion remembers: the delivery ids it handed out (so a reschedule or cancel of an
//! unknown id is a 404, not a message the workflow can never apply) and the first response to
//! each `Idempotency-Key`.

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use postgres::PostgresIngestionStore;
pub use sqlite::SqliteIngestionStore;

pub type StoreError = sqlx::Error;

/// A response saved under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    pub request_hash: String,
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

#[async_trait]
pub trait IngestionStore: Send + Sync {
    /// Remembers that `delivery_id` was handed out, to `account_id` when the caller had one.
    /// Idempotent: a repeated record keeps the first.
    async fn record_accepted(
        &self,
        delivery_id: &str,
        owner_id: &str,
        account_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Forgets an id whose message never reached the queue.
    async fn forget_accepted(&self, delivery_id: &str) -> Result<(), StoreError>;
    async fn is_accepted(&self, delivery_id: &str) -> Result<bool, StoreError> {
        Ok(self.accepted_account(delivery_id).await?.is_some())
    }
    /// The account `delivery_id` was handed to, when it was: the recorded account, or the
    /// owner for an id handed out without one (the workflow makes the same fallback).
    async fn accepted_account(&self, delivery_id: &str) -> Result<Option<String>, StoreError>;
    /// The response saved for `key` in `scope` no earlier than `not_before`.
    async fn saved_response(
        &self,
        scope: &str,
        key: &str,
        not_before: DateTime<Utc>,
    ) -> Result<Option<SavedResponse>, StoreError>;
    /// Saves the first response for `key`: a later save keeps the first, unless the first was
    /// saved before `expired_before`.
    async fn save_response(
        &self,
        scope: &str,
        key: &str,
        response: &SavedResponse,
        at: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Drops responses saved before `before`.
    async fn purge_responses(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
