//! One writer thread per SQLite file that commits whatever is waiting in one transaction.
//!
//! A store hands its write to [`GroupWriter::write`] as a closure over a plain (rusqlite)
//! connection. The thread runs every closure that is waiting, each in its own savepoint, and
//! commits them together: one commit (and, with [`Durability::Full`], one fsync) covers many
//! requests, writers never wait on SQLite's lock, and a batch costs one hand-over between
//! threads. sqlx's SQLite driver instead hands every statement to its worker thread and commits
//! each write alone; profiles of the embedded system showed those hand-overs and commits as the
//! largest costs after the bus's own.
//!
//! A writer opened with [`Durability::Normal`] fsyncs only the batches that hold a write made
//! with [`GroupWriter::write_flushed`] (a promise to a caller, such as a published event); the
//! WAL is written in order, so that fsync also flushes every commit before it.
//!
//! Fsync'd batches of one file begin at least [`FLUSH_INTERVAL`] apart: a batch that would fsync
//! sooner after the last one waits out the rest of it, joined by whatever arrives meanwhile. At a
//! steady rate of requests, each otherwise got an fsync'd commit of its own, and the per-commit
//! work (writing the same hot pages to the WAL, the fsync) cost more than the requests' own (an
//! A/B in BENCHMARKS.md, "Session 12"; 2 ms rather than 1 took another twentieth off the CPU
//! per delivery and a twelfth off that per accepted request, "Session 14"). After a quiet spell
//! a batch commits at once, and batches that do not fsync never wait.
//!
//! A closure that fails is rolled back to its savepoint and gets its error; the others in the
//! batch still commit. Only when the commit itself fails do all of them get the error, and then
//! nothing of the batch was stored.
//!
//! A write of one statement ([`GroupWriter::write_statement`]) runs without a savepoint: SQLite
//! undoes a failed statement by itself and leaves the transaction open. A savepoint copies each
//! page a write touches into its sub-journal first, in case it must be undone; the bus's
//! publishes and acks are single statements on the same few hot pages, each copied again by
//! every write of the batch, and leaving the copies out took about a tenth off the CPU of the
//! event file's writer thread (BENCHMARKS.md, "Session 14").

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Durability, open_writer};

/// Most closures folded into one transaction.
const MAX_BATCH: usize = 512;
/// Closures that may wait for the writer before callers wait to hand theirs over.
const QUEUE_DEPTH: usize = 8192;
/// The least time between the starts of two fsync'd batches of one file, unless
/// `FABRIKAM_SQLITE_FLUSH_INTERVAL_US` says otherwise (`0`: none).
pub const FLUSH_INTERVAL: Duration = Duration::from_micros(2000);

static CONFIGURED_FLUSH_INTERVAL: LazyLock<Duration> = LazyLock::new(|| {
    const VARIABLE: &str = "FABRIKAM_SQLITE_FLUSH_INTERVAL_US";
    match std::env::var(VARIABLE) {
        Err(_) => FLUSH_INTERVAL,
        Ok(value) => value.trim().parse().map(Duration::from_micros).unwrap_or_else(|_| {
            tracing::warn!(%value, default_us = FLUSH_INTERVAL.as_micros(), "{VARIABLE} is not a number of microseconds; using the default");
            FLUSH_INTERVAL
        }),
    }
});

/// Why a write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The closure's own statements failed; nothing it did was kept.
    #[error(transparent)]
    Sqlite(Arc<rusqlite::Error>),
    /// The batch's transaction could not begin or commit; nothing of it was stored.
    #[error("the transaction failed: {0}")]
    Transaction(Arc<rusqlite::Error>),
    /// The writer thread is gone (the store was dropped, or a closure panicked).
    #[error("the store's writer stopped")]
    Stopped,
}

impl WriteError {
    /// The SQLite error code, when SQLite gave one (to tell a constraint from an outage).
    pub fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            WriteError::Sqlite(err) | WriteError::Transaction(err) => err.sqlite_error_code(),
            WriteError::Stopped => None,
        }
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(err: rusqlite::Error) -> Self {
        WriteError::Sqlite(Arc::new(err))
    }
}

impl From<WriteError> for sqlx::Error {
    /// For stores whose error type is sqlx's: the writer's failure as an I/O error, which every
    /// caller already treats as the store being unavailable.
    fn from(err: WriteError) -> Self {
        sqlx::Error::Io(std::io::Error::other(err))
    }
}

/// What a finished closure does once the batch's commit is known: answer its caller.
type Reply = Box<dyn FnOnce(Result<(), &Arc<rusqlite::Error>>) + Send>;
/// A write to run on the connection, or (given none) to fail because its batch could not begin.
type Work = Box<dyn FnOnce(Option<&rusqlite::Connection>) -> Reply + Send>;

/// How a write is run.
#[derive(Clone, Copy)]
struct Submit {
    /// Its batch is fsync'd before it is answered.
    flush: bool,
    /// It runs in a savepoint of its own (more than one statement may change the database).
    savepoint: bool,
}

struct Job {
    work: Work,
    /// Whether the batch holding this write must be fsync'd before it is answered.
    flush: bool,
}

/// The handle to a file's writer thread; clones share the thread, which stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Opens the file at `path` (WAL, busy timeout, foreign keys: [`open_writer`]) and starts its
    /// writer thread, named `name` for profiles and logs. Run migrations before: the writer
    /// expects the schema to exist.
    pub async fn open(path: &Path, durability: Durability, name: &str) -> Result<Self, WriteError> {
        Self::open_pacing_flushes(path, durability, name, FlushInterval(*CONFIGURED_FLUSH_INTERVAL)).await
    }

    async fn open_pacing_flushes(
        path: &Path,
        durability: Durability,
        name: &str,
        flush_interval: FlushInterval,
    ) -> Result<Self, WriteError> {
        let file = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || open_writer(&file, durability))
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(|e| WriteError::Transaction(Arc::new(e)))?;
        let (jobs, inbox) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name(format!("writer {name}"))
            .spawn(move || {
                let flushing = durability == Durability::Full;
                // The start is a quiet spell: the first fsync'd batch does not wait.
                let last_flush = Instant::now().checked_sub(flush_interval.0).unwrap_or_else(Instant::now);
                Thread { conn, durability, flushing, flush_interval, last_flush }.run(inbox)
            })
            .map_err(|_| WriteError::Stopped)?;
        Ok(Self { jobs })
    }

    /// Runs `write` in the next batch and answers once that batch is committed.
    pub async fn write<T, F>(&self, write: F) -> Result<T, WriteError>
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_with(move |conn| write(conn).map_err(WriteError::from)).await
    }

    /// As [`write`](Self::write), and the batch holding it is fsync'd before anyone is answered,
    /// whatever the writer's durability: for a write that promises something to its caller.
    pub async fn write_flushed<T, F>(&self, write: F) -> Result<T, WriteError>
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Submit { flush: true, savepoint: true }, move |conn| write(conn).map_err(WriteError::from)).await
    }

    /// As [`write`](Self::write) for a closure that changes the database with one statement at
    /// most (what it reads besides does not matter): it runs without a savepoint, since SQLite
    /// undoes a failed statement on its own. A closure that panics after its statement ran keeps
    /// the change and its caller gets [`WriteError::Stopped`].
    pub async fn write_statement<T, F>(&self, write: F) -> Result<T, WriteError>
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Submit { flush: false, savepoint: false }, move |conn| write(conn).map_err(WriteError::from)).await
    }

    /// [`write_statement`](Self::write_statement), fsync'd as [`write_flushed`](Self::write_flushed) is.
    pub async fn write_statement_flushed<T, F>(&self, write: F) -> Result<T, WriteError>
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Submit { flush: true, savepoint: false }, move |conn| write(conn).map_err(WriteError::from)).await
    }

    /// As [`write`](Self::write), for a closure that fails with the store's own error (a value
    /// that does not decode, a domain refusal): that error comes back as it is, the closure's
    /// statements undone; the writer's own failures come back converted from [`WriteError`].
    pub async fn write_with<T, E, F>(&self, write: F) -> Result<T, E>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
    {
        self.submit(Submit { flush: false, savepoint: true }, write).await
    }

    async fn submit<T, E, F>(&self, how: Submit, write: F) -> Result<T, E>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let work: Work = Box::new(move |conn| {
            let outcome = conn.map(|conn| if how.savepoint { in_savepoint(conn, write) } else { guarded(conn, write) });
            Box::new(move |committed| {
                let result = match (outcome, committed) {
                    (Some(Err(err)), _) => Err(err),
                    (_, Err(err)) => Err(E::from(WriteError::Transaction(err.clone()))),
                    (Some(Ok(value)), Ok(())) => Ok(value),
                    (None, Ok(())) => Err(E::from(WriteError::Stopped)),
                };
                // The caller may have gone (its request was cancelled): nothing to tell.
                let _ = answer.send(result);
            })
        });
        self.jobs.send(Job { work, flush: how.flush }).await.map_err(|_| E::from(WriteError::Stopped))?;
        answered.await.map_err(|_| E::from(WriteError::Stopped))?
    }

    /// Whether the writer thread still runs.
    pub fn is_running(&self) -> bool {
        !self.jobs.is_closed()
    }
}

/// Runs `write` so that a failure undoes only its own statements.
fn in_savepoint<T, E: From<WriteError>>(
    conn: &rusqlite::Connection,
    write: impl FnOnce(&rusqlite::Connection) -> Result<T, E>,
) -> Result<T, E> {
    let statement =
        |sql| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map_err(|e| E::from(WriteError::from(e)));
    statement("SAVEPOINT job")?;
    match catch_unwind(AssertUnwindSafe(|| write(conn))) {
        Ok(Ok(value)) => {
            statement("RELEASE job")?;
            Ok(value)
        }
        Ok(Err(err)) => {
            undo(conn);
            Err(err)
        }
        Err(_) => {
            undo(conn);
            tracing::error!("a store write panicked; its changes were rolled back");
            Err(E::from(WriteError::Stopped))
        }
    }
}

/// Runs a one-statement `write` as it is (see [`GroupWriter::write_statement`]), a panic turned
/// into [`WriteError::Stopped`].
fn guarded<T, E: From<WriteError>>(
    conn: &rusqlite::Connection,
    write: impl FnOnce(&rusqlite::Connection) -> Result<T, E>,
) -> Result<T, E> {
    catch_unwind(AssertUnwindSafe(|| write(conn))).unwrap_or_else(|_| {
        tracing::error!("a store write panicked");
        Err(E::from(WriteError::Stopped))
    })
}

fn undo(conn: &rusqlite::Connection) {
    let undone = conn.execute_batch("ROLLBACK TO job; RELEASE job");
    if let Err(err) = undone {
        tracing::error!(error = %err, "could not roll a failed store write back to its savepoint");
    }
}

/// The writer thread's connection and how its commits are flushed.
struct Thread {
    conn: rusqlite::Connection,
    durability: Durability,
    /// Whether the connection's commits fsync now (`synchronous=FULL`).
    flushing: bool,
    flush_interval: FlushInterval,
    /// When the previous fsync'd batch began.
    last_flush: Instant,
}

/// The least time between the starts of two fsync'd batches (see the module's doc).
#[derive(Debug, Clone, Copy)]
struct FlushInterval(Duration);

impl FlushInterval {
    /// How long a batch that fsyncs waits before it begins, `since` the last one began.
    fn wait(&self, since: Duration) -> Duration {
        self.0.saturating_sub(since)
    }
}

impl Thread {
    fn run(mut self, mut inbox: mpsc::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        while inbox.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            let wait = self.flush_interval.wait(self.last_flush.elapsed());
            if !wait.is_zero() && self.flushes(&batch) {
                std::thread::sleep(wait);
                while batch.len() < MAX_BATCH {
                    let Ok(job) = inbox.try_recv() else { break };
                    batch.push(job);
                }
            }
            let flush = self.flushes(&batch);
            if flush {
                self.last_flush = Instant::now();
            }
            match self.flush_commits(flush) {
                Ok(()) => commit_batch(&self.conn, &mut batch),
                Err(err) => fail_batch(&mut batch, "could not set how to flush", err),
            }
        }
    }

    /// Whether committing `batch` fsyncs.
    fn flushes(&self, batch: &[Job]) -> bool {
        self.durability == Durability::Full || batch.iter().any(|job| job.flush)
    }

    fn flush_commits(&mut self, flush: bool) -> rusqlite::Result<()> {
        if flush != self.flushing {
            self.conn.pragma_update(None, "synchronous", if flush { "FULL" } else { "NORMAL" })?;
            self.flushing = flush;
        }
        Ok(())
    }
}

fn fail_batch(batch: &mut Vec<Job>, why: &str, err: rusqlite::Error) {
    tracing::error!(error = %err, "a writer {why}; its batch failed");
    let err = Arc::new(err);
    for job in batch.drain(..) {
        (job.work)(None)(Err(&err));
    }
}

fn commit_batch(conn: &rusqlite::Connection, batch: &mut Vec<Job>) {
    if let Err(err) = conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])) {
        fail_batch(batch, "could not begin a transaction", err);
        return;
    }
    let replies: Vec<Reply> = batch.drain(..).map(|job| (job.work)(Some(conn))).collect();
    let committed = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(|_| ());
    let committed = committed.map_err(|err| {
        tracing::error!(error = %err, "a writer's batch did not commit");
        if let Err(rollback) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %rollback, "and could not be rolled back");
        }
        Arc::new(err)
    });
    for reply in replies {
        reply(committed.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer_with_table(dir: &tempfile::TempDir) -> GroupWriter {
        let writer = GroupWriter::open(&dir.path().join("w.db"), Durability::Normal, "test").await.unwrap();
        writer
            .write(|conn| conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"))
            .await
            .unwrap();
        writer
    }

    async fn count(writer: &GroupWriter) -> i64 {
        writer.write(|conn| conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))).await.unwrap()
    }

    #[tokio::test]
    async fn concurrent_writes_all_commit_and_each_gets_its_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_table(&dir).await;
        let writes = (0..200_i64).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![format!("k{i}"), i])?;
                        Ok(i * 2)
                    })
                    .await
            })
        });
        let answers: Vec<i64> =
            futures::future::join_all(writes).await.into_iter().map(|a| a.unwrap().unwrap()).collect();
        assert_eq!(answers, (0..200).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(count(&writer).await, 200);
    }

    #[tokio::test]
    async fn a_failing_write_is_undone_alone_and_a_reader_sees_the_rest_once_answered() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_table(&dir).await;
        let good = writer.write(|conn| conn.execute("INSERT INTO t (k, v) VALUES ('a', 1)", []));
        // Its first statement succeeds, its second breaks the key: neither may stay.
        let bad = writer.write(|conn| {
            conn.execute("INSERT INTO t (k, v) VALUES ('b', 2)", [])?;
            conn.execute("INSERT INTO t (k, v) VALUES ('a', 3)", [])
        });
        let after = writer.write(|conn| conn.execute("INSERT INTO t (k, v) VALUES ('c', 4)", []));
        let (good, bad, after) = tokio::join!(good, bad, after);
        assert_eq!(good.unwrap(), 1);
        let err = bad.unwrap_err();
        assert_eq!(err.sqlite_code(), Some(rusqlite::ErrorCode::ConstraintViolation), "{err}");
        assert_eq!(after.unwrap(), 1);

        let pool = crate::sqlite::open_pool(&dir.path().join("w.db"), Durability::Normal, 1).await.unwrap();
        let keys: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k").fetch_all(&pool).await.unwrap();
        assert_eq!(keys, ["a", "c"]);
    }

    #[tokio::test]
    async fn a_failing_statement_without_a_savepoint_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_table(&dir).await;
        let good = writer.write_statement(|conn| conn.execute("INSERT INTO t (k, v) VALUES ('a', 1)", []));
        // One statement whose second row breaks the key: its first row may not stay either.
        let bad = writer.write_statement(|conn| conn.execute("INSERT INTO t (k, v) VALUES ('b', 2), ('a', 3)", []));
        let after = writer.write_statement_flushed(|conn| conn.execute("INSERT INTO t (k, v) VALUES ('c', 4)", []));
        let (good, bad, after) = tokio::join!(good, bad, after);
        assert_eq!(good.unwrap(), 1);
        let err = bad.unwrap_err();
        assert_eq!(err.sqlite_code(), Some(rusqlite::ErrorCode::ConstraintViolation), "{err}");
        assert_eq!(after.unwrap(), 1);
        assert_eq!(count(&writer).await, 2);
        let keys: Vec<String> = writer
            .write(|conn| conn.prepare("SELECT k FROM t ORDER BY k")?.query_map([], |row| row.get(0))?.collect())
            .await
            .unwrap();
        assert_eq!(keys, ["a", "c"]);
    }

    #[derive(Debug, PartialEq)]
    enum StoreFailure {
        Refused(&'static str),
        Writer(String),
    }

    impl From<WriteError> for StoreFailure {
        fn from(err: WriteError) -> Self {
            StoreFailure::Writer(err.to_string())
        }
    }

    #[tokio::test]
    async fn a_write_that_fails_with_the_stores_own_error_gets_it_back_and_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_table(&dir).await;
        let refused = writer
            .write_with(|conn| {
                conn.execute("INSERT INTO t (k, v) VALUES ('x', 1)", []).map_err(WriteError::from)?;
                Err::<(), _>(StoreFailure::Refused("a domain rule"))
            })
            .await;
        assert_eq!(refused, Err(StoreFailure::Refused("a domain rule")));
        assert_eq!(count(&writer).await, 0);
        let broken: Result<usize, StoreFailure> = writer
            .write_with(|conn| Ok(conn.execute("INSERT INTO missing VALUES (1)", []).map_err(WriteError::from)?))
            .await;
        assert!(matches!(broken, Err(StoreFailure::Writer(ref m)) if m.contains("missing")), "{broken:?}");
    }

    #[tokio::test]
    async fn a_panicking_write_is_rolled_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_table(&dir).await;
        let panicked = writer
            .write(|conn| -> rusqlite::Result<()> {
                conn.execute("INSERT INTO t (k, v) VALUES ('p', 1)", [])?;
                panic!("a bug in a store");
            })
            .await;
        assert!(matches!(panicked, Err(WriteError::Stopped)));
        assert_eq!(count(&writer).await, 0);
        assert!(writer.is_running());
    }

    #[tokio::test]
    async fn a_flushed_write_makes_its_batch_fsync_and_later_batches_go_back_to_normal() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_table(&dir).await;
        let synchronous =
            |conn: &rusqlite::Connection| conn.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0));
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        assert_eq!(writer.write(synchronous).await.unwrap(), NORMAL);
        assert_eq!(writer.write_flushed(synchronous).await.unwrap(), FULL);
        assert_eq!(writer.write(synchronous).await.unwrap(), NORMAL);
    }

    #[test]
    fn a_flush_waits_out_what_is_left_of_the_interval_since_the_last_one() {
        let interval = FlushInterval(Duration::from_micros(1000));
        assert_eq!(interval.wait(Duration::ZERO), Duration::from_micros(1000));
        assert_eq!(interval.wait(Duration::from_micros(400)), Duration::from_micros(600));
        assert_eq!(interval.wait(Duration::from_millis(5)), Duration::ZERO);
        assert_eq!(FlushInterval(Duration::ZERO).wait(Duration::ZERO), Duration::ZERO);
    }

    async fn pacing_writer(dir: &tempfile::TempDir, interval: Duration) -> GroupWriter {
        let path = dir.path().join("paced.db");
        let writer =
            GroupWriter::open_pacing_flushes(&path, Durability::Normal, "test", FlushInterval(interval)).await.unwrap();
        writer.write(|conn| conn.execute_batch("CREATE TABLE t (v INTEGER)")).await.unwrap();
        writer
    }

    fn insert(conn: &rusqlite::Connection, v: i64) -> rusqlite::Result<Instant> {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
        Ok(Instant::now())
    }

    #[tokio::test]
    async fn a_flush_soon_after_another_waits_and_takes_along_what_arrives_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_secs(1);
        let writer = pacing_writer(&dir, interval).await;
        writer.write_flushed(|conn| insert(conn, 1)).await.unwrap();
        let first_done = Instant::now();
        let second = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write_flushed(|conn| insert(conn, 2)).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third_ran = writer.write(|conn| insert(conn, 3)).await.unwrap();
        let second_ran = second.await.unwrap();
        let half = interval / 2;
        assert!(second_ran.duration_since(first_done) >= half, "the second flush waited for the interval");
        assert!(third_ran >= second_ran, "a write sent while the batch waited joined it");
        assert!(third_ran.duration_since(first_done) >= half, "and was not committed on its own at once");
        assert_eq!(count(&writer).await, 3);
    }

    #[tokio::test]
    async fn the_first_flush_and_batches_that_do_not_fsync_never_wait() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_secs(5);
        let writer = pacing_writer(&dir, interval).await;
        let started = Instant::now();
        writer.write_flushed(|conn| insert(conn, 1)).await.unwrap();
        writer.write(|conn| insert(conn, 2)).await.unwrap();
        assert!(started.elapsed() < interval / 2, "neither waited: {:?}", started.elapsed());
    }
}
