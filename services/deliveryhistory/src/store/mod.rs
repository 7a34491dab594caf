//! Where finished deliveries live: the [`HistoryStore`] port and its backends.

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::events::FinishedDelivery;
use platform::clock::unix_millis;

pub use postgres::PostgresHistoryStore;
pub use sqlite::SqliteHistoryStore;

use crate::cursor::Cursor;

/// Store errors: the backend failed, or a stored document no longer reads.
pub type StoreError = sqlx::Error;

/// What recording a finish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The delivery's first finish.
    New,
    /// It replaced an earlier finish of the delivery.
    Replaced,
    /// Nothing changed: the same finish again, or one older than the stored one.
    Kept,
}

impl Recorded {
    pub fn label(&self) -> &'static str {
        match self {
            Self::New => "recorded",
            Self::Replaced => "replaced",
            Self::Kept => "unchanged",
        }
    }
}

/// One owner's finished deliveries, a page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// `delivery.owner.userId`, exact.
    pub owner_id: String,
    /// Only this account's deliveries (`delivery.owner.accountId`, exact); every account's
    /// when none (the service runs without an identity policy).
    pub account_id: Option<String>,
    /// Finished at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Finished before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only items after this position (the previous page's `next`).
    pub after: Option<Cursor>,
    /// At most this many items (at least 1).
    pub limit: u32,
}

/// Items in order of finish time, then delivery id.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<FinishedDelivery>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// The history repository.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Keeps `finished` unless the delivery already has a finish that wins over it (see
    /// [`StoredFinish::supersedes`](crate::domain::StoredFinish::supersedes)). Atomic, so
    /// concurrent records of one delivery settle on the same winner in any order.
    async fn record(&self, finished: &FinishedDelivery) -> Result<Recorded, StoreError>;
    async fn get(&self, delivery_id: &str) -> Result<Option<FinishedDelivery>, StoreError>;
    async fn list(&self, query: &HistoryQuery) -> Result<Page, StoreError>;
    /// `Ok` when the backend answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The query as the SQL of both backends binds it: `[from, to)` in milliseconds and the keyset
/// position, open bounds as the extreme values so one statement (and one index range) serves
/// every combination.
struct Bounds<'a> {
    from: i64,
    to: i64,
    after_at: i64,
    after_id: &'a str,
    /// One more than the page, to learn whether another page follows.
    fetch: i64,
}

impl<'a> Bounds<'a> {
    fn of(query: &'a HistoryQuery) -> Self {
        let (after_at, after_id) = match &query.after {
            Some(cursor) => (cursor.finished_at, cursor.delivery_id.as_str()),
            // Below every stored position: ids are never empty.
            None => (i64::MIN, ""),
        };
        Self {
            from: query.from.map_or(i64::MIN, unix_millis),
            to: query.to.map_or(i64::MAX, unix_millis),
            after_at,
            after_id,
            fetch: i64::from(query.limit.max(1)) + 1,
        }
    }
}

/// Turns the rows `(document, finished_at, delivery_id)` fetched with [`Bounds::fetch`] into a page.
fn page(mut rows: Vec<(String, i64, String)>, limit: u32) -> Result<Page, StoreError> {
    let limit = limit.max(1) as usize;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = match rows.last() {
        Some((_, finished_at, delivery_id)) if more => {
            Some(Cursor { finished_at: *finished_at, delivery_id: delivery_id.clone() })
        }
        _ => None,
    };
    let items = rows.iter().map(|(document, _, _)| decode(document)).collect::<Result<_, _>>()?;
    Ok(Page { items, next })
}

fn decode(document: &str) -> Result<FinishedDelivery, StoreError> {
    serde_json::from_str(document).map_err(|e| StoreError::Decode(Box::new(e)))
}

fn encode(finished: &FinishedDelivery) -> Result<crate::domain::StoredFinish, StoreError> {
    crate::domain::StoredFinish::new(finished).map_err(|e| StoreError::Encode(Box::new(e)))
}

/// What `INSERT .. RETURNING revision` told: no row when the stored finish was kept.
fn recorded(revision: Option<i64>) -> Recorded {
    match revision {
        None => Recorded::Kept,
        Some(0) => Recorded::New,
        Some(_) => Recorded::Replaced,
    }
}
