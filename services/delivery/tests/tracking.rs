//! The tracking consumer against real embedded streams: drone events published to
//! `drone-events` move deliveries along, complete them and publish `DeliveryCompleted`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use contracts::delivery::Delivery;
use contracts::events::{
    DELIVERY_EVENTS_STREAM, DRONE_EVENTS_STREAM, DroneEvent, DronePosition, EventEnvelope, Flight,
};
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};
use delivery::DeliveryStore;
use delivery::store::Upserted;
use delivery::tracking::{self, TrackingOptions};
use platform::backoff::Backoff;
use platform::bus::OutgoingMessage;
use platform::bus::stream::{EventStream, Subscription, open_stream};
use platform::clock::ManualClock;
use tokio_util::sync::CancellationToken;

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

fn pickup() -> Location {
    Location::new(47.60, -122.33, 0.0)
}

fn dropoff() -> Location {
    Location::new(47.62, -122.35, 10.0)
}

/// A store, both streams in one bus file, and a consumer that is started on demand.
struct Harness {
    store: Arc<dyn DeliveryStore>,
    drone_events: Arc<dyn EventStream>,
    delivery_events: Arc<dyn EventStream>,
    subscription: Option<Arc<dyn Subscription>>,
    clock: ManualClock,
    shutdown: CancellationToken,
    consumer: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            delivery::open_store(&format!("sqlite://{}", dir.path().join("delivery.db").display())).await.unwrap();
        let bus = format!("sqlite://{}", dir.path().join("bus.db").display());
        let drone_events = open_stream(&bus, DRONE_EVENTS_STREAM, delivery::STREAM_DEDUP_WINDOW).await.unwrap();
        let delivery_events = open_stream(&bus, DELIVERY_EVENTS_STREAM, delivery::STREAM_DEDUP_WINDOW).await.unwrap();
        Self {
            store,
            drone_events,
            delivery_events,
            subscription: None,
            clock: ManualClock::new(noon()),
            shutdown: CancellationToken::new(),
            consumer: None,
            _dir: dir,
        }
    }

    /// Joins the group (for the first time: it starts at the beginning of the stream) and runs
    /// the consumer, retrying quickly.
    async fn start(&mut self) {
        let subscription = tracking::subscribe(&*self.drone_events, tracking::DEFAULT_GROUP).await.unwrap();
        let options = TrackingOptions {
            concurrency: 4,
            backoff: Backoff { base: Duration::from_millis(10), max: Duration::from_millis(40) },
            orphan_after: Duration::from_secs(600),
            drain: Duration::from_secs(2),
        };
        self.consumer = Some(tokio::spawn(tracking::run(
            subscription.clone(),
            self.store.clone(),
            self.delivery_events.clone(),
            Arc::new(self.clock.clone()),
            options,
            self.shutdown.clone(),
        )));
        self.subscription = Some(subscription);
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.consumer.take().unwrap().await.unwrap();
    }

    fn subscription(&self) -> &dyn Subscription {
        self.subscription.as_deref().expect("started")
    }

    /// Publishes `event` for delivery `id` as the drone scheduler does (`{id}:{type}`), or
    /// under `copy` appended to that id (the same fact published again after the
    /// de-duplication window, which the stream cannot drop).
    async fn publish(&self, id: &str, event: DroneEvent, occurred_at: DateTime<Utc>, copy: &str) {
        let message_id = format!("{id}:{}{copy}", event.kind());
        let envelope = EventEnvelope {
            message_id: message_id.clone(),
            delivery_id: id.to_owned(),
            occurred_at,
            traceparent: None,
            event,
        };
        let payload = serde_json::to_vec(&envelope).unwrap().into();
        self.drone_events.publish(OutgoingMessage { id: message_id, payload }).await.unwrap();
    }

    async fn create(&self, id: &str) -> Delivery {
        match self.store.upsert(delivery(id), self.clock_now()).await.unwrap() {
            Upserted::Created(created) => *created,
            Upserted::Updated => panic!("{id} existed"),
        }
    }

    fn clock_now(&self) -> DateTime<Utc> {
        platform::clock::Clock::now(&self.clock)
    }

    async fn stage(&self, id: &str) -> Option<DeliveryStage> {
        self.store.get(id).await.unwrap().and_then(|d| d.stage)
    }

    /// Waits until every drone event published so far is settled.
    async fn settled(&self) {
        eventually("every drone event settled", || async { self.subscription().pending().await.unwrap() == 0 }).await;
    }
}

/// Polls `condition` until it holds, for up to 10 s.
async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn delivery(id: &str) -> Delivery {
    Delivery {
        id: id.to_owned(),
        owner: UserAccount { user_id: "contoso".to_owned(), account_id: "acct".to_owned() },
        pickup: pickup(),
        dropoff: dropoff(),
        deadline: String::new(),
        expedited: false,
        confirmation_required: ConfirmationType::FingerPrint,
        drone_id: "drone-0007".to_owned(),
        stage: None,
        pickup_time: None,
        package_id: None,
    }
}

fn at(flight: &Flight, location: Location, at: DateTime<Utc>) -> DronePosition {
    DronePosition { drone_id: flight.drone_id.clone(), location, at }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_follows_its_drone_to_completion_once() {
    let mut h = Harness::new().await;
    h.create("d1").await;
    let flight = common::flight(noon(), pickup(), dropoff(), 40.0);
    // Published before the service ever started: the new group reads it all the same.
    h.publish("d1", DroneEvent::DroneAssigned(flight.clone()), noon(), "").await;
    h.publish("d1", DroneEvent::HeadedToPickup(at(&flight, flight.depot, noon())), noon(), "").await;
    h.start().await;
    eventually("on its way to the pickup", || async { h.stage("d1").await == Some(DeliveryStage::HeadedToPickup) })
        .await;
    h.settled().await;
    assert_eq!(h.store.flight("d1").await.unwrap(), Some(flight.clone()));

    h.publish("d1", DroneEvent::HeadedToDropoff(at(&flight, pickup(), flight.pickup_at)), flight.pickup_at, "").await;
    eventually("on board", || async { h.stage("d1").await == Some(DeliveryStage::HeadedToDropoff) }).await;
    let arrived = DroneEvent::DroneArrived(at(&flight, dropoff(), flight.dropoff_at));
    h.publish("d1", arrived.clone(), flight.dropoff_at, "").await;
    eventually("delivered", || async { h.stage("d1").await == Some(DeliveryStage::Completed) }).await;
    // Ignored kinds, and copies of facts already applied (published again under other ids).
    h.publish("d1", DroneEvent::DroneReleased(at(&flight, dropoff(), flight.dropoff_at)), flight.dropoff_at, "").await;
    h.publish("d1", DroneEvent::DronePosition(at(&flight, dropoff(), flight.dropoff_at)), flight.dropoff_at, "").await;
    h.publish("d1", arrived, flight.dropoff_at, "#copy").await;
    h.publish("d1", DroneEvent::HeadedToPickup(at(&flight, flight.depot, noon())), noon(), "#copy").await;
    h.publish("d1", DroneEvent::HeadedToDropoff(at(&flight, pickup(), flight.pickup_at)), flight.pickup_at, "#copy")
        .await;
    h.settled().await;

    let tracking = h.store.tracking("d1").await.unwrap();
    let seen: Vec<_> = tracking.iter().map(|e| (e.stage, e.location, e.at)).collect();
    assert_eq!(
        seen,
        [
            (DeliveryStage::Created, Some(pickup()), noon()),
            (DeliveryStage::HeadedToPickup, Some(flight.depot), noon()),
            (DeliveryStage::HeadedToDropoff, Some(pickup()), flight.pickup_at),
            (DeliveryStage::Completed, Some(dropoff()), flight.dropoff_at),
        ],
        "one event per stage, at the drone's reports"
    );
    let confirmation = h.store.confirmation("d1").await.unwrap().expect("confirmed by the drone");
    assert_eq!(confirmation.date_time, flight.dropoff_at);
    assert_eq!(confirmation.geo_coordinates, dropoff());
    assert_eq!(confirmation.confirmation_type, ConfirmationType::FingerPrint, "as the delivery requires");
    assert_eq!(confirmation.confirmation_blob, "");

    let published = common::published(&*h.delivery_events).await;
    let ids: Vec<&str> = published.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["d1:DeliveryCompleted"], "once, however often the drone arrived");
    let finished = published[0].event.finished().unwrap();
    assert_eq!(finished.delivery.stage, Some(DeliveryStage::Completed));
    assert_eq!(finished.tracking, tracking);
    assert_eq!(finished.confirmation.as_ref(), Some(&confirmation));
    assert_eq!(finished.finished_at, flight.dropoff_at);
    assert!(h.subscription().dead_letters(10).await.unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_ahead_of_its_delivery_is_applied_once_the_delivery_exists() {
    let mut h = Harness::new().await;
    h.start().await;
    let flight = common::flight(noon(), pickup(), dropoff(), 40.0);
    h.publish("d2", DroneEvent::DroneAssigned(flight.clone()), noon(), "").await;
    h.publish("d2", DroneEvent::HeadedToPickup(at(&flight, flight.depot, noon())), noon(), "").await;
    // The flight is kept at once; the stage change waits for the delivery.
    eventually("the flight kept", || async { h.store.flight("d2").await.unwrap().is_some() }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.store.get("d2").await.unwrap(), None, "a drone event creates no delivery");
    assert_eq!(h.subscription().pending().await.unwrap(), 1, "HeadedToPickup is being retried");

    h.create("d2").await;
    eventually("applied after creation", || async { h.stage("d2").await == Some(DeliveryStage::HeadedToPickup) }).await;
    h.settled().await;
    let stages: Vec<_> = h.store.tracking("d2").await.unwrap().into_iter().map(|e| e.stage).collect();
    assert_eq!(stages, [DeliveryStage::Created, DeliveryStage::HeadedToPickup]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_event_is_dropped_once_older_than_the_limit() {
    let mut h = Harness::new().await;
    h.start().await;
    let flight = common::flight(noon(), pickup(), dropoff(), 40.0);
    h.publish("ghost", DroneEvent::HeadedToPickup(at(&flight, flight.depot, noon())), noon(), "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.subscription().pending().await.unwrap(), 1, "retried while it may still come");

    h.clock.advance(chrono::Duration::seconds(599));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.subscription().pending().await.unwrap(), 1, "the limit is not reached yet");
    h.clock.advance(chrono::Duration::seconds(2));
    h.settled().await;
    assert!(h.subscription().dead_letters(10).await.unwrap().is_empty(), "dropped, not dead-lettered");
    assert_eq!(h.store.get("ghost").await.unwrap(), None);
    let metrics = platform::metrics::render();
    assert!(
        metrics.lines().any(|l| l.starts_with("delivery_orphan_drone_events_total") && l.contains("HeadedToPickup")),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_dead_lettered_with_the_reason() {
    let mut h = Harness::new().await;
    h.start().await;
    let garbage = OutgoingMessage { id: "d1:Garbage".to_owned(), payload: b"{not json".to_vec().into() };
    h.drone_events.publish(garbage).await.unwrap();
    let unknown = br#"{"messageId":"d1:Teleported","deliveryId":"d1","occurredAt":"2026-03-15T12:00:00Z","type":"Teleported","body":{}}"#;
    h.drone_events
        .publish(OutgoingMessage { id: "d1:Teleported".to_owned(), payload: unknown.to_vec().into() })
        .await
        .unwrap();
    h.settled().await;
    let dead = h.subscription().dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for letter in dead {
        assert!(letter.last_error.starts_with("unreadable drone event"), "{}", letter.last_error);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_positions_keep_the_newest_whatever_order_they_come_in() {
    let mut h = Harness::new().await;
    h.create("d3").await;
    h.start().await;
    let flight = common::flight(noon(), pickup(), dropoff(), 40.0);
    let (early, late) = (noon() + chrono::Duration::seconds(5), noon() + chrono::Duration::seconds(10));
    let (here, there) = (Location::new(47.59, -122.33, 30.0), Location::new(47.595, -122.33, 30.0));
    // The later report first, then the earlier one and a redelivered copy of the later one, as
    // the scheduler names them ({id}:DronePosition:{ms}); none of them moves the drone back.
    for (location, time, copy) in [(there, late, ":10000"), (here, early, ":5000"), (there, late, ":10000#again")] {
        h.publish("d3", DroneEvent::DronePosition(at(&flight, location, time)), time, copy).await;
    }
    h.settled().await;
    assert_eq!(h.store.position("d3").await.unwrap(), Some(at(&flight, there, late)));
    // Without a flight plan the status shows it: the newest thing known about the drone.
    let status = delivery::domain::status(
        &h.store.tracking("d3").await.unwrap(),
        None,
        h.store.position("d3").await.unwrap().as_ref(),
        late,
    )
    .unwrap();
    assert_eq!(status.last_known_location, Some(there));
    assert_eq!(h.stage("d3").await, Some(DeliveryStage::Created), "a position moves no stage");
    let stages: Vec<_> = h.store.tracking("d3").await.unwrap().into_iter().map(|e| e.stage).collect();
    assert_eq!(stages, [DeliveryStage::Created], "nor adds a tracking event");
    assert!(h.subscription().dead_letters(10).await.unwrap().is_empty());
    h.stop().await;
}
