//! Sending one notification at most once from the system's point of view, through the outbox in
//! the delivery store: record it (pending) unless it is there, skip it when it is already sent
//! or failed, hand it to its notifier, then record how that went.

use std::time::Duration;

use platform::clock::Clock;

use super::model::{self, Notification, NotificationStatus, Outcome};
use super::notifier::{Notifier, SendError};
use super::redact;
use crate::store::{DeliveryStore, StoreError};

/// What [`send_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Handed over and recorded as sent.
    Sent,
    /// Already sent or given up before: nothing done.
    Duplicate,
    /// The channel refused it for good: recorded as failed.
    Rejected,
    /// Too late to send (see [`model::too_late`]): recorded as failed, not tried.
    Expired,
    /// It failed but may pass later: recorded (still pending); the event must come back.
    Retry { reason: String, retry_after: Option<Duration> },
}

impl Step {
    /// The `outcome` label of `delivery_notifications_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Duplicate => "duplicate",
            Self::Rejected => "failed",
            Self::Expired => "expired",
            Self::Retry { .. } => "retried",
        }
    }
}

/// Sends `notification` through `notifier` unless the outbox says it was settled already.
///
/// The record is read (created) before sending and marked after: a crash in between leaves it
/// pending, and the redelivered event sends it again with the same id, which a receiver that
/// de-duplicates (the webhook's `Idempotency-Key`) drops. A store error leaves the record as it
/// was and is returned, so the caller retries the event.
pub async fn send_once(
    store: &dyn DeliveryStore,
    notifier: &dyn Notifier,
    notification: &Notification,
    clock: &dyn Clock,
    max_age: Duration,
) -> Result<Step, StoreError> {
    let record = store.record_notification(notification, clock.now()).await?;
    if record.status != NotificationStatus::Pending {
        return Ok(Step::Duplicate);
    }
    let (id, delivery_id) = (notification.id.as_str(), notification.delivery_id.as_str());
    let recipient = redact::address(notification.channel, &notification.recipient);
    if model::too_late(notification.finished_at, clock.now(), max_age) {
        let mut reason = format!("not sent within {} s of the delivery's end", max_age.as_secs());
        if let Some(last) = &record.last_error {
            reason = format!("{reason}; last error: {last}");
        }
        tracing::warn!(notification_id = id, %recipient, %reason, "giving a notification up");
        store.mark_notification(delivery_id, id, &Outcome::Abandoned(reason), clock.now()).await?;
        return Ok(Step::Expired);
    }
    match notifier.deliver(notification).await {
        Ok(()) => {
            store.mark_notification(delivery_id, id, &Outcome::Sent, clock.now()).await?;
            tracing::info!(notification_id = id, channel = notification.channel.as_str(), %recipient, "notification sent");
            Ok(Step::Sent)
        }
        Err(SendError::Permanent { reason }) => {
            tracing::warn!(notification_id = id, %recipient, %reason, "notification refused; not retried");
            store.mark_notification(delivery_id, id, &Outcome::Rejected(reason), clock.now()).await?;
            Ok(Step::Rejected)
        }
        Err(SendError::Transient { reason, retry_after }) => {
            tracing::warn!(notification_id = id, %recipient, %reason, "notification not sent; will retry");
            store.mark_notification(delivery_id, id, &Outcome::Retry(reason.clone()), clock.now()).await?;
            Ok(Step::Retry { reason, retry_after })
        }
    }
}
