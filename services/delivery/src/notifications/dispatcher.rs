//! Consumes `delivery-events` in its own group and sends the notifications each finished
//! delivery calls for (the rules are [`super::model::plan`]; this module is the I/O around them).
//!
//! Settling an event:
//! - not a finish (created, rescheduled): ack;
//! - every notification it calls for sent, refused for good, too late, or settled before: ack;
//! - a notification failed transiently, or the store failed: retry the event after a backoff
//!   (at least what a receiver's `Retry-After` asked); the notifications already settled are
//!   skipped when it comes back, so the un-acked event is what carries the rest to completion;
//! - unreadable: dead-lettered with the reason.

use std::sync::Arc;
use std::time::Duration;

use contracts::events::{DELIVERY_EVENTS_STREAM, DeliveryEvent, EventEnvelope};
use platform::backoff::Backoff;
use platform::bus::consume::ConsumeOptions;
use platform::bus::stream::Subscription;
use platform::bus::{ReceivedMessage, Retried};
use platform::clock::SharedClock;
use platform::telemetry::spans::{self, MessageOrigin};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::model::{self, Channel, Finish};
use super::notifier::Notifiers;
use super::outbox::{self, Step};
use crate::store::DeliveryStore;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct NotificationOptions {
    /// Events handled at once.
    pub concurrency: usize,
    /// Delays before an event is tried again (by its attempt), and between failed receives.
    pub backoff: Backoff,
    /// A notification not sent this long after its delivery finished is given up (marked
    /// failed); so is one about a delivery that finished longer ago when its event is first read
    /// (a new group replaying old events sends no stale news).
    pub max_age: Duration,
    /// How long in-flight events may take to finish on shutdown; then they are abandoned to
    /// redelivery.
    pub drain: Duration,
}

impl Default for NotificationOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            backoff: Backoff::default(),
            max_age: Duration::from_secs(24 * 3600),
            drain: Duration::from_secs(20),
        }
    }
}

#[derive(Clone)]
struct Context {
    store: Arc<dyn DeliveryStore>,
    notifiers: Notifiers,
    clock: SharedClock,
    options: NotificationOptions,
}

/// Consumes `subscription` (a group of `delivery-events`) until `shutdown`, then gives in-flight
/// events `options.drain` to finish and abandons the rest (they are redelivered).
pub async fn run(
    subscription: Arc<dyn Subscription>,
    store: Arc<dyn DeliveryStore>,
    notifiers: Notifiers,
    clock: SharedClock,
    options: NotificationOptions,
    shutdown: CancellationToken,
) {
    // Install the metrics recorder now (as the router does): counts made before it exists are lost.
    platform::metrics::handle();
    let context = Arc::new(Context { store, notifiers, clock, options });
    tracing::info!(
        service = crate::SERVICE,
        webhook = context.notifiers.webhook_recipient().unwrap_or("none"),
        "sending notifications for finished deliveries"
    );
    let consume = ConsumeOptions {
        concurrency: context.options.concurrency,
        backoff: context.options.backoff,
        drain: context.options.drain,
        what: "delivery events (notifications)",
    };
    platform::bus::consume::run(subscription, consume, shutdown, move |message| {
        let context = context.clone();
        async move { handle(message, &context).await }
    })
    .await;
}

async fn handle(message: ReceivedMessage, context: &Context) {
    let envelope: EventEnvelope<DeliveryEvent> = match serde_json::from_slice(&message.payload) {
        Ok(envelope) => envelope,
        Err(err) => return dead_letter(message, format!("unreadable delivery event: {err}")).await,
    };
    let Some((finish, finished_at)) = Finish::of(&envelope.event) else {
        return settled(message.ack().await);
    };
    let origin = MessageOrigin {
        system: message.system(),
        destination: DELIVERY_EVENTS_STREAM,
        traceparent: envelope.traceparent.as_deref(),
    };
    let span = spans::message_process(crate::SERVICE, origin, &message.id, message.attempt, &envelope.delivery_id);
    async {
        match notify(&envelope.delivery_id, &finish, finished_at, context).await {
            None => settled(message.ack().await),
            Some((reason, retry_after)) => retry(message, context, &reason, retry_after).await,
        }
    }
    .instrument(span)
    .await;
}

/// Sends what the finished delivery calls for; `Some` (why, and how long the receiver asked us
/// to wait) when the event must come back for what is left.
async fn notify(
    delivery_id: &str,
    finish: &Finish,
    finished_at: chrono::DateTime<chrono::Utc>,
    context: &Context,
) -> Option<(String, Option<Duration>)> {
    let requests = match context.store.notify_requests(delivery_id).await {
        Ok(requests) => requests,
        Err(err) => return Some((format!("reading the notify-me requests failed: {err}"), None)),
    };
    let webhook = context.notifiers.webhook_recipient();
    let mut again = None;
    for notification in model::plan(delivery_id, finish, finished_at, &requests, webhook) {
        // The plan holds a webhook notification only when a webhook is configured.
        let Some(notifier) = context.notifiers.for_channel(notification.channel) else { continue };
        let store = &*context.store;
        match outbox::send_once(store, notifier, &notification, &*context.clock, context.options.max_age).await {
            Ok(step) => {
                count(notification.channel, step.label());
                if let Step::Retry { reason, retry_after } = step {
                    again.get_or_insert((reason, retry_after));
                }
            }
            // The store is likely down for the rest too: retry the whole event later.
            Err(err) => return Some((format!("the notification outbox failed: {err}"), None)),
        }
    }
    again
}

async fn retry(message: ReceivedMessage, context: &Context, reason: &str, retry_after: Option<Duration>) {
    let backoff = context.options.backoff;
    let delay = backoff.delay(message.attempt).max(retry_after.unwrap_or_default().min(backoff.max));
    match message.retry_after(delay, reason).await {
        Ok(Retried::Scheduled) => {
            tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, "notifications left to send; retrying later");
        }
        Ok(Retried::DeadLettered) => {
            tracing::error!(%reason, "attempts used up; the event is dead-lettered with notifications unsent");
        }
        Err(err) => settled(Err(err)),
    }
}

async fn dead_letter(message: ReceivedMessage, reason: String) {
    tracing::error!(message_id = %message.id, %reason, "dead-lettering a delivery event");
    settled(message.dead_letter(&reason).await);
}

fn settled(result: Result<(), platform::bus::BusError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "settling a delivery event failed; it will be redelivered");
    }
}

fn count(channel: Channel, outcome: &'static str) {
    metrics::counter!(
        "delivery_notifications_total",
        "service" => crate::SERVICE,
        "channel" => channel.as_str(),
        "outcome" => outcome
    )
    .increment(1);
}
