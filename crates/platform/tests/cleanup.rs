//! `testenv::Cleanup` removes what a test made on the real servers, and only that: the streams
//! of its NATS prefix, its PostgreSQL schemas, the Redis keys of its prefix; also when the test
//! panics. Each server's tests run when its variable is set and are skipped (saying so) otherwise;
//! with the variable set, a server that does not answer fails them.

use std::time::{Duration, Instant};

use futures::StreamExt;
use platform::bus::{NatsQueue, QueueOptions};
use platform::testenv::{self, Cleanup};
use sqlx::Connection;

async fn stream_names(server: &str) -> Vec<String> {
    let client = async_nats::connect(server)
        .await
        .unwrap_or_else(|e| panic!("NATS at {server} did not answer ({e}); unset {} to skip", testenv::NATS_URL));
    let jetstream = async_nats::jetstream::new(client);
    jetstream.stream_names().map(|name| name.expect("list streams")).collect().await
}

fn starting_with(names: &[String], start: &str) -> Vec<String> {
    names.iter().filter(|name| name.starts_with(start)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_a_nats_prefix_are_deleted_and_no_others() {
    let server = platform::require_server!(testenv::NATS_URL, "cleanup on NATS JetStream");
    let ours = testenv::unique_name("t");
    // Begins with `ours` but is another prefix: its streams are not ours to delete.
    let longer = format!("{ours}_longer");
    let (ours_cleanup, longer_cleanup) = (Cleanup::new(), Cleanup::new());
    ours_cleanup.nats_streams(&server, &ours);
    longer_cleanup.nats_streams(&server, &longer);
    for prefix in [&ours, &longer] {
        let url = testenv::with_param(&testenv::with_param(&server, "prefix", prefix), "storage", "memory");
        NatsQueue::open(&url, "work", QueueOptions::default())
            .await
            .unwrap_or_else(|e| panic!("NATS at {server} did not answer: {e}"));
    }
    let made = stream_names(&server).await;
    assert_eq!(starting_with(&made, &format!("{ours}-")).len(), 2, "a queue and its dead letters: {made:?}");

    drop(ours_cleanup);
    let left = stream_names(&server).await;
    assert_eq!(starting_with(&left, &format!("{ours}-")), Vec::<String>::new());
    assert_eq!(starting_with(&left, &format!("{longer}-")).len(), 2, "another prefix's streams were deleted");

    drop(longer_cleanup);
    assert_eq!(starting_with(&stream_names(&server).await, &ours), Vec::<String>::new());
}

async fn schema_exists(server: &str, schema: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(server).await.expect("connect");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)")
        .bind(schema)
        .fetch_one(&mut conn)
        .await
        .expect("look the schema up")
}

/// Makes a table in the fresh schema behind `url` and returns the schema's name.
async fn fill_schema(url: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to the fresh schema");
    sqlx::raw_sql("CREATE TABLE things (id TEXT PRIMARY KEY); INSERT INTO things VALUES ('a')")
        .execute(&mut conn)
        .await
        .expect("fill the schema");
    let schema = sqlx::query_scalar("SELECT current_schema()::text").fetch_one(&mut conn).await.expect("schema");
    conn.close().await.expect("close");
    schema
}

#[tokio::test]
async fn a_schema_is_dropped_with_its_tables() {
    let server = platform::require_server!(testenv::POSTGRES_URL, "cleanup on PostgreSQL");
    let cleanup = Cleanup::new();
    let schema = fill_schema(&cleanup.fresh_postgres_schema(&server).await).await;
    assert!(schema.starts_with("t_"), "{schema}");
    assert!(schema_exists(&server, &schema).await);
    drop(cleanup);
    assert!(!schema_exists(&server, &schema).await, "{schema} is still there");
}

#[tokio::test]
async fn a_panicking_test_leaves_no_schema_behind() {
    let server = platform::require_server!(testenv::POSTGRES_URL, "cleanup on PostgreSQL");
    let (made, schema) = tokio::sync::oneshot::channel();
    let test = tokio::spawn({
        let server = server.clone();
        async move {
            let cleanup = Cleanup::new();
            made.send(fill_schema(&cleanup.fresh_postgres_schema(&server).await).await).unwrap();
            panic!("the test fails after making its schema");
        }
    });
    assert!(test.await.expect_err("the test panicked").is_panic());
    let schema = schema.await.expect("the schema was made");
    assert!(!schema_exists(&server, &schema).await, "{schema} outlived the panic");
}

async fn redis_connection(server: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server).expect("a Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {server} did not answer ({e}); unset {} to skip", testenv::REDIS_URL))
}

async fn exists(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query_async::<u64>(redis).await.expect("EXISTS") == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_of_a_redis_prefix_are_deleted_and_no_others() {
    let server = platform::require_server!(testenv::REDIS_URL, "cleanup on Redis");
    let ours = testenv::unique_name("t");
    let longer = format!("{ours}_longer");
    let (ours_cleanup, longer_cleanup) = (Cleanup::new(), Cleanup::new());
    ours_cleanup.redis_keys(&server, &ours);
    longer_cleanup.redis_keys(&server, &longer);
    let mut redis = redis_connection(&server).await;
    // More than one SCAN batch, in the key shapes the delivery store uses.
    let keys: Vec<String> = (0..2500).map(|i| format!("{ours}:delivery:{{d{i}}}")).collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(&str, u8)> = chunk.iter().map(|key| (key.as_str(), 1)).collect();
        let () = redis::cmd("MSET").arg(&pairs).query_async(&mut redis).await.expect("MSET");
    }
    let other = format!("{longer}:delivery:{{d1}}");
    let () = redis::cmd("SET").arg(&other).arg(1).query_async(&mut redis).await.expect("SET");

    drop(ours_cleanup);
    let mut left = 0;
    for key in &keys {
        left += usize::from(exists(&mut redis, key).await);
    }
    assert_eq!(left, 0, "keys of the prefix are still there");
    assert!(exists(&mut redis, &other).await, "another prefix's key was deleted");

    drop(longer_cleanup);
    assert!(!exists(&mut redis, &other).await);
}

/// Needs no server: nothing listens on port 1.
#[test]
fn servers_that_do_not_answer_are_reported_not_a_panic_or_a_hang() {
    let cleanup = Cleanup::new();
    cleanup.nats_streams("nats://127.0.0.1:1", "t_nowhere");
    cleanup.postgres_schema("postgres://postgres@127.0.0.1:1/nowhere", "t_nowhere");
    cleanup.redis_keys("redis://127.0.0.1:1/0", "t_nowhere");
    let started = Instant::now();
    drop(cleanup);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}
