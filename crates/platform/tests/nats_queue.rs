//! The queue behaviour suite against NATS JetStream, plus what only JetStream needs proving:
//! a message whose consumers keep crashing is moved to the dead letters from the server's
//! advisory. Runs when `FABRIKAM_TEST_NATS_URL` is set (CI sets it); skipped otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use platform::bus::conformance::QueueHarness;
use platform::bus::{NatsQueue, OutgoingMessage, Queue, QueueOptions};
use platform::testenv;

struct NatsHarness {
    url: String,
    /// Deletes the prefix's streams when the test ends; dropped after every queue the case opened.
    _cleanup: testenv::Cleanup,
}

#[async_trait]
impl QueueHarness for NatsHarness {
    async fn open(&self, name: &str, options: QueueOptions) -> Arc<dyn Queue> {
        let queue = NatsQueue::open(&self.url, name, options).await;
        Arc::new(queue.unwrap_or_else(|e| panic!("NATS at {} did not answer: {e}", self.url)))
    }
}

/// The server URL with a prefix of this test's own, so tests never share streams.
fn harness() -> Option<NatsHarness> {
    let server = testenv::server_url(testenv::NATS_URL, "queue suite on NATS JetStream")?;
    let prefix = testenv::unique_name("t");
    let cleanup = testenv::Cleanup::new();
    cleanup.nats_streams(&server, &prefix);
    let url = testenv::with_param(&testenv::with_param(&server, "prefix", &prefix), "storage", "memory");
    Some(NatsHarness { url, _cleanup: cleanup })
}

mod conformance {
    use super::*;

    macro_rules! nats_cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = harness() else { return };
                platform::bus::conformance::$case(&harness).await;
            }
        )*};
    }

    nats_cases!(
        ack_removes_the_message,
        retry_redelivers_after_the_delay,
        dead_letters_after_max_attempts,
        dead_letter_keeps_the_error,
        duplicate_message_ids_are_stored_once,
        unacked_message_is_redelivered_after_a_crash,
        a_message_whose_last_lease_expires_is_dead_lettered,
        messages_survive_reopening,
        competing_consumers_each_get_a_message_once,
        settling_after_the_lease_expired_is_refused,
        in_progress_extends_the_lease,
        receive_wakes_when_a_message_is_published,
        depth_counts_unsettled_messages,
        a_dead_letter_is_found_by_its_id,
        replay_puts_a_dead_letter_back_once,
        a_replayed_message_that_is_acked_is_gone,
        a_replayed_message_that_fails_again_is_dead_lettered_again,
        concurrent_replays_queue_a_dead_letter_once,
        purging_a_dead_letter_removes_only_that_one,
        purging_all_dead_letters_empties_them,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumers_keep_crashing_is_dead_lettered() {
    let Some(harness) = harness() else { return };
    let options = QueueOptions { ack_wait: Duration::from_millis(200), max_attempts: 2, ..QueueOptions::default() };
    let queue = harness.open("crashy", options).await;
    queue.publish(OutgoingMessage { id: "m1".into(), payload: Bytes::from("poison") }).await.unwrap();
    for attempt in 1..=2 {
        let message = queue.receive(1, Duration::from_secs(5)).await.unwrap().pop().expect("delivered");
        assert_eq!(message.attempt, attempt);
        drop(message); // the consumer dies without settling
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        // Pulling is what makes the server notice the exhausted message and send its advisory.
        assert!(queue.receive(1, Duration::from_millis(300)).await.unwrap().is_empty());
        let dead = queue.dead_letters(10).await.unwrap();
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
    };
    assert_eq!(dead.len(), 1, "the exhausted message was not dead-lettered");
    assert_eq!(dead[0].id, "m1");
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].payload, Bytes::from("poison"));
    assert_eq!(queue.depth().await.unwrap(), 0, "the exhausted message stayed in the queue");
}
