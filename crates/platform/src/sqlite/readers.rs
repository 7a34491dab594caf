//! Point reads on the caller's own thread.
//!
//! sqlx's SQLite driver runs every statement on a worker thread of its connection and hands the
//! result back: two thread wake-ups for a lookup that takes SQLite a few microseconds once its
//! pages are cached. Profiles of the embedded system under load put those hand-overs (the
//! `sqlx-sqlite-worker` threads and the wake-ups on the Tokio side) at 6–17 % of the process.
//! [`Readers`] instead runs the read on the thread that asks, on a pooled plain connection:
//! the task blocks for the read itself and never waits for another thread.
//!
//! That is only right for reads that touch a handful of rows through an index (a record by its
//! key, one delivery's events). Scans and listings whose size the caller chooses stay on a pool
//! that runs them elsewhere, where they cannot hold up a worker thread. In WAL mode a reader
//! never waits for the writer, so the read does not block on a commit either.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Idle connections kept for reuse; a burst above it opens more and closes them after.
const KEEP_IDLE: usize = 8;

/// A pool of read-only connections to one SQLite file, each used by one thread at a time.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Readers {
    /// Readers of the file at `path`, which must exist (the store's writer or migrations made
    /// it). One connection is opened now, so a file that cannot be read fails here.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let first = open_reader(path)?;
        Ok(Self { path: path.to_owned(), idle: Mutex::new(vec![first]) })
    }

    /// Runs `read` on an idle connection (opening one if none is idle) on this thread; it fails
    /// with the caller's own error type, into which SQLite's converts.
    pub fn read<T, E>(&self, read: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
        result
    }
}

fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    // Read-write at the file level so the connection can map the WAL index like any other;
    // `query_only` keeps it from ever writing.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_rows() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let conn = crate::sqlite::open_writer(&path, crate::sqlite::Durability::Normal).unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER); INSERT INTO t VALUES ('a', 1);").unwrap();
        (dir, path)
    }

    #[test]
    fn reads_what_the_writer_committed_and_cannot_write() {
        let (_dir, path) = file_with_rows();
        let readers = Readers::open(&path).unwrap();
        let v: i64 = readers.read(|c| c.query_row("SELECT v FROM t WHERE k = 'a'", [], |r| r.get(0))).unwrap();
        assert_eq!(v, 1);
        let err = readers.read(|c| c.execute("INSERT INTO t VALUES ('b', 2)", [])).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn sees_commits_made_after_it_opened() {
        let (_dir, path) = file_with_rows();
        let readers = Readers::open(&path).unwrap();
        let writer = crate::sqlite::open_writer(&path, crate::sqlite::Durability::Normal).unwrap();
        writer.execute("UPDATE t SET v = 2 WHERE k = 'a'", []).unwrap();
        let v: i64 = readers.read(|c| c.query_row("SELECT v FROM t WHERE k = 'a'", [], |r| r.get(0))).unwrap();
        assert_eq!(v, 2);
    }

    #[test]
    fn a_missing_file_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Readers::open(&dir.path().join("missing.db")).is_err());
    }

    #[test]
    fn concurrent_reads_each_get_a_connection() {
        let (_dir, path) = file_with_rows();
        let readers = std::sync::Arc::new(Readers::open(&path).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let readers = readers.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let v: i64 =
                            readers.read(|c| c.query_row("SELECT v FROM t WHERE k = 'a'", [], |r| r.get(0))).unwrap();
                        assert_eq!(v, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(readers.idle.lock().unwrap().len() <= KEEP_IDLE);
    }
}
