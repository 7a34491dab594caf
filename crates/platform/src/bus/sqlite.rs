//! The embedded queue backend: one SQLite file (WAL), one writer thread.
//!
//! Every change (publish, claim, ack, retry) goes through a single writer thread that batches
//! whatever is waiting into one transaction: one fsync covers many publishes (group commit),
//! and writers never fight over SQLite's lock. The writer owns a plain (rusqlite) connection, so
//! a whole batch costs one hand-over between threads; sqlx's driver would hand over every
//! statement to its own worker thread, and those context switches were most of the embedded
//! bus's CPU. Reads (dead letters, depth) use a small sqlx pool.
//! A dead letter stays in its row (state dead, `settled_at` saying when) until an operator
//! replays it (the same row becomes ready again) or purges it (the row is deleted).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, Retried, Settlement,
};
use crate::clock::from_unix_millis;
use crate::sqlite::{Durability, connect_options, open_writer};

const STATE_READY: i64 = 0;
const STATE_DONE: i64 = 1;
const STATE_DEAD: i64 = 2;
/// Most commands folded into one transaction.
const MAX_BATCH: usize = 512;
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
    commands: mpsc::Sender<Command>,
    readers: SqlitePool,
    published: Arc<Notify>,
    options: QueueOptions,
}

enum Command {
    Publish(OutgoingMessage, oneshot::Sender<Result<Published, BusError>>),
    Claim(usize, oneshot::Sender<Result<Vec<Claimed>, BusError>>),
    Settle(Lease, Outcome, oneshot::Sender<Result<Settled, BusError>>),
    /// Makes the dead letter with this message id ready again; `false` when there is none.
    Replay(String, oneshot::Sender<Result<bool, BusError>>),
    /// Deletes the dead letter with this message id, or every dead letter; how many went.
    Purge(Option<String>, oneshot::Sender<Result<u64, BusError>>),
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

    /// As [`open`](Self::open), choosing how commits are flushed.
    pub async fn open_with(
        path: &Path,
        name: &str,
        options: QueueOptions,
        durability: Durability,
    ) -> Result<Self, BusError> {
        let file = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<rusqlite::Connection> {
            let conn = open_writer(&file, durability)?;
            for statement in SCHEMA {
                conn.execute_batch(statement)?;
            }
            Ok(conn)
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?
        .map_err(write_failed)?;
        let connect = connect_options(path, durability).map_err(unavailable)?;
        let readers = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(connect)
            .await
            .map_err(unavailable)?;
        let (commands, inbox) = mpsc::channel(8192);
        let name: Arc<str> = Arc::from(name);
        let writer = Writer { conn, queue: name.clone(), options: options.clone(), durability, flushing: true };
        std::thread::Builder::new()
            .name(format!("queue {name}"))
            .spawn(move || writer.run(inbox))
            .map_err(|e| BusError::Unavailable(format!("starting the queue's writer: {e}")))?;
        Ok(Self { name, commands, readers, published: Arc::new(Notify::new()), options })
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Command) -> Result<T, BusError> {
        send(&self.commands, make).await
    }

    async fn claim(&self, max: usize) -> Result<Vec<ReceivedMessage>, BusError> {
        let claimed = self.send(|reply| Command::Claim(max, reply)).await?;
        Ok(claimed
            .into_iter()
            .map(|c| {
                let lease = Lease { seq: c.seq, token: c.lease, message_id: c.message_id.clone() };
                let settlement = SqliteSettlement { commands: self.commands.clone(), lease };
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

async fn send<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Command,
) -> Result<T, BusError> {
    let (reply, answer) = oneshot::channel();
    commands.send(make(reply)).await.map_err(|_| BusError::Unavailable("queue writer stopped".to_owned()))?;
    // A dropped answer: the batch's transaction failed before this command was answered (the
    // writer logs why); nothing of it was stored.
    answer.await.map_err(|_| BusError::Unavailable("the queue's transaction failed; nothing was stored".to_owned()))?
}

fn unavailable(err: sqlx::Error) -> BusError {
    BusError::Unavailable(err.to_string())
}

fn write_failed(err: rusqlite::Error) -> BusError {
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
        let outcome = self.send(|reply| Command::Publish(message, reply)).await?;
        if outcome == Published::Stored {
            self.published.notify_waiters();
        }
        Ok(outcome)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let published = self.published.notified();
            let messages = self.claim(max.max(1)).await?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let nap = self.options.poll_interval.min(deadline - now);
            tokio::select! {
                () = published => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
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
        let replayed = self.send(|reply| Command::Replay(id.to_owned(), reply)).await?;
        if replayed {
            self.published.notify_waiters();
        }
        Ok(replayed)
    }

    async fn purge_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        Ok(self.send(|reply| Command::Purge(Some(id.to_owned()), reply)).await? > 0)
    }

    async fn purge_dead_letters(&self) -> Result<u64, BusError> {
        self.send(|reply| Command::Purge(None, reply)).await
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
        if self.commands.is_closed() {
            return Err(BusError::Unavailable("queue writer stopped".to_owned()));
        }
        Ok(())
    }
}

struct SqliteSettlement {
    commands: mpsc::Sender<Command>,
    lease: Lease,
}

impl SqliteSettlement {
    async fn settle(&self, outcome: Outcome) -> Result<Settled, BusError> {
        let lease = self.lease.clone();
        send(&self.commands, |reply| Command::Settle(lease, outcome, reply)).await
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

/// The single writer: owns the write connection, applies commands in batched transactions.
struct Writer {
    conn: rusqlite::Connection,
    queue: Arc<str>,
    options: QueueOptions,
    durability: Durability,
    /// Whether the connection's commits fsync now (`synchronous=FULL`).
    flushing: bool,
}

/// A reply to send once the batch's transaction has committed.
enum Reply {
    Publish(oneshot::Sender<Result<Published, BusError>>, Result<Published, BusError>),
    Claim(oneshot::Sender<Result<Vec<Claimed>, BusError>>, Result<Vec<Claimed>, BusError>),
    Settle(oneshot::Sender<Result<Settled, BusError>>, Result<Settled, BusError>),
    Replay(oneshot::Sender<Result<bool, BusError>>, Result<bool, BusError>),
    Purge(oneshot::Sender<Result<u64, BusError>>, Result<u64, BusError>),
}

impl Reply {
    fn send(self) {
        // A caller that went away no longer needs its answer.
        match self {
            Reply::Publish(tx, r) => drop(tx.send(r)),
            Reply::Claim(tx, r) => drop(tx.send(r)),
            Reply::Settle(tx, r) => drop(tx.send(r)),
            Reply::Replay(tx, r) => drop(tx.send(r)),
            Reply::Purge(tx, r) => drop(tx.send(r)),
        }
    }

    fn fail(self, err: &str) -> Self {
        let error = || BusError::Unavailable(err.to_owned());
        match self {
            Reply::Publish(tx, _) => Reply::Publish(tx, Err(error())),
            Reply::Claim(tx, _) => Reply::Claim(tx, Err(error())),
            Reply::Settle(tx, _) => Reply::Settle(tx, Err(error())),
            Reply::Replay(tx, _) => Reply::Replay(tx, Err(error())),
            Reply::Purge(tx, _) => Reply::Purge(tx, Err(error())),
        }
    }
}

impl Writer {
    /// Runs on its own thread until every sender (the queue, its settlements) is gone.
    fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut purged_at = std::time::Instant::now();
        while inbox.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            if purged_at.elapsed() >= PURGE_EVERY {
                purged_at = std::time::Instant::now();
                if let Err(err) = self.purge_expired_ids() {
                    tracing::warn!(error = %err, queue = %self.queue, "purging de-duplication ids failed");
                }
            }
            let commands = std::mem::take(&mut batch);
            self.apply(commands);
        }
    }

    fn apply(&mut self, commands: Vec<Command>) {
        let mut replies = Vec::with_capacity(commands.len());
        let flushed = self.flush_if_needed(&commands).and_then(|()| self.apply_in_transaction(commands, &mut replies));
        if let Err(err) = flushed {
            tracing::error!(error = %err, queue = %self.queue, "queue transaction failed");
            let message = err.to_string();
            for reply in replies {
                reply.fail(&message).send();
            }
            return;
        }
        for reply in replies {
            reply.send();
        }
    }

    /// A durable queue fsyncs only the batches that carry a promise: a publish (its 202) or an
    /// operator's replay or purge. Claims, acks, retries and lease extensions commit without
    /// one: a power cut that loses them only delivers a message again, which every consumer
    /// must survive anyway. The WAL is written in order, so the next fsync'd commit also
    /// flushes every commit before it.
    fn flush_if_needed(&mut self, commands: &[Command]) -> rusqlite::Result<()> {
        if self.durability != Durability::Full {
            return Ok(());
        }
        let promise =
            commands.iter().any(|c| matches!(c, Command::Publish(..) | Command::Replay(..) | Command::Purge(..)));
        if promise != self.flushing {
            self.conn.pragma_update(None, "synchronous", if promise { "FULL" } else { "NORMAL" })?;
            self.flushing = promise;
        }
        Ok(())
    }

    fn apply_in_transaction(&mut self, commands: Vec<Command>, replies: &mut Vec<Reply>) -> rusqlite::Result<()> {
        let now = Utc::now().timestamp_millis();
        let Self { conn, queue, options, .. } = self;
        // IMMEDIATE takes the write lock up front, so a file shared with other writers (event
        // streams, other queues) makes this wait (busy timeout) instead of failing with
        // SQLITE_BUSY when a read-then-write transaction cannot upgrade its lock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut published = Vec::new();
        for command in commands {
            match command {
                Command::Publish(message, reply) => {
                    let outcome = insert_message(&tx, queue, &message, now)?;
                    published.push(Reply::Publish(reply, Ok(outcome)));
                }
                Command::Claim(max, reply) => {
                    let claimed = claim(&tx, queue, options, max, now)?;
                    replies.push(Reply::Claim(reply, Ok(claimed)));
                }
                Command::Settle(lease, outcome, reply) => {
                    let settled = settle(&tx, options, &lease, outcome, now)?;
                    replies.push(Reply::Settle(reply, settled));
                }
                Command::Replay(id, reply) => {
                    let replayed = replay(&tx, queue, &id, now)?;
                    replies.push(Reply::Replay(reply, Ok(replayed)));
                }
                Command::Purge(id, reply) => {
                    let purged = purge(&tx, queue, id.as_deref())?;
                    replies.push(Reply::Purge(reply, Ok(purged)));
                }
            }
        }
        replies.append(&mut published);
        tx.commit()
    }

    fn purge_expired_ids(&mut self) -> rusqlite::Result<()> {
        let window = i64::try_from(self.options.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Utc::now().timestamp_millis().saturating_sub(window);
        self.conn.execute(
            "DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2 AND settled_at < ?3",
            params![&*self.queue, STATE_DONE, cutoff],
        )?;
        Ok(())
    }
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
