use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::clock::unix_millis;
use platform::sqlite::{Durability, open_pool};
use sqlx::sqlite::SqlitePool;

use super::{Row, Saved, StoreError, WorkflowStore, count_map, decode};
use crate::state::{WorkflowRecord, WorkflowStatus};

/// Workflow state in an embedded SQLite file (one workflow process).
pub struct SqliteWorkflowStore {
    pool: SqlitePool,
}

impl SqliteWorkflowStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(sqlx::Error::from)?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl WorkflowStore for SqliteWorkflowStore {
    async fn get(&self, delivery_id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as("SELECT doc, version FROM workflows WHERE delivery_id = ?1")
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(doc, version)| decode(&doc, version)).transpose()
    }

    async fn save(&self, record: &mut WorkflowRecord) -> Result<Saved, StoreError> {
        let row = Row::of(record)?;
        let written = if record.version == 0 {
            sqlx::query(
                "INSERT INTO workflows (delivery_id, status, complete_by, updated_at, version, doc)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5) ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(&record.delivery_id)
            .bind(row.status)
            .bind(row.complete_by)
            .bind(row.updated_at)
            .bind(&row.doc)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "UPDATE workflows SET status = ?2, complete_by = ?3, updated_at = ?4, version = version + 1, doc = ?5
                 WHERE delivery_id = ?1 AND version = ?6",
            )
            .bind(&record.delivery_id)
            .bind(row.status)
            .bind(row.complete_by)
            .bind(row.updated_at)
            .bind(&row.doc)
            .bind(record.version)
            .execute(&self.pool)
            .await?
        };
        if written.rows_affected() == 1 {
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
        let taken = sqlx::query(
            "INSERT INTO workflow_leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE workflow_leases.holder = excluded.holder OR workflow_leases.expires_at <= ?4",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms + ttl.as_millis() as i64)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
