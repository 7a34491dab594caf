//! Where packages live: the [`PackageStore`] port and its backends.

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use contracts::package::Package;
use platform::query::Month;

pub use postgres::PostgresPackageStore;
pub use sqlite::SqlitePackageStore;

use crate::domain::{NewPackage, PackageChanges};

/// Whether an upsert created the package or replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

/// Store errors: the backend failed.
pub type StoreError = sqlx::Error;

/// The package repository.
#[async_trait]
pub trait PackageStore: Send + Sync {
    /// Creates or replaces; atomic, so concurrent upserts of one id create it once.
    async fn upsert(&self, package: NewPackage) -> Result<Upserted, StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Package>, StoreError>;
    /// `false` when there is no such package.
    async fn update(&self, id: &str, changes: PackageChanges) -> Result<bool, StoreError>;
    /// Total weight of the packages `owner_id` sent in `month` (by first-stored time).
    /// `account_id`: only that account's packages (a package stored without an account counts
    /// as its owner's); every account's when none.
    async fn total_weight(&self, owner_id: &str, account_id: Option<&str>, month: Month) -> Result<f64, StoreError>;
    /// `Ok` when the backend answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
