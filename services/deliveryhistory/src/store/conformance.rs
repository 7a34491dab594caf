//! The behaviour suite every [`HistoryStore`] backend must pass.
//!
//! A backend's test file implements [`HistoryStoreHarness`] and expands
//! [`deliveryhistory_store_conformance_tests!`](crate::deliveryhistory_store_conformance_tests),
//! which turns each function here into its own `#[tokio::test]`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent};
use contracts::events::FinishedDelivery;
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};

use super::{HistoryQuery, HistoryStore, Page, Recorded};
use crate::cursor::Cursor;

/// Opens the backend under test.
#[async_trait]
pub trait HistoryStoreHarness: Send + Sync {
    /// `count` stores on one fresh, empty database, each with its own connections: what
    /// `count` history processes sharing the database would see.
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn HistoryStore>>;

    /// A fresh, empty store.
    async fn open(&self) -> Arc<dyn HistoryStore> {
        self.open_shared(1).await.pop().expect("the harness opened no store")
    }
}

/// Expands to one test per behaviour for the harness built by `$make`.
///
/// `$make` is evaluated inside each test, so it may `.await`, and it may `return` to skip the
/// test (e.g. through `platform::require_server!` when the backend's server is not configured).
#[macro_export]
macro_rules! deliveryhistory_store_conformance_tests {
    ($make:expr) => {
        $crate::deliveryhistory_store_conformance_tests!(@cases $make;
            a_recorded_finish_reads_back_exactly,
            get_of_unknown_id_is_none,
            the_same_finish_again_changes_nothing,
            a_later_finish_replaces_an_earlier_one,
            an_older_finish_never_replaces_a_newer_one,
            ties_settle_on_the_same_winner_in_any_order,
            concurrent_finishes_of_one_delivery_settle_on_the_latest,
            list_filters_by_owner_and_finish_time,
            list_filters_by_account_when_asked,
            list_pages_in_a_stable_order,
            pages_do_not_repeat_or_skip_when_finishes_arrive_between_them,
            a_replaced_finish_moves_in_the_listing,
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

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).single().expect("valid time")
}

/// `ms` milliseconds after the base time.
fn at(ms: i64) -> DateTime<Utc> {
    base() + Duration::milliseconds(ms)
}

fn finish(id: &str, owner: &str, stage: DeliveryStage, finished_at: DateTime<Utc>) -> FinishedDelivery {
    let pickup = Location::new(47.61, -122.33, 0.0);
    let dropoff = Location::new(47.62, -122.35, 12.5);
    let tracked = |stage, at, location| DeliveryTrackingEvent {
        delivery_id: id.to_owned(),
        stage,
        location: Some(location),
        at,
        reason: (stage == DeliveryStage::Failed).then(|| "no drone could take it".to_owned()),
    };
    FinishedDelivery {
        delivery: Delivery {
            id: id.to_owned(),
            owner: UserAccount { user_id: owner.to_owned(), account_id: format!("{owner}-account") },
            pickup,
            dropoff,
            deadline: "2026-03-16T00:00:00Z".to_owned(),
            expedited: true,
            confirmation_required: ConfirmationType::Picture,
            drone_id: "drone-0007".to_owned(),
            stage: Some(stage),
            pickup_time: Some("2026-03-15T11:00:00Z".to_owned()),
            package_id: Some(format!("package-{id}")),
        },
        tracking: vec![
            tracked(DeliveryStage::Created, finished_at - Duration::minutes(30), pickup),
            tracked(stage, finished_at, dropoff),
        ],
        confirmation: (stage == DeliveryStage::Completed).then(|| Confirmation {
            date_time: finished_at,
            geo_coordinates: dropoff,
            confirmation_type: ConfirmationType::Picture,
            confirmation_blob: "aGVsbG8=".to_owned(),
        }),
        finished_at,
    }
}

fn query(owner: &str, limit: u32) -> HistoryQuery {
    HistoryQuery { owner_id: owner.to_owned(), account_id: None, from: None, to: None, after: None, limit }
}

pub async fn list_filters_by_account_when_asked(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    let mut other_account = finish("b", "contoso", DeliveryStage::Completed, at(2_000));
    other_account.delivery.owner.account_id = "another-account".to_owned();
    store.record(&finish("a", "contoso", DeliveryStage::Completed, at(1_000))).await.unwrap();
    store.record(&other_account).await.unwrap();
    store.record(&finish("c", "contoso", DeliveryStage::Failed, at(3_000))).await.unwrap();
    let of = |account: &str| HistoryQuery { account_id: Some(account.to_owned()), ..query("contoso", 10) };
    assert_eq!(ids(&store.list(&of("contoso-account")).await.unwrap()), ["a", "c"]);
    assert_eq!(ids(&store.list(&of("another-account")).await.unwrap()), ["b"]);
    assert!(store.list(&of("nobody")).await.unwrap().items.is_empty());
    assert_eq!(ids(&store.list(&query("contoso", 10)).await.unwrap()), ["a", "b", "c"]);
    // Pages of one account skip the other's items without losing their place.
    let (seen, _) = all_pages(store.as_ref(), HistoryQuery { limit: 1, ..of("contoso-account") }).await;
    assert_eq!(seen, ["a", "c"]);
}

fn ids(page: &Page) -> Vec<&str> {
    page.items.iter().map(|f| f.delivery.id.as_str()).collect()
}

/// Every item of `query`, page by page; also returns how many pages it took.
async fn all_pages(store: &dyn HistoryStore, mut query: HistoryQuery) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    for pages in 1..=100 {
        let page = store.list(&query).await.unwrap();
        assert!(page.items.len() <= query.limit as usize, "a page holds at most `limit` items");
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return (seen, pages),
        }
    }
    panic!("paging did not end");
}

pub async fn a_recorded_finish_reads_back_exactly(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    let done = finish("d1", "contoso", DeliveryStage::Completed, at(0));
    assert_eq!(store.record(&done).await.unwrap(), Recorded::New);
    assert_eq!(store.get("d1").await.unwrap(), Some(done.clone()));
    let failed = finish("d2", "contoso", DeliveryStage::Failed, at(1));
    assert_eq!(store.record(&failed).await.unwrap(), Recorded::New);
    assert_eq!(store.get("d2").await.unwrap(), Some(failed.clone()));
    let page = store.list(&query("contoso", 10)).await.unwrap();
    assert_eq!(page, Page { items: vec![done, failed], next: None });
}

pub async fn get_of_unknown_id_is_none(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.get("nobody").await.unwrap(), None);
    store.record(&finish("d1", "contoso", DeliveryStage::Completed, at(0))).await.unwrap();
    assert_eq!(store.get("D1").await.unwrap(), None, "ids are case-sensitive");
    assert_eq!(store.list(&query("nobody", 10)).await.unwrap(), Page { items: vec![], next: None });
    assert!(store.list(&query("CONTOSO", 10)).await.unwrap().items.is_empty(), "owners are case-sensitive");
}

pub async fn the_same_finish_again_changes_nothing(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    let done = finish("d1", "contoso", DeliveryStage::Completed, at(0));
    assert_eq!(store.record(&done).await.unwrap(), Recorded::New);
    for _ in 0..3 {
        assert_eq!(store.record(&done).await.unwrap(), Recorded::Kept);
    }
    assert_eq!(store.get("d1").await.unwrap(), Some(done));
    assert_eq!(ids(&store.list(&query("contoso", 10)).await.unwrap()), ["d1"]);
}

pub async fn a_later_finish_replaces_an_earlier_one(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    // Failed, reopened by a replayed request, then completed.
    let failed = finish("d1", "contoso", DeliveryStage::Failed, at(0));
    let completed = finish("d1", "contoso", DeliveryStage::Completed, at(60_000));
    assert_eq!(store.record(&failed).await.unwrap(), Recorded::New);
    assert_eq!(store.record(&completed).await.unwrap(), Recorded::Replaced);
    assert_eq!(store.get("d1").await.unwrap(), Some(completed.clone()));
    // One millisecond later is later.
    let amended = finish("d1", "contoso", DeliveryStage::Cancelled, at(60_001));
    assert_eq!(store.record(&amended).await.unwrap(), Recorded::Replaced);
    assert_eq!(store.get("d1").await.unwrap(), Some(amended.clone()));
    assert_eq!(store.list(&query("contoso", 10)).await.unwrap().items, [amended]);
}

pub async fn an_older_finish_never_replaces_a_newer_one(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    let completed = finish("d1", "contoso", DeliveryStage::Completed, at(60_000));
    store.record(&completed).await.unwrap();
    // A replay delivering the earlier failure late.
    let failed = finish("d1", "contoso", DeliveryStage::Failed, at(0));
    assert_eq!(store.record(&failed).await.unwrap(), Recorded::Kept);
    let cancelled_a_millisecond_earlier = finish("d1", "contoso", DeliveryStage::Cancelled, at(59_999));
    assert_eq!(store.record(&cancelled_a_millisecond_earlier).await.unwrap(), Recorded::Kept);
    assert_eq!(store.get("d1").await.unwrap(), Some(completed));
}

pub async fn ties_settle_on_the_same_winner_in_any_order(h: &dyn HistoryStoreHarness) {
    let cancelled = finish("d1", "contoso", DeliveryStage::Cancelled, at(0));
    let completed = finish("d1", "contoso", DeliveryStage::Completed, at(0));
    let mut retracked = completed.clone();
    retracked.tracking.pop();
    let finishes = [cancelled, completed, retracked];
    let mut winners = Vec::new();
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]] {
        let store = h.open().await;
        for i in order {
            store.record(&finishes[i]).await.unwrap();
        }
        winners.push(store.get("d1").await.unwrap().expect("recorded"));
    }
    assert_eq!(winners[0].delivery.stage, Some(DeliveryStage::Completed), "completed ranks above cancelled");
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:#?}");
}

pub async fn concurrent_finishes_of_one_delivery_settle_on_the_latest(h: &dyn HistoryStoreHarness) {
    // Two stores on one database, as two history processes consuming one group.
    let stores = h.open_shared(2).await;
    let records = (0..20).map(|i| {
        let store = stores[i % stores.len()].clone();
        let stage = if i % 2 == 0 { DeliveryStage::Failed } else { DeliveryStage::Completed };
        let finished = finish("same", "contoso", stage, at(1_000 * ((i as i64 * 7) % 20)));
        async move { store.record(&finished).await }
    });
    let outcomes = futures::future::join_all(records).await;
    let new = outcomes.iter().filter(|o| matches!(o, Ok(Recorded::New))).count();
    assert_eq!(new, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let kept = stores[1].get("same").await.unwrap().expect("recorded");
    assert_eq!(kept.finished_at, at(19_000));
    assert_eq!(ids(&stores[0].list(&query("contoso", 10)).await.unwrap()), ["same"]);
}

pub async fn list_filters_by_owner_and_finish_time(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    let finishes = [
        ("before-from", "contoso", -1),
        ("at-from", "contoso", 0),
        ("inside", "contoso", 5_000),
        ("last-inside", "contoso", 9_999),
        ("at-to", "contoso", 10_000),
        ("other-owner", "fabrikam", 5_000),
    ];
    for (id, owner, ms) in finishes {
        store.record(&finish(id, owner, DeliveryStage::Completed, at(ms))).await.unwrap();
    }
    let range = |from: Option<i64>, to: Option<i64>| HistoryQuery {
        from: from.map(at),
        to: to.map(at),
        ..query("contoso", 100)
    };
    let listed = |q: HistoryQuery| {
        let store = store.clone();
        async move { ids(&store.list(&q).await.unwrap()).into_iter().map(str::to_owned).collect::<Vec<_>>() }
    };
    assert_eq!(listed(range(Some(0), Some(10_000))).await, ["at-from", "inside", "last-inside"], "[from, to)");
    assert_eq!(listed(range(Some(5_000), None)).await, ["inside", "last-inside", "at-to"]);
    assert_eq!(listed(range(None, Some(5_000))).await, ["before-from", "at-from"]);
    assert_eq!(listed(range(None, None)).await.len(), 5);
    assert!(listed(range(Some(10_001), None)).await.is_empty());
    assert_eq!(ids(&store.list(&query("fabrikam", 100)).await.unwrap()), ["other-owner"]);
}

pub async fn list_pages_in_a_stable_order(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    // Recorded out of order; several share a finish time, so the id decides among them.
    let finishes = [("c", 2_000), ("b", 1_000), ("e", 3_000), ("a", 2_000), ("d", 2_000), ("f", 1_000)];
    for (id, ms) in finishes {
        store.record(&finish(id, "contoso", DeliveryStage::Completed, at(ms))).await.unwrap();
    }
    let order = ["b", "f", "a", "c", "d", "e"];
    let first = store.list(&query("contoso", 2)).await.unwrap();
    assert_eq!(ids(&first), ["b", "f"]);
    assert_eq!(first.next, Some(Cursor { finished_at: at(1_000).timestamp_millis(), delivery_id: "f".into() }));
    for limit in 1..=7 {
        let (seen, pages) = all_pages(store.as_ref(), query("contoso", limit)).await;
        assert_eq!(seen, order, "limit {limit}");
        assert_eq!(pages, order.len().div_ceil(limit as usize).max(1), "limit {limit}: no empty last page");
    }
    // A cursor is a position, not an item: it works after that item is gone from the range.
    let after_a = HistoryQuery {
        after: Some(Cursor { finished_at: at(2_000).timestamp_millis(), delivery_id: "a".into() }),
        ..query("contoso", 10)
    };
    assert_eq!(ids(&store.list(&after_a).await.unwrap()), ["c", "d", "e"]);
    let in_range = HistoryQuery { from: Some(at(2_000)), to: Some(at(3_000)), ..query("contoso", 2) };
    assert_eq!(all_pages(store.as_ref(), in_range).await.0, ["a", "c", "d"]);
}

pub async fn pages_do_not_repeat_or_skip_when_finishes_arrive_between_them(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    for (id, ms) in [("a", 1_000), ("b", 2_000), ("c", 3_000)] {
        store.record(&finish(id, "contoso", DeliveryStage::Completed, at(ms))).await.unwrap();
    }
    let first = store.list(&query("contoso", 2)).await.unwrap();
    assert_eq!(ids(&first), ["a", "b"]);
    // One lands before the cursor, one after it.
    store.record(&finish("early", "contoso", DeliveryStage::Completed, at(500))).await.unwrap();
    store.record(&finish("late", "contoso", DeliveryStage::Completed, at(2_500))).await.unwrap();
    let second = store.list(&HistoryQuery { after: first.next, ..query("contoso", 2) }).await.unwrap();
    assert_eq!(ids(&second), ["late", "c"]);
    assert_eq!(second.next, None);
}

pub async fn a_replaced_finish_moves_in_the_listing(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    store.record(&finish("d1", "contoso", DeliveryStage::Failed, at(1_000))).await.unwrap();
    store.record(&finish("d2", "contoso", DeliveryStage::Completed, at(2_000))).await.unwrap();
    store.record(&finish("d1", "contoso", DeliveryStage::Completed, at(3_000))).await.unwrap();
    assert_eq!(ids(&store.list(&query("contoso", 10)).await.unwrap()), ["d2", "d1"]);
    let early = HistoryQuery { to: Some(at(2_000)), ..query("contoso", 10) };
    assert!(store.list(&early).await.unwrap().items.is_empty(), "listed by its latest finish only");
    // The latest finish also decides the owner it is listed under.
    store.record(&finish("d2", "fabrikam", DeliveryStage::Completed, at(4_000))).await.unwrap();
    assert_eq!(ids(&store.list(&query("contoso", 10)).await.unwrap()), ["d1"]);
    assert_eq!(ids(&store.list(&query("fabrikam", 10)).await.unwrap()), ["d2"]);
}

pub async fn ping_answers(h: &dyn HistoryStoreHarness) {
    let store = h.open().await;
    store.ping().await.unwrap();
}
