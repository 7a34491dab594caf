//! The account store's conformance suite on PostgreSQL: every store opens in a fresh schema.
//!
//! Runs when `FABRIKAM_TEST_POSTGRES_URL` names a server, and is skipped (saying so) otherwise;
//! with the variable set, a server that does not answer fails every test.

use std::sync::Arc;

use account::store::conformance::AccountStoreHarness;
use account::{AccountStore, PostgresAccountStore};
use async_trait::async_trait;
use platform::testenv;

const SUITE: &str = "account store on PostgreSQL";

struct PostgresHarness {
    server: String,
    /// Drops the test's schemas when it ends.
    cleanup: testenv::Cleanup,
}

#[async_trait]
impl AccountStoreHarness for PostgresHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn AccountStore>> {
        let url = self.cleanup.fresh_postgres_schema(&self.server).await;
        let mut stores: Vec<Arc<dyn AccountStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(PostgresAccountStore::open(&url).await.expect("open PostgreSQL store")));
        }
        stores
    }
}

// The block is expanded inside each test, so `require_server!` returns from (skips) the test.
account::account_store_conformance_tests!({
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    PostgresHarness { server, cleanup: testenv::Cleanup::new() }
});

#[tokio::test]
async fn open_store_takes_postgres_urls() {
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    let store = account::open_store(&url).await.expect("open through open_store");
    store.ping().await.expect("ping");
    let postgresql = url.replacen("postgres://", "postgresql://", 1);
    let again = account::open_store(&postgresql).await.expect("postgresql:// is accepted too");
    again.ping().await.expect("ping");
}
