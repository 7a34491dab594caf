//! Where backend tests find the real servers they run against.
//!
//! A backend suite reads its server's URL from an environment variable (`FABRIKAM_TEST_NATS_URL`,
//! `FABRIKAM_TEST_POSTGRES_URL`, `FABRIKAM_TEST_REDIS_URL`; `.ci/run` sets all three). With the
//! variable unset the suite is skipped and says so on stderr; with it set, a server that does not
//! answer fails the test: it never silently passes.
//!
//! What a test makes on those servers (JetStream streams, schemas, Redis keys) is registered
//! with a [`Cleanup`] that removes it when dropped, so that a long-running server does not keep
//! tending every stream and consumer of every earlier run.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;

/// Names of the variables, in one place.
pub const NATS_URL: &str = "FABRIKAM_TEST_NATS_URL";
pub const POSTGRES_URL: &str = "FABRIKAM_TEST_POSTGRES_URL";
pub const REDIS_URL: &str = "FABRIKAM_TEST_REDIS_URL";

/// The server URL in `var`, or `None` after printing a skip note naming `suite`.
pub fn server_url(var: &str, suite: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {suite}: set {var} to run it against a real server");
            None
        }
    }
}

/// A unique, lower-case name for one test's schema, stream or key prefix.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Skips the rest of the test (returning from it) when the variable is unset.
#[macro_export]
macro_rules! require_server {
    ($var:expr, $suite:expr) => {
        match $crate::testenv::server_url($var, $suite) {
            Some(url) => url,
            None => return,
        }
    };
}

/// `url` with `key=value` added to its query.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

/// The longest one server may take to remove a test's leftovers: a server that stopped
/// answering must not hang the test that made them.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// What one test made on the shared servers, removed when this is dropped: at the end of the
/// test, and also while a panicking test unwinds, so a failure leaves nothing behind either.
///
/// Declare it before whatever uses the resources (locals drop in reverse order), so that stores,
/// connections and processes are gone by the time their streams, schemas and keys are removed.
/// Removal runs on a thread of its own with its own runtime, because `Drop` cannot await and may
/// run inside (or while shutting down) the test's runtime. A removal that fails is reported on
/// stderr and never panics: it must not hide the test's own outcome.
#[must_use = "the leftovers are removed when this is dropped: keep it for as long as the test runs"]
#[derive(Debug, Default)]
pub struct Cleanup {
    leftovers: Mutex<Vec<Leftover>>,
}

#[derive(Debug)]
enum Leftover {
    /// Every JetStream stream named `{prefix}-…` on the NATS server(s) at `server`.
    Streams {
        server: String,
        prefix: String,
    },
    Schema {
        server: String,
        schema: String,
    },
    /// Every key matching `{prefix}:*` on the Redis server (and database) at `server`.
    Keys {
        server: String,
        prefix: String,
    },
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes the streams named `{prefix}-…` (a bus URL's `prefix=`: queues, their dead letters,
    /// event streams) from the NATS server at `server` (`nats://HOST:PORT[,…]`, query ignored).
    pub fn nats_streams(&self, server: &str, prefix: &str) {
        assert!(!prefix.is_empty(), "an empty prefix would name every stream");
        self.push(Leftover::Streams { server: server.to_owned(), prefix: prefix.to_owned() });
    }

    /// Drops `schema`, and everything in it, from the PostgreSQL server at `server`.
    pub fn postgres_schema(&self, server: &str, schema: &str) {
        assert!(is_plain_identifier(schema), "schema {schema:?} is not a plain lower-case identifier");
        self.push(Leftover::Schema { server: server.to_owned(), schema: schema.to_owned() });
    }

    /// Deletes the keys matching `{prefix}:*` (a Redis store URL's `prefix=`) from the Redis
    /// server at `server` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, query ignored).
    pub fn redis_keys(&self, server: &str, prefix: &str) {
        assert!(!prefix.is_empty() && !prefix.contains(['*', '?', '[', '\\']), "bad key prefix {prefix:?}");
        self.push(Leftover::Keys { server: server.to_owned(), prefix: prefix.to_owned() });
    }

    /// Creates a fresh schema on the PostgreSQL server at `url`, dropped with `self`, and returns
    /// a URL whose connections use it. Panics when the server does not answer: the variable was set.
    pub async fn fresh_postgres_schema(&self, url: &str) -> String {
        use sqlx::Connection;
        let schema = unique_name("t");
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} did not answer ({e}); unset {POSTGRES_URL} to skip"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        self.postgres_schema(url, &schema);
        // Not left to drop: a connection closed politely is gone before the schema is dropped.
        let _ = conn.close().await;
        crate::postgres::with_search_path(url, &schema)
    }

    fn push(&self, leftover: Leftover) {
        self.leftovers.lock().unwrap_or_else(PoisonError::into_inner).push(leftover);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let leftovers = std::mem::take(self.leftovers.get_mut().unwrap_or_else(PoisonError::into_inner));
        if leftovers.is_empty() {
            return;
        }
        let removal = std::thread::Builder::new().name("testenv-cleanup".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(remove(leftovers)),
                Err(e) => vec![format!("no runtime to remove the test's leftovers with: {e}")],
            }
        });
        let failures = match removal.map(std::thread::JoinHandle::join) {
            Ok(Ok(failures)) => failures,
            Ok(Err(_)) => vec!["removing the test's leftovers panicked".to_owned()],
            Err(e) => vec![format!("no thread to remove the test's leftovers on: {e}")],
        };
        for failure in failures {
            eprintln!("testenv cleanup: {failure}");
        }
    }
}

/// Lower-case letters, digits and `_`, not starting with a digit: needs no quoting in SQL, and
/// means the same quoted or not.
fn is_plain_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Removes everything, one server at a time; a server that fails does not stop the others.
/// Returns what could not be removed.
async fn remove(leftovers: Vec<Leftover>) -> Vec<String> {
    let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for leftover in leftovers {
        let (by_server, server, name) = match leftover {
            Leftover::Streams { server, prefix } => (&mut streams, server, prefix),
            Leftover::Schema { server, schema } => (&mut schemas, server, schema),
            Leftover::Keys { server, prefix } => (&mut keys, server, prefix),
        };
        by_server.entry(server).or_default().push(name);
    }
    let mut failures = Vec::new();
    let mut record = |what: String, outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => failures.push(format!("{what}: {error}")),
        Err(_) => failures.push(format!("{what}: gave up after {REMOVAL_TIMEOUT:?}")),
    };
    for (server, prefixes) in &streams {
        let outcome = tokio::time::timeout(REMOVAL_TIMEOUT, delete_streams(server, prefixes)).await;
        record(format!("deleting streams {prefixes:?}-… on {server}"), outcome);
    }
    for (server, names) in &schemas {
        let outcome = tokio::time::timeout(REMOVAL_TIMEOUT, drop_schemas(server, names)).await;
        record(format!("dropping schemas {names:?} on {server}"), outcome);
    }
    for (server, prefixes) in &keys {
        let outcome = tokio::time::timeout(REMOVAL_TIMEOUT, delete_keys(server, prefixes)).await;
        record(format!("deleting keys {prefixes:?}:* on {server}"), outcome);
    }
    failures
}

async fn delete_streams(server: &str, prefixes: &[String]) -> Result<(), String> {
    let servers = crate::bus::NatsSettings::from_url(server).map_err(|e| format!("bad NATS URL: {e}"))?.servers;
    let addrs = servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad NATS server address: {e}"))?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(addrs.as_slice())
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let jetstream = async_nats::jetstream::new(client);
    // The separator too: a prefix must not take the streams of a longer prefix it begins.
    let starts: Vec<String> = prefixes.iter().map(|p| format!("{p}-")).collect();
    let mut names = jetstream.stream_names();
    let mut ours = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| format!("listing streams: {e}"))?;
        if starts.iter().any(|start| name.starts_with(start.as_str())) {
            ours.push(name);
        }
    }
    for name in ours {
        jetstream.delete_stream(&name).await.map_err(|e| format!("deleting {name}: {e}"))?;
    }
    Ok(())
}

async fn drop_schemas(server: &str, schemas: &[String]) -> Result<(), String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await.map_err(|e| format!("connecting: {e}"))?;
    // A connection the test left in a transaction holds locks the drop would wait for forever;
    // the cleanup gives up on it instead, and the removal timeout covers the rest.
    let setup = "SET lock_timeout = '20s'; SET client_min_messages = warning";
    sqlx::raw_sql(setup).execute(&mut conn).await.map_err(|e| format!("setting up: {e}"))?;
    for schema in schemas {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("dropping {schema}: {e}"))?;
    }
    let _ = conn.close().await;
    Ok(())
}

async fn delete_keys(server: &str, prefixes: &[String]) -> Result<(), String> {
    let without_query = server.split('?').next().unwrap_or(server);
    let client = redis::Client::open(without_query).map_err(|e| format!("bad Redis URL: {e}"))?;
    let mut connection = client.get_multiplexed_async_connection().await.map_err(|e| format!("connecting: {e}"))?;
    for prefix in prefixes {
        let pattern = format!("{prefix}:*");
        let mut cursor = 0u64;
        loop {
            // SCAN, not KEYS: the server is shared, and KEYS blocks it.
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(|e| format!("scanning: {e}"))?;
            if !keys.is_empty() {
                let _: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| format!("deleting: {e}"))?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}
