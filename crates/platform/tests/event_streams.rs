//! The event-stream behaviour suite against both backends: embedded SQLite always, NATS
//! JetStream when `FABRIKAM_TEST_NATS_URL` is set (CI sets it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use platform::bus::stream::{EventStream, NatsEventStream, SqliteEventStream};
use platform::bus::stream_conformance::StreamHarness;
use platform::testenv;

struct SqliteHarness {
    dir: tempfile::TempDir,
}

#[async_trait]
impl StreamHarness for SqliteHarness {
    async fn open(&self, name: &str) -> Arc<dyn EventStream> {
        Arc::new(SqliteEventStream::open(&self.dir.path().join("events.db"), name).await.expect("open stream"))
    }
}

mod sqlite {
    platform::stream_conformance_tests!(super::SqliteHarness { dir: tempfile::tempdir().unwrap() });

    use std::collections::BTreeSet;
    use std::time::Duration;

    use platform::bus::OutgoingMessage;
    use platform::bus::QueueOptions;
    use platform::bus::stream::{EventStream, SqliteEventStream, StartAt};

    /// Two processes on one file (two stream handles): members of one group in each share the
    /// events, none twice, none lost, because each group's copy from the log and its cursor move
    /// commit together under SQLite's write lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_in_two_processes_share_a_group_without_doubles() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.db");
        let one = SqliteEventStream::open_private(&file, "orders").await.unwrap();
        let two = SqliteEventStream::open_private(&file, "orders").await.unwrap();
        let options = QueueOptions { ack_wait: Duration::from_secs(30), ..QueueOptions::default() };
        let a = one.subscribe("workers", StartAt::Beginning, options.clone()).await.unwrap();
        let b = two.subscribe("workers", StartAt::Beginning, options).await.unwrap();
        let publisher = async {
            for i in 0..300 {
                let event = OutgoingMessage { id: format!("e{i}"), payload: format!("{i}").into_bytes().into() };
                if i % 2 == 0 {
                    one.publish(event).await.unwrap()
                } else {
                    two.publish(event).await.unwrap()
                };
            }
        };
        let consume = |s: std::sync::Arc<dyn platform::bus::stream::Subscription>| async move {
            let mut seen = Vec::new();
            let mut idle = 0;
            while idle < 3 {
                let batch = s.receive(16, Duration::from_millis(200)).await.unwrap();
                idle = if batch.is_empty() { idle + 1 } else { 0 };
                for m in batch {
                    seen.push(m.id.clone());
                    m.ack().await.unwrap();
                }
            }
            seen
        };
        let ((), x, y) = tokio::join!(publisher, consume(a), consume(b));
        let all: Vec<String> = x.into_iter().chain(y).collect();
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "an event went to two members of one group");
        assert_eq!(all.len(), 300, "every event reaches the group");
    }
}

struct NatsHarness {
    url: String,
    /// Deletes the prefix's streams when the test ends; dropped after every stream the case opened.
    _cleanup: testenv::Cleanup,
}

#[async_trait]
impl StreamHarness for NatsHarness {
    async fn open(&self, name: &str) -> Arc<dyn EventStream> {
        let stream = NatsEventStream::open(&self.url, name, Duration::from_secs(120)).await;
        Arc::new(stream.unwrap_or_else(|e| panic!("NATS at {} did not answer: {e}", self.url)))
    }
}

fn nats() -> Option<NatsHarness> {
    let server = testenv::server_url(testenv::NATS_URL, "event-stream suite on NATS JetStream")?;
    let prefix = testenv::unique_name("t");
    let cleanup = testenv::Cleanup::new();
    cleanup.nats_streams(&server, &prefix);
    let url = testenv::with_param(&testenv::with_param(&server, "prefix", &prefix), "storage", "memory");
    Some(NatsHarness { url, _cleanup: cleanup })
}

mod nats {
    use super::*;

    macro_rules! nats_cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = nats() else { return };
                platform::bus::stream_conformance::$case(&harness).await;
            }
        )*};
    }

    nats_cases!(
        every_group_gets_every_event_in_order,
        members_of_a_group_share_the_events,
        a_new_group_replays_history_from_the_beginning,
        a_group_starting_at_new_skips_history,
        a_group_keeps_its_position_across_reopening,
        unacked_events_come_back_after_the_lease,
        retried_events_are_dead_lettered_after_max_attempts,
        duplicate_event_ids_are_stored_once,
        a_batch_is_stored_in_order_and_its_duplicates_are_told,
        receive_wakes_when_an_event_is_published,
    );
}
