//! The drone store's conformance suite on SQLite: every store opens a fresh database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use dronescheduler::store::conformance::DroneStoreHarness;
use dronescheduler::{DroneStore, FleetConfig, SqliteDroneStore};

struct SqliteHarness {
    dir: tempfile::TempDir,
    databases: AtomicUsize,
}

impl SqliteHarness {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temporary directory"), databases: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl DroneStoreHarness for SqliteHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn DroneStore>> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("dronescheduler-{n}.db"));
        let mut stores: Vec<Arc<dyn DroneStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(SqliteDroneStore::open(&path).await.expect("open SQLite store")));
        }
        stores
    }
}

dronescheduler::dronescheduler_store_conformance_tests!(SqliteHarness::new());

#[tokio::test]
async fn open_store_names_both_accepted_url_forms() {
    for url in ["mysql://localhost/fleet", "./data/dronescheduler.db", ""] {
        let error = dronescheduler::open_store(url, &FleetConfig::default()).await.err().expect("refused");
        let message = format!("{error:#}");
        assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
    }
}
