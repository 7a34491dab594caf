//! The history store's conformance suite on SQLite: every database is a fresh file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use deliveryhistory::store::conformance::HistoryStoreHarness;
use deliveryhistory::{HistoryStore, SqliteHistoryStore};

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
impl HistoryStoreHarness for SqliteHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn HistoryStore>> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("deliveryhistory-{n}.db"));
        let mut stores: Vec<Arc<dyn HistoryStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(SqliteHistoryStore::open(&path).await.expect("open SQLite store")));
        }
        stores
    }
}

deliveryhistory::deliveryhistory_store_conformance_tests!(SqliteHarness::new());

#[tokio::test]
async fn open_store_names_both_accepted_url_forms() {
    for url in ["mysql://localhost/history", "./data/deliveryhistory.db", ""] {
        let error = deliveryhistory::open_store(url).await.err().expect("refused");
        let message = format!("{error:#}");
        assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
    }
}

#[tokio::test]
async fn a_reopened_file_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/deliveryhistory.db").display());
    let store = deliveryhistory::open_store(&url).await.expect("open, creating the directory");
    store.ping().await.unwrap();
    drop(store);
    let again = deliveryhistory::open_store(&url).await.expect("reopen: migrations already applied");
    again.ping().await.unwrap();
}
