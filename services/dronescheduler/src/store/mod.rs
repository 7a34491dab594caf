//! Where the fleet, its assignments and their flights live: the [`DroneStore`] port and its
//! backends.

/// The columns of a flight as [`read_flight`] reads them, from the table named by the prefix
/// (`"f."` in a join, `""` alone). A macro so that every query stays a `'static` string.
macro_rules! flight_columns {
    ($t:literal) => {
        concat!(
            $t,
            "drone_id AS f_drone_id, ",
            $t,
            "depot_latitude AS f_depot_latitude, ",
            $t,
            "depot_longitude AS f_depot_longitude, ",
            $t,
            "pickup_latitude AS f_pickup_latitude, ",
            $t,
            "pickup_longitude AS f_pickup_longitude, ",
            $t,
            "pickup_altitude AS f_pickup_altitude, ",
            $t,
            "dropoff_latitude AS f_dropoff_latitude, ",
            $t,
            "dropoff_longitude AS f_dropoff_longitude, ",
            $t,
            "dropoff_altitude AS f_dropoff_altitude, ",
            $t,
            "speed_mph AS f_speed_mph, ",
            $t,
            "time_scale AS f_time_scale, ",
            $t,
            "departed_at AS f_departed_at, ",
            $t,
            "pickup_at AS f_pickup_at, ",
            $t,
            "dropoff_at AS f_dropoff_at, ",
            $t,
            "back_at AS f_back_at, ",
            $t,
            "turned_at AS f_turned_at, ",
            $t,
            "turned_latitude AS f_turned_latitude, ",
            $t,
            "turned_longitude AS f_turned_longitude, ",
            $t,
            "turned_altitude AS f_turned_altitude, ",
            $t,
            "home_at AS f_home_at, ",
            $t,
            "position_every_ms AS f_position_every_ms, ",
            $t,
            "origin_latitude AS f_origin_latitude, ",
            $t,
            "origin_longitude AS f_origin_longitude, ",
            $t,
            "origin_altitude AS f_origin_altitude, ",
            $t,
            "carrying AS f_carrying, ",
            $t,
            "flown_before_miles AS f_flown_before_miles, ",
            $t,
            "replans AS f_replans"
        )
    };
}

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::drone::DroneAssignment;
use platform::clock::from_unix_millis;
use platform::geo::Point;
use platform::query::Month;
use sqlx::{Decode, Row, Type};

pub use postgres::PostgresDroneStore;
pub use sqlite::SqliteDroneStore;

use crate::domain::{AssignmentRequest, Depot, DroneRecord, FleetConfig};
use crate::flight::{FlightPath, TurnBack};

pub type StoreError = sqlx::Error;

/// What an assignment did.
#[derive(Debug, Clone, PartialEq)]
pub enum Assigned {
    /// A drone was assigned now, or had been earlier for this delivery (same answer).
    Drone(DroneAssignment),
    /// The delivery was cancelled and its drone released: it must not get one again.
    Released,
    /// No free drone can carry the package now; one will be after its flight.
    NoneFree,
    /// No drone of the stored fleet can ever carry the package: its heaviest payload, kg.
    TooHeavy(f64),
}

/// The fleet repository. Assignment and release are atomic: a drone never serves two
/// deliveries at once, and a delivery never gets two drones.
#[async_trait]
pub trait DroneStore: Send + Sync {
    /// Creates the depots and the fleet when the store has no drones; keeps an existing fleet.
    async fn seed(&self, depots: &[Depot], fleet: &[DroneRecord]) -> Result<(), StoreError>;
    /// Assigns the chosen drone to the delivery in one transaction, or returns the delivery's
    /// earlier answer unchanged (`Drone` again, or `Released` once it was cancelled). While
    /// expedited requests wait, a standard request gets a drone only as
    /// [`crate::domain::may_take_drone`] allows; an expedited one that finds none is recorded as
    /// waiting. The happy path (nobody waits) costs one indexed read more than it used to.
    async fn assign(
        &self,
        request: &AssignmentRequest,
        now: DateTime<Utc>,
        fleet: &FleetConfig,
    ) -> Result<Assigned, StoreError>;
    /// The expedited requests waiting for a drone at `now` (their wait has not lapsed), oldest
    /// first. An expedited request is recorded as waiting when it finds no drone (each retry
    /// extends its wait, [`crate::domain::waiting_until`]) and leaves when it gets one or is
    /// released; while any wait, [`assign`](Self::assign) follows [`crate::domain::may_take_drone`].
    async fn expedited_waiting(&self, now: DateTime<Utc>) -> Result<Vec<ExpeditedWaiter>, StoreError>;
    /// Releases the delivery's drone; for a delivery with no assignment yet, records the release
    /// so that a later assignment is refused. Idempotent.
    ///
    /// Released before its pickup, the flight turns back ([`FlightPath::released_at`]) and is
    /// stored re-planned: the drone is busy until it is home, its miles and hours become what it
    /// flies, and its remaining events become the release. The release is placed no earlier than
    /// any time a flight clock announced the flight through, so an announced pickup is never
    /// taken back. From the pickup on the flight goes on as planned.
    async fn release(&self, delivery_id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Re-plans the delivery's flight at `now` for its new `pickup` and `dropoff` (`None`: the
    /// one planned) ([`FlightPath::rerouted_at`]): the drone flies on from where it is, is busy until it is
    /// home again, utilization counts what it flies, and the flight's events go on with a
    /// `FlightReplanned`. The same places again change nothing, so a retry is harmless. Like a
    /// release, the re-plan is placed no earlier than what a flight clock announced.
    async fn reroute(
        &self,
        delivery_id: &str,
        pickup: Option<Point>,
        dropoff: Option<Point>,
        now: DateTime<Utc>,
    ) -> Result<Rerouted, StoreError>;
    /// Miles and hours of the owner's assignments in `month` as flown (a flight cut short by a
    /// release counts up to the turn and the way home); `None` if none.
    /// `account_id`: only that account's flights (an assignment stored without an account
    /// counts as its owner's); every account's when none.
    async fn utilization(
        &self,
        owner_id: &str,
        account_id: Option<&str>,
        month: Month,
    ) -> Result<Option<(f64, f64)>, StoreError>;
    /// Every drone, by id, each with its latest flight.
    async fn drones(&self) -> Result<Vec<DroneRecord>, StoreError>;
    /// How many drones there are, and how many are busy at `now` (their latest flight has not
    /// ended): counted by the store, for the `drones` gauge.
    async fn fleet_counts(&self, now: DateTime<Utc>) -> Result<(u64, u64), StoreError>;
    async fn drone(&self, id: &str) -> Result<Option<DroneRecord>, StoreError>;
    /// Claims up to `limit` flights with an event due at `now` (earliest first) for `claimer`,
    /// until `now + lease`. A flight held by another claimer whose claim has not expired is not
    /// claimed, so at most one claimer publishes a flight's events at a time; a claimer that
    /// died is taken over when its lease ends. `claimer` may take back its own claims.
    async fn claim_due_flights(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedFlight>, StoreError>;
    /// Records what `claimer` published and ends its claims on those flights. Progress on a
    /// flight that another claimer has taken over since is dropped (the other one publishes
    /// again, and the stream drops the repeats); a schedule computed from a plan that was
    /// changed since is not kept (the flight is looked at again).
    async fn finish_flights(&self, claimer: &str, progress: &[FlightProgress]) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// An expedited request waiting for a drone.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpeditedWaiter {
    pub delivery_id: String,
    /// When it first found no drone.
    pub since: DateTime<Utc>,
    /// When its wait lapses unless it asks again.
    pub until: DateTime<Utc>,
}

/// A flight claimed by one flight clock, with how far its events have gone out.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedFlight {
    pub delivery_id: String,
    pub flight: FlightPath,
    /// How many of its events ([`crate::events::flight_events`]) are published.
    pub events_published: usize,
    /// The plan this claim saw; a re-plan changes it.
    pub plan_version: i64,
    /// The assignment's W3C trace context: the flight's events continue that trace.
    pub traceparent: Option<String>,
}

/// What a flight clock did with a claimed flight.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightProgress {
    pub delivery_id: String,
    /// Events published, counting those published before the claim.
    pub events_published: usize,
    /// When the next one is due; `None` when all are out.
    pub next_event_at: Option<DateTime<Utc>>,
    /// The plan the progress was computed from ([`ClaimedFlight::plan_version`]).
    pub plan_version: i64,
}

/// A row's columns by name, typed: what [`flight_from`] and [`claim_from`] read, so that one
/// decoding serves sqlx's rows (both backends' reads) and rusqlite's (the SQLite writer's).
trait Columns {
    type Error;
    fn real(&self, name: &'static str) -> Result<f64, Self::Error>;
    fn maybe_real(&self, name: &'static str) -> Result<Option<f64>, Self::Error>;
    fn int(&self, name: &'static str) -> Result<i64, Self::Error>;
    fn maybe_int(&self, name: &'static str) -> Result<Option<i64>, Self::Error>;
    fn flag(&self, name: &'static str) -> Result<bool, Self::Error>;
    fn text(&self, name: &'static str) -> Result<String, Self::Error>;
    fn maybe_text(&self, name: &'static str) -> Result<Option<String>, Self::Error>;
    /// The error for a row of the flights table that reads as no flight (a NULL departure, which
    /// the schema forbids).
    fn no_flight() -> Self::Error;
}

/// An sqlx row of either backend, read through [`Columns`].
struct SqlxColumns<'r, R>(&'r R);

impl<'r, R> Columns for SqlxColumns<'r, R>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    type Error = sqlx::Error;
    fn real(&self, name: &'static str) -> Result<f64, sqlx::Error> {
        self.0.try_get(name)
    }
    fn maybe_real(&self, name: &'static str) -> Result<Option<f64>, sqlx::Error> {
        self.0.try_get(name)
    }
    fn int(&self, name: &'static str) -> Result<i64, sqlx::Error> {
        self.0.try_get(name)
    }
    fn maybe_int(&self, name: &'static str) -> Result<Option<i64>, sqlx::Error> {
        self.0.try_get(name)
    }
    fn flag(&self, name: &'static str) -> Result<bool, sqlx::Error> {
        self.0.try_get(name)
    }
    fn text(&self, name: &'static str) -> Result<String, sqlx::Error> {
        self.0.try_get(name)
    }
    fn maybe_text(&self, name: &'static str) -> Result<Option<String>, sqlx::Error> {
        self.0.try_get(name)
    }
    fn no_flight() -> sqlx::Error {
        sqlx::Error::ColumnNotFound("f_departed_at".into())
    }
}

/// Reads the flight selected with [`flight_columns`]; `None` for a drone without one (the
/// columns of a `LEFT JOIN` that found nothing are all NULL). One reader for both backends.
fn read_flight<'r, R>(row: &'r R) -> Result<Option<FlightPath>, sqlx::Error>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    flight_from(&SqlxColumns(row))
}

/// [`read_flight`] for any row that has [`Columns`].
fn flight_from<C: Columns>(row: &C) -> Result<Option<FlightPath>, C::Error> {
    let Some(departed_at) = row.maybe_int("f_departed_at")? else {
        return Ok(None);
    };
    let point =
        |latitude: &'static str, longitude: &'static str, altitude: Option<&'static str>| -> Result<Point, C::Error> {
            Ok(Point {
                latitude: row.real(latitude)?,
                longitude: row.real(longitude)?,
                altitude: match altitude {
                    Some(column) => row.real(column)?,
                    None => 0.0,
                },
            })
        };
    let turned_back = match row.maybe_int("f_turned_at")? {
        Some(at) => Some(TurnBack {
            at: from_unix_millis(at),
            from: point("f_turned_latitude", "f_turned_longitude", Some("f_turned_altitude"))?,
            home_at: from_unix_millis(row.int("f_home_at")?),
        }),
        None => None,
    };
    let depot = point("f_depot_latitude", "f_depot_longitude", None)?;
    let origin = match row.maybe_real("f_origin_latitude")? {
        Some(_) => point("f_origin_latitude", "f_origin_longitude", Some("f_origin_altitude"))?,
        None => depot,
    };
    Ok(Some(FlightPath {
        drone_id: row.text("f_drone_id")?,
        depot,
        origin,
        carrying: row.flag("f_carrying")?,
        flown_before_miles: row.real("f_flown_before_miles")?,
        replans: row.int("f_replans")?,
        pickup: point("f_pickup_latitude", "f_pickup_longitude", Some("f_pickup_altitude"))?,
        dropoff: point("f_dropoff_latitude", "f_dropoff_longitude", Some("f_dropoff_altitude"))?,
        speed_mph: row.real("f_speed_mph")?,
        time_scale: row.real("f_time_scale")?,
        departed_at: from_unix_millis(departed_at),
        pickup_at: from_unix_millis(row.int("f_pickup_at")?),
        dropoff_at: from_unix_millis(row.int("f_dropoff_at")?),
        back_at: from_unix_millis(row.int("f_back_at")?),
        turned_back,
        position_every_ms: row.int("f_position_every_ms")?,
    }))
}

/// Reads a claimed flight: its flight plus `delivery_id`, `events_published`, `plan_version`.
fn read_claim<'r, R>(row: &'r R) -> Result<ClaimedFlight, sqlx::Error>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    claim_from(&SqlxColumns(row))
}

/// [`read_claim`] for any row that has [`Columns`].
fn claim_from<C: Columns>(row: &C) -> Result<ClaimedFlight, C::Error> {
    Ok(ClaimedFlight {
        delivery_id: row.text("delivery_id")?,
        flight: flight_from(row)?.ok_or_else(C::no_flight)?,
        events_published: usize::try_from(row.int("events_published")?).unwrap_or(0),
        plan_version: row.int("plan_version")?,
        traceparent: row.maybe_text("traceparent")?,
    })
}

/// What re-routing a delivery's flight came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Rerouted {
    /// The drone flies to the places asked for: re-planned now (`changed`), or it already did.
    Flying { flight: Box<FlightPath>, changed: bool },
    /// No drone is assigned to the delivery.
    NotAssigned,
    /// It cannot be done, and why.
    Refused(String),
    /// Events of the current plan due by now are still being published; ask again shortly.
    Pending,
}

/// What re-routing `flight` to `pickup` and `dropoff` at `now` does (both backends apply it in
/// one transaction with the flight locked). The re-plan is placed at `now` or at
/// `announced_through`, whichever is later, as a release is. It waits ([`Rerouted::Pending`])
/// while an event of the current plan due by then is unpublished (`next_event_at`), so the new
/// plan's events, which start over, never drop one of the old plan's.
fn plan_reroute(
    flight: &FlightPath,
    next_event_at: Option<DateTime<Utc>>,
    announced_through: DateTime<Utc>,
    now: DateTime<Utc>,
    (pickup, dropoff): (Option<Point>, Option<Point>),
) -> RerouteStep {
    let at = now.max(announced_through);
    match flight.rerouted_at(at, pickup.unwrap_or(flight.pickup), dropoff.unwrap_or(flight.dropoff)) {
        Err(reason) => RerouteStep::Answer(Rerouted::Refused(reason)),
        Ok(None) => RerouteStep::Answer(Rerouted::Flying { flight: Box::new(flight.clone()), changed: false }),
        Ok(Some(_)) if next_event_at.is_some_and(|next| next <= at) => RerouteStep::Answer(Rerouted::Pending),
        Ok(Some(rerouted)) => {
            let next_event_at = crate::events::next_due(&rerouted, 0);
            RerouteStep::Apply(Box::new(Replan { flight: rerouted, next_event_at }))
        }
    }
}

/// What a backend does for a reroute: store the re-plan, or answer without writing.
enum RerouteStep {
    Apply(Box<Replan>),
    Answer(Rerouted),
}

/// A flight re-planned by a release or a reschedule, and when its next event is due.
struct Replan {
    flight: FlightPath,
    next_event_at: Option<DateTime<Utc>>,
}

/// What releasing a recorded flight at `now` does: the turn-back when it is still before the
/// pickup, `None` when the flight goes on as planned. Both backends apply it in the release's
/// transaction, with the flight row locked.
///
/// The release is placed at `now` or at `announced_through` (the latest time a flight clock
/// claimed the flight at), whichever is later: a clock whose time ran ahead may already have
/// announced the pickup, and a release must not be placed before what is already out.
fn replan_on_release(
    flight: &FlightPath,
    events_published: usize,
    announced_through: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Replan> {
    let turned = flight.released_at(now.max(announced_through))?;
    let next_event_at = crate::events::next_due(&turned, events_published);
    Some(Replan { flight: turned, next_event_at })
}
