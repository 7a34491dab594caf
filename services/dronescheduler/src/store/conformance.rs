//! The behaviour suite every [`DroneStore`] backend must pass.
//!
//! A backend's test file implements [`DroneStoreHarness`] and expands
//! [`dronescheduler_store_conformance_tests!`](crate::dronescheduler_store_conformance_tests),
//! which turns each function here into its own `#[tokio::test]`. Time is passed in, so no case
//! sleeps. The drone a store picks is checked against [`domain::choose_drone`] over the stored
//! fleet: backends must choose exactly as the domain does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::drone::DroneAssignment;
use platform::geo::Point;
use platform::query::Month;

use super::{Assigned, ClaimedFlight, DroneStore, ExpeditedWaiter, FlightProgress, Rerouted};
use crate::domain::{self, AssignmentRequest, Depot, DroneRecord, FleetConfig};
use crate::flight::FlightPath;

/// Opens the backend under test.
#[async_trait]
pub trait DroneStoreHarness: Send + Sync {
    /// `count` stores on one fresh, empty database, each with its own connections: what
    /// `count` scheduler processes sharing the database would see.
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn DroneStore>>;

    /// A fresh, empty store.
    async fn open(&self) -> Arc<dyn DroneStore> {
        self.open_shared(1).await.pop().expect("the harness opened no store")
    }
}

/// Expands to one test per behaviour for the harness built by `$make`.
///
/// `$make` is evaluated inside each test, so it may `.await`, and it may `return` to skip the
/// test (e.g. through `platform::require_server!` when the backend's server is not configured).
#[macro_export]
macro_rules! dronescheduler_store_conformance_tests {
    ($make:expr) => {
        $crate::dronescheduler_store_conformance_tests!(@cases $make;
            seeding_creates_the_fleet_once,
            seeding_from_two_processes_at_once_builds_one_fleet,
            assignment_follows_the_domains_choice,
            the_first_free_drone_is_chosen_in_byte_order_of_ids,
            assign_is_idempotent_per_delivery,
            concurrent_assignments_never_share_a_drone,
            concurrent_assignments_of_one_delivery_give_one_drone,
            too_heavy_and_none_free_are_told_apart,
            release_frees_the_drone,
            fleet_counts_follow_flights,
            release_before_assignment_fences_the_delivery,
            utilization_sums_flown_assignments_per_owner_and_month,
            utilization_counts_only_the_asked_accounts_flights,
            assignment_records_the_flight,
            a_release_turns_the_drone_back_only_before_the_pickup,
            due_flights_are_claimed_by_one_claimer_at_a_time,
            claims_are_bounded_earliest_first_and_never_overlap,
            a_release_is_never_placed_before_an_announced_pickup,
            a_reroute_replans_the_flight_from_where_the_drone_is,
            a_waiting_expedited_request_gets_the_freed_drone_before_a_standard_one,
            standard_requests_go_on_while_idle_drones_outnumber_expedited_waiters,
            an_expedited_wait_ends_when_released_or_when_it_lapses,
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

fn now() -> DateTime<Utc> {
    at(2026, 3, 15, 12, 0, 0, 0)
}

const MARCH: Month = Month { year: 2026, month: 3 };

fn fleet(size: u32) -> FleetConfig {
    FleetConfig { size, ..FleetConfig::default() }
}

async fn seeded(h: &dyn DroneStoreHarness, config: &FleetConfig) -> Arc<dyn DroneStore> {
    let store = h.open().await;
    store.seed(&config.depots, &domain::initial_fleet(config)).await.unwrap();
    store
}

fn request(delivery_id: &str, owner_id: &str, weight: f64, pickup: Point) -> AssignmentRequest {
    AssignmentRequest {
        delivery_id: delivery_id.to_owned(),
        owner_id: owner_id.to_owned(),
        account_id: None,
        pickup,
        dropoff: Point::new(47.62, -122.35),
        weight,
        expedited: false,
        traceparent: None,
    }
}

fn downtown() -> Point {
    Point::new(47.6062, -122.3321)
}

/// Drones at one hub flying in real time (time scale 1), so a flight lasts many minutes.
fn slow_fleet(size: u32) -> FleetConfig {
    FleetConfig {
        size,
        time_scale: 1.0,
        depots: vec![Depot::new("hub", "Hub", 47.5, -122.3)],
        ..FleetConfig::default()
    }
}

/// Assigns `r` at `at` and returns the assignment with the flight the domain plans for it.
async fn planned(
    store: &dyn DroneStore,
    r: &AssignmentRequest,
    at: DateTime<Utc>,
    config: &FleetConfig,
) -> (DroneAssignment, FlightPath) {
    let plan = domain::choose_drone(&store.drones().await.unwrap(), r, at, config).expect("a free drone");
    let assignment = drone_of(store.assign(r, at, config).await.unwrap());
    assert_eq!(assignment.drone_id, plan.drone_id, "the store chose as the domain does");
    (assignment, plan.path)
}

/// A flight clock's lease in these cases.
const LEASE: Duration = Duration::seconds(30);

async fn claim(store: &dyn DroneStore, claimer: &str, at: DateTime<Utc>) -> Vec<ClaimedFlight> {
    store.claim_due_flights(claimer, at, LEASE, 100).await.unwrap()
}

async fn finish(
    store: &dyn DroneStore,
    claimer: &str,
    delivery_id: &str,
    events_published: usize,
    next_event_at: Option<DateTime<Utc>>,
    plan_version: i64,
) {
    let progress =
        FlightProgress { delivery_id: delivery_id.to_owned(), events_published, next_event_at, plan_version };
    store.finish_flights(claimer, &[progress]).await.unwrap();
}

#[track_caller]
fn drone_of(outcome: Assigned) -> DroneAssignment {
    match outcome {
        Assigned::Drone(a) => a,
        other => panic!("expected a drone, got {other:?}"),
    }
}

/// Drone id → the delivery of its latest flight, for every drone that has flown (no flight ends
/// in the cases that use it, so these are the busy drones).
async fn flying(store: &dyn DroneStore) -> BTreeMap<String, String> {
    let drones = store.drones().await.unwrap();
    drones.into_iter().filter_map(|d| Some((d.id, d.current_delivery_id?))).collect()
}

pub async fn seeding_creates_the_fleet_once(h: &dyn DroneStoreHarness) {
    let store = h.open().await;
    assert!(store.drones().await.unwrap().is_empty());
    assert_eq!(store.drone("drone-0001").await.unwrap(), None);
    let config = fleet(8);
    let expected = domain::initial_fleet(&config);
    store.seed(&config.depots, &expected).await.unwrap();
    assert_eq!(store.drones().await.unwrap(), expected, "listed in id order, as seeded");
    // A second seed, even of another fleet, keeps the stored one.
    let other = FleetConfig {
        size: 3,
        depots: vec![Depot::new("elsewhere", "Elsewhere", 47.5, -122.3)],
        payload_tiers: vec![50.0],
        ..FleetConfig::default()
    };
    store.seed(&other.depots, &domain::initial_fleet(&other)).await.unwrap();
    store.seed(&config.depots, &expected).await.unwrap();
    assert_eq!(store.drones().await.unwrap(), expected);
    assert_eq!(store.drone("drone-0003").await.unwrap(), Some(expected[2].clone()));
    assert_eq!(store.drone("drone-0009").await.unwrap(), None);
    // None of the other fleet's 50 kg drones was added.
    let r = request("d1", "o", 40.0, Point::new(47.5, -122.3));
    assert_eq!(store.assign(&r, now(), &other).await.unwrap(), Assigned::TooHeavy(25.0));
}

pub async fn seeding_from_two_processes_at_once_builds_one_fleet(h: &dyn DroneStoreHarness) {
    let stores = h.open_shared(2).await;
    let (small, large) = (fleet(3), fleet(10));
    let (small_fleet, large_fleet) = (domain::initial_fleet(&small), domain::initial_fleet(&large));
    let (a, b) = tokio::join!(stores[0].seed(&small.depots, &small_fleet), stores[1].seed(&large.depots, &large_fleet));
    a.unwrap();
    b.unwrap();
    let stored = stores[0].drones().await.unwrap();
    assert!(stored == small_fleet || stored == large_fleet, "the fleets were mixed: {} drones", stored.len());
    assert_eq!(stores[1].drones().await.unwrap(), stored);
}

pub async fn assignment_follows_the_domains_choice(h: &dyn DroneStoreHarness) {
    let config = fleet(12);
    let store = seeded(h, &config).await;
    let near_bellevue = Point::new(47.61, -122.20);
    // Light, light, heavy, light: Bellevue's drones (5, 10 and 25 kg) go one by one, then the
    // next nearest depot's.
    let weights = [1.0, 1.0, 20.0, 1.0, 4.5];
    let mut chosen = Vec::new();
    for (i, weight) in weights.into_iter().enumerate() {
        let r = request(&format!("d{i}"), "contoso", weight, near_bellevue);
        let plan = domain::choose_drone(&store.drones().await.unwrap(), &r, now(), &config).expect("a free drone");
        let a = drone_of(store.assign(&r, now(), &config).await.unwrap());
        assert_eq!(
            a,
            DroneAssignment {
                delivery_id: r.delivery_id.clone(),
                drone_id: plan.drone_id.clone(),
                owner_id: "contoso".into(),
                depot_id: plan.depot_id.clone(),
                assigned_at: now(),
                traveled_miles: plan.miles,
                assigned_hours: plan.hours,
                busy_until: plan.busy_until,
                released: false,
            }
        );
        let drone = store.drone(&a.drone_id).await.unwrap().expect("the drone exists");
        assert_eq!(drone.busy_until, plan.busy_until);
        assert_eq!(drone.current_delivery_id.as_deref(), Some(r.delivery_id.as_str()));
        chosen.push((a.drone_id, a.depot_id));
    }
    let chosen: Vec<(&str, &str)> = chosen.iter().map(|(d, p)| (d.as_str(), p.as_str())).collect();
    assert_eq!(chosen[..3], [("drone-0004", "bellevue"), ("drone-0008", "bellevue"), ("drone-0012", "bellevue")]);
    assert_ne!(chosen[3].1, "bellevue");
}

pub async fn the_first_free_drone_is_chosen_in_byte_order_of_ids(h: &dyn DroneStoreHarness) {
    // Ids whose byte order differs from a dictionary's: upper case, then '_', then lower case.
    let depot = Depot::new("hub", "Hub", 47.6, -122.3);
    let ids = ["drone-b", "drone-a", "drone-_", "drone-A", "drone-10", "drone-9"];
    let records: Vec<DroneRecord> = ids
        .iter()
        .map(|id| DroneRecord {
            id: (*id).to_owned(),
            depot_id: depot.id.clone(),
            location: depot.location,
            max_payload: 10.0,
            speed_mph: 40.0,
            busy_until: DateTime::<Utc>::UNIX_EPOCH,
            current_delivery_id: None,
            flight: None,
        })
        .collect();
    let config = FleetConfig { size: ids.len() as u32, depots: vec![depot.clone()], ..FleetConfig::default() };
    let store = h.open().await;
    store.seed(&config.depots, &records).await.unwrap();
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    let listed: Vec<String> = store.drones().await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(listed, sorted);
    let mut assigned = Vec::new();
    for i in 0..ids.len() {
        let r = request(&format!("d{i}"), "o", 1.0, downtown());
        assigned.push(drone_of(store.assign(&r, now(), &config).await.unwrap()).drone_id);
    }
    assert_eq!(assigned, sorted);
}

pub async fn assign_is_idempotent_per_delivery(h: &dyn DroneStoreHarness) {
    let config = fleet(8);
    let store = seeded(h, &config).await;
    let r = request("d1", "contoso", 2.0, downtown());
    let first = store.assign(&r, now(), &config).await.unwrap();
    assert!(matches!(first, Assigned::Drone(_)), "{first:?}");
    // A retry, even later and with other details, gets the same answer and no second drone.
    let changed = AssignmentRequest { pickup: Point::new(47.61, -122.20), weight: 20.0, ..r.clone() };
    assert_eq!(store.assign(&changed, now() + Duration::hours(3), &config).await.unwrap(), first);
    assert_eq!(store.assign(&r, now(), &config).await.unwrap(), first);
    assert_eq!(flying(store.as_ref()).await.len(), 1);
}

pub async fn concurrent_assignments_never_share_a_drone(h: &dyn DroneStoreHarness) {
    // Two stores on one database, as two scheduler processes; more deliveries than drones.
    let config = fleet(16);
    let stores = h.open_shared(2).await;
    stores[0].seed(&config.depots, &domain::initial_fleet(&config)).await.unwrap();
    let deliveries = 24;
    let assigns = (0..deliveries).map(|i| {
        let store = stores[i % stores.len()].clone();
        let config = config.clone();
        let pickup = Point::new(47.58 + 0.005 * i as f64, -122.33);
        async move { store.assign(&request(&format!("d{i}"), "contoso", 1.0, pickup), now(), &config).await }
    });
    let outcomes: Vec<Assigned> =
        futures::future::join_all(assigns).await.into_iter().map(|o| o.expect("assign failed")).collect();
    let assigned: BTreeMap<String, String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Assigned::Drone(a) => Some((a.drone_id.clone(), a.delivery_id.clone())),
            _ => None,
        })
        .collect();
    let drones_given = outcomes.iter().filter(|o| matches!(o, Assigned::Drone(_))).count();
    assert_eq!(drones_given, 16, "every drone is used while deliveries wait: {outcomes:?}");
    assert_eq!(assigned.len(), drones_given, "a drone went to two deliveries: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Assigned::NoneFree).count(), deliveries - 16);
    assert_eq!(flying(stores[1].as_ref()).await, assigned, "the fleet disagrees with the answers");
}

pub async fn concurrent_assignments_of_one_delivery_give_one_drone(h: &dyn DroneStoreHarness) {
    let config = fleet(8);
    let stores = h.open_shared(2).await;
    stores[0].seed(&config.depots, &domain::initial_fleet(&config)).await.unwrap();
    let assigns = (0..10).map(|i| {
        let store = stores[i % stores.len()].clone();
        let config = config.clone();
        async move { store.assign(&request("same", "contoso", 1.0, downtown()), now(), &config).await }
    });
    let outcomes: Vec<Assigned> =
        futures::future::join_all(assigns).await.into_iter().map(|o| o.expect("assign failed")).collect();
    let first = drone_of(outcomes[0].clone());
    assert!(outcomes.iter().all(|o| *o == outcomes[0]), "answers differ: {outcomes:?}");
    assert_eq!(flying(stores[0].as_ref()).await, BTreeMap::from([(first.drone_id, "same".to_owned())]));
}

pub async fn too_heavy_and_none_free_are_told_apart(h: &dyn DroneStoreHarness) {
    let config = FleetConfig {
        size: 2,
        depots: vec![Depot::new("hub", "Hub", 47.6, -122.3)],
        payload_tiers: vec![5.0, 10.0],
        ..FleetConfig::default()
    };
    // No fleet at all: nothing can ever carry anything.
    let empty = h.open().await;
    assert_eq!(
        empty.assign(&request("d0", "o", 1.0, downtown()), now(), &config).await.unwrap(),
        Assigned::TooHeavy(0.0)
    );

    let store = seeded(h, &config).await;
    let assign = |id: &str, weight: f64, at: DateTime<Utc>| {
        let (store, config, r) = (store.clone(), config.clone(), request(id, "o", weight, downtown()));
        async move { store.assign(&r, at, &config).await.unwrap() }
    };
    assert_eq!(assign("heavy", 30.0, now()).await, Assigned::TooHeavy(10.0));
    let big = drone_of(assign("d1", 8.0, now()).await);
    assert_eq!(big.drone_id, "drone-0002");
    // drone-0001 is free but carries only 5 kg.
    assert_eq!(assign("d2", 8.0, now()).await, Assigned::NoneFree);
    assert_eq!(drone_of(assign("d3", 3.0, now()).await).drone_id, "drone-0001");
    assert_eq!(assign("d4", 1.0, now()).await, Assigned::NoneFree);
    // A refusal records nothing: the same delivery gets the drone once its flight has ended
    // (free at exactly busy_until), and not a millisecond earlier.
    assert_eq!(assign("d2", 8.0, big.busy_until - Duration::milliseconds(1)).await, Assigned::NoneFree);
    let later = drone_of(assign("d2", 8.0, big.busy_until).await);
    assert_eq!((later.drone_id.as_str(), later.assigned_at), ("drone-0002", big.busy_until));
    assert_eq!(assign("heavy", 30.0, big.busy_until).await, Assigned::TooHeavy(10.0));
}

pub async fn release_frees_the_drone(h: &dyn DroneStoreHarness) {
    // One drone, flying in real time, so its flights last long past the release.
    let config = slow_fleet(1);
    let store = seeded(h, &config).await;
    let (d1, planned) = planned(store.as_ref(), &request("d1", "contoso", 1.0, downtown()), now(), &config).await;
    assert!(d1.busy_until > now() + Duration::minutes(10), "{d1:?}");
    assert_eq!(
        store.assign(&request("d2", "contoso", 1.0, downtown()), now(), &config).await.unwrap(),
        Assigned::NoneFree
    );

    // Released a minute out, before the pickup: the drone turns back and is home a minute later.
    let released_at = now() + Duration::minutes(1);
    store.release("d1", released_at).await.unwrap();
    let turned = planned.released_at(released_at).expect("released before the pickup");
    let home = turned.home_at();
    assert!(home > released_at && home <= released_at + Duration::minutes(1), "{home}");
    let drone = store.drone("drone-0001").await.unwrap().expect("the drone exists");
    assert_eq!((drone.busy_until, drone.current_delivery_id.as_deref()), (home, Some("d1")));
    assert_eq!(drone.flight, Some(turned.clone()));
    // The cancelled delivery never gets a drone again; the next one gets the drone once it is home.
    assert_eq!(
        store.assign(&request("d1", "contoso", 1.0, downtown()), released_at, &config).await.unwrap(),
        Assigned::Released
    );
    let d2 = request("d2", "contoso", 1.0, downtown());
    assert_eq!(store.assign(&d2, home - Duration::milliseconds(1), &config).await.unwrap(), Assigned::NoneFree);
    let d2 = drone_of(store.assign(&d2, home, &config).await.unwrap());
    assert_eq!(d2.drone_id, "drone-0001");
    // Releasing again is harmless and leaves the drone to its new delivery.
    store.release("d1", home + Duration::minutes(1)).await.unwrap();
    let drone = store.drone("drone-0001").await.unwrap().expect("the drone exists");
    assert_eq!((drone.busy_until, drone.current_delivery_id.as_deref()), (d2.busy_until, Some("d2")));
    // Released after its flight ended: nothing changes, and the delivery stays fenced.
    let late = d2.busy_until + Duration::hours(1);
    store.release("d2", late).await.unwrap();
    let drone = store.drone("drone-0001").await.unwrap().expect("the drone exists");
    assert_eq!(drone.busy_until, d2.busy_until);
    assert_eq!(
        store.assign(&request("d2", "contoso", 1.0, downtown()), late, &config).await.unwrap(),
        Assigned::Released
    );
    // Released flights count as flown: d1 out to where it turned and back, d2 all of it.
    let (miles, hours) = store.utilization("contoso", None, MARCH).await.unwrap().expect("flights");
    assert!((miles - (turned.miles() + d2.traveled_miles)).abs() < 1e-9, "{miles}");
    assert!((hours - (turned.hours() + d2.assigned_hours)).abs() < 1e-9, "{hours}");
    assert!(turned.miles() < d1.traveled_miles / 4.0, "only a minute out and back: {}", turned.miles());
}

pub async fn fleet_counts_follow_flights(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(2);
    let store = seeded(h, &config).await;
    assert_eq!(store.fleet_counts(now()).await.unwrap(), (2, 0));
    let (d1, _) = planned(store.as_ref(), &request("d1", "contoso", 1.0, downtown()), now(), &config).await;
    assert_eq!(store.fleet_counts(now()).await.unwrap(), (2, 1));
    assert_eq!(store.fleet_counts(d1.busy_until - Duration::milliseconds(1)).await.unwrap(), (2, 1));
    assert_eq!(store.fleet_counts(d1.busy_until).await.unwrap(), (2, 0), "free once its flight ends");
}

pub async fn release_before_assignment_fences_the_delivery(h: &dyn DroneStoreHarness) {
    let config = fleet(4);
    let store = seeded(h, &config).await;
    store.release("early", now()).await.unwrap();
    store.release("early", now() + Duration::seconds(1)).await.unwrap();
    let r = request("early", "contoso", 1.0, downtown());
    assert_eq!(store.assign(&r, now() + Duration::seconds(2), &config).await.unwrap(), Assigned::Released);
    assert!(flying(store.as_ref()).await.is_empty(), "a fenced delivery took a drone");
    assert_eq!(store.utilization("contoso", None, MARCH).await.unwrap(), None);
    assert_eq!(store.utilization("", None, MARCH).await.unwrap(), None, "a fence is not a flight");
    // Other deliveries are not affected.
    assert!(matches!(
        store.assign(&request("other", "contoso", 1.0, downtown()), now(), &config).await.unwrap(),
        Assigned::Drone(_)
    ));
}

pub async fn utilization_sums_flown_assignments_per_owner_and_month(h: &dyn DroneStoreHarness) {
    let config = fleet(40);
    let store = seeded(h, &config).await;
    let flights = [
        ("feb-last-ms", "contoso", at(2026, 2, 28, 23, 59, 59, 999)),
        ("mar-first-ms", "contoso", at(2026, 3, 1, 0, 0, 0, 0)),
        ("mar-mid", "contoso", at(2026, 3, 15, 12, 0, 0, 0)),
        ("mar-cancelled", "contoso", at(2026, 3, 16, 12, 0, 0, 0)),
        ("mar-cancelled-late", "contoso", at(2026, 3, 17, 12, 0, 0, 0)),
        ("mar-last-ms", "contoso", at(2026, 3, 31, 23, 59, 59, 999)),
        ("apr-first-ms", "contoso", at(2026, 4, 1, 0, 0, 0, 0)),
        ("mar-other-owner", "fabrikam", at(2026, 3, 20, 0, 0, 0, 0)),
        ("mar-cancelled-only", "northwind", at(2026, 3, 20, 0, 0, 0, 0)),
    ];
    let mut flown = BTreeMap::new();
    let mut paths = BTreeMap::new();
    for (i, (id, owner, time)) in flights.into_iter().enumerate() {
        let pickup = Point::new(47.55 + 0.02 * i as f64, -122.30);
        let (a, path) = planned(store.as_ref(), &request(id, owner, 1.0, pickup), time, &config).await;
        flown.insert(id, (a.traveled_miles, a.assigned_hours));
        paths.insert(id, path);
    }
    // Cut short half-way to the pickup, and a quarter of the way: they count what they flew.
    for (id, share) in [("mar-cancelled", 2), ("mar-cancelled-only", 4)] {
        let path = &paths[id];
        let released_at = path.departed_at + (path.pickup_at - path.departed_at) / share;
        store.release(id, released_at).await.unwrap();
        let turned = path.released_at(released_at).expect("before the pickup");
        assert!(turned.miles() > 0.0 && turned.miles() < path.miles());
        flown.insert(id, (turned.miles(), turned.hours()));
    }
    // Released after the pickup: the flight went on as planned and counts whole.
    store.release("mar-cancelled-late", paths["mar-cancelled-late"].dropoff_at).await.unwrap();
    store.release("never-assigned", at(2026, 3, 21, 0, 0, 0, 0)).await.unwrap();

    let sum = |ids: &[&str]| ids.iter().fold((0.0, 0.0), |(m, h), id| (m + flown[id].0, h + flown[id].1));
    let check = |got: Option<(f64, f64)>, want: (f64, f64)| {
        let (miles, hours) = got.expect("some utilization");
        assert!((miles - want.0).abs() < 1e-9 && (hours - want.1).abs() < 1e-9, "{got:?} != {want:?}");
        assert!(miles > 0.0 && hours > 0.0);
    };
    check(
        store.utilization("contoso", None, MARCH).await.unwrap(),
        sum(&["mar-first-ms", "mar-mid", "mar-cancelled", "mar-cancelled-late", "mar-last-ms"]),
    );
    check(store.utilization("contoso", None, Month { year: 2026, month: 2 }).await.unwrap(), sum(&["feb-last-ms"]));
    check(store.utilization("contoso", None, Month { year: 2026, month: 4 }).await.unwrap(), sum(&["apr-first-ms"]));
    check(store.utilization("fabrikam", None, MARCH).await.unwrap(), sum(&["mar-other-owner"]));
    check(store.utilization("northwind", None, MARCH).await.unwrap(), sum(&["mar-cancelled-only"]));
    assert_eq!(store.utilization("contoso", None, Month { year: 2025, month: 3 }).await.unwrap(), None);
    assert_eq!(store.utilization("nobody", None, MARCH).await.unwrap(), None);
    assert_eq!(store.utilization("CONTOSO", None, MARCH).await.unwrap(), None, "owners are case-sensitive");
    assert_eq!(store.utilization("", None, MARCH).await.unwrap(), None, "a fence is not a flight");
    let distinct: BTreeSet<_> = flown.values().map(|(m, _)| m.to_bits()).collect();
    assert!(distinct.len() > 1, "the flights should differ to make the sums meaningful");
}

pub async fn assignment_records_the_flight(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(2);
    let stores = h.open_shared(2).await;
    stores[0].seed(&config.depots, &domain::initial_fleet(&config)).await.unwrap();
    let mut r = request("d1", "contoso", 1.0, Point { altitude: 12.5, ..downtown() });
    r.dropoff.altitude = 30.25;
    let (a, path) = planned(stores[0].as_ref(), &r, now(), &config).await;
    assert_eq!((path.pickup, path.dropoff, path.departed_at), (r.pickup, r.dropoff, now()));
    assert_eq!((a.busy_until, a.traveled_miles), (path.home_at(), path.miles()));
    // Read back exactly, by this process and another one.
    for store in &stores {
        let drone = store.drone(&a.drone_id).await.unwrap().expect("the drone exists");
        assert_eq!(drone.flight.as_ref(), Some(&path));
        let listed = store.drones().await.unwrap();
        assert_eq!(listed.iter().find(|d| d.id == a.drone_id).unwrap().flight.as_ref(), Some(&path));
        assert!(listed.iter().filter(|d| d.id != a.drone_id).all(|d| d.flight.is_none()), "only one flew");
    }
    // The drone's next flight replaces it.
    let (b, next) =
        planned(stores[1].as_ref(), &request("d2", "contoso", 1.0, downtown()), path.home_at(), &config).await;
    assert_eq!(b.drone_id, a.drone_id);
    assert_eq!(stores[0].drone(&a.drone_id).await.unwrap().unwrap().flight, Some(next));
}

pub async fn a_release_turns_the_drone_back_only_before_the_pickup(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(2);
    let store = seeded(h, &config).await;
    let (a1, p1) = planned(store.as_ref(), &request("d1", "contoso", 1.0, downtown()), now(), &config).await;
    let (a2, p2) = planned(store.as_ref(), &request("d2", "contoso", 1.0, downtown()), now(), &config).await;
    // d1 half-way to its pickup: back home early, and free from then on.
    let released_at = now() + (p1.pickup_at - now()) / 2;
    store.release("d1", released_at).await.unwrap();
    let turned = p1.released_at(released_at).unwrap();
    assert!(turned.home_at() < p1.back_at);
    let drone = store.drone(&a1.drone_id).await.unwrap().unwrap();
    assert_eq!((drone.busy_until, drone.flight.as_ref()), (turned.home_at(), Some(&turned)));
    let d3 = request("d3", "contoso", 1.0, downtown());
    assert_eq!(
        store.assign(&d3, turned.home_at() - Duration::milliseconds(1), &config).await.unwrap(),
        Assigned::NoneFree
    );
    assert_eq!(drone_of(store.assign(&d3, turned.home_at(), &config).await.unwrap()).drone_id, a1.drone_id);
    // d2 at its pickup: the flight goes on as planned (and the delivery is fenced all the same).
    store.release("d2", p2.pickup_at).await.unwrap();
    let drone = store.drone(&a2.drone_id).await.unwrap().unwrap();
    assert_eq!((drone.busy_until, drone.flight.as_ref()), (p2.back_at, Some(&p2)));
    assert_eq!(
        store.assign(&request("d2", "contoso", 1.0, downtown()), p2.pickup_at, &config).await.unwrap(),
        Assigned::Released
    );
    // A second release changes nothing.
    store.release("d1", released_at + Duration::seconds(1)).await.unwrap();
    let claimed = claim(store.as_ref(), "a", turned.home_at()).await;
    let d1 = claimed.iter().find(|c| c.delivery_id == "d1").expect("d1 has events due");
    assert_eq!(d1.flight, turned);
}

pub async fn due_flights_are_claimed_by_one_claimer_at_a_time(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(2);
    let stores = h.open_shared(2).await;
    stores[0].seed(&config.depots, &domain::initial_fleet(&config)).await.unwrap();
    let (a, p) = planned(stores[0].as_ref(), &request("d1", "contoso", 1.0, downtown()), now(), &config).await;
    assert!(claim(stores[0].as_ref(), "a", now() - Duration::milliseconds(1)).await.is_empty(), "not due yet");
    let first = claim(stores[0].as_ref(), "a", now()).await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].delivery_id.as_str(), first[0].events_published), ("d1", 0));
    assert_eq!((first[0].flight.clone(), a.drone_id.as_str()), (p.clone(), p.drone_id.as_str()));
    let version = first[0].plan_version;
    assert!(claim(stores[1].as_ref(), "b", now()).await.is_empty(), "held by a");
    // a claiming again (a retry after a failed round) takes its own claim back.
    assert_eq!(claim(stores[0].as_ref(), "a", now()).await.len(), 1);

    // The first two events are out; the next is due at the pickup.
    finish(stores[0].as_ref(), "a", "d1", 2, Some(p.pickup_at), version).await;
    assert!(claim(stores[1].as_ref(), "b", p.pickup_at - Duration::milliseconds(1)).await.is_empty());
    let second = claim(stores[1].as_ref(), "b", p.pickup_at).await;
    assert_eq!((second.len(), second[0].events_published), (1, 2));

    // b dies holding it: nobody else gets it until its lease ends, then a takes over.
    assert!(claim(stores[0].as_ref(), "a", p.pickup_at + LEASE - Duration::milliseconds(1)).await.is_empty());
    let taken_over = claim(stores[0].as_ref(), "a", p.pickup_at + LEASE).await;
    assert_eq!((taken_over.len(), taken_over[0].events_published), (1, 2));
    // b's progress, come too late, is dropped; a's counts.
    finish(stores[1].as_ref(), "b", "d1", 5, None, version).await;
    finish(stores[0].as_ref(), "a", "d1", 3, Some(p.dropoff_at), version).await;
    let third = claim(stores[1].as_ref(), "b", p.dropoff_at).await;
    assert_eq!((third.len(), third[0].events_published), (1, 3));

    // Everything out: never claimed again.
    finish(stores[1].as_ref(), "b", "d1", 5, None, version).await;
    assert!(claim(stores[0].as_ref(), "a", p.back_at + Duration::days(1)).await.is_empty());
}

pub async fn claims_are_bounded_earliest_first_and_never_overlap(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(24);
    let stores = h.open_shared(2).await;
    stores[0].seed(&config.depots, &domain::initial_fleet(&config)).await.unwrap();
    for i in 0..24 {
        let r = request(&format!("d{i:02}"), "contoso", 1.0, downtown());
        drone_of(stores[i % 2].assign(&r, now() + Duration::seconds(i as i64), &config).await.unwrap());
    }
    let later = now() + Duration::minutes(1);
    let batch = stores[0].claim_due_flights("a", later, LEASE, 5).await.unwrap();
    let ids: Vec<&str> = batch.iter().map(|c| c.delivery_id.as_str()).collect();
    assert_eq!(ids, ["d00", "d01", "d02", "d03", "d04"], "a bounded batch, earliest due first");
    // Two claimers at once split the rest between them.
    let (x, y) = tokio::join!(
        stores[0].claim_due_flights("x", later, LEASE, 12),
        stores[1].claim_due_flights("y", later, LEASE, 12),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all: Vec<&str> = x.iter().chain(&y).map(|c| c.delivery_id.as_str()).collect();
    all.sort_unstable();
    let expected: Vec<String> = (5..24).map(|i| format!("d{i:02}")).collect();
    assert_eq!(all, expected, "each flight claimed once: {x:?} / {y:?}");
}

pub async fn a_release_is_never_placed_before_an_announced_pickup(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(2);
    let store = seeded(h, &config).await;
    let (_, p1) = planned(store.as_ref(), &request("d1", "contoso", 1.0, downtown()), now(), &config).await;
    // A flight clock whose time runs ahead claimed d1 at its pickup: the pickup may be out.
    assert_eq!(claim(store.as_ref(), "fast", p1.pickup_at).await.len(), 1);
    store.release("d1", now() + Duration::seconds(1)).await.unwrap();
    let drone = store.drone(&p1.drone_id).await.unwrap().unwrap();
    assert_eq!((drone.busy_until, drone.flight), (p1.back_at, Some(p1)), "the flight goes on as planned");

    // A clock that announced only the departure does not stop a turn-back, and its progress,
    // computed from the plan before the release, does not overwrite the new schedule.
    let (_, p2) = planned(store.as_ref(), &request("d2", "contoso", 1.0, downtown()), now(), &config).await;
    let claimed = claim(store.as_ref(), "slow", now()).await;
    let d2 = claimed.iter().find(|c| c.delivery_id == "d2").expect("d2 is due");
    let released_at = now() + Duration::seconds(10);
    store.release("d2", released_at).await.unwrap();
    finish(store.as_ref(), "slow", "d2", 2, Some(p2.pickup_at), d2.plan_version).await;
    let again = claim(store.as_ref(), "other", released_at).await;
    let d2 = again.iter().find(|c| c.delivery_id == "d2").expect("the release is due");
    assert_eq!(d2.events_published, 2);
    assert_eq!(d2.flight, p2.released_at(released_at).unwrap());
}

pub async fn a_reroute_replans_the_flight_from_where_the_drone_is(h: &dyn DroneStoreHarness) {
    let config = slow_fleet(2);
    let stores = h.open_shared(2).await;
    stores[0].seed(&config.depots, &domain::initial_fleet(&config)).await.unwrap();
    let store = stores[0].as_ref();
    let elsewhere = Point::new(47.6253, -122.3222);
    assert_eq!(store.reroute("nobody", None, Some(elsewhere), now()).await.unwrap(), Rerouted::NotAssigned);
    let (a, p) = planned(store, &request("d1", "contoso", 1.0, downtown()), now(), &config).await;

    // The departure's events are due and not yet out: the reroute waits for them.
    let at = now() + (p.pickup_at - now()) / 2;
    assert_eq!(store.reroute("d1", None, Some(elsewhere), at).await.unwrap(), Rerouted::Pending);
    let claimed = claim(store, "clock", now()).await;
    finish(store, "clock", "d1", 2, Some(p.pickup_at), claimed[0].plan_version).await;

    let expected = p.rerouted_at(at, p.pickup, elsewhere).unwrap().unwrap();
    let Rerouted::Flying { flight, changed: true } = store.reroute("d1", None, Some(elsewhere), at).await.unwrap()
    else {
        panic!("re-planned")
    };
    assert_eq!(*flight, expected);
    // Read back exactly by another process; the drone is busy until the new plan brings it home.
    let drone = stores[1].drone(&a.drone_id).await.unwrap().unwrap();
    assert_eq!((drone.busy_until, drone.flight.as_ref()), (expected.home_at(), Some(&expected)));
    // The same places again: nothing changes.
    let again = stores[1].reroute("d1", Some(p.pickup), Some(elsewhere), at + Duration::seconds(1)).await.unwrap();
    assert_eq!(again, Rerouted::Flying { flight: Box::new(expected.clone()), changed: false });
    // The new plan's events start over from the re-plan, and a clock's stale progress is dropped.
    finish(store, "clock", "d1", 4, None, claimed[0].plan_version).await;
    let due = claim(store, "clock", at).await;
    assert_eq!((due.len(), due[0].events_published, &due[0].flight), (1, 0, &expected));
    finish(store, "clock", "d1", 1, Some(expected.pickup_at), due[0].plan_version).await;
    // Utilization counts what the drone flies.
    let (miles, _) = store.utilization("contoso", None, MARCH).await.unwrap().unwrap();
    assert!((miles - expected.miles()).abs() < 1e-9, "{miles} vs {}", expected.miles());

    // With the package on board the pickup cannot move; after a cancel nothing can.
    let loaded = expected.pickup_at + Duration::seconds(1);
    let moved = store.reroute("d1", Some(Point::new(47.61, -122.34)), None, loaded).await.unwrap();
    assert!(matches!(moved, Rerouted::Refused(ref reason) if reason.contains("picked up")), "{moved:?}");
    let (_, p2) = planned(store, &request("d2", "contoso", 1.0, downtown()), now(), &config).await;
    store.release("d2", now() + Duration::seconds(1)).await.unwrap();
    let cancelled = store.reroute("d2", None, Some(elsewhere), now() + Duration::seconds(2)).await.unwrap();
    assert!(matches!(cancelled, Rerouted::Refused(_)), "{cancelled:?}");
    assert_eq!(store.drone(&p2.drone_id).await.unwrap().unwrap().flight, p2.released_at(now() + Duration::seconds(1)));
}

fn expedited(delivery_id: &str, weight: f64) -> AssignmentRequest {
    AssignmentRequest { expedited: true, ..request(delivery_id, "contoso", weight, downtown()) }
}

async fn waiting(store: &dyn DroneStore, at: DateTime<Utc>) -> Vec<String> {
    store.expedited_waiting(at).await.unwrap().into_iter().map(|w| w.delivery_id).collect()
}

pub async fn a_waiting_expedited_request_gets_the_freed_drone_before_a_standard_one(h: &dyn DroneStoreHarness) {
    // One drone whose flights take about half a minute (60 times faster than life).
    let config = FleetConfig { time_scale: 60.0, ..slow_fleet(1) };
    let store = seeded(h, &config).await;
    let first = drone_of(store.assign(&request("d1", "contoso", 1.0, downtown()), now(), &config).await.unwrap());
    // No drone: the expedited request is recorded as waiting, a standard one is not.
    let asked = now() + Duration::seconds(1);
    assert_eq!(store.assign(&expedited("fast", 1.0), asked, &config).await.unwrap(), Assigned::NoneFree);
    assert_eq!(
        store.assign(&request("slow", "contoso", 1.0, downtown()), asked, &config).await.unwrap(),
        Assigned::NoneFree
    );
    assert_eq!(
        store.expedited_waiting(asked).await.unwrap(),
        [ExpeditedWaiter { delivery_id: "fast".into(), since: asked, until: domain::waiting_until(asked, &config) }]
    );
    // A retry extends the wait but keeps when it began.
    let retried = asked + Duration::seconds(1);
    assert_eq!(store.assign(&expedited("fast", 1.0), retried, &config).await.unwrap(), Assigned::NoneFree);
    let waiter = store.expedited_waiting(retried).await.unwrap().pop().expect("still waiting");
    assert_eq!((waiter.since, waiter.until), (asked, domain::waiting_until(retried, &config)));

    // The drone comes home while the expedited request is between retries: the standard retry
    // that comes first does not take it.
    let freed = first.busy_until;
    assert!(retried < freed && freed < waiter.until, "the flight must end while the request waits: {first:?}");
    let slow = request("slow", "contoso", 1.0, downtown());
    assert_eq!(store.assign(&slow, freed, &config).await.unwrap(), Assigned::NoneFree);
    let fast = drone_of(store.assign(&expedited("fast", 1.0), freed + Duration::seconds(1), &config).await.unwrap());
    assert_eq!(fast.drone_id, first.drone_id);
    assert!(waiting(store.as_ref(), freed).await.is_empty(), "a served waiter leaves");
    // Idempotent as ever: the expedited retry gets the same answer, and nothing waits again.
    let again = store.assign(&expedited("fast", 1.0), freed + Duration::seconds(2), &config).await.unwrap();
    assert_eq!(again, Assigned::Drone(fast.clone()));
    assert!(waiting(store.as_ref(), freed).await.is_empty());
    // Nobody waits any more: the standard request gets the drone after that flight.
    assert_eq!(drone_of(store.assign(&slow, fast.busy_until, &config).await.unwrap()).drone_id, first.drone_id);
}

pub async fn standard_requests_go_on_while_idle_drones_outnumber_expedited_waiters(h: &dyn DroneStoreHarness) {
    // Three drones carrying 5, 10 and 25 kg; the heavy one flies, and an expedited 20 kg package
    // waits for it.
    let config = FleetConfig { payload_tiers: vec![5.0, 10.0, 25.0], ..slow_fleet(3) };
    let store = seeded(h, &config).await;
    let heavy = drone_of(store.assign(&request("heavy", "contoso", 20.0, downtown()), now(), &config).await.unwrap());
    assert_eq!(heavy.drone_id, "drone-0003");
    assert_eq!(store.assign(&expedited("fast", 20.0), now(), &config).await.unwrap(), Assigned::NoneFree);
    // Two light drones idle, one waiter: a standard request still gets one.
    let light = drone_of(store.assign(&request("s1", "contoso", 1.0, downtown()), now(), &config).await.unwrap());
    // One idle, one waiter: the last idle drone is held back, whatever the waiter's weight.
    let s2 = request("s2", "contoso", 1.0, downtown());
    assert_eq!(store.assign(&s2, now(), &config).await.unwrap(), Assigned::NoneFree);
    // Another expedited request is never held back: it takes the last idle drone.
    let other = drone_of(store.assign(&expedited("fast2", 1.0), now(), &config).await.unwrap());
    assert_ne!(other.drone_id, light.drone_id);
    assert_eq!(waiting(store.as_ref(), now()).await, ["fast"]);
    // Too heavy for the fleet stays too heavy, expedited or not, and is not recorded as waiting.
    assert_eq!(store.assign(&expedited("huge", 30.0), now(), &config).await.unwrap(), Assigned::TooHeavy(25.0));
    assert_eq!(waiting(store.as_ref(), now()).await, ["fast"]);
}

pub async fn an_expedited_wait_ends_when_released_or_when_it_lapses(h: &dyn DroneStoreHarness) {
    // One drone whose flights take well under a second, and waits of a minute.
    let config = FleetConfig { expedited_wait_secs: 60, time_scale: 3600.0, ..slow_fleet(1) };
    let store = seeded(h, &config).await;
    let d1 = drone_of(store.assign(&request("d1", "contoso", 1.0, downtown()), now(), &config).await.unwrap());
    store.assign(&expedited("e1", 1.0), now(), &config).await.unwrap();
    store.assign(&expedited("e2", 1.0), now() + Duration::milliseconds(1), &config).await.unwrap();
    assert_eq!(waiting(store.as_ref(), now() + Duration::milliseconds(1)).await, ["e1", "e2"], "oldest first");
    // Cancelled: e1 no longer waits (and stays fenced).
    store.release("e1", now() + Duration::milliseconds(2)).await.unwrap();
    assert_eq!(waiting(store.as_ref(), now() + Duration::milliseconds(2)).await, ["e2"]);
    let e1 = expedited("e1", 1.0);
    assert_eq!(store.assign(&e1, now() + Duration::milliseconds(3), &config).await.unwrap(), Assigned::Released);
    assert_eq!(waiting(store.as_ref(), now()).await, ["e2"], "a fenced delivery does not wait");
    // The drone is home; e2 stopped asking. A standard request is held back while e2's wait
    // lasts, a minute after its last try to the millisecond, and gets the drone after.
    let lapse = now() + Duration::milliseconds(1) + Duration::seconds(60);
    assert!(d1.busy_until < lapse - Duration::seconds(30), "{d1:?}");
    let s = request("s", "contoso", 1.0, downtown());
    assert_eq!(store.assign(&s, d1.busy_until, &config).await.unwrap(), Assigned::NoneFree);
    assert_eq!(store.assign(&s, lapse - Duration::milliseconds(1), &config).await.unwrap(), Assigned::NoneFree);
    assert_eq!(waiting(store.as_ref(), lapse - Duration::milliseconds(1)).await, ["e2"]);
    assert!(waiting(store.as_ref(), lapse).await.is_empty());
    assert_eq!(drone_of(store.assign(&s, lapse, &config).await.unwrap()).drone_id, d1.drone_id);
}

pub async fn ping_answers(h: &dyn DroneStoreHarness) {
    h.open().await.ping().await.unwrap();
}

pub async fn utilization_counts_only_the_asked_accounts_flights(h: &dyn DroneStoreHarness) {
    let config = fleet(4);
    let store = seeded(h, &config).await;
    let of = |id: &str, account: Option<&str>| AssignmentRequest {
        account_id: account.map(str::to_owned),
        ..request(id, "user-7", 1.0, downtown())
    };
    let (a1, _) = planned(store.as_ref(), &of("a1", Some("acc-1")), now(), &config).await;
    let (b1, _) = planned(store.as_ref(), &of("b1", Some("acc-2")), now(), &config).await;
    let (o1, _) = planned(store.as_ref(), &of("o1", None), now(), &config).await;
    let miles = |u: Option<(f64, f64)>| u.map(|(miles, _)| miles);
    let close = |got: Option<f64>, want: f64| assert!((got.expect("flights") - want).abs() < 1e-9, "{got:?} {want}");
    close(miles(store.utilization("user-7", Some("acc-1"), MARCH).await.unwrap()), a1.traveled_miles);
    close(miles(store.utilization("user-7", Some("acc-2"), MARCH).await.unwrap()), b1.traveled_miles);
    // Assigned without an account: the owner stands for it.
    close(miles(store.utilization("user-7", Some("user-7"), MARCH).await.unwrap()), o1.traveled_miles);
    close(
        miles(store.utilization("user-7", None, MARCH).await.unwrap()),
        a1.traveled_miles + b1.traveled_miles + o1.traveled_miles,
    );
    assert_eq!(store.utilization("user-7", Some("acc-3"), MARCH).await.unwrap(), None);
}
