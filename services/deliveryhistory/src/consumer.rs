//! Feeds the history from `delivery-events`: a finish is recorded, then acked; any other event
//! is acked and ignored; an event that cannot be read or filed goes to the dead letters with
//! the reason; a store failure sends the event back to the stream to be retried after a backoff.
//! Several events are handled at once: the store's winner rule makes their order irrelevant.

use std::sync::Arc;
use std::time::Duration;

use contracts::events::{DELIVERY_EVENTS_STREAM, DeliveryEvent, EventEnvelope};
use platform::backoff::Backoff;
use platform::bus::consume::ConsumeOptions;
use platform::bus::stream::Subscription;
use platform::bus::{BusError, ReceivedMessage, Retried};
use platform::telemetry::spans::{self, MessageOrigin};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{self, Handling};
use crate::store::HistoryStore;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Events handled at once.
    pub concurrency: usize,
    /// Delays before an event whose store write failed is tried again (by its attempt), and
    /// between failed receives.
    pub backoff: Backoff,
    /// How long in-flight events may take to finish on shutdown before they are left to
    /// redelivery.
    pub drain: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self { concurrency: 16, backoff: Backoff::default(), drain: Duration::from_secs(20) }
    }
}

/// Runs until `shutdown`, then gives in-flight events `drain` to finish.
pub async fn run(
    subscription: Arc<dyn Subscription>,
    store: Arc<dyn HistoryStore>,
    options: ConsumerOptions,
    shutdown: CancellationToken,
) {
    tracing::info!(service = crate::SERVICE, "consuming delivery events");
    let consume = ConsumeOptions {
        concurrency: options.concurrency,
        backoff: options.backoff,
        drain: options.drain,
        what: "delivery events (history)",
    };
    platform::bus::consume::run(subscription, consume, shutdown, move |message| {
        let store = store.clone();
        let backoff = options.backoff;
        async move { handle(message, &*store, &backoff).await }
    })
    .await;
}

async fn handle(message: ReceivedMessage, store: &dyn HistoryStore, backoff: &Backoff) {
    let envelope: EventEnvelope<DeliveryEvent> = match serde_json::from_slice(&message.payload) {
        Ok(envelope) => envelope,
        Err(err) => return dead_letter(message, "unknown", format!("unreadable event: {err}")).await,
    };
    let kind = envelope.event.kind();
    let origin = MessageOrigin {
        system: message.system(),
        destination: DELIVERY_EVENTS_STREAM,
        traceparent: envelope.traceparent.as_deref(),
    };
    let span = spans::message_process(crate::SERVICE, origin, &message.id, message.attempt, &envelope.delivery_id);
    async {
        match domain::handling(envelope) {
            Handling::Ignore => settled(kind, "ignored", message.ack().await),
            Handling::Reject(reason) => dead_letter(message, kind, reason).await,
            Handling::Record(finished) => match store.record(&finished).await {
                Ok(recorded) => settled(kind, recorded.label(), message.ack().await),
                Err(err) => retry_later(message, kind, &format!("recording failed: {err}"), backoff).await,
            },
        }
    }
    .instrument(span)
    .await;
}

async fn retry_later(message: ReceivedMessage, kind: &'static str, reason: &str, backoff: &Backoff) {
    let delay = backoff.delay(message.attempt);
    tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "retrying the event later");
    match message.retry_after(delay, reason).await {
        Ok(Retried::Scheduled) => count(kind, "retried"),
        Ok(Retried::DeadLettered) => {
            tracing::error!(%reason, "attempts used up; the event went to the dead letters");
            count(kind, "dead_lettered");
        }
        Err(err) => settle_failed(&err),
    }
}

async fn dead_letter(message: ReceivedMessage, kind: &'static str, reason: String) {
    tracing::error!(message_id = %message.id, %reason, "dead-lettering the event");
    settled(kind, "dead_lettered", message.dead_letter(&reason).await);
}

fn settled(kind: &'static str, outcome: &'static str, result: Result<(), BusError>) {
    match result {
        Ok(()) => count(kind, outcome),
        Err(err) => settle_failed(&err),
    }
}

fn settle_failed(err: &BusError) {
    tracing::warn!(error = %err, "settling the event failed; it will be redelivered");
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!(
        "deliveryhistory_events_total",
        "service" => crate::SERVICE,
        "type" => kind,
        "outcome" => outcome
    )
    .increment(1);
}
