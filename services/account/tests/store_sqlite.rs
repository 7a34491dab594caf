//! The account store's conformance suite on SQLite: every store opens a fresh database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use account::store::conformance::AccountStoreHarness;
use account::{AccountStore, SqliteAccountStore};
use async_trait::async_trait;

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
impl AccountStoreHarness for SqliteHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn AccountStore>> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("account-{n}.db"));
        let mut stores: Vec<Arc<dyn AccountStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(SqliteAccountStore::open(&path).await.expect("open SQLite store")));
        }
        stores
    }
}

account::account_store_conformance_tests!(SqliteHarness::new());

#[tokio::test]
async fn open_store_names_both_accepted_url_forms() {
    for url in ["mysql://localhost/accounts", "./data/account.db", ""] {
        let error = account::open_store(url).await.err().expect("refused");
        let message = format!("{error:#}");
        assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
    }
}
