//! The package store's conformance suite on SQLite: every store opens a fresh database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use package::store::conformance::PackageStoreHarness;
use package::{PackageStore, SqlitePackageStore};
use platform::clock::{SharedClock, SystemClock};

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
impl PackageStoreHarness for SqliteHarness {
    async fn open_shared(&self, count: usize, clock: SharedClock) -> Vec<Arc<dyn PackageStore>> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("package-{n}.db"));
        let mut stores: Vec<Arc<dyn PackageStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(SqlitePackageStore::open(&path, clock.clone()).await.expect("open SQLite store")));
        }
        stores
    }
}

package::package_store_conformance_tests!(SqliteHarness::new());

#[tokio::test]
async fn open_store_names_both_accepted_url_forms() {
    for url in ["mysql://localhost/packages", "./data/package.db", ""] {
        let error = package::open_store(url, Arc::new(SystemClock)).await.err().expect("refused");
        let message = format!("{error:#}");
        assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
    }
}
