//! The behaviour suite every [`EventStream`] backend must pass.
//!
//! A backend's test file implements [`StreamHarness`] and expands [`stream_conformance_tests!`]
//! (or lists the cases itself); each case uses a fresh stream name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::stream::{EventStream, StartAt, Subscription};
use super::{OutgoingMessage, Published, QueueOptions, Retried};

/// Opens the backend under test.
#[async_trait]
pub trait StreamHarness: Send + Sync {
    /// Opens stream `name`; opening it again reaches the same stored events.
    async fn open(&self, name: &str) -> Arc<dyn EventStream>;
}

/// Expands to one test per behaviour for the harness built by `$make`.
#[macro_export]
macro_rules! stream_conformance_tests {
    ($make:expr) => {
        $crate::stream_conformance_tests!(@cases $make;
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
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::bus::stream_conformance::$case(&harness).await;
            }
        )*
    };
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

fn event(id: &str) -> OutgoingMessage {
    OutgoingMessage { id: id.to_owned(), payload: Bytes::from(format!("event {id}")) }
}

fn options() -> QueueOptions {
    QueueOptions { poll_interval: Duration::from_millis(10), ..QueueOptions::default() }
}

const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(5);

/// Receives and acks until `count` events came or `LONG` passed; returns their ids in order.
async fn drain(subscription: &dyn Subscription, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let deadline = Instant::now() + LONG;
    while ids.len() < count && Instant::now() < deadline {
        for message in subscription.receive(count - ids.len(), SHORT).await.unwrap() {
            ids.push(message.id.clone());
            message.ack().await.unwrap();
        }
    }
    ids
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

async fn publish_all(stream: &dyn EventStream, range: std::ops::Range<usize>) {
    for id in ids(range) {
        assert_eq!(stream.publish(event(&id)).await.unwrap(), Published::Stored);
    }
}

pub async fn every_group_gets_every_event_in_order(h: &dyn StreamHarness) {
    let stream = h.open(&unique("fanout")).await;
    let billing = stream.subscribe("billing", StartAt::Beginning, options()).await.unwrap();
    let tracking = stream.subscribe("tracking", StartAt::Beginning, options()).await.unwrap();
    publish_all(&*stream, 0..20).await;
    assert_eq!(drain(&*billing, 20).await, ids(0..20));
    assert_eq!(drain(&*tracking, 20).await, ids(0..20));
    assert!(billing.receive(10, SHORT).await.unwrap().is_empty());
    assert_eq!(billing.pending().await.unwrap(), 0);
    stream.ping().await.unwrap();
}

pub async fn members_of_a_group_share_the_events(h: &dyn StreamHarness) {
    let stream = h.open(&unique("share")).await;
    let a = stream.subscribe("workers", StartAt::Beginning, options()).await.unwrap();
    let b = stream.subscribe("workers", StartAt::Beginning, options()).await.unwrap();
    publish_all(&*stream, 0..100).await;
    let consume = |s: Arc<dyn Subscription>| async move {
        let mut seen = Vec::new();
        loop {
            let batch = s.receive(8, SHORT).await.unwrap();
            if batch.is_empty() {
                return seen;
            }
            for m in batch {
                seen.push(m.id.clone());
                m.ack().await.unwrap();
            }
        }
    };
    let (x, y) = tokio::join!(consume(a), consume(b));
    let all: Vec<String> = x.into_iter().chain(y).collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an event went to two members of one group");
    assert_eq!(all.len(), 100);
}

pub async fn a_new_group_replays_history_from_the_beginning(h: &dyn StreamHarness) {
    let stream = h.open(&unique("replay")).await;
    publish_all(&*stream, 0..10).await;
    let late = stream.subscribe("late-reader", StartAt::Beginning, options()).await.unwrap();
    assert_eq!(late.pending().await.unwrap(), 10);
    publish_all(&*stream, 10..15).await;
    assert_eq!(drain(&*late, 15).await, ids(0..15));
}

pub async fn a_group_starting_at_new_skips_history(h: &dyn StreamHarness) {
    let stream = h.open(&unique("new")).await;
    publish_all(&*stream, 0..5).await;
    let live = stream.subscribe("live", StartAt::New, options()).await.unwrap();
    publish_all(&*stream, 5..8).await;
    assert_eq!(drain(&*live, 3).await, ids(5..8));
    assert!(live.receive(10, SHORT).await.unwrap().is_empty());
}

pub async fn a_group_keeps_its_position_across_reopening(h: &dyn StreamHarness) {
    let name = unique("position");
    {
        let stream = h.open(&name).await;
        let group = stream.subscribe("reader", StartAt::Beginning, options()).await.unwrap();
        publish_all(&*stream, 0..6).await;
        assert_eq!(drain(&*group, 3).await, ids(0..3));
    }
    let stream = h.open(&name).await;
    // Joining again with a different start does not move an existing group.
    let group = stream.subscribe("reader", StartAt::New, options()).await.unwrap();
    assert_eq!(drain(&*group, 3).await, ids(3..6));
}

pub async fn unacked_events_come_back_after_the_lease(h: &dyn StreamHarness) {
    let stream = h.open(&unique("lease")).await;
    let short_lease = QueueOptions { ack_wait: Duration::from_millis(300), ..options() };
    let group = stream.subscribe("crashy", StartAt::Beginning, short_lease).await.unwrap();
    publish_all(&*stream, 0..1).await;
    let first = group.receive(1, LONG).await.unwrap().pop().expect("delivered");
    assert_eq!(first.attempt, 1);
    drop(first); // the member crashed
    let again = group.receive(1, LONG).await.unwrap().pop().expect("redelivered after the lease");
    assert_eq!((again.id.as_str(), again.attempt), ("e0", 2));
    again.ack().await.unwrap();
}

pub async fn retried_events_are_dead_lettered_after_max_attempts(h: &dyn StreamHarness) {
    let stream = h.open(&unique("dead")).await;
    let group =
        stream.subscribe("strict", StartAt::Beginning, QueueOptions { max_attempts: 2, ..options() }).await.unwrap();
    publish_all(&*stream, 0..1).await;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let m = group.receive(1, LONG).await.unwrap().pop().expect("delivered");
        outcomes.push(m.retry_after(Duration::ZERO, "cannot apply").await.unwrap());
    }
    assert_eq!(outcomes, [Retried::Scheduled, Retried::DeadLettered]);
    let dead = group.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("e0", 2));
    assert!(dead[0].last_error.contains("cannot apply"));
    // Another group is not affected.
    let other = stream.subscribe("lenient", StartAt::Beginning, options()).await.unwrap();
    assert_eq!(drain(&*other, 1).await, ids(0..1));
}

pub async fn duplicate_event_ids_are_stored_once(h: &dyn StreamHarness) {
    let stream = h.open(&unique("dedup")).await;
    let group = stream.subscribe("reader", StartAt::Beginning, options()).await.unwrap();
    assert_eq!(stream.publish(event("e0")).await.unwrap(), Published::Stored);
    assert_eq!(stream.publish(event("e0")).await.unwrap(), Published::Duplicate);
    assert_eq!(drain(&*group, 2).await, ids(0..1));
}

pub async fn a_batch_is_stored_in_order_and_its_duplicates_are_told(h: &dyn StreamHarness) {
    let stream = h.open(&unique("batch")).await;
    let group = stream.subscribe("reader", StartAt::Beginning, options()).await.unwrap();
    let batch = |range: std::ops::Range<usize>| ids(range).iter().map(|id| event(id)).collect::<Vec<_>>();
    assert_eq!(stream.publish_all(batch(0..3)).await.unwrap(), vec![Published::Stored; 3]);
    assert_eq!(stream.publish_all(Vec::new()).await.unwrap(), Vec::new());
    // A batch published again after a failure part way: what was stored is a duplicate.
    assert_eq!(
        stream.publish_all(batch(2..5)).await.unwrap(),
        vec![Published::Duplicate, Published::Stored, Published::Stored]
    );
    assert_eq!(drain(&*group, 6).await, ids(0..5));
}

pub async fn receive_wakes_when_an_event_is_published(h: &dyn StreamHarness) {
    let stream = h.open(&unique("wake")).await;
    let slow_poll = QueueOptions { poll_interval: Duration::from_secs(2), ..QueueOptions::default() };
    let group = stream.subscribe("reader", StartAt::Beginning, slow_poll).await.unwrap();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let got = group.receive(1, Duration::from_secs(10)).await.unwrap();
        (got.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.publish(event("e0")).await.unwrap();
    let (count, waited) = waiter.await.unwrap();
    assert_eq!(count, 1);
    assert!(waited < Duration::from_secs(2), "the member slept through the publish: {waited:?}");
}
