//! Bus metrics, the same for every backend: the producer side wraps a queue or stream
//! ([`metered_queue`], [`metered_stream`]); the consumer side meters each message as the
//! receive loop takes it ([`BusMeter::received`]) and counts how it was settled.
//!
//! Labels: `queue` (the queue's or stream's name) and `group` (a stream's consumer group; for a
//! work queue, whose consumers form one group, the queue's name again).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram};

use super::stream::{EventStream, StartAt, Subscription};
use super::{
    BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, Retried, Settlement,
};

/// The consumer side's series for one queue or group.
#[derive(Clone)]
pub struct BusMeter {
    series: Arc<Series>,
}

struct Series {
    consumed: Counter,
    redelivered: Counter,
    acked: Counter,
    retried: Counter,
    dead_lettered: Counter,
    lateness: Histogram,
    lag: Gauge,
}

impl BusMeter {
    /// Series labelled `queue`, `group`.
    pub fn new(queue: &str, group: &str) -> Self {
        // Handles taken before the recorder exists would count into nothing.
        crate::metrics::handle();
        let labels = [("queue", queue.to_owned()), ("group", group.to_owned())];
        let series = Series {
            consumed: metrics::counter!("bus_messages_consumed_total", &labels),
            redelivered: metrics::counter!("bus_messages_redelivered_total", &labels),
            acked: metrics::counter!("bus_messages_acked_total", &labels),
            retried: metrics::counter!("bus_messages_retried_total", &labels),
            dead_lettered: metrics::counter!("bus_messages_dead_lettered_total", &labels),
            lateness: metrics::histogram!("bus_message_lateness_seconds", &labels),
            lag: metrics::gauge!("bus_consumer_lag_messages", &labels),
        };
        Self { series: Arc::new(series) }
    }

    /// The meter of a work queue's consumers.
    pub fn for_queue(queue: &str) -> Self {
        Self::new(queue, queue)
    }

    /// Counts `message` as consumed (and redelivered past its first attempt), records how late
    /// it is, and returns it with its settlement counted.
    pub fn received(&self, message: ReceivedMessage) -> ReceivedMessage {
        let series = &self.series;
        series.consumed.increment(1);
        if message.attempt > 1 {
            series.redelivered.increment(1);
        }
        let late = (chrono::Utc::now() - message.enqueued_at).to_std().unwrap_or_default();
        series.lateness.record(late.as_secs_f64());
        let inner = message.settlement;
        ReceivedMessage { settlement: Box::new(Counted { inner, series: self.series.clone() }), ..message }
    }

    /// Sets the backlog gauge: messages waiting or in flight.
    pub fn backlog(&self, messages: u64) {
        self.series.lag.set(messages as f64);
    }
}

/// A settlement that counts what it did once the backend confirmed it.
struct Counted {
    inner: Box<dyn Settlement>,
    series: Arc<Series>,
}

#[async_trait]
impl Settlement for Counted {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let series = self.series;
        self.inner.ack().await.inspect(|()| series.acked.increment(1))
    }

    async fn retry_after(self: Box<Self>, delay: Duration, error: &str) -> Result<Retried, BusError> {
        let series = self.series;
        self.inner.retry_after(delay, error).await.inspect(|retried| match retried {
            Retried::Scheduled => series.retried.increment(1),
            Retried::DeadLettered => series.dead_lettered.increment(1),
        })
    }

    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError> {
        let series = self.series;
        self.inner.dead_letter(error).await.inspect(|()| series.dead_lettered.increment(1))
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.inner.in_progress().await
    }
}

/// The producer side's series for one queue or stream.
struct Publishes {
    stored: Counter,
    duplicate: Counter,
    failed: Counter,
}

impl Publishes {
    fn new(queue: &str) -> Self {
        crate::metrics::handle();
        let series = |outcome: &'static str| metrics::counter!("bus_messages_published_total", "queue" => queue.to_owned(), "outcome" => outcome);
        Self { stored: series("stored"), duplicate: series("duplicate"), failed: series("error") }
    }

    fn count(&self, result: &Result<Published, BusError>) {
        match result {
            Ok(Published::Stored) => self.stored.increment(1),
            Ok(Published::Duplicate) => self.duplicate.increment(1),
            Err(_) => self.failed.increment(1),
        }
    }
}

/// `queue`, counting what is published to it.
pub fn metered_queue(queue: Arc<dyn Queue>) -> Arc<dyn Queue> {
    let publishes = Publishes::new(queue.name());
    Arc::new(MeteredQueue { inner: queue, publishes })
}

/// `stream`, counting what is published to it.
pub fn metered_stream(stream: Arc<dyn EventStream>) -> Arc<dyn EventStream> {
    let publishes = Publishes::new(stream.name());
    Arc::new(MeteredStream { inner: stream, publishes })
}

struct MeteredQueue {
    inner: Arc<dyn Queue>,
    publishes: Publishes,
}

#[async_trait]
impl Queue for MeteredQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn system(&self) -> &'static str {
        self.inner.system()
    }
    async fn publish(&self, message: OutgoingMessage) -> Result<Published, BusError> {
        let result = self.inner.publish(message).await;
        self.publishes.count(&result);
        result
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        self.inner.receive(max, wait).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.dead_letters(limit).await
    }
    async fn find_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, BusError> {
        self.inner.find_dead_letter(id).await
    }
    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        self.inner.replay_dead_letter(id).await
    }
    async fn purge_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        self.inner.purge_dead_letter(id).await
    }
    async fn purge_dead_letters(&self) -> Result<u64, BusError> {
        self.inner.purge_dead_letters().await
    }
    async fn depth(&self) -> Result<u64, BusError> {
        self.inner.depth().await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }
}

struct MeteredStream {
    inner: Arc<dyn EventStream>,
    publishes: Publishes,
}

#[async_trait]
impl EventStream for MeteredStream {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn system(&self) -> &'static str {
        self.inner.system()
    }
    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError> {
        let result = self.inner.publish(event).await;
        self.publishes.count(&result);
        result
    }
    async fn publish_all(&self, events: Vec<OutgoingMessage>) -> Result<Vec<Published>, BusError> {
        let result = self.inner.publish_all(events).await;
        match &result {
            Ok(outcomes) => outcomes.iter().for_each(|outcome| self.publishes.count(&Ok(*outcome))),
            Err(_) => self.publishes.failed.increment(1),
        }
        result
    }
    async fn subscribe(
        &self,
        group: &str,
        start: StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        self.inner.subscribe(group, start, options).await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::SqliteQueue;

    fn message(id: &str) -> OutgoingMessage {
        OutgoingMessage { id: id.to_owned(), payload: bytes::Bytes::from_static(b"{}") }
    }

    #[tokio::test]
    async fn counts_publishes_deliveries_and_settlements() {
        let dir = tempfile::tempdir().unwrap();
        let options = QueueOptions { poll_interval: Duration::from_millis(10), ..QueueOptions::default() };
        let name = "meter-test";
        let queue =
            metered_queue(Arc::new(SqliteQueue::open(&dir.path().join("bus.db"), name, options).await.unwrap()));
        for id in ["m1", "m2", "m1"] {
            queue.publish(message(id)).await.unwrap();
        }
        let meter = BusMeter::for_queue(name);
        let mut first = queue.receive(2, Duration::from_secs(1)).await.unwrap().into_iter();
        meter.received(first.next().unwrap()).ack().await.unwrap();
        let retried = meter.received(first.next().unwrap()).retry_after(Duration::ZERO, "a blip").await.unwrap();
        assert_eq!(retried, Retried::Scheduled);
        let again = queue.receive(1, Duration::from_secs(1)).await.unwrap().pop().unwrap();
        assert_eq!(again.attempt, 2);
        meter.received(again).dead_letter("for good").await.unwrap();
        meter.backlog(queue.depth().await.unwrap());

        let scrape = crate::prom_text::parse(&crate::metrics::render()).unwrap();
        let of = |family: &str| scrape.sum(family, &[("queue", name)]);
        let published = |outcome| scrape.sum("bus_messages_published_total", &[("queue", name), ("outcome", outcome)]);
        assert_eq!((published("stored"), published("duplicate"), published("error")), (2.0, 1.0, 0.0));
        assert_eq!(of("bus_messages_consumed_total"), 3.0);
        assert_eq!(of("bus_messages_redelivered_total"), 1.0);
        assert_eq!(of("bus_messages_acked_total"), 1.0);
        assert_eq!(of("bus_messages_retried_total"), 1.0);
        assert_eq!(of("bus_messages_dead_lettered_total"), 1.0);
        assert_eq!(of("bus_message_lateness_seconds_count"), 3.0);
        assert_eq!(scrape.sum("bus_consumer_lag_messages", &[("queue", name), ("group", name)]), 0.0);
        assert!(scrape.samples.iter().any(|s| s.name == "bus_consumer_lag_messages" && s.labels["queue"] == name));
    }
}
