//! The receive loop every consumer shares: at most `concurrency` messages in hand, each handled
//! on its own task; receive errors back off; on shutdown the messages in hand get `drain` to
//! finish and the rest are abandoned to redelivery.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::stream::Subscription;
use super::{BusError, Queue, ReceivedMessage};
use crate::backoff::Backoff;

/// Where messages come from: a queue or a stream's consumer group.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError>;
}

#[async_trait::async_trait]
impl Source for Arc<dyn Subscription> {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        Subscription::receive(&**self, max, wait).await
    }
}

#[async_trait::async_trait]
impl Source for Arc<dyn Queue> {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        Queue::receive(&**self, max, wait).await
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
    S: Source,
    H: Fn(ReceivedMessage) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    // A JoinSet, not detached tasks: when this future is dropped (the process stops, a test
    // simulates a crash) the messages in hand stop with it instead of running on unowned.
    let mut tasks = JoinSet::new();
    let mut failed_receives = 0;
    tracing::info!(concurrency = options.concurrency, what = options.what, "consuming");
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
            let work = handle(message);
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

/// A task that panicked lost its message to redelivery (it was never settled); say so.
fn report_panic(joined: Result<(), tokio::task::JoinError>, what: &str) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(error = %err, what, "handling a message panicked; it will be redelivered");
    }
}
