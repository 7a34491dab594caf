use std::path::Path;

use async_trait::async_trait;
use contracts::events::FinishedDelivery;
use platform::sqlite::{Durability, GroupWriter, open_pool};
use rusqlite::{OptionalExtension, params};
use sqlx::sqlite::SqlitePool;

use super::{Bounds, HistoryQuery, HistoryStore, Page, Recorded, StoreError, decode, encode, page, recorded};

/// Finished deliveries in an embedded SQLite file. Writes go through one group-committing
/// writer thread, reads through a small pool.
pub struct SqliteHistoryStore {
    pool: SqlitePool,
    writer: GroupWriter,
}

impl SqliteHistoryStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        // A finish lost in a power cut comes back: the stream redelivers what was not acked.
        let pool = open_pool(path, Durability::Normal, 4).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = GroupWriter::open(path, Durability::Normal, "deliveryhistory").await?;
        Ok(Self { pool, writer })
    }
}

#[async_trait]
impl HistoryStore for SqliteHistoryStore {
    async fn record(&self, finished: &FinishedDelivery) -> Result<Recorded, StoreError> {
        let row = encode(finished)?;
        // One statement: the winner rule is the upsert's condition, so no read-then-write race.
        let revision: Option<i64> = self
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO finished_deliveries (delivery_id, owner_id, stage_rank, finished_at, document, revision)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)
                     ON CONFLICT (delivery_id) DO UPDATE SET owner_id = excluded.owner_id,
                         stage_rank = excluded.stage_rank, finished_at = excluded.finished_at,
                         document = excluded.document, revision = finished_deliveries.revision + 1
                     WHERE (excluded.finished_at, excluded.stage_rank, excluded.document)
                         > (finished_deliveries.finished_at, finished_deliveries.stage_rank, finished_deliveries.document)
                     RETURNING revision",
                )?
                .query_row(
                    params![row.delivery_id, row.owner_id, row.stage_rank, row.finished_at, row.document],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(recorded(revision))
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<FinishedDelivery>, StoreError> {
        let document: Option<String> =
            sqlx::query_scalar("SELECT document FROM finished_deliveries WHERE delivery_id = ?1")
                .bind(delivery_id)
                .fetch_optional(&self.pool)
                .await?;
        document.as_deref().map(decode).transpose()
    }

    async fn list(&self, query: &HistoryQuery) -> Result<Page, StoreError> {
        let b = Bounds::of(query);
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT document, finished_at, delivery_id FROM finished_deliveries
             WHERE owner_id = ?1 AND finished_at >= ?2 AND finished_at < ?3
                 AND (finished_at, delivery_id) > (?4, ?5)
                 AND (?7 IS NULL OR json_extract(document, '$.delivery.owner.accountId') = ?7)
             ORDER BY finished_at, delivery_id LIMIT ?6 + 0",
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.writer.is_running() {
            return Err(platform::sqlite::WriteError::Stopped.into());
        }
        Ok(())
    }
}
