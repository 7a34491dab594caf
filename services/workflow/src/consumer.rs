//! Drains the `delivery-requests` queue with bounded concurrency: many messages at once, one
//! at a time per delivery, each settled (ack, retry later, dead-letter) by its outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::messages::{DELIVERY_REQUESTS_QUEUE, DeliveryCommand, DeliveryRequestEnvelope};
use platform::backoff::Backoff;
use platform::bus::consume;
use platform::bus::meter::BusMeter;
use platform::bus::{Queue, ReceivedMessage, Retried};
use platform::telemetry::spans::{self, MessageOrigin};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::Instrument;

use crate::domain::{self, Settle};
use crate::keyed_lock::KeyedLocks;
use crate::processor::Processor;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Messages processed at once.
    pub concurrency: usize,
    /// How often to tell the queue a long message is still being worked on.
    pub heartbeat: Duration,
    pub backoff: Backoff,
    /// How long to let in-flight messages finish on shutdown before leaving them to redelivery.
    pub drain: Duration,
}

/// Runs until `shutdown`; in-flight messages get `drain` to finish, the rest are redelivered later.
pub async fn run(queue: Arc<dyn Queue>, processor: Processor, options: ConsumerOptions, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tasks = TaskTracker::new();
    let locks = KeyedLocks::default();
    tracing::info!(service = crate::SERVICE, concurrency = options.concurrency, queue = queue.name(), "consuming");
    let meter = BusMeter::for_queue(queue.name());
    let _backlog = AbortOnDropHandle::new(tokio::spawn(consume::track_backlog(
        queue.clone(),
        meter.clone(),
        consume::BACKLOG_EVERY,
    )));
    loop {
        if let Some(open_for) = processor.downstreams.open_for() {
            // A downstream's breaker is open: messages taken now would only fail and use up
            // attempts, so leave them queued until it lets a probe through.
            metrics::counter!("workflow_consumer_paused_total", "service" => crate::SERVICE).increment(1);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(open_for.min(Duration::from_secs(1))) => continue,
            }
        }
        let first_slot = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let free = slots.available_permits() + 1;
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = queue.receive(free, Duration::from_secs(1)) => batch,
        };
        let messages = match batch {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %err, "receiving from the queue failed; backing off");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut first_slot = Some(first_slot);
        for message in messages {
            let permit = match first_slot.take() {
                Some(permit) => permit,
                None => slots.clone().acquire_owned().await.expect("semaphore is never closed"),
            };
            let message = meter.received(message);
            let processor = processor.clone();
            let locks = locks.clone();
            let options = options.clone();
            tasks.spawn(async move {
                handle(message, &processor, &locks, &options).await;
                drop(permit);
            });
        }
    }
    tasks.close();
    if tokio::time::timeout(options.drain, tasks.wait()).await.is_err() {
        tracing::warn!("in-flight messages did not finish in time; they will be redelivered");
    }
}

async fn handle(message: ReceivedMessage, processor: &Processor, locks: &KeyedLocks, options: &ConsumerOptions) {
    let envelope: DeliveryRequestEnvelope = match serde_json::from_slice(&message.payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            let reason = format!("unreadable message: {err}");
            tracing::error!(message_id = %message.id, %reason, "dead-lettering");
            record("unknown", "dead_lettered");
            if let Err(err) = message.dead_letter(&reason).await {
                tracing::warn!(error = %err, "dead-lettering failed; the message will come back");
            }
            return;
        }
    };
    let kind = envelope.command.kind();
    let origin = MessageOrigin {
        system: message.system(),
        destination: DELIVERY_REQUESTS_QUEUE,
        traceparent: envelope.traceparent.as_deref(),
    };
    let span = spans::message_process(crate::SERVICE, origin, &message.id, message.attempt, &envelope.delivery_id);
    if let DeliveryCommand::Delivery(request) = &envelope.command {
        span.record("owner.id", request.owner_id.as_str());
    }
    async {
        let lateness = (chrono::Utc::now() - message.enqueued_at).to_std().unwrap_or_default();
        metrics::histogram!("workflow_message_lateness_seconds", "type" => kind).record(lateness.as_secs_f64());
        let _one_at_a_time = locks.lock(&envelope.delivery_id).await;
        let started = Instant::now();
        let result = with_heartbeat(&message, options.heartbeat, processor.process(&envelope, message.attempt)).await;
        metrics::histogram!("workflow_message_duration_seconds", "type" => kind)
            .record(started.elapsed().as_secs_f64());
        let settled = match result {
            Ok(done) => {
                record(kind, done.label());
                message.ack().await
            }
            Err(failure) => match domain::settle_failure(failure, message.attempt, &options.backoff) {
                Settle::RetryAfter(delay, reason) => {
                    tracing::warn!(%reason, delay_ms = delay.as_millis() as u64, "step failed; retrying later");
                    match message.retry_after(delay, &reason).await {
                        Ok(Retried::Scheduled) => {
                            record(kind, "retried");
                            Ok(())
                        }
                        Ok(Retried::DeadLettered) => {
                            tracing::error!(%reason, "attempts used up; dead-lettered");
                            record(kind, "dead_lettered");
                            Ok(())
                        }
                        Err(err) => Err(err),
                    }
                }
                Settle::DeadLetter(reason) => {
                    tracing::error!(%reason, "step cannot succeed; dead-lettered");
                    record(kind, "dead_lettered");
                    message.dead_letter(&reason).await
                }
            },
        };
        if let Err(err) = settled {
            tracing::warn!(error = %err, "settling the message failed; it will be redelivered");
        }
    }
    .instrument(span)
    .await;
}

/// Runs `work`, extending the message's lease every `every` so slow work is not redelivered.
async fn with_heartbeat<T>(message: &ReceivedMessage, every: Duration, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticks.tick() => {
                if let Err(err) = message.in_progress().await {
                    tracing::warn!(error = %err, "could not extend the message lease");
                }
            }
        }
    }
}

fn record(kind: &'static str, outcome: &'static str) {
    metrics::counter!("workflow_messages_total", "service" => crate::SERVICE, "type" => kind, "outcome" => outcome)
        .increment(1);
}
