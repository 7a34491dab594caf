//! The behaviour suite every [`Queue`] backend must pass.
//!
//! A backend's test file implements [`QueueHarness`] and expands [`queue_conformance_tests!`],
//! which turns each function here into its own `#[tokio::test]`. Each case uses a fresh queue
//! name, so a suite can run against one shared server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{OutgoingMessage, Published, Queue, QueueOptions, Retried};

/// Publishes `id`, receives it and dead-letters it with `error`.
async fn dead_letter(q: &dyn Queue, id: &str, error: &str) {
    q.publish(message(id)).await.unwrap();
    let m = q.receive(1, LONG).await.unwrap().pop().expect("delivered");
    assert_eq!(m.id, id);
    m.dead_letter(error).await.unwrap();
}

fn ids(letters: &[super::DeadLetter]) -> Vec<&str> {
    letters.iter().map(|d| d.id.as_str()).collect()
}

/// Opens the backend under test.
#[async_trait]
pub trait QueueHarness: Send + Sync {
    /// Opens queue `name`. Opening the same name again must reach the same stored messages,
    /// as a restarted process would.
    async fn open(&self, name: &str, options: QueueOptions) -> Arc<dyn Queue>;
}

/// Expands to one test per behaviour for the harness built by `$make`.
#[macro_export]
macro_rules! queue_conformance_tests {
    ($make:expr) => {
        $crate::queue_conformance_tests!(@cases $make;
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
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::bus::conformance::$case(&harness).await;
            }
        )*
    };
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

fn message(id: &str) -> OutgoingMessage {
    OutgoingMessage { id: id.to_owned(), payload: Bytes::from(format!("payload of {id}")) }
}

fn fast(options: QueueOptions) -> QueueOptions {
    QueueOptions { poll_interval: Duration::from_millis(10), ..options }
}

const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(5);

pub async fn ack_removes_the_message(h: &dyn QueueHarness) {
    let q = h.open(&unique("ack"), fast(QueueOptions::default())).await;
    assert_eq!(q.publish(message("m1")).await.unwrap(), Published::Stored);
    let got = q.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "m1");
    assert_eq!(got[0].payload, Bytes::from("payload of m1"));
    assert_eq!(got[0].attempt, 1);
    for m in got {
        m.ack().await.unwrap();
    }
    assert!(q.receive(10, SHORT).await.unwrap().is_empty());
}

pub async fn retry_redelivers_after_the_delay(h: &dyn QueueHarness) {
    let q = h.open(&unique("retry"), fast(QueueOptions::default())).await;
    q.publish(message("m1")).await.unwrap();
    let first = q.receive(1, LONG).await.unwrap().pop().unwrap();
    let retried_at = Instant::now();
    let outcome = first.retry_after(Duration::from_millis(400), "downstream 503").await.unwrap();
    assert_eq!(outcome, Retried::Scheduled);
    assert!(q.receive(1, SHORT).await.unwrap().is_empty(), "redelivered before its delay");
    let second = q.receive(1, LONG).await.unwrap().pop().expect("redelivered");
    assert!(retried_at.elapsed() >= Duration::from_millis(350), "redelivered too early");
    assert_eq!(second.id, "m1");
    assert_eq!(second.attempt, 2);
    second.ack().await.unwrap();
}

pub async fn dead_letters_after_max_attempts(h: &dyn QueueHarness) {
    let options = fast(QueueOptions { max_attempts: 3, ..QueueOptions::default() });
    let q = h.open(&unique("dlq"), options).await;
    q.publish(message("m1")).await.unwrap();
    let mut outcomes = Vec::new();
    for attempt in 1..=3 {
        let m = q.receive(1, LONG).await.unwrap().pop().expect("delivered");
        assert_eq!(m.attempt, attempt);
        outcomes.push(m.retry_after(Duration::ZERO, &format!("failure {attempt}")).await.unwrap());
    }
    assert_eq!(outcomes, [Retried::Scheduled, Retried::Scheduled, Retried::DeadLettered]);
    assert!(q.receive(1, SHORT).await.unwrap().is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "m1");
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].last_error.contains("failure 3"), "{}", dead[0].last_error);
    assert_eq!(dead[0].payload, Bytes::from("payload of m1"));
}

pub async fn dead_letter_keeps_the_error(h: &dyn QueueHarness) {
    let q = h.open(&unique("term"), fast(QueueOptions::default())).await;
    q.publish(message("m1")).await.unwrap();
    let m = q.receive(1, LONG).await.unwrap().pop().unwrap();
    m.dead_letter("package service said 422: weight must be positive").await.unwrap();
    assert!(q.receive(1, SHORT).await.unwrap().is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[0].last_error.contains("weight must be positive"));
}

pub async fn duplicate_message_ids_are_stored_once(h: &dyn QueueHarness) {
    let q = h.open(&unique("dedup"), fast(QueueOptions::default())).await;
    assert_eq!(q.publish(message("m1")).await.unwrap(), Published::Stored);
    assert_eq!(q.publish(message("m1")).await.unwrap(), Published::Duplicate);
    let got = q.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    for m in got {
        m.ack().await.unwrap();
    }
    // Still remembered after the ack, within the window.
    assert_eq!(q.publish(message("m1")).await.unwrap(), Published::Duplicate);
    assert!(q.receive(10, SHORT).await.unwrap().is_empty());
    // Concurrent publishes of one id store one message.
    let publishes = (0..20).map(|_| q.publish(message("m2")));
    let outcomes = futures::future::join_all(publishes).await;
    let stored = outcomes.iter().filter(|o| matches!(o, Ok(Published::Stored))).count();
    assert_eq!(stored, 1, "{outcomes:?}");
}

pub async fn unacked_message_is_redelivered_after_a_crash(h: &dyn QueueHarness) {
    let name = unique("crash");
    let options = fast(QueueOptions { ack_wait: Duration::from_millis(300), ..QueueOptions::default() });
    {
        let q = h.open(&name, options.clone()).await;
        q.publish(message("m1")).await.unwrap();
        let m = q.receive(1, LONG).await.unwrap().pop().unwrap();
        assert_eq!(m.attempt, 1);
        // The consumer "crashes": the message is never settled and the process goes away.
        drop(m);
        drop(q);
    }
    let q = h.open(&name, options).await;
    let m = q.receive(1, LONG).await.unwrap().pop().expect("redelivered after the lease expired");
    assert_eq!(m.id, "m1");
    assert_eq!(m.attempt, 2);
    m.ack().await.unwrap();
}

/// A consumer that dies holding a message's last attempt: the message becomes a dead letter
/// instead of being delivered once more, and the messages queued behind it still flow.
pub async fn a_message_whose_last_lease_expires_is_dead_lettered(h: &dyn QueueHarness) {
    let options =
        fast(QueueOptions { max_attempts: 2, ack_wait: Duration::from_millis(300), ..QueueOptions::default() });
    let q = h.open(&unique("last-lease"), options).await;
    q.publish(message("m1")).await.unwrap();
    for attempt in 1..=2 {
        let m = q.receive(1, LONG).await.unwrap().pop().expect("delivered");
        assert_eq!((m.id.as_str(), m.attempt), ("m1", attempt));
        drop(m); // never settled: the lease runs out
    }
    for i in 2..=4 {
        q.publish(message(&format!("m{i}"))).await.unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline && (got.len() < 3 || q.find_dead_letter("m1").await.unwrap().is_none()) {
        for m in q.receive(10, SHORT).await.unwrap() {
            got.push(m.id.clone());
            m.ack().await.unwrap();
        }
    }
    got.sort();
    assert_eq!(got, ["m2", "m3", "m4"], "m1 was delivered a third time or the others did not flow");
    let dead = q.find_dead_letter("m1").await.unwrap().expect("m1 dead-lettered after its last lease expired");
    assert_eq!(dead.attempts, 2);
}

pub async fn messages_survive_reopening(h: &dyn QueueHarness) {
    let name = unique("durable");
    let options = fast(QueueOptions::default());
    {
        let q = h.open(&name, options.clone()).await;
        for i in 0..3 {
            q.publish(message(&format!("m{i}"))).await.unwrap();
        }
    }
    let q = h.open(&name, options).await;
    let mut ids = Vec::new();
    let deadline = Instant::now() + LONG;
    while ids.len() < 3 && Instant::now() < deadline {
        for m in q.receive(10, SHORT).await.unwrap() {
            ids.push(m.id.clone());
            m.ack().await.unwrap();
        }
    }
    ids.sort();
    assert_eq!(ids, ["m0", "m1", "m2"]);
}

pub async fn competing_consumers_each_get_a_message_once(h: &dyn QueueHarness) {
    let q = h.open(&unique("compete"), fast(QueueOptions::default())).await;
    let total = 200;
    for i in 0..total {
        q.publish(message(&format!("m{i}"))).await.unwrap();
    }
    let consume = |q: Arc<dyn Queue>| async move {
        let mut seen = Vec::new();
        loop {
            let batch = q.receive(16, SHORT).await.unwrap();
            if batch.is_empty() {
                return seen;
            }
            for m in batch {
                seen.push(m.id.clone());
                m.ack().await.unwrap();
            }
        }
    };
    let (a, b) = tokio::join!(consume(q.clone()), consume(q.clone()));
    let mut all: Vec<String> = a.into_iter().chain(b).collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a message went to two consumers");
    assert_eq!(all.len(), total);
}

pub async fn settling_after_the_lease_expired_is_refused(h: &dyn QueueHarness) {
    let options = fast(QueueOptions { ack_wait: Duration::from_millis(200), ..QueueOptions::default() });
    let q = h.open(&unique("lease"), options).await;
    q.publish(message("m1")).await.unwrap();
    let slow = q.receive(1, LONG).await.unwrap().pop().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fresh = q.receive(1, LONG).await.unwrap().pop().expect("redelivered");
    assert_eq!(fresh.attempt, 2);
    assert!(slow.ack().await.is_err(), "a stale lease must not settle the message");
    fresh.ack().await.unwrap();
}

pub async fn in_progress_extends_the_lease(h: &dyn QueueHarness) {
    let options = fast(QueueOptions { ack_wait: Duration::from_millis(300), ..QueueOptions::default() });
    let q = h.open(&unique("extend"), options).await;
    q.publish(message("m1")).await.unwrap();
    let m = q.receive(1, LONG).await.unwrap().pop().unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        m.in_progress().await.unwrap();
    }
    assert!(q.receive(1, SHORT).await.unwrap().is_empty(), "redelivered while in progress");
    m.ack().await.unwrap();
}

pub async fn receive_wakes_when_a_message_is_published(h: &dyn QueueHarness) {
    let options = QueueOptions { poll_interval: Duration::from_secs(2), ..QueueOptions::default() };
    let q = h.open(&unique("wake"), options).await;
    let consumer = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = q.receive(1, Duration::from_secs(10)).await.unwrap();
            (got.len(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.publish(message("m1")).await.unwrap();
    let (count, waited) = consumer.await.unwrap();
    assert_eq!(count, 1);
    assert!(waited < Duration::from_secs(2), "consumer slept through the publish: {waited:?}");
}

pub async fn depth_counts_unsettled_messages(h: &dyn QueueHarness) {
    let q = h.open(&unique("depth"), fast(QueueOptions::default())).await;
    for i in 0..3 {
        q.publish(message(&format!("m{i}"))).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 3);
    let got = q.receive(1, LONG).await.unwrap();
    for m in got {
        m.ack().await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 2);
    q.ping().await.unwrap();
}

pub async fn a_dead_letter_is_found_by_its_id(h: &dyn QueueHarness) {
    let q = h.open(&unique("find-dead"), fast(QueueOptions::default())).await;
    let before = chrono::Utc::now();
    dead_letter(q.as_ref(), "m1", "address does not exist").await;
    dead_letter(q.as_ref(), "m2", "weight must be positive").await;
    q.publish(message("m3")).await.unwrap();

    let found = q.find_dead_letter("m2").await.unwrap().expect("dead letter m2");
    assert_eq!(found.id, "m2");
    assert_eq!(found.payload, Bytes::from("payload of m2"));
    assert_eq!(found.attempts, 1);
    assert!(found.last_error.contains("weight must be positive"), "{}", found.last_error);
    let slack = chrono::Duration::seconds(5);
    assert!(found.enqueued_at >= before - slack && found.enqueued_at <= found.dead_lettered_at + slack, "{found:?}");
    assert!(found.dead_lettered_at <= chrono::Utc::now() + slack, "{found:?}");
    assert_eq!(q.dead_letters(10).await.unwrap()[1], found, "listing and lookup disagree");

    assert_eq!(q.find_dead_letter("unknown").await.unwrap(), None);
    assert_eq!(q.find_dead_letter("m3").await.unwrap(), None, "a queued message is not a dead letter");
}

pub async fn replay_puts_a_dead_letter_back_once(h: &dyn QueueHarness) {
    let options = fast(QueueOptions { max_attempts: 2, ..QueueOptions::default() });
    let q = h.open(&unique("replay"), options).await;
    q.publish(message("m1")).await.unwrap();
    for _ in 0..2 {
        let m = q.receive(1, LONG).await.unwrap().pop().expect("delivered");
        m.retry_after(Duration::ZERO, "downstream 503").await.unwrap();
    }
    assert_eq!(q.find_dead_letter("m1").await.unwrap().expect("dead").attempts, 2);

    assert!(q.replay_dead_letter("m1").await.unwrap());
    assert_eq!(q.find_dead_letter("m1").await.unwrap(), None, "still a dead letter after its replay");
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    assert!(!q.replay_dead_letter("m1").await.unwrap(), "replayed a dead letter that is gone");
    assert!(!q.replay_dead_letter("unknown").await.unwrap());

    let got = q.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id, "m1", "the replay must keep the message id");
    assert_eq!(got[0].payload, Bytes::from("payload of m1"));
    assert_eq!(got[0].attempt, 1);
    // A publish of the original id is still a duplicate: replaying did not reopen de-duplication.
    assert_eq!(q.publish(message("m1")).await.unwrap(), Published::Duplicate);
    for m in got {
        m.ack().await.unwrap();
    }
    assert!(q.receive(10, SHORT).await.unwrap().is_empty(), "replayed twice");
}

pub async fn a_replayed_message_that_is_acked_is_gone(h: &dyn QueueHarness) {
    let q = h.open(&unique("replay-ack"), fast(QueueOptions::default())).await;
    dead_letter(q.as_ref(), "m1", "bug in the consumer").await;
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(q.replay_dead_letter("m1").await.unwrap());
    assert_eq!(q.depth().await.unwrap(), 1);
    let m = q.receive(1, LONG).await.unwrap().pop().expect("replayed");
    assert_eq!((m.id.as_str(), m.attempt), ("m1", 1));
    m.ack().await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    assert!(q.receive(1, SHORT).await.unwrap().is_empty());
}

pub async fn a_replayed_message_that_fails_again_is_dead_lettered_again(h: &dyn QueueHarness) {
    let options = fast(QueueOptions { max_attempts: 2, ..QueueOptions::default() });
    let q = h.open(&unique("replay-again"), options).await;
    dead_letter(q.as_ref(), "m1", "first failure").await;
    assert!(q.replay_dead_letter("m1").await.unwrap());
    // Its attempts count from 1 again: one retry is scheduled, the next dead-letters it.
    let m = q.receive(1, LONG).await.unwrap().pop().expect("replayed");
    assert_eq!(m.retry_after(Duration::ZERO, "second failure").await.unwrap(), Retried::Scheduled);
    let m = q.receive(1, LONG).await.unwrap().pop().expect("retried");
    assert_eq!((m.id.as_str(), m.attempt), ("m1", 2));
    assert_eq!(m.retry_after(Duration::ZERO, "third failure").await.unwrap(), Retried::DeadLettered);
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(ids(&dead), ["m1"]);
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].last_error.contains("third failure"), "{}", dead[0].last_error);
    assert_eq!(q.depth().await.unwrap(), 0);
}

pub async fn concurrent_replays_queue_a_dead_letter_once(h: &dyn QueueHarness) {
    let q = h.open(&unique("replay-race"), fast(QueueOptions::default())).await;
    dead_letter(q.as_ref(), "m1", "bug in the consumer").await;
    let (a, b) = tokio::join!(q.replay_dead_letter("m1"), q.replay_dead_letter("m1"));
    let replayed = [a.unwrap(), b.unwrap()];
    assert_eq!(replayed.iter().filter(|r| **r).count(), 1, "{replayed:?}");
    assert_eq!(q.depth().await.unwrap(), 1, "queued more than once");
    let got = q.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    for m in got {
        m.ack().await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
}

pub async fn purging_a_dead_letter_removes_only_that_one(h: &dyn QueueHarness) {
    let q = h.open(&unique("purge-one"), fast(QueueOptions::default())).await;
    for id in ["m1", "m2", "m3"] {
        dead_letter(q.as_ref(), id, "bad request").await;
    }
    assert!(q.purge_dead_letter("m2").await.unwrap());
    assert!(!q.purge_dead_letter("m2").await.unwrap(), "purged one that was gone");
    assert!(!q.purge_dead_letter("unknown").await.unwrap());
    assert_eq!(ids(&q.dead_letters(10).await.unwrap()), ["m1", "m3"]);
    assert_eq!(q.find_dead_letter("m2").await.unwrap(), None);
    assert!(q.find_dead_letter("m3").await.unwrap().is_some());
    assert!(q.receive(1, SHORT).await.unwrap().is_empty(), "a purged dead letter was delivered");
}

pub async fn purging_all_dead_letters_empties_them(h: &dyn QueueHarness) {
    let q = h.open(&unique("purge-all"), fast(QueueOptions::default())).await;
    for id in ["m1", "m2", "m3"] {
        dead_letter(q.as_ref(), id, "bad request").await;
    }
    q.publish(message("m4")).await.unwrap();
    assert_eq!(q.purge_dead_letters().await.unwrap(), 3);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(q.find_dead_letter("m1").await.unwrap(), None);
    assert_eq!(q.purge_dead_letters().await.unwrap(), 0);
    assert_eq!(q.depth().await.unwrap(), 1, "purging dead letters touched the queue");
    let m = q.receive(1, LONG).await.unwrap().pop().expect("the queued message");
    assert_eq!(m.id, "m4");
    m.ack().await.unwrap();
}
