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

use super::{Assigned, DroneStore};
use crate::domain::{self, AssignmentRequest, Depot, DroneRecord, FleetConfig};

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
            release_before_assignment_fences_the_delivery,
            utilization_sums_flown_assignments_per_owner_and_month,
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
        pickup,
        dropoff: Point::new(47.62, -122.35),
        weight,
        expedited: false,
    }
}

fn downtown() -> Point {
    Point::new(47.6062, -122.3321)
}

#[track_caller]
fn drone_of(outcome: Assigned) -> DroneAssignment {
    match outcome {
        Assigned::Drone(a) => a,
        other => panic!("expected a drone, got {other:?}"),
    }
}

/// Drone id → the delivery it is flying, for every busy drone.
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
    let config = FleetConfig {
        size: 1,
        time_scale: 1.0,
        depots: vec![Depot::new("hub", "Hub", 47.5, -122.3)],
        ..FleetConfig::default()
    };
    let store = seeded(h, &config).await;
    let d1 = drone_of(store.assign(&request("d1", "contoso", 1.0, downtown()), now(), &config).await.unwrap());
    assert!(d1.busy_until > now() + Duration::minutes(10), "{d1:?}");
    assert_eq!(
        store.assign(&request("d2", "contoso", 1.0, downtown()), now(), &config).await.unwrap(),
        Assigned::NoneFree
    );

    let released_at = now() + Duration::minutes(1);
    store.release("d1", released_at).await.unwrap();
    let drone = store.drone("drone-0001").await.unwrap().expect("the drone exists");
    assert_eq!((drone.busy_until, drone.current_delivery_id), (released_at, None));
    // The cancelled delivery never gets a drone again; the next one gets the freed drone.
    assert_eq!(
        store.assign(&request("d1", "contoso", 1.0, downtown()), released_at, &config).await.unwrap(),
        Assigned::Released
    );
    let d2 = drone_of(store.assign(&request("d2", "contoso", 1.0, downtown()), released_at, &config).await.unwrap());
    assert_eq!(d2.drone_id, "drone-0001");
    // Releasing again is harmless and leaves the drone to its new delivery.
    store.release("d1", released_at + Duration::minutes(1)).await.unwrap();
    let drone = store.drone("drone-0001").await.unwrap().expect("the drone exists");
    assert_eq!((drone.busy_until, drone.current_delivery_id.as_deref()), (d2.busy_until, Some("d2")));
    // Released after its flight ended: the drone is free already and stays free from then.
    let late = d2.busy_until + Duration::hours(1);
    store.release("d2", late).await.unwrap();
    let drone = store.drone("drone-0001").await.unwrap().expect("the drone exists");
    assert_eq!((drone.busy_until, drone.current_delivery_id), (d2.busy_until, None));
    assert_eq!(
        store.assign(&request("d2", "contoso", 1.0, downtown()), late, &config).await.unwrap(),
        Assigned::Released
    );
    // Released flights are not utilization.
    assert_eq!(store.utilization("contoso", MARCH).await.unwrap(), None);
}

pub async fn release_before_assignment_fences_the_delivery(h: &dyn DroneStoreHarness) {
    let config = fleet(4);
    let store = seeded(h, &config).await;
    store.release("early", now()).await.unwrap();
    store.release("early", now() + Duration::seconds(1)).await.unwrap();
    let r = request("early", "contoso", 1.0, downtown());
    assert_eq!(store.assign(&r, now() + Duration::seconds(2), &config).await.unwrap(), Assigned::Released);
    assert!(flying(store.as_ref()).await.is_empty(), "a fenced delivery took a drone");
    assert_eq!(store.utilization("contoso", MARCH).await.unwrap(), None);
    assert_eq!(store.utilization("", MARCH).await.unwrap(), None, "a fence is not a flight");
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
        ("mar-last-ms", "contoso", at(2026, 3, 31, 23, 59, 59, 999)),
        ("apr-first-ms", "contoso", at(2026, 4, 1, 0, 0, 0, 0)),
        ("mar-other-owner", "fabrikam", at(2026, 3, 20, 0, 0, 0, 0)),
        ("mar-cancelled-only", "northwind", at(2026, 3, 20, 0, 0, 0, 0)),
    ];
    let mut flown = BTreeMap::new();
    for (i, (id, owner, time)) in flights.into_iter().enumerate() {
        let pickup = Point::new(47.55 + 0.02 * i as f64, -122.30);
        let a = drone_of(store.assign(&request(id, owner, 1.0, pickup), time, &config).await.unwrap());
        flown.insert(id, (a.traveled_miles, a.assigned_hours));
    }
    store.release("mar-cancelled", at(2026, 3, 16, 12, 1, 0, 0)).await.unwrap();
    store.release("mar-cancelled-only", at(2026, 3, 20, 0, 1, 0, 0)).await.unwrap();
    store.release("never-assigned", at(2026, 3, 21, 0, 0, 0, 0)).await.unwrap();

    let sum = |ids: &[&str]| ids.iter().fold((0.0, 0.0), |(m, h), id| (m + flown[id].0, h + flown[id].1));
    let check = |got: Option<(f64, f64)>, want: (f64, f64)| {
        let (miles, hours) = got.expect("some utilization");
        assert!((miles - want.0).abs() < 1e-9 && (hours - want.1).abs() < 1e-9, "{got:?} != {want:?}");
        assert!(miles > 0.0 && hours > 0.0);
    };
    check(store.utilization("contoso", MARCH).await.unwrap(), sum(&["mar-first-ms", "mar-mid", "mar-last-ms"]));
    check(store.utilization("contoso", Month { year: 2026, month: 2 }).await.unwrap(), sum(&["feb-last-ms"]));
    check(store.utilization("contoso", Month { year: 2026, month: 4 }).await.unwrap(), sum(&["apr-first-ms"]));
    check(store.utilization("fabrikam", MARCH).await.unwrap(), sum(&["mar-other-owner"]));
    assert_eq!(store.utilization("northwind", MARCH).await.unwrap(), None, "only a released flight");
    assert_eq!(store.utilization("contoso", Month { year: 2025, month: 3 }).await.unwrap(), None);
    assert_eq!(store.utilization("nobody", MARCH).await.unwrap(), None);
    assert_eq!(store.utilization("CONTOSO", MARCH).await.unwrap(), None, "owners are case-sensitive");
    let distinct: BTreeSet<_> = flown.values().map(|(m, _)| m.to_bits()).collect();
    assert!(distinct.len() > 1, "the flights should differ to make the sums meaningful");
}

pub async fn ping_answers(h: &dyn DroneStoreHarness) {
    h.open().await.ping().await.unwrap();
}
