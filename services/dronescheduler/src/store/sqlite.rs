use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::drone::DroneAssignment;
use platform::clock::{from_unix_millis, unix_millis};
use platform::geo::Point;
use platform::query::Month;
use platform::sqlite::{Durability, open_pool};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};
use tokio::sync::Mutex;

use super::{
    Assigned, ClaimedFlight, DroneStore, ExpeditedWaiter, FlightProgress, Replan, RerouteStep, Rerouted, StoreError,
    plan_reroute, read_claim, read_flight, replan_on_release,
};
use crate::domain::{self, AssignmentRequest, Depot, DroneRecord, FleetConfig};
use crate::flight::FlightPath;

/// The fleet in an embedded SQLite file.
///
/// Every write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock before
/// the first read: two stores on the same file (two processes) cannot both pick the same free
/// drone, and two flight clocks cannot both claim the same flight. Within one process the writes
/// also queue on a mutex, so they wait their turn without SQLite's busy-retry sleeps.
pub struct SqliteDroneStore {
    pool: SqlitePool,
    writer: Mutex<()>,
}

impl SqliteDroneStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool, writer: Mutex::new(()) })
    }
}

const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

fn assignment(row: &SqliteRow) -> Option<DroneAssignment> {
    Some(DroneAssignment {
        delivery_id: row.get(0),
        drone_id: row.get::<Option<String>, _>(1)?,
        owner_id: row.get(2),
        depot_id: row.get::<Option<String>, _>(3).unwrap_or_default(),
        assigned_at: from_unix_millis(row.get(4)),
        traveled_miles: row.get(5),
        assigned_hours: row.get(6),
        busy_until: from_unix_millis(row.get(7)),
        released: row.get::<i64, _>(8) != 0,
    })
}

/// What an earlier request for this delivery decided.
fn earlier(row: &SqliteRow) -> Assigned {
    match assignment(row) {
        Some(a) if !a.released => Assigned::Drone(a),
        _ => Assigned::Released,
    }
}

/// Reads a drone joined with its depot's position (its flight is not read: see [`flying_drone`]).
fn drone(row: &SqliteRow) -> DroneRecord {
    DroneRecord {
        id: row.get(0),
        depot_id: row.get(1),
        location: Point::new(row.get(2), row.get(3)),
        max_payload: row.get(4),
        speed_mph: row.get(5),
        busy_until: from_unix_millis(row.get(6)),
        current_delivery_id: row.get(7),
        flight: None,
    }
}

/// Reads a drone selected with its flight's columns, with its latest flight.
fn flying_drone(row: &SqliteRow) -> Result<DroneRecord, StoreError> {
    Ok(DroneRecord { flight: read_flight(row)?, ..drone(row) })
}

/// Records a new assignment's flight, its first events due at departure.
async fn insert_flight(
    conn: &mut SqliteConnection,
    delivery_id: &str,
    f: &FlightPath,
    traceparent: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO flights (delivery_id, drone_id, depot_latitude, depot_longitude, pickup_latitude,
             pickup_longitude, pickup_altitude, dropoff_latitude, dropoff_longitude, dropoff_altitude, speed_mph,
             time_scale, departed_at, pickup_at, dropoff_at, back_at, next_event_at, position_every_ms, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?13, ?17, ?18)",
    )
    .bind(delivery_id)
    .bind(&f.drone_id)
    .bind(f.depot.latitude)
    .bind(f.depot.longitude)
    .bind(f.pickup.latitude)
    .bind(f.pickup.longitude)
    .bind(f.pickup.altitude)
    .bind(f.dropoff.latitude)
    .bind(f.dropoff.longitude)
    .bind(f.dropoff.altitude)
    .bind(f.speed_mph)
    .bind(f.time_scale)
    .bind(unix_millis(f.departed_at))
    .bind(unix_millis(f.pickup_at))
    .bind(unix_millis(f.dropoff_at))
    .bind(unix_millis(f.back_at))
    .bind(f.position_every_ms)
    .bind(traceparent)
    .execute(conn)
    .await?;
    Ok(())
}

/// Releases an assigned delivery's drone: re-plans the flight when it is still before the pickup,
/// or, for an assignment recorded before flights were, frees the drone at once as it used to.
async fn release_flight(
    conn: &mut SqliteConnection,
    delivery_id: &str,
    drone_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let row = sqlx::query(concat!(
        "SELECT events_published, announced_through, ",
        flight_columns!(""),
        " FROM flights WHERE delivery_id = ?1"
    ))
    .bind(delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        sqlx::query(
            "UPDATE drones SET busy_until = MIN(busy_until, ?1), current_delivery_id = NULL
             WHERE id = ?2 AND current_delivery_id = ?3",
        )
        .bind(unix_millis(now))
        .bind(drone_id)
        .bind(delivery_id)
        .execute(&mut *conn)
        .await?;
        return Ok(());
    };
    let flight = read_flight(&row)?.ok_or_else(|| sqlx::Error::ColumnNotFound("f_departed_at".into()))?;
    let published = usize::try_from(row.get::<i64, _>("events_published")).unwrap_or(0);
    let announced = from_unix_millis(row.get("announced_through"));
    let Some(replan) = replan_on_release(&flight, published, announced, now) else {
        return Ok(());
    };
    let turn = replan.flight.turned_back.expect("a re-plan turns back");
    let home = unix_millis(turn.home_at);
    sqlx::query(
        "UPDATE flights SET turned_at = ?1, turned_latitude = ?2, turned_longitude = ?3, turned_altitude = ?4,
             home_at = ?5, next_event_at = ?6, plan_version = plan_version + 1
         WHERE delivery_id = ?7",
    )
    .bind(unix_millis(turn.at))
    .bind(turn.from.latitude)
    .bind(turn.from.longitude)
    .bind(turn.from.altitude)
    .bind(home)
    .bind(replan.next_event_at.map(unix_millis))
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE assignments SET traveled_miles = ?1, assigned_hours = ?2, busy_until = ?3 WHERE delivery_id = ?4",
    )
    .bind(replan.flight.miles())
    .bind(replan.flight.hours())
    .bind(home)
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    // Only if the drone still flies this delivery (it always does before the pickup).
    sqlx::query("UPDATE drones SET busy_until = ?1 WHERE id = ?2 AND current_delivery_id = ?3")
        .bind(home)
        .bind(drone_id)
        .bind(delivery_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Looks up the delivery's assignment and flight for a reroute and decides it
/// ([`plan_reroute`]); stores the re-plan when there is one.
async fn reroute_flight(
    conn: &mut SqliteConnection,
    delivery_id: &str,
    places: (Option<Point>, Option<Point>),
    now: DateTime<Utc>,
) -> Result<Rerouted, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT a.drone_id AS a_drone_id, a.released <> 0 AS a_released, f.events_published, f.announced_through,
             f.next_event_at, ",
        flight_columns!("f."),
        " FROM assignments a LEFT JOIN flights f ON f.delivery_id = a.delivery_id WHERE a.delivery_id = ?1"
    ))
    .bind(delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Rerouted::NotAssigned) };
    let drone_id: Option<String> = row.try_get("a_drone_id")?;
    if row.try_get::<bool, _>("a_released")? || drone_id.is_none() {
        return Ok(Rerouted::Refused("the delivery was cancelled and its drone released".to_owned()));
    }
    let Some(flight) = read_flight(&row)? else {
        return Ok(Rerouted::Refused("its drone was assigned before flights were recorded".to_owned()));
    };
    let next_event_at = row.try_get::<Option<i64>, _>("next_event_at")?.map(from_unix_millis);
    let announced = from_unix_millis(row.try_get("announced_through")?);
    let Replan { flight, next_event_at } = match plan_reroute(&flight, next_event_at, announced, now, places) {
        RerouteStep::Answer(answer) => return Ok(answer),
        RerouteStep::Apply(replan) => *replan,
    };
    sqlx::query(
        "UPDATE flights SET origin_latitude = ?1, origin_longitude = ?2, origin_altitude = ?3, carrying = ?4,
             flown_before_miles = ?5, replans = ?6, pickup_latitude = ?7, pickup_longitude = ?8,
             pickup_altitude = ?9, dropoff_latitude = ?10, dropoff_longitude = ?11, dropoff_altitude = ?12,
             departed_at = ?13, pickup_at = ?14, dropoff_at = ?15, back_at = ?16, events_published = 0,
             next_event_at = ?17, plan_version = plan_version + 1
         WHERE delivery_id = ?18",
    )
    .bind(flight.origin.latitude)
    .bind(flight.origin.longitude)
    .bind(flight.origin.altitude)
    .bind(flight.carrying)
    .bind(flight.flown_before_miles)
    .bind(flight.replans)
    .bind(flight.pickup.latitude)
    .bind(flight.pickup.longitude)
    .bind(flight.pickup.altitude)
    .bind(flight.dropoff.latitude)
    .bind(flight.dropoff.longitude)
    .bind(flight.dropoff.altitude)
    .bind(unix_millis(flight.departed_at))
    .bind(unix_millis(flight.pickup_at))
    .bind(unix_millis(flight.dropoff_at))
    .bind(unix_millis(flight.back_at))
    .bind(next_event_at.map(unix_millis))
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    let home = unix_millis(flight.home_at());
    sqlx::query(
        "UPDATE assignments SET traveled_miles = ?1, assigned_hours = ?2, busy_until = ?3 WHERE delivery_id = ?4",
    )
    .bind(flight.miles())
    .bind(flight.hours())
    .bind(home)
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE drones SET busy_until = ?1 WHERE id = ?2 AND current_delivery_id = ?3")
        .bind(home)
        .bind(&flight.drone_id)
        .bind(delivery_id)
        .execute(&mut *conn)
        .await?;
    Ok(Rerouted::Flying { flight: Box::new(flight), changed: true })
}

/// The live expedited waiters other than `delivery_id`, and whether `delivery_id` is one.
async fn waiters(
    conn: &mut SqliteConnection,
    delivery_id: &str,
    now: DateTime<Utc>,
) -> Result<(usize, bool), StoreError> {
    let (others, mine): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(delivery_id <> ?1), 0), COALESCE(SUM(delivery_id = ?1), 0)
         FROM expedited_waiters WHERE waits_until > ?2",
    )
    .bind(delivery_id)
    .bind(unix_millis(now))
    .fetch_one(conn)
    .await?;
    Ok((usize::try_from(others).unwrap_or(usize::MAX), mine > 0))
}

/// Free drones able to carry `weight`, counted up to `limit` (all the rule needs to know).
async fn idle_capable(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    weight: f64,
    limit: usize,
) -> Result<usize, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM drones WHERE busy_until <= ?1 AND max_payload >= ?2 LIMIT ?3 + 0)",
    )
    .bind(unix_millis(now))
    .bind(weight)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Records (or extends) an expedited request's wait, and sweeps the waits that lapsed.
async fn wait(
    conn: &mut SqliteConnection,
    delivery_id: &str,
    now: DateTime<Utc>,
    fleet: &FleetConfig,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM expedited_waiters WHERE waits_until <= ?1")
        .bind(unix_millis(now))
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO expedited_waiters (delivery_id, since, waits_until) VALUES (?1, ?2, ?3)
         ON CONFLICT (delivery_id) DO UPDATE SET waits_until = MAX(waits_until, excluded.waits_until)",
    )
    .bind(delivery_id)
    .bind(unix_millis(now))
    .bind(unix_millis(domain::waiting_until(now, fleet)))
    .execute(conn)
    .await?;
    Ok(())
}

async fn stop_waiting(conn: &mut SqliteConnection, delivery_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM expedited_waiters WHERE delivery_id = ?1").bind(delivery_id).execute(conn).await?;
    Ok(())
}

async fn existing(conn: &mut SqliteConnection, delivery_id: &str) -> Result<Option<SqliteRow>, StoreError> {
    sqlx::query(
        "SELECT delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles, assigned_hours, busy_until,
             released
         FROM assignments WHERE delivery_id = ?1",
    )
    .bind(delivery_id)
    .fetch_optional(conn)
    .await
}

#[async_trait]
impl DroneStore for SqliteDroneStore {
    async fn seed(&self, depots: &[Depot], fleet: &[DroneRecord]) -> Result<(), StoreError> {
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM drones").fetch_one(&mut *tx).await?;
        if count > 0 {
            return Ok(());
        }
        for depot in depots {
            sqlx::query("INSERT OR IGNORE INTO depots (id, name, latitude, longitude) VALUES (?1, ?2, ?3, ?4)")
                .bind(&depot.id)
                .bind(&depot.name)
                .bind(depot.location.latitude)
                .bind(depot.location.longitude)
                .execute(&mut *tx)
                .await?;
        }
        // Many rows per statement: a fleet of 100,000 is seeded in well under a second.
        for chunk in fleet.chunks(4096) {
            let mut insert =
                sqlx::QueryBuilder::new("INSERT INTO drones (id, depot_id, max_payload, speed_mph, busy_until) ");
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(&d.id)
                    .push_bind(&d.depot_id)
                    .push_bind(d.max_payload)
                    .push_bind(d.speed_mph)
                    .push_bind(0_i64);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    async fn assign(
        &self,
        request: &AssignmentRequest,
        now: DateTime<Utc>,
        fleet: &FleetConfig,
    ) -> Result<Assigned, StoreError> {
        // A retry of a decided delivery needs no lock.
        if let Some(row) = existing(&mut *self.pool.acquire().await?, &request.delivery_id).await? {
            return Ok(earlier(&row));
        }
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        if let Some(row) = existing(&mut tx, &request.delivery_id).await? {
            return Ok(earlier(&row));
        }
        let (waiting, is_waiting) = waiters(&mut tx, &request.delivery_id, now).await?;
        if !request.expedited && waiting > 0 {
            let idle = idle_capable(&mut tx, now, request.weight, waiting + 1).await?;
            if !domain::may_take_drone(false, waiting, idle) {
                return Ok(Assigned::NoneFree);
            }
        }
        // Each depot's first free drone (by id) able to carry the package; the domain picks the
        // nearest of them. One indexed lookup per depot, so the cost does not grow with the fleet.
        let candidates: Vec<DroneRecord> = sqlx::query(
            "SELECT d.id, d.depot_id, p.latitude, p.longitude, d.max_payload, d.speed_mph, d.busy_until,
                 d.current_delivery_id
             FROM depots p JOIN drones d ON d.id = (
                 SELECT f.id FROM drones f
                 WHERE f.depot_id = p.id AND f.busy_until <= ?1 AND f.max_payload >= ?2
                 ORDER BY f.id LIMIT 1)",
        )
        .bind(unix_millis(now))
        .bind(request.weight)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(drone)
        .collect();
        let Some(plan) = domain::choose_drone(&candidates, request, now, fleet) else {
            let heaviest: Option<f64> =
                sqlx::query_scalar("SELECT MAX(max_payload) FROM drones").fetch_one(&mut *tx).await?;
            let heaviest = heaviest.unwrap_or(0.0);
            if heaviest < request.weight {
                return Ok(Assigned::TooHeavy(heaviest));
            }
            if request.expedited {
                wait(&mut tx, &request.delivery_id, now, fleet).await?;
                tx.commit().await?;
            }
            return Ok(Assigned::NoneFree);
        };
        if is_waiting {
            stop_waiting(&mut tx, &request.delivery_id).await?;
        }
        sqlx::query("UPDATE drones SET busy_until = ?1, current_delivery_id = ?2 WHERE id = ?3")
            .bind(unix_millis(plan.busy_until))
            .bind(&request.delivery_id)
            .bind(&plan.drone_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO assignments (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles,
                 assigned_hours, busy_until, released, account_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)",
        )
        .bind(&request.delivery_id)
        .bind(&plan.drone_id)
        .bind(&request.owner_id)
        .bind(&plan.depot_id)
        .bind(unix_millis(now))
        .bind(plan.miles)
        .bind(plan.hours)
        .bind(unix_millis(plan.busy_until))
        .bind(&request.account_id)
        .execute(&mut *tx)
        .await?;
        insert_flight(&mut tx, &request.delivery_id, &plan.path, request.traceparent.as_deref()).await?;
        tx.commit().await?;
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

    async fn release(&self, delivery_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        stop_waiting(&mut tx, delivery_id).await?;
        match existing(&mut tx, delivery_id).await?.as_ref().map(|row| (assignment(row), row.get::<i64, _>(8))) {
            None => {
                // Cancelled before any drone was assigned: a fence, so a late assignment is refused.
                sqlx::query(
                    "INSERT INTO assignments (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles,
                         assigned_hours, busy_until, released, released_at)
                     VALUES (?1, NULL, '', NULL, ?2, 0, 0, ?2, 1, ?2)",
                )
                .bind(delivery_id)
                .bind(unix_millis(now))
                .execute(&mut *tx)
                .await?;
            }
            Some((Some(a), 0)) => {
                sqlx::query("UPDATE assignments SET released = 1, released_at = ?1 WHERE delivery_id = ?2")
                    .bind(unix_millis(now))
                    .bind(delivery_id)
                    .execute(&mut *tx)
                    .await?;
                release_flight(&mut tx, delivery_id, &a.drone_id, now).await?;
            }
            Some(_) => {}
        }
        tx.commit().await
    }

    async fn reroute(
        &self,
        delivery_id: &str,
        pickup: Option<Point>,
        dropoff: Option<Point>,
        now: DateTime<Utc>,
    ) -> Result<Rerouted, StoreError> {
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let rerouted = reroute_flight(&mut tx, delivery_id, (pickup, dropoff), now).await?;
        tx.commit().await?;
        Ok(rerouted)
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
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // The write lock taken by BEGIN IMMEDIATE makes the look and the claim one step, across
        // processes too.
        let rows = sqlx::query(concat!(
            "UPDATE flights SET claim_token = ?1, claim_expires_at = ?2, announced_through = MAX(announced_through, ?3)
             WHERE delivery_id IN (
                 SELECT delivery_id FROM flights
                 WHERE next_event_at IS NOT NULL AND next_event_at <= ?3
                     AND (claim_expires_at IS NULL OR claim_expires_at <= ?3 OR claim_token = ?1)
                 ORDER BY next_event_at LIMIT ?4 + 0)
             RETURNING delivery_id, events_published, plan_version, next_event_at, traceparent, ",
            flight_columns!("")
        ))
        .bind(claimer)
        .bind(now_ms.saturating_add(lease.num_milliseconds()))
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // RETURNING comes in no particular order: earliest due first.
        let mut claimed: Vec<(i64, ClaimedFlight)> = rows
            .iter()
            .map(|row| Ok((row.get("next_event_at"), read_claim(row)?)))
            .collect::<Result<_, StoreError>>()?;
        claimed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.delivery_id.cmp(&b.1.delivery_id)));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn finish_flights(&self, claimer: &str, progress: &[FlightProgress]) -> Result<(), StoreError> {
        if progress.is_empty() {
            return Ok(());
        }
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        for p in progress {
            sqlx::query(
                "UPDATE flights SET events_published = MAX(events_published, ?1),
                     next_event_at = CASE WHEN plan_version = ?2 THEN ?3 ELSE next_event_at END,
                     claim_token = NULL, claim_expires_at = NULL
                 WHERE delivery_id = ?4 AND claim_token = ?5",
            )
            .bind(i64::try_from(p.events_published).unwrap_or(i64::MAX))
            .bind(p.plan_version)
            .bind(p.next_event_at.map(unix_millis))
            .bind(&p.delivery_id)
            .bind(claimer)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}
