use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::clock::unix_millis;
use platform::sqlite::{Durability, GroupWriter, open_pool};
use rusqlite::params;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{IngestionStore, SavedResponse, StoreError};

/// Ingestion's records in an embedded SQLite file: writes go through one group-committing
/// writer thread (every accepted request writes the ledger), reads through a small pool.
pub struct SqliteIngestionStore {
    pool: SqlitePool,
    writer: GroupWriter,
}

impl SqliteIngestionStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = GroupWriter::open(path, Durability::Normal, "ingestion").await?;
        Ok(Self { pool, writer })
    }
}

#[async_trait]
impl IngestionStore for SqliteIngestionStore {
    async fn record_accepted(
        &self,
        delivery_id: &str,
        owner_id: &str,
        account_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (delivery_id, owner_id, account_id) =
            (delivery_id.to_owned(), owner_id.to_owned(), account_id.map(str::to_owned));
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO accepted_deliveries (delivery_id, owner_id, account_id, accepted_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![delivery_id, owner_id, account_id, unix_millis(at)])
            })
            .await?;
        Ok(())
    }

    async fn forget_accepted(&self, delivery_id: &str) -> Result<(), StoreError> {
        let delivery_id = delivery_id.to_owned();
        self.writer
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM accepted_deliveries WHERE delivery_id = ?1")?.execute([delivery_id])
            })
            .await?;
        Ok(())
    }

    async fn accepted_account(&self, delivery_id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(account_id, owner_id) FROM accepted_deliveries WHERE delivery_id = ?1")
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn saved_response(
        &self,
        scope: &str,
        key: &str,
        not_before: DateTime<Utc>,
    ) -> Result<Option<SavedResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, status, location, body FROM idempotency_keys
             WHERE scope = ?1 AND key = ?2 AND created_at >= ?3",
        )
        .bind(scope)
        .bind(key)
        .bind(unix_millis(not_before))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| SavedResponse {
            request_hash: row.get(0),
            status: u16::try_from(row.get::<i64, _>(1)).unwrap_or(500),
            location: row.get(2),
            body: row.get(3),
        }))
    }

    async fn save_response(
        &self,
        scope: &str,
        key: &str,
        response: &SavedResponse,
        at: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // An expired row for the same key is replaced; a live one is kept (first response wins).
        let (scope, key, response) = (scope.to_owned(), key.to_owned(), response.clone());
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, status, location, body, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash,
                         status = excluded.status, location = excluded.location, body = excluded.body,
                         created_at = excluded.created_at
                     WHERE idempotency_keys.created_at < ?8",
                )?
                .execute(params![
                    scope,
                    key,
                    response.request_hash,
                    i64::from(response.status),
                    response.location,
                    response.body,
                    unix_millis(at),
                    unix_millis(expired_before),
                ])
            })
            .await?;
        Ok(())
    }

    async fn purge_responses(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = unix_millis(before);
        let purged = self
            .writer
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([before])
            })
            .await?;
        Ok(u64::try_from(purged).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.writer.is_running() {
            return Err(platform::sqlite::WriteError::Stopped.into());
        }
        Ok(())
    }
}
