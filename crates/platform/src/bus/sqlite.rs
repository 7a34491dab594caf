//! The embedded queue backend: one SQLite file (WAL), one writer task.
//!
//! Every change (publish, claim, ack, retry) goes through a single writer task that batches
//! whatever is waiting into one transaction: one fsync covers many publishes (group commit),
//! and writers never fight over SQLite's lock. Reads (dead letters, depth) use a small pool.
//! A dead letter stays in its row (state dead, `settled_at` saying when) until an operator
//! replays it (the same row becomes ready again) or purges it (the row is deleted).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, QueryBuilder, Row, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, Retried, Settlement,
};
use crate::clock::from_unix_millis;
use crate::sqlite::{Durability, connect_options};

const STATE_READY: i64 = 0;
const STATE_DONE: i64 = 1;
const STATE_DEAD: i64 = 2;
/// Most commands folded into one transaction.
const MAX_BATCH: usize = 512;

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
        let connect = connect_options(path, durability).map_err(unavailable)?;
        let mut writer = SqliteConnection::connect_with(&connect).await.map_err(unavailable)?;
        for statement in SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*statement)).execute(&mut writer).await.map_err(unavailable)?;
        }
        let readers = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(connect)
            .await
            .map_err(unavailable)?;
        let (commands, inbox) = mpsc::channel(8192);
        let name: Arc<str> = Arc::from(name);
        let writer_task = Writer { conn: writer, queue: name.clone(), options: options.clone() };
        tokio::spawn(writer_task.run(inbox));
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
             WHERE queue = ?1 AND state = ?2 ORDER BY seq LIMIT ?3",
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
    conn: SqliteConnection,
    queue: Arc<str>,
    options: QueueOptions,
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
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut purge = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                received = inbox.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    let commands = std::mem::take(&mut batch);
                    self.apply(commands).await;
                }
                _ = purge.tick() => {
                    if let Err(err) = self.purge_expired_ids().await {
                        tracing::warn!(error = %err, queue = %self.queue, "purging de-duplication ids failed");
                    }
                }
            }
        }
    }

    async fn apply(&mut self, commands: Vec<Command>) {
        let mut replies = Vec::with_capacity(commands.len());
        let result = self.apply_in_transaction(commands, &mut replies).await;
        if let Err(err) = result {
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

    async fn apply_in_transaction(
        &mut self,
        commands: Vec<Command>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now().timestamp_millis();
        let queue = self.queue.clone();
        let options = self.options.clone();
        // IMMEDIATE takes the write lock up front, so a file shared with other writers (event
        // streams, other queues) makes this wait (busy timeout) instead of failing with
        // SQLITE_BUSY when a read-then-write transaction cannot upgrade its lock.
        let mut tx = sqlx::Connection::begin_with(&mut self.conn, "BEGIN IMMEDIATE").await?;
        let mut publishes = Vec::new();
        for command in commands {
            match command {
                Command::Publish(message, reply) => publishes.push((message, reply)),
                Command::Claim(max, reply) => {
                    let claimed = claim(&mut tx, &queue, &options, max, now).await?;
                    replies.push(Reply::Claim(reply, Ok(claimed)));
                }
                Command::Settle(lease, outcome, reply) => {
                    let settled = settle(&mut tx, &options, &lease, outcome, now).await?;
                    replies.push(Reply::Settle(reply, settled));
                }
                Command::Replay(id, reply) => {
                    let replayed = replay(&mut tx, &queue, &id, now).await?;
                    replies.push(Reply::Replay(reply, Ok(replayed)));
                }
                Command::Purge(id, reply) => {
                    let purged = purge(&mut tx, &queue, id.as_deref()).await?;
                    replies.push(Reply::Purge(reply, Ok(purged)));
                }
            }
        }
        if !publishes.is_empty() {
            insert_messages(&mut tx, &queue, publishes, now, replies).await?;
        }
        tx.commit().await
    }

    async fn purge_expired_ids(&mut self) -> Result<(), sqlx::Error> {
        let window = i64::try_from(self.options.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Utc::now().timestamp_millis().saturating_sub(window);
        sqlx::query("DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2 AND settled_at < ?3")
            .bind(&*self.queue)
            .bind(STATE_DONE)
            .bind(cutoff)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }
}

/// Inserts many messages in one statement; those not returned were duplicates.
async fn insert_messages(
    conn: &mut SqliteConnection,
    queue: &str,
    publishes: Vec<(OutgoingMessage, oneshot::Sender<Result<Published, BusError>>)>,
    now: i64,
    replies: &mut Vec<Reply>,
) -> Result<(), sqlx::Error> {
    // SQLite caps bound parameters; 5 per row keeps 512 rows well under it.
    let mut inserted = std::collections::HashSet::new();
    for chunk in publishes.chunks(MAX_BATCH) {
        let mut builder = QueryBuilder::new(
            "INSERT INTO queue_messages (queue, message_id, payload, state, visible_at, enqueued_at) ",
        );
        builder.push_values(chunk, |mut row, (message, _)| {
            row.push_bind(queue)
                .push_bind(&message.id)
                .push_bind(message.payload.as_ref())
                .push_bind(STATE_READY)
                .push_bind(now)
                .push_bind(now);
        });
        builder.push(" ON CONFLICT (queue, message_id) DO NOTHING RETURNING message_id");
        let rows = builder.build().fetch_all(&mut *conn).await?;
        inserted.extend(rows.into_iter().map(|row| row.get::<String, _>(0)));
    }
    for (message, reply) in publishes {
        // The first of two same-id publishes in one batch takes the insert; the second is a duplicate.
        let outcome = if inserted.remove(&message.id) { Published::Stored } else { Published::Duplicate };
        replies.push(Reply::Publish(reply, Ok(outcome)));
    }
    Ok(())
}

async fn claim(
    conn: &mut SqliteConnection,
    queue: &str,
    options: &QueueOptions,
    max: usize,
    now: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    // A consumer that crashed on the last attempt leaves a message with no attempts left:
    // dead-letter it instead of delivering it once more.
    sqlx::query(
        "UPDATE queue_messages SET state = ?1, settled_at = ?2, lease = NULL,
             last_error = COALESCE(last_error, 'lease expired') || ' (no attempts left after lease expiry)'
         WHERE queue = ?3 AND state = ?4 AND visible_at <= ?2 AND attempts >= ?5",
    )
    .bind(STATE_DEAD)
    .bind(now)
    .bind(queue)
    .bind(STATE_READY)
    .bind(i64::from(options.max_attempts))
    .execute(&mut *conn)
    .await?;

    let lease = uuid::Uuid::new_v4().to_string();
    let lease_ms = i64::try_from(options.ack_wait.as_millis()).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "UPDATE queue_messages SET attempts = attempts + 1, visible_at = ?1, lease = ?2
         WHERE seq IN (SELECT seq FROM queue_messages
                       WHERE queue = ?3 AND state = ?4 AND visible_at <= ?5
                       ORDER BY visible_at, seq LIMIT ?6)
         RETURNING seq, message_id, payload, attempts, enqueued_at",
    )
    .bind(now.saturating_add(lease_ms))
    .bind(&lease)
    .bind(queue)
    .bind(STATE_READY)
    .bind(now)
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|row| Claimed {
            seq: row.get(0),
            message_id: row.get(1),
            payload: row.get(2),
            attempts: row.get(3),
            enqueued_at: row.get(4),
            lease: lease.clone(),
        })
        .collect();
    claimed.sort_by_key(|c| c.seq);
    Ok(claimed)
}

async fn settle(
    conn: &mut SqliteConnection,
    options: &QueueOptions,
    lease: &Lease,
    outcome: Outcome,
    now: i64,
) -> Result<Result<Settled, BusError>, sqlx::Error> {
    let lost = || Err(BusError::LeaseLost(lease.message_id.clone()));
    let affected = match outcome {
        Outcome::Ack => sqlx::query(
            "UPDATE queue_messages SET state = ?1, settled_at = ?2, lease = NULL, payload = x''
                 WHERE seq = ?3 AND lease = ?4 AND state = ?5",
        )
        .bind(STATE_DONE)
        .bind(now)
        .bind(lease.seq)
        .bind(&lease.token)
        .bind(STATE_READY)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Outcome::Extend => {
            let lease_ms = i64::try_from(options.ack_wait.as_millis()).unwrap_or(i64::MAX);
            sqlx::query("UPDATE queue_messages SET visible_at = ?1 WHERE seq = ?2 AND lease = ?3 AND state = ?4")
                .bind(now.saturating_add(lease_ms))
                .bind(lease.seq)
                .bind(&lease.token)
                .bind(STATE_READY)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }
        Outcome::DeadLetter { error } => dead_letter(conn, lease, &error, now).await?,
        Outcome::Retry { delay, error } => {
            let attempts: Option<i64> =
                sqlx::query_scalar("SELECT attempts FROM queue_messages WHERE seq = ?1 AND lease = ?2 AND state = ?3")
                    .bind(lease.seq)
                    .bind(&lease.token)
                    .bind(STATE_READY)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some(attempts) = attempts else { return Ok(lost()) };
            if attempts >= i64::from(options.max_attempts) {
                let error = format!("{error} (after {attempts} attempts)");
                dead_letter(conn, lease, &error, now).await?;
                return Ok(Ok(Settled::Retried(Retried::DeadLettered)));
            }
            let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            sqlx::query("UPDATE queue_messages SET visible_at = ?1, last_error = ?2, lease = NULL WHERE seq = ?3")
                .bind(now.saturating_add(delay_ms))
                .bind(&error)
                .bind(lease.seq)
                .execute(&mut *conn)
                .await?;
            return Ok(Ok(Settled::Retried(Retried::Scheduled)));
        }
    };
    Ok(if affected == 0 { lost() } else { Ok(Settled::Done) })
}

/// Makes the dead letter `id` ready again as if just published: the same row, so the same message
/// id and payload, from attempt 1. Only a dead row changes, so a second replay finds none.
async fn replay(conn: &mut SqliteConnection, queue: &str, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let affected = sqlx::query(
        "UPDATE queue_messages SET state = ?1, attempts = 0, visible_at = ?2, enqueued_at = ?2, lease = NULL,
             last_error = NULL, settled_at = NULL
         WHERE queue = ?3 AND message_id = ?4 AND state = ?5",
    )
    .bind(STATE_READY)
    .bind(now)
    .bind(queue)
    .bind(id)
    .bind(STATE_DEAD)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(affected > 0)
}

/// Deletes the dead letter `id`, or every dead letter when `id` is `None`. Its message id is
/// forgotten with it: publishing that id again stores a new message.
async fn purge(conn: &mut SqliteConnection, queue: &str, id: Option<&str>) -> Result<u64, sqlx::Error> {
    let result = match id {
        Some(id) => {
            sqlx::query("DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2 AND message_id = ?3")
                .bind(queue)
                .bind(STATE_DEAD)
                .bind(id)
                .execute(conn)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM queue_messages WHERE queue = ?1 AND state = ?2")
                .bind(queue)
                .bind(STATE_DEAD)
                .execute(conn)
                .await?
        }
    };
    Ok(result.rows_affected())
}

async fn dead_letter(conn: &mut SqliteConnection, lease: &Lease, error: &str, now: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE queue_messages SET state = ?1, settled_at = ?2, lease = NULL, last_error = ?3
         WHERE seq = ?4 AND lease = ?5 AND state = ?6",
    )
    .bind(STATE_DEAD)
    .bind(now)
    .bind(error)
    .bind(lease.seq)
    .bind(&lease.token)
    .bind(STATE_READY)
    .execute(conn)
    .await?
    .rows_affected())
}
