//! The queue behaviour suite against the embedded SQLite backend.

use std::sync::Arc;

use async_trait::async_trait;
use platform::bus::conformance::QueueHarness;
use platform::bus::{Queue, QueueOptions, SqliteQueue};

struct SqliteHarness {
    dir: tempfile::TempDir,
}

#[async_trait]
impl QueueHarness for SqliteHarness {
    async fn open(&self, name: &str, options: QueueOptions) -> Arc<dyn Queue> {
        let path = self.dir.path().join("bus.db");
        Arc::new(SqliteQueue::open(&path, name, options).await.expect("open sqlite queue"))
    }
}

platform::queue_conformance_tests!(SqliteHarness { dir: tempfile::tempdir().unwrap() });
