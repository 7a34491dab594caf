//! The fleet in PostgreSQL, shared by any number of drone scheduler processes.
//!
//! Nothing here relies on process-local locks. An assignment reads the candidates without locks,
//! lets the domain choose the depot, locks that depot's first free drone no other transaction
//! holds (`FOR UPDATE SKIP LOCKED`, so concurrent requests near one depot take different drones
//! instead of queueing behind one), then claims it with a guarded `UPDATE` (still free?) and the
//! delivery with `INSERT .. ON CONFLICT DO NOTHING` (still undecided?), all in one transaction.
//! Row locks make those two checks exact under concurrency, and losing either race rolls the
//! whole claim back.
//!
//! Flight clocks claim flights with one `UPDATE .. WHERE delivery_id IN (SELECT .. FOR UPDATE SKIP
//! LOCKED)`: processes ticking at once take disjoint flights, and a release locks the flight row,
//! so a claim and a re-plan of the same flight see each other's effects in order.
//!
//! Times are stored as Unix milliseconds (`BIGINT`), like the SQLite backend, so both round alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::drone::DroneAssignment;
use platform::clock::{from_unix_millis, unix_millis};
use platform::geo::Point;
use platform::query::Month;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

use super::{
    Assigned, ClaimedFlight, DroneStore, ExpeditedWaiter, FlightProgress, Replan, RerouteStep, Rerouted, StoreError,
    plan_reroute, read_claim, read_flight, replan_on_release,
};
use crate::domain::{self, AssignmentRequest, Depot, DroneRecord, FleetConfig};
use crate::flight::FlightPath;

/// Connections per process.
const POOL_SIZE: u32 = 8;

/// The claims rely on READ COMMITTED: a statement that waited for a row lock re-checks its
/// condition against the newest committed row instead of failing. Named explicitly in case the
/// server defaults to a stricter level.
const BEGIN_CLAIM: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Rows per multi-row `INSERT` when seeding: 5 parameters each stays far below PostgreSQL's
/// 65,535 parameters per statement.
const SEED_CHUNK: usize = 4096;

/// The fleet in a PostgreSQL database shared by several scheduler processes.
pub struct PostgresDroneStore {
    pool: PgPool,
}

/// Looks up the delivery's assignment and flight for a reroute and decides it
/// ([`plan_reroute`]); stores the re-plan when there is one.
async fn reroute_flight(
    conn: &mut PgConnection,
    delivery_id: &str,
    places: (Option<Point>, Option<Point>),
    now: DateTime<Utc>,
) -> Result<Rerouted, StoreError> {
    // The flight locked first, as a release does: a flight clock claiming it meanwhile waits and
    // then sees the new plan, or the reroute sees how far the claim announced the old one.
    sqlx::query("SELECT 1 FROM flights WHERE delivery_id = $1 FOR UPDATE")
        .bind(delivery_id)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(concat!(
        "SELECT a.drone_id AS a_drone_id, a.released AS a_released, f.events_published, f.announced_through,
             f.next_event_at, ",
        flight_columns!("f."),
        " FROM assignments a LEFT JOIN flights f ON f.delivery_id = a.delivery_id WHERE a.delivery_id = $1"
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
        "UPDATE flights SET origin_latitude = $1, origin_longitude = $2, origin_altitude = $3, carrying = $4,
             flown_before_miles = $5, replans = $6, pickup_latitude = $7, pickup_longitude = $8,
             pickup_altitude = $9, dropoff_latitude = $10, dropoff_longitude = $11, dropoff_altitude = $12,
             departed_at = $13, pickup_at = $14, dropoff_at = $15, back_at = $16, events_published = 0,
             next_event_at = $17, plan_version = plan_version + 1
         WHERE delivery_id = $18",
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
        "UPDATE assignments SET traveled_miles = $1, assigned_hours = $2, busy_until = $3 WHERE delivery_id = $4",
    )
    .bind(flight.miles())
    .bind(flight.hours())
    .bind(home)
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE drones SET busy_until = $1 WHERE id = $2 AND current_delivery_id = $3")
        .bind(home)
        .bind(&flight.drone_id)
        .bind(delivery_id)
        .execute(&mut *conn)
        .await?;
    Ok(Rerouted::Flying { flight: Box::new(flight), changed: true })
}

impl PostgresDroneStore {
    /// Connects (waiting for the server to come up) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = platform::postgres::open_pool(url, POOL_SIZE).await?;
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Our own bookkeeping table, so services sharing one schema do not read each other's
        // migration history as a modified one.
        migrator.dangerous_set_table_name("_sqlx_migrations_dronescheduler");
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }
}

fn assignment(row: &PgRow) -> Option<DroneAssignment> {
    Some(DroneAssignment {
        delivery_id: row.get(0),
        drone_id: row.get::<Option<String>, _>(1)?,
        owner_id: row.get(2),
        depot_id: row.get::<Option<String>, _>(3).unwrap_or_default(),
        assigned_at: from_unix_millis(row.get(4)),
        traveled_miles: row.get(5),
        assigned_hours: row.get(6),
        busy_until: from_unix_millis(row.get(7)),
        released: row.get(8),
    })
}

/// What an earlier request for this delivery decided.
fn earlier(row: &PgRow) -> Assigned {
    match assignment(row) {
        Some(a) if !a.released => Assigned::Drone(a),
        _ => Assigned::Released,
    }
}

/// Reads a drone joined with its depot's position.
fn drone(row: &PgRow) -> DroneRecord {
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

/// The depot's first free drone able to carry `weight` that no other transaction holds, locked
/// until `conn`'s transaction ends.
async fn free_unheld_drone(
    conn: &mut PgConnection,
    depot_id: &str,
    now: i64,
    weight: f64,
) -> Result<Option<DroneRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT d.id, d.depot_id, p.latitude, p.longitude, d.max_payload, d.speed_mph, d.busy_until,
             d.current_delivery_id
         FROM drones d JOIN depots p ON p.id = d.depot_id
         WHERE d.depot_id = $1 AND d.busy_until <= $2 AND d.max_payload >= $3
         ORDER BY d.id LIMIT 1
         FOR UPDATE OF d SKIP LOCKED",
    )
    .bind(depot_id)
    .bind(now)
    .bind(weight)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(drone))
}

/// Reads a drone selected with its flight's columns, with its latest flight.
fn flying_drone(row: &PgRow) -> Result<DroneRecord, StoreError> {
    Ok(DroneRecord { flight: read_flight(row)?, ..drone(row) })
}

/// Records a new assignment's flight, its first events due at departure.
async fn insert_flight(
    conn: &mut PgConnection,
    delivery_id: &str,
    f: &FlightPath,
    traceparent: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO flights (delivery_id, drone_id, depot_latitude, depot_longitude, pickup_latitude,
             pickup_longitude, pickup_altitude, dropoff_latitude, dropoff_longitude, dropoff_altitude, speed_mph,
             time_scale, departed_at, pickup_at, dropoff_at, back_at, next_event_at, position_every_ms, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $13, $17, $18)",
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

/// Releases an assigned delivery's drone, in the caller's transaction (which holds the
/// assignment's row lock): re-plans the flight when it is still before the pickup, or, for an
/// assignment recorded before flights were, frees the drone at once as it used to.
async fn release_flight(
    conn: &mut PgConnection,
    delivery_id: &str,
    drone_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    // Locked: a flight clock claiming it meanwhile waits, then sees the re-plan (and the other
    // way round, the release sees how far the claim announced the flight).
    let row = sqlx::query(concat!(
        "SELECT events_published, announced_through, ",
        flight_columns!(""),
        " FROM flights WHERE delivery_id = $1 FOR UPDATE"
    ))
    .bind(delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        sqlx::query(
            "UPDATE drones SET busy_until = LEAST(busy_until, $1), current_delivery_id = NULL
             WHERE id = $2 AND current_delivery_id = $3",
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
        "UPDATE flights SET turned_at = $1, turned_latitude = $2, turned_longitude = $3, turned_altitude = $4,
             home_at = $5, next_event_at = $6, plan_version = plan_version + 1
         WHERE delivery_id = $7",
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
        "UPDATE assignments SET traveled_miles = $1, assigned_hours = $2, busy_until = $3 WHERE delivery_id = $4",
    )
    .bind(replan.flight.miles())
    .bind(replan.flight.hours())
    .bind(home)
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    // Only if the drone still flies this delivery (it always does before the pickup).
    sqlx::query("UPDATE drones SET busy_until = $1 WHERE id = $2 AND current_delivery_id = $3")
        .bind(home)
        .bind(drone_id)
        .bind(delivery_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl PostgresDroneStore {
    async fn existing(&self, delivery_id: &str) -> Result<Option<PgRow>, StoreError> {
        sqlx::query(
            "SELECT delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles, assigned_hours, busy_until,
                 released
             FROM assignments WHERE delivery_id = $1",
        )
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Each depot's first free drone (by id) able to carry `weight`; the domain picks the nearest
    /// of them. One indexed lookup per depot, so the cost does not grow with the fleet.
    async fn candidates(&self, now: i64, weight: f64) -> Result<Vec<DroneRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.depot_id, p.latitude, p.longitude, d.max_payload, d.speed_mph, d.busy_until,
                 d.current_delivery_id
             FROM depots p CROSS JOIN LATERAL (
                 SELECT f.* FROM drones f
                 WHERE f.depot_id = p.id AND f.busy_until <= $1 AND f.max_payload >= $2
                 ORDER BY f.id LIMIT 1) d",
        )
        .bind(now)
        .bind(weight)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(drone).collect())
    }

    /// Why nothing could be chosen. An expedited request that could be carried but found no
    /// drone is recorded as waiting.
    async fn refusal(
        &self,
        request: &AssignmentRequest,
        now: DateTime<Utc>,
        fleet: &FleetConfig,
    ) -> Result<Assigned, StoreError> {
        let heaviest: Option<f64> =
            sqlx::query_scalar("SELECT MAX(max_payload) FROM drones").fetch_one(&self.pool).await?;
        let heaviest = heaviest.unwrap_or(0.0);
        if heaviest < request.weight {
            return Ok(Assigned::TooHeavy(heaviest));
        }
        if request.expedited {
            self.wait(&request.delivery_id, now, fleet).await?;
        }
        Ok(Assigned::NoneFree)
    }

    /// In one round trip: the delivery's assignment if one was decided (a row as
    /// [`Self::existing`] reads it), the live expedited waiters other than `delivery_id`, and
    /// whether `delivery_id` is one.
    async fn decided_and_waiters(
        &self,
        delivery_id: &str,
        now: i64,
    ) -> Result<(Option<PgRow>, usize, bool), StoreError> {
        let row = sqlx::query(
            "SELECT a.delivery_id, a.drone_id, a.owner_id, a.depot_id, a.assigned_at, a.traveled_miles,
                 a.assigned_hours, a.busy_until, a.released, w.others, w.mine
             FROM (SELECT COUNT(*) FILTER (WHERE delivery_id <> $1) AS others,
                          COUNT(*) FILTER (WHERE delivery_id = $1) AS mine
                   FROM expedited_waiters WHERE waits_until > $2) w
             LEFT JOIN assignments a ON a.delivery_id = $1",
        )
        .bind(delivery_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let (others, mine): (i64, i64) = (row.try_get("others")?, row.try_get("mine")?);
        let decided = row.try_get::<Option<String>, _>(0)?.is_some().then_some(row);
        Ok((decided, usize::try_from(others).unwrap_or(usize::MAX), mine > 0))
    }

    /// Free drones able to carry `weight`, counted up to `limit` (all the rule needs to know).
    async fn idle_capable(&self, now: i64, weight: f64, limit: usize) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM drones WHERE busy_until <= $1 AND max_payload >= $2 LIMIT $3) free",
        )
        .bind(now)
        .bind(weight)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Records (or extends) an expedited request's wait, and sweeps the waits that lapsed. A
    /// delivery already decided (assigned or fenced by a release meanwhile) is not recorded; a
    /// release racing this insert can still leave a row behind, which only counts until it lapses.
    async fn wait(&self, delivery_id: &str, now: DateTime<Utc>, fleet: &FleetConfig) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM expedited_waiters WHERE waits_until <= $1")
            .bind(unix_millis(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO expedited_waiters (delivery_id, since, waits_until)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM assignments WHERE delivery_id = $1)
             ON CONFLICT (delivery_id) DO UPDATE
                 SET waits_until = GREATEST(expedited_waiters.waits_until, EXCLUDED.waits_until)",
        )
        .bind(delivery_id)
        .bind(unix_millis(now))
        .bind(unix_millis(domain::waiting_until(now, fleet)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

#[async_trait]
impl DroneStore for PostgresDroneStore {
    async fn seed(&self, depots: &[Depot], fleet: &[DroneRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Processes starting together must not both find the fleet empty and both build it: the
        // lock (which conflicts with itself and with writers, not with plain reads) makes the
        // second wait and then find the first one's fleet.
        sqlx::query("LOCK TABLE drones IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM drones").fetch_one(&mut *tx).await?;
        if count > 0 {
            return Ok(());
        }
        for depot in depots {
            sqlx::query(
                "INSERT INTO depots (id, name, latitude, longitude) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&depot.id)
            .bind(&depot.name)
            .bind(depot.location.latitude)
            .bind(depot.location.longitude)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in fleet.chunks(SEED_CHUNK) {
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
        let now_ms = unix_millis(now);
        // Read without locks: two requests deciding at once may both see the same waiters, so
        // the rule holds as of each one's look, which is all fairness needs (the drone itself is
        // still claimed exactly once below).
        let (decided, waiting, is_waiting) = self.decided_and_waiters(&request.delivery_id, now_ms).await?;
        // A retry of a decided delivery needs no transaction.
        if let Some(row) = decided {
            return Ok(earlier(&row));
        }
        if !request.expedited && waiting > 0 {
            let idle = self.idle_capable(now_ms, request.weight, waiting + 1).await?;
            if !domain::may_take_drone(false, waiting, idle) {
                return Ok(Assigned::NoneFree);
            }
        }
        // Each failed claim means another assignment committed in between, so the loop ends.
        loop {
            let candidates = self.candidates(now_ms, request.weight).await?;
            let Some(plan) = domain::choose_drone(&candidates, request, now, fleet) else {
                return self.refusal(request, now, fleet).await;
            };
            let mut tx = self.pool.begin_with(BEGIN_CLAIM).await?;
            // Concurrent requests near one depot all choose its first free drone. Rather than
            // queue behind the transaction holding it (and fail once it commits), take the
            // depot's first free drone that no transaction holds; all drones of a depot start
            // from the same place, so it is as near. Only when all of them are held does the
            // claim below wait for the chosen one.
            let plan = match free_unheld_drone(&mut tx, &plan.depot_id, now_ms, request.weight).await? {
                Some(drone) => domain::choose_drone(std::slice::from_ref(&drone), request, now, fleet).unwrap_or(plan),
                None => plan,
            };
            // Waits for any transaction holding the drone and re-checks it against the committed
            // row, so only one delivery can move a free drone's busy_until.
            let claimed = sqlx::query(
                "UPDATE drones SET busy_until = $1, current_delivery_id = $2 WHERE id = $3 AND busy_until <= $4",
            )
            .bind(unix_millis(plan.busy_until))
            .bind(&request.delivery_id)
            .bind(&plan.drone_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                // Taken since we looked; dropping the transaction rolls it back.
                continue;
            }
            let recorded = sqlx::query(
                "INSERT INTO assignments (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles,
                     assigned_hours, busy_until, released, account_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9)
                 ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(&request.delivery_id)
            .bind(&plan.drone_id)
            .bind(&request.owner_id)
            .bind(&plan.depot_id)
            .bind(now_ms)
            .bind(plan.miles)
            .bind(plan.hours)
            .bind(unix_millis(plan.busy_until))
            .bind(&request.account_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !recorded {
                // A concurrent request for this delivery (another assignment, or a cancel's
                // fence) committed first: its answer stands, and our drone stays free.
                tx.rollback().await?;
                match self.existing(&request.delivery_id).await? {
                    Some(row) => return Ok(earlier(&row)),
                    None => continue,
                }
            }
            insert_flight(&mut tx, &request.delivery_id, &plan.path, request.traceparent.as_deref()).await?;
            if is_waiting {
                sqlx::query("DELETE FROM expedited_waiters WHERE delivery_id = $1")
                    .bind(&request.delivery_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            return Ok(Assigned::Drone(DroneAssignment {
                drone_id: plan.drone_id,
                delivery_id: request.delivery_id.clone(),
                owner_id: request.owner_id.clone(),
                depot_id: plan.depot_id,
                assigned_at: from_unix_millis(now_ms),
                traveled_miles: plan.miles,
                assigned_hours: plan.hours,
                busy_until: from_unix_millis(unix_millis(plan.busy_until)),
                released: false,
            }));
        }
    }

    async fn release(&self, delivery_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let now_ms = unix_millis(now);
        let mut tx = self.pool.begin_with(BEGIN_CLAIM).await?;
        sqlx::query("DELETE FROM expedited_waiters WHERE delivery_id = $1").bind(delivery_id).execute(&mut *tx).await?;
        // Cancelled before any drone was assigned: a fence, so a late assignment is refused. The
        // insert waits for a concurrent assignment of the delivery and yields to it if it commits.
        let fenced = sqlx::query(
            "INSERT INTO assignments (delivery_id, drone_id, owner_id, depot_id, assigned_at, traveled_miles,
                 assigned_hours, busy_until, released, released_at)
             VALUES ($1, NULL, '', NULL, $2, 0, 0, $2, TRUE, $2)
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fenced {
            // Locked, so that of two concurrent releases only the first frees the drone.
            let row = sqlx::query("SELECT drone_id, released FROM assignments WHERE delivery_id = $1 FOR UPDATE")
                .bind(delivery_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((Some(drone_id), false)) = row.map(|r| (r.get::<Option<String>, _>(0), r.get::<bool, _>(1)))
            else {
                return tx.commit().await;
            };
            sqlx::query("UPDATE assignments SET released = TRUE, released_at = $1 WHERE delivery_id = $2")
                .bind(now_ms)
                .bind(delivery_id)
                .execute(&mut *tx)
                .await?;
            release_flight(&mut tx, delivery_id, &drone_id, now).await?;
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
        let mut tx = self.pool.begin_with(BEGIN_CLAIM).await?;
        let rerouted = reroute_flight(&mut tx, delivery_id, (pickup, dropoff), now).await?;
        tx.commit().await?;
        Ok(rerouted)
    }

    async fn expedited_waiting(&self, now: DateTime<Utc>) -> Result<Vec<ExpeditedWaiter>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT delivery_id, since, waits_until FROM expedited_waiters WHERE waits_until > $1
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
             WHERE a.owner_id = $1 AND a.assigned_at >= $2 AND a.assigned_at < $3 AND a.drone_id IS NOT NULL
                 AND ($4::text IS NULL OR COALESCE(a.account_id, a.owner_id) = $4)
                 AND (NOT a.released OR EXISTS (SELECT 1 FROM flights f WHERE f.delivery_id = a.delivery_id))",
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
            sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE busy_until > $1) FROM drones")
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
             WHERE d.id = $1"
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
        // SKIP LOCKED: claimers running at once take different flights instead of queueing on the
        // same rows. A row claimed and committed by another since this statement's snapshot is
        // re-checked once locked (READ COMMITTED), and its live claim then excludes it.
        let rows = sqlx::query(concat!(
            "UPDATE flights SET claim_token = $1, claim_expires_at = $2,
                 announced_through = GREATEST(announced_through, $3)
             WHERE delivery_id IN (
                 SELECT delivery_id FROM flights
                 WHERE next_event_at <= $3
                     AND (claim_expires_at IS NULL OR claim_expires_at <= $3 OR claim_token = $1)
                 ORDER BY next_event_at LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING delivery_id, events_published, plan_version, next_event_at, traceparent, ",
            flight_columns!("")
        ))
        .bind(claimer)
        .bind(now_ms.saturating_add(lease.num_milliseconds()))
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
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
        // One statement for the whole batch.
        let ids: Vec<&str> = progress.iter().map(|p| p.delivery_id.as_str()).collect();
        let published: Vec<i64> =
            progress.iter().map(|p| i64::try_from(p.events_published).unwrap_or(i64::MAX)).collect();
        let next: Vec<Option<i64>> = progress.iter().map(|p| p.next_event_at.map(unix_millis)).collect();
        let versions: Vec<i64> = progress.iter().map(|p| p.plan_version).collect();
        sqlx::query(
            "UPDATE flights f SET events_published = GREATEST(f.events_published, p.published),
                 next_event_at = CASE WHEN f.plan_version = p.version THEN p.next ELSE f.next_event_at END,
                 claim_token = NULL, claim_expires_at = NULL
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                 AS p(delivery_id, published, next, version)
             WHERE f.delivery_id = p.delivery_id AND f.claim_token = $5",
        )
        .bind(&ids)
        .bind(&published)
        .bind(&next)
        .bind(&versions)
        .bind(claimer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}
