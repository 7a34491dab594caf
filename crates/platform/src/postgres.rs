//! Opening PostgreSQL pools the same way everywhere.
//!
//! A service started before its database is up does not crash-loop: [`open_pool`] retries with
//! back-off until the server answers (or the caller gives up), and the pool reconnects by itself
//! afterwards, so readiness goes red while the database is away and green again when it is back.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// True for `postgres://` and `postgresql://` URLs.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A pool of up to `max_connections` on `url`, retried until the server answers.
pub async fn open_pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0u32;
    loop {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => return Ok(pool),
            // Only an unreachable server is worth waiting for; bad credentials or a bad URL are not.
            Err(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) if attempts < 50 => {
                attempts += 1;
                tracing::warn!(
                    attempt = attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    "PostgreSQL not reachable yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

/// `url` with `search_path` set to `schema`, so that every connection of a pool sees only the
/// tables of that schema (tests use one fresh schema each).
pub fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}
