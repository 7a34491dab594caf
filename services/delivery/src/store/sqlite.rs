use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent, NotifyMeRequest, RescheduledDelivery};
use contracts::events::{DronePosition, Flight};
use contracts::{DeliveryStage, Location};
use platform::clock::{from_unix_millis, unix_millis};
use platform::query::Month;
use platform::sqlite::{Durability, open_pool};
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, SqliteConnection};
use tokio::sync::Mutex;

use super::{Changed, Closed, DeliveryStore, StoreError, Upserted, from_json, to_json};
use crate::domain::{self, Action, Transition};
use crate::notifications::{Notification, NotificationRecord, NotificationStatus, Outcome};

/// Deliveries in an embedded SQLite file.
pub struct SqliteDeliveryStore {
    pool: SqlitePool,
    /// Stage changes read then write; one at a time keeps them atomic.
    writer: Mutex<()>,
}

impl SqliteDeliveryStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let pool = open_pool(path, Durability::Normal, 2).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(sqlx::Error::from)?;
        Ok(Self { pool, writer: Mutex::new(()) })
    }

    /// Applies `action` to the delivery if the stage rules allow it, in one transaction.
    async fn change(
        &self,
        id: &str,
        action: Action,
        now: DateTime<Utc>,
        update: impl FnOnce(Delivery) -> (Delivery, Option<Location>) + Send,
        confirmation: Option<String>,
    ) -> Result<Changed, StoreError> {
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let Some(current) = load(&mut tx, id).await? else { return Ok(Changed::NotFound) };
        let stage = tracked(&mut tx, id, current.stage.unwrap_or(DeliveryStage::Created)).await?;
        let next = match domain::transition(stage, action) {
            Transition::AlreadyDone => return Ok(Changed::Done(Box::new(current))),
            Transition::Refused(reason) => return Ok(Changed::Refused(reason)),
            Transition::To(next) => next,
        };
        let (updated, location) = update(current);
        let updated = move_to(&mut tx, updated, next, location, None, now).await?;
        if let Some(body) = confirmation {
            sqlx::query("INSERT OR REPLACE INTO confirmations (delivery_id, body, at) VALUES (?1, ?2, ?3)")
                .bind(id)
                .bind(body)
                .bind(unix_millis(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Changed::Done(Box::new(updated)))
    }
}

/// Inserts `delivery` in `stage` with its first event (at the pickup); `false`, writing nothing,
/// when a delivery with its id exists.
async fn insert(
    conn: &mut SqliteConnection,
    delivery: &Delivery,
    stage: DeliveryStage,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let body = to_json(&Delivery { stage: None, ..delivery.clone() })?;
    let inserted = sqlx::query(
        "INSERT INTO deliveries (id, owner_user_id, owner_account_id, body, stage, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&delivery.id)
    .bind(&delivery.owner.user_id)
    .bind(&delivery.owner.account_id)
    .bind(&body)
    .bind(stage.as_str())
    .bind(unix_millis(now))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        record_event(conn, &delivery.id, stage, Some(delivery.pickup), reason, now).await?;
    }
    Ok(inserted)
}

/// Writes `delivery` (as updated by the change) in stage `next` and records the event; returns
/// it with its new stage.
async fn move_to(
    conn: &mut SqliteConnection,
    mut delivery: Delivery,
    next: DeliveryStage,
    location: Option<Location>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Delivery, StoreError> {
    delivery.stage = None;
    sqlx::query("UPDATE deliveries SET body = ?1, stage = ?2, updated_at = ?3 WHERE id = ?4")
        .bind(to_json(&delivery)?)
        .bind(next.as_str())
        .bind(unix_millis(now))
        .bind(&delivery.id)
        .execute(&mut *conn)
        .await?;
    record_event(conn, &delivery.id, next, location, reason, now).await?;
    delivery.stage = Some(next);
    Ok(delivery)
}

async fn load(conn: &mut SqliteConnection, id: &str) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query("SELECT body, stage FROM deliveries WHERE id = ?1").bind(id).fetch_optional(conn).await?;
    let Some(row) = row else { return Ok(None) };
    let mut delivery: Delivery = from_json(row.get::<&str, _>(0))?;
    delivery.stage = row.get::<&str, _>(1).parse().ok();
    Ok(Some(delivery))
}

/// The stage the rules judge the delivery by ([`domain::tracked_stage`]), reading its history
/// only when that matters.
async fn tracked(conn: &mut SqliteConnection, id: &str, stage: DeliveryStage) -> Result<DeliveryStage, StoreError> {
    if !domain::needs_history(stage) {
        return Ok(stage);
    }
    let history: Vec<DeliveryStage> = load_tracking(conn, id).await?.into_iter().map(|e| e.stage).collect();
    Ok(domain::tracked_stage(stage, &history))
}

async fn load_tracking(conn: &mut SqliteConnection, id: &str) -> Result<Vec<DeliveryTrackingEvent>, StoreError> {
    let rows =
        sqlx::query("SELECT stage, location, at, reason FROM tracking_events WHERE delivery_id = ?1 ORDER BY seq")
            .bind(id)
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|row| {
            let stage: &str = row.get(0);
            Ok(DeliveryTrackingEvent {
                delivery_id: id.to_owned(),
                stage: stage.parse().map_err(|e| StoreError::Decode(Box::new(e)))?,
                location: row.get::<Option<&str>, _>(1).map(from_json).transpose()?,
                at: from_unix_millis(row.get(2)),
                reason: row.get(3),
            })
        })
        .collect()
}

async fn record_event(
    conn: &mut SqliteConnection,
    id: &str,
    stage: DeliveryStage,
    location: Option<Location>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let location = location.map(|l| to_json(&l)).transpose()?;
    sqlx::query("INSERT INTO tracking_events (delivery_id, stage, location, at, reason) VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(id)
        .bind(stage.as_str())
        .bind(location)
        .bind(unix_millis(now))
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}

/// Reads an outbox row selected as `body, status, attempts, last_error, created_at, sent_at`.
fn notification_record(row: &sqlx::sqlite::SqliteRow) -> Result<NotificationRecord, StoreError> {
    let status: &str = row.get(1);
    Ok(NotificationRecord {
        notification: from_json(row.get::<&str, _>(0))?,
        status: NotificationStatus::parse(status)
            .ok_or_else(|| StoreError::Decode(format!("unknown notification status {status:?}").into()))?,
        attempts: u32::try_from(row.get::<i64, _>(2)).unwrap_or(0),
        last_error: row.get(3),
        created_at: from_unix_millis(row.get(4)),
        sent_at: row.get::<Option<i64>, _>(5).map(from_unix_millis),
    })
}

#[async_trait]
impl DeliveryStore for SqliteDeliveryStore {
    async fn upsert(&self, mut delivery: Delivery, now: DateTime<Utc>) -> Result<Upserted, StoreError> {
        delivery.stage = None;
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let inserted = insert(&mut tx, &delivery, DeliveryStage::Created, None, now).await?;
        if !inserted {
            let body = to_json(&delivery)?;
            let stage: Option<String> = sqlx::query_scalar("SELECT stage FROM deliveries WHERE id = ?1")
                .bind(&delivery.id)
                .fetch_optional(&mut *tx)
                .await?;
            // A failed delivery put again (the workflow runs its replayed request) is reopened.
            let reopen = stage.as_deref() == Some(DeliveryStage::Failed.as_str());
            let stage = if reopen { DeliveryStage::Created.as_str().to_owned() } else { stage.unwrap_or_default() };
            // The PUT may name another owner: the counting columns follow the body.
            sqlx::query(
                "UPDATE deliveries SET owner_user_id = ?1, owner_account_id = ?2, body = ?3, updated_at = ?4, stage = ?6
                 WHERE id = ?5",
            )
            .bind(&delivery.owner.user_id)
            .bind(&delivery.owner.account_id)
            .bind(&body)
            .bind(unix_millis(now))
            .bind(&delivery.id)
            .bind(&stage)
            .execute(&mut *tx)
            .await?;
            if reopen {
                record_event(&mut tx, &delivery.id, DeliveryStage::Created, Some(delivery.pickup), None, now).await?;
            }
        }
        tx.commit().await?;
        if inserted {
            delivery.stage = Some(DeliveryStage::Created);
            Ok(Upserted::Created(Box::new(delivery)))
        } else {
            Ok(Upserted::Updated)
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, id).await
    }

    async fn tracking(&self, id: &str) -> Result<Vec<DeliveryTrackingEvent>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_tracking(&mut conn, id).await
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
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let current = load(&mut tx, &delivery.id).await?;
        let current_stage = match &current {
            Some(d) => Some(tracked(&mut tx, &delivery.id, d.stage.unwrap_or(DeliveryStage::Created)).await?),
            None => None,
        };
        let next = match domain::close(current_stage, stage) {
            Transition::To(next) => next,
            // Only a delivery that exists can be already closed.
            Transition::AlreadyDone => return Ok(Closed::Done(Box::new(current.unwrap_or(delivery)))),
            Transition::Refused(reason) => return Ok(Closed::Refused(reason)),
        };
        let closed = match current {
            Some(current) => Closed::Done(Box::new(move_to(&mut tx, current, next, None, Some(reason), now).await?)),
            None if insert(&mut tx, &delivery, next, Some(reason), now).await? => {
                Closed::Created(Box::new(Delivery { stage: Some(next), ..delivery }))
            }
            // Created by a writer outside this store between the read and the write.
            None => return Err(StoreError::Contended(delivery.id)),
        };
        tx.commit().await?;
        Ok(closed)
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
        let _one = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let Some(current) = load(&mut tx, id).await? else { return Ok(false) };
        let stage = current.stage.unwrap_or(DeliveryStage::Created);
        let Some(note) = domain::refusal_note(tracked(&mut tx, id, stage).await?, action, reason) else {
            return Ok(false);
        };
        if domain::already_noted(&load_tracking(&mut tx, id).await?, &note) {
            return Ok(false);
        }
        record_event(&mut tx, id, stage, None, Some(&note), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn confirmation(&self, id: &str) -> Result<Option<Confirmation>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM confirmations WHERE delivery_id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(from_json).transpose()
    }

    async fn record_flight(&self, id: &str, flight: &Flight, observed_at: DateTime<Utc>) -> Result<bool, StoreError> {
        // One statement: the newer-wins rule is the upsert's condition, so it needs no lock.
        let stored = sqlx::query(
            "INSERT INTO flights (delivery_id, body, departed_at, observed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (delivery_id) DO UPDATE SET
                 body = excluded.body, departed_at = excluded.departed_at, observed_at = excluded.observed_at
             WHERE excluded.departed_at > flights.departed_at
                OR (excluded.departed_at = flights.departed_at AND excluded.observed_at > flights.observed_at)",
        )
        .bind(id)
        .bind(to_json(flight)?)
        .bind(unix_millis(flight.departed_at))
        .bind(unix_millis(observed_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(stored == 1)
    }

    async fn flight(&self, id: &str) -> Result<Option<Flight>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM flights WHERE delivery_id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(from_json).transpose()
    }

    async fn record_position(&self, id: &str, position: &DronePosition) -> Result<bool, StoreError> {
        // The newer-wins rule is the upsert's condition, as for flights.
        let stored = sqlx::query(
            "INSERT INTO positions (delivery_id, body, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (delivery_id) DO UPDATE SET body = excluded.body, at = excluded.at
             WHERE excluded.at > positions.at",
        )
        .bind(id)
        .bind(to_json(position)?)
        .bind(unix_millis(position.at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(stored == 1)
    }

    async fn position(&self, id: &str) -> Result<Option<DronePosition>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM positions WHERE delivery_id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(from_json).transpose()
    }

    async fn add_notify_request(
        &self,
        id: &str,
        request: &NotifyMeRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO notify_requests (delivery_id, email, sms, created_at)
             SELECT id, ?2, ?3, ?4 FROM deliveries WHERE id = ?1",
        )
        .bind(id)
        .bind(&request.email_address)
        .bind(&request.sms)
        .bind(unix_millis(now))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn notify_requests(&self, id: &str) -> Result<Vec<NotifyMeRequest>, StoreError> {
        let rows = sqlx::query("SELECT email, sms FROM notify_requests WHERE delivery_id = ?1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| NotifyMeRequest { email_address: row.get(0), sms: row.get(1) }).collect())
    }

    async fn record_notification(
        &self,
        notification: &Notification,
        now: DateTime<Utc>,
    ) -> Result<NotificationRecord, StoreError> {
        // The insert is one statement, so concurrent callers create one row; the read that
        // follows sees that row whoever created it.
        let mut conn = self.pool.acquire().await?;
        sqlx::query(
            "INSERT INTO notifications (id, delivery_id, body, status, attempts, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&notification.id)
        .bind(&notification.delivery_id)
        .bind(to_json(notification)?)
        .bind(NotificationStatus::Pending.as_str())
        .bind(unix_millis(now))
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query(
            "SELECT body, status, attempts, last_error, created_at, sent_at FROM notifications WHERE id = ?1",
        )
        .bind(&notification.id)
        .fetch_one(&mut *conn)
        .await?;
        notification_record(&row)
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
        let marked = sqlx::query(
            "UPDATE notifications SET status = ?3, attempts = attempts + ?4, last_error = COALESCE(?5, last_error),
                 sent_at = COALESCE(?6, sent_at), updated_at = ?7
             WHERE id = ?1 AND delivery_id = ?2 AND status = ?8",
        )
        .bind(id)
        .bind(delivery_id)
        .bind(status.as_str())
        .bind(i64::from(outcome.is_attempt()))
        .bind(outcome.error())
        .bind(sent_at)
        .bind(unix_millis(now))
        .bind(NotificationStatus::Pending.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
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
        rows.iter().map(notification_record).collect()
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
}
