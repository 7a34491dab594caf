//! The fleet and how a drone is chosen. Pure: no I/O, no clock of its own.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use contracts::Location;
use contracts::drone::DroneDeliveryRequest;
use platform::Problem;
use platform::geo::{Point, distance_miles};

/// A drone's home, where it rests between flights.
#[derive(Debug, Clone, PartialEq)]
pub struct Depot {
    pub id: &'static str,
    pub name: &'static str,
    pub location: Point,
}

/// Fabrikam's depots around Seattle.
pub const DEPOTS: &[Depot] = &[
    Depot { id: "sodo", name: "SoDo", location: Point { latitude: 47.5802, longitude: -122.3353, altitude: 0.0 } },
    Depot {
        id: "ballard",
        name: "Ballard",
        location: Point { latitude: 47.6687, longitude: -122.3847, altitude: 0.0 },
    },
    Depot {
        id: "northgate",
        name: "Northgate",
        location: Point { latitude: 47.7062, longitude: -122.3252, altitude: 0.0 },
    },
    Depot {
        id: "bellevue",
        name: "Bellevue",
        location: Point { latitude: 47.6101, longitude: -122.2015, altitude: 0.0 },
    },
];

/// Payload classes, kilograms, assigned to drones in turn.
pub const PAYLOAD_TIERS: &[f64] = &[5.0, 10.0, 25.0];

/// How the fleet is built and flown.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub size: u32,
    pub speed_mph: f64,
    /// Simulated seconds per real second: a 30-minute flight keeps a drone busy 30 s at 60.
    pub time_scale: f64,
    /// Seconds a caller should wait when no drone is free.
    pub retry_after_secs: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self { size: 300, speed_mph: 40.0, time_scale: 60.0, retry_after_secs: 5 }
    }
}

impl FleetConfig {
    /// The heaviest package any drone can carry.
    pub fn max_payload(&self) -> f64 {
        let tiers = usize::try_from(self.size).unwrap_or(usize::MAX).min(PAYLOAD_TIERS.len());
        PAYLOAD_TIERS[..tiers].iter().copied().fold(0.0, f64::max)
    }
}

/// A drone as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneRecord {
    pub id: String,
    pub depot_id: String,
    pub max_payload: f64,
    pub speed_mph: f64,
    pub busy_until: DateTime<Utc>,
    pub current_delivery_id: Option<String>,
}

/// The fleet a new installation starts with: deterministic, so two runs agree.
pub fn initial_fleet(config: &FleetConfig) -> Vec<DroneRecord> {
    (0..config.size as usize)
        .map(|i| DroneRecord {
            id: format!("drone-{:04}", i + 1),
            depot_id: DEPOTS[i % DEPOTS.len()].id.to_owned(),
            max_payload: PAYLOAD_TIERS[i % PAYLOAD_TIERS.len()],
            speed_mph: config.speed_mph,
            busy_until: DateTime::<Utc>::UNIX_EPOCH,
            current_delivery_id: None,
        })
        .collect()
}

pub fn depot(id: &str) -> Option<&'static Depot> {
    DEPOTS.iter().find(|d| d.id == id)
}

/// A validated assignment request.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRequest {
    pub delivery_id: String,
    pub owner_id: String,
    pub pickup: Point,
    pub dropoff: Point,
    pub weight: f64,
    pub expedited: bool,
}

/// Checks a PUT body against the path and the fleet; every bad field is named.
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
        pickup,
        dropoff,
        weight,
        expedited: body.expedited,
    })
}

fn point(location: &Location, field: &str, errors: &mut BTreeMap<String, String>) -> Point {
    let p = Point { latitude: location.latitude, longitude: location.longitude, altitude: location.altitude };
    if !p.is_valid() {
        errors.insert(field.to_owned(), "latitude must be in [-90, 90] and longitude in [-180, 180]".to_owned());
    }
    p
}

/// The chosen drone's flight.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightPlan {
    pub drone_id: String,
    pub depot_id: String,
    pub miles: f64,
    pub hours: f64,
    pub busy_until: DateTime<Utc>,
}

/// Picks the free drone able to carry the package whose depot is nearest the pickup (ties by
/// id), and plans depot → pickup → drop-off → depot. `None` when no drone can take it now.
pub fn choose_drone(
    candidates: &[DroneRecord],
    request: &AssignmentRequest,
    now: DateTime<Utc>,
    fleet: &FleetConfig,
) -> Option<FlightPlan> {
    let chosen = candidates
        .iter()
        .filter(|d| d.busy_until <= now && d.max_payload >= request.weight)
        .filter_map(|d| depot(&d.depot_id).map(|depot| (d, depot)))
        .min_by(|(a, da), (b, db)| {
            let (ka, kb) = (distance_miles(da.location, request.pickup), distance_miles(db.location, request.pickup));
            ka.total_cmp(&kb).then_with(|| a.id.cmp(&b.id))
        })?;
    let (drone, depot) = chosen;
    let miles = distance_miles(depot.location, request.pickup)
        + distance_miles(request.pickup, request.dropoff)
        + distance_miles(request.dropoff, depot.location);
    let hours = if drone.speed_mph > 0.0 { miles / drone.speed_mph } else { 0.0 };
    let real_ms = hours * 3_600_000.0 / fleet.time_scale.max(f64::MIN_POSITIVE);
    Some(FlightPlan {
        drone_id: drone.id.clone(),
        depot_id: depot.id.to_owned(),
        miles,
        hours,
        busy_until: now + Duration::milliseconds(real_ms.ceil().min(i64::MAX as f64) as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(weight: f64, pickup: Point) -> AssignmentRequest {
        AssignmentRequest {
            delivery_id: "d1".into(),
            owner_id: "o".into(),
            pickup,
            dropoff: Point::new(47.62, -122.35),
            weight,
            expedited: false,
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
}
