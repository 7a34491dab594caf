//! The history store's conformance suite on PostgreSQL: every database is a fresh schema.
//!
//! Runs when `FABRIKAM_TEST_POSTGRES_URL` names a server, and is skipped (saying so) otherwise;
//! with the variable set, a server that does not answer fails every test.

use std::sync::Arc;

use async_trait::async_trait;
use deliveryhistory::store::conformance::HistoryStoreHarness;
use deliveryhistory::{HistoryStore, PostgresHistoryStore};
use platform::testenv;

const SUITE: &str = "delivery history store on PostgreSQL";

struct PostgresHarness {
    server: String,
    /// Drops the test's schemas when it ends.
    cleanup: testenv::Cleanup,
}

#[async_trait]
impl HistoryStoreHarness for PostgresHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn HistoryStore>> {
        let url = self.cleanup.fresh_postgres_schema(&self.server).await;
        let mut stores: Vec<Arc<dyn HistoryStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(PostgresHistoryStore::open(&url).await.expect("open PostgreSQL store")));
        }
        stores
    }
}

// The block is expanded inside each test, so `require_server!` returns from (skips) the test.
deliveryhistory::deliveryhistory_store_conformance_tests!({
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    PostgresHarness { server, cleanup: testenv::Cleanup::new() }
});

#[tokio::test]
async fn open_store_takes_postgres_urls() {
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    let store = deliveryhistory::open_store(&url).await.expect("open through open_store");
    store.ping().await.expect("ping");
    let postgresql = url.replacen("postgres://", "postgresql://", 1);
    let again = deliveryhistory::open_store(&postgresql).await.expect("postgresql:// is accepted too");
    again.ping().await.expect("ping");
}

#[tokio::test]
async fn migrations_keep_their_own_bookkeeping_table() {
    use sqlx::Connection;
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    deliveryhistory::open_store(&url).await.expect("open");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list tables");
    assert_eq!(tables, ["_sqlx_migrations_deliveryhistory", "finished_deliveries"]);
}
