use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::clock::unix_millis;
use platform::sqlite::{Durability, GroupWriter, Readers, open_pool};
use rusqlite::{OptionalExtension, params};
use sqlx::sqlite::SqlitePool;

use super::{Row, Saved, StoreError, WorkflowStore, count_map, decode};
use crate::state::{WorkflowRecord, WorkflowStatus};

/// Workflow state in an embedded SQLite file (one workflow process). Writes go through one
/// group-committing writer thread; a record is read on the caller's thread ([`Readers`]), and
/// the supervisor's scans go through a small pool.
pub struct SqliteWorkflowStore {
    pool: SqlitePool,
    readers: Readers,
    writer: GroupWriter,
}

impl SqliteWorkflowStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(sqlx::Error::from)?;
        let writer = GroupWriter::open(path, Durability::Normal, "workflow").await.map_err(sqlx::Error::from)?;
        let readers = Readers::open(path).map_err(platform::sqlite::into_sqlx)?;
        Ok(Self { pool, readers, writer })
    }
}

#[async_trait]
impl WorkflowStore for SqliteWorkflowStore {
    async fn get(&self, delivery_id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let row: Option<(String, i64)> = self
            .readers
            .read(|conn| {
                conn.prepare_cached("SELECT doc, version FROM workflows WHERE delivery_id = ?1")?
                    .query_row([delivery_id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(platform::sqlite::into_sqlx)?;
        row.map(|(doc, version)| decode(&doc, version)).transpose()
    }

    async fn save(&self, record: &mut WorkflowRecord) -> Result<Saved, StoreError> {
        let row = Row::of(record)?;
        let (delivery_id, version) = (record.delivery_id.clone(), record.version);
        let written = self
            .writer
            .write(move |conn| {
                let Row { status, complete_by, updated_at, doc } = row;
                if version == 0 {
                    conn.prepare_cached(
                        "INSERT INTO workflows (delivery_id, status, complete_by, updated_at, version, doc)
                         VALUES (?1, ?2, ?3, ?4, 1, ?5) ON CONFLICT (delivery_id) DO NOTHING",
                    )?
                    .execute(params![delivery_id, status, complete_by, updated_at, doc])
                } else {
                    conn.prepare_cached(
                        "UPDATE workflows SET status = ?2, complete_by = ?3, updated_at = ?4, version = version + 1,
                             doc = ?5
                         WHERE delivery_id = ?1 AND version = ?6",
                    )?
                    .execute(params![delivery_id, status, complete_by, updated_at, doc, version])
                }
            })
            .await
            .map_err(sqlx::Error::from)?;
        if written == 1 {
            record.version += 1;
            Ok(Saved::Written)
        } else {
            Ok(Saved::Conflict)
        }
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<WorkflowRecord>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT doc, version FROM workflows
             WHERE (status = 'running' AND complete_by < ?1) OR status = 'compensating'
             ORDER BY complete_by LIMIT ?2 + 0",
        )
        .bind(unix_millis(now))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|(doc, version)| decode(doc, *version)).collect()
    }

    async fn counts(&self) -> Result<BTreeMap<WorkflowStatus, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM workflows GROUP BY status").fetch_all(&self.pool).await?;
        Ok(count_map(rows))
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let now_ms = unix_millis(now);
        let expires_at = now_ms + ttl.as_millis() as i64;
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let taken = self
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO workflow_leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE workflow_leases.holder = excluded.holder OR workflow_leases.expires_at <= ?4",
                )?
                .execute(params![name, holder, expires_at, now_ms])
            })
            .await
            .map_err(sqlx::Error::from)?;
        Ok(taken == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.writer.is_running() {
            return Err(sqlx::Error::from(platform::sqlite::WriteError::Stopped).into());
        }
        Ok(())
    }
}
