//! Ingestion's records in PostgreSQL, shared by any number of ingestion processes.
//!
//! Every operation is a single statement (`INSERT .. ON CONFLICT` where a row may already
//! exist), so atomicity comes from PostgreSQL itself, never from process-local locks. Times are
//! stored as Unix milliseconds (`BIGINT`), like the SQLite backend, so both round alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::clock::unix_millis;
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::{IngestionStore, SavedResponse, StoreError};

/// Connections per process; every operation is one short statement.
const POOL_SIZE: u32 = 8;

/// Ingestion's records in a PostgreSQL database shared by several ingestion processes.
pub struct PostgresIngestionStore {
    pool: PgPool,
}

impl PostgresIngestionStore {
    /// Connects (waiting for the server to come up) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = platform::postgres::open_pool(url, POOL_SIZE).await?;
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Our own bookkeeping table, so services sharing one schema do not read each other's
        // migration history as a modified one.
        migrator.dangerous_set_table_name("_sqlx_migrations_ingestion");
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl IngestionStore for PostgresIngestionStore {
    async fn record_accepted(
        &self,
        delivery_id: &str,
        owner_id: &str,
        account_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO accepted_deliveries (delivery_id, owner_id, account_id, accepted_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(owner_id)
        .bind(account_id)
        .bind(unix_millis(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_accepted(&self, delivery_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM accepted_deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn accepted_account(&self, delivery_id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(account_id, owner_id) FROM accepted_deliveries WHERE delivery_id = $1")
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
             WHERE scope = $1 AND key = $2 AND created_at >= $3",
        )
        .bind(scope)
        .bind(key)
        .bind(unix_millis(not_before))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| SavedResponse {
            request_hash: row.get(0),
            status: u16::try_from(row.get::<i32, _>(1)).unwrap_or(500),
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
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, location, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash,
                 status = excluded.status, location = excluded.location, body = excluded.body,
                 created_at = excluded.created_at
             WHERE idempotency_keys.created_at < $8",
        )
        .bind(scope)
        .bind(key)
        .bind(&response.request_hash)
        .bind(i32::from(response.status))
        .bind(&response.location)
        .bind(&response.body)
        .bind(unix_millis(at))
        .bind(unix_millis(expired_before))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_responses(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(unix_millis(before))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}
