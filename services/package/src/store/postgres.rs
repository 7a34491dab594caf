//! Times are stored as Unix milliseconds (`BIGINT`), like the SQLite backend, so both round alike.

use async_trait::async_trait;
use contracts::package::Package;
use platform::clock::SharedClock;
use platform::clock::unix_millis;
use platform::query::Month;
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::{PackageStore, StoreError, Upserted};
use crate::domain::{NewPackage, PackageChanges};

/// Connections per process; every operation is one short statement.
const POOL_SIZE: u32 = 8;

/// Packages in a PostgreSQL database shared by any number of package processes.
///
/// Every operation is a single statement, so atomicity comes from PostgreSQL itself (an upsert is
/// one `INSERT .. ON CONFLICT`), never from process-local locks.
pub struct PostgresPackageStore {
    pool: PgPool,
    clock: SharedClock,
}

impl PostgresPackageStore {
    /// Connects (waiting for the server to come up) and brings the schema up to date.
    pub async fn open(url: &str, clock: SharedClock) -> Result<Self, StoreError> {
        let pool = platform::postgres::open_pool(url, POOL_SIZE).await?;
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Our own bookkeeping table, so services sharing one schema do not read each other's
        // migration history as a modified one.
        migrator.dangerous_set_table_name("_sqlx_migrations_package");
        migrator.run(&pool).await?;
        Ok(Self { pool, clock })
    }
}

#[async_trait]
impl PackageStore for PostgresPackageStore {
    async fn upsert(&self, p: NewPackage) -> Result<Upserted, StoreError> {
        let now = unix_millis(self.clock.now());
        // One statement: `revision` is 0 only on the row this statement inserted.
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO packages (id, size, weight, tag, owner_id, account_id, created_at, updated_at, revision)
             VALUES ($1, $2, $3, $4, $5, $7, $6, $6, 0)
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, weight = excluded.weight,
                 tag = excluded.tag, owner_id = COALESCE(excluded.owner_id, packages.owner_id),
                 account_id = COALESCE(excluded.account_id, packages.account_id),
                 updated_at = excluded.updated_at, revision = packages.revision + 1
             RETURNING revision",
        )
        .bind(&p.id)
        .bind(p.size)
        .bind(p.weight)
        .bind(&p.tag)
        .bind(&p.owner_id)
        .bind(now)
        .bind(&p.account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(if revision == 0 { Upserted::Created } else { Upserted::Updated })
    }

    async fn get(&self, id: &str) -> Result<Option<Package>, StoreError> {
        let row = sqlx::query("SELECT id, size, weight, tag, owner_id FROM packages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| Package {
            id: row.get(0),
            size: row.get(1),
            weight: row.get(2),
            tag: row.get(3),
            owner_id: row.get(4),
        }))
    }

    async fn update(&self, id: &str, changes: PackageChanges) -> Result<bool, StoreError> {
        let now = unix_millis(self.clock.now());
        let result = sqlx::query(
            "UPDATE packages SET size = COALESCE($1, size), weight = COALESCE($2, weight),
                 tag = COALESCE($3, tag), updated_at = $4, revision = revision + 1
             WHERE id = $5",
        )
        .bind(changes.size)
        .bind(changes.weight)
        .bind(&changes.tag)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn total_weight(&self, owner_id: &str, account_id: Option<&str>, month: Month) -> Result<f64, StoreError> {
        let (start, end) = month.range();
        let total: Option<f64> = sqlx::query_scalar(
            "SELECT SUM(weight) FROM packages WHERE owner_id = $1 AND created_at >= $2 AND created_at < $3
                 AND ($4::text IS NULL OR COALESCE(account_id, owner_id) = $4)",
        )
        .bind(owner_id)
        .bind(unix_millis(start))
        .bind(unix_millis(end))
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(total.unwrap_or(0.0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}
