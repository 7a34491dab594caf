//! The embedded event stream: an append-only log table, and per consumer group a cursor into it
//! plus the group's events in flight.
//!
//! A publish appends to the log, nothing else. A group's claim takes the events past its cursor
//! from the log, records each as in flight (a small row: the event's sequence number, attempts,
//! lease) and moves the cursor, all in one transaction, so an event reaches a group once whatever
//! crashes, and members in several processes never get one event twice. An ack deletes the
//! in-flight row; a retry makes it due again later; a lease that runs out makes it due again. The
//! payload stays in the log: a group never copies it. A group created later (from the beginning)
//! reads the whole log.
//!
//! Every stream and group of one file in a process writes through one [`GroupWriter`]: appends,
//! claims and settlements of all of them share its transactions, so the file sees one commit per
//! batch and no writer ever waits on another's lock. Batches holding an append are fsync'd (a
//! publish promises its event survives); the others commit with `synchronous=NORMAL`, since
//! losing a claim or an ack only delivers an event again, and the next fsync'd commit flushes
//! them (the WAL is written in order).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{OptionalExtension, params};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::Notify;

use super::stream::{EventStream, StartAt, Subscription};
use super::{BusError, DeadLetter, OutgoingMessage, Published, QueueOptions, ReceivedMessage, Retried, Settlement};
use crate::clock::from_unix_millis;
use crate::sqlite::{Durability, GroupWriter, WriteError, open_pool};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS stream_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        published_at INTEGER NOT NULL,
        UNIQUE (stream, event_id)
    );
    CREATE INDEX IF NOT EXISTS stream_events_by_stream ON stream_events (stream, seq);
    CREATE TABLE IF NOT EXISTS stream_groups (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        cursor INTEGER NOT NULL,
        PRIMARY KEY (stream, grp)
    );
    CREATE TABLE IF NOT EXISTS stream_in_flight (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        visible_at INTEGER NOT NULL,
        lease TEXT,
        last_error TEXT,
        PRIMARY KEY (stream, grp, seq)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS stream_dead_letters (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        dead_at INTEGER NOT NULL,
        PRIMARY KEY (stream, grp, seq)
    ) WITHOUT ROWID;
";

/// One SQLite file of event streams: its writer, its readers, and each stream's publish signal.
struct StreamFile {
    writer: GroupWriter,
    readers: SqlitePool,
    signals: Mutex<HashMap<String, Arc<Notify>>>,
}

/// The files open in this process, so that every stream on one file shares its writer.
static OPEN_FILES: LazyLock<tokio::sync::Mutex<HashMap<PathBuf, Weak<StreamFile>>>> = LazyLock::new(Default::default);

impl StreamFile {
    async fn open(path: &Path) -> Result<Arc<Self>, BusError> {
        let name = path.file_name().map_or_else(|| "events".into(), |n| n.to_string_lossy());
        let writer = GroupWriter::open(path, Durability::Normal, &name).await?;
        writer.write(|conn| conn.execute_batch(SCHEMA)).await?;
        let readers = open_pool(path, Durability::Normal, 2).await.map_err(unavailable)?;
        Ok(Arc::new(Self { writer, readers, signals: Mutex::default() }))
    }

    /// The file at `path` as this process already has it open, or newly opened.
    async fn shared(path: &Path) -> Result<Arc<Self>, BusError> {
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let mut open = OPEN_FILES.lock().await;
        if let Some(file) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(file);
        }
        let file = Self::open(path).await?;
        open.retain(|_, file| file.strong_count() > 0);
        open.insert(key, Arc::downgrade(&file));
        Ok(file)
    }

    /// The signal raised when `stream` gets a new event from this process.
    fn signal(&self, stream: &str) -> Arc<Notify> {
        let mut signals = self.signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        signals.entry(stream.to_owned()).or_default().clone()
    }
}

/// An event stream in a SQLite file.
pub struct SqliteEventStream {
    name: Arc<str>,
    file: Arc<StreamFile>,
    published: Arc<Notify>,
}

impl SqliteEventStream {
    /// Opens the stream `name` in the file at `path`, sharing the file's writer with every other
    /// stream this process has open there.
    pub async fn open(path: &Path, name: &str) -> Result<Self, BusError> {
        Ok(Self::on(StreamFile::shared(path).await?, name))
    }

    /// As [`open`](Self::open), with a writer of its own, as another process on the same file
    /// would have: for tests of several processes sharing a file.
    pub async fn open_private(path: &Path, name: &str) -> Result<Self, BusError> {
        Ok(Self::on(StreamFile::open(path).await?, name))
    }

    fn on(file: Arc<StreamFile>, name: &str) -> Self {
        let published = file.signal(name);
        Self { name: Arc::from(name), file, published }
    }
}

impl From<WriteError> for BusError {
    fn from(err: WriteError) -> Self {
        BusError::Unavailable(err.to_string())
    }
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

fn now_millis() -> i64 {
    crate::clock::unix_millis(chrono::Utc::now())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStream for SqliteEventStream {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError> {
        let stream = self.name.clone();
        let outcome = self.file.writer.write_statement_flushed(move |conn| append(conn, &stream, &event)).await?;
        if outcome == Published::Stored {
            self.published.notify_waiters();
        }
        Ok(outcome)
    }

    /// All in one transaction: stored together or not at all.
    async fn publish_all(&self, events: Vec<OutgoingMessage>) -> Result<Vec<Published>, BusError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stream = self.name.clone();
        let outcomes: Vec<Published> = self
            .file
            .writer
            .write_flushed(move |conn| events.iter().map(|event| append(conn, &stream, event)).collect())
            .await?;
        if outcomes.contains(&Published::Stored) {
            self.published.notify_waiters();
        }
        Ok(outcomes)
    }

    async fn subscribe(
        &self,
        group: &str,
        start: StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        let key = GroupKey { stream: self.name.clone(), group: Arc::from(group) };
        let joining = key.clone();
        self.file.writer.write(move |conn| join(conn, &joining, start)).await?;
        Ok(Arc::new(SqliteSubscription {
            key,
            options: Arc::new(options),
            file: self.file.clone(),
            published: self.published.clone(),
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        if !self.file.writer.is_running() {
            return Err(BusError::Unavailable("the stream's writer has stopped".to_owned()));
        }
        sqlx::query("SELECT 1").execute(&self.file.readers).await.map(|_| ()).map_err(unavailable)
    }
}

/// Which group of which stream.
#[derive(Clone)]
struct GroupKey {
    stream: Arc<str>,
    group: Arc<str>,
}

struct SqliteSubscription {
    key: GroupKey,
    options: Arc<QueueOptions>,
    file: Arc<StreamFile>,
    published: Arc<Notify>,
}

impl SqliteSubscription {
    async fn claim(&self, max: usize) -> Result<Vec<ReceivedMessage>, BusError> {
        let (key, options) = (self.key.clone(), self.options.clone());
        let claimed = self.file.writer.write(move |conn| claim(conn, &key, &options, max, now_millis())).await?;
        Ok(claimed
            .into_iter()
            .map(|c| {
                let settlement = InFlight {
                    writer: self.file.writer.clone(),
                    key: self.key.clone(),
                    options: self.options.clone(),
                    lease: Lease { seq: c.seq, token: c.lease.clone(), event_id: c.event_id.clone() },
                };
                ReceivedMessage::new(
                    c.event_id,
                    Bytes::from(c.payload),
                    u32::try_from(c.attempts).unwrap_or(u32::MAX),
                    from_unix_millis(c.published_at),
                    Box::new(settlement),
                )
            })
            .collect())
    }
}

#[async_trait]
impl Subscription for SqliteSubscription {
    fn stream(&self) -> &str {
        &self.key.stream
    }

    fn group(&self) -> &str {
        &self.key.group
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        super::sqlite::receive_until(&self.published, self.options.poll_interval, wait, || self.claim(max.max(1))).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let rows = sqlx::query(
            "SELECT e.event_id, e.payload, d.attempts, d.last_error, e.published_at, d.dead_at
             FROM stream_dead_letters d JOIN stream_events e ON e.seq = d.seq
             WHERE d.stream = ?1 AND d.grp = ?2 ORDER BY d.seq LIMIT ?3 + 0",
        )
        .bind(&*self.key.stream)
        .bind(&*self.key.group)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.file.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| DeadLetter {
                id: row.get(0),
                payload: Bytes::from(row.get::<Vec<u8>, _>(1)),
                attempts: u32::try_from(row.get::<i64, _>(2)).unwrap_or(u32::MAX),
                last_error: row.get(3),
                enqueued_at: from_unix_millis(row.get(4)),
                dead_lettered_at: from_unix_millis(row.get(5)),
            })
            .collect())
    }

    async fn pending(&self) -> Result<u64, BusError> {
        let pending: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM stream_in_flight WHERE stream = ?1 AND grp = ?2)
                  + (SELECT COUNT(*) FROM stream_events e JOIN stream_groups g ON g.stream = e.stream AND g.grp = ?2
                     WHERE e.stream = ?1 AND e.seq > g.cursor)",
        )
        .bind(&*self.key.stream)
        .bind(&*self.key.group)
        .fetch_one(&self.file.readers)
        .await
        .map_err(unavailable)?;
        Ok(u64::try_from(pending).unwrap_or(0))
    }
}

/// An event a member holds: settling it goes through the file's writer.
struct InFlight {
    writer: GroupWriter,
    key: GroupKey,
    options: Arc<QueueOptions>,
    lease: Lease,
}

#[derive(Clone)]
struct Lease {
    seq: i64,
    token: Arc<str>,
    event_id: String,
}

enum Outcome {
    Ack,
    Retry { delay: Duration, error: String },
    DeadLetter { error: String },
    Extend,
}

impl InFlight {
    async fn settle(&self, outcome: Outcome) -> Result<Retried, BusError> {
        let (key, options, lease) = (self.key.clone(), self.options.clone(), self.lease.clone());
        let one_statement = matches!(outcome, Outcome::Ack | Outcome::Extend);
        let settle = move |conn: &rusqlite::Connection| settle(conn, &key, &options, &lease, outcome, now_millis());
        let settled =
            if one_statement { self.writer.write_statement(settle).await? } else { self.writer.write(settle).await? };
        settled.ok_or_else(|| BusError::LeaseLost(self.lease.event_id.clone()))
    }
}

#[async_trait]
impl Settlement for InFlight {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settle(Outcome::Ack).await.map(|_| ())
    }

    async fn retry_after(self: Box<Self>, delay: Duration, error: &str) -> Result<Retried, BusError> {
        self.settle(Outcome::Retry { delay, error: error.to_owned() }).await
    }

    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError> {
        self.settle(Outcome::DeadLetter { error: error.to_owned() }).await.map(|_| ())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.settle(Outcome::Extend).await.map(|_| ())
    }
}

/// Appends `event` to the log unless the stream already holds its id.
fn append(conn: &rusqlite::Connection, stream: &str, event: &OutgoingMessage) -> rusqlite::Result<Published> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO stream_events (stream, event_id, payload, published_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream, event_id) DO NOTHING",
        )?
        .execute(params![stream, event.id, event.payload.as_ref(), now_millis()])?;
    Ok(if inserted == 0 { Published::Duplicate } else { Published::Stored })
}

/// Creates the group at `start` unless it exists, and takes over what an earlier version of
/// this backend left for it (see [`adopt_copied_events`]).
fn join(conn: &rusqlite::Connection, key: &GroupKey, start: StartAt) -> rusqlite::Result<()> {
    let cursor: i64 = match start {
        StartAt::Beginning => 0,
        StartAt::New => conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM stream_events WHERE stream = ?1",
            params![&*key.stream],
            |row| row.get(0),
        )?,
    };
    conn.execute(
        "INSERT INTO stream_groups (stream, grp, cursor) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![&*key.stream, &*key.group, cursor],
    )?;
    adopt_copied_events(conn, key)
}

/// Earlier versions copied each event into a queue per group (`queue_messages`, queue
/// `{stream}#{group}`). The copies not yet acked become the group's in-flight events (due when
/// their lease would have run out) and its dead ones its dead letters, so an upgrade loses
/// nothing; then the copies go.
fn adopt_copied_events(conn: &rusqlite::Connection, key: &GroupKey) -> rusqlite::Result<()> {
    let had_copies: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queue_messages')",
        [],
        |row| row.get(0),
    )?;
    if !had_copies {
        return Ok(());
    }
    let queue = format!("{}#{}", key.stream, key.group);
    let (stream, group) = (&*key.stream, &*key.group);
    conn.execute(
        "INSERT INTO stream_in_flight (stream, grp, seq, attempts, visible_at, lease, last_error)
         SELECT ?1, ?2, e.seq, q.attempts, q.visible_at, NULL, q.last_error
         FROM queue_messages q JOIN stream_events e ON e.stream = ?1 AND e.event_id = q.message_id
         WHERE q.queue = ?3 AND q.state = 0
         ON CONFLICT DO NOTHING",
        params![stream, group, queue],
    )?;
    conn.execute(
        "INSERT INTO stream_dead_letters (stream, grp, seq, attempts, last_error, dead_at)
         SELECT ?1, ?2, e.seq, q.attempts, COALESCE(q.last_error, ''), COALESCE(q.settled_at, q.enqueued_at)
         FROM queue_messages q JOIN stream_events e ON e.stream = ?1 AND e.event_id = q.message_id
         WHERE q.queue = ?3 AND q.state = 2
         ON CONFLICT DO NOTHING",
        params![stream, group, queue],
    )?;
    conn.execute("DELETE FROM queue_messages WHERE queue = ?1", params![queue])?;
    Ok(())
}

/// An event handed to a member by [`claim`].
struct Claimed {
    seq: i64,
    event_id: String,
    payload: Vec<u8>,
    attempts: i64,
    published_at: i64,
    lease: Arc<str>,
}

/// Up to `max` events for a member of the group, in publication order: first those in flight
/// that are due again (a retry's delay or a lease ran out), then new ones past the cursor.
fn claim(
    conn: &rusqlite::Connection,
    key: &GroupKey,
    options: &QueueOptions,
    max: usize,
    now: i64,
) -> rusqlite::Result<Vec<Claimed>> {
    let (stream, group) = (&*key.stream, &*key.group);
    let max_attempts = i64::from(options.max_attempts);
    // A member that crashed on the last attempt leaves an event with no attempts left:
    // dead-letter it rather than deliver it once more.
    conn.prepare_cached(
        "INSERT INTO stream_dead_letters (stream, grp, seq, attempts, last_error, dead_at)
         SELECT stream, grp, seq, attempts,
                COALESCE(last_error, 'lease expired') || ' (no attempts left after lease expiry)', ?3
         FROM stream_in_flight WHERE stream = ?1 AND grp = ?2 AND visible_at <= ?3 AND attempts >= ?4
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![stream, group, now, max_attempts])?;
    conn.prepare_cached(
        "DELETE FROM stream_in_flight WHERE stream = ?1 AND grp = ?2 AND visible_at <= ?3 AND attempts >= ?4",
    )?
    .execute(params![stream, group, now, max_attempts])?;

    let lease: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
    let lease_until = now.saturating_add(millis(options.ack_wait));
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let again: Vec<(i64, i64)> = conn
        .prepare_cached(
            "UPDATE stream_in_flight SET attempts = attempts + 1, visible_at = ?4, lease = ?5
             WHERE stream = ?1 AND grp = ?2 AND seq IN (
                 SELECT seq FROM stream_in_flight WHERE stream = ?1 AND grp = ?2 AND visible_at <= ?3
                 ORDER BY visible_at, seq LIMIT ?6 + 0)
             RETURNING seq, attempts",
        )?
        .query_map(params![stream, group, now, lease_until, &*lease, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut claimed = Vec::with_capacity(max);
    {
        let mut event =
            conn.prepare_cached("SELECT event_id, payload, published_at FROM stream_events WHERE seq = ?1")?;
        for (seq, attempts) in again {
            let found = event
                .query_row(params![seq], |row| {
                    Ok(Claimed {
                        seq,
                        event_id: row.get(0)?,
                        payload: row.get(1)?,
                        attempts,
                        published_at: row.get(2)?,
                        lease: lease.clone(),
                    })
                })
                .optional()?;
            claimed.extend(found);
        }
    }

    let room = max.saturating_sub(claimed.len());
    if room > 0 {
        claim_new(conn, key, room, lease_until, &lease, &mut claimed)?;
    }
    claimed.sort_by_key(|c| c.seq);
    Ok(claimed)
}

/// Takes up to `room` events past the group's cursor: each becomes in flight under `lease`, and
/// the cursor moves past them.
fn claim_new(
    conn: &rusqlite::Connection,
    key: &GroupKey,
    room: usize,
    lease_until: i64,
    lease: &Arc<str>,
    claimed: &mut Vec<Claimed>,
) -> rusqlite::Result<()> {
    let (stream, group) = (&*key.stream, &*key.group);
    let cursor: i64 = conn
        .prepare_cached("SELECT cursor FROM stream_groups WHERE stream = ?1 AND grp = ?2")?
        .query_row(params![stream, group], |row| row.get(0))?;
    let start = claimed.len();
    {
        let mut events = conn.prepare_cached(
            "SELECT seq, event_id, payload, published_at FROM stream_events
             WHERE stream = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3 + 0",
        )?;
        let rows = events.query_map(params![stream, cursor, i64::try_from(room).unwrap_or(i64::MAX)], |row| {
            Ok(Claimed {
                seq: row.get(0)?,
                event_id: row.get(1)?,
                payload: row.get(2)?,
                attempts: 1,
                published_at: row.get(3)?,
                lease: lease.clone(),
            })
        })?;
        for row in rows {
            claimed.push(row?);
        }
    }
    let new = &claimed[start..];
    let Some(last) = new.last() else { return Ok(()) };
    let mut in_flight = conn.prepare_cached(
        "INSERT INTO stream_in_flight (stream, grp, seq, attempts, visible_at, lease) VALUES (?1, ?2, ?3, 1, ?4, ?5)",
    )?;
    for event in new {
        in_flight.execute(params![stream, group, event.seq, lease_until, &**lease])?;
    }
    conn.prepare_cached("UPDATE stream_groups SET cursor = ?3 WHERE stream = ?1 AND grp = ?2")?
        .execute(params![stream, group, last.seq])?;
    Ok(())
}

/// Settles an event the member holds under `lease`; `None` when the lease is no longer its own
/// (it ran out and another member took the event, or the event was settled already).
fn settle(
    conn: &rusqlite::Connection,
    key: &GroupKey,
    options: &QueueOptions,
    lease: &Lease,
    outcome: Outcome,
    now: i64,
) -> rusqlite::Result<Option<Retried>> {
    let (stream, group) = (&*key.stream, &*key.group);
    let held = params![stream, group, lease.seq, &*lease.token];
    let changed = match outcome {
        Outcome::Ack => conn
            .prepare_cached("DELETE FROM stream_in_flight WHERE stream = ?1 AND grp = ?2 AND seq = ?3 AND lease = ?4")?
            .execute(held)?,
        Outcome::Extend => conn
            .prepare_cached(
                "UPDATE stream_in_flight SET visible_at = ?5 WHERE stream = ?1 AND grp = ?2 AND seq = ?3 AND lease = ?4",
            )?
            .execute(params![stream, group, lease.seq, &*lease.token, now.saturating_add(millis(options.ack_wait))])?,
        Outcome::DeadLetter { error } => usize::from(bury(conn, key, lease, &error, now)?),
        Outcome::Retry { delay, error } => {
            let attempts: Option<i64> = conn
                .prepare_cached(
                    "SELECT attempts FROM stream_in_flight WHERE stream = ?1 AND grp = ?2 AND seq = ?3 AND lease = ?4",
                )?
                .query_row(held, |row| row.get(0))
                .optional()?;
            let Some(attempts) = attempts else { return Ok(None) };
            if attempts >= i64::from(options.max_attempts) {
                bury(conn, key, lease, &format!("{error} (after {attempts} attempts)"), now)?;
                return Ok(Some(Retried::DeadLettered));
            }
            conn.prepare_cached(
                "UPDATE stream_in_flight SET visible_at = ?5, last_error = ?6, lease = NULL
                 WHERE stream = ?1 AND grp = ?2 AND seq = ?3 AND lease = ?4",
            )?
            .execute(params![stream, group, lease.seq, &*lease.token, now.saturating_add(millis(delay)), error])?
        }
    };
    Ok((changed > 0).then_some(Retried::Scheduled))
}

/// Moves the held event to the group's dead letters; `false` when the lease is not held.
fn bury(conn: &rusqlite::Connection, key: &GroupKey, lease: &Lease, error: &str, now: i64) -> rusqlite::Result<bool> {
    let moved = conn
        .prepare_cached(
            "INSERT INTO stream_dead_letters (stream, grp, seq, attempts, last_error, dead_at)
             SELECT stream, grp, seq, attempts, ?5, ?6 FROM stream_in_flight
             WHERE stream = ?1 AND grp = ?2 AND seq = ?3 AND lease = ?4
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![&*key.stream, &*key.group, lease.seq, &*lease.token, error, now])?;
    conn.prepare_cached("DELETE FROM stream_in_flight WHERE stream = ?1 AND grp = ?2 AND seq = ?3 AND lease = ?4")?
        .execute(params![&*key.stream, &*key.group, lease.seq, &*lease.token])?;
    Ok(moved > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory from before groups kept a cursor: the group's copies of the events sit in
    /// `queue_messages`, one acked, one waiting for a retry, one dead, and the cursor is past all
    /// three. Joining the group takes them over.
    #[tokio::test]
    async fn a_group_takes_over_the_copies_an_earlier_version_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let stream = SqliteEventStream::open_private(&path, "orders").await.unwrap();
        for id in ["acked", "waiting", "dead"] {
            stream.publish(OutgoingMessage { id: id.to_owned(), payload: Bytes::from(id) }).await.unwrap();
        }
        // The earlier version's queue table, as `SqliteQueue` creates it.
        super::super::SqliteQueue::open(&path, "another-queue", QueueOptions::default()).await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO stream_groups (stream, grp, cursor) SELECT 'orders', 'billing', MAX(seq) FROM stream_events;
             INSERT INTO queue_messages (queue, message_id, payload, state, attempts, visible_at, last_error, enqueued_at, settled_at)
             VALUES ('orders#billing', 'acked', x'', 1, 1, 0, NULL, 1, 2),
                    ('orders#billing', 'waiting', CAST('waiting' AS BLOB), 0, 1, 0, 'timed out', 1, NULL),
                    ('orders#billing', 'dead', CAST('dead' AS BLOB), 2, 3, 0, 'boom', 1, 5),
                    ('another-queue', 'kept', x'', 0, 0, 0, NULL, 1, NULL);",
        )
        .unwrap();

        let group = stream.subscribe("billing", StartAt::Beginning, QueueOptions::default()).await.unwrap();
        let received = group.receive(10, Duration::from_millis(100)).await.unwrap();
        let got: Vec<(&str, u32)> = received.iter().map(|m| (m.id.as_str(), m.attempt)).collect();
        assert_eq!(got, [("waiting", 2)], "only the unacked copy comes again, on its next attempt");
        let dead = group.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id.as_str(), dead[0].attempts, dead[0].last_error.as_str()), ("dead", 3, "boom"));
        assert_eq!(&dead[0].payload[..], b"dead");
        let left: Vec<String> = conn
            .prepare("SELECT message_id FROM queue_messages ORDER BY message_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, ["kept"], "the group's copies are gone, other queues' messages stay");
        for message in received {
            message.ack().await.unwrap();
        }
        assert_eq!(group.pending().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn streams_on_one_file_in_one_process_share_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let one = SqliteEventStream::open(&path, "a").await.unwrap();
        let two = SqliteEventStream::open(&path, "b").await.unwrap();
        assert!(Arc::ptr_eq(&one.file, &two.file));
        let elsewhere = SqliteEventStream::open(&dir.path().join("other.db"), "a").await.unwrap();
        assert!(!Arc::ptr_eq(&one.file, &elsewhere.file));
    }
}
