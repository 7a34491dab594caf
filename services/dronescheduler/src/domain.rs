//! The fleet and how a drone is chosen. Pure: no I/O, no clock of its own.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::Location;
use contracts::drone::{DroneDeliveryRequest, DroneReroute};
use platform::Problem;
use platform::geo::{Point, distance_miles};

use crate::flight::FlightPath;

/// A drone's home, where it rests between flights.
#[derive(Debug, Clone, PartialEq)]
pub struct Depot {
    pub id: String,
    pub name: String,
    pub location: Point,
}

impl Depot {
    pub fn new(id: &str, name: &str, latitude: f64, longitude: f64) -> Self {
        Self { id: id.to_owned(), name: name.to_owned(), location: Point::new(latitude, longitude) }
    }
}

/// Fabrikam's depots around Seattle (all inside [`platform::geo::ServiceArea::SEATTLE`]).
pub fn seattle_depots() -> Vec<Depot> {
    vec![
        Depot::new("sodo", "SoDo", 47.5802, -122.3353),
        Depot::new("ballard", "Ballard", 47.6687, -122.3847),
        Depot::new("northgate", "Northgate", 47.7062, -122.3252),
        Depot::new("bellevue", "Bellevue", 47.6101, -122.2015),
    ]
}

/// Payload classes, kilograms, given to drones in turn.
pub const PAYLOAD_TIERS: &[f64] = &[5.0, 10.0, 25.0];

/// Default of [`FleetConfig::expedited_wait_secs`]: twice the workflow's longest retry backoff.
pub const DEFAULT_EXPEDITED_WAIT_SECS: u64 = 120;

/// How the fleet is built and flown. Only the first start of a store builds the fleet from it;
/// later starts keep the stored fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub size: u32,
    pub speed_mph: f64,
    /// Simulated seconds per real second: a 30-minute flight keeps a drone busy 30 s at 60.
    pub time_scale: f64,
    /// Seconds a caller should wait when no drone is free.
    pub retry_after_secs: u64,
    /// How long an expedited request that found no drone keeps its claim on the next free one
    /// without asking again ([`may_take_drone`]). Longer than the workflow's longest retry
    /// backoff (60 s), so a waiter that is still retrying never lapses, and short enough that
    /// one whose workflow died stops holding drones back soon.
    pub expedited_wait_secs: u64,
    /// Real seconds between a flying drone's `DronePosition` events; 0: none.
    pub position_every_secs: u64,
    /// Where drones live; drone `n` (from 0) belongs to depot `n % depots.len()`.
    pub depots: Vec<Depot>,
    /// Maximum payloads in kilograms; drone `n` carries `payload_tiers[n % payload_tiers.len()]`.
    pub payload_tiers: Vec<f64>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            size: 300,
            speed_mph: 40.0,
            time_scale: 60.0,
            retry_after_secs: 5,
            expedited_wait_secs: DEFAULT_EXPEDITED_WAIT_SECS,
            position_every_secs: 5,
            depots: seattle_depots(),
            payload_tiers: PAYLOAD_TIERS.to_vec(),
        }
    }
}

impl FleetConfig {
    /// The heaviest package any drone of this fleet can carry.
    pub fn max_payload(&self) -> f64 {
        let tiers = usize::try_from(self.size).unwrap_or(usize::MAX).min(self.payload_tiers.len());
        self.payload_tiers[..tiers].iter().copied().fold(0.0, f64::max)
    }

    /// Whether this configuration can build and fly a fleet; the error says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("the fleet needs at least one drone".into());
        }
        if !(self.speed_mph.is_finite() && self.speed_mph > 0.0) {
            return Err(format!("drone speed must be a positive number of mph, not {}", self.speed_mph));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(format!("the time scale must be a positive number, not {}", self.time_scale));
        }
        if self.depots.is_empty() {
            return Err("the fleet needs at least one depot".into());
        }
        if let Some(d) = self.depots.iter().find(|d| d.id.is_empty() || !d.location.is_valid()) {
            return Err(format!("depot {:?} needs an id and a valid location", d.id));
        }
        if self.expedited_wait_secs > 86_400 {
            return Err(format!("an expedited wait of {} s is more than a day", self.expedited_wait_secs));
        }
        if self.payload_tiers.is_empty() || self.payload_tiers.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return Err("payload tiers must be positive numbers of kilograms, at least one".into());
        }
        Ok(())
    }
}

/// A drone as stored. Between flights it rests at its depot, at `location`.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneRecord {
    pub id: String,
    pub depot_id: String,
    pub location: Point,
    pub max_payload: f64,
    pub speed_mph: f64,
    /// When its latest flight ends (it is free from then on).
    pub busy_until: DateTime<Utc>,
    /// The delivery of its latest flight (kept after the flight ends: `busy_until` says whether
    /// the drone is still flying it).
    pub current_delivery_id: Option<String>,
    /// That flight, when it was recorded (flights assigned before flights were kept have none).
    pub flight: Option<FlightPath>,
}

/// The fleet a new installation starts with: deterministic, so two runs agree.
pub fn initial_fleet(config: &FleetConfig) -> Vec<DroneRecord> {
    if config.depots.is_empty() || config.payload_tiers.is_empty() {
        return Vec::new();
    }
    (0..config.size as usize)
        .map(|i| {
            let depot = &config.depots[i % config.depots.len()];
            DroneRecord {
                id: format!("drone-{:04}", i + 1),
                depot_id: depot.id.clone(),
                location: depot.location,
                max_payload: config.payload_tiers[i % config.payload_tiers.len()],
                speed_mph: config.speed_mph,
                busy_until: DateTime::<Utc>::UNIX_EPOCH,
                current_delivery_id: None,
                flight: None,
            }
        })
        .collect()
}

/// A validated assignment request.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRequest {
    pub delivery_id: String,
    pub owner_id: String,
    /// The account that requested the delivery (none: the owner stands for it).
    pub account_id: Option<String>,
    pub pickup: Point,
    pub dropoff: Point,
    pub weight: f64,
    pub expedited: bool,
    /// W3C trace context of the assignment, kept with the flight so that the events the flight
    /// clock publishes later continue the request's trace.
    pub traceparent: Option<String>,
}

/// Checks a PUT body against the path and the fleet; every bad field is named.
/// Checks a reroute's places: each given one well formed, at least one given.
pub fn validate_reroute(body: &DroneReroute) -> Result<(Option<Point>, Option<Point>), Problem> {
    let mut errors = BTreeMap::new();
    if body.pickup.is_none() && body.dropoff.is_none() {
        errors.insert("/".to_owned(), "give the new pickup, the new dropoff, or both".to_owned());
    }
    let pickup = body.pickup.as_ref().map(|p| point(p, "/pickup", &mut errors));
    let dropoff = body.dropoff.as_ref().map(|d| point(d, "/dropoff", &mut errors));
    if errors.is_empty() { Ok((pickup, dropoff)) } else { Err(Problem::invalid_fields(errors)) }
}

pub fn validate(path_id: &str, body: DroneDeliveryRequest, fleet: &FleetConfig) -> Result<AssignmentRequest, Problem> {
    let mut errors = BTreeMap::new();
    if body.delivery_id != path_id {
        errors.insert("/deliveryId".to_owned(), format!("must equal the delivery id in the path ({path_id})"));
    }
    if body.owner_id.trim().is_empty() {
        errors.insert("/ownerId".to_owned(), "required".to_owned());
    }
    let pickup = point(&body.pickup, "/pickup", &mut errors);
    let dropoff = point(&body.dropoff, "/dropoff", &mut errors);
    let weight = body.package_detail.weight;
    let max = fleet.max_payload();
    if !(weight.is_finite() && weight > 0.0) {
        errors.insert("/packageDetail/weight".to_owned(), "must be a number greater than 0".to_owned());
    } else if weight > max {
        errors.insert("/packageDetail/weight".to_owned(), format!("no drone carries more than {max} kg"));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid_fields(errors));
    }
    Ok(AssignmentRequest {
        delivery_id: body.delivery_id,
        owner_id: body.owner_id.trim().to_owned(),
        account_id: body.account_id.filter(|a| !a.trim().is_empty()),
        pickup,
        dropoff,
        weight,
        expedited: body.expedited,
        traceparent: None,
    })
}

fn point(location: &Location, field: &str, errors: &mut BTreeMap<String, String>) -> Point {
    let p = Point { latitude: location.latitude, longitude: location.longitude, altitude: location.altitude };
    if !p.is_valid() {
        errors.insert(field.to_owned(), "latitude must be in [-90, 90] and longitude in [-180, 180]".to_owned());
    }
    p
}

/// Whether a request may take a free drone now, so that expedited requests go first when drones
/// are scarce.
///
/// An expedited request that found no drone is recorded as waiting (until it gets one, is
/// released, or its wait lapses: [`waiting_until`]). While expedited requests wait, a standard
/// request only takes a drone if the idle drones able to carry its package outnumber them, so
/// the drone that frees next is left to a waiting expedited request instead of going to whichever
/// retry comes first. Expedited requests are never held back (among themselves the first to ask
/// gets the drone). `waiting` counts the live expedited waiters other than the request itself;
/// `idle_capable` the free drones able to carry its package (only needed while `waiting > 0`).
///
/// The count is of all waiters whatever their weight: a heavy expedited package may hold back a
/// light standard one although they would not compete for the same drone. Erring that way
/// keeps the rule one count, and the wait is short-lived.
pub fn may_take_drone(expedited: bool, waiting: usize, idle_capable: usize) -> bool {
    expedited || waiting == 0 || idle_capable > waiting
}

/// Until when an expedited request that found no drone at `now` counts as waiting: each retry
/// moves it on, so only a waiter that stopped asking lapses.
pub fn waiting_until(now: DateTime<Utc>, fleet: &FleetConfig) -> DateTime<Utc> {
    let wait = i64::try_from(fleet.expedited_wait_secs).ok().and_then(chrono::Duration::try_seconds);
    wait.and_then(|wait| now.checked_add_signed(wait)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The chosen drone's flight.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightPlan {
    pub drone_id: String,
    pub depot_id: String,
    pub miles: f64,
    pub hours: f64,
    pub busy_until: DateTime<Utc>,
    /// Where and when it flies.
    pub path: FlightPath,
}

/// Picks the free drone able to carry the package whose depot is nearest the pickup (ties by
/// id), and plans depot → pickup → drop-off → depot. `None` when no drone can take it now.
pub fn choose_drone(
    candidates: &[DroneRecord],
    request: &AssignmentRequest,
    now: DateTime<Utc>,
    fleet: &FleetConfig,
) -> Option<FlightPlan> {
    let drone =
        candidates.iter().filter(|d| d.busy_until <= now && d.max_payload >= request.weight).min_by(|a, b| {
            let (ka, kb) = (distance_miles(a.location, request.pickup), distance_miles(b.location, request.pickup));
            ka.total_cmp(&kb).then_with(|| a.id.cmp(&b.id))
        })?;
    let path = FlightPath::plan(
        &drone.id,
        drone.location,
        request.pickup,
        request.dropoff,
        drone.speed_mph,
        fleet.time_scale,
        now,
    )
    .with_positions_every(std::time::Duration::from_secs(fleet.position_every_secs));
    Some(FlightPlan {
        drone_id: drone.id.clone(),
        depot_id: drone.depot_id.clone(),
        miles: path.miles(),
        hours: path.hours(),
        busy_until: path.home_at(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn request(weight: f64, pickup: Point) -> AssignmentRequest {
        AssignmentRequest {
            delivery_id: "d1".into(),
            owner_id: "o".into(),
            account_id: None,
            pickup,
            dropoff: Point::new(47.62, -122.35),
            weight,
            expedited: false,
            traceparent: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_fleet_is_deterministic_and_spread_over_depots() {
        let fleet = initial_fleet(&FleetConfig { size: 8, ..FleetConfig::default() });
        assert_eq!(fleet, initial_fleet(&FleetConfig { size: 8, ..FleetConfig::default() }));
        assert_eq!(fleet[0].id, "drone-0001");
        assert_eq!(fleet[4].depot_id, fleet[0].depot_id);
        assert_eq!(FleetConfig::default().max_payload(), 25.0);
    }

    #[test]
    fn nearest_depot_able_to_carry_wins() {
        let fleet = initial_fleet(&FleetConfig { size: 12, ..FleetConfig::default() });
        let near_bellevue = Point::new(47.61, -122.20);
        let plan = choose_drone(&fleet, &request(1.0, near_bellevue), now(), &FleetConfig::default()).unwrap();
        assert_eq!(plan.depot_id, "bellevue");
        let heavy = choose_drone(&fleet, &request(20.0, near_bellevue), now(), &FleetConfig::default()).unwrap();
        let drone = fleet.iter().find(|d| d.id == heavy.drone_id).unwrap();
        assert!(drone.max_payload >= 20.0);
    }

    #[test]
    fn busy_drones_are_skipped_until_their_flight_ends() {
        let mut fleet = initial_fleet(&FleetConfig { size: 1, ..FleetConfig::default() });
        fleet[0].busy_until = now() + Duration::minutes(5);
        let r = request(1.0, Point::new(47.6, -122.3));
        assert!(choose_drone(&fleet, &r, now(), &FleetConfig::default()).is_none());
        assert!(choose_drone(&fleet, &r, now() + Duration::minutes(5), &FleetConfig::default()).is_some());
    }

    #[test]
    fn flight_time_follows_distance_speed_and_time_scale() {
        let fleet = initial_fleet(&FleetConfig { size: 1, ..FleetConfig::default() });
        let config = FleetConfig { time_scale: 60.0, ..FleetConfig::default() };
        let plan = choose_drone(&fleet, &request(1.0, Point::new(47.6, -122.3)), now(), &config).unwrap();
        assert!((plan.hours - plan.miles / 40.0).abs() < 1e-9);
        let busy_ms = (plan.busy_until - now()).num_milliseconds() as f64;
        assert!((busy_ms - plan.hours * 60_000.0).abs() <= 1.0, "{busy_ms}");
    }

    #[test]
    fn overweight_and_bad_places_are_named() {
        let body = DroneDeliveryRequest {
            account_id: None,
            delivery_id: "other".into(),
            owner_id: "o".into(),
            pickup: Location::new(91.0, 0.0, 0.0),
            dropoff: Location::new(47.0, -122.0, 0.0),
            package_detail: contracts::drone::PackageDetail { id: "p".into(), size: "small".into(), weight: 80.0 },
            expedited: false,
        };
        let problem = validate("d1", body, &FleetConfig::default()).unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/deliveryId", "/packageDetail/weight", "/pickup"]);
    }

    #[test]
    fn depots_are_in_seattle_and_payloads_cycle_through_the_tiers() {
        let config = FleetConfig::default();
        assert!(config.depots.iter().all(|d| platform::geo::ServiceArea::SEATTLE.contains(d.location)));
        assert!(config.check().is_ok());
        let fleet = initial_fleet(&FleetConfig { size: 7, ..FleetConfig::default() });
        let payloads: Vec<f64> = fleet.iter().map(|d| d.max_payload).collect();
        assert_eq!(payloads, [5.0, 10.0, 25.0, 5.0, 10.0, 25.0, 5.0]);
        let depots: Vec<&str> = fleet.iter().map(|d| d.depot_id.as_str()).collect();
        assert_eq!(depots, ["sodo", "ballard", "northgate", "bellevue", "sodo", "ballard", "northgate"]);
        assert_eq!(fleet[3].location, config.depots[3].location);
        assert_eq!(fleet[6].id, "drone-0007");
        assert!(config.max_payload() >= 25.0);
        // A fleet smaller than the tier list only carries what its drones carry.
        assert_eq!(FleetConfig { size: 2, ..FleetConfig::default() }.max_payload(), 10.0);
    }

    #[test]
    fn equally_near_drones_are_chosen_by_id() {
        let config = FleetConfig {
            size: 6,
            depots: vec![Depot::new("b", "B", 47.6, -122.3), Depot::new("a", "A", 47.6, -122.3)],
            payload_tiers: vec![10.0],
            ..FleetConfig::default()
        };
        let mut fleet = initial_fleet(&config);
        fleet.reverse();
        let plan = choose_drone(&fleet, &request(1.0, Point::new(47.7, -122.3)), now(), &config).unwrap();
        assert_eq!(plan.drone_id, "drone-0001");
        assert_eq!(plan.depot_id, "b");
    }

    #[test]
    fn the_plan_carries_the_flight_it_was_computed_from() {
        let fleet = initial_fleet(&FleetConfig { size: 1, ..FleetConfig::default() });
        let r = request(1.0, Point::new(47.6, -122.3));
        let plan = choose_drone(&fleet, &r, now(), &FleetConfig::default()).unwrap();
        let path = &plan.path;
        assert_eq!(
            (path.drone_id.as_str(), path.depot, path.pickup, path.dropoff),
            ("drone-0001", fleet[0].location, r.pickup, r.dropoff)
        );
        assert_eq!((path.departed_at, path.home_at()), (now(), plan.busy_until));
        assert_eq!((path.speed_mph, path.time_scale), (40.0, 60.0));
        assert_eq!(path.position_every_ms, 5_000, "positions every five real seconds by default");
        assert!((path.miles() - plan.miles).abs() < 1e-12);
    }

    #[test]
    fn the_flight_starts_and_ends_at_the_drones_depot() {
        let config =
            FleetConfig { size: 1, depots: vec![Depot::new("x", "X", 47.5, -122.3)], ..FleetConfig::default() };
        let fleet = initial_fleet(&config);
        let r = request(1.0, Point::new(47.6, -122.3));
        let plan = choose_drone(&fleet, &r, now(), &config).unwrap();
        let expected = distance_miles(Point::new(47.5, -122.3), r.pickup)
            + distance_miles(r.pickup, r.dropoff)
            + distance_miles(r.dropoff, Point::new(47.5, -122.3));
        assert!((plan.miles - expected).abs() < 1e-9);
        assert!(plan.miles > 13.0, "{}", plan.miles);
    }

    #[test]
    fn expedited_requests_are_never_held_back() {
        assert!(may_take_drone(true, 0, 1));
        assert!(may_take_drone(true, 5, 1), "one free drone, five other expedited waiters");
        assert!(may_take_drone(true, 5, 0), "whether a drone is free is the choice's business, not the rule's");
    }

    #[test]
    fn a_standard_request_takes_a_drone_only_while_idle_drones_outnumber_expedited_waiters() {
        // Nobody waits: as before, first come first served.
        assert!(may_take_drone(false, 0, 0));
        assert!(may_take_drone(false, 0, 1));
        // One expedited waiter: the one free drone is its.
        assert!(!may_take_drone(false, 1, 0));
        assert!(!may_take_drone(false, 1, 1));
        assert!(may_take_drone(false, 1, 2));
        // Three waiters: the fourth free drone is the first a standard request may take.
        assert!(!may_take_drone(false, 3, 3));
        assert!(may_take_drone(false, 3, 4));
        assert!(may_take_drone(false, 3, 300));
    }

    #[test]
    fn a_wait_lapses_after_the_configured_time_and_huge_settings_do_not_overflow() {
        let config = FleetConfig::default();
        assert!(config.expedited_wait_secs > 60, "longer than the workflow's longest backoff");
        assert_eq!(waiting_until(now(), &config), now() + Duration::seconds(120));
        let short = FleetConfig { expedited_wait_secs: 1, ..FleetConfig::default() };
        assert_eq!(waiting_until(now(), &short), now() + Duration::seconds(1));
        let _ = waiting_until(now(), &FleetConfig { expedited_wait_secs: u64::MAX, ..FleetConfig::default() });
    }

    #[test]
    fn unusable_fleet_configurations_are_refused() {
        let base = FleetConfig::default();
        assert!(FleetConfig { size: 0, ..base.clone() }.check().is_err());
        assert!(FleetConfig { speed_mph: 0.0, ..base.clone() }.check().is_err());
        assert!(FleetConfig { time_scale: f64::NAN, ..base.clone() }.check().is_err());
        assert!(FleetConfig { depots: vec![], ..base.clone() }.check().is_err());
        assert!(FleetConfig { depots: vec![Depot::new("x", "X", 95.0, 0.0)], ..base.clone() }.check().is_err());
        assert!(FleetConfig { payload_tiers: vec![], ..base.clone() }.check().is_err());
        assert!(FleetConfig { expedited_wait_secs: 86_401, ..base.clone() }.check().is_err());
        assert!(FleetConfig { payload_tiers: vec![5.0, -1.0], ..base }.check().is_err());
    }

    #[test]
    fn a_drone_that_cannot_carry_the_package_is_never_chosen() {
        let config = FleetConfig { size: 2, ..FleetConfig::default() };
        let fleet = initial_fleet(&config);
        assert!(choose_drone(&fleet, &request(10.5, Point::new(47.6, -122.3)), now(), &config).is_none());
        let plan = choose_drone(&fleet, &request(10.0, Point::new(47.58, -122.33)), now(), &config).unwrap();
        assert_eq!(plan.drone_id, "drone-0002", "the nearer SoDo drone carries only 5 kg");
    }
}
