//! The behaviour suite every [`PackageStore`] backend must pass.
//!
//! A backend's test file implements [`PackageStoreHarness`] and expands
//! [`package_store_conformance_tests!`](crate::package_store_conformance_tests), which turns each
//! function here into its own `#[tokio::test]`. Time only moves through a
//! [`ManualClock`], so no case sleeps.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::package::Package;
use platform::clock::{ManualClock, SharedClock};
use platform::query::Month;

use super::{PackageStore, Upserted};
use crate::domain::{NewPackage, PackageChanges};

/// Opens the backend under test.
#[async_trait]
pub trait PackageStoreHarness: Send + Sync {
    /// `count` stores on one fresh, empty database, each with its own connections: what
    /// `count` package processes sharing the database would see.
    async fn open_shared(&self, count: usize, clock: SharedClock) -> Vec<Arc<dyn PackageStore>>;

    /// A fresh, empty store.
    async fn open(&self, clock: SharedClock) -> Arc<dyn PackageStore> {
        self.open_shared(1, clock).await.pop().expect("the harness opened no store")
    }
}

/// Expands to one test per behaviour for the harness built by `$make`.
///
/// `$make` is evaluated inside each test, so it may `.await`, and it may `return` to skip the
/// test (e.g. through `platform::require_server!` when the backend's server is not configured).
#[macro_export]
macro_rules! package_store_conformance_tests {
    ($make:expr) => {
        $crate::package_store_conformance_tests!(@cases $make;
            upsert_creates_then_replaces,
            get_of_unknown_id_is_none,
            concurrent_upserts_create_once,
            update_changes_only_the_given_fields,
            update_of_unknown_id_returns_false,
            total_weight_respects_owner_and_month_boundaries,
            total_weight_counts_by_first_stored_time,
            total_weight_counts_only_the_asked_accounts_packages,
            ping_answers,
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

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32, ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).single().expect("valid time") + Duration::milliseconds(ms)
}

fn clock() -> ManualClock {
    ManualClock::new(at(2026, 3, 15, 12, 0, 0, 0))
}

fn package(id: &str, weight: f64, owner: Option<&str>) -> NewPackage {
    NewPackage {
        id: id.to_owned(),
        size: "small",
        weight,
        tag: Some("fragile".to_owned()),
        owner_id: owner.map(str::to_owned),
        account_id: None,
    }
}

const MARCH: Month = Month { year: 2026, month: 3 };

pub async fn upsert_creates_then_replaces(h: &dyn PackageStoreHarness) {
    let store = h.open(Arc::new(clock())).await;
    assert_eq!(store.upsert(package("p1", 2.5, Some("contoso"))).await.unwrap(), Upserted::Created);
    assert_eq!(
        store.get("p1").await.unwrap(),
        Some(Package {
            id: "p1".into(),
            size: "small".into(),
            weight: 2.5,
            tag: Some("fragile".into()),
            owner_id: Some("contoso".into()),
        })
    );
    // A replacement takes every field, except that a missing owner keeps the stored one.
    let replacement = NewPackage { size: "large", weight: 4.0, tag: None, ..package("p1", 0.0, None) };
    assert_eq!(store.upsert(replacement).await.unwrap(), Upserted::Updated);
    assert_eq!(
        store.get("p1").await.unwrap(),
        Some(Package {
            id: "p1".into(),
            size: "large".into(),
            weight: 4.0,
            tag: None,
            owner_id: Some("contoso".into())
        })
    );
    assert_eq!(store.upsert(package("p1", 4.5, Some("fabrikam"))).await.unwrap(), Upserted::Updated);
    let stored = store.get("p1").await.unwrap().expect("stored");
    assert_eq!((stored.size.as_str(), stored.weight), ("small", 4.5));
    assert_eq!(stored.owner_id.as_deref(), Some("fabrikam"));
    // Other packages are untouched.
    assert_eq!(store.upsert(package("p2", 1.0, None)).await.unwrap(), Upserted::Created);
    assert_eq!(store.get("p2").await.unwrap().expect("stored").owner_id, None);
}

pub async fn get_of_unknown_id_is_none(h: &dyn PackageStoreHarness) {
    let store = h.open(Arc::new(clock())).await;
    assert_eq!(store.get("nobody").await.unwrap(), None);
    store.upsert(package("p1", 1.0, None)).await.unwrap();
    assert_eq!(store.get("P1").await.unwrap(), None, "ids are case-sensitive");
}

pub async fn concurrent_upserts_create_once(h: &dyn PackageStoreHarness) {
    // Two stores on one database, as two package processes behind a load balancer.
    let stores = h.open_shared(2, Arc::new(clock())).await;
    let upserts = (0..20).map(|i| {
        let store = stores[i % stores.len()].clone();
        async move { store.upsert(package("same", 1.0 + i as f64, Some("contoso"))).await }
    });
    let outcomes = futures::future::join_all(upserts).await;
    let created = outcomes.iter().filter(|o| matches!(o, Ok(Upserted::Created))).count();
    let updated = outcomes.iter().filter(|o| matches!(o, Ok(Upserted::Updated))).count();
    assert_eq!((created, updated), (1, 19), "{outcomes:?}");
    // The package is counted once, with the weight of whichever replacement came last.
    let weight = stores[0].get("same").await.unwrap().expect("stored").weight;
    assert_eq!(stores[1].total_weight("contoso", None, MARCH).await.unwrap(), weight);
}

pub async fn update_changes_only_the_given_fields(h: &dyn PackageStoreHarness) {
    let store = h.open(Arc::new(clock())).await;
    store.upsert(package("p1", 2.0, Some("contoso"))).await.unwrap();
    let weight_only = PackageChanges { weight: Some(3.5), ..PackageChanges::default() };
    assert!(store.update("p1", weight_only).await.unwrap());
    assert_eq!(
        store.get("p1").await.unwrap(),
        Some(Package {
            id: "p1".into(),
            size: "small".into(),
            weight: 3.5,
            tag: Some("fragile".into()),
            owner_id: Some("contoso".into()),
        })
    );
    let size_and_tag = PackageChanges { size: Some("medium"), tag: Some("heavy".into()), weight: None };
    assert!(store.update("p1", size_and_tag).await.unwrap());
    let stored = store.get("p1").await.unwrap().expect("stored");
    assert_eq!((stored.size.as_str(), stored.weight, stored.tag.as_deref()), ("medium", 3.5, Some("heavy")));
    // An update is not a re-creation.
    assert_eq!(store.upsert(package("p1", 1.0, None)).await.unwrap(), Upserted::Updated);
}

pub async fn update_of_unknown_id_returns_false(h: &dyn PackageStoreHarness) {
    let store = h.open(Arc::new(clock())).await;
    let changes = PackageChanges { weight: Some(1.0), ..PackageChanges::default() };
    assert!(!store.update("nobody", changes.clone()).await.unwrap());
    assert_eq!(store.get("nobody").await.unwrap(), None, "an update must not create");
    store.upsert(package("p1", 2.0, None)).await.unwrap();
    assert!(!store.update("p2", changes).await.unwrap());
    assert_eq!(store.get("p1").await.unwrap().expect("stored").weight, 2.0);
}

pub async fn total_weight_respects_owner_and_month_boundaries(h: &dyn PackageStoreHarness) {
    let clock = clock();
    let store = h.open(Arc::new(clock.clone())).await;
    assert_eq!(store.total_weight("contoso", None, MARCH).await.unwrap(), 0.0, "nothing stored yet");
    let stored_at = [
        ("feb-last-ms", at(2026, 2, 28, 23, 59, 59, 999), "contoso", 100.0),
        ("mar-first-ms", at(2026, 3, 1, 0, 0, 0, 0), "contoso", 1.5),
        ("mar-mid", at(2026, 3, 15, 12, 0, 0, 0), "contoso", 2.25),
        ("mar-last-ms", at(2026, 3, 31, 23, 59, 59, 999), "contoso", 4.0),
        ("apr-first-ms", at(2026, 4, 1, 0, 0, 0, 0), "contoso", 200.0),
        ("mar-other-owner", at(2026, 3, 10, 0, 0, 0, 0), "fabrikam", 8.0),
        ("mar-last-year", at(2025, 3, 10, 0, 0, 0, 0), "contoso", 400.0),
    ];
    for (id, time, owner, weight) in stored_at {
        clock.set(time);
        store.upsert(package(id, weight, Some(owner))).await.unwrap();
    }
    clock.set(at(2026, 3, 20, 0, 0, 0, 0));
    store.upsert(package("no-owner", 16.0, None)).await.unwrap();
    assert_eq!(store.total_weight("contoso", None, MARCH).await.unwrap(), 7.75);
    assert_eq!(store.total_weight("fabrikam", None, MARCH).await.unwrap(), 8.0);
    assert_eq!(store.total_weight("contoso", None, Month { year: 2026, month: 2 }).await.unwrap(), 100.0);
    assert_eq!(store.total_weight("contoso", None, Month { year: 2026, month: 4 }).await.unwrap(), 200.0);
    assert_eq!(store.total_weight("contoso", None, Month { year: 2025, month: 3 }).await.unwrap(), 400.0);
    assert_eq!(store.total_weight("CONTOSO", None, MARCH).await.unwrap(), 0.0, "owners are case-sensitive");
    assert_eq!(store.total_weight("nobody", None, MARCH).await.unwrap(), 0.0);
}

pub async fn total_weight_counts_by_first_stored_time(h: &dyn PackageStoreHarness) {
    let clock = clock();
    let store = h.open(Arc::new(clock.clone())).await;
    store.upsert(package("p1", 2.0, Some("contoso"))).await.unwrap();
    // Replaced and patched in April: still March's package, with its current weight.
    clock.set(at(2026, 4, 2, 0, 0, 0, 0));
    store.upsert(package("p1", 3.0, Some("contoso"))).await.unwrap();
    store.update("p1", PackageChanges { weight: Some(5.0), ..PackageChanges::default() }).await.unwrap();
    assert_eq!(store.total_weight("contoso", None, MARCH).await.unwrap(), 5.0);
    assert_eq!(store.total_weight("contoso", None, Month { year: 2026, month: 4 }).await.unwrap(), 0.0);
    // A replacement naming another owner moves the package to that owner.
    store.upsert(package("p1", 5.0, Some("fabrikam"))).await.unwrap();
    assert_eq!(store.total_weight("contoso", None, MARCH).await.unwrap(), 0.0);
    assert_eq!(store.total_weight("fabrikam", None, MARCH).await.unwrap(), 5.0);
}

pub async fn ping_answers(h: &dyn PackageStoreHarness) {
    let store = h.open(Arc::new(clock())).await;
    store.ping().await.unwrap();
}

pub async fn total_weight_counts_only_the_asked_accounts_packages(h: &dyn PackageStoreHarness) {
    let store = h.open(Arc::new(clock())).await;
    let of = |id: &str, weight: f64, account: Option<&str>| NewPackage {
        account_id: account.map(str::to_owned),
        ..package(id, weight, Some("user-7"))
    };
    store.upsert(of("p1", 1.0, Some("acc-1"))).await.unwrap();
    store.upsert(of("p2", 2.0, Some("acc-2"))).await.unwrap();
    store.upsert(of("p3", 4.0, Some("acc-1"))).await.unwrap();
    // Stored without an account: its owner stands for it.
    store.upsert(of("p4", 8.0, None)).await.unwrap();
    assert_eq!(store.total_weight("user-7", Some("acc-1"), MARCH).await.unwrap(), 5.0);
    assert_eq!(store.total_weight("user-7", Some("acc-2"), MARCH).await.unwrap(), 2.0);
    assert_eq!(store.total_weight("user-7", Some("user-7"), MARCH).await.unwrap(), 8.0);
    assert_eq!(store.total_weight("user-7", None, MARCH).await.unwrap(), 15.0);
    // A later upsert without the account keeps it.
    store.upsert(of("p1", 1.0, None)).await.unwrap();
    assert_eq!(store.total_weight("user-7", Some("acc-1"), MARCH).await.unwrap(), 5.0);
}
