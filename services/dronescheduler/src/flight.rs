//! A drone's flight for one delivery as pure functions of time: where the drone is, what it is
//! doing, and how a release before the pickup turns it back home. No I/O, no clock of its own.
//!
//! A flight leaves the depot at the assignment time and flies depot → pickup → drop-off → depot
//! along great circles at the drone's speed. A reschedule that moves the pickup or the drop-off
//! re-plans it from where the drone then is ([`FlightPath::rerouted_at`]): the new plan starts at
//! that point (its `origin`), and with the package already on board it flies straight to the
//! drop-off. Its times are real (wall-clock) times: simulated
//! hours divided by the fleet's time scale. Every waypoint time is rounded up to the millisecond
//! from the departure, cumulatively (so rounding never adds up over the legs), because the stores
//! keep milliseconds and a flight must read back exactly as it was planned.

use chrono::{DateTime, Utc};
use contracts::Location;
use platform::clock::{from_unix_millis, unix_millis};
use platform::geo::{Point, distance_miles, intermediate};

/// Longest flight time we represent, in real milliseconds (about 300 years): keeps the arithmetic
/// on times far from overflow whatever the speed and time scale.
const LONGEST_FLIGHT_MS: f64 = 1e13;

/// What a drone on a flight is doing at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between its depot and the pickup.
    ToPickup,
    /// Carrying the package to the drop-off.
    ToDropoff,
    /// On the way home: after the drop-off, or turned back by a release before the pickup.
    Returning,
    /// Home again: the flight is over.
    Done,
}

impl Phase {
    /// The drone's status as `GET /api/drones` shows it.
    pub fn status(self) -> &'static str {
        match self {
            Phase::ToPickup => "flying-to-pickup",
            Phase::ToDropoff => "flying-to-dropoff",
            Phase::Returning => "returning",
            Phase::Done => "idle",
        }
    }
}

/// Where and when a flight released before its pickup turned back, and when it is home.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnBack {
    pub at: DateTime<Utc>,
    pub from: Point,
    pub home_at: DateTime<Utc>,
}

/// One delivery's flight: the plan made at assignment, and the turn-back if it was cut short.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightPath {
    pub drone_id: String,
    pub depot: Point,
    /// Where this plan starts: the depot, or where the drone was when the plan was re-made.
    pub origin: Point,
    /// The package was on board when this plan was made: it flies origin → drop-off → depot, and
    /// `pickup_at` is the plan's start.
    pub carrying: bool,
    /// Miles flown for the delivery before this plan began (0 for the plan made at assignment).
    pub flown_before_miles: f64,
    /// How many times the flight was re-planned for a reschedule (0: the assignment's plan).
    pub replans: i64,
    pub pickup: Point,
    pub dropoff: Point,
    /// Simulated miles per hour.
    pub speed_mph: f64,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    pub departed_at: DateTime<Utc>,
    /// The plan: when the drone reaches the pickup, the drop-off and its depot again. Kept as
    /// planned after a turn-back (the events already published were announced from it).
    pub pickup_at: DateTime<Utc>,
    pub dropoff_at: DateTime<Utc>,
    pub back_at: DateTime<Utc>,
    pub turned_back: Option<TurnBack>,
    /// Real milliseconds between the drone's reported positions while it flies for the delivery
    /// ([`FlightPath::position_times`]); 0: none. Part of the flight, so that its events follow
    /// from the flight alone whatever the scheduler's settings are by the time they are due.
    pub position_every_ms: i64,
}

/// Real milliseconds a drone at `speed_mph` needs for `miles` when `time_scale` simulated seconds
/// pass per real second, rounded up so a drone never arrives before its time. A drone that
/// cannot move (speed 0) is there at once, as the first version of the scheduler had it.
pub fn real_millis(miles: f64, speed_mph: f64, time_scale: f64) -> i64 {
    if !(speed_mph > 0.0 && miles > 0.0) {
        return 0;
    }
    let ms = miles / speed_mph * 3_600_000.0 / time_scale.max(f64::MIN_POSITIVE);
    ms.ceil().min(LONGEST_FLIGHT_MS) as i64
}

/// A straight piece of the flight: from `from` at `start` to `to` at `end`.
struct Leg {
    from: Point,
    to: Point,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Leg {
    /// Where the drone is at `t`, proportionally in time along the great circle. Exactly a
    /// waypoint at and beyond either end, so phase boundaries land on the waypoints themselves.
    fn position_at(&self, t: DateTime<Utc>) -> Point {
        let span = (self.end - self.start).num_milliseconds();
        let elapsed = (t - self.start).num_milliseconds();
        if elapsed <= 0 && span > 0 {
            return self.from;
        }
        if elapsed >= span {
            return self.to;
        }
        intermediate(self.from, self.to, elapsed as f64 / span as f64)
    }
}

impl FlightPath {
    /// Plans depot → pickup → drop-off → depot, leaving at `departure` (to the millisecond).
    pub fn plan(
        drone_id: &str,
        depot: Point,
        pickup: Point,
        dropoff: Point,
        speed_mph: f64,
        time_scale: f64,
        departure: DateTime<Utc>,
    ) -> Self {
        let departed = unix_millis(departure);
        let to_pickup = distance_miles(depot, pickup);
        let to_dropoff = to_pickup + distance_miles(pickup, dropoff);
        let total = to_dropoff + distance_miles(dropoff, depot);
        let after = |miles: f64| from_unix_millis(departed + real_millis(miles, speed_mph, time_scale));
        FlightPath {
            drone_id: drone_id.to_owned(),
            depot,
            origin: depot,
            carrying: false,
            flown_before_miles: 0.0,
            replans: 0,
            pickup,
            dropoff,
            speed_mph,
            time_scale,
            departed_at: from_unix_millis(departed),
            pickup_at: after(to_pickup),
            dropoff_at: after(to_dropoff),
            back_at: after(total),
            turned_back: None,
            position_every_ms: 0,
        }
    }

    /// The same flight reporting its position every `every` (real time; zero: never).
    pub fn with_positions_every(mut self, every: std::time::Duration) -> Self {
        self.position_every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// When the drone reports where it is: every [`FlightPath::position_every_ms`] after the
    /// departure while it flies for the delivery, i.e. before the drop-off, or up to and
    /// including the turn when a release turned it back (a position due at the turn may have gone
    /// out before the release was known, so it stays in the list). Nothing is reported on the
    /// way home: the delivery no longer follows the drone then.
    pub fn position_times(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let every = self.position_every_ms;
        let start = unix_millis(self.departed_at);
        let ends_at = |t: i64| match self.turned_back {
            Some(turn) => t <= unix_millis(turn.at),
            None => t < unix_millis(self.dropoff_at),
        };
        (1_i64..)
            .map_while(move |k| if every > 0 { start.checked_add(every.checked_mul(k)?) } else { None })
            .take_while(move |t| ends_at(*t))
            .map(from_unix_millis)
    }

    /// When the drone is home and free again.
    pub fn home_at(&self) -> DateTime<Utc> {
        self.turned_back.map_or(self.back_at, |turn| turn.home_at)
    }

    /// Miles the flight covers: what was flown before this plan, then the whole plan, or after a
    /// turn-back the way out to where it turned plus the way home (what utilization counts).
    pub fn miles(&self) -> f64 {
        let this_plan = match self.turned_back {
            Some(turn) => distance_miles(self.origin, turn.from) + distance_miles(turn.from, self.depot),
            None => {
                distance_miles(self.origin, self.dropoff_leg_start())
                    + distance_miles(self.dropoff_leg_start(), self.dropoff)
                    + distance_miles(self.dropoff, self.depot)
            }
        };
        self.flown_before_miles + this_plan
    }

    /// Where the leg to the drop-off starts: the pickup, or the plan's origin when the package was
    /// already on board.
    fn dropoff_leg_start(&self) -> Point {
        if self.carrying { self.origin } else { self.pickup }
    }

    /// Simulated hours of flying for [`FlightPath::miles`].
    pub fn hours(&self) -> f64 {
        if self.speed_mph > 0.0 { self.miles() / self.speed_mph } else { 0.0 }
    }

    /// What the drone is doing at `t`. Before the departure it counts as leaving for the pickup.
    pub fn phase_at(&self, t: DateTime<Utc>) -> Phase {
        if let Some(turn) = self.turned_back {
            return if t < turn.at {
                Phase::ToPickup
            } else if t < turn.home_at {
                Phase::Returning
            } else {
                Phase::Done
            };
        }
        if t < self.pickup_at {
            Phase::ToPickup
        } else if t < self.dropoff_at {
            Phase::ToDropoff
        } else if t < self.back_at {
            Phase::Returning
        } else {
            Phase::Done
        }
    }

    /// Where `phase` is headed; `None` once the flight is over.
    pub fn goal(&self, phase: Phase) -> Option<Point> {
        match phase {
            Phase::ToPickup => Some(self.pickup),
            Phase::ToDropoff => Some(self.dropoff),
            Phase::Returning => Some(self.depot),
            Phase::Done => None,
        }
    }

    /// Where the drone is at `t`: on the leg of its phase, at the depot before and after.
    pub fn position_at(&self, t: DateTime<Utc>) -> Point {
        match self.leg(self.phase_at(t)) {
            Some(leg) => leg.position_at(t),
            None => self.depot,
        }
    }

    fn leg(&self, phase: Phase) -> Option<Leg> {
        let leg = |from, to, start, end| Some(Leg { from, to, start, end });
        match (phase, self.turned_back) {
            // Before a turn-back the drone was on its planned way out.
            (Phase::ToPickup, _) if self.carrying => leg(self.origin, self.origin, self.departed_at, self.pickup_at),
            (Phase::ToPickup, _) => leg(self.origin, self.pickup, self.departed_at, self.pickup_at),
            (Phase::ToDropoff, _) => leg(self.dropoff_leg_start(), self.dropoff, self.pickup_at, self.dropoff_at),
            (Phase::Returning, Some(turn)) => leg(turn.from, self.depot, turn.at, turn.home_at),
            (Phase::Returning, None) => leg(self.dropoff, self.depot, self.dropoff_at, self.back_at),
            (Phase::Done, _) => None,
        }
    }

    /// The flight once its delivery is released at `at`. Before the pickup the drone turns back
    /// from where it is, straight home, and is busy until it gets there. From the pickup on the
    /// flight goes on as planned (the delivery service refuses such cancels anyway), and a
    /// flight turned back once stays as it is: both are `None`.
    pub fn released_at(&self, at: DateTime<Utc>) -> Option<FlightPath> {
        if self.turned_back.is_some() || at >= self.pickup_at {
            return None;
        }
        let at = from_unix_millis(unix_millis(at.max(self.departed_at)));
        let from = self.position_at(at);
        let way_home = real_millis(distance_miles(from, self.depot), self.speed_mph, self.time_scale);
        let home_at = from_unix_millis(unix_millis(at) + way_home);
        Some(FlightPath { turned_back: Some(TurnBack { at, from, home_at }), ..self.clone() })
    }

    /// The flight re-planned at `at` for a delivery whose places are now `pickup` and `dropoff`:
    /// from where the drone is then, to the (new) pickup and on, or, with the package already on
    /// board, straight to the (new) drop-off. `Ok(None)` when the places are the ones planned (a
    /// retried reschedule changes nothing). Refused, with the reason, once the drone is at the
    /// drop-off, after a release turned it back, and for a new pickup once the package is on
    /// board.
    pub fn rerouted_at(&self, at: DateTime<Utc>, pickup: Point, dropoff: Point) -> Result<Option<FlightPath>, String> {
        if self.turned_back.is_some() {
            return Err("the delivery was cancelled and its drone turned back".to_owned());
        }
        let at = from_unix_millis(unix_millis(at.max(self.departed_at)));
        if at >= self.dropoff_at {
            return Err("the drone has already reached the drop-off".to_owned());
        }
        let same = |a: Point, b: Point| distance_miles(a, b) < 1e-6 && (a.altitude - b.altitude).abs() < 1e-6;
        if same(pickup, self.pickup) && same(dropoff, self.dropoff) {
            return Ok(None);
        }
        let carrying = self.carrying || at >= self.pickup_at;
        if carrying && !same(pickup, self.pickup) {
            return Err("the package has been picked up; the pickup can no longer move".to_owned());
        }
        let origin = self.position_at(at);
        let flown_this_plan = match self.phase_at(at) {
            Phase::ToPickup => distance_miles(self.origin, origin),
            _ => {
                distance_miles(self.origin, self.dropoff_leg_start()) + distance_miles(self.dropoff_leg_start(), origin)
            }
        };
        let start = unix_millis(at);
        let after = |miles: f64| from_unix_millis(start + real_millis(miles, self.speed_mph, self.time_scale));
        let to_pickup = if carrying { 0.0 } else { distance_miles(origin, pickup) };
        let to_dropoff = to_pickup + distance_miles(if carrying { origin } else { pickup }, dropoff);
        Ok(Some(FlightPath {
            origin,
            carrying,
            flown_before_miles: self.flown_before_miles + flown_this_plan,
            replans: self.replans + 1,
            pickup,
            dropoff,
            departed_at: at,
            pickup_at: after(to_pickup),
            dropoff_at: after(to_dropoff),
            back_at: after(to_dropoff + distance_miles(dropoff, self.depot)),
            turned_back: None,
            ..self.clone()
        }))
    }

    /// The plan as `drone-events` carries it (in `DroneAssigned` and `FlightReplanned`).
    pub fn contract(&self) -> contracts::events::Flight {
        contracts::events::Flight {
            drone_id: self.drone_id.clone(),
            depot: location(self.depot),
            origin: (self.replans > 0).then(|| location(self.origin)),
            carrying: self.carrying,
            pickup: location(self.pickup),
            dropoff: location(self.dropoff),
            speed_mph: self.speed_mph,
            time_scale: self.time_scale,
            departed_at: self.departed_at,
            pickup_at: self.pickup_at,
            dropoff_at: self.dropoff_at,
            back_at: self.back_at,
        }
    }
}

/// A point as the contracts carry it.
pub fn location(p: Point) -> Location {
    Location::new(p.latitude, p.longitude, p.altitude)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
    }

    fn sodo() -> Point {
        Point::new(47.5802, -122.3353)
    }

    /// SoDo → downtown → Fremont, at 40 mph, 60 times faster than life.
    fn flight() -> FlightPath {
        FlightPath::plan(
            "drone-0001",
            sodo(),
            Point::new(47.6062, -122.3321),
            Point::new(47.6505, -122.3493),
            40.0,
            60.0,
            t0(),
        )
    }

    fn close(a: Point, b: Point) -> bool {
        distance_miles(a, b) < 1e-9
    }

    #[test]
    fn waypoint_times_follow_distance_speed_and_time_scale() {
        let f = flight();
        let leg1 = distance_miles(f.depot, f.pickup);
        let expected_ms = (leg1 / 40.0 * 3_600_000.0 / 60.0).ceil() as i64;
        assert_eq!((f.pickup_at - f.departed_at).num_milliseconds(), expected_ms);
        assert!(f.departed_at < f.pickup_at && f.pickup_at < f.dropoff_at && f.dropoff_at < f.back_at);
        let total_ms = (f.miles() / 40.0 * 3_600_000.0 / 60.0).ceil() as i64;
        assert_eq!((f.back_at - f.departed_at).num_milliseconds(), total_ms, "rounding does not add up");
        assert_eq!(f.home_at(), f.back_at);
        assert!((f.hours() - f.miles() / 40.0).abs() < 1e-12);
        // Twice the time scale, half the real time (give or take the rounding up).
        let fast = FlightPath::plan("d", f.depot, f.pickup, f.dropoff, 40.0, 120.0, t0());
        let half = (f.back_at - t0()).num_milliseconds() as f64 / 2.0;
        assert!(((fast.back_at - t0()).num_milliseconds() as f64 - half).abs() <= 1.0);
    }

    #[test]
    fn phases_follow_the_waypoint_times() {
        let f = flight();
        let ms = Duration::milliseconds(1);
        assert_eq!(f.phase_at(f.departed_at - ms), Phase::ToPickup);
        assert_eq!(f.phase_at(f.departed_at), Phase::ToPickup);
        assert_eq!(f.phase_at(f.pickup_at - ms), Phase::ToPickup);
        assert_eq!(f.phase_at(f.pickup_at), Phase::ToDropoff);
        assert_eq!(f.phase_at(f.dropoff_at), Phase::Returning);
        assert_eq!(f.phase_at(f.back_at - ms), Phase::Returning);
        assert_eq!(f.phase_at(f.back_at), Phase::Done);
        assert_eq!(f.goal(Phase::ToDropoff), Some(f.dropoff));
        assert_eq!(f.goal(Phase::Done), None);
        let statuses: Vec<&str> =
            [Phase::ToPickup, Phase::ToDropoff, Phase::Returning, Phase::Done].map(Phase::status).to_vec();
        assert_eq!(statuses, ["flying-to-pickup", "flying-to-dropoff", "returning", "idle"]);
    }

    #[test]
    fn positions_are_the_waypoints_at_the_boundaries_and_on_the_way_between() {
        let f = flight();
        assert_eq!(f.position_at(f.departed_at - Duration::hours(1)), f.depot);
        assert_eq!(f.position_at(f.departed_at), f.depot);
        assert_eq!(f.position_at(f.pickup_at), f.pickup);
        assert_eq!(f.position_at(f.dropoff_at), f.dropoff);
        assert_eq!(f.position_at(f.back_at), f.depot);
        assert_eq!(f.position_at(f.back_at + Duration::days(1)), f.depot);
        // Half-way in time is half-way in distance along the leg.
        let middle = f.departed_at + (f.pickup_at - f.departed_at) / 2;
        let p = f.position_at(middle);
        let (done, left) = (distance_miles(f.depot, p), distance_miles(p, f.pickup));
        assert!((done - left).abs() < 0.01, "{done} vs {left}");
    }

    #[test]
    fn a_release_before_pickup_turns_the_drone_back_from_where_it_is() {
        let f = flight();
        let at = f.departed_at + Duration::milliseconds((f.pickup_at - f.departed_at).num_milliseconds() / 3);
        let turned = f.released_at(at).expect("before the pickup");
        let turn = turned.turned_back.unwrap();
        assert_eq!((turn.at, turn.from), (at, f.position_at(at)));
        let way_home = real_millis(distance_miles(turn.from, f.depot), 40.0, 60.0);
        assert_eq!(turn.home_at, at + Duration::milliseconds(way_home));
        assert!(turned.home_at() < f.back_at, "home earlier than planned");
        // Flown: out to the turn and back, about two thirds of the way to the pickup.
        let out = distance_miles(f.depot, f.pickup) / 3.0;
        assert!((turned.miles() - 2.0 * out).abs() < 0.01, "{} vs {}", turned.miles(), 2.0 * out);
        // Same way out up to the turn, then straight home.
        assert_eq!(turned.position_at(at - Duration::milliseconds(10)), f.position_at(at - Duration::milliseconds(10)));
        assert_eq!(turned.phase_at(at), Phase::Returning);
        assert_eq!(turned.position_at(at), turn.from);
        assert_eq!(turned.position_at(turn.home_at), f.depot);
        assert_eq!(turned.phase_at(turn.home_at), Phase::Done);
        // The plan it announced is unchanged.
        assert_eq!(turned.contract(), f.contract());
        // Released again, or from the pickup on: the flight goes on as it is.
        assert_eq!(turned.released_at(at + Duration::milliseconds(1)), None);
        assert_eq!(f.released_at(f.pickup_at), None);
        assert_eq!(f.released_at(f.dropoff_at + Duration::seconds(1)), None);
    }

    #[test]
    fn positions_are_reported_every_interval_until_the_drop_off() {
        let f = flight();
        assert_eq!(f.position_times().count(), 0, "off unless asked for");
        // About 2.7 s to the pickup and 7.6 s to the drop-off at 60 times faster than life.
        let f = flight().with_positions_every(std::time::Duration::from_millis(500));
        let times: Vec<_> = f.position_times().collect();
        let flying_ms = (f.dropoff_at - f.departed_at).num_milliseconds();
        assert_eq!(times.len() as i64, (flying_ms - 1) / 500, "{flying_ms} ms of flight");
        assert_eq!(times[0], f.departed_at + Duration::milliseconds(500));
        assert!(times.windows(2).all(|w| w[1] - w[0] == Duration::milliseconds(500)));
        assert!(*times.last().unwrap() < f.dropoff_at);
        // Turned back: up to the turn, nothing on the way home.
        let at = f.departed_at + Duration::seconds(1);
        let turned = f.released_at(at).unwrap();
        let times: Vec<_> = turned.position_times().collect();
        assert_eq!(times, [f.departed_at + Duration::milliseconds(500), at], "the one due at the turn stays");
        // A huge interval reports nothing and never overflows.
        let rare = flight().with_positions_every(std::time::Duration::MAX);
        assert_eq!(rare.position_times().count(), 0);
    }

    #[test]
    fn a_release_at_departure_is_home_at_once_and_flew_nothing() {
        let f = flight();
        for at in [f.departed_at, f.departed_at - Duration::seconds(5)] {
            let turned = f.released_at(at).unwrap();
            assert_eq!(turned.home_at(), f.departed_at);
            assert_eq!(turned.miles(), 0.0);
            assert_eq!(turned.phase_at(f.departed_at), Phase::Done);
        }
    }

    #[test]
    fn degenerate_flights_are_still_well_formed() {
        // Pickup at the depot: the drone is at the pickup on departure.
        let here = FlightPath::plan("d", sodo(), sodo(), Point::new(47.6, -122.3), 40.0, 60.0, t0());
        assert_eq!(here.pickup_at, here.departed_at);
        assert_eq!(here.phase_at(t0()), Phase::ToDropoff);
        assert_eq!(here.position_at(t0()), sodo());
        assert_eq!(here.released_at(t0()), None, "picked up already");
        // A drone that cannot move arrives at once and is never busy.
        let still = FlightPath::plan("d", sodo(), Point::new(47.6, -122.3), sodo(), 0.0, 60.0, t0());
        assert_eq!(still.back_at, t0());
        assert_eq!((still.hours(), still.phase_at(t0())), (0.0, Phase::Done));
        assert_eq!(real_millis(1.0, 40.0, 0.0), LONGEST_FLIGHT_MS as i64, "clamped, never overflowing");
    }

    /// Samples a flight over its whole duration.
    fn samples(f: &FlightPath, n: i64) -> Vec<DateTime<Utc>> {
        let span = (f.home_at() - f.departed_at).num_milliseconds().max(1);
        (0..=n).map(|i| f.departed_at + Duration::milliseconds(span * i / n)).collect()
    }

    fn random_point(rng: &mut StdRng) -> Point {
        let mut p = Point::new(rng.random_range(47.40..47.80), rng.random_range(-122.45..-122.10));
        p.altitude = rng.random_range(0.0..150.0);
        p
    }

    /// Property, over many random flights (some turned back at a random time): while the goal
    /// stays the same the remaining distance to it never grows as time passes, and the drone is
    /// exactly at each waypoint when its phase changes.
    #[test]
    fn the_drone_always_closes_in_on_its_goal_and_passes_through_every_waypoint() {
        let mut rng = StdRng::seed_from_u64(0x06f1_19e7);
        for case in 0..400 {
            let depot = random_point(&mut rng);
            let depot = Point { altitude: 0.0, ..depot };
            let (pickup, dropoff) = (random_point(&mut rng), random_point(&mut rng));
            let speed = rng.random_range(5.0..120.0);
            let scale = rng.random_range(1.0..600.0);
            let mut f = FlightPath::plan("d", depot, pickup, dropoff, speed, scale, t0());
            if case % 3 == 0 {
                let out = (f.pickup_at - f.departed_at).num_milliseconds().max(1);
                let at = f.departed_at + Duration::milliseconds(rng.random_range(0..out));
                f = f.released_at(at).expect("released before the pickup");
            }
            let mut previous: Option<(Phase, f64)> = None;
            for t in samples(&f, 300) {
                let phase = f.phase_at(t);
                let remaining = f.goal(phase).map_or(0.0, |goal| distance_miles(f.position_at(t), goal));
                if let Some((was, before)) = previous
                    && was == phase
                {
                    assert!(remaining <= before + 1e-9, "case {case}: {phase:?} went from {before} to {remaining}");
                }
                previous = Some((phase, remaining));
            }
            assert!(close(f.position_at(f.departed_at), depot), "case {case}");
            assert_eq!(f.position_at(f.home_at()), depot, "case {case}");
            match f.turned_back {
                Some(turn) => {
                    assert_eq!(f.position_at(turn.at), turn.from, "case {case}");
                    // The turn is on the way out: out and back are the same distance.
                    let out = distance_miles(depot, turn.from);
                    assert!(distance_miles(turn.from, pickup) <= distance_miles(depot, pickup) + 1e-9);
                    assert!((f.miles() - 2.0 * out).abs() < 1e-9, "case {case}");
                }
                None => {
                    assert_eq!(f.position_at(f.pickup_at), pickup, "case {case}");
                    assert_eq!(f.position_at(f.dropoff_at), dropoff, "case {case}");
                    assert_eq!(f.phase_at(f.pickup_at), Phase::ToDropoff, "case {case}");
                }
            }
        }
    }

    fn capitol_hill() -> Point {
        Point::new(47.6253, -122.3222)
    }

    #[test]
    fn a_reroute_before_the_pickup_flies_on_from_where_the_drone_is() {
        let f = flight();
        let at = f.departed_at + Duration::milliseconds((f.pickup_at - f.departed_at).num_milliseconds() / 2);
        let rerouted = f.rerouted_at(at, f.pickup, capitol_hill()).unwrap().expect("new drop-off: a new plan");
        assert!(close(rerouted.origin, f.position_at(at)), "it starts where the drone is");
        assert!(close(rerouted.position_at(at), f.position_at(at)), "no jump at the re-plan");
        assert_eq!((rerouted.departed_at, rerouted.replans, rerouted.carrying), (at, 1, false));
        assert_eq!(rerouted.phase_at(at), Phase::ToPickup);
        assert_eq!(rerouted.position_at(rerouted.pickup_at), f.pickup);
        assert_eq!(rerouted.position_at(rerouted.dropoff_at), capitol_hill());
        assert!(rerouted.pickup_at <= f.pickup_at + Duration::milliseconds(1), "the pickup is where it was");
        let flown = distance_miles(f.depot, f.position_at(at));
        assert!((rerouted.flown_before_miles - flown).abs() < 1e-9);
        let ahead = distance_miles(rerouted.origin, f.pickup)
            + distance_miles(f.pickup, capitol_hill())
            + distance_miles(capitol_hill(), f.depot);
        assert!((rerouted.miles() - (flown + ahead)).abs() < 1e-9, "utilization counts what it flies");
        let planned = real_millis(ahead, f.speed_mph, f.time_scale);
        assert_eq!((rerouted.back_at - at).num_milliseconds(), planned);
    }

    #[test]
    fn with_the_package_on_board_only_the_drop_off_can_move() {
        let f = flight();
        let at = f.pickup_at + Duration::milliseconds((f.dropoff_at - f.pickup_at).num_milliseconds() / 3);
        let moved_pickup = f.rerouted_at(at, capitol_hill(), f.dropoff);
        assert_eq!(moved_pickup, Err("the package has been picked up; the pickup can no longer move".to_owned()));
        let rerouted = f.rerouted_at(at, f.pickup, capitol_hill()).unwrap().unwrap();
        assert!(rerouted.carrying);
        assert_eq!(rerouted.pickup_at, at, "nothing left to pick up");
        assert_eq!(rerouted.phase_at(at), Phase::ToDropoff);
        assert!(close(rerouted.position_at(at), f.position_at(at)));
        assert_eq!(rerouted.position_at(rerouted.dropoff_at), capitol_hill());
        let flown = distance_miles(f.depot, f.pickup) + distance_miles(f.pickup, f.position_at(at));
        assert!((rerouted.flown_before_miles - flown).abs() < 1e-9);
        assert_eq!(rerouted.released_at(at + Duration::seconds(1)), None, "a cancel cannot turn it back");
        // Re-planned again, still carrying: the second plan starts on the first one's way.
        let later = at + (rerouted.dropoff_at - at) / 2;
        let again = rerouted.rerouted_at(later, f.pickup, f.dropoff).unwrap().unwrap();
        assert!(again.carrying && again.replans == 2);
        assert!(close(again.origin, rerouted.position_at(later)));
        assert!(again.flown_before_miles > rerouted.flown_before_miles);
    }

    #[test]
    fn the_same_places_change_nothing_and_late_or_cancelled_flights_refuse() {
        let f = flight();
        assert_eq!(f.rerouted_at(f.departed_at, f.pickup, f.dropoff), Ok(None));
        assert!(f.rerouted_at(f.dropoff_at, f.pickup, capitol_hill()).is_err(), "at the drop-off");
        let turned = f.released_at(f.departed_at + Duration::seconds(1)).unwrap();
        assert!(turned.rerouted_at(f.departed_at + Duration::seconds(2), f.pickup, capitol_hill()).is_err());
    }

    #[test]
    fn a_rerouted_flight_released_before_its_pickup_turns_back_from_its_new_way() {
        let f = flight();
        let at = f.departed_at + (f.pickup_at - f.departed_at) / 2;
        let rerouted = f.rerouted_at(at, capitol_hill(), f.dropoff).unwrap().unwrap();
        let release = at + (rerouted.pickup_at - at) / 2;
        let turned = rerouted.released_at(release).unwrap();
        let turn = turned.turned_back.unwrap();
        assert!(close(turn.from, rerouted.position_at(release)));
        let expected = rerouted.flown_before_miles
            + distance_miles(rerouted.origin, turn.from)
            + distance_miles(turn.from, f.depot);
        assert!((turned.miles() - expected).abs() < 1e-9);
    }
}
