//! The delivery store's behaviour suite against the embedded SQLite backend.

use std::sync::Arc;

use async_trait::async_trait;
use delivery::store::conformance::DeliveryStoreHarness;
use delivery::{DeliveryStore, SqliteDeliveryStore};

/// Each store gets its own file; the directory lives as long as the harness (the test).
struct SqliteHarness {
    dir: tempfile::TempDir,
}

#[async_trait]
impl DeliveryStoreHarness for SqliteHarness {
    async fn open(&self) -> Arc<dyn DeliveryStore> {
        let path = self.dir.path().join(format!("{}.db", uuid::Uuid::new_v4().simple()));
        Arc::new(SqliteDeliveryStore::open(&path).await.expect("open sqlite delivery store"))
    }
}

delivery::delivery_store_conformance_tests!(SqliteHarness { dir: tempfile::tempdir().unwrap() });
