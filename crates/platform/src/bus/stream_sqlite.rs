//! The embedded event stream: an append-only log table, and per consumer group a
//! [`SqliteQueue`] fed from the log.
//!
//! A group's queue is topped up from the log before each receive, in log order, from the
//! group's cursor; the cursor moves after the copy, and the queue's de-duplication by event id
//! makes a copy repeated after a crash harmless. So the log is the only thing a publish
//! writes, and a group created later (from the beginning) replays the whole log.
//!
//! Publishes go through one writer task that stores whatever is waiting in one transaction
//! (group commit), as the queue does: the log is fsync'd (`synchronous=FULL`), and one fsync
//! per event would cap a busy process at a few thousand events a second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::stream::{EventStream, StartAt, Subscription};
use super::{BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, SqliteQueue};
use crate::sqlite::{Durability, open_pool};

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

/// Events copied from the log into a group's queue per round.
const COPY_BATCH: i64 = 512;

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
        let pool = open_pool(path, Durability::Full, 2).await.map_err(unavailable)?;
        for statement in SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*statement)).execute(&pool).await.map_err(unavailable)?;
        }
        let published = Arc::new(Notify::new());
        let (writer, waiting) = mpsc::channel(PUBLISH_BATCH * 4);
        tokio::spawn(write_published(pool.clone(), name.to_owned(), waiting, published.clone()));
        Ok(Self { name: name.to_owned(), path: path.to_owned(), pool, published, writer })
    }
}

/// The writer: stores every publish waiting in one transaction, then answers each. Ends when
/// the stream is dropped.
async fn write_published(
    pool: SqlitePool,
    stream: String,
    mut waiting: mpsc::Receiver<Publish>,
    published: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while waiting.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        match store_batch(&pool, &stream, &batch).await {
            Ok(outcomes) => {
                for (publish, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = publish.done.send(Ok(outcome));
                }
                published.notify_waiters();
            }
            Err(error) => {
                for publish in batch.drain(..) {
                    let _ = publish.done.send(Err(unavailable(&error)));
                }
            }
        }
    }
}

async fn store_batch(pool: &SqlitePool, stream: &str, batch: &[Publish]) -> Result<Vec<Published>, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let now = crate::clock::unix_millis(chrono::Utc::now());
    let mut outcomes = Vec::with_capacity(batch.len());
    for publish in batch {
        let inserted = sqlx::query(
            "INSERT INTO stream_events (stream, event_id, payload, published_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream, event_id) DO NOTHING",
        )
        .bind(stream)
        .bind(&publish.event.id)
        .bind(publish.event.payload.as_ref())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        outcomes.push(if inserted == 0 { Published::Duplicate } else { Published::Stored });
    }
    tx.commit().await?;
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
        let queue = SqliteQueue::open(&self.path, &format!("{}#{group}", self.name), options.clone()).await?;
        Ok(Arc::new(SqliteSubscription {
            stream: self.name.clone(),
            group: group.to_owned(),
            pool: self.pool.clone(),
            queue,
            published: self.published.clone(),
            options,
            copying: Mutex::new(()),
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(unavailable)
    }
}

struct SqliteSubscription {
    stream: String,
    group: String,
    pool: SqlitePool,
    queue: SqliteQueue,
    published: Arc<Notify>,
    options: QueueOptions,
    /// One copier at a time per member; members in other processes are kept apart by the
    /// queue's de-duplication.
    copying: Mutex<()>,
}

impl SqliteSubscription {
    /// Moves events past the group's cursor into its queue; returns how many were new.
    async fn top_up(&self) -> Result<u64, BusError> {
        let _one = self.copying.lock().await;
        let mut copied = 0;
        loop {
            let cursor: i64 = sqlx::query_scalar("SELECT cursor FROM stream_groups WHERE stream = ?1 AND grp = ?2")
                .bind(&self.stream)
                .bind(&self.group)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
            let rows = sqlx::query(
                "SELECT seq, event_id, payload FROM stream_events WHERE stream = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .bind(&self.stream)
            .bind(cursor)
            .bind(COPY_BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            let Some(last) = rows.last().map(|r| r.get::<i64, _>(0)) else { return Ok(copied) };
            for row in &rows {
                let event = OutgoingMessage { id: row.get(1), payload: Bytes::from(row.get::<Vec<u8>, _>(2)) };
                if self.queue.publish(event).await? == Published::Stored {
                    copied += 1;
                }
            }
            sqlx::query("UPDATE stream_groups SET cursor = MAX(cursor, ?3) WHERE stream = ?1 AND grp = ?2")
                .bind(&self.stream)
                .bind(&self.group)
                .bind(last)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        }
    }
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
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let published = self.published.notified();
            self.top_up().await?;
            let messages = self.queue.receive(max, Duration::ZERO).await?;
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
