//! Where a delivery's drone is and when it reaches the pickup and the drop-off, from its flight
//! plan ([`Flight`]: depot → pickup → drop-off → depot on great circles, with the real times it
//! is planned to reach each point). Pure: no I/O, `now` is an argument. A plan re-made for a
//! reschedule starts where the drone was (`origin`), and with the package on board its pickup
//! leg is empty: origin → drop-off → depot.
//!
//! **Position.** The leg the plan has the drone on at `now`, and the fraction of that leg's
//! planned time gone by, placed on the leg's great circle ([`platform::geo::intermediate`]).
//!
//! **ETAs.** From where the drone is now, the rest of its path flown at its speed: the remaining
//! miles divided by `speedMph` give simulated hours, which the time scale turns into real time.
//! A drone is never earlier than its plan (the plan, not the speed, says where it is), so an ETA
//! is the planned time plus the *delay* the speed implies, never minus:
//!
//! - on a leg planned to take `L` real ms whose miles take `T` real ms at the drone's speed,
//!   with `left` planned ms to go, the drone still has `left / L` of the leg's miles to fly,
//!   which takes `left · T / L`; it arrives `left · max(0, T/L − 1)` after the leg's planned end;
//! - a leg started `late` ms late ends `late + (T − L)` late when it is flown slower than
//!   planned (`T ≥ L`), and catches up its slack otherwise: `max(0, late − (L − T))`.
//!
//! When the drone keeps its speed (`T = L`, as the drone scheduler plans) both ETAs are exactly
//! the planned times; either way they never increase as time advances, which the property test
//! below checks over many random flights (the delays are computed so that this also holds
//! in floating point, not only on paper).

use chrono::{DateTime, Duration, Utc};
use contracts::Location;
use contracts::events::Flight;
use platform::geo::{self, Point};

/// When the drone is expected at the pickup and at the drop-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etas {
    pub pickup: DateTime<Utc>,
    pub dropoff: DateTime<Utc>,
}

/// Where the drone is at `now`: at its depot until it departs, then along depot → pickup →
/// drop-off → depot by the flight's times, at its depot once back. At a waypoint's time it is
/// at that waypoint, even when the plan gives the next leg no time at all.
pub fn position(flight: &Flight, now: DateTime<Utc>) -> Location {
    let (start, pickup_leg_end) = (origin(flight), dropoff_leg_start(flight));
    if now <= flight.pickup_at {
        along(start, pickup_leg_end, flight.departed_at, flight.pickup_at, now)
    } else if now <= flight.dropoff_at {
        along(pickup_leg_end, flight.dropoff, flight.pickup_at, flight.dropoff_at, now)
    } else {
        along(flight.dropoff, flight.depot, flight.dropoff_at, flight.back_at, now)
    }
}

/// Where the drone is for its delivery at `now`: `None` before it departs (it is not flying for
/// the delivery yet), its position while it flies to the pickup and on to the drop-off, and the
/// drop-off once it is there by plan (on the way home it no longer flies for the delivery).
pub fn delivery_position(flight: &Flight, now: DateTime<Utc>) -> Option<Location> {
    if now < flight.departed_at {
        None
    } else if now >= flight.dropoff_at {
        Some(flight.dropoff)
    } else {
        Some(position(flight, now))
    }
}

/// The ETAs at `now` (see the module docs). A flight whose speed or time scale is not a
/// positive number says nothing about delays: its planned times are the ETAs.
pub fn etas(flight: &Flight, now: DateTime<Utc>) -> Etas {
    let planned = Etas { pickup: flight.pickup_at, dropoff: flight.dropoff_at };
    let Some(ms_per_mile) = real_ms_per_mile(flight) else { return planned };
    let (start, pickup_leg_end) = (origin(flight), dropoff_leg_start(flight));
    let to_pickup = Leg::new(flight.departed_at, flight.pickup_at, start, pickup_leg_end, ms_per_mile);
    let to_dropoff = Leg::new(flight.pickup_at, flight.dropoff_at, pickup_leg_end, flight.dropoff, ms_per_mile);
    let now_ms = now.timestamp_millis();
    let (pickup_late, dropoff_late) = if now_ms < to_pickup.end_ms {
        let late = to_pickup.delay_at(now_ms);
        (late, to_dropoff.delay_after(late))
    } else {
        (0.0, to_dropoff.delay_at(now_ms))
    };
    Etas { pickup: later_by(planned.pickup, pickup_late), dropoff: later_by(planned.dropoff, dropoff_late) }
}

/// Where the plan starts: the depot, or where the drone was when the plan was re-made.
fn origin(flight: &Flight) -> Location {
    flight.origin.unwrap_or(flight.depot)
}

/// Where the leg to the drop-off starts: the pickup, or the plan's origin when the package was
/// already on board (the pickup leg is then empty).
fn dropoff_leg_start(flight: &Flight) -> Location {
    if flight.carrying { origin(flight) } else { flight.pickup }
}

/// Real milliseconds a mile takes: `speedMph` simulated miles per simulated hour, and
/// `timeScale` simulated seconds per real second.
fn real_ms_per_mile(flight: &Flight) -> Option<f64> {
    let valid = |x: f64| x.is_finite() && x > 0.0;
    let ms = 3_600_000.0 / (flight.speed_mph * flight.time_scale);
    (valid(flight.speed_mph) && valid(flight.time_scale) && valid(ms)).then_some(ms)
}

/// One leg of the flight, in real milliseconds.
struct Leg {
    start_ms: i64,
    end_ms: i64,
    /// Its planned duration, `L`.
    planned: f64,
    /// How long its miles take at the drone's speed, `T`.
    flying: f64,
}

impl Leg {
    fn new(start: DateTime<Utc>, end: DateTime<Utc>, from: Location, to: Location, ms_per_mile: f64) -> Self {
        let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
        let flying = geo::distance_miles(point(from), point(to)) * ms_per_mile;
        Self { start_ms, end_ms, planned: (end_ms - start_ms) as f64, flying }
    }

    /// How much later than planned the drone ends this leg when at `now_ms` it is where the
    /// plan puts it: `left · max(0, T/L − 1)`. Non-increasing in `now_ms`, in floating point too:
    /// `left` only shrinks and the factor is a constant.
    fn delay_at(&self, now_ms: i64) -> f64 {
        let left = (self.end_ms - now_ms.max(self.start_ms)).max(0) as f64;
        if self.planned <= 0.0 || left <= 0.0 {
            return 0.0;
        }
        left * (self.flying / self.planned - 1.0).max(0.0)
    }

    /// How late the drone ends this leg when it starts it `late` ms late. Non-decreasing in
    /// `late`, and with `late = 0` the very expression [`Leg::delay_at`] gives at the leg's start,
    /// so the delivery ETA does not jump when the drone passes the pickup.
    fn delay_after(&self, late: f64) -> f64 {
        if self.planned <= 0.0 {
            return late;
        }
        if self.flying >= self.planned {
            late + self.planned * (self.flying / self.planned - 1.0)
        } else {
            (late - (self.planned - self.flying)).max(0.0)
        }
    }
}

fn later_by(planned: DateTime<Utc>, delay_ms: f64) -> DateTime<Utc> {
    // Whole milliseconds: rounding keeps the order of the delays, and `as` saturates.
    planned + Duration::milliseconds(delay_ms.round() as i64)
}

/// The drone's position `now` on the leg from `from` (at `start`) to `to` (at `end`): exactly
/// at either end outside the leg's time, so the drone is at the pickup at the pickup time.
fn along(from: Location, to: Location, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Location {
    let (start_ms, end_ms, now_ms) = (start.timestamp_millis(), end.timestamp_millis(), now.timestamp_millis());
    if now_ms >= end_ms {
        return to;
    }
    if now_ms <= start_ms {
        return from;
    }
    let fraction = (now_ms - start_ms) as f64 / (end_ms - start_ms) as f64;
    location(geo::intermediate(point(from), point(to), fraction))
}

fn point(l: Location) -> Point {
    Point { latitude: l.latitude, longitude: l.longitude, altitude: l.altitude }
}

fn location(p: Point) -> Location {
    Location::new(p.latitude, p.longitude, p.altitude)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
    }

    /// A flight planned the way the drone scheduler plans it: each leg's real time is its miles
    /// at `speed_mph`, scaled by `time_scale`, in whole milliseconds.
    fn planned(depot: Location, pickup: Location, dropoff: Location, speed_mph: f64, time_scale: f64) -> Flight {
        let leg = |a: Location, b: Location| {
            let hours = geo::distance_miles(point(a), point(b)) / speed_mph;
            Duration::milliseconds((hours * 3_600_000.0 / time_scale).round() as i64)
        };
        let departed_at = t0();
        let pickup_at = departed_at + leg(depot, pickup);
        let dropoff_at = pickup_at + leg(pickup, dropoff);
        let back_at = dropoff_at + leg(dropoff, depot);
        Flight {
            drone_id: "drone-0001".to_owned(),
            depot,
            origin: None,
            carrying: false,
            pickup,
            dropoff,
            speed_mph,
            time_scale,
            departed_at,
            pickup_at,
            dropoff_at,
            back_at,
        }
    }

    fn seattle() -> Flight {
        planned(
            Location::new(47.60, -122.33, 0.0),
            Location::new(47.65, -122.30, 0.0),
            Location::new(47.70, -122.20, 0.0),
            40.0,
            60.0,
        )
    }

    fn close_to(a: Location, b: Location) -> bool {
        geo::distance_miles(point(a), point(b)) < 1e-6
    }

    #[test]
    fn the_drone_is_at_each_waypoint_at_its_planned_time() {
        let f = seattle();
        assert_eq!(position(&f, f.departed_at - Duration::minutes(5)), f.depot, "not departed yet");
        assert_eq!(position(&f, f.departed_at), f.depot);
        assert_eq!(position(&f, f.pickup_at), f.pickup);
        assert_eq!(position(&f, f.dropoff_at), f.dropoff);
        assert_eq!(position(&f, f.back_at), f.depot);
        assert_eq!(position(&f, f.back_at + Duration::hours(1)), f.depot, "home");
    }

    #[test]
    fn halfway_in_time_is_halfway_along_the_leg() {
        let f = seattle();
        let half = f.pickup_at + (f.dropoff_at - f.pickup_at) / 2;
        let at = position(&f, half);
        let (to_start, to_end) =
            (geo::distance_miles(point(f.pickup), point(at)), geo::distance_miles(point(at), point(f.dropoff)));
        assert!((to_start - to_end).abs() < 1e-3, "{to_start} vs {to_end}");
    }

    #[test]
    fn the_delivery_sees_the_drone_from_departure_to_the_dropoff() {
        let f = seattle();
        assert_eq!(delivery_position(&f, f.departed_at - Duration::seconds(1)), None);
        assert_eq!(delivery_position(&f, f.departed_at), Some(f.depot));
        assert_eq!(delivery_position(&f, f.pickup_at), Some(f.pickup));
        let between = delivery_position(&f, f.pickup_at + Duration::seconds(1)).unwrap();
        assert!(!close_to(between, f.pickup) && !close_to(between, f.dropoff));
        assert_eq!(delivery_position(&f, f.back_at), Some(f.dropoff), "flying home is not for the delivery");
    }

    #[test]
    fn a_drone_keeping_its_speed_arrives_as_planned() {
        let f = seattle();
        for now in [f.departed_at - Duration::minutes(1), f.departed_at, f.pickup_at, f.dropoff_at, f.back_at] {
            assert_eq!(etas(&f, now), Etas { pickup: f.pickup_at, dropoff: f.dropoff_at }, "{now}");
        }
    }

    /// Within the millisecond or two the plan's rounding leaves.
    fn near(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        (a - b).num_milliseconds().abs() <= 2
    }

    #[test]
    fn a_drone_slower_than_its_plan_is_late_by_the_rest_of_its_path() {
        // Planned at 40 mph, but it flies 20: each leg takes twice its planned time.
        let mut f = seattle();
        f.speed_mph = 20.0;
        let to_pickup = f.pickup_at - f.departed_at;
        let to_dropoff = f.dropoff_at - f.pickup_at;
        let at_departure = etas(&f, f.departed_at);
        assert!(near(at_departure.pickup, f.departed_at + to_pickup * 2), "{at_departure:?}");
        assert!(near(at_departure.dropoff, f.departed_at + to_pickup * 2 + to_dropoff * 2), "{at_departure:?}");
        // Halfway to the pickup (by plan) the other half of the miles takes a whole leg's time.
        let halfway = f.departed_at + to_pickup / 2;
        let eta = etas(&f, halfway).pickup;
        assert!(near(eta, halfway + to_pickup), "{eta}");
        assert!(near(etas(&f, f.pickup_at).dropoff, f.pickup_at + to_dropoff * 2));
        // A nonsensical speed says nothing: the plan stands.
        f.speed_mph = 0.0;
        assert_eq!(etas(&f, halfway), Etas { pickup: f.pickup_at, dropoff: f.dropoff_at });
    }

    fn random_location(rng: &mut StdRng) -> Location {
        Location::new(rng.random_range(47.40..47.80), rng.random_range(-122.45..-122.10), rng.random_range(0.0..120.0))
    }

    /// Any flight: planned as the scheduler does, or with random leg times (faster or slower
    /// than the speed says, zero-length legs included).
    fn random_flight(rng: &mut StdRng) -> Flight {
        let mut f = planned(
            random_location(rng),
            random_location(rng),
            random_location(rng),
            rng.random_range(5.0..120.0),
            rng.random_range(1.0..600.0),
        );
        f.departed_at = t0() + Duration::milliseconds(rng.random_range(0..86_400_000));
        if rng.random_bool(0.5) {
            let mut at = f.departed_at;
            let mut leg = |rng: &mut StdRng| {
                at += Duration::milliseconds(if rng.random_bool(0.1) { 0 } else { rng.random_range(1..7_200_000) });
                at
            };
            (f.pickup_at, f.dropoff_at, f.back_at) = (leg(rng), leg(rng), leg(rng));
        } else {
            let shift = f.departed_at - t0();
            (f.pickup_at, f.dropoff_at, f.back_at) = (f.pickup_at + shift, f.dropoff_at + shift, f.back_at + shift);
        }
        f
    }

    /// Property: over many random flights and times, ETAs never increase as time advances, the
    /// drone is exactly at each waypoint at its planned time, and a flight planned from its speed
    /// is on time (to the millisecond the plan was rounded to).
    #[test]
    fn etas_never_increase_and_waypoints_are_met_on_random_flights() {
        let mut rng = StdRng::seed_from_u64(0x0D0E_11BE_7E5D);
        for case in 0..2_000 {
            let f = random_flight(&mut rng);
            assert_eq!(position(&f, f.pickup_at), f.pickup, "case {case}: {f:?}");
            assert_eq!(delivery_position(&f, f.dropoff_at), Some(f.dropoff), "case {case}");

            let span = (f.back_at - f.departed_at).num_milliseconds() + 1_200_000;
            let mut times: Vec<DateTime<Utc>> = (0..60)
                .map(|_| f.departed_at - Duration::minutes(10) + Duration::milliseconds(rng.random_range(0..span)))
                .chain([f.departed_at, f.pickup_at, f.dropoff_at, f.back_at])
                .chain([f.pickup_at - Duration::milliseconds(1), f.dropoff_at - Duration::milliseconds(1)])
                .collect();
            times.sort();
            let mut previous: Option<Etas> = None;
            for now in times {
                let eta = etas(&f, now);
                if let Some(before) = previous {
                    assert!(eta.pickup <= before.pickup, "case {case}: pickup ETA rose at {now}: {f:?}");
                    assert!(eta.dropoff <= before.dropoff, "case {case}: delivery ETA rose at {now}: {f:?}");
                }
                assert!(eta.pickup >= f.pickup_at && eta.dropoff >= f.dropoff_at, "never early: case {case}");
                previous = Some(eta);
            }
        }
    }

    #[test]
    fn flights_planned_from_their_speed_are_on_time() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..500 {
            let f = planned(
                random_location(&mut rng),
                random_location(&mut rng),
                random_location(&mut rng),
                rng.random_range(5.0..120.0),
                rng.random_range(1.0..600.0),
            );
            for _ in 0..20 {
                let now = f.departed_at + (f.back_at - f.departed_at) * rng.random_range(0..1000) / 1000;
                let eta = etas(&f, now);
                // The plan is rounded to whole milliseconds, so the speed may be off by that much.
                assert!((eta.pickup - f.pickup_at).num_milliseconds() <= 1, "case {case}: {eta:?} {f:?}");
                assert!((eta.dropoff - f.dropoff_at).num_milliseconds() <= 2, "case {case}: {eta:?} {f:?}");
            }
        }
    }

    #[test]
    fn a_replanned_flight_starts_where_the_drone_was() {
        let origin = Location::new(47.62, -122.32, 0.0);
        let first = seattle();
        let mut replanned = planned(origin, first.pickup, first.dropoff, 40.0, 60.0);
        replanned.depot = first.depot;
        replanned.origin = Some(origin);
        assert!(close_to(position(&replanned, replanned.departed_at), origin), "not at the depot");
        assert!(close_to(position(&replanned, replanned.pickup_at), first.pickup));
        assert_eq!(etas(&replanned, replanned.departed_at).pickup, replanned.pickup_at);

        // With the package on board the pickup leg is empty: straight to the drop-off.
        let mut carrying = planned(origin, origin, first.dropoff, 40.0, 60.0);
        (carrying.depot, carrying.origin, carrying.carrying, carrying.pickup) =
            (first.depot, Some(origin), true, first.pickup);
        assert_eq!(carrying.pickup_at, carrying.departed_at);
        let halfway = carrying.departed_at + (carrying.dropoff_at - carrying.departed_at) / 2;
        let expected = location(geo::intermediate(point(origin), point(first.dropoff), 0.5));
        assert!(close_to(position(&carrying, halfway), expected), "on origin → drop-off, not via the pickup");
        assert_eq!(etas(&carrying, halfway).dropoff, carrying.dropoff_at);
    }
}
