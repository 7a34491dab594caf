//! The behaviour suite every [`DeliveryStore`] backend must pass.
//!
//! A backend's test file implements [`DeliveryStoreHarness`] and expands
//! [`delivery_store_conformance_tests!`](crate::delivery_store_conformance_tests), which turns
//! each function here into its own `#[tokio::test]`. Every case opens a fresh store, so ids can
//! repeat between cases. Times are arguments, so nothing here waits for a clock.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::delivery::{Confirmation, Delivery, NotifyMeRequest, RescheduledDelivery};
use contracts::events::{DronePosition, Flight};
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};
use platform::query::Month;

use super::{Changed, Closed, DeliveryStore, Upserted};
use crate::domain::{self, Action};
use crate::notifications::{Channel, Finish, Notification, NotificationStatus, Outcome};

/// Opens the backend under test.
#[async_trait]
pub trait DeliveryStoreHarness: Send + Sync {
    /// A fresh, empty store on each call.
    async fn open(&self) -> Arc<dyn DeliveryStore>;

    /// Removes what the stores opened so far left on a shared server; called after a case
    /// passed (a failed one leaves its data to look at).
    async fn cleanup(&self) {}
}

/// Expands to one test per behaviour for the harness built by the expression.
///
/// `delivery_store_conformance_tests!(HARNESS)` always runs; with
/// `delivery_store_conformance_tests!(optional: EXPR)`, `EXPR` yields an `Option` of a harness
/// and each test returns early (skipped) on `None`, for backends that need a server which may
/// not be configured. The expression is evaluated in each test.
#[macro_export]
macro_rules! delivery_store_conformance_tests {
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = $make else { return };
                $crate::store::conformance::$case(&harness).await;
                $crate::store::conformance::DeliveryStoreHarness::cleanup(&harness).await;
            }
        )*
    };
    (@all $make:expr) => {
        $crate::delivery_store_conformance_tests!(@cases $make;
            upsert_creates_then_updates_keeping_stage_and_history,
            upsert_ignores_the_stage_it_is_given,
            stored_fields_round_trip,
            an_unknown_delivery_is_absent,
            changes_to_an_unknown_delivery_are_not_found,
            tracking_events_are_oldest_first,
            reschedule_applies_only_the_given_changes,
            reschedule_is_refused_once_final,
            cancel_is_done_once_and_then_already_done,
            cancel_is_refused_after_completion,
            confirm_completes_once,
            confirm_is_refused_after_cancellation,
            concurrent_upserts_create_once,
            concurrent_cancels_record_one_event,
            concurrent_reschedules_each_record_an_event,
            racing_cancel_and_confirm_leave_one_final_stage,
            close_creates_a_missing_delivery_in_the_closing_stage,
            close_fails_a_live_delivery_keeping_its_fields,
            close_cancels_by_the_cancel_rules,
            close_is_idempotent_without_a_new_event,
            close_is_refused_in_another_final_stage,
            a_failed_delivery_changes_only_by_being_put_again,
            concurrent_closes_of_a_missing_delivery_create_once,
            racing_close_and_confirm_leave_one_final_stage,
            advance_moves_forward_with_the_drones_location_and_time,
            advance_may_skip_a_stage_and_never_moves_a_finished_delivery,
            concurrent_advances_record_each_stage_once,
            a_rescheduled_delivery_keeps_its_flights_progress,
            cancel_after_pickup_is_refused_and_noted_once,
            concurrent_refusals_are_noted_once,
            a_closing_cancel_after_pickup_is_refused,
            the_confirmation_is_kept,
            a_flight_is_kept_before_its_delivery_exists,
            the_newer_flight_wins,
            the_latest_position_wins_whatever_order_it_comes_in,
            notify_me_needs_an_existing_delivery,
            notify_requests_are_read_back_oldest_first,
            a_notification_is_recorded_once,
            concurrent_records_of_a_notification_create_one,
            a_pending_notification_is_settled_once,
            an_abandoned_notification_is_no_attempt,
            notifications_are_listed_per_delivery_oldest_first,
            count_respects_owner_and_month,
            count_follows_the_current_owner,
            count_is_per_account_when_one_is_given,
            count_follows_the_current_account,
            ping_answers,
        );
    };
    (optional: $make:expr) => {
        $crate::delivery_store_conformance_tests!(@all $make);
    };
    ($make:expr) => {
        $crate::delivery_store_conformance_tests!(@all Some($make));
    };
}

/// 2026-03-15 12:00 UTC plus `ms` milliseconds.
fn at(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap() + Duration::milliseconds(ms)
}

fn utc(year: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, min, sec).unwrap()
}

fn delivery(id: &str, owner: &str) -> Delivery {
    Delivery {
        id: id.to_owned(),
        owner: UserAccount { user_id: owner.to_owned(), account_id: format!("account-{owner}") },
        pickup: Location::new(47.60, -122.33, 0.0),
        dropoff: Location::new(47.62, -122.35, 10.0),
        deadline: String::new(),
        expedited: true,
        confirmation_required: ConfirmationType::Picture,
        drone_id: "drone-0007".to_owned(),
        stage: None,
        pickup_time: None,
        package_id: None,
    }
}

fn with_stage(mut delivery: Delivery, stage: DeliveryStage) -> Delivery {
    delivery.stage = Some(stage);
    delivery
}

fn confirmation() -> Confirmation {
    Confirmation {
        date_time: at(3_600_000),
        geo_coordinates: Location::new(47.621, -122.351, 0.0),
        confirmation_type: ConfirmationType::Picture,
        confirmation_blob: "aGVsbG8=".to_owned(),
    }
}

fn month(year: i32, month: u32) -> Month {
    Month { year, month }
}

async fn create(store: &dyn DeliveryStore, delivery: Delivery, now: DateTime<Utc>) -> Delivery {
    match store.upsert(delivery, now).await.unwrap() {
        Upserted::Created(created) => *created,
        Upserted::Updated => panic!("expected a new delivery"),
    }
}

fn done(changed: Changed) -> Delivery {
    match changed {
        Changed::Done(delivery) => *delivery,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn refused(changed: Changed) -> String {
    match changed {
        Changed::Refused(reason) => reason,
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn closed_done(closed: Closed) -> Delivery {
    match closed {
        Closed::Done(delivery) => *delivery,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn closed_created(closed: Closed) -> Delivery {
    match closed {
        Closed::Created(delivery) => *delivery,
        other => panic!("expected Created, got {other:?}"),
    }
}

fn closed_refused(closed: Closed) -> String {
    match closed {
        Closed::Refused(reason) => reason,
        other => panic!("expected Refused, got {other:?}"),
    }
}

/// Each event's stage and reason, oldest first.
async fn reasons(store: &dyn DeliveryStore, id: &str) -> Vec<(DeliveryStage, Option<String>)> {
    store.tracking(id).await.unwrap().into_iter().map(|e| (e.stage, e.reason)).collect()
}

async fn stages(store: &dyn DeliveryStore, id: &str) -> Vec<DeliveryStage> {
    store.tracking(id).await.unwrap().into_iter().map(|e| e.stage).collect()
}

async fn stage_of(store: &dyn DeliveryStore, id: &str) -> Option<DeliveryStage> {
    store.get(id).await.unwrap().expect("the delivery exists").stage
}

pub async fn upsert_creates_then_updates_keeping_stage_and_history(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let created = create(&*store, delivery("d1", "u1"), at(0)).await;
    assert_eq!(created, with_stage(delivery("d1", "u1"), DeliveryStage::Created));
    assert_eq!(store.get("d1").await.unwrap(), Some(created));
    done(store.cancel("d1", at(1_000)).await.unwrap());

    let mut changed = delivery("d1", "u1");
    changed.drone_id = "drone-0008".to_owned();
    changed.expedited = false;
    assert_eq!(store.upsert(changed.clone(), at(2_000)).await.unwrap(), Upserted::Updated);
    assert_eq!(
        store.get("d1").await.unwrap(),
        Some(with_stage(changed, DeliveryStage::Cancelled)),
        "a PUT replaces the fields but must not resurrect a cancelled delivery"
    );
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created, DeliveryStage::Cancelled]);
}

pub async fn upsert_ignores_the_stage_it_is_given(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let created = create(&*store, with_stage(delivery("d1", "u1"), DeliveryStage::Completed), at(0)).await;
    assert_eq!(created.stage, Some(DeliveryStage::Created));
    assert_eq!(
        store.upsert(with_stage(delivery("d1", "u1"), DeliveryStage::Cancelled), at(1)).await.unwrap(),
        Upserted::Updated
    );
    assert_eq!(stage_of(&*store, "d1").await, Some(DeliveryStage::Created));
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created]);
}

pub async fn stored_fields_round_trip(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let full = Delivery {
        deadline: "2026-03-16T12:00:00Z".to_owned(),
        expedited: false,
        confirmation_required: ConfirmationType::FingerPrint,
        pickup_time: Some("2026-03-15T13:00:00Z".to_owned()),
        package_id: Some("package-1".to_owned()),
        pickup: Location::new(-33.5, 151.25, 12.5),
        ..delivery("d-ünïcode:1", "owner with spaces")
    };
    let created = create(&*store, full.clone(), at(0)).await;
    assert_eq!(created, with_stage(full.clone(), DeliveryStage::Created));
    assert_eq!(store.get("d-ünïcode:1").await.unwrap(), Some(created));
    assert_eq!(store.count(None, "owner with spaces", month(2026, 3)).await.unwrap(), 1);
}

pub async fn an_unknown_delivery_is_absent(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    assert_eq!(store.get("d2").await.unwrap(), None);
    assert!(store.tracking("d2").await.unwrap().is_empty());
}

pub async fn changes_to_an_unknown_delivery_are_not_found(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let change = RescheduledDelivery { deadline: Some("2026-03-16T00:00:00Z".to_owned()), ..Default::default() };
    assert_eq!(store.reschedule("nope", &change, at(0)).await.unwrap(), Changed::NotFound);
    assert_eq!(store.cancel("nope", at(0)).await.unwrap(), Changed::NotFound);
    assert_eq!(store.confirm("nope", &confirmation(), at(0)).await.unwrap(), Changed::NotFound);
    assert_eq!(store.get("nope").await.unwrap(), None, "a refused change must not create anything");
    assert!(store.tracking("nope").await.unwrap().is_empty());
}

pub async fn tracking_events_are_oldest_first(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let original = create(&*store, delivery("d1", "u1"), at(0)).await;
    let moved = Location::new(47.70, -122.30, 5.0);
    let first = RescheduledDelivery { pickup: Some(moved), ..Default::default() };
    done(store.reschedule("d1", &first, at(1_001)).await.unwrap());
    let second = RescheduledDelivery { deadline: Some("2026-03-17T00:00:00Z".to_owned()), ..Default::default() };
    done(store.reschedule("d1", &second, at(2_002)).await.unwrap());
    done(store.confirm("d1", &confirmation(), at(3_003)).await.unwrap());

    let events = store.tracking("d1").await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.delivery_id.as_str(), e.stage, e.location, e.at)).collect();
    assert_eq!(
        seen,
        [
            ("d1", DeliveryStage::Created, Some(original.pickup), at(0)),
            ("d1", DeliveryStage::Rescheduled, Some(moved), at(1_001)),
            ("d1", DeliveryStage::Rescheduled, None, at(2_002)),
            ("d1", DeliveryStage::Completed, Some(confirmation().geo_coordinates), at(3_003)),
        ]
    );
}

pub async fn reschedule_applies_only_the_given_changes(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let original = create(&*store, delivery("d1", "u1"), at(0)).await;
    let change = RescheduledDelivery {
        dropoff: Some(Location::new(47.5, -122.2, 0.0)),
        pickup_time: Some("2026-03-15T18:00:00Z".to_owned()),
        ..Default::default()
    };
    let rescheduled = done(store.reschedule("d1", &change, at(1)).await.unwrap());
    let expected = Delivery {
        dropoff: Location::new(47.5, -122.2, 0.0),
        pickup_time: Some("2026-03-15T18:00:00Z".to_owned()),
        stage: Some(DeliveryStage::Rescheduled),
        ..original
    };
    assert_eq!(rescheduled, expected);
    assert_eq!(store.get("d1").await.unwrap(), Some(expected));
}

pub async fn reschedule_is_refused_once_final(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let change = RescheduledDelivery { deadline: Some("2026-03-16T00:00:00Z".to_owned()), ..Default::default() };
    create(&*store, delivery("cancelled", "u1"), at(0)).await;
    let before = done(store.cancel("cancelled", at(1)).await.unwrap());
    let reason = refused(store.reschedule("cancelled", &change, at(2)).await.unwrap());
    assert!(reason.contains("Cancelled"), "{reason}");
    assert_eq!(store.get("cancelled").await.unwrap(), Some(before), "a refused change writes nothing");
    assert_eq!(stages(&*store, "cancelled").await, [DeliveryStage::Created, DeliveryStage::Cancelled]);

    create(&*store, delivery("completed", "u1"), at(0)).await;
    done(store.confirm("completed", &confirmation(), at(1)).await.unwrap());
    refused(store.reschedule("completed", &change, at(2)).await.unwrap());
    assert_eq!(stages(&*store, "completed").await, [DeliveryStage::Created, DeliveryStage::Completed]);
}

pub async fn cancel_is_done_once_and_then_already_done(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let created = create(&*store, delivery("d1", "u1"), at(0)).await;
    let cancelled = done(store.cancel("d1", at(1)).await.unwrap());
    assert_eq!(cancelled, with_stage(created, DeliveryStage::Cancelled));
    assert_eq!(done(store.cancel("d1", at(2)).await.unwrap()), cancelled, "a retried cancel answers the same");
    let events = store.tracking("d1").await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.stage, e.at)).collect::<Vec<_>>(),
        [(DeliveryStage::Created, at(0)), (DeliveryStage::Cancelled, at(1))]
    );
    assert_eq!(events[1].location, None);
}

pub async fn cancel_is_refused_after_completion(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    done(store.confirm("d1", &confirmation(), at(1)).await.unwrap());
    let reason = refused(store.cancel("d1", at(2)).await.unwrap());
    assert!(reason.contains("Completed"), "{reason}");
    assert_eq!(stage_of(&*store, "d1").await, Some(DeliveryStage::Completed));
}

pub async fn confirm_completes_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let rescheduled = RescheduledDelivery { deadline: Some("2026-03-16T00:00:00Z".to_owned()), ..Default::default() };
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let before = done(store.reschedule("d1", &rescheduled, at(1)).await.unwrap());
    let completed = done(store.confirm("d1", &confirmation(), at(2)).await.unwrap());
    assert_eq!(completed, with_stage(before, DeliveryStage::Completed));
    assert_eq!(done(store.confirm("d1", &confirmation(), at(3)).await.unwrap()), completed);
    assert_eq!(
        stages(&*store, "d1").await,
        [DeliveryStage::Created, DeliveryStage::Rescheduled, DeliveryStage::Completed]
    );
}

pub async fn confirm_is_refused_after_cancellation(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    done(store.cancel("d1", at(1)).await.unwrap());
    refused(store.confirm("d1", &confirmation(), at(2)).await.unwrap());
    assert_eq!(stage_of(&*store, "d1").await, Some(DeliveryStage::Cancelled));
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created, DeliveryStage::Cancelled]);
}

/// Runs `n` copies of `task` at once, each on its own tokio task.
async fn concurrently<T, F, Fut>(n: usize, store: &Arc<dyn DeliveryStore>, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn DeliveryStore>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(task(store.clone(), i))).collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

pub async fn concurrent_upserts_create_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let outcomes =
        concurrently(16, &store, |s, _| async move { s.upsert(delivery("d1", "u1"), at(0)).await.unwrap() }).await;
    let created = outcomes.iter().filter(|o| matches!(o, Upserted::Created(_))).count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created]);
    assert_eq!(store.count(None, "u1", month(2026, 3)).await.unwrap(), 1);
}

pub async fn concurrent_cancels_record_one_event(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let outcomes =
        concurrently(16, &store, |s, i| async move { s.cancel("d1", at(1 + i as i64)).await.unwrap() }).await;
    for outcome in outcomes {
        assert_eq!(done(outcome).stage, Some(DeliveryStage::Cancelled));
    }
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created, DeliveryStage::Cancelled]);
}

pub async fn concurrent_reschedules_each_record_an_event(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let deadline = |i: usize| format!("2026-03-{:02}T00:00:00Z", 16 + i);
    let outcomes = concurrently(8, &store, move |s, i| async move {
        let change = RescheduledDelivery { deadline: Some(deadline(i)), ..Default::default() };
        done(s.reschedule("d1", &change, at(1)).await.unwrap())
    })
    .await;
    assert!(outcomes.iter().all(|d| d.stage == Some(DeliveryStage::Rescheduled)));
    assert_eq!(stages(&*store, "d1").await.len(), 1 + 8, "one event per applied reschedule");
    let last = store.get("d1").await.unwrap().unwrap();
    assert!((0..8).any(|i| last.deadline == deadline(i)), "{}", last.deadline);
}

pub async fn racing_cancel_and_confirm_leave_one_final_stage(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    for round in 0..8 {
        let id = format!("d{round}");
        create(&*store, delivery(&id, "u1"), at(0)).await;
        let (a, b) = (store.clone(), store.clone());
        let (cancel_id, confirm_id) = (id.clone(), id.clone());
        let cancel = tokio::spawn(async move { a.cancel(&cancel_id, at(1)).await.unwrap() });
        let confirm = tokio::spawn(async move { b.confirm(&confirm_id, &confirmation(), at(1)).await.unwrap() });
        let (cancel, confirm) = (cancel.await.unwrap(), confirm.await.unwrap());
        let final_stage = stage_of(&*store, &id).await.unwrap();
        match final_stage {
            DeliveryStage::Cancelled => {
                assert_eq!(done(cancel).stage, Some(DeliveryStage::Cancelled));
                refused(confirm);
            }
            DeliveryStage::Completed => {
                assert_eq!(done(confirm).stage, Some(DeliveryStage::Completed));
                refused(cancel);
            }
            other => panic!("{id} ended {other}"),
        }
        assert_eq!(stages(&*store, &id).await, [DeliveryStage::Created, final_stage]);
    }
}

pub async fn notify_me_needs_an_existing_delivery(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let email = NotifyMeRequest { email_address: Some("pat@contoso.com".to_owned()), sms: None };
    let sms = NotifyMeRequest { email_address: None, sms: Some("+1 425-555-0100".to_owned()) };
    assert!(!store.add_notify_request("d1", &email, at(0)).await.unwrap());
    assert_eq!(store.get("d1").await.unwrap(), None, "a refused request must not create the delivery");
    create(&*store, delivery("d1", "u1"), at(0)).await;
    assert!(store.add_notify_request("d1", &email, at(1)).await.unwrap());
    assert!(store.add_notify_request("d1", &sms, at(2)).await.unwrap());
    assert!(store.add_notify_request("d1", &email, at(3)).await.unwrap(), "asking twice is fine");
    done(store.cancel("d1", at(4)).await.unwrap());
    assert!(store.add_notify_request("d1", &sms, at(5)).await.unwrap(), "a finished delivery still exists");
    assert!(!store.add_notify_request("d2", &sms, at(5)).await.unwrap());
}

pub async fn notify_requests_are_read_back_oldest_first(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    assert!(store.notify_requests("d1").await.unwrap().is_empty(), "no delivery, no requests");
    create(&*store, delivery("d1", "u1"), at(0)).await;
    assert!(store.notify_requests("d1").await.unwrap().is_empty());
    let requests = [
        NotifyMeRequest { email_address: Some("pat@contoso.com".to_owned()), sms: None },
        NotifyMeRequest { email_address: Some("sam@contoso.com".to_owned()), sms: Some("+14255550100".to_owned()) },
        NotifyMeRequest { email_address: None, sms: Some("+442079460958".to_owned()) },
        NotifyMeRequest { email_address: Some("pat@contoso.com".to_owned()), sms: None },
    ];
    for (i, request) in requests.iter().enumerate() {
        assert!(store.add_notify_request("d1", request, at(i as i64)).await.unwrap());
    }
    assert_eq!(store.notify_requests("d1").await.unwrap(), requests, "as asked, repeats included, oldest first");
    create(&*store, delivery("d2", "u1"), at(0)).await;
    assert!(store.notify_requests("d2").await.unwrap().is_empty(), "each delivery its own");
}

/// A notification about delivery `delivery_id`'s completion on `channel`.
fn notification(delivery_id: &str, channel: Channel, n: usize) -> Notification {
    let finish = Finish::Completed;
    Notification {
        id: crate::notifications::model::notification_id(delivery_id, &finish, channel, n),
        delivery_id: delivery_id.to_owned(),
        text: crate::notifications::model::text(delivery_id, &finish),
        event: finish,
        finished_at: at(1_000),
        channel,
        recipient: format!("person{n}@contoso.com"),
        recipients: Vec::new(),
    }
}

async fn record_of(store: &dyn DeliveryStore, n: &Notification) -> crate::notifications::NotificationRecord {
    let records = store.notifications(&n.delivery_id).await.unwrap();
    records.into_iter().find(|r| r.notification.id == n.id).expect("the notification is listed")
}

pub async fn a_notification_is_recorded_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    done(store.confirm("d1", &confirmation(), at(1_000)).await.unwrap());
    let mut webhook = notification("d1", Channel::Webhook, 0);
    webhook.recipient = "https://hooks.example/n".to_owned();
    webhook.event = Finish::Failed { reason: Some("gave up: ünïcode".to_owned()) };
    webhook.recipients =
        vec![crate::notifications::model::Recipient { channel: Channel::Sms, address: "+14255550100".to_owned() }];
    let first = store.record_notification(&webhook, at(2_000)).await.unwrap();
    assert_eq!(first.notification, webhook, "stored as given");
    assert_eq!(first.status, NotificationStatus::Pending);
    assert_eq!((first.attempts, first.last_error.as_deref(), first.sent_at), (0, None, None));
    assert_eq!(first.created_at, at(2_000));

    // Recorded again (a redelivered event): the record as it was, nothing new.
    let mut changed = webhook.clone();
    changed.text = "another text".to_owned();
    let again = store.record_notification(&changed, at(3_000)).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(store.notifications("d1").await.unwrap(), [first]);
}

pub async fn concurrent_records_of_a_notification_create_one(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let records = concurrently(12, &store, |s, i| async move {
        s.record_notification(&notification("d1", Channel::Email, 0), at(i as i64)).await.unwrap()
    })
    .await;
    assert!(records.iter().all(|r| r.status == NotificationStatus::Pending && r.attempts == 0));
    let created_at = records[0].created_at;
    assert!(records.iter().all(|r| r.created_at == created_at), "every caller sees the one record");
    assert_eq!(store.notifications("d1").await.unwrap().len(), 1);
}

pub async fn a_pending_notification_is_settled_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let sms = notification("d1", Channel::Sms, 0);
    store.record_notification(&sms, at(1)).await.unwrap();

    let retry = Outcome::Retry("webhook answered 503".to_owned());
    assert!(store.mark_notification("d1", &sms.id, &retry, at(2)).await.unwrap());
    let record = record_of(&*store, &sms).await;
    assert_eq!(record.status, NotificationStatus::Pending, "a transient failure leaves it pending");
    assert_eq!((record.attempts, record.last_error.as_deref()), (1, Some("webhook answered 503")));

    assert!(store.mark_notification("d1", &sms.id, &Outcome::Sent, at(3)).await.unwrap());
    let sent = record_of(&*store, &sms).await;
    assert_eq!((sent.status, sent.attempts, sent.sent_at), (NotificationStatus::Sent, 2, Some(at(3))));
    assert_eq!(sent.last_error.as_deref(), Some("webhook answered 503"), "the last error stays as history");
    assert_eq!(store.record_notification(&sms, at(4)).await.unwrap(), sent, "a later record call sees it sent");

    // Settled: a late try (a concurrent copy of the event) changes nothing.
    for late in [Outcome::Sent, Outcome::Retry("x".to_owned()), Outcome::Rejected("y".to_owned())] {
        assert!(!store.mark_notification("d1", &sms.id, &late, at(5)).await.unwrap(), "{late:?}");
    }
    assert_eq!(record_of(&*store, &sms).await, sent);

    // Refused for good: failed with the reason.
    let email = notification("d1", Channel::Email, 0);
    store.record_notification(&email, at(1)).await.unwrap();
    let rejected = Outcome::Rejected("webhook answered 400".to_owned());
    assert!(store.mark_notification("d1", &email.id, &rejected, at(2)).await.unwrap());
    let failed = record_of(&*store, &email).await;
    assert_eq!((failed.status, failed.attempts, failed.sent_at), (NotificationStatus::Failed, 1, None));
    assert_eq!(failed.last_error.as_deref(), Some("webhook answered 400"));
    assert!(!store.mark_notification("d1", &email.id, &Outcome::Sent, at(3)).await.unwrap(), "failed stays failed");

    // Nothing to mark: an unknown id, or the right id under another delivery.
    assert!(!store.mark_notification("d1", "d1:DeliveryCompleted:email:9", &Outcome::Sent, at(3)).await.unwrap());
    assert!(!store.mark_notification("d2", &sms.id, &Outcome::Sent, at(3)).await.unwrap());
    assert!(store.notifications("d2").await.unwrap().is_empty());
}

pub async fn an_abandoned_notification_is_no_attempt(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let log = notification("d1", Channel::Log, 0);
    store.record_notification(&log, at(1)).await.unwrap();
    assert!(store.mark_notification("d1", &log.id, &Outcome::Retry("down".to_owned()), at(2)).await.unwrap());
    let late = Outcome::Abandoned("not sent within 86400 s".to_owned());
    assert!(store.mark_notification("d1", &log.id, &late, at(3)).await.unwrap());
    let record = record_of(&*store, &log).await;
    assert_eq!((record.status, record.attempts, record.sent_at), (NotificationStatus::Failed, 1, None));
    assert_eq!(record.last_error.as_deref(), Some("not sent within 86400 s"));
}

pub async fn notifications_are_listed_per_delivery_oldest_first(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    assert!(store.notifications("d1").await.unwrap().is_empty());
    for id in ["d1", "d2"] {
        create(&*store, delivery(id, "u1"), at(0)).await;
        done(store.cancel(id, at(1)).await.unwrap());
    }
    let d1 = [
        notification("d1", Channel::Sms, 0),
        notification("d1", Channel::Email, 0),
        notification("d1", Channel::Email, 1),
        notification("d1", Channel::Log, 0),
    ];
    for (i, n) in d1.iter().enumerate() {
        store.record_notification(n, at(10 + i as i64)).await.unwrap();
        store.record_notification(&notification("d2", n.channel, i), at(10)).await.unwrap();
    }
    store.mark_notification("d1", &d1[2].id, &Outcome::Sent, at(20)).await.unwrap();
    let listed = store.notifications("d1").await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.notification.id.as_str()).collect();
    assert_eq!(ids, d1.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), "in the order they were recorded");
    let statuses: Vec<_> = listed.iter().map(|r| r.status).collect();
    use NotificationStatus::{Pending, Sent};
    assert_eq!(statuses, [Pending, Pending, Sent, Pending]);
    assert_eq!(listed.iter().map(|r| r.created_at).collect::<Vec<_>>(), [at(10), at(11), at(12), at(13)]);
    assert_eq!(store.notifications("d2").await.unwrap().len(), 4);
    assert!(store.notifications("d3").await.unwrap().is_empty());
}

pub async fn count_respects_owner_and_month(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let last_ms_of_march = utc(2026, 4, 1, 0, 0, 0) - Duration::milliseconds(1);
    create(&*store, delivery("feb", "a"), utc(2026, 3, 1, 0, 0, 0) - Duration::milliseconds(1)).await;
    create(&*store, delivery("mar-first", "a"), utc(2026, 3, 1, 0, 0, 0)).await;
    create(&*store, delivery("mar-last", "a"), last_ms_of_march).await;
    create(&*store, delivery("apr", "a"), utc(2026, 4, 1, 0, 0, 0)).await;
    create(&*store, delivery("mar-b", "b"), utc(2026, 3, 15, 0, 0, 0)).await;
    create(&*store, delivery("mar-next-year", "a"), utc(2027, 3, 15, 0, 0, 0)).await;

    let counts = async |owner: &str, m: Month| store.count(None, owner, m).await.unwrap();
    assert_eq!(counts("a", month(2026, 2)).await, 1);
    assert_eq!(counts("a", month(2026, 3)).await, 2);
    assert_eq!(counts("a", month(2026, 4)).await, 1);
    assert_eq!(counts("a", month(2027, 3)).await, 1);
    assert_eq!(counts("b", month(2026, 3)).await, 1);
    assert_eq!(counts("c", month(2026, 3)).await, 0);
    assert_eq!(counts("A", month(2026, 3)).await, 0, "owner ids are case-sensitive");

    // Counted by creation: later updates and stage changes move nothing.
    assert_eq!(store.upsert(delivery("mar-last", "a"), utc(2026, 4, 2, 0, 0, 0)).await.unwrap(), Upserted::Updated);
    done(store.cancel("mar-first", utc(2026, 4, 2, 0, 0, 0)).await.unwrap());
    done(store.confirm("mar-last", &confirmation(), utc(2026, 4, 3, 0, 0, 0)).await.unwrap());
    assert_eq!(counts("a", month(2026, 3)).await, 2);
    assert_eq!(counts("a", month(2026, 4)).await, 1);
}

pub async fn count_follows_the_current_owner(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "a"), utc(2026, 3, 10, 0, 0, 0)).await;
    assert_eq!(store.upsert(delivery("d1", "b"), utc(2026, 4, 2, 0, 0, 0)).await.unwrap(), Upserted::Updated);
    assert_eq!(store.count(None, "a", month(2026, 3)).await.unwrap(), 0);
    assert_eq!(store.count(None, "b", month(2026, 3)).await.unwrap(), 1, "still counted in its creation month");
    assert_eq!(store.count(None, "b", month(2026, 4)).await.unwrap(), 0);
}

/// `delivery(id, user)` owned by `user` within `account`.
fn owned(id: &str, user: &str, account: &str) -> Delivery {
    Delivery { owner: UserAccount { user_id: user.to_owned(), account_id: account.to_owned() }, ..delivery(id, user) }
}

pub async fn count_is_per_account_when_one_is_given(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    // Two accounts whose users both go by "shared".
    create(&*store, owned("a1", "shared", "acc-a"), utc(2026, 3, 1, 0, 0, 0)).await;
    create(&*store, owned("a2", "shared", "acc-a"), utc(2026, 3, 31, 23, 59, 59)).await;
    create(&*store, owned("b1", "shared", "acc-b"), utc(2026, 3, 15, 0, 0, 0)).await;
    create(&*store, owned("a-apr", "shared", "acc-a"), utc(2026, 4, 1, 0, 0, 0)).await;
    create(&*store, owned("other-user", "someone", "acc-a"), utc(2026, 3, 15, 0, 0, 0)).await;

    let counts = async |account: Option<&str>, user: &str, m: Month| store.count(account, user, m).await.unwrap();
    assert_eq!(counts(Some("acc-a"), "shared", month(2026, 3)).await, 2);
    assert_eq!(counts(Some("acc-b"), "shared", month(2026, 3)).await, 1);
    assert_eq!(counts(None, "shared", month(2026, 3)).await, 3, "no account: every account's");
    assert_eq!(counts(Some("acc-a"), "shared", month(2026, 4)).await, 1);
    assert_eq!(counts(Some("acc-b"), "shared", month(2026, 4)).await, 0);
    assert_eq!(counts(Some("acc-c"), "shared", month(2026, 3)).await, 0);
    assert_eq!(counts(Some("ACC-A"), "shared", month(2026, 3)).await, 0, "account ids are case-sensitive");
    assert_eq!(counts(Some("acc-a"), "someone", month(2026, 3)).await, 1, "per user within the account");

    // Ids may hold the separators a backend puts between them.
    create(&*store, owned("x1", "c", "a:b"), utc(2026, 3, 15, 0, 0, 0)).await;
    assert_eq!(counts(Some("a:b"), "c", month(2026, 3)).await, 1);
    assert_eq!(counts(Some("a"), "b:c", month(2026, 3)).await, 0);
}

pub async fn count_follows_the_current_account(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let counts = async |account: Option<&str>, user: &str| store.count(account, user, month(2026, 3)).await.unwrap();
    create(&*store, owned("d1", "shared", "acc-a"), utc(2026, 3, 10, 0, 0, 0)).await;
    create(&*store, owned("d2", "shared", "acc-a"), utc(2026, 3, 11, 0, 0, 0)).await;

    // The same user, another account.
    let moved = store.upsert(owned("d1", "shared", "acc-b"), utc(2026, 4, 2, 0, 0, 0)).await.unwrap();
    assert_eq!(moved, Upserted::Updated);
    assert_eq!(counts(Some("acc-a"), "shared").await, 1);
    assert_eq!(counts(Some("acc-b"), "shared").await, 1, "still counted in its creation month");
    assert_eq!(counts(None, "shared").await, 2);
    assert_eq!(store.count(Some("acc-b"), "shared", month(2026, 4)).await.unwrap(), 0);

    // Another user and account at once.
    assert_eq!(store.upsert(owned("d1", "other", "acc-c"), utc(2026, 4, 3, 0, 0, 0)).await.unwrap(), Upserted::Updated);
    assert_eq!(counts(Some("acc-b"), "shared").await, 0);
    assert_eq!(counts(Some("acc-c"), "other").await, 1);
    assert_eq!(counts(None, "shared").await, 1);
    assert_eq!(counts(None, "other").await, 1);

    // Stage changes leave it where it is.
    done(store.cancel("d1", utc(2026, 4, 4, 0, 0, 0)).await.unwrap());
    assert_eq!(counts(Some("acc-c"), "other").await, 1);
    assert_eq!(counts(Some("acc-a"), "shared").await, 1);
}

pub async fn ping_answers(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    store.ping().await.unwrap();
    create(&*store, delivery("d1", "u1"), at(0)).await;
    store.ping().await.unwrap();
}

pub async fn close_creates_a_missing_delivery_in_the_closing_stage(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let no_drone = Delivery { drone_id: String::new(), ..delivery("failed", "u1") };
    let created =
        closed_created(store.close(no_drone.clone(), DeliveryStage::Failed, "rejected", at(5)).await.unwrap());
    assert_eq!(created, with_stage(no_drone.clone(), DeliveryStage::Failed));
    assert_eq!(store.get("failed").await.unwrap(), Some(created));
    let events = store.tracking("failed").await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.delivery_id.as_str(), e.stage, e.location, e.at)).collect();
    assert_eq!(seen, [("failed", DeliveryStage::Failed, Some(no_drone.pickup), at(5))], "one event, at the pickup");
    assert_eq!(events[0].reason.as_deref(), Some("rejected"));

    let given = with_stage(delivery("cancelled", "u1"), DeliveryStage::Completed);
    let created = closed_created(
        store.close(given, DeliveryStage::Cancelled, "cancelled before it was scheduled", at(6)).await.unwrap(),
    );
    assert_eq!(created.stage, Some(DeliveryStage::Cancelled), "the stage given in the body is ignored");
    assert_eq!(
        reasons(&*store, "cancelled").await,
        [(DeliveryStage::Cancelled, Some("cancelled before it was scheduled".to_owned()))]
    );
    assert_eq!(store.count(None, "u1", month(2026, 3)).await.unwrap(), 2, "counted like any delivery created then");
}

pub async fn close_fails_a_live_delivery_keeping_its_fields(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let created = create(&*store, delivery("d1", "u1"), at(0)).await;
    let other = Delivery { drone_id: "drone-0099".to_owned(), expedited: false, ..delivery("d1", "u1") };
    let failed = closed_done(store.close(other, DeliveryStage::Failed, "deadline passed", at(1)).await.unwrap());
    assert_eq!(failed, with_stage(created, DeliveryStage::Failed), "an existing delivery keeps its fields");
    assert_eq!(store.get("d1").await.unwrap(), Some(failed));
    let events = store.tracking("d1").await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!((events[1].stage, events[1].location, events[1].at), (DeliveryStage::Failed, None, at(1)));
    assert_eq!(
        reasons(&*store, "d1").await,
        [(DeliveryStage::Created, None), (DeliveryStage::Failed, Some("deadline passed".to_owned()))],
        "only the closure's event has a reason"
    );

    // Failed from any stage not yet final.
    create(&*store, delivery("d2", "u1"), at(0)).await;
    let change = RescheduledDelivery { deadline: Some("2026-03-16T00:00:00Z".to_owned()), ..Default::default() };
    done(store.reschedule("d2", &change, at(1)).await.unwrap());
    assert_eq!(
        closed_done(store.close(delivery("d2", "u1"), DeliveryStage::Failed, "no drone", at(2)).await.unwrap()).stage,
        Some(DeliveryStage::Failed)
    );
    assert_eq!(
        stages(&*store, "d2").await,
        [DeliveryStage::Created, DeliveryStage::Rescheduled, DeliveryStage::Failed]
    );
}

pub async fn close_cancels_by_the_cancel_rules(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let created = create(&*store, delivery("d1", "u1"), at(0)).await;
    let cancelled = closed_done(
        store.close(delivery("d1", "u1"), DeliveryStage::Cancelled, "by the customer", at(1)).await.unwrap(),
    );
    assert_eq!(cancelled, with_stage(created, DeliveryStage::Cancelled));
    assert_eq!(
        reasons(&*store, "d1").await,
        [(DeliveryStage::Created, None), (DeliveryStage::Cancelled, Some("by the customer".to_owned()))]
    );
    assert_eq!(done(store.cancel("d1", at(2)).await.unwrap()), cancelled, "a later DELETE finds it cancelled");
    assert_eq!(stages(&*store, "d1").await.len(), 2);
    // The refusal after pickup: a_closing_cancel_after_pickup_is_refused.
}

pub async fn close_is_idempotent_without_a_new_event(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let failed = closed_done(store.close(delivery("d1", "u1"), DeliveryStage::Failed, "first", at(1)).await.unwrap());
    let again = closed_done(store.close(delivery("d1", "u1"), DeliveryStage::Failed, "second", at(2)).await.unwrap());
    assert_eq!(again, failed, "a retried closure answers the same");
    assert_eq!(
        reasons(&*store, "d1").await,
        [(DeliveryStage::Created, None), (DeliveryStage::Failed, Some("first".to_owned()))]
    );

    let created =
        closed_created(store.close(delivery("d2", "u1"), DeliveryStage::Failed, "gave up", at(1)).await.unwrap());
    let again = closed_done(store.close(delivery("d2", "u1"), DeliveryStage::Failed, "gave up", at(2)).await.unwrap());
    assert_eq!(again, created, "the retry of a creating closure finds it");
    assert_eq!(reasons(&*store, "d2").await, [(DeliveryStage::Failed, Some("gave up".to_owned()))]);

    // Cancelled by a DELETE, then the closure saying the same: nothing to add.
    create(&*store, delivery("d3", "u1"), at(0)).await;
    let cancelled = done(store.cancel("d3", at(1)).await.unwrap());
    let again = closed_done(store.close(delivery("d3", "u1"), DeliveryStage::Cancelled, "late", at(2)).await.unwrap());
    assert_eq!(again, cancelled);
    assert_eq!(reasons(&*store, "d3").await, [(DeliveryStage::Created, None), (DeliveryStage::Cancelled, None)]);
}

pub async fn close_is_refused_in_another_final_stage(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("completed", "u1"), at(0)).await;
    let completed = done(store.confirm("completed", &confirmation(), at(1)).await.unwrap());
    for stage in [DeliveryStage::Failed, DeliveryStage::Cancelled] {
        let reason = closed_refused(store.close(delivery("completed", "u1"), stage, "too late", at(2)).await.unwrap());
        assert!(reason.contains("already Completed"), "{reason}");
    }
    assert_eq!(store.get("completed").await.unwrap(), Some(completed), "a refused closure writes nothing");
    assert_eq!(stages(&*store, "completed").await, [DeliveryStage::Created, DeliveryStage::Completed]);

    create(&*store, delivery("cancelled", "u1"), at(0)).await;
    done(store.cancel("cancelled", at(1)).await.unwrap());
    let reason =
        closed_refused(store.close(delivery("cancelled", "u1"), DeliveryStage::Failed, "x", at(2)).await.unwrap());
    assert!(reason.contains("already Cancelled"), "{reason}");
    assert_eq!(stages(&*store, "cancelled").await, [DeliveryStage::Created, DeliveryStage::Cancelled]);

    closed_created(store.close(delivery("failed", "u1"), DeliveryStage::Failed, "x", at(0)).await.unwrap());
    let reason =
        closed_refused(store.close(delivery("failed", "u1"), DeliveryStage::Cancelled, "y", at(1)).await.unwrap());
    assert!(reason.contains("already Failed"), "{reason}");
    assert_eq!(reasons(&*store, "failed").await, [(DeliveryStage::Failed, Some("x".to_owned()))]);
}

/// Reschedule, cancel and confirm are refused; a PUT (the workflow running a replayed request)
/// reopens it.
pub async fn a_failed_delivery_changes_only_by_being_put_again(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    closed_done(store.close(delivery("d1", "u1"), DeliveryStage::Failed, "gave up", at(1)).await.unwrap());
    let change = RescheduledDelivery { deadline: Some("2026-03-16T00:00:00Z".to_owned()), ..Default::default() };
    for outcome in [
        store.reschedule("d1", &change, at(2)).await.unwrap(),
        store.cancel("d1", at(2)).await.unwrap(),
        store.confirm("d1", &confirmation(), at(2)).await.unwrap(),
    ] {
        let reason = refused(outcome);
        assert!(reason.contains("already Failed"), "{reason}");
    }
    let with_notify = NotifyMeRequest { email_address: Some("pat@contoso.com".to_owned()), sms: None };
    assert!(store.add_notify_request("d1", &with_notify, at(4)).await.unwrap());
    assert_eq!(store.upsert(delivery("d1", "u1"), at(5)).await.unwrap(), Upserted::Updated);
    assert_eq!(store.get("d1").await.unwrap().unwrap().stage, Some(DeliveryStage::Created), "reopened");
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created, DeliveryStage::Failed, DeliveryStage::Created]);
    assert_eq!(store.upsert(delivery("d1", "u1"), at(6)).await.unwrap(), Upserted::Updated);
    assert_eq!(stages(&*store, "d1").await.len(), 3, "a second PUT adds nothing");
    assert!(matches!(store.cancel("d1", at(7)).await.unwrap(), Changed::Done(_)), "open again: it can be cancelled");
}

pub async fn concurrent_closes_of_a_missing_delivery_create_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let outcomes = concurrently(16, &store, |s, i| async move {
        s.close(delivery("d1", "u1"), DeliveryStage::Failed, "gave up", at(i as i64)).await.unwrap()
    })
    .await;
    let created = outcomes.iter().filter(|o| matches!(o, Closed::Created(_))).count();
    assert_eq!(created, 1, "{outcomes:?}");
    for outcome in outcomes {
        let delivery = match outcome {
            Closed::Created(d) | Closed::Done(d) => *d,
            Closed::Refused(reason) => panic!("refused: {reason}"),
        };
        assert_eq!(delivery.stage, Some(DeliveryStage::Failed));
    }
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Failed]);
    assert_eq!(store.count(None, "u1", month(2026, 3)).await.unwrap(), 1);
}

pub async fn racing_close_and_confirm_leave_one_final_stage(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    for round in 0..8 {
        let id = format!("d{round}");
        create(&*store, delivery(&id, "u1"), at(0)).await;
        let (a, b) = (store.clone(), store.clone());
        let (close_id, confirm_id) = (id.clone(), id.clone());
        let close = tokio::spawn(async move {
            a.close(delivery(&close_id, "u1"), DeliveryStage::Failed, "gave up", at(1)).await.unwrap()
        });
        let confirm = tokio::spawn(async move { b.confirm(&confirm_id, &confirmation(), at(1)).await.unwrap() });
        let (close, confirm) = (close.await.unwrap(), confirm.await.unwrap());
        let final_stage = stage_of(&*store, &id).await.unwrap();
        match final_stage {
            DeliveryStage::Failed => {
                assert_eq!(closed_done(close).stage, Some(DeliveryStage::Failed));
                refused(confirm);
            }
            DeliveryStage::Completed => {
                assert_eq!(done(confirm).stage, Some(DeliveryStage::Completed));
                closed_refused(close);
            }
            other => panic!("{id} ended {other}"),
        }
        assert_eq!(stages(&*store, &id).await, [DeliveryStage::Created, final_stage]);
    }
}

/// Where the drone reported itself, for advances.
fn spot(n: u32) -> Location {
    Location::new(47.60 + f64::from(n) / 100.0, -122.33, 30.0)
}

fn flight(departed_ms: i64, drone: &str) -> Flight {
    let departed_at = at(departed_ms);
    Flight {
        drone_id: drone.to_owned(),
        depot: Location::new(47.55, -122.30, 0.0),
        origin: None,
        carrying: false,
        pickup: Location::new(47.60, -122.33, 0.0),
        dropoff: Location::new(47.62, -122.35, 10.0),
        speed_mph: 40.0,
        time_scale: 60.0,
        departed_at,
        pickup_at: departed_at + Duration::seconds(90),
        dropoff_at: departed_at + Duration::seconds(150),
        back_at: departed_at + Duration::seconds(240),
    }
}

pub async fn advance_moves_forward_with_the_drones_location_and_time(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let created = create(&*store, delivery("d1", "u1"), at(0)).await;
    let moved = done(store.advance("d1", Action::HeadToPickup, spot(1), at(1_000)).await.unwrap());
    assert_eq!(moved, with_stage(created.clone(), DeliveryStage::HeadedToPickup));
    assert_eq!(store.get("d1").await.unwrap(), Some(moved.clone()));
    let again = done(store.advance("d1", Action::HeadToPickup, spot(2), at(2_000)).await.unwrap());
    assert_eq!(again, moved, "a repeated event changes nothing");
    let on_board = done(store.advance("d1", Action::HeadToDropoff, spot(3), at(3_000)).await.unwrap());
    assert_eq!(on_board.stage, Some(DeliveryStage::HeadedToDropoff));
    let late = done(store.advance("d1", Action::HeadToPickup, spot(4), at(4_000)).await.unwrap());
    assert_eq!(late.stage, Some(DeliveryStage::HeadedToDropoff), "a late event never moves it back");

    let events = store.tracking("d1").await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.stage, e.location, e.at, e.reason.clone())).collect();
    assert_eq!(
        seen,
        [
            (DeliveryStage::Created, Some(created.pickup), at(0), None),
            (DeliveryStage::HeadedToPickup, Some(spot(1)), at(1_000), None),
            (DeliveryStage::HeadedToDropoff, Some(spot(3)), at(3_000), None),
        ]
    );
    assert_eq!(store.advance("nope", Action::HeadToPickup, spot(1), at(0)).await.unwrap(), Changed::NotFound);
    assert_eq!(store.get("nope").await.unwrap(), None, "an advance never creates a delivery");
}

pub async fn advance_may_skip_a_stage_and_never_moves_a_finished_delivery(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let skipped = done(store.advance("d1", Action::HeadToDropoff, spot(1), at(1)).await.unwrap());
    assert_eq!(skipped.stage, Some(DeliveryStage::HeadedToDropoff));
    assert_eq!(stages(&*store, "d1").await, [DeliveryStage::Created, DeliveryStage::HeadedToDropoff]);

    for (id, finish) in [("completed", 0), ("cancelled", 1), ("failed", 2)] {
        create(&*store, delivery(id, "u1"), at(0)).await;
        let finished = match finish {
            0 => done(store.confirm(id, &confirmation(), at(1)).await.unwrap()),
            1 => done(store.cancel(id, at(1)).await.unwrap()),
            _ => closed_done(store.close(delivery(id, "u1"), DeliveryStage::Failed, "gave up", at(1)).await.unwrap()),
        };
        for action in [Action::HeadToPickup, Action::HeadToDropoff] {
            let outcome = done(store.advance(id, action, spot(2), at(2)).await.unwrap());
            assert_eq!(outcome, finished, "{id}: {action:?} changes nothing");
        }
        assert_eq!(stages(&*store, id).await.len(), 2, "{id}");
    }
}

pub async fn concurrent_advances_record_each_stage_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let outcomes = concurrently(16, &store, |s, i| async move {
        let action = if i % 2 == 0 { Action::HeadToPickup } else { Action::HeadToDropoff };
        done(s.advance("d1", action, spot(1), at(1)).await.unwrap())
    })
    .await;
    assert!(outcomes.iter().all(|d| d.stage.is_some_and(|s| domain::progress(s) >= 1)), "{outcomes:?}");
    let seen = stages(&*store, "d1").await;
    // Either the pickup was seen first, or the drop-off overtook it and the pickup was old news.
    assert!(
        seen == [DeliveryStage::Created, DeliveryStage::HeadedToPickup, DeliveryStage::HeadedToDropoff]
            || seen == [DeliveryStage::Created, DeliveryStage::HeadedToDropoff],
        "{seen:?}"
    );
    assert_eq!(stage_of(&*store, "d1").await, Some(DeliveryStage::HeadedToDropoff));
}

pub async fn a_rescheduled_delivery_keeps_its_flights_progress(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    done(store.advance("d1", Action::HeadToPickup, spot(1), at(1)).await.unwrap());
    done(store.advance("d1", Action::HeadToDropoff, spot(2), at(2)).await.unwrap());
    let change = RescheduledDelivery { dropoff: Some(Location::new(47.5, -122.2, 0.0)), ..Default::default() };
    assert_eq!(done(store.reschedule("d1", &change, at(3)).await.unwrap()).stage, Some(DeliveryStage::Rescheduled));
    // Still on board: a late HeadedToPickup is old news, and a cancel is refused.
    done(store.advance("d1", Action::HeadToPickup, spot(4), at(4)).await.unwrap());
    let reason = refused(store.cancel("d1", at(5)).await.unwrap());
    assert_eq!(reason, domain::PICKED_UP);
    assert_eq!(
        stages(&*store, "d1").await,
        [
            DeliveryStage::Created,
            DeliveryStage::HeadedToPickup,
            DeliveryStage::HeadedToDropoff,
            DeliveryStage::Rescheduled
        ]
    );
    assert_eq!(done(store.confirm("d1", &confirmation(), at(6)).await.unwrap()).stage, Some(DeliveryStage::Completed));

    // Rescheduled before the drone left: it still goes forward and can be cancelled.
    create(&*store, delivery("d2", "u1"), at(0)).await;
    done(store.reschedule("d2", &change, at(1)).await.unwrap());
    assert_eq!(
        done(store.advance("d2", Action::HeadToPickup, spot(1), at(2)).await.unwrap()).stage,
        Some(DeliveryStage::HeadedToPickup)
    );
    assert_eq!(done(store.cancel("d2", at(3)).await.unwrap()).stage, Some(DeliveryStage::Cancelled));
}

pub async fn cancel_after_pickup_is_refused_and_noted_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    let on_board = done(store.advance("d1", Action::HeadToDropoff, spot(1), at(1)).await.unwrap());
    assert_eq!(refused(store.cancel("d1", at(2)).await.unwrap()), domain::PICKED_UP);
    assert!(store.record_refusal("d1", Action::Cancel, None, at(2)).await.unwrap());
    assert_eq!(refused(store.cancel("d1", at(3)).await.unwrap()), domain::PICKED_UP);
    assert!(!store.record_refusal("d1", Action::Cancel, None, at(3)).await.unwrap(), "once per kind");
    assert_eq!(store.get("d1").await.unwrap(), Some(on_board), "the note changes neither stage nor fields");
    let note = domain::refusal_note(DeliveryStage::HeadedToDropoff, Action::Cancel, None);
    let events = store.tracking("d1").await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.stage, e.location, e.at, e.reason.clone())).collect();
    assert_eq!(
        seen[1..],
        [
            (DeliveryStage::HeadedToDropoff, Some(spot(1)), at(1), None),
            (DeliveryStage::HeadedToDropoff, None, at(2), note),
        ]
    );

    // Nothing to note: a cancel that was not refused, or refused for another reason, or no delivery.
    create(&*store, delivery("d2", "u1"), at(0)).await;
    assert!(!store.record_refusal("d2", Action::Cancel, None, at(1)).await.unwrap());
    done(store.confirm("d2", &confirmation(), at(2)).await.unwrap());
    refused(store.cancel("d2", at(3)).await.unwrap());
    assert!(!store.record_refusal("d2", Action::Cancel, None, at(3)).await.unwrap());
    assert!(!store.record_refusal("d1", Action::Reschedule, None, at(3)).await.unwrap());
    assert!(!store.record_refusal("nope", Action::Cancel, None, at(3)).await.unwrap());
    assert_eq!(stages(&*store, "d2").await, [DeliveryStage::Created, DeliveryStage::Completed]);
    assert_eq!(store.get("nope").await.unwrap(), None);
}

pub async fn concurrent_refusals_are_noted_once(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    done(store.advance("d1", Action::HeadToDropoff, spot(1), at(1)).await.unwrap());
    let added = concurrently(12, &store, |s, i| async move {
        s.record_refusal("d1", Action::Cancel, None, at(2 + i as i64)).await.unwrap()
    })
    .await;
    assert_eq!(added.iter().filter(|a| **a).count(), 1, "{added:?}");
    assert_eq!(store.tracking("d1").await.unwrap().len(), 3);
}

pub async fn a_closing_cancel_after_pickup_is_refused(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    done(store.advance("d1", Action::HeadToDropoff, spot(1), at(1)).await.unwrap());
    let reason = closed_refused(store.close(delivery("d1", "u1"), DeliveryStage::Cancelled, "x", at(2)).await.unwrap());
    assert_eq!(reason, domain::PICKED_UP);
    let change = RescheduledDelivery { deadline: Some("2026-03-16T00:00:00Z".to_owned()), ..Default::default() };
    done(store.reschedule("d1", &change, at(3)).await.unwrap());
    let reason = closed_refused(store.close(delivery("d1", "u1"), DeliveryStage::Cancelled, "x", at(4)).await.unwrap());
    assert_eq!(reason, domain::PICKED_UP, "rescheduled after pickup is still after pickup");
    let failed = closed_done(store.close(delivery("d1", "u1"), DeliveryStage::Failed, "lost", at(5)).await.unwrap());
    assert_eq!(failed.stage, Some(DeliveryStage::Failed), "failing stays possible in flight");
}

pub async fn the_confirmation_is_kept(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    assert_eq!(store.confirmation("d1").await.unwrap(), None);
    done(store.confirm("d1", &confirmation(), at(1)).await.unwrap());
    assert_eq!(store.confirmation("d1").await.unwrap(), Some(confirmation()));
    let other = Confirmation { confirmation_blob: "b3RoZXI=".to_owned(), ..confirmation() };
    done(store.confirm("d1", &other, at(2)).await.unwrap());
    assert_eq!(store.confirmation("d1").await.unwrap(), Some(confirmation()), "a retried confirmation changes nothing");
    assert_eq!(store.confirmation("nope").await.unwrap(), None);
}

pub async fn a_flight_is_kept_before_its_delivery_exists(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.flight("d1").await.unwrap(), None);
    assert!(store.record_flight("d1", &flight(0, "drone-0001"), at(0)).await.unwrap());
    assert_eq!(store.get("d1").await.unwrap(), None, "a flight creates no delivery");
    assert!(store.tracking("d1").await.unwrap().is_empty());
    assert_eq!(store.flight("d1").await.unwrap(), Some(flight(0, "drone-0001")));
    create(&*store, delivery("d1", "u1"), at(10)).await;
    assert_eq!(store.flight("d1").await.unwrap(), Some(flight(0, "drone-0001")), "creating the delivery keeps it");
    done(store.confirm("d1", &confirmation(), at(20)).await.unwrap());
    assert_eq!(store.flight("d1").await.unwrap(), Some(flight(0, "drone-0001")), "readable while the delivery is");
    assert_eq!(store.flight("d2").await.unwrap(), None);
}

pub async fn the_latest_position_wins_whatever_order_it_comes_in(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    let report = |ms: i64, n: u32| DronePosition { drone_id: "drone-0001".into(), location: spot(n), at: at(ms) };
    assert_eq!(store.position("d1").await.unwrap(), None);
    // Kept before the delivery exists, as its flight is.
    assert!(store.record_position("d1", &report(5_000, 1)).await.unwrap());
    assert_eq!(store.get("d1").await.unwrap(), None, "a position creates no delivery");
    assert_eq!(store.position("d1").await.unwrap(), Some(report(5_000, 1)));
    // Redelivered, or older: nothing moves back.
    assert!(!store.record_position("d1", &report(5_000, 1)).await.unwrap());
    assert!(!store.record_position("d1", &report(5_000, 9)).await.unwrap());
    assert!(!store.record_position("d1", &report(0, 2)).await.unwrap());
    assert_eq!(store.position("d1").await.unwrap(), Some(report(5_000, 1)));
    assert!(store.record_position("d1", &report(10_000, 3)).await.unwrap());
    assert_eq!(store.position("d1").await.unwrap(), Some(report(10_000, 3)));
    // The flight and the position do not disturb each other.
    assert!(store.record_flight("d1", &flight(0, "drone-0001"), at(0)).await.unwrap());
    assert_eq!(store.position("d1").await.unwrap(), Some(report(10_000, 3)));
    assert_eq!(store.flight("d1").await.unwrap(), Some(flight(0, "drone-0001")));
    // Concurrent reports: the latest stays.
    let reports = (0..12).map(|i| {
        let store = store.clone();
        async move { store.record_position("d2", &report(i * 1_000, 0)).await.unwrap() }
    });
    futures::future::join_all(reports).await;
    assert_eq!(store.position("d2").await.unwrap(), Some(report(11_000, 0)));
    assert_eq!(store.position("d1").await.unwrap().map(|p| p.at), Some(at(10_000)), "per delivery");
}

pub async fn the_newer_flight_wins(h: &dyn DeliveryStoreHarness) {
    let store = h.open().await;
    create(&*store, delivery("d1", "u1"), at(0)).await;
    assert!(store.record_flight("d1", &flight(60_000, "drone-0001"), at(60_000)).await.unwrap());
    // Older by departure: kept out, whenever it arrives.
    assert!(!store.record_flight("d1", &flight(0, "drone-0002"), at(90_000)).await.unwrap());
    // The same flight again: nothing to do.
    assert!(!store.record_flight("d1", &flight(60_000, "drone-0001"), at(60_000)).await.unwrap());
    assert_eq!(store.flight("d1").await.unwrap(), Some(flight(60_000, "drone-0001")));
    // Same departure, seen later: the later event's plan.
    assert!(store.record_flight("d1", &flight(60_000, "drone-0003"), at(61_000)).await.unwrap());
    assert!(!store.record_flight("d1", &flight(60_000, "drone-0004"), at(60_500)).await.unwrap());
    assert_eq!(store.flight("d1").await.unwrap().unwrap().drone_id, "drone-0003");
    // Re-planned, departing later: replaces it.
    assert!(store.record_flight("d1", &flight(120_000, "drone-0005"), at(0)).await.unwrap());
    assert_eq!(store.flight("d1").await.unwrap(), Some(flight(120_000, "drone-0005")));

    // Racing writers: the newest ends up stored whatever the order.
    let outcomes = concurrently(12, &store, |s, i| async move {
        s.record_flight("d2", &flight(i as i64 * 1_000, &format!("drone-{i:04}")), at(0)).await.unwrap()
    })
    .await;
    assert!(outcomes.iter().any(|stored| *stored));
    assert_eq!(store.flight("d2").await.unwrap(), Some(flight(11_000, "drone-0011")));
}
