//! The behaviour suite every [`WorkflowStore`] backend must pass.
//!
//! A backend's test file implements [`WorkflowStoreHarness`] and expands
//! [`workflow_store_conformance_tests!`](crate::workflow_store_conformance_tests), which turns
//! each function here into its own `#[tokio::test]`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};

use super::{Saved, WorkflowStore};
use crate::state::{Step, WorkflowRecord, WorkflowStatus};

/// Opens the backend under test.
#[async_trait]
pub trait WorkflowStoreHarness: Send + Sync {
    /// `count` stores on one fresh, empty database: what `count` workflow processes sharing it
    /// would see.
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn WorkflowStore>>;

    async fn open(&self) -> Arc<dyn WorkflowStore> {
        self.open_shared(1).await.pop().expect("the harness opened no store")
    }
}

/// Expands to one test per behaviour for the harness built by `$make` (evaluated inside each
/// test, so it may `.await` or `return` to skip).
#[macro_export]
macro_rules! workflow_store_conformance_tests {
    ($make:expr) => {
        $crate::workflow_store_conformance_tests!(@cases $make;
            a_saved_record_reads_back_whole,
            unknown_ids_read_as_none,
            saves_bump_the_version_and_stale_writers_lose,
            two_creators_of_one_id_one_wins,
            due_finds_overdue_running_and_every_compensating,
            counts_group_by_status,
            a_lease_has_one_holder_until_it_expires,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::store::conformance::$case(&harness).await;
            }
        )*
    };
}

fn at(minute: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 10, minute, 0).unwrap()
}

fn record(id: &str, status: WorkflowStatus, complete_by_minute: u32) -> WorkflowRecord {
    WorkflowRecord::new(id, status, at(complete_by_minute), at(0))
}

pub async fn a_saved_record_reads_back_whole(h: &dyn WorkflowStoreHarness) {
    let store = h.open().await;
    let mut r = record("d1", WorkflowStatus::Running, 30);
    r.step_done(Step::Package, at(1));
    r.step_failed(Step::Drone, "no drone free", at(2));
    r.drone_id = Some("drone-7".into());
    assert_eq!(store.save(&mut r).await.unwrap(), Saved::Written);
    assert_eq!(r.version, 1);
    let back = store.get("d1").await.unwrap().expect("stored");
    assert_eq!(back, r);
    assert_eq!(back.version, 1);
}

pub async fn unknown_ids_read_as_none(h: &dyn WorkflowStoreHarness) {
    let store = h.open().await;
    assert!(store.get("nope").await.unwrap().is_none());
    store.ping().await.unwrap();
}

pub async fn saves_bump_the_version_and_stale_writers_lose(h: &dyn WorkflowStoreHarness) {
    let stores = h.open_shared(2).await;
    let mut r = record("d1", WorkflowStatus::Running, 30);
    store_ok(&*stores[0], &mut r).await;
    let mut mine = stores[0].get("d1").await.unwrap().unwrap();
    let mut theirs = stores[1].get("d1").await.unwrap().unwrap();
    mine.status = WorkflowStatus::Scheduled;
    store_ok(&*stores[0], &mut mine).await;
    assert_eq!(mine.version, 2);
    theirs.status = WorkflowStatus::Cancelled;
    assert_eq!(stores[1].save(&mut theirs).await.unwrap(), Saved::Conflict);
    assert_eq!(theirs.version, 1, "a losing save leaves the version alone");
    assert_eq!(stores[1].get("d1").await.unwrap().unwrap().status, WorkflowStatus::Scheduled);
}

pub async fn two_creators_of_one_id_one_wins(h: &dyn WorkflowStoreHarness) {
    let stores = h.open_shared(2).await;
    let mut a = record("d1", WorkflowStatus::Running, 30);
    let mut b = record("d1", WorkflowStatus::Cancelled, 30);
    let (x, y) = tokio::join!(stores[0].save(&mut a), stores[1].save(&mut b));
    let outcomes = [x.unwrap(), y.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| **o == Saved::Written).count(), 1, "{outcomes:?}");
}

pub async fn due_finds_overdue_running_and_every_compensating(h: &dyn WorkflowStoreHarness) {
    let store = h.open().await;
    for (id, status, deadline) in [
        ("late", WorkflowStatus::Running, 10),
        ("later", WorkflowStatus::Running, 5),
        ("on-time", WorkflowStatus::Running, 40),
        ("compensating", WorkflowStatus::Compensating, 50),
        ("scheduled", WorkflowStatus::Scheduled, 1),
        ("failed", WorkflowStatus::Failed, 1),
    ] {
        store_ok(&*store, &mut record(id, status, deadline)).await;
    }
    let due: Vec<String> = store.due(at(20), 10).await.unwrap().into_iter().map(|r| r.delivery_id).collect();
    assert_eq!(due, ["later", "late", "compensating"], "oldest deadline first");
    assert_eq!(store.due(at(20), 1).await.unwrap().len(), 1);
    let versions: Vec<i64> = store.due(at(20), 10).await.unwrap().iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 1, 1], "records come with their version, ready to save");
}

pub async fn counts_group_by_status(h: &dyn WorkflowStoreHarness) {
    let store = h.open().await;
    for (i, status) in [WorkflowStatus::Scheduled, WorkflowStatus::Scheduled, WorkflowStatus::Failed].iter().enumerate()
    {
        store_ok(&*store, &mut record(&format!("d{i}"), *status, 1)).await;
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.get(&WorkflowStatus::Scheduled), Some(&2));
    assert_eq!(counts.get(&WorkflowStatus::Failed), Some(&1));
    assert_eq!(counts.get(&WorkflowStatus::Running), None);
}

pub async fn a_lease_has_one_holder_until_it_expires(h: &dyn WorkflowStoreHarness) {
    let stores = h.open_shared(2).await;
    let ttl = Duration::from_secs(30);
    assert!(stores[0].try_lease("supervisor", "a", ttl, at(0)).await.unwrap());
    assert!(!stores[1].try_lease("supervisor", "b", ttl, at(0)).await.unwrap(), "a holds it");
    assert!(stores[0].try_lease("supervisor", "a", ttl, at(0) + chrono::Duration::seconds(20)).await.unwrap());
    // a renewed at 0:20 until 0:50; b cannot take it at 0:40 but can at 0:51.
    let t = |s: i64| at(0) + chrono::Duration::seconds(s);
    assert!(!stores[1].try_lease("supervisor", "b", ttl, t(40)).await.unwrap());
    assert!(stores[1].try_lease("supervisor", "b", ttl, t(51)).await.unwrap());
    assert!(!stores[0].try_lease("supervisor", "a", ttl, t(52)).await.unwrap(), "b holds it now");
    assert!(stores[0].try_lease("other", "a", ttl, t(52)).await.unwrap(), "leases are per name");
}

async fn store_ok(store: &dyn WorkflowStore, record: &mut WorkflowRecord) {
    assert_eq!(store.save(record).await.unwrap(), Saved::Written);
}
