//! The workflow store's conformance suite on PostgreSQL: every case opens a fresh schema.
//!
//! Runs when `FABRIKAM_TEST_POSTGRES_URL` names a server, and is skipped (saying so) otherwise;
//! with the variable set, a server that does not answer fails every test.

use std::sync::Arc;

use async_trait::async_trait;
use platform::testenv;
use workflow::store::conformance::WorkflowStoreHarness;
use workflow::store::{PostgresWorkflowStore, WorkflowStore};

const SUITE: &str = "workflow store on PostgreSQL";

struct PostgresHarness {
    server: String,
    /// Drops the test's schemas when it ends.
    cleanup: testenv::Cleanup,
}

#[async_trait]
impl WorkflowStoreHarness for PostgresHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn WorkflowStore>> {
        let url = self.cleanup.fresh_postgres_schema(&self.server).await;
        let mut stores: Vec<Arc<dyn WorkflowStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(PostgresWorkflowStore::open(&url).await.expect("open PostgreSQL store")));
        }
        stores
    }
}

workflow::workflow_store_conformance_tests!({
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    PostgresHarness { server, cleanup: testenv::Cleanup::new() }
});

#[tokio::test]
async fn open_store_takes_postgres_urls() {
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    let store = workflow::open_store(&url).await.expect("a postgres:// URL opens the PostgreSQL backend");
    store.ping().await.unwrap();
}
