//! The log channel: one structured line per notification, addresses redacted.

use async_trait::async_trait;

use super::model::Notification;
use super::notifier::{Notifier, SendError};
use super::redact;

/// Writes the notification as a structured log line (target `notifications`). Never fails: a
/// log line that cannot be written is the logger's problem, not a reason to retry the event.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn deliver(&self, notification: &Notification) -> Result<(), SendError> {
        tracing::info!(
            target: "notifications",
            service = crate::SERVICE,
            notification_id = %notification.id,
            delivery_id = %notification.delivery_id,
            event_type = notification.event.event_type(),
            reason = notification.event.reason().unwrap_or(""),
            recipients = %redacted_recipients(notification),
            text = %notification.text,
            "delivery finished; notifying who asked",
        );
        Ok(())
    }
}

/// `email:p***@contoso.com, sms:***00`, or the redacted recipient of a personal notification.
pub fn redacted_recipients(notification: &Notification) -> String {
    if notification.recipients.is_empty() {
        return redact::address(notification.channel, &notification.recipient);
    }
    notification
        .recipients
        .iter()
        .map(|r| format!("{}:{}", r.channel.as_str(), redact::address(r.channel, &r.address)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::notifications::model::{Channel, Finish, Recipient};

    fn notification(recipients: Vec<Recipient>) -> Notification {
        Notification {
            id: "d1:DeliveryCompleted:log:0".into(),
            delivery_id: "d1".into(),
            event: Finish::Completed,
            finished_at: Utc::now(),
            channel: Channel::Log,
            recipient: "log".into(),
            text: "Fabrikam: your delivery d1 has arrived.".into(),
            recipients,
        }
    }

    #[tokio::test]
    async fn the_log_line_names_recipients_redacted() {
        let everyone = vec![
            Recipient { channel: Channel::Email, address: "pat.smith@contoso.com".into() },
            Recipient { channel: Channel::Sms, address: "+14255550100".into() },
        ];
        let shown = redacted_recipients(&notification(everyone.clone()));
        assert_eq!(shown, "email:p***@contoso.com, sms:***00");
        assert!(!shown.contains("pat.smith") && !shown.contains("5550100"));
        let personal = Notification {
            channel: Channel::Email,
            recipient: "pat.smith@contoso.com".into(),
            ..notification(Vec::new())
        };
        assert_eq!(redacted_recipients(&personal), "p***@contoso.com");
        assert_eq!(LogNotifier.deliver(&notification(everyone)).await, Ok(()));
    }
}
