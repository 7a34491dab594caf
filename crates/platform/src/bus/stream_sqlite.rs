//! The embedded event stream: an append-only log table, and per consumer group a
//! [`SqliteQueue`] fed from the log.
//!
//! A group's queue takes the events past the group's cursor from the log inside each claim's
//! transaction, and moves the cursor in the same transaction, so an event reaches a group once
//! whatever crashes. The log is the only thing a publish writes, and a group created later
//! (from the beginning) replays the whole log.
//!
//! Publishes go through one writer thread that stores whatever is waiting in one transaction
//! (group commit), as the queue does: the log is fsync'd (`synchronous=FULL`), and one fsync
//! per event would cap a busy process at a few thousand events a second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{TransactionBehavior, params};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::sqlite::Feed;
use super::stream::{EventStream, StartAt, Subscription};
use super::{BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, SqliteQueue};
use crate::sqlite::{Durability, open_pool, open_writer};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS stream_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        published_at INTEGER NOT NULL,
        UNIQUE (stream, event_id)
    )",
    "CREATE INDEX IF NOT EXISTS stream_events_by_stream ON stream_events (stream, seq)",
    "CREATE TABLE IF NOT EXISTS stream_groups (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        cursor INTEGER NOT NULL,
        PRIMARY KEY (stream, grp)
    )",
];

/// Publishes waiting for the writer, most stored in one transaction.
const PUBLISH_BATCH: usize = 512;

/// An event stream in a SQLite file.
pub struct SqliteEventStream {
    name: String,
    path: PathBuf,
    pool: SqlitePool,
    published: Arc<Notify>,
    writer: mpsc::Sender<Publish>,
}

/// One publish waiting for the writer.
struct Publish {
    event: OutgoingMessage,
    done: oneshot::Sender<Result<Published, BusError>>,
}

impl SqliteEventStream {
    pub async fn open(path: &Path, name: &str) -> Result<Self, BusError> {
        let file = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<rusqlite::Connection> {
            let conn = open_writer(&file, Durability::Full)?;
            for statement in SCHEMA {
                conn.execute_batch(statement)?;
            }
            Ok(conn)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        let pool = open_pool(path, Durability::Full, 2).await.map_err(unavailable)?;
        let published = Arc::new(Notify::new());
        let (writer, waiting) = mpsc::channel(PUBLISH_BATCH * 4);
        let (stream, signal) = (name.to_owned(), published.clone());
        std::thread::Builder::new()
            .name(format!("stream {name}"))
            .spawn(move || write_published(conn, &stream, waiting, &signal))
            .map_err(unavailable)?;
        Ok(Self { name: name.to_owned(), path: path.to_owned(), pool, published, writer })
    }
}

/// The writer thread: stores every publish waiting in one transaction, then answers each. Ends
/// when the stream is dropped.
fn write_published(
    mut conn: rusqlite::Connection,
    stream: &str,
    mut waiting: mpsc::Receiver<Publish>,
    published: &Notify,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while waiting.blocking_recv_many(&mut batch, PUBLISH_BATCH) > 0 {
        match store_batch(&mut conn, stream, &batch) {
            Ok(outcomes) => {
                for (publish, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = publish.done.send(Ok(outcome));
                }
                published.notify_waiters();
            }
            Err(error) => {
                tracing::error!(%error, stream, "storing published events failed");
                for publish in batch.drain(..) {
                    let _ = publish.done.send(Err(unavailable(&error)));
                }
            }
        }
    }
}

fn store_batch(conn: &mut rusqlite::Connection, stream: &str, batch: &[Publish]) -> rusqlite::Result<Vec<Published>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = crate::clock::unix_millis(chrono::Utc::now());
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO stream_events (stream, event_id, payload, published_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream, event_id) DO NOTHING",
        )?;
        for publish in batch {
            let inserted = insert.execute(params![stream, publish.event.id, publish.event.payload.as_ref(), now])?;
            outcomes.push(if inserted == 0 { Published::Duplicate } else { Published::Stored });
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

#[async_trait]
impl EventStream for SqliteEventStream {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError> {
        let (done, outcome) = oneshot::channel();
        let closed = || BusError::Unavailable("the stream's writer has stopped".to_owned());
        self.writer.send(Publish { event, done }).await.map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    async fn subscribe(
        &self,
        group: &str,
        start: StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        let cursor: i64 = match start {
            StartAt::Beginning => 0,
            StartAt::New => sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM stream_events WHERE stream = ?1")
                .bind(&self.name)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?,
        };
        sqlx::query("INSERT INTO stream_groups (stream, grp, cursor) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .bind(&self.name)
            .bind(group)
            .bind(cursor)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        // The group's queue holds nothing the log cannot give again, so its commits need not wait
        // for the disk: on power loss SQLite's WAL loses a suffix of transactions, so a lost copy
        // loses its cursor move with it (the same transaction) and is copied again, and a lost
        // claim or ack means one more delivery, which consumers tolerate. Publishes to the log
        // stay fully synchronous, and each of their fsyncs also flushes the queue's earlier commits.
        let feed = Feed { stream: self.name.clone(), group: group.to_owned() };
        let queue = SqliteQueue::open_fed(
            &self.path,
            &format!("{}#{group}", self.name),
            options,
            Durability::Normal,
            feed,
            self.published.clone(),
        )
        .await?;
        Ok(Arc::new(SqliteSubscription {
            stream: self.name.clone(),
            group: group.to_owned(),
            pool: self.pool.clone(),
            queue,
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        if self.writer.is_closed() {
            return Err(BusError::Unavailable("the stream's writer has stopped".to_owned()));
        }
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(unavailable)
    }
}

struct SqliteSubscription {
    stream: String,
    group: String,
    pool: SqlitePool,
    queue: SqliteQueue,
}

#[async_trait]
impl Subscription for SqliteSubscription {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn group(&self) -> &str {
        &self.group
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        self.queue.receive(max, wait).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.queue.dead_letters(limit).await
    }

    async fn pending(&self) -> Result<u64, BusError> {
        let unread: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM stream_events e JOIN stream_groups g ON g.stream = e.stream AND g.grp = ?2
             WHERE e.stream = ?1 AND e.seq > g.cursor",
        )
        .bind(&self.stream)
        .bind(&self.group)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(self.queue.depth().await? + unread as u64)
    }
}
