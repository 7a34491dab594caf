//! Where backend tests find the real servers they run against.
//!
//! A backend suite reads its server's URL from an environment variable (`FABRIKAM_TEST_NATS_URL`,
//! `FABRIKAM_TEST_POSTGRES_URL`, `FABRIKAM_TEST_REDIS_URL`; `.ci/run` sets all three). With the
//! variable unset the suite is skipped and says so on stderr; with it set, a server that does not
//! answer fails the test: it never silently passes.

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

/// Creates a fresh schema on the PostgreSQL server at `url` and returns a URL whose
/// connections use it. Panics when the server does not answer: the variable was set.
pub async fn fresh_postgres_schema(url: &str) -> String {
    use sqlx::Connection;
    let schema = unique_name("t");
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} did not answer ({e}); unset {POSTGRES_URL} to skip"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    crate::postgres::with_search_path(url, &schema)
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
