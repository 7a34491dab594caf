use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::drone::DroneAssignment;
use platform::clock::{from_unix_millis, unix_millis};
use platform::geo::Point;
use platform::query::Month;
use platform::sqlite::{Durability, GroupWriter, WriteError, open_pool};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{FromRow, Row};

use super::{
    Assigned, ClaimedFlight, Columns, DroneStore, ExpeditedWaiter, FlightProgress, Replan, RerouteStep, Rerouted,
    StoreError, claim_from, flight_from, plan_reroute, read_flight, replan_on_release,
};
use crate::domain::{self, AssignmentRequest, Depot, DroneRecord, FleetConfig};
use crate::flight::FlightPath;

/// The fleet in an embedded SQLite file.
///
/// Every write (assignment, release, reroute, the flight clock's claims and progress, seeding)
/// is one closure on a group-committing writer thread ([`GroupWriter`]): it reads and writes on
/// the writer's own connection, and only that thread writes, so each read-modify-write is atomic
/// within the process; the thread commits whatever is waiting in one transaction. That
/// transaction begins with `BEGIN IMMEDIATE`, which takes SQLite's write lock before the first
/// read: two stores on the same file (two processes) cannot both pick the same free drone, and
/// two flight clocks cannot both claim the same flight. Pure reads go through a small sqlx pool.
pub struct SqliteDroneStore {
    pool: SqlitePool,
    writer: GroupWriter,
}

impl SqliteDroneStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = GroupWriter::open(path, Durability::Normal, "dronescheduler").await?;
        Ok(Self { pool, writer })
    }
}

/// The flight columns of the writer's rows, for the decoding both backends share.
impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn real(&self, name: &'static str) -> rusqlite::Result<f64> {
        self.get(name)
    }
    fn maybe_real(&self, name: &'static str) -> rusqlite::Result<Option<f64>> {
        self.get(name)
    }
    fn int(&self, name: &'static str) -> rusqlite::Result<i64> {
        self.get(name)
    }
    fn maybe_int(&self, name: &'static str) -> rusqlite::Result<Option<i64>> {
        self.get(name)
    }
    fn flag(&self, name: &'static str) -> rusqlite::Result<bool> {
        self.get(name)
    }
    fn text(&self, name: &'static str) -> rusqlite::Result<String> {
        self.get(name)
    }
    fn maybe_text(&self, name: &'static str) -> rusqlite::Result<Option<String>> {
        self.get(name)
    }
    fn no_flight() -> rusqlite::Error {
        rusqlite::Error::InvalidColumnName("f_departed_at".to_owned())
    }
}

/// A delivery's assignment row, as [`existing`] reads it.
type AssignmentColumns = (String, Option<String>, String, Option<String>, i64, f64, f64, i64, i64);

/// The assignment in an assignment row; `None` for a fence (no drone).
fn assignment(row: AssignmentColumns) -> Option<DroneAssignment> {
    let (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles, assigned_hours, busy_until, released) =
        row;
    Some(DroneAssignment {
        delivery_id,
        drone_id: drone_id?,
        owner_id,
        depot_id: depot_id.unwrap_or_default(),
        assigned_at: from_unix_millis(assigned_at),
        traveled_miles,
        assigned_hours,
        busy_until: from_unix_millis(busy_until),
        released: released != 0,
    })
}

/// What an earlier request for this delivery decided.
fn earlier(row: AssignmentColumns) -> Assigned {
    match assignment(row) {
        Some(a) if !a.released => Assigned::Drone(a),
        _ => Assigned::Released,
    }
}

/// A drone joined with its depot's position, as the leading columns of the drone queries.
type DroneColumns = (String, String, f64, f64, f64, f64, i64, Option<String>);

/// Reads a drone joined with its depot's position (its flight is not read: see [`flying_drone`]).
fn drone(
    (id, depot_id, latitude, longitude, max_payload, speed_mph, busy_until, current_delivery_id): DroneColumns,
) -> DroneRecord {
    DroneRecord {
        id,
        depot_id,
        location: Point::new(latitude, longitude),
        max_payload,
        speed_mph,
        busy_until: from_unix_millis(busy_until),
        current_delivery_id,
        flight: None,
    }
}

/// Reads a drone selected with its flight's columns, with its latest flight.
fn flying_drone(row: &SqliteRow) -> Result<DroneRecord, StoreError> {
    Ok(DroneRecord { flight: read_flight(row)?, ..drone(DroneColumns::from_row(row)?) })
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Records a new assignment's flight, its first events due at departure.
fn insert_flight(
    conn: &Connection,
    delivery_id: &str,
    f: &FlightPath,
    traceparent: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO flights (delivery_id, drone_id, depot_latitude, depot_longitude, pickup_latitude,
             pickup_longitude, pickup_altitude, dropoff_latitude, dropoff_longitude, dropoff_altitude, speed_mph,
             time_scale, departed_at, pickup_at, dropoff_at, back_at, next_event_at, position_every_ms, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?13, ?17, ?18)",
    )?
    .execute(params![
        delivery_id,
        f.drone_id,
        f.depot.latitude,
        f.depot.longitude,
        f.pickup.latitude,
        f.pickup.longitude,
        f.pickup.altitude,
        f.dropoff.latitude,
        f.dropoff.longitude,
        f.dropoff.altitude,
        f.speed_mph,
        f.time_scale,
        unix_millis(f.departed_at),
        unix_millis(f.pickup_at),
        unix_millis(f.dropoff_at),
        unix_millis(f.back_at),
        f.position_every_ms,
        traceparent,
    ])?;
    Ok(())
}

/// Releases an assigned delivery's drone: re-plans the flight when it is still before the pickup,
/// or, for an assignment recorded before flights were, frees the drone at once as it used to.
fn release_flight(conn: &Connection, delivery_id: &str, drone_id: &str, now: DateTime<Utc>) -> rusqlite::Result<()> {
    let found = conn
        .prepare_cached(concat!(
            "SELECT events_published, announced_through, ",
            flight_columns!(""),
            " FROM flights WHERE delivery_id = ?1"
        ))?
        .query_row([delivery_id], |row| {
            let flight = flight_from(row)?.ok_or_else(<rusqlite::Row<'_> as Columns>::no_flight)?;
            Ok((flight, row.get::<_, i64>("events_published")?, row.get::<_, i64>("announced_through")?))
        })
        .optional()?;
    let Some((flight, published, announced)) = found else {
        conn.prepare_cached(
            "UPDATE drones SET busy_until = MIN(busy_until, ?1), current_delivery_id = NULL
             WHERE id = ?2 AND current_delivery_id = ?3",
        )?
        .execute(params![unix_millis(now), drone_id, delivery_id])?;
        return Ok(());
    };
    let published = usize::try_from(published).unwrap_or(0);
    let Some(replan) = replan_on_release(&flight, published, from_unix_millis(announced), now) else {
        return Ok(());
    };
    let turn = replan.flight.turned_back.expect("a re-plan turns back");
    let home = unix_millis(turn.home_at);
    conn.prepare_cached(
        "UPDATE flights SET turned_at = ?1, turned_latitude = ?2, turned_longitude = ?3, turned_altitude = ?4,
             home_at = ?5, next_event_at = ?6, plan_version = plan_version + 1
         WHERE delivery_id = ?7",
    )?
    .execute(params![
        unix_millis(turn.at),
        turn.from.latitude,
        turn.from.longitude,
        turn.from.altitude,
        home,
        replan.next_event_at.map(unix_millis),
        delivery_id,
    ])?;
    conn.prepare_cached(
        "UPDATE assignments SET traveled_miles = ?1, assigned_hours = ?2, busy_until = ?3 WHERE delivery_id = ?4",
    )?
    .execute(params![replan.flight.miles(), replan.flight.hours(), home, delivery_id])?;
    // Only if the drone still flies this delivery (it always does before the pickup).
    conn.prepare_cached("UPDATE drones SET busy_until = ?1 WHERE id = ?2 AND current_delivery_id = ?3")?
        .execute(params![home, drone_id, delivery_id])?;
    Ok(())
}

/// The delivery's assignment and flight as a reroute reads them.
struct RerouteRow {
    drone_id: Option<String>,
    released: bool,
    flight: Option<FlightPath>,
    next_event_at: Option<i64>,
    announced_through: Option<i64>,
}

/// Looks up the delivery's assignment and flight for a reroute and decides it
/// ([`plan_reroute`]); stores the re-plan when there is one.
fn reroute_flight(
    conn: &Connection,
    delivery_id: &str,
    places: (Option<Point>, Option<Point>),
    now: DateTime<Utc>,
) -> rusqlite::Result<Rerouted> {
    let found = conn
        .prepare_cached(concat!(
            "SELECT a.drone_id AS a_drone_id, a.released <> 0 AS a_released, f.events_published, f.announced_through,
                 f.next_event_at, ",
            flight_columns!("f."),
            " FROM assignments a LEFT JOIN flights f ON f.delivery_id = a.delivery_id WHERE a.delivery_id = ?1"
        ))?
        .query_row([delivery_id], |row| {
            Ok(RerouteRow {
                drone_id: row.get("a_drone_id")?,
                released: row.get("a_released")?,
                flight: flight_from(row)?,
                next_event_at: row.get("next_event_at")?,
                announced_through: row.get("announced_through")?,
            })
        })
        .optional()?;
    let Some(row) = found else { return Ok(Rerouted::NotAssigned) };
    if row.released || row.drone_id.is_none() {
        return Ok(Rerouted::Refused("the delivery was cancelled and its drone released".to_owned()));
    }
    let Some(flight) = row.flight else {
        return Ok(Rerouted::Refused("its drone was assigned before flights were recorded".to_owned()));
    };
    // A flight row always has its announced time (NOT NULL); only a missing flight has none.
    let announced = from_unix_millis(row.announced_through.unwrap_or(0));
    let next_event_at = row.next_event_at.map(from_unix_millis);
    let Replan { flight, next_event_at } = match plan_reroute(&flight, next_event_at, announced, now, places) {
        RerouteStep::Answer(answer) => return Ok(answer),
        RerouteStep::Apply(replan) => *replan,
    };
    conn.prepare_cached(
        "UPDATE flights SET origin_latitude = ?1, origin_longitude = ?2, origin_altitude = ?3, carrying = ?4,
             flown_before_miles = ?5, replans = ?6, pickup_latitude = ?7, pickup_longitude = ?8,
             pickup_altitude = ?9, dropoff_latitude = ?10, dropoff_longitude = ?11, dropoff_altitude = ?12,
             departed_at = ?13, pickup_at = ?14, dropoff_at = ?15, back_at = ?16, events_published = 0,
             next_event_at = ?17, plan_version = plan_version + 1
         WHERE delivery_id = ?18",
    )?
    .execute(params![
        flight.origin.latitude,
        flight.origin.longitude,
        flight.origin.altitude,
        flight.carrying,
        flight.flown_before_miles,
        flight.replans,
        flight.pickup.latitude,
        flight.pickup.longitude,
        flight.pickup.altitude,
        flight.dropoff.latitude,
        flight.dropoff.longitude,
        flight.dropoff.altitude,
        unix_millis(flight.departed_at),
        unix_millis(flight.pickup_at),
        unix_millis(flight.dropoff_at),
        unix_millis(flight.back_at),
        next_event_at.map(unix_millis),
        delivery_id,
    ])?;
    let home = unix_millis(flight.home_at());
    conn.prepare_cached(
        "UPDATE assignments SET traveled_miles = ?1, assigned_hours = ?2, busy_until = ?3 WHERE delivery_id = ?4",
    )?
    .execute(params![flight.miles(), flight.hours(), home, delivery_id])?;
    conn.prepare_cached("UPDATE drones SET busy_until = ?1 WHERE id = ?2 AND current_delivery_id = ?3")?
        .execute(params![home, flight.drone_id, delivery_id])?;
    Ok(Rerouted::Flying { flight: Box::new(flight), changed: true })
}

/// The live expedited waiters other than `delivery_id`, and whether `delivery_id` is one.
fn waiters(conn: &Connection, delivery_id: &str, now: DateTime<Utc>) -> rusqlite::Result<(usize, bool)> {
    let (others, mine): (i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(delivery_id <> ?1), 0), COALESCE(SUM(delivery_id = ?1), 0)
             FROM expedited_waiters WHERE waits_until > ?2",
        )?
        .query_row(params![delivery_id, unix_millis(now)], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok((usize::try_from(others).unwrap_or(usize::MAX), mine > 0))
}

/// Free drones able to carry `weight`, counted up to `limit` (all the rule needs to know).
fn idle_capable(conn: &Connection, now: DateTime<Utc>, weight: f64, limit: usize) -> rusqlite::Result<usize> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM drones WHERE busy_until <= ?1 AND max_payload >= ?2 LIMIT ?3 + 0)",
        )?
        .query_row(params![unix_millis(now), weight, limit_param(limit)], |row| row.get(0))?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Records (or extends) an expedited request's wait, and sweeps the waits that lapsed.
fn wait(conn: &Connection, delivery_id: &str, now: DateTime<Utc>, fleet: &FleetConfig) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM expedited_waiters WHERE waits_until <= ?1")?.execute([unix_millis(now)])?;
    conn.prepare_cached(
        "INSERT INTO expedited_waiters (delivery_id, since, waits_until) VALUES (?1, ?2, ?3)
         ON CONFLICT (delivery_id) DO UPDATE SET waits_until = MAX(waits_until, excluded.waits_until)",
    )?
    .execute(params![delivery_id, unix_millis(now), unix_millis(domain::waiting_until(now, fleet))])?;
    Ok(())
}

fn stop_waiting(conn: &Connection, delivery_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM expedited_waiters WHERE delivery_id = ?1")?.execute([delivery_id])?;
    Ok(())
}

fn existing(conn: &Connection, delivery_id: &str) -> rusqlite::Result<Option<AssignmentColumns>> {
    conn.prepare_cached(
        "SELECT delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles, assigned_hours, busy_until,
             released
         FROM assignments WHERE delivery_id = ?1",
    )?
    .query_row([delivery_id], |row| AssignmentColumns::try_from(row))
    .optional()
}

/// Creates the depots and the fleet unless there are drones already, in one write.
fn seed_fleet(conn: &Connection, depots: &[Depot], fleet: &[(String, String, f64, f64)]) -> rusqlite::Result<()> {
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM drones", [], |row| row.get(0))?;
    if count > 0 {
        return Ok(());
    }
    let mut insert_depot =
        conn.prepare("INSERT OR IGNORE INTO depots (id, name, latitude, longitude) VALUES (?1, ?2, ?3, ?4)")?;
    for depot in depots {
        insert_depot.execute(params![depot.id, depot.name, depot.location.latitude, depot.location.longitude])?;
    }
    // One prepared statement for every drone: on the writer's own connection a row costs no
    // hand-over, so a fleet of 100,000 is seeded in well under a second.
    let mut insert_drone = conn
        .prepare("INSERT INTO drones (id, depot_id, max_payload, speed_mph, busy_until) VALUES (?1, ?2, ?3, ?4, 0)")?;
    for (id, depot_id, max_payload, speed_mph) in fleet {
        insert_drone.execute(params![id, depot_id, max_payload, speed_mph])?;
    }
    Ok(())
}

/// Assigns a drone to the request, or answers as an earlier request for it did: the whole
/// decision and its writes in one closure on the writer.
fn assign_drone(
    conn: &Connection,
    request: &AssignmentRequest,
    now: DateTime<Utc>,
    fleet: &FleetConfig,
) -> rusqlite::Result<Assigned> {
    if let Some(row) = existing(conn, &request.delivery_id)? {
        return Ok(earlier(row));
    }
    let (waiting, is_waiting) = waiters(conn, &request.delivery_id, now)?;
    if !request.expedited && waiting > 0 {
        let idle = idle_capable(conn, now, request.weight, waiting + 1)?;
        if !domain::may_take_drone(false, waiting, idle) {
            return Ok(Assigned::NoneFree);
        }
    }
    // Each depot's first free drone (by id) able to carry the package; the domain picks the
    // nearest of them. One indexed lookup per depot, so the cost does not grow with the fleet.
    let candidates = conn
        .prepare_cached(
            "SELECT d.id, d.depot_id, p.latitude, p.longitude, d.max_payload, d.speed_mph, d.busy_until,
                 d.current_delivery_id
             FROM depots p JOIN drones d ON d.id = (
                 SELECT f.id FROM drones f
                 WHERE f.depot_id = p.id AND f.busy_until <= ?1 AND f.max_payload >= ?2
                 ORDER BY f.id LIMIT 1)",
        )?
        .query_map(params![unix_millis(now), request.weight], |row| DroneColumns::try_from(row).map(drone))?
        .collect::<rusqlite::Result<Vec<DroneRecord>>>()?;
    let Some(plan) = domain::choose_drone(&candidates, request, now, fleet) else {
        let heaviest: Option<f64> =
            conn.prepare_cached("SELECT MAX(max_payload) FROM drones")?.query_row([], |row| row.get(0))?;
        let heaviest = heaviest.unwrap_or(0.0);
        if heaviest < request.weight {
            return Ok(Assigned::TooHeavy(heaviest));
        }
        if request.expedited {
            wait(conn, &request.delivery_id, now, fleet)?;
        }
        return Ok(Assigned::NoneFree);
    };
    if is_waiting {
        stop_waiting(conn, &request.delivery_id)?;
    }
    conn.prepare_cached("UPDATE drones SET busy_until = ?1, current_delivery_id = ?2 WHERE id = ?3")?
        .execute(params![unix_millis(plan.busy_until), request.delivery_id, plan.drone_id])?;
    conn.prepare_cached(
        "INSERT INTO assignments (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles,
             assigned_hours, busy_until, released, account_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)",
    )?
    .execute(params![
        request.delivery_id,
        plan.drone_id,
        request.owner_id,
        plan.depot_id,
        unix_millis(now),
        plan.miles,
        plan.hours,
        unix_millis(plan.busy_until),
        request.account_id,
    ])?;
    insert_flight(conn, &request.delivery_id, &plan.path, request.traceparent.as_deref())?;
    Ok(Assigned::Drone(DroneAssignment {
        drone_id: plan.drone_id,
        delivery_id: request.delivery_id.clone(),
        owner_id: request.owner_id.clone(),
        depot_id: plan.depot_id,
        assigned_at: from_unix_millis(unix_millis(now)),
        traveled_miles: plan.miles,
        assigned_hours: plan.hours,
        busy_until: from_unix_millis(unix_millis(plan.busy_until)),
        released: false,
    }))
}

/// Releases the delivery's drone, or fences a delivery that has none yet.
fn release_delivery(conn: &Connection, delivery_id: &str, now: DateTime<Utc>) -> rusqlite::Result<()> {
    stop_waiting(conn, delivery_id)?;
    match existing(conn, delivery_id)? {
        None => {
            // Cancelled before any drone was assigned: a fence, so a late assignment is refused.
            conn.prepare_cached(
                "INSERT INTO assignments (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles,
                     assigned_hours, busy_until, released, released_at)
                 VALUES (?1, NULL, '', NULL, ?2, 0, 0, ?2, 1, ?2)",
            )?
            .execute(params![delivery_id, unix_millis(now)])?;
        }
        Some(row) => {
            if let Some(a) = assignment(row).filter(|a| !a.released) {
                conn.prepare_cached("UPDATE assignments SET released = 1, released_at = ?1 WHERE delivery_id = ?2")?
                    .execute(params![unix_millis(now), delivery_id])?;
                release_flight(conn, delivery_id, &a.drone_id, now)?;
            }
        }
    }
    Ok(())
}

/// Claims due flights for `claimer` (the look and the claim are one statement on the writer),
/// each with the time its next event is due.
fn claim_flights(
    conn: &Connection,
    claimer: &str,
    now_ms: i64,
    expires_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, ClaimedFlight)>> {
    conn.prepare_cached(concat!(
        "UPDATE flights SET claim_token = ?1, claim_expires_at = ?2, announced_through = MAX(announced_through, ?3)
         WHERE delivery_id IN (
             SELECT delivery_id FROM flights
             WHERE next_event_at IS NOT NULL AND next_event_at <= ?3
                 AND (claim_expires_at IS NULL OR claim_expires_at <= ?3 OR claim_token = ?1)
             ORDER BY next_event_at LIMIT ?4 + 0)
         RETURNING delivery_id, events_published, plan_version, next_event_at, traceparent, ",
        flight_columns!("")
    ))?
    .query_map(params![claimer, expires_ms, now_ms, limit_param(limit)], |row| {
        Ok((row.get("next_event_at")?, claim_from(row)?))
    })?
    .collect()
}

/// Records a claimer's progress and ends its claims on those flights.
fn finish_claims(conn: &Connection, claimer: &str, progress: &[FlightProgress]) -> rusqlite::Result<()> {
    let mut update = conn.prepare_cached(
        "UPDATE flights SET events_published = MAX(events_published, ?1),
             next_event_at = CASE WHEN plan_version = ?2 THEN ?3 ELSE next_event_at END,
             claim_token = NULL, claim_expires_at = NULL
         WHERE delivery_id = ?4 AND claim_token = ?5",
    )?;
    for p in progress {
        update.execute(params![
            i64::try_from(p.events_published).unwrap_or(i64::MAX),
            p.plan_version,
            p.next_event_at.map(unix_millis),
            p.delivery_id,
            claimer,
        ])?;
    }
    Ok(())
}

#[async_trait]
impl DroneStore for SqliteDroneStore {
    async fn seed(&self, depots: &[Depot], fleet: &[DroneRecord]) -> Result<(), StoreError> {
        let depots = depots.to_vec();
        let fleet: Vec<(String, String, f64, f64)> =
            fleet.iter().map(|d| (d.id.clone(), d.depot_id.clone(), d.max_payload, d.speed_mph)).collect();
        self.writer.write(move |conn| seed_fleet(conn, &depots, &fleet)).await?;
        Ok(())
    }

    async fn assign(
        &self,
        request: &AssignmentRequest,
        now: DateTime<Utc>,
        fleet: &FleetConfig,
    ) -> Result<Assigned, StoreError> {
        // No look on the pool first for an already decided delivery: it would cost every new
        // delivery a hand-over to sqlx's worker thread to spare the rare retry one indexed read
        // on the writer.
        let (request, fleet) = (request.clone(), fleet.clone());
        Ok(self.writer.write(move |conn| assign_drone(conn, &request, now, &fleet)).await?)
    }

    async fn release(&self, delivery_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let delivery_id = delivery_id.to_owned();
        self.writer.write(move |conn| release_delivery(conn, &delivery_id, now)).await?;
        Ok(())
    }

    async fn reroute(
        &self,
        delivery_id: &str,
        pickup: Option<Point>,
        dropoff: Option<Point>,
        now: DateTime<Utc>,
    ) -> Result<Rerouted, StoreError> {
        let delivery_id = delivery_id.to_owned();
        Ok(self.writer.write(move |conn| reroute_flight(conn, &delivery_id, (pickup, dropoff), now)).await?)
    }

    async fn expedited_waiting(&self, now: DateTime<Utc>) -> Result<Vec<ExpeditedWaiter>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT delivery_id, since, waits_until FROM expedited_waiters WHERE waits_until > ?1
             ORDER BY since, delivery_id",
        )
        .bind(unix_millis(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(delivery_id, since, until)| ExpeditedWaiter {
                delivery_id,
                since: from_unix_millis(since),
                until: from_unix_millis(until),
            })
            .collect())
    }

    async fn utilization(
        &self,
        owner_id: &str,
        account_id: Option<&str>,
        month: Month,
    ) -> Result<Option<(f64, f64)>, StoreError> {
        let (start, end) = month.range();
        // Released flights count as flown (their miles were re-planned at the release), except
        // those released before flights were recorded: nobody knows how far they went.
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(a.traveled_miles), 0), COALESCE(SUM(a.assigned_hours), 0)
             FROM assignments a
             WHERE a.owner_id = ?1 AND a.assigned_at >= ?2 AND a.assigned_at < ?3 AND a.drone_id IS NOT NULL
                 AND (?4 IS NULL OR COALESCE(a.account_id, a.owner_id) = ?4)
                 AND (a.released = 0 OR EXISTS (SELECT 1 FROM flights f WHERE f.delivery_id = a.delivery_id))",
        )
        .bind(owner_id)
        .bind(unix_millis(start))
        .bind(unix_millis(end))
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.get(0);
        Ok((count > 0).then(|| (row.get(1), row.get(2))))
    }

    async fn fleet_counts(&self, now: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let (total, busy): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE busy_until > ?1) FROM drones")
                .bind(now.timestamp_millis())
                .fetch_one(&self.pool)
                .await?;
        Ok((u64::try_from(total).unwrap_or(0), u64::try_from(busy).unwrap_or(0)))
    }

    async fn drones(&self) -> Result<Vec<DroneRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT d.id, d.depot_id, p.latitude, p.longitude, d.max_payload, d.speed_mph, d.busy_until,
                 d.current_delivery_id, ",
            flight_columns!("f."),
            " FROM drones d JOIN depots p ON p.id = d.depot_id
             LEFT JOIN flights f ON f.delivery_id = d.current_delivery_id
             ORDER BY d.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(flying_drone).collect()
    }

    async fn drone(&self, id: &str) -> Result<Option<DroneRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT d.id, d.depot_id, p.latitude, p.longitude, d.max_payload, d.speed_mph, d.busy_until,
                 d.current_delivery_id, ",
            flight_columns!("f."),
            " FROM drones d JOIN depots p ON p.id = d.depot_id
             LEFT JOIN flights f ON f.delivery_id = d.current_delivery_id
             WHERE d.id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(flying_drone).transpose()
    }

    async fn claim_due_flights(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedFlight>, StoreError> {
        let now_ms = unix_millis(now);
        let expires_ms = now_ms.saturating_add(lease.num_milliseconds());
        let claimer = claimer.to_owned();
        let mut claimed =
            self.writer.write(move |conn| claim_flights(conn, &claimer, now_ms, expires_ms, limit)).await?;
        // RETURNING comes in no particular order: earliest due first.
        claimed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.delivery_id.cmp(&b.1.delivery_id)));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn finish_flights(&self, claimer: &str, progress: &[FlightProgress]) -> Result<(), StoreError> {
        if progress.is_empty() {
            return Ok(());
        }
        let (claimer, progress) = (claimer.to_owned(), progress.to_vec());
        self.writer.write(move |conn| finish_claims(conn, &claimer, &progress)).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.writer.is_running() {
            return Err(WriteError::Stopped.into());
        }
        Ok(())
    }
}
