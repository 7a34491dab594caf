//! The embedded queue backend: one SQLite file (WAL), one writer thread.
//!
//! Every change (publish, claim, ack, retry) goes through the file's [`GroupWriter`], which
//! applies whatever is waiting in one transaction: one fsync covers many publishes (group
//! commit), and writers never fight over SQLite's lock. The writer owns a plain (rusqlite)
//! connection, so a whole batch costs one hand-over between threads; sqlx's driver would hand
//! over every statement to its own worker thread, and those context switches were most of the
//! embedded bus's CPU. Reads (dead letters, depth) use a small sqlx pool.
//!
//! A durable queue fsyncs only the batches that carry a promise: a publish (its 202) or an
//! operator's replay or purge. Claims, acks, retries and lease extensions commit without one: a
//! power cut that loses them only delivers a message again, which every consumer must survive
//! anyway, and the next fsync'd commit flushes them (the WAL is written in order).
//!
//! A dead letter stays in its row (state dead, `settled_at` saying when) until an operator
//! replays it (the same row becomes ready again) or purges it (the row is deleted).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use rusqlite::{OptionalExtension, params};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::Notify;

use super::{
    BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, Retried, Settlement,
};
use crate::clock::from_unix_millis;
use crate::sqlite::{Durability, GroupWriter, open_pool};

const STATE_READY: i64 = 0;
const STATE_DONE: i64 = 1;
const STATE_DEAD: i64 = 2;
/// How often settled messages older than the de-duplication window are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(30);

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS queue_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        state INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        visible_at INTEGER NOT NULL,
        lease TEXT,
        last_error TEXT,
        enqueued_at INTEGER NOT NULL,
        settled_at INTEGER,
        UNIQUE (queue, message_id)
    )",
    "CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, state, visible_at)",
];

/// A durable work queue in a SQLite file.
pub struct SqliteQueue {
    name: Arc<str>,
    writer: GroupWriter,
    readers: SqlitePool,
    published: Notify,
    options: Arc<QueueOptions>,
    durability: Durability,
    /// When settled messages were last purged.
    purged_at: Mutex<Instant>,
}

struct Claimed {
    seq: i64,
    message_id: String,
    payload: Vec<u8>,
    attempts: i64,
    enqueued_at: i64,
    lease: String,
}

#[derive(Clone)]
struct Lease {
    seq: i64,
    token: String,
    message_id: String,
}

enum Outcome {
    Ack,
    Retry { delay: Duration, error: String },
    DeadLetter { error: String },
    Extend,
}

impl Outcome {
    /// Whether settling this way changes the database with one statement (see
    /// [`crate::sqlite::GroupWriter::write_statement`]).
    fn is_one_statement(&self) -> bool {
        matches!(self, Outcome::Ack | Outcome::Extend)
    }
}

#[derive(Debug, PartialEq)]
enum Settled {
    Done,
    Retried(Retried),
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue `name` in the SQLite file at `path`.
    pub async fn open(path: &Path, name: &str, options: QueueOptions) -> Result<Self, BusError> {
        Self::open_with(path, name, options, Durability::Full).await
    }

    /// As [`open`](Self::open), choosing how publishes are flushed.
    pub async fn open_with(
        path: &Path,
        name: &str,
        options: QueueOptions,
        durability: Durability,
    ) -> Result<Self, BusError> {
        let writer = GroupWriter::open(path, Durability::Normal, &format!("queue {name}")).await?;
        writer.write(|conn| SCHEMA.iter().try_for_each(|statement| conn.execute_batch(statement))).await?;
        let readers = open_pool(path, durability, 2).await.map_err(unavailable)?;
        Ok(Self {
            name: Arc::from(name),
            writer,
            readers,
            published: Notify::new(),
            options: Arc::new(options),
            durability,
            purged_at: Mutex::new(Instant::now()),
        })
    }

    /// Runs `change` in the writer's next batch, fsync'd when it is a promise to the caller and
    /// the queue is durable.
    async fn change<T: Send + 'static>(
        &self,
        promise: bool,
        change: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BusError> {
        Ok(if promise && self.durability == Durability::Full {
            self.writer.write_flushed(change).await?
        } else {
            self.writer.write(change).await?
        })
    }

    /// Whether settled messages are due to be purged (then the caller purges them).
    fn purge_due(&self) -> bool {
        let mut purged_at = self.purged_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = purged_at.elapsed() >= PURGE_EVERY;
        if due {
            *purged_at = Instant::now();
        }
        due
    }

    async fn claim(&self, max: usize) -> Result<Vec<ReceivedMessage>, BusError> {
        let (queue, options, purge) = (self.name.clone(), self.options.clone(), self.purge_due());
        let claimed = self
            .change(false, move |conn| {
                let now = Utc::now().timestamp_millis();
                if purge && let Err(err) = purge_expired_ids(conn, &queue, &options, now) {
                    tracing::warn!(error = %err, %queue, "purging de-duplication ids failed");
                }
                claim(conn, &queue, &options, max, now)
            })
            .await?;
        Ok(claimed
            .into_iter()
            .map(|c| {
                let lease = Lease { seq: c.seq, token: c.lease, message_id: c.message_id.clone() };
                let settlement = SqliteSettlement { writer: self.writer.clone(), options: self.options.clone(), lease };
                ReceivedMessage::new(
                    c.message_id,
                    Bytes::from(c.payload),
                    u32::try_from(c.attempts).unwrap_or(u32::MAX),
                    from_unix_millis(c.enqueued_at),
                    Box::new(settlement),
                )
            })
            .collect())
    }
}

/// Claims until something comes or `wait` is over: after an empty claim, naps until `published`
/// is raised (a publish in this process) or `poll_interval` passes (another process's publish, a
/// retry coming due).
pub(super) async fn receive_until<F, Fut>(
    published: &Notify,
    poll_interval: Duration,
    wait: Duration,
    mut claim: F,
) -> Result<Vec<ReceivedMessage>, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<ReceivedMessage>, BusError>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register interest before looking, so a publish in between is not missed.
        let notified = published.notified();
        let messages = claim().await?;
        let now = tokio::time::Instant::now();
        if !messages.is_empty() || now >= deadline {
            return Ok(messages);
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(poll_interval.min(deadline - now)) => {}
        }
    }
}

fn unavailable(err: sqlx::Error) -> BusError {
    BusError::Unavailable(err.to_string())
}

/// A dead letter from a row of `message_id, payload, attempts, last_error, enqueued_at, settled_at`
/// (a dead row's `settled_at` is when it died).
fn dead_letter_from(row: &sqlx::sqlite::SqliteRow) -> DeadLetter {
    DeadLetter {
        id: row.get(0),
        payload: Bytes::from(row.get::<Vec<u8>, _>(1)),
        attempts: u32::try_from(row.get::<i64, _>(2)).unwrap_or(u32::MAX),
        last_error: row.get::<Option<String>, _>(3).unwrap_or_default(),
        enqueued_at: from_unix_millis(row.get(4)),
        dead_lettered_at: from_unix_millis(row.get::<Option<i64>, _>(5).unwrap_or_else(|| row.get(4))),
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<Published, BusError> {
        let queue = self.name.clone();
        let insert =
            move |conn: &rusqlite::Connection| insert_message(conn, &queue, &message, Utc::now().timestamp_millis());
        let outcome = if self.durability == Durability::Full {
            self.writer.write_statement_flushed(insert).await?
        } else {
            self.writer.write_statement(insert).await?
        };
        if outcome == Published::Stored {
            self.published.notify_waiters();
        }
        Ok(outcome)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        receive_until(&self.published, self.options.poll_interval, wait, || self.claim(max.max(1))).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let rows = sqlx::query(
            "SELECT message_id, payload, attempts, last_error, enqueued_at, settled_at FROM queue_messages
             WHERE queue = ?1 AND state = ?2 ORDER BY seq LIMIT ?3 + 0",
        )
        .bind(&*self.name)
        .bind(STATE_DEAD)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(dead_letter_from).collect())
    }

    async fn find_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, BusError> {
        let row = sqlx::query(
            "SELECT message_id, payload, attempts, last_error, enqueued_at, settled_at FROM queue_messages
             WHERE queue = ?1 AND message_id = ?2 AND state = ?3",
        )
        .bind(&*self.name)
        .bind(id)
        .bind(STATE_DEAD)
        .fetch_optional(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(row.as_ref().map(dead_letter_from))
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let (queue, id) = (self.name.clone(), id.to_owned());
        let replayed = self.change(true, move |conn| replay(conn, &queue, &id, Utc::now().timestamp_millis())).await?;
        if replayed {
            self.published.notify_waiters();
        }
        Ok(replayed)
    }

    async fn purge_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let (queue, id) = (self.name.clone(), id.to_owned());
        Ok(self.change(true, move |conn| purge(conn, &queue, Some(&id))).await? > 0)
    }

    async fn purge_dead_letters(&self) -> Result<u64, BusError> {
        let queue = self.name.clone();
        self.change(true, move |conn| purge(conn, &queue, None)).await
    }

    async fn depth(&self) -> Result<u64, BusError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1 AND state = ?2")
            .bind(&*self.name)
            .bind(STATE_READY)
            .fetch_one(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1").execute(&self.readers).await.map_err(unavailable)?;
        if !self.writer.is_running() {
            return Err(BusError::Unavailable("queue writer stopped".to_owned()));
        }
        Ok(())
    }
}

struct SqliteSettlement {
    writer: GroupWriter,
    options: Arc<QueueOptions>,
    lease: Lease,
}

impl SqliteSettlement {
    async fn settle(&self, outcome: Outcome) -> Result<Settled, BusError> {
        let (options, lease) = (self.options.clone(), self.lease.clone());
        let one_statement = outcome.is_one_statement();
        let settle =
            move |conn: &rusqlite::Connection| settle(conn, &options, &lease, outcome, Utc::now().timestamp_millis());
        if one_statement { self.writer.write_statement(settle).await? } else { self.writer.write(settle).await? }
    }
}

#[async_trait]
impl Settlement for SqliteSettlement {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settle(Outcome::Ack).await.map(|_| ())
    }

    async fn retry_after(self: Box<Self>, delay: Duration, error: &str) -> Result<Retried, BusError> {
        match self.settle(Outcome::Retry { delay, error: error.to_owned() }).await? {
            Settled::Retried(retried) => Ok(retried),
            Settled::Done => Ok(Retried::Scheduled),
        }
    }

    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError> {
        self.settle(Outcome::DeadLetter { error: error.to_owned() }).await.map(|_| ())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.settle(Outcome::Extend).await.map(|_| ())
    }
}

/// Deletes the settled messages older than the de-duplication window: their ids may be used
/// again from then on.
fn purge_expired_ids(
    conn: &rusqlite::Connection,
    queue: &str,
    options: &QueueOptions,
    now: i64,
) -> rusqlite::Result<()> {
    let window = i64::try_from(options.dedup_window.as_millis()).unwrap_or(i64::MAX);
    conn.prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2 AND settled_at < ?3")?
        .execute(params![queue, STATE_DONE, now.saturating_sub(window)])?;
    Ok(())
}

/// Stores one message unless its id is already there (then it is a duplicate, also when the
/// first copy came earlier in the same batch).
fn insert_message(
    conn: &rusqlite::Connection,
    queue: &str,
    message: &OutgoingMessage,
    now: i64,
) -> rusqlite::Result<Published> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO queue_messages (queue, message_id, payload, state, visible_at, enqueued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (queue, message_id) DO NOTHING",
        )?
        .execute(params![queue, message.id, message.payload.as_ref(), STATE_READY, now])?;
    Ok(if inserted == 0 { Published::Duplicate } else { Published::Stored })
}

fn claim(
    conn: &rusqlite::Connection,
    queue: &str,
    options: &QueueOptions,
    max: usize,
    now: i64,
) -> rusqlite::Result<Vec<Claimed>> {
    // A consumer that crashed on the last attempt leaves a message with no attempts left:
    // dead-letter it instead of delivering it once more. Only the front of the queue (what this
    // claim could take) is looked at: checking every due message made each claim cost as much
    // as the whole backlog, so a queue that fell behind fell further behind. An exhausted
    // message stays at the front until it is dead-lettered, so a later claim still finds it.
    conn.prepare_cached(
        "UPDATE queue_messages SET state = ?1, settled_at = ?2, lease = NULL,
             last_error = COALESCE(last_error, 'lease expired') || ' (no attempts left after lease expiry)'
         WHERE seq IN (SELECT seq FROM queue_messages
                       WHERE queue = ?3 AND state = ?4 AND visible_at <= ?2
                       ORDER BY visible_at, seq LIMIT ?6 + 0)
           AND attempts >= ?5",
    )?
    .execute(params![
        STATE_DEAD,
        now,
        queue,
        STATE_READY,
        i64::from(options.max_attempts),
        i64::try_from(max).unwrap_or(i64::MAX)
    ])?;

    let lease = uuid::Uuid::new_v4().to_string();
    let lease_ms = i64::try_from(options.ack_wait.as_millis()).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(
        "UPDATE queue_messages SET attempts = attempts + 1, visible_at = ?1, lease = ?2
         WHERE seq IN (SELECT seq FROM queue_messages
                       WHERE queue = ?3 AND state = ?4 AND visible_at <= ?5 AND attempts < ?7
                       ORDER BY visible_at, seq LIMIT ?6 + 0)
         RETURNING seq, message_id, payload, attempts, enqueued_at",
    )?;
    let rows = statement.query_map(
        params![
            now.saturating_add(lease_ms),
            lease,
            queue,
            STATE_READY,
            now,
            i64::try_from(max).unwrap_or(i64::MAX),
            i64::from(options.max_attempts)
        ],
        |row| {
            Ok(Claimed {
                seq: row.get(0)?,
                message_id: row.get(1)?,
                payload: row.get(2)?,
                attempts: row.get(3)?,
                enqueued_at: row.get(4)?,
                lease: lease.clone(),
            })
        },
    )?;
    let mut claimed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    claimed.sort_by_key(|c| c.seq);
    Ok(claimed)
}

fn settle(
    conn: &rusqlite::Connection,
    options: &QueueOptions,
    lease: &Lease,
    outcome: Outcome,
    now: i64,
) -> rusqlite::Result<Result<Settled, BusError>> {
    let lost = || Err(BusError::LeaseLost(lease.message_id.clone()));
    let affected = match outcome {
        Outcome::Ack => conn
            .prepare_cached(
                "UPDATE queue_messages SET state = ?1, settled_at = ?2, lease = NULL, payload = x''
                 WHERE seq = ?3 AND lease = ?4 AND state = ?5",
            )?
            .execute(params![STATE_DONE, now, lease.seq, lease.token, STATE_READY])?,
        Outcome::Extend => {
            let lease_ms = i64::try_from(options.ack_wait.as_millis()).unwrap_or(i64::MAX);
            conn.prepare_cached(
                "UPDATE queue_messages SET visible_at = ?1 WHERE seq = ?2 AND lease = ?3 AND state = ?4",
            )?
            .execute(params![now.saturating_add(lease_ms), lease.seq, lease.token, STATE_READY])?
        }
        Outcome::DeadLetter { error } => dead_letter(conn, lease, &error, now)?,
        Outcome::Retry { delay, error } => {
            let attempts: Option<i64> = conn
                .prepare_cached("SELECT attempts FROM queue_messages WHERE seq = ?1 AND lease = ?2 AND state = ?3")?
                .query_row(params![lease.seq, lease.token, STATE_READY], |row| row.get(0))
                .optional()?;
            let Some(attempts) = attempts else { return Ok(lost()) };
            if attempts >= i64::from(options.max_attempts) {
                let error = format!("{error} (after {attempts} attempts)");
                dead_letter(conn, lease, &error, now)?;
                return Ok(Ok(Settled::Retried(Retried::DeadLettered)));
            }
            let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            conn.prepare_cached(
                "UPDATE queue_messages SET visible_at = ?1, last_error = ?2, lease = NULL WHERE seq = ?3",
            )?
            .execute(params![now.saturating_add(delay_ms), error, lease.seq])?;
            return Ok(Ok(Settled::Retried(Retried::Scheduled)));
        }
    };
    Ok(if affected == 0 { lost() } else { Ok(Settled::Done) })
}

/// Makes the dead letter `id` ready again as if just published: the same row, so the same message
/// id and payload, from attempt 1. Only a dead row changes, so a second replay finds none.
fn replay(conn: &rusqlite::Connection, queue: &str, id: &str, now: i64) -> rusqlite::Result<bool> {
    let affected = conn.execute(
        "UPDATE queue_messages SET state = ?1, attempts = 0, visible_at = ?2, enqueued_at = ?2, lease = NULL,
             last_error = NULL, settled_at = NULL
         WHERE queue = ?3 AND message_id = ?4 AND state = ?5",
        params![STATE_READY, now, queue, id, STATE_DEAD],
    )?;
    Ok(affected > 0)
}

/// Deletes the dead letter `id`, or every dead letter when `id` is `None`. Its message id is
/// forgotten with it: publishing that id again stores a new message.
fn purge(conn: &rusqlite::Connection, queue: &str, id: Option<&str>) -> rusqlite::Result<u64> {
    let deleted = match id {
        Some(id) => conn.execute(
            "DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2 AND message_id = ?3",
            params![queue, STATE_DEAD, id],
        )?,
        None => {
            conn.execute("DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2", params![queue, STATE_DEAD])?
        }
    };
    Ok(deleted as u64)
}

fn dead_letter(conn: &rusqlite::Connection, lease: &Lease, error: &str, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE queue_messages SET state = ?1, settled_at = ?2, lease = NULL, last_error = ?3
         WHERE seq = ?4 AND lease = ?5 AND state = ?6",
    )?
    .execute(params![STATE_DEAD, now, error, lease.seq, lease.token, STATE_READY])
}
