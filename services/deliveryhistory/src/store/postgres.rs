//! Times are Unix milliseconds (`BIGINT`), as in the SQLite backend, so both round alike.

use async_trait::async_trait;
use contracts::events::FinishedDelivery;
use sqlx::postgres::PgPool;

use super::{Bounds, HistoryQuery, HistoryStore, Page, Recorded, StoreError, decode, encode, page, recorded};

/// Connections per process; every operation is one short statement.
const POOL_SIZE: u32 = 8;

/// Finished deliveries in a PostgreSQL database shared by any number of history processes.
///
/// Every operation is one statement, so the winner rule holds across processes without locks.
pub struct PostgresHistoryStore {
    pool: PgPool,
}

impl PostgresHistoryStore {
    /// Connects (waiting for the server to come up) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = platform::postgres::open_pool(url, POOL_SIZE).await?;
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Our own bookkeeping table, so services sharing one schema do not read each other's
        // migration history as a modified one.
        migrator.dangerous_set_table_name("_sqlx_migrations_deliveryhistory");
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl HistoryStore for PostgresHistoryStore {
    async fn record(&self, finished: &FinishedDelivery) -> Result<Recorded, StoreError> {
        let row = encode(finished)?;
        let revision: Option<i64> = sqlx::query_scalar(
            "INSERT INTO finished_deliveries (delivery_id, owner_id, stage_rank, finished_at, document, revision)
             VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (delivery_id) DO UPDATE SET owner_id = excluded.owner_id,
                 stage_rank = excluded.stage_rank, finished_at = excluded.finished_at,
                 document = excluded.document, revision = finished_deliveries.revision + 1
             WHERE (excluded.finished_at, excluded.stage_rank, excluded.document)
                 > (finished_deliveries.finished_at, finished_deliveries.stage_rank, finished_deliveries.document)
             RETURNING revision",
        )
        .bind(&row.delivery_id)
        .bind(&row.owner_id)
        .bind(row.stage_rank)
        .bind(row.finished_at)
        .bind(&row.document)
        .fetch_optional(&self.pool)
        .await?;
        Ok(recorded(revision))
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<FinishedDelivery>, StoreError> {
        let document: Option<String> =
            sqlx::query_scalar("SELECT document FROM finished_deliveries WHERE delivery_id = $1")
                .bind(delivery_id)
                .fetch_optional(&self.pool)
                .await?;
        document.as_deref().map(decode).transpose()
    }

    async fn list(&self, query: &HistoryQuery) -> Result<Page, StoreError> {
        let b = Bounds::of(query);
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT document, finished_at, delivery_id FROM finished_deliveries
             WHERE owner_id = $1 AND finished_at >= $2 AND finished_at < $3
                 AND (finished_at, delivery_id) > ($4, $5)
                 AND ($7::text IS NULL OR (document::jsonb #>> '{delivery,owner,accountId}') = $7)
             ORDER BY finished_at, delivery_id LIMIT $6",
        )
        .bind(&query.owner_id)
        .bind(b.from)
        .bind(b.to)
        .bind(b.after_at)
        .bind(b.after_id)
        .bind(b.fetch)
        .bind(&query.account_id)
        .fetch_all(&self.pool)
        .await?;
        page(rows, query.limit)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}
