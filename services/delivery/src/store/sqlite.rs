//! Deliveries in an embedded SQLite file.
//!
//! Every write goes through one group-committing writer thread ([`GroupWriter`]): each delivery
//! is created there and every drone event writes its tracking, flight or position, so the store
//! takes many small writes per delivery, which the writer commits together. A change that reads
//! the stage then writes runs as one closure on that thread, reads included, so it is atomic
//! without a lock. A caller's point reads run on its own thread ([`Readers`]); listings go through
//! a small pool.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent, NotifyMeRequest, RescheduledDelivery};
use contracts::events::{DronePosition, Flight};
use contracts::{DeliveryStage, Location};
use platform::clock::{from_unix_millis, unix_millis};
use platform::query::Month;
use platform::sqlite::{Durability, GroupWriter, Readers, WriteError, open_pool};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{Changed, Closed, DeliveryStore, StoreError, Upserted, from_json, to_json};
use crate::domain::{self, Action, Transition};
use crate::notifications::{Notification, NotificationRecord, NotificationStatus, Outcome};

/// Deliveries in an embedded SQLite file: point reads on the caller's thread, listings on a
/// pool, writes on one writer thread.
pub struct SqliteDeliveryStore {
    pool: SqlitePool,
    readers: Readers,
    writer: GroupWriter,
}

impl SqliteDeliveryStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(sqlx::Error::from)?;
        let writer = GroupWriter::open(path, Durability::Normal, "delivery").await.map_err(sqlx::Error::from)?;
        let readers = Readers::open(path)?;
        Ok(Self { pool, readers, writer })
    }

    /// Runs `write` on the writer's thread in the next batch; a [`StoreError`] it returns comes
    /// back as itself, its statements undone.
    async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write_with(write).await
    }

    /// Runs a point read on this thread (see [`Readers`]).
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.readers.read(read)
    }

    /// Applies `action` to the delivery if the stage rules allow it, atomically.
    async fn change(
        &self,
        id: &str,
        action: Action,
        now: DateTime<Utc>,
        update: impl FnOnce(Delivery) -> (Delivery, Option<Location>) + Send + 'static,
        confirmation: Option<String>,
    ) -> Result<Changed, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let Some(current) = load(conn, &id)? else { return Ok(Changed::NotFound) };
            let stage = tracked(conn, &id, current.stage.unwrap_or(DeliveryStage::Created))?;
            let next = match domain::transition(stage, action) {
                Transition::AlreadyDone => return Ok(Changed::Done(Box::new(current))),
                Transition::Refused(reason) => return Ok(Changed::Refused(reason)),
                Transition::To(next) => next,
            };
            let (updated, location) = update(current);
            let updated = move_to(conn, updated, next, location, None, now)?;
            if let Some(body) = confirmation {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO confirmations (delivery_id, body, at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id, body, unix_millis(now)])?;
            }
            Ok(Changed::Done(Box::new(updated)))
        })
        .await
    }
}

// A write closure fails with the store's own error; SQLite's and the writer's convert into it.
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        WriteError::from(err).into()
    }
}

impl From<WriteError> for StoreError {
    fn from(err: WriteError) -> Self {
        StoreError::Sqlite(err.into())
    }
}

/// Inserts `delivery` (without its stage) in `stage` with its first event (at the pickup);
/// `false`, writing nothing, when a delivery with its id exists.
fn insert(
    conn: &Connection,
    delivery: &Delivery,
    stage: DeliveryStage,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let body = to_json(delivery)?;
    let inserted =
        conn.prepare_cached(
            "INSERT INTO deliveries (id, owner_user_id, owner_account_id, body, stage, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            delivery.id,
            delivery.owner.user_id,
            delivery.owner.account_id,
            body,
            stage.as_str(),
            unix_millis(now)
        ])? == 1;
    if inserted {
        record_event(conn, &delivery.id, stage, Some(delivery.pickup), reason, now)?;
    }
    Ok(inserted)
}

/// Writes `delivery` (as updated by the change) in stage `next` and records the event; returns
/// it with its new stage.
fn move_to(
    conn: &Connection,
    mut delivery: Delivery,
    next: DeliveryStage,
    location: Option<Location>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Delivery, StoreError> {
    delivery.stage = None;
    let body = to_json(&delivery)?;
    conn.prepare_cached("UPDATE deliveries SET body = ?1, stage = ?2, updated_at = ?3 WHERE id = ?4")?
        .execute(params![body, next.as_str(), unix_millis(now), delivery.id])?;
    record_event(conn, &delivery.id, next, location, reason, now)?;
    delivery.stage = Some(next);
    Ok(delivery)
}

fn record_event(
    conn: &Connection,
    id: &str,
    stage: DeliveryStage,
    location: Option<Location>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let location = location.map(|l| to_json(&l)).transpose()?;
    conn.prepare_cached(
        "INSERT INTO tracking_events (delivery_id, stage, location, at, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, stage.as_str(), location, unix_millis(now), reason])?;
    Ok(())
}

/// The delivery as a change reads it, on the writer's connection.
fn load(conn: &Connection, id: &str) -> Result<Option<Delivery>, StoreError> {
    let row = conn
        .prepare_cached("SELECT body, stage FROM deliveries WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
        .optional()?;
    row.map(|(body, stage)| delivery_from(&body, &stage)).transpose()
}

/// The body in the one row `sql` selects by `id`, if there is one.
fn body_of(conn: &Connection, sql: &str, id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.prepare_cached(sql)?.query_row([id], |row| row.get(0)).optional()?)
}

/// The stage the rules judge the delivery by ([`domain::tracked_stage`]), reading its history
/// only when that matters.
fn tracked(conn: &Connection, id: &str, stage: DeliveryStage) -> Result<DeliveryStage, StoreError> {
    if !domain::needs_history(stage) {
        return Ok(stage);
    }
    let history: Vec<DeliveryStage> = history(conn, id)?.into_iter().map(|e| e.stage).collect();
    Ok(domain::tracked_stage(stage, &history))
}

/// The delivery's tracking events as a change reads them, on the writer's connection.
fn history(conn: &Connection, id: &str) -> Result<Vec<DeliveryTrackingEvent>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT stage, location, at, reason FROM tracking_events WHERE delivery_id = ?1 ORDER BY seq",
    )?;
    let rows = statement.query_map([id], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?, row.get(2)?, row.get(3)?))
    })?;
    rows.map(|row| {
        let (stage, location, at, reason) = row?;
        event_from(id, &stage, location.as_deref(), at, reason)
    })
    .collect()
}

/// A delivery row: its body (without the stage) and its stage.
fn delivery_from(body: &str, stage: &str) -> Result<Delivery, StoreError> {
    let mut delivery: Delivery = from_json(body)?;
    delivery.stage = stage.parse().ok();
    Ok(delivery)
}

fn event_from(
    id: &str,
    stage: &str,
    location: Option<&str>,
    at: i64,
    reason: Option<String>,
) -> Result<DeliveryTrackingEvent, StoreError> {
    Ok(DeliveryTrackingEvent {
        delivery_id: id.to_owned(),
        stage: stage.parse().map_err(|e| StoreError::Decode(Box::new(e)))?,
        location: location.map(from_json).transpose()?,
        at: from_unix_millis(at),
        reason,
    })
}

/// An outbox row, selected as `body, status, attempts, last_error, created_at, sent_at`.
fn notification_from(
    body: &str,
    status: &str,
    attempts: i64,
    last_error: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
) -> Result<NotificationRecord, StoreError> {
    Ok(NotificationRecord {
        notification: from_json(body)?,
        status: NotificationStatus::parse(status)
            .ok_or_else(|| StoreError::Decode(format!("unknown notification status {status:?}").into()))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error,
        created_at: from_unix_millis(created_at),
        sent_at: sent_at.map(from_unix_millis),
    })
}

#[async_trait]
impl DeliveryStore for SqliteDeliveryStore {
    async fn upsert(&self, mut delivery: Delivery, now: DateTime<Utc>) -> Result<Upserted, StoreError> {
        delivery.stage = None;
        self.write(move |conn| {
            if insert(conn, &delivery, DeliveryStage::Created, None, now)? {
                return Ok(Upserted::Created(Box::new(Delivery { stage: Some(DeliveryStage::Created), ..delivery })));
            }
            let stage: Option<String> = conn
                .prepare_cached("SELECT stage FROM deliveries WHERE id = ?1")?
                .query_row([&delivery.id], |row| row.get(0))
                .optional()?;
            // A failed delivery put again (the workflow runs its replayed request) is reopened.
            let reopen = stage.as_deref() == Some(DeliveryStage::Failed.as_str());
            let stage = if reopen { DeliveryStage::Created.as_str().to_owned() } else { stage.unwrap_or_default() };
            let body = to_json(&delivery)?;
            // The PUT may name another owner: the counting columns follow the body.
            conn.prepare_cached(
                "UPDATE deliveries SET owner_user_id = ?1, owner_account_id = ?2, body = ?3, updated_at = ?4, stage = ?6
                 WHERE id = ?5",
            )?
            .execute(params![
                delivery.owner.user_id,
                delivery.owner.account_id,
                body,
                unix_millis(now),
                delivery.id,
                stage
            ])?;
            if reopen {
                record_event(conn, &delivery.id, DeliveryStage::Created, Some(delivery.pickup), None, now)?;
            }
            Ok(Upserted::Updated)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.read(|conn| load(conn, id))
    }

    async fn tracking(&self, id: &str) -> Result<Vec<DeliveryTrackingEvent>, StoreError> {
        self.read(|conn| history(conn, id))
    }

    async fn reschedule(
        &self,
        id: &str,
        change: &RescheduledDelivery,
        now: DateTime<Utc>,
    ) -> Result<Changed, StoreError> {
        let change = change.clone();
        let location = change.pickup;
        self.change(id, Action::Reschedule, now, move |d| (domain::rescheduled(d, &change), location), None).await
    }

    async fn cancel(&self, id: &str, now: DateTime<Utc>) -> Result<Changed, StoreError> {
        self.change(id, Action::Cancel, now, |d| (d, None), None).await
    }

    async fn confirm(&self, id: &str, confirmation: &Confirmation, now: DateTime<Utc>) -> Result<Changed, StoreError> {
        let body = to_json(confirmation)?;
        let location = Some(confirmation.geo_coordinates);
        self.change(id, Action::Complete, now, move |d| (d, location), Some(body)).await
    }

    async fn close(
        &self,
        mut delivery: Delivery,
        stage: DeliveryStage,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Closed, StoreError> {
        delivery.stage = None;
        let reason = reason.to_owned();
        self.write(move |conn| {
            let current = load(conn, &delivery.id)?;
            let current_stage = match &current {
                Some(d) => Some(tracked(conn, &delivery.id, d.stage.unwrap_or(DeliveryStage::Created))?),
                None => None,
            };
            let next = match domain::close(current_stage, stage) {
                Transition::To(next) => next,
                // Only a delivery that exists can be already closed.
                Transition::AlreadyDone => return Ok(Closed::Done(Box::new(current.unwrap_or(delivery)))),
                Transition::Refused(reason) => return Ok(Closed::Refused(reason)),
            };
            match current {
                Some(current) => Ok(Closed::Done(Box::new(move_to(conn, current, next, None, Some(&reason), now)?))),
                None if insert(conn, &delivery, next, Some(&reason), now)? => {
                    Ok(Closed::Created(Box::new(Delivery { stage: Some(next), ..delivery })))
                }
                // Created by a writer outside this store between the read and the write.
                None => Err(StoreError::Contended(delivery.id)),
            }
        })
        .await
    }

    async fn advance(
        &self,
        id: &str,
        action: Action,
        location: Location,
        at: DateTime<Utc>,
    ) -> Result<Changed, StoreError> {
        self.change(id, action, at, move |d| (d, Some(location)), None).await
    }

    async fn record_refusal(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, reason) = (id.to_owned(), reason.map(str::to_owned));
        self.write(move |conn| {
            let Some(current) = load(conn, &id)? else { return Ok(false) };
            let stage = current.stage.unwrap_or(DeliveryStage::Created);
            let Some(note) = domain::refusal_note(tracked(conn, &id, stage)?, action, reason.as_deref()) else {
                return Ok(false);
            };
            if domain::already_noted(&history(conn, &id)?, &note) {
                return Ok(false);
            }
            record_event(conn, &id, stage, None, Some(&note), now)?;
            Ok(true)
        })
        .await
    }

    async fn confirmation(&self, id: &str) -> Result<Option<Confirmation>, StoreError> {
        let body: Option<String> =
            self.read(|conn| body_of(conn, "SELECT body FROM confirmations WHERE delivery_id = ?1", id))?;
        body.as_deref().map(from_json).transpose()
    }

    async fn record_flight(&self, id: &str, flight: &Flight, observed_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let (id, body, departed_at) = (id.to_owned(), to_json(flight)?, unix_millis(flight.departed_at));
        // The newer-wins rule is the upsert's condition.
        let stored = self
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "INSERT INTO flights (delivery_id, body, departed_at, observed_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (delivery_id) DO UPDATE SET
                         body = excluded.body, departed_at = excluded.departed_at, observed_at = excluded.observed_at
                     WHERE excluded.departed_at > flights.departed_at
                        OR (excluded.departed_at = flights.departed_at AND excluded.observed_at > flights.observed_at)",
                    )?
                    .execute(params![id, body, departed_at, unix_millis(observed_at)])?)
            })
            .await?;
        Ok(stored == 1)
    }

    async fn flight(&self, id: &str) -> Result<Option<Flight>, StoreError> {
        let body: Option<String> =
            self.read(|conn| body_of(conn, "SELECT body FROM flights WHERE delivery_id = ?1", id))?;
        body.as_deref().map(from_json).transpose()
    }

    async fn record_position(&self, id: &str, position: &DronePosition) -> Result<bool, StoreError> {
        let (id, body, at) = (id.to_owned(), to_json(position)?, unix_millis(position.at));
        // The newer-wins rule is the upsert's condition, as for flights.
        let stored = self
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "INSERT INTO positions (delivery_id, body, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (delivery_id) DO UPDATE SET body = excluded.body, at = excluded.at
                     WHERE excluded.at > positions.at",
                    )?
                    .execute(params![id, body, at])?)
            })
            .await?;
        Ok(stored == 1)
    }

    async fn position(&self, id: &str) -> Result<Option<DronePosition>, StoreError> {
        let body: Option<String> =
            self.read(|conn| body_of(conn, "SELECT body FROM positions WHERE delivery_id = ?1", id))?;
        body.as_deref().map(from_json).transpose()
    }

    async fn add_notify_request(
        &self,
        id: &str,
        request: &NotifyMeRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, request) = (id.to_owned(), request.clone());
        let added = self
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "INSERT INTO notify_requests (delivery_id, email, sms, created_at)
                     SELECT id, ?2, ?3, ?4 FROM deliveries WHERE id = ?1",
                    )?
                    .execute(params![id, request.email_address, request.sms, unix_millis(now)])?)
            })
            .await?;
        Ok(added == 1)
    }

    async fn notify_requests(&self, id: &str) -> Result<Vec<NotifyMeRequest>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT email, sms FROM notify_requests WHERE delivery_id = ?1 ORDER BY id")?;
            let rows = statement
                .query_map([id], |row| Ok(NotifyMeRequest { email_address: row.get(0)?, sms: row.get(1)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    async fn record_notification(
        &self,
        notification: &Notification,
        now: DateTime<Utc>,
    ) -> Result<NotificationRecord, StoreError> {
        let (id, delivery_id, body) =
            (notification.id.clone(), notification.delivery_id.clone(), to_json(notification)?);
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO notifications (id, delivery_id, body, status, attempts, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                id,
                delivery_id,
                body,
                NotificationStatus::Pending.as_str(),
                unix_millis(now)
            ])?;
            // Read back as stored: a record created before tells whether it was sent already.
            let (body, status, attempts, last_error, created_at, sent_at) = conn
                .prepare_cached(
                    "SELECT body, status, attempts, last_error, created_at, sent_at FROM notifications WHERE id = ?1",
                )?
                .query_row([&id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                })?;
            notification_from(&body, &status, attempts, last_error, created_at, sent_at)
        })
        .await
    }

    async fn mark_notification(
        &self,
        delivery_id: &str,
        id: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let status = outcome.status();
        let sent_at = (status == NotificationStatus::Sent).then(|| unix_millis(now));
        let (delivery_id, id, error) = (delivery_id.to_owned(), id.to_owned(), outcome.error().map(str::to_owned));
        let attempt = i64::from(outcome.is_attempt());
        let marked = self
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE notifications SET status = ?3, attempts = attempts + ?4,
                         last_error = COALESCE(?5, last_error), sent_at = COALESCE(?6, sent_at), updated_at = ?7
                     WHERE id = ?1 AND delivery_id = ?2 AND status = ?8",
                    )?
                    .execute(params![
                        id,
                        delivery_id,
                        status.as_str(),
                        attempt,
                        error,
                        sent_at,
                        unix_millis(now),
                        NotificationStatus::Pending.as_str()
                    ])?)
            })
            .await?;
        Ok(marked == 1)
    }

    async fn notifications(&self, delivery_id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT body, status, attempts, last_error, created_at, sent_at FROM notifications
             WHERE delivery_id = ?1 ORDER BY seq",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| notification_from(row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5)))
            .collect()
    }

    async fn count(&self, account_id: Option<&str>, owner_user_id: &str, month: Month) -> Result<u64, StoreError> {
        let (start, end) = month.range();
        let in_month =
            |sql| sqlx::query_scalar::<_, i64>(sql).bind(owner_user_id).bind(unix_millis(start)).bind(unix_millis(end));
        // Two statements rather than `(?4 IS NULL OR owner_account_id = ?4)`: each then matches
        // its index exactly (deliveries_owner_created, deliveries_owner_account_created).
        let query = match account_id {
            None => in_month(
                "SELECT COUNT(*) FROM deliveries WHERE owner_user_id = ?1 AND created_at >= ?2 AND created_at < ?3",
            ),
            Some(account_id) => in_month(
                "SELECT COUNT(*) FROM deliveries
                 WHERE owner_user_id = ?1 AND owner_account_id = ?4 AND created_at >= ?2 AND created_at < ?3",
            )
            .bind(account_id),
        };
        let count = query.fetch_one(&self.pool).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.writer.is_running() {
            return Err(sqlx::Error::from(WriteError::Stopped).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use contracts::{ConfirmationType, UserAccount};

    use super::*;

    fn owned(id: &str, user: &str, account: &str) -> Delivery {
        Delivery {
            id: id.to_owned(),
            owner: UserAccount { user_id: user.to_owned(), account_id: account.to_owned() },
            pickup: Location::new(47.60, -122.33, 0.0),
            dropoff: Location::new(47.62, -122.35, 10.0),
            deadline: String::new(),
            expedited: false,
            confirmation_required: ConfirmationType::None,
            drone_id: "drone-0007".to_owned(),
            stage: None,
            pickup_time: None,
            package_id: None,
        }
    }

    /// A database as the releases before the account column left it: migrated up to 0005, its
    /// rows written without the column.
    async fn database_before_the_account_column(path: &Path, rows: &[Delivery], created_at: DateTime<Utc>) {
        let pool = open_pool(path, Durability::Normal, 1).await.unwrap();
        sqlx::migrate!("./migrations/sqlite").run_to(5, &pool).await.unwrap();
        for delivery in rows {
            sqlx::query(
                "INSERT INTO deliveries (id, owner_user_id, body, stage, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'Created', ?4, ?4)",
            )
            .bind(&delivery.id)
            .bind(&delivery.owner.user_id)
            .bind(to_json(delivery).unwrap())
            .bind(unix_millis(created_at))
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }

    #[tokio::test]
    async fn deliveries_stored_before_the_account_column_count_under_their_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.db");
        let rows = [owned("d1", "shared", "acc-a"), owned("d2", "shared", "acc-a"), owned("d3", "shared", "acc-b")];
        database_before_the_account_column(&path, &rows, Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()).await;

        let store = SqliteDeliveryStore::open(&path).await.unwrap();
        let march = Month { year: 2026, month: 3 };
        assert_eq!(store.count(Some("acc-a"), "shared", march).await.unwrap(), 2);
        assert_eq!(store.count(Some("acc-b"), "shared", march).await.unwrap(), 1);
        assert_eq!(store.count(None, "shared", march).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_store_error_in_a_write_undoes_it_and_comes_back_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteDeliveryStore::open(&dir.path().join("delivery.db")).await.unwrap();
        let delivery = owned("d1", "u1", "acc-a");
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        let failed = store
            .write(move |conn| {
                assert!(insert(conn, &delivery, DeliveryStage::Created, None, now)?);
                Err::<(), _>(StoreError::Contended(delivery.id))
            })
            .await
            .unwrap_err();
        assert!(matches!(&failed, StoreError::Contended(id) if id == "d1"), "{failed}");
        assert_eq!(store.get("d1").await.unwrap(), None);
        assert!(store.tracking("d1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stored_value_that_does_not_decode_fails_a_change_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.db");
        let store = SqliteDeliveryStore::open(&path).await.unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        store.upsert(owned("d1", "u1", "acc-a"), now).await.unwrap();
        sqlx::query("UPDATE deliveries SET body = 'not json' WHERE id = 'd1'").execute(&store.pool).await.unwrap();

        let failed = store.cancel("d1", now).await.unwrap_err();
        assert!(matches!(failed, StoreError::Decode(_)), "{failed}");
        assert!(!failed.is_unavailable());
        assert_eq!(store.tracking("d1").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_failing_statement_is_the_store_being_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteDeliveryStore::open(&dir.path().join("delivery.db")).await.unwrap();
        let failed =
            store.write(|conn| Ok(conn.execute("INSERT INTO no_such_table VALUES (1)", [])?)).await.unwrap_err();
        assert!(matches!(failed, StoreError::Sqlite(_)), "{failed}");
        assert!(failed.is_unavailable());
    }
}
