use std::path::Path;

use async_trait::async_trait;
use contracts::package::Package;
use platform::clock::SharedClock;
use platform::clock::unix_millis;
use platform::query::Month;
use platform::sqlite::{Durability, GroupWriter, open_pool};
use rusqlite::params;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{PackageStore, StoreError, Upserted};
use crate::domain::{NewPackage, PackageChanges};

/// Packages in an embedded SQLite file. Writes go through one group-committing writer thread,
/// reads through a small pool.
pub struct SqlitePackageStore {
    pool: SqlitePool,
    writer: GroupWriter,
    clock: SharedClock,
}

impl SqlitePackageStore {
    pub async fn open(path: &Path, clock: SharedClock) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = GroupWriter::open(path, Durability::Normal, "package").await?;
        Ok(Self { pool, writer, clock })
    }
}

#[async_trait]
impl PackageStore for SqlitePackageStore {
    async fn upsert(&self, p: NewPackage) -> Result<Upserted, StoreError> {
        let now = unix_millis(self.clock.now());
        // One statement: `revision` is 0 only on the row this statement inserted.
        let revision: i64 = self
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO packages (id, size, weight, tag, owner_id, account_id, created_at, updated_at, revision)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?7, ?6, ?6, 0)
                     ON CONFLICT (id) DO UPDATE SET size = excluded.size, weight = excluded.weight,
                         tag = excluded.tag, owner_id = COALESCE(excluded.owner_id, packages.owner_id),
                         account_id = COALESCE(excluded.account_id, packages.account_id),
                         updated_at = excluded.updated_at, revision = packages.revision + 1
                     RETURNING revision",
                )?
                .query_row(params![p.id, p.size, p.weight, p.tag, p.owner_id, now, p.account_id], |row| row.get(0))
            })
            .await?;
        Ok(if revision == 0 { Upserted::Created } else { Upserted::Updated })
    }

    async fn get(&self, id: &str) -> Result<Option<Package>, StoreError> {
        let row = sqlx::query("SELECT id, size, weight, tag, owner_id FROM packages WHERE id = ?1")
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
        let id = id.to_owned();
        let updated = self
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE packages SET size = COALESCE(?1, size), weight = COALESCE(?2, weight),
                         tag = COALESCE(?3, tag), updated_at = ?4, revision = revision + 1
                     WHERE id = ?5",
                )?
                .execute(params![changes.size, changes.weight, changes.tag, now, id])
            })
            .await?;
        Ok(updated == 1)
    }

    async fn total_weight(&self, owner_id: &str, account_id: Option<&str>, month: Month) -> Result<f64, StoreError> {
        let (start, end) = month.range();
        let total: Option<f64> = sqlx::query_scalar(
            "SELECT SUM(weight) FROM packages WHERE owner_id = ?1 AND created_at >= ?2 AND created_at < ?3
                 AND (?4 IS NULL OR COALESCE(account_id, owner_id) = ?4)",
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.writer.is_running() {
            return Err(platform::sqlite::WriteError::Stopped.into());
        }
        Ok(())
    }
}
