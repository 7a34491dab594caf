//! Flights for real (simulated): the HTTP API, the flight clock publishing `drone-events` to an
//! embedded stream, and a subscriber reading them, all on a manual clock. Two flight clocks on
//! two stores over one database stand for two scheduler processes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::events::{DroneEvent, EventEnvelope};
use dronescheduler::flight::{FlightPath, location};
use dronescheduler::{DroneStore, FleetConfig, FlightClock};
use platform::bus::stream::{EventStream, StartAt, Subscription};
use platform::bus::{BusError, OutgoingMessage, Published, QueueOptions};
use platform::clock::{Clock, ManualClock};
use platform::config::CommonArgs;
use platform::geo::{Point, distance_miles};
use serde_json::{Value, json};

/// The real stream, counting every publish by message id, and able to play dead.
struct CountingStream {
    inner: Arc<dyn EventStream>,
    published: Mutex<Vec<String>>,
    /// The size of each `publish_all`.
    batches: Mutex<Vec<usize>>,
    down: AtomicBool,
}

impl CountingStream {
    /// How many times each message id was handed to the stream.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in self.published.lock().unwrap().iter() {
            *counts.entry(id.clone()).or_default() += 1;
        }
        counts
    }

    fn check(&self) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) { Err(BusError::Unavailable("down for the test".into())) } else { Ok(()) }
    }
}

#[async_trait]
impl EventStream for CountingStream {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError> {
        self.check()?;
        self.published.lock().unwrap().push(event.id.clone());
        self.inner.publish(event).await
    }

    async fn publish_all(&self, events: Vec<OutgoingMessage>) -> Result<Vec<Published>, BusError> {
        self.check()?;
        self.batches.lock().unwrap().push(events.len());
        self.published.lock().unwrap().extend(events.iter().map(|e| e.id.clone()));
        self.inner.publish_all(events).await
    }

    async fn subscribe(
        &self,
        group: &str,
        start: StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        self.inner.subscribe(group, start, options).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.check()?;
        self.inner.ping().await
    }
}

struct World {
    clock: ManualClock,
    router: Router,
    stores: Vec<Arc<dyn DroneStore>>,
    stream: Arc<CountingStream>,
    /// One per store: two scheduler processes.
    clocks: Vec<FlightClock>,
    subscription: Arc<dyn Subscription>,
    _dir: tempfile::TempDir,
}

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

const DOWNTOWN: (f64, f64) = (47.6062, -122.3321);
const FREMONT: (f64, f64) = (47.6505, -122.3493);

async fn world(fleet: FleetConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let url = format!("sqlite://{}", dir.path().join("drones.db").display());
    let mut stores = Vec::new();
    for _ in 0..2 {
        stores.push(dronescheduler::open_store(&url, &fleet).await.unwrap());
    }
    let bus = format!("sqlite://{}", dir.path().join("bus.db").display());
    let inner = dronescheduler::open_events(&bus).await.unwrap();
    let subscription = inner.subscribe("test", StartAt::Beginning, QueueOptions::default()).await.unwrap();
    let stream = Arc::new(CountingStream {
        inner,
        published: Mutex::new(Vec::new()),
        batches: Mutex::new(Vec::new()),
        down: AtomicBool::new(false),
    });
    let shared: Arc<dyn EventStream> = stream.clone();
    let clocks = stores
        .iter()
        .map(|store| {
            FlightClock::new(store.clone(), shared.clone(), Arc::new(clock.clone()), StdDuration::from_millis(5))
        })
        .collect();
    let router = dronescheduler::router_with_stream(
        stores[0].clone(),
        shared,
        &fleet,
        Arc::new(clock.clone()),
        &CommonArgs::default(),
    );
    World { clock, router, stores, stream, clocks, subscription, _dir: dir }
}

fn fleet(size: u32) -> FleetConfig {
    FleetConfig { size, ..FleetConfig::default() }
}

fn body(delivery_id: &str, pickup: (f64, f64), dropoff: (f64, f64)) -> Value {
    json!({
        "deliveryId": delivery_id,
        "ownerId": "contoso",
        "pickup": { "latitude": pickup.0, "longitude": pickup.1, "altitude": 0 },
        "dropoff": { "latitude": dropoff.0, "longitude": dropoff.1, "altitude": 0 },
        "packageDetail": { "id": "p", "size": "small", "weight": 1.0 },
        "expedited": false
    })
}

impl World {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, body, _) = platform::testing::call(&self.router, method, uri, body).await;
        (status, body)
    }

    /// Assigns a drone and returns the flight it flies.
    async fn assign(&self, id: &str) -> FlightPath {
        let (status, answer) =
            self.call(Method::PUT, &format!("/api/dronedeliveries/{id}"), Some(body(id, DOWNTOWN, FREMONT))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        self.flight(answer["droneId"].as_str().unwrap()).await
    }

    async fn flight(&self, drone_id: &str) -> FlightPath {
        self.stores[0].drone(drone_id).await.unwrap().unwrap().flight.expect("a recorded flight")
    }

    async fn drone(&self, drone_id: &str) -> Value {
        let (status, drone) = self.call(Method::GET, &format!("/api/drones/{drone_id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{drone}");
        drone
    }

    /// Both flight clocks at once, a few times over, as two processes ticking side by side.
    async fn tick(&self) {
        for _ in 0..3 {
            let (a, b) = tokio::join!(self.clocks[0].publish_due(), self.clocks[1].publish_due());
            a.unwrap();
            b.unwrap();
        }
    }

    /// Every event the subscriber has not seen yet, in order (acked).
    async fn received(&self) -> Vec<EventEnvelope<DroneEvent>> {
        let mut events = Vec::new();
        loop {
            let batch = self.subscription.receive(100, StdDuration::from_millis(20)).await.unwrap();
            if batch.is_empty() {
                return events;
            }
            for message in batch {
                let event: EventEnvelope<DroneEvent> = serde_json::from_slice(&message.payload).unwrap();
                assert_eq!(event.message_id, message.id);
                events.push(event);
                message.ack().await.unwrap();
            }
        }
    }
}

fn ids(events: &[EventEnvelope<DroneEvent>]) -> Vec<&str> {
    events.iter().map(|e| e.message_id.as_str()).collect()
}

/// The position an event carries.
fn position(event: &EventEnvelope<DroneEvent>) -> (contracts::Location, DateTime<Utc>) {
    match &event.event {
        DroneEvent::HeadedToPickup(p)
        | DroneEvent::HeadedToDropoff(p)
        | DroneEvent::DroneArrived(p)
        | DroneEvent::DroneReleased(p)
        | DroneEvent::DronePosition(p) => (p.location, p.at),
        DroneEvent::DroneAssigned(_) | DroneEvent::FlightReplanned(_) => panic!("no position in {event:?}"),
    }
}

fn point(drone: &Value) -> Point {
    let l = &drone["location"];
    Point { latitude: l["latitude"].as_f64().unwrap(), longitude: l["longitude"].as_f64().unwrap(), altitude: 0.0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_flight_is_announced_as_it_happens_each_event_once_with_two_clocks() {
    let w = world(fleet(4)).await;
    let flight = w.assign("d1").await;

    w.tick().await;
    let events = w.received().await;
    assert_eq!(ids(&events), ["d1:DroneAssigned", "d1:HeadedToPickup"]);
    assert_eq!(events[0].event, DroneEvent::DroneAssigned(flight.contract()));
    assert_eq!(events[0].occurred_at, flight.departed_at);
    assert_eq!(position(&events[1]), (location(flight.depot), flight.departed_at));
    assert!(events.iter().all(|e| e.traceparent.is_none() && e.delivery_id == "d1"));
    // Nothing more until the pickup.
    w.clock.set(flight.pickup_at - Duration::milliseconds(1));
    w.tick().await;
    assert!(w.received().await.is_empty());

    w.clock.set(flight.pickup_at);
    w.tick().await;
    let events = w.received().await;
    assert_eq!(ids(&events), ["d1:HeadedToDropoff"]);
    assert_eq!(position(&events[0]), (location(flight.pickup), flight.pickup_at));
    assert_eq!(events[0].occurred_at, flight.pickup_at);

    w.clock.set(flight.dropoff_at);
    w.tick().await;
    let events = w.received().await;
    assert_eq!(ids(&events), ["d1:DroneArrived", "d1:DroneReleased"]);
    assert!(events.iter().all(|e| position(e) == (location(flight.dropoff), flight.dropoff_at)));

    w.clock.set(flight.back_at + Duration::hours(1));
    w.tick().await;
    assert!(w.received().await.is_empty());
    // Each handed to the stream exactly once, although two clocks ticked every time.
    let counts = w.stream.counts();
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // Events due together went out together: one append each at departure, pickup, drop-off.
    assert_eq!(*w.stream.batches.lock().unwrap(), [2, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_before_pickup_is_announced_and_the_drone_comes_home_early() {
    let w = world(fleet(1)).await;
    let flight = w.assign("d1").await;
    w.tick().await;
    assert_eq!(w.received().await.len(), 2);

    let released_at =
        flight.departed_at + Duration::milliseconds((flight.pickup_at - flight.departed_at).num_milliseconds() / 2);
    w.clock.set(released_at);
    assert_eq!(w.call(Method::DELETE, "/api/dronedeliveries/d1", None).await.0, StatusCode::NO_CONTENT);
    let turned = flight.released_at(released_at).unwrap();
    let drone = w.drone(&flight.drone_id).await;
    assert_eq!(drone["status"], "returning");
    assert_eq!(drone["currentDeliveryId"], "d1");
    let busy_until: DateTime<Utc> = serde_json::from_value(drone["busyUntil"].clone()).unwrap();
    assert_eq!(busy_until, turned.home_at());
    assert!(busy_until < flight.back_at, "home earlier than planned");

    w.tick().await;
    let events = w.received().await;
    assert_eq!(ids(&events), ["d1:DroneReleased"]);
    let (where_, when) = position(&events[0]);
    let turned_at = Point::new(where_.latitude, where_.longitude);
    // JSON numbers read back within a rounding of what was written.
    assert!(distance_miles(turned_at, flight.position_at(released_at)) < 1e-9, "{where_:?}");
    assert_eq!(when, released_at);
    assert!(distance_miles(flight.depot, turned_at) > 0.1, "released on the way");

    // Busy until it is home, then free for the next delivery.
    w.clock.set(busy_until - Duration::milliseconds(1));
    let (status, _) = w.call(Method::PUT, "/api/dronedeliveries/d2", Some(body("d2", DOWNTOWN, FREMONT))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    w.clock.set(busy_until);
    assert_eq!(w.drone(&flight.drone_id).await["status"], "idle");
    let next = w.assign("d2").await;
    assert_eq!(next.drone_id, flight.drone_id);
    // The cancelled flight never reaches its pickup or drop-off, however long we wait.
    w.clock.set(flight.back_at + Duration::hours(1));
    w.tick().await;
    let later = w.received().await;
    assert!(later.iter().all(|e| e.delivery_id == "d2"), "{:?}", ids(&later));
    assert!(
        w.stream.counts().keys().all(|id| !id.starts_with("d1:HeadedToDropoff") && !id.starts_with("d1:DroneArrived"))
    );
    assert!(w.stream.counts().values().all(|n| *n == 1));
}

#[tokio::test]
async fn the_fleet_view_follows_the_drone_along_its_path() {
    let w = world(fleet(1)).await;
    let flight = w.assign("d1").await;
    let drone = w.drone(&flight.drone_id).await;
    assert_eq!((drone["status"].as_str(), point(&drone)), (Some("flying-to-pickup"), flight.depot));

    // Sampled along the whole flight: the status follows the phases, the drone closes in on each
    // goal, and passes through the waypoints.
    let span = (flight.back_at - flight.departed_at).num_milliseconds();
    let mut previous: Option<(String, f64)> = None;
    let mut seen = Vec::new();
    for i in 0..=40 {
        w.clock.set(flight.departed_at + Duration::milliseconds(span * i / 40));
        let drone = w.drone(&flight.drone_id).await;
        let status = drone["status"].as_str().unwrap().to_owned();
        let goal = match status.as_str() {
            "flying-to-pickup" => flight.pickup,
            "flying-to-dropoff" => flight.dropoff,
            "returning" | "idle" => flight.depot,
            other => panic!("unexpected status {other}"),
        };
        let remaining = distance_miles(point(&drone), goal);
        if let Some((was, before)) = &previous
            && *was == status
        {
            assert!(remaining <= before + 1e-9, "{status}: {before} -> {remaining}");
        }
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        previous = Some((status, remaining));
    }
    assert_eq!(seen, ["flying-to-pickup", "flying-to-dropoff", "returning", "idle"]);
    for (at, place, status) in [
        (flight.pickup_at, flight.pickup, "flying-to-dropoff"),
        (flight.dropoff_at, flight.dropoff, "returning"),
        (flight.back_at, flight.depot, "idle"),
    ] {
        w.clock.set(at);
        let drone = w.drone(&flight.drone_id).await;
        assert_eq!((drone["status"].as_str(), point(&drone)), (Some(status), place));
    }
    let drone = w.drone(&flight.drone_id).await;
    assert!(drone.get("currentDeliveryId").is_none() && drone.get("busyUntil").is_none(), "{drone}");
    // The list shows the same.
    w.clock.set(flight.pickup_at);
    let (_, fleet) = w.call(Method::GET, "/api/drones", None).await;
    assert_eq!(fleet[0]["status"], "flying-to-dropoff");
    assert_eq!(point(&fleet[0]), flight.pickup);
}

#[tokio::test]
async fn a_crashed_claimer_is_taken_over_and_its_repeats_are_dropped() {
    // In real time, so the pickup is minutes away when the lease ends.
    let w = world(FleetConfig { time_scale: 1.0, ..fleet(1) }).await;
    let flight = w.assign("d1").await;
    // A process claims the flight, publishes its first event and dies before recording it.
    let lease = Duration::seconds(30);
    let claimed = w.stores[1].claim_due_flights("crashed", w.clock.now(), lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let first = &dronescheduler::events::flight_events("d1", &flight)[0];
    let payload = serde_json::to_vec(&first.envelope).unwrap();
    w.stream.publish(OutgoingMessage { id: first.message_id().to_owned(), payload: payload.into() }).await.unwrap();
    // Its claim holds the flight for the others...
    w.tick().await;
    assert_eq!(ids(&w.received().await), ["d1:DroneAssigned"]);
    // ...until its lease ends: then everything due goes out, the repeat dropped by the stream.
    w.clock.set(flight.departed_at + lease);
    assert!(flight.departed_at + lease < flight.pickup_at);
    w.tick().await;
    // The positions due meanwhile were passed over but the latest.
    let latest = format!("d1:DronePosition:{}", (flight.departed_at + lease).timestamp_millis());
    assert_eq!(ids(&w.received().await), ["d1:HeadedToPickup", latest.as_str()]);
    assert_eq!(w.stream.counts()["d1:DroneAssigned"], 2, "published again after the takeover");
}

#[tokio::test]
async fn a_flying_drone_reports_where_its_plan_has_it_every_interval() {
    // In real time, positions every second.
    let w = world(FleetConfig { time_scale: 1.0, position_every_secs: 1, ..fleet(1) }).await;
    let flight = w.assign("d1").await;
    assert_eq!(flight.position_every_ms, 1_000);
    w.tick().await;
    assert_eq!(ids(&w.received().await), ["d1:DroneAssigned", "d1:HeadedToPickup"]);
    // Each second, one position, where the flight plan puts the drone then; nothing early.
    for s in 1..=3 {
        let at = flight.departed_at + Duration::seconds(s);
        w.clock.set(at - Duration::milliseconds(1));
        w.tick().await;
        assert!(w.received().await.is_empty(), "+{s} s came early");
        w.clock.set(at);
        w.tick().await;
        let events = w.received().await;
        assert_eq!(ids(&events), [format!("d1:DronePosition:{}", at.timestamp_millis())]);
        let (reported, reported_at) = position(&events[0]);
        let reported = Point::new(reported.latitude, reported.longitude);
        assert!(distance_miles(reported, flight.position_at(at)) < 1e-9, "{reported:?} at +{s} s");
        assert!(distance_miles(reported, flight.depot) > 0.001, "on the way, not at the depot");
        assert_eq!((reported_at, events[0].occurred_at), (at, at));
    }
    // A pause of a minute: the clock sends the latest position only, not sixty stale ones.
    let later = flight.departed_at + Duration::seconds(63) + Duration::milliseconds(500);
    w.clock.set(later);
    w.tick().await;
    let events = w.received().await;
    assert_eq!(
        ids(&events),
        [format!("d1:DronePosition:{}", (later - Duration::milliseconds(500)).timestamp_millis())]
    );
    // Each went out once, though two clocks tick side by side.
    assert!(w.stream.counts().values().all(|n| *n == 1), "{:?}", w.stream.counts());
    // The drone keeps reporting after the pickup, up to the drop-off, and stops there.
    let before_dropoff = flight.dropoff_at - Duration::milliseconds(1);
    let last = flight.position_times().take_while(|t| *t <= before_dropoff).last().unwrap();
    assert!(last > flight.pickup_at);
    w.clock.set(before_dropoff);
    w.tick().await;
    let last = format!("d1:DronePosition:{}", last.timestamp_millis());
    assert_eq!(ids(&w.received().await), ["d1:HeadedToDropoff", last.as_str()]);
    w.clock.set(flight.back_at + Duration::minutes(5));
    w.tick().await;
    assert_eq!(ids(&w.received().await), ["d1:DroneArrived", "d1:DroneReleased"]);
}

#[tokio::test]
async fn no_positions_when_they_are_turned_off() {
    let w = world(FleetConfig { time_scale: 1.0, position_every_secs: 0, ..fleet(1) }).await;
    let flight = w.assign("d1").await;
    w.clock.set(flight.back_at);
    w.tick().await;
    assert_eq!(
        ids(&w.received().await),
        ["d1:DroneAssigned", "d1:HeadedToPickup", "d1:HeadedToDropoff", "d1:DroneArrived", "d1:DroneReleased"]
    );
}

#[tokio::test]
async fn a_backlog_drains_in_bounded_rounds_and_a_failing_stream_is_retried() {
    let w = world(fleet(7)).await;
    for i in 0..7 {
        let (status, answer) = w
            .call(Method::PUT, &format!("/api/dronedeliveries/d{i}"), Some(body(&format!("d{i}"), DOWNTOWN, FREMONT)))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let clock =
        FlightClock::new(w.stores[0].clone(), w.stream.clone(), Arc::new(w.clock.clone()), StdDuration::from_millis(5))
            .with_batch(3);
    // The stream is down: nothing is marked, and readiness says so.
    w.stream.down.store(true, Ordering::SeqCst);
    assert_eq!(w.call(Method::GET, "/healthz/ready", None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let round = clock.publish_due().await.unwrap();
    assert_eq!((round.flights, round.published, round.failed), (3, 0, 3));
    w.stream.down.store(false, Ordering::SeqCst);
    assert_eq!(w.call(Method::GET, "/healthz/ready", None).await.0, StatusCode::OK);
    // Three flights a round, until a round is not full.
    let mut rounds = Vec::new();
    loop {
        let round = clock.publish_due().await.unwrap();
        rounds.push((round.flights, round.published));
        if !round.full {
            break;
        }
    }
    assert_eq!(rounds, [(3, 6), (3, 6), (1, 2)]);
    assert_eq!(w.received().await.len(), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flight_clock_runs_by_itself_until_shut_down() {
    let w = world(fleet(1)).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(dronescheduler::flight_clock(
        w.stores[0].clone(),
        w.stream.clone(),
        Arc::new(w.clock.clone()),
        StdDuration::from_millis(5),
        shutdown.clone(),
    ));
    let flight = w.assign("d1").await;
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while seen.len() < 2 && tokio::time::Instant::now() < until {
        seen.extend(w.received().await.into_iter().map(|e| e.message_id));
    }
    assert_eq!(seen, ["d1:DroneAssigned", "d1:HeadedToPickup"]);
    w.clock.set(flight.back_at);
    while seen.len() < 5 && tokio::time::Instant::now() < until {
        seen.extend(w.received().await.into_iter().map(|e| e.message_id));
    }
    assert_eq!(seen[2..], ["d1:HeadedToDropoff", "d1:DroneArrived", "d1:DroneReleased"]);
    shutdown.cancel();
    tokio::time::timeout(StdDuration::from_secs(5), running).await.expect("stops on shutdown").unwrap();
}
