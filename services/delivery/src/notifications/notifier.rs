//! The notifier port: one job, hand one [`Notification`] to its channel. Which notifier serves
//! which channel is [`Notifiers`]; whether a notification still needs sending is the outbox's
//! business ([`super::outbox`]), not a notifier's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::log::LogNotifier;
use super::model::{Channel, Notification};
use super::recording::RecordingNotifier;
use super::webhook::WebhookNotifier;

/// Why a notification could not be handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// It may go through later (the receiver is down, slow or busy).
    #[error("{reason}")]
    Transient {
        reason: String,
        /// How long the receiver asked us to wait, if it did.
        retry_after: Option<Duration>,
    },
    /// The receiver refused this notification; sending it again would be refused again.
    #[error("{reason}")]
    Permanent { reason: String },
}

/// Delivers one notification through one channel.
///
/// `Ok` means the channel took it. A notifier may be handed the same notification (same
/// [`Notification::id`]) again after a crash, so a channel that can should pass the id on for
/// the receiver to drop the repeat (the webhook sends it as `Idempotency-Key`).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn deliver(&self, notification: &Notification) -> Result<(), SendError>;
}

/// A webhook notifier and what the outbox records as its recipient.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The URL without credentials, query or fragment.
    pub recipient: String,
    pub notifier: Arc<dyn Notifier>,
}

/// The notifier of each channel.
#[derive(Clone)]
pub struct Notifiers {
    pub email: Arc<dyn Notifier>,
    pub sms: Arc<dyn Notifier>,
    /// `None`: no webhook is configured, and no webhook notifications are planned.
    pub webhook: Option<WebhookTarget>,
    pub log: Arc<dyn Notifier>,
}

impl Notifiers {
    /// The service's channels: email and SMS recorded ([`RecordingNotifier`]: no mail or SMS
    /// server exists here), the log, and `webhook` when one is configured.
    pub fn new(webhook: Option<WebhookNotifier>) -> Self {
        let recording: Arc<dyn Notifier> = Arc::new(RecordingNotifier);
        Self {
            email: recording.clone(),
            sms: recording,
            webhook: webhook.map(|w| WebhookTarget { recipient: w.recipient().to_owned(), notifier: Arc::new(w) }),
            log: Arc::new(LogNotifier),
        }
    }

    /// The notifier of `channel`; `None` for a webhook that is not configured.
    pub fn for_channel(&self, channel: Channel) -> Option<&dyn Notifier> {
        match channel {
            Channel::Email => Some(&*self.email),
            Channel::Sms => Some(&*self.sms),
            Channel::Webhook => self.webhook.as_ref().map(|w| &*w.notifier),
            Channel::Log => Some(&*self.log),
        }
    }

    /// The webhook's recipient label, for planning; `None` when there is no webhook.
    pub fn webhook_recipient(&self) -> Option<&str> {
        self.webhook.as_ref().map(|w| w.recipient.as_str())
    }
}
