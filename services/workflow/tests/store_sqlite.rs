//! The workflow store's conformance suite on SQLite: stores sharing one file in a temp dir.

use std::sync::Arc;

use async_trait::async_trait;
use workflow::store::conformance::WorkflowStoreHarness;
use workflow::store::{SqliteWorkflowStore, WorkflowStore};

struct SqliteHarness {
    dir: tempfile::TempDir,
}

#[async_trait]
impl WorkflowStoreHarness for SqliteHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn WorkflowStore>> {
        let path = self.dir.path().join("workflow.db");
        let mut stores: Vec<Arc<dyn WorkflowStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(SqliteWorkflowStore::open(&path).await.expect("open SQLite store")));
        }
        stores
    }
}

workflow::workflow_store_conformance_tests!(SqliteHarness { dir: tempfile::tempdir().unwrap() });
