//! Where workflow state lives: the [`WorkflowStore`] port and its backends (SQLite embedded,
//! PostgreSQL when several workflow processes share it).

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use postgres::PostgresWorkflowStore;
pub use sqlite::SqliteWorkflowStore;

use crate::state::{WorkflowRecord, WorkflowStatus};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("workflow store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("workflow store: a stored record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// What a save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written; the record's version was bumped.
    Written,
    /// Someone else wrote the record since it was read (or created it first): nothing written.
    Conflict,
}

/// The workflow repository.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    async fn get(&self, delivery_id: &str) -> Result<Option<WorkflowRecord>, StoreError>;

    /// Writes `record` if the stored version still is `record.version` (0: not stored yet), and
    /// then bumps `record.version`. Two writers that read the same version: one wins.
    async fn save(&self, record: &mut WorkflowRecord) -> Result<Saved, StoreError>;

    /// What the supervisor must look at, oldest deadline first: running workflows whose
    /// complete-by time is before `now`, and every compensating one.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<WorkflowRecord>, StoreError>;

    /// How many workflows are in each status.
    async fn counts(&self) -> Result<BTreeMap<WorkflowStatus, u64>, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `now + ttl`; `false` while another
    /// holder's lease has not expired.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store named by `url`: `sqlite://PATH` or `postgres://...`.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn WorkflowStore>> {
    let store: Arc<dyn WorkflowStore> = if platform::postgres::is_postgres_url(url) {
        Arc::new(PostgresWorkflowStore::open(url).await.context("opening the workflow store on PostgreSQL")?)
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Arc::new(SqliteWorkflowStore::open(path).await.with_context(|| format!("opening workflow store {url}"))?)
    } else {
        anyhow::bail!("unsupported workflow store URL {url:?}: expected sqlite://PATH or postgres://USER@HOST/DB");
    };
    Ok(store)
}

/// The columns both backends write for a record.
struct Row {
    status: &'static str,
    complete_by: i64,
    updated_at: i64,
    doc: String,
}

impl Row {
    fn of(record: &WorkflowRecord) -> Result<Self, StoreError> {
        Ok(Self {
            status: record.status.as_str(),
            complete_by: platform::clock::unix_millis(record.complete_by),
            updated_at: platform::clock::unix_millis(record.updated_at),
            doc: serde_json::to_string(record)?,
        })
    }
}

fn decode(doc: &str, version: i64) -> Result<WorkflowRecord, StoreError> {
    let mut record: WorkflowRecord = serde_json::from_str(doc)?;
    record.version = version;
    Ok(record)
}

fn count_map(rows: Vec<(String, i64)>) -> BTreeMap<WorkflowStatus, u64> {
    rows.into_iter().filter_map(|(status, n)| WorkflowStatus::parse(&status).map(|s| (s, n.max(0) as u64))).collect()
}
