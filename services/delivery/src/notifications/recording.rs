//! The email and SMS channels, recorded instead of sent.
//!
//! **There is no mail server and no SMS gateway in this system**, and none is pretended: this
//! notifier stands in for both behind the same [`Notifier`] port. It takes every notification
//! at once and sends nothing anywhere. What would have been sent is recorded in the delivery
//! store: the outbox record the dispatcher wrote before handing the notification over (channel,
//! recipient, text) is marked `sent` with its time once this returns, and
//! `GET /api/deliveries/{id}/notifications` lists it. That record *is* the recording; a second
//! copy would only say the same thing twice.
//!
//! Sending for real means another notifier for [`Channel::Email`](super::model::Channel) or
//! [`Channel::Sms`](super::model::Channel) in [`super::Notifiers`] (an SMTP relay, a provider's
//! API, passing [`Notification::id`] as its idempotency key); nothing else changes.

use async_trait::async_trait;

use super::model::Notification;
use super::notifier::{Notifier, SendError};
use super::redact;

/// Accepts email and SMS notifications without sending them; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingNotifier;

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn deliver(&self, notification: &Notification) -> Result<(), SendError> {
        tracing::debug!(
            service = crate::SERVICE,
            notification_id = %notification.id,
            channel = notification.channel.as_str(),
            recipient = %redact::address(notification.channel, &notification.recipient),
            "recorded, not sent: no mail or SMS server is configured"
        );
        Ok(())
    }
}
