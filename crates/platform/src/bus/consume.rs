//! The receive loop every consumer shares: at most `concurrency` messages in hand, each handled
//! on its own task; receive errors back off; on shutdown the messages in hand get `drain` to
//! finish and the rest are abandoned to redelivery.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::meter::BusMeter;
use super::stream::Subscription;
use super::{BusError, Queue, ReceivedMessage};
use crate::backoff::Backoff;

/// How often a consumer refreshes its backlog gauge.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Where messages come from: a queue or a stream's consumer group.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError>;
    /// Messages waiting or in flight: a queue's depth, a group's lag.
    async fn backlog(&self) -> Result<u64, BusError>;
    /// The series this source's messages are counted in.
    fn meter(&self) -> BusMeter;
}

#[async_trait::async_trait]
impl Source for Arc<dyn Subscription> {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        Subscription::receive(&**self, max, wait).await
    }
    async fn backlog(&self) -> Result<u64, BusError> {
        self.pending().await
    }
    fn meter(&self) -> BusMeter {
        BusMeter::new(self.stream(), self.group())
    }
}

#[async_trait::async_trait]
impl Source for Arc<dyn Queue> {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        Queue::receive(&**self, max, wait).await
    }
    async fn backlog(&self) -> Result<u64, BusError> {
        self.depth().await
    }
    fn meter(&self) -> BusMeter {
        BusMeter::for_queue(self.name())
    }
}

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Messages handled at once.
    pub concurrency: usize,
    /// Spacing of receives after failed ones.
    pub backoff: Backoff,
    /// How long messages in hand may finish after shutdown.
    pub drain: Duration,
    /// What the consumer reads, for its log lines ("drone events").
    pub what: &'static str,
}

/// Receives until `shutdown`, handing each message to `handle` on its own task.
pub async fn run<S, H, F>(source: S, options: ConsumeOptions, shutdown: CancellationToken, handle: H)
where
    S: Source + Clone + 'static,
    H: Fn(ReceivedMessage) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    // A JoinSet, not detached tasks: when this future is dropped (the process stops, a test
    // simulates a crash) the messages in hand stop with it instead of running on unowned.
    let mut tasks = JoinSet::new();
    let mut failed_receives = 0;
    tracing::info!(concurrency = options.concurrency, what = options.what, "consuming");
    let meter = source.meter();
    let _backlog = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(track_backlog(
        source.clone(),
        meter.clone(),
        BACKLOG_EVERY,
    )));
    loop {
        while let Some(joined) = tasks.try_join_next() {
            report_panic(joined, options.what);
        }
        let first_slot = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        // Ask for as many as there are free slots, so a received message never waits for one.
        let free = slots.available_permits() + 1;
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = source.receive(free, Duration::from_secs(1)) => batch,
        };
        let messages = match batch {
            Ok(messages) => {
                failed_receives = 0;
                messages
            }
            Err(err) => {
                failed_receives += 1;
                let delay = options.backoff.delay(failed_receives);
                tracing::warn!(error = %err, what = options.what, retry_in_ms = delay.as_millis() as u64, "receiving failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let mut first_slot = Some(first_slot);
        for message in messages {
            let permit = match first_slot.take() {
                Some(permit) => permit,
                None => slots.clone().acquire_owned().await.expect("semaphore is never closed"),
            };
            let work = handle(meter.received(message));
            tasks.spawn(async move {
                work.await;
                drop(permit);
            });
        }
    }
    let drained = tokio::time::timeout(options.drain, async {
        while let Some(joined) = tasks.join_next().await {
            report_panic(joined, options.what);
        }
    });
    if drained.await.is_err() {
        tracing::warn!(what = options.what, "messages in hand did not finish in time; they will be redelivered");
        tasks.abort_all();
    }
}

/// Keeps `meter`'s backlog gauge current, every `every`, until dropped. A failed reading leaves
/// the last value: the receive loop already reports the backend being away.
pub async fn track_backlog<S: Source>(source: S, meter: BusMeter, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Ok(backlog) = source.backlog().await {
            meter.backlog(backlog);
        }
    }
}

/// A task that panicked lost its message to redelivery (it was never settled); say so.
fn report_panic(joined: Result<(), tokio::task::JoinError>, what: &str) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(error = %err, what, "handling a message panicked; it will be redelivered");
    }
}
