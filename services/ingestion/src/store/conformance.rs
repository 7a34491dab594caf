//! The behaviour suite every [`IngestionStore`] backend must pass.
//!
//! A backend's test file implements [`IngestionStoreHarness`] and expands
//! [`ingestion_store_conformance_tests!`](crate::ingestion_store_conformance_tests), which turns
//! each function here into its own `#[tokio::test]`. Time is passed in, so no case sleeps.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{IngestionStore, SavedResponse};

/// Opens the backend under test.
#[async_trait]
pub trait IngestionStoreHarness: Send + Sync {
    /// `count` stores on one fresh, empty database, each with its own connections: what
    /// `count` ingestion processes sharing the database would see.
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn IngestionStore>>;

    /// A fresh, empty store.
    async fn open(&self) -> Arc<dyn IngestionStore> {
        self.open_shared(1).await.pop().expect("the harness opened no store")
    }
}

/// Expands to one test per behaviour for the harness built by `$make`.
///
/// `$make` is evaluated inside each test, so it may `.await`, and it may `return` to skip the
/// test (e.g. through `platform::require_server!` when the backend's server is not configured).
#[macro_export]
macro_rules! ingestion_store_conformance_tests {
    ($make:expr) => {
        $crate::ingestion_store_conformance_tests!(@cases $make;
            record_accepted_is_idempotent,
            forget_accepted_is_idempotent_and_forgets_only_that_id,
            concurrent_records_of_one_id_all_succeed,
            the_ledger_keeps_the_account_an_id_was_handed_to,
            saved_responses_round_trip,
            saved_response_is_found_by_scope_key_and_age,
            the_first_save_wins_while_it_is_live,
            an_expired_save_is_replaced,
            concurrent_saves_keep_one_response,
            purge_drops_responses_saved_before_the_cut,
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

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).single().expect("valid time")
}

/// How long a saved response is replayed in these cases.
fn window() -> Duration {
    Duration::hours(24)
}

fn response(n: u32) -> SavedResponse {
    SavedResponse {
        request_hash: format!("hash-{n}"),
        status: 202,
        location: Some(format!("/api/deliveries/d{n}")),
        body: format!(r#"{{"deliveryId":"d{n}"}}"#),
    }
}

/// Saves `r` at `at` the way the API does: a row older than the window counts as expired.
async fn save(store: &dyn IngestionStore, scope: &str, key: &str, r: &SavedResponse, at: DateTime<Utc>) {
    store.save_response(scope, key, r, at, at - window()).await.unwrap();
}

pub async fn record_accepted_is_idempotent(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    assert!(!store.is_accepted("d1").await.unwrap());
    store.record_accepted("d1", "contoso", None, t0()).await.unwrap();
    assert!(store.is_accepted("d1").await.unwrap());
    // Again, even with other details: still one accepted id, no error.
    store.record_accepted("d1", "contoso", None, t0()).await.unwrap();
    store.record_accepted("d1", "fabrikam", None, t0() + Duration::hours(1)).await.unwrap();
    assert!(store.is_accepted("d1").await.unwrap());
    assert!(!store.is_accepted("d2").await.unwrap());
    assert!(!store.is_accepted("D1").await.unwrap(), "ids are case-sensitive");
    // One forget undoes it, however often it was recorded.
    store.forget_accepted("d1").await.unwrap();
    assert!(!store.is_accepted("d1").await.unwrap());
}

pub async fn the_ledger_keeps_the_account_an_id_was_handed_to(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.accepted_account("d1").await.unwrap(), None);
    store.record_accepted("d1", "user-7", Some("acc-1"), t0()).await.unwrap();
    assert_eq!(store.accepted_account("d1").await.unwrap().as_deref(), Some("acc-1"));
    // The first record wins: a repeat cannot move an id to another account.
    store.record_accepted("d1", "user-7", Some("acc-2"), t0()).await.unwrap();
    assert_eq!(store.accepted_account("d1").await.unwrap().as_deref(), Some("acc-1"));
    // Handed out without an account (no identity policy): the owner stands for it.
    store.record_accepted("d2", "contoso", None, t0()).await.unwrap();
    assert_eq!(store.accepted_account("d2").await.unwrap().as_deref(), Some("contoso"));
}

pub async fn forget_accepted_is_idempotent_and_forgets_only_that_id(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    store.forget_accepted("never-recorded").await.unwrap();
    store.record_accepted("d1", "contoso", None, t0()).await.unwrap();
    store.record_accepted("d2", "contoso", None, t0()).await.unwrap();
    store.forget_accepted("d1").await.unwrap();
    store.forget_accepted("d1").await.unwrap();
    assert!(!store.is_accepted("d1").await.unwrap());
    assert!(store.is_accepted("d2").await.unwrap());
    // A forgotten id can be handed out again.
    store.record_accepted("d1", "contoso", None, t0() + Duration::minutes(1)).await.unwrap();
    assert!(store.is_accepted("d1").await.unwrap());
}

pub async fn concurrent_records_of_one_id_all_succeed(h: &dyn IngestionStoreHarness) {
    // Two stores on one database, as two ingestion processes.
    let stores = h.open_shared(2).await;
    let records = (0..20).map(|i| {
        let store = stores[i % stores.len()].clone();
        async move { store.record_accepted("same", "contoso", None, t0()).await }
    });
    for outcome in futures::future::join_all(records).await {
        outcome.expect("a repeated record must not fail");
    }
    assert!(stores[1].is_accepted("same").await.unwrap());
    stores[0].forget_accepted("same").await.unwrap();
    assert!(!stores[1].is_accepted("same").await.unwrap());
}

pub async fn saved_responses_round_trip(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    let full = response(1);
    let bare = SavedResponse { request_hash: "h".into(), status: 409, location: None, body: String::new() };
    save(store.as_ref(), "post", "k1", &full, t0()).await;
    save(store.as_ref(), "post", "k2", &bare, t0()).await;
    assert_eq!(store.saved_response("post", "k1", t0()).await.unwrap(), Some(full));
    assert_eq!(store.saved_response("post", "k2", t0()).await.unwrap(), Some(bare));
    let odd = SavedResponse {
        request_hash: "ü-ß-✓".into(),
        status: 599,
        location: Some("/x?a=1&b='2'".into()),
        body: "line 1\nline 2 \"quoted\" \\ ✓".into(),
    };
    save(store.as_ref(), "post", "k3", &odd, t0()).await;
    assert_eq!(store.saved_response("post", "k3", t0()).await.unwrap(), Some(odd));
}

pub async fn saved_response_is_found_by_scope_key_and_age(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.saved_response("post", "k1", t0() - window()).await.unwrap(), None);
    save(store.as_ref(), "post", "k1", &response(1), t0()).await;
    // Another scope, or another key, is another entry.
    assert_eq!(store.saved_response("patch:d1", "k1", t0() - window()).await.unwrap(), None);
    assert_eq!(store.saved_response("post", "k2", t0() - window()).await.unwrap(), None);
    assert_eq!(store.saved_response("post", "K1", t0() - window()).await.unwrap(), None, "keys are case-sensitive");
    save(store.as_ref(), "patch:d1", "k1", &response(2), t0()).await;
    assert_eq!(store.saved_response("patch:d1", "k1", t0()).await.unwrap(), Some(response(2)));
    assert_eq!(store.saved_response("post", "k1", t0()).await.unwrap(), Some(response(1)));
    // Saved at t0: found when asking for responses saved at or after t0, not after.
    assert!(store.saved_response("post", "k1", t0()).await.unwrap().is_some());
    let just_after = t0() + Duration::milliseconds(1);
    assert_eq!(store.saved_response("post", "k1", just_after).await.unwrap(), None);
}

pub async fn the_first_save_wins_while_it_is_live(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    save(store.as_ref(), "post", "k", &response(1), t0()).await;
    save(store.as_ref(), "post", "k", &response(2), t0()).await;
    save(store.as_ref(), "post", "k", &response(3), t0() + Duration::hours(23)).await;
    // Saved exactly at the expiry cut: not yet expired (expired means saved before it).
    store.save_response("post", "k", &response(4), t0() + window(), t0()).await.unwrap();
    assert_eq!(store.saved_response("post", "k", t0()).await.unwrap(), Some(response(1)));
}

pub async fn an_expired_save_is_replaced(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    save(store.as_ref(), "post", "k", &response(1), t0()).await;
    let later = t0() + window() + Duration::milliseconds(1);
    save(store.as_ref(), "post", "k", &response(2), later).await;
    assert_eq!(store.saved_response("post", "k", later - window()).await.unwrap(), Some(response(2)));
    // The replacement is saved at its own time: the first one's age no longer applies.
    assert_eq!(store.saved_response("post", "k", later).await.unwrap(), Some(response(2)));
    assert_eq!(store.saved_response("post", "k", later + Duration::milliseconds(1)).await.unwrap(), None);
    // And it now wins in turn.
    save(store.as_ref(), "post", "k", &response(3), later + Duration::hours(1)).await;
    assert_eq!(store.saved_response("post", "k", t0()).await.unwrap(), Some(response(2)));
}

pub async fn concurrent_saves_keep_one_response(h: &dyn IngestionStoreHarness) {
    let stores = h.open_shared(2).await;
    let saves = (0..20u32).map(|i| {
        let store = stores[i as usize % stores.len()].clone();
        async move { store.save_response("post", "k", &response(i), t0(), t0() - window()).await }
    });
    for outcome in futures::future::join_all(saves).await {
        outcome.expect("a repeated save must not fail");
    }
    let kept = stores[0].saved_response("post", "k", t0()).await.unwrap().expect("one response is kept");
    assert!((0..20).any(|i| response(i) == kept), "{kept:?} is none of the saved responses");
    assert_eq!(stores[1].saved_response("post", "k", t0()).await.unwrap(), Some(kept.clone()));
    save(stores[1].as_ref(), "post", "k", &response(99), t0() + Duration::hours(1)).await;
    assert_eq!(stores[0].saved_response("post", "k", t0()).await.unwrap(), Some(kept));
}

pub async fn purge_drops_responses_saved_before_the_cut(h: &dyn IngestionStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.purge_responses(t0()).await.unwrap(), 0, "nothing to purge yet");
    store.record_accepted("d1", "contoso", None, t0() - Duration::days(30)).await.unwrap();
    let saved_at = [t0() - Duration::hours(2), t0() - Duration::milliseconds(1), t0(), t0() + Duration::hours(1)];
    for (i, at) in saved_at.iter().enumerate() {
        save(store.as_ref(), "post", &format!("k{i}"), &response(i as u32), *at).await;
    }
    assert_eq!(store.purge_responses(t0()).await.unwrap(), 2);
    assert_eq!(store.purge_responses(t0()).await.unwrap(), 0, "purging again finds nothing");
    let far_past = t0() - Duration::days(365);
    assert_eq!(store.saved_response("post", "k0", far_past).await.unwrap(), None);
    assert_eq!(store.saved_response("post", "k1", far_past).await.unwrap(), None);
    assert_eq!(store.saved_response("post", "k2", far_past).await.unwrap(), Some(response(2)));
    assert_eq!(store.saved_response("post", "k3", far_past).await.unwrap(), Some(response(3)));
    assert!(store.is_accepted("d1").await.unwrap(), "accepted ids are not purged");
    // A purged key is free for a new first response.
    save(store.as_ref(), "post", "k0", &response(7), t0()).await;
    assert_eq!(store.saved_response("post", "k0", t0()).await.unwrap(), Some(response(7)));
}

pub async fn ping_answers(h: &dyn IngestionStoreHarness) {
    h.open().await.ping().await.unwrap();
}
