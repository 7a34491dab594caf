//! What a notification is, and which ones a finished delivery calls for. Pure: no I/O.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use contracts::DeliveryStage;
use contracts::delivery::NotifyMeRequest;
use contracts::events::DeliveryEvent;
use serde::{Deserialize, Serialize};

use crate::domain;

/// How a notification travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// To a customer's email address (recorded: there is no mail server here).
    Email,
    /// To a customer's phone (recorded: there is no SMS gateway here).
    Sms,
    /// One POST per finished delivery to the configured URL, naming every recipient.
    Webhook,
    /// One structured log line per finished delivery, addresses redacted.
    Log,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Webhook => "webhook",
            Self::Log => "log",
        }
    }
}

/// How the delivery finished: what the notification tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Finish {
    #[serde(rename = "DeliveryCompleted")]
    Completed,
    #[serde(rename = "DeliveryCancelled")]
    Cancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename = "DeliveryFailed")]
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Finish {
    /// The finish a `delivery-events` event reports, with the reason its tracking gives (a
    /// closure's, a refusal's); `None` for the events of a delivery not finished.
    pub fn of(event: &DeliveryEvent) -> Option<(Self, DateTime<Utc>)> {
        let finished = event.finished()?;
        let reason = domain::status_reason(&finished.tracking);
        let finish = match event {
            DeliveryEvent::DeliveryCompleted(_) => Self::Completed,
            DeliveryEvent::DeliveryCancelled(_) => Self::Cancelled { reason },
            DeliveryEvent::DeliveryFailed(_) => Self::Failed { reason },
            DeliveryEvent::DeliveryCreated(_) | DeliveryEvent::DeliveryRescheduled(_) => return None,
        };
        Some((finish, finished.finished_at))
    }

    /// The `delivery-events` type that reported it.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Completed => "DeliveryCompleted",
            Self::Cancelled { .. } => "DeliveryCancelled",
            Self::Failed { .. } => "DeliveryFailed",
        }
    }

    pub fn stage(&self) -> DeliveryStage {
        match self {
            Self::Completed => DeliveryStage::Completed,
            Self::Cancelled { .. } => DeliveryStage::Cancelled,
            Self::Failed { .. } => DeliveryStage::Failed,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Completed => None,
            Self::Cancelled { reason } | Self::Failed { reason } => reason.as_deref(),
        }
    }
}

/// Someone who asked to be notified, on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub channel: Channel,
    pub address: String,
}

/// One message on one channel about one finished delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `{deliveryId}:{eventType}:{channel}:{n}` ([`notification_id`]): the same for every
    /// redelivery of the event, so the outbox and a webhook receiver recognise a repeat.
    pub id: String,
    pub delivery_id: String,
    pub event: Finish,
    pub finished_at: DateTime<Utc>,
    pub channel: Channel,
    /// The email address, the phone number (E.164), the webhook's URL (without credentials,
    /// query or fragment), or `log`.
    pub recipient: String,
    /// What the customer reads.
    pub text: String,
    /// For the channels that speak for every request (webhook, log): everyone who asked, each
    /// once. Empty on the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<Recipient>,
}

/// `{deliveryId}:{eventType}:{channel}:{n}`. `n` numbers the distinct recipients of a channel in
/// the order they first asked (requests are only ever appended), so it does not change when the
/// event comes again; it is 0 for the webhook and the log (one per event).
pub fn notification_id(delivery_id: &str, finish: &Finish, channel: Channel, n: usize) -> String {
    format!("{delivery_id}:{}:{}:{n}", finish.event_type(), channel.as_str())
}

/// The short text a customer reads. Reasons stay out of it: they are written for operators (a
/// service's rejection, a deadline), and the webhook carries them for whoever wants them.
pub fn text(delivery_id: &str, finish: &Finish) -> String {
    match finish {
        Finish::Completed => format!("Fabrikam: your delivery {delivery_id} has arrived."),
        Finish::Cancelled { .. } => format!("Fabrikam: your delivery {delivery_id} was cancelled."),
        Finish::Failed { .. } => format!("Fabrikam: sorry, your delivery {delivery_id} could not be made."),
    }
}

/// Everyone the requests name, each once per channel, in the order they first asked. Emails
/// compare without regard to case, numbers by their E.164 digits (requests stored before
/// numbers were kept in that form may be spelled differently).
pub fn recipients(requests: &[NotifyMeRequest]) -> Vec<Recipient> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for request in requests {
        let email = request.email_address.as_deref().map(str::trim).filter(|e| !e.is_empty());
        let sms = request.sms.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let candidates = [
            email.map(|e| (Channel::Email, e.to_owned(), e.to_ascii_lowercase())),
            sms.map(|s| {
                let number = domain::e164(s).unwrap_or_else(|| s.to_owned());
                (Channel::Sms, number.clone(), number)
            }),
        ];
        for (channel, address, key) in candidates.into_iter().flatten() {
            if seen.insert((channel, key)) {
                out.push(Recipient { channel, address });
            }
        }
    }
    out
}

/// The notifications a finished delivery calls for, given its notify-me requests: one per
/// distinct email address and phone number, and, when anyone asked, one webhook call (when a
/// webhook is configured; `webhook` is its recipient label) and one log line naming them all.
/// Nobody asked: nothing.
pub fn plan(
    delivery_id: &str,
    finish: &Finish,
    finished_at: DateTime<Utc>,
    requests: &[NotifyMeRequest],
    webhook: Option<&str>,
) -> Vec<Notification> {
    let everyone = recipients(requests);
    if everyone.is_empty() {
        return Vec::new();
    }
    let text = text(delivery_id, finish);
    let notification = |channel, n, recipient: String, recipients: Vec<Recipient>| Notification {
        id: notification_id(delivery_id, finish, channel, n),
        delivery_id: delivery_id.to_owned(),
        event: finish.clone(),
        finished_at,
        channel,
        recipient,
        text: text.clone(),
        recipients,
    };
    let mut planned = Vec::new();
    for channel in [Channel::Email, Channel::Sms] {
        let addresses = everyone.iter().filter(|r| r.channel == channel);
        for (n, r) in addresses.enumerate() {
            planned.push(notification(channel, n, r.address.clone(), Vec::new()));
        }
    }
    if let Some(url) = webhook {
        planned.push(notification(Channel::Webhook, 0, url.to_owned(), everyone.clone()));
    }
    planned.push(notification(Channel::Log, 0, Channel::Log.as_str().to_owned(), everyone));
    planned
}

/// Whether it is too late to send a notification about a delivery that finished at
/// `finished_at`: news older than `max_age` is noise, and a channel down that long is not
/// coming back for it.
pub fn too_late(finished_at: DateTime<Utc>, now: DateTime<Utc>, max_age: std::time::Duration) -> bool {
    let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    now - finished_at > max_age
}

/// Where a notification is in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Not sent yet (never tried, or every try failed transiently).
    Pending,
    /// Sent (for a recorded channel: recorded as sent). Never sent again.
    Sent,
    /// Given up: the channel rejected it, or it could not be sent in time. Never sent again.
    Failed,
}

impl NotificationStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Failed].into_iter().find(|s| s.as_str() == text)
    }
}

/// A notification as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub notification: Notification,
    pub status: NotificationStatus,
    /// Tries at sending it whose result was recorded.
    pub attempts: u32,
    /// Why the latest failed try failed (kept once it is sent, as history).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The result of a try at sending a pending notification, to record in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The channel took it: sent.
    Sent,
    /// It failed but may succeed later: still pending, with the error.
    Retry(String),
    /// The channel refused it for good: failed.
    Rejected(String),
    /// Not tried (it is too late): failed. Not an attempt.
    Abandoned(String),
}

impl Outcome {
    /// The status the notification moves to.
    pub fn status(&self) -> NotificationStatus {
        match self {
            Self::Sent => NotificationStatus::Sent,
            Self::Retry(_) => NotificationStatus::Pending,
            Self::Rejected(_) | Self::Abandoned(_) => NotificationStatus::Failed,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Sent => None,
            Self::Retry(e) | Self::Rejected(e) | Self::Abandoned(e) => Some(e),
        }
    }

    /// Whether it counts as an attempt at sending.
    pub fn is_attempt(&self) -> bool {
        !matches!(self, Self::Abandoned(_))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use contracts::delivery::{Delivery, DeliveryTrackingEvent};
    use contracts::events::FinishedDelivery;
    use contracts::{ConfirmationType, Location, UserAccount};

    use super::*;

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
    }

    fn ask(email: Option<&str>, sms: Option<&str>) -> NotifyMeRequest {
        NotifyMeRequest { email_address: email.map(str::to_owned), sms: sms.map(str::to_owned) }
    }

    fn finished(stage: DeliveryStage, reason: Option<&str>) -> FinishedDelivery {
        let delivery = Delivery {
            id: "d1".into(),
            owner: UserAccount { user_id: "u".into(), account_id: "a".into() },
            pickup: Location::new(47.6, -122.3, 0.0),
            dropoff: Location::new(47.7, -122.3, 0.0),
            deadline: String::new(),
            expedited: false,
            confirmation_required: ConfirmationType::None,
            drone_id: "drone-0001".into(),
            stage: Some(stage),
            pickup_time: None,
            package_id: None,
        };
        let event = |stage, reason: Option<&str>| DeliveryTrackingEvent {
            delivery_id: "d1".into(),
            stage,
            location: None,
            at: noon(),
            reason: reason.map(str::to_owned),
        };
        let tracking = vec![event(DeliveryStage::Created, None), event(stage, reason)];
        FinishedDelivery { delivery, tracking, confirmation: None, finished_at: noon() }
    }

    #[test]
    fn ids_name_the_delivery_the_event_the_channel_and_the_recipient() {
        let failed = Finish::Failed { reason: Some("gave up".into()) };
        assert_eq!(notification_id("d1", &Finish::Completed, Channel::Email, 0), "d1:DeliveryCompleted:email:0");
        assert_eq!(notification_id("d1", &failed, Channel::Sms, 2), "d1:DeliveryFailed:sms:2");
        let cancelled = Finish::Cancelled { reason: None };
        assert_eq!(notification_id("a:b", &cancelled, Channel::Webhook, 0), "a:b:DeliveryCancelled:webhook:0");
    }

    #[test]
    fn the_finish_comes_from_the_event_with_its_reason() {
        use DeliveryEvent::*;
        let (done, at) = Finish::of(&DeliveryCompleted(finished(DeliveryStage::Completed, None))).unwrap();
        assert_eq!((done.clone(), at), (Finish::Completed, noon()));
        assert_eq!(
            (done.event_type(), done.stage(), done.reason()),
            ("DeliveryCompleted", DeliveryStage::Completed, None)
        );
        let (failed, _) = Finish::of(&DeliveryFailed(finished(DeliveryStage::Failed, Some("no drone")))).unwrap();
        assert_eq!(failed, Finish::Failed { reason: Some("no drone".into()) });
        assert_eq!((failed.stage(), failed.reason()), (DeliveryStage::Failed, Some("no drone")));
        let (cancelled, _) = Finish::of(&DeliveryCancelled(finished(DeliveryStage::Cancelled, None))).unwrap();
        assert_eq!(cancelled, Finish::Cancelled { reason: None });
        let live = finished(DeliveryStage::Created, None).delivery;
        assert_eq!(Finish::of(&DeliveryCreated(live.clone())), None);
        assert_eq!(Finish::of(&DeliveryRescheduled(live)), None);
    }

    #[test]
    fn texts_are_short_and_keep_reasons_out() {
        let failed = Finish::Failed { reason: Some("package service answered 422".into()) };
        for finish in [Finish::Completed, Finish::Cancelled { reason: Some("x".into()) }, failed] {
            let text = text("0b9f6a38-8b5f-4c1e-9d55-4f3e0f9c1a2b", &finish);
            assert!(text.contains("0b9f6a38-8b5f-4c1e-9d55-4f3e0f9c1a2b"), "{text}");
            assert!(text.len() <= 160, "fits one SMS: {text}");
            assert!(!text.contains("422") && !text.contains(": x"), "{text}");
        }
        assert_eq!(text("d1", &Finish::Completed), "Fabrikam: your delivery d1 has arrived.");
    }

    #[test]
    fn each_recipient_once_per_channel_in_order_of_asking() {
        let requests = [
            ask(Some("pat@contoso.com"), Some("+1 425-555-0100")),
            ask(Some("PAT@contoso.com"), None),
            ask(None, Some("+14255550100")),
            ask(Some("sam@contoso.com"), Some("+44 20 7946 0958")),
            ask(Some(" "), Some("")),
        ];
        let got = recipients(&requests);
        let got: Vec<(Channel, &str)> = got.iter().map(|r| (r.channel, r.address.as_str())).collect();
        assert_eq!(
            got,
            [
                (Channel::Email, "pat@contoso.com"),
                (Channel::Sms, "+14255550100"),
                (Channel::Email, "sam@contoso.com"),
                (Channel::Sms, "+442079460958"),
            ]
        );
    }

    #[test]
    fn a_plan_has_one_notification_per_address_plus_the_webhook_and_the_log() {
        let requests = [ask(Some("pat@contoso.com"), None), ask(Some("sam@contoso.com"), Some("+14255550100"))];
        let plan = plan("d1", &Finish::Completed, noon(), &requests, Some("https://hooks.example/n"));
        let ids: Vec<&str> = plan.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "d1:DeliveryCompleted:email:0",
                "d1:DeliveryCompleted:email:1",
                "d1:DeliveryCompleted:sms:0",
                "d1:DeliveryCompleted:webhook:0",
                "d1:DeliveryCompleted:log:0",
            ]
        );
        assert_eq!(plan[1].recipient, "sam@contoso.com");
        assert!(plan[1].recipients.is_empty(), "a personal message names only its recipient");
        assert_eq!(plan[3].recipient, "https://hooks.example/n");
        assert_eq!(plan[3].recipients.len(), 3, "the webhook names everyone");
        assert_eq!(plan[4].recipients, plan[3].recipients);
        assert!(plan.iter().all(|n| n.delivery_id == "d1" && n.finished_at == noon() && n.event == Finish::Completed));

        // A request added later numbers after the earlier ones: the ids already used stay.
        let more = [requests[0].clone(), requests[1].clone(), ask(Some("kim@contoso.com"), None)];
        let again = plan_ids(&more, None);
        assert_eq!(
            &again[..3],
            ["d1:DeliveryCompleted:email:0", "d1:DeliveryCompleted:email:1", "d1:DeliveryCompleted:email:2"]
        );
        assert!(!again.iter().any(|id| id.contains("webhook")), "no webhook configured");
        assert!(plan_ids(&[], Some("https://hooks.example/n")).is_empty(), "nobody asked: nothing at all");
    }

    fn plan_ids(requests: &[NotifyMeRequest], webhook: Option<&str>) -> Vec<String> {
        plan("d1", &Finish::Completed, noon(), requests, webhook).into_iter().map(|n| n.id).collect()
    }

    #[test]
    fn notifications_round_trip_as_stored() {
        let requests = [ask(Some("pat@contoso.com"), Some("+14255550100"))];
        let finish = Finish::Failed { reason: Some("gave up".into()) };
        for notification in plan("d1", &finish, noon(), &requests, Some("https://h.example/")) {
            let json = serde_json::to_value(&notification).unwrap();
            assert_eq!(json["event"]["type"], "DeliveryFailed");
            assert_eq!(json["event"]["reason"], "gave up");
            assert_eq!(json["channel"], notification.channel.as_str());
            assert_eq!(serde_json::from_value::<Notification>(json).unwrap(), notification);
        }
    }

    #[test]
    fn too_late_is_past_the_age_limit() {
        let day = std::time::Duration::from_secs(24 * 3600);
        assert!(!too_late(noon(), noon(), day));
        assert!(!too_late(noon(), noon() + chrono::Duration::hours(24), day), "the limit itself is still in time");
        assert!(too_late(noon(), noon() + chrono::Duration::hours(24) + chrono::Duration::milliseconds(1), day));
        assert!(!too_late(noon(), noon() - chrono::Duration::hours(1), day), "a clock behind is in time");
    }

    #[test]
    fn outcomes_say_where_the_notification_goes() {
        assert_eq!(Outcome::Sent.status(), NotificationStatus::Sent);
        assert_eq!(Outcome::Retry("503".into()).status(), NotificationStatus::Pending);
        assert_eq!(Outcome::Rejected("400".into()).status(), NotificationStatus::Failed);
        assert_eq!(Outcome::Abandoned("late".into()).status(), NotificationStatus::Failed);
        assert!(Outcome::Sent.is_attempt() && Outcome::Rejected("x".into()).is_attempt());
        assert!(!Outcome::Abandoned("late".into()).is_attempt());
        assert_eq!(Outcome::Retry("503".into()).error(), Some("503"));
        for status in [NotificationStatus::Pending, NotificationStatus::Sent, NotificationStatus::Failed] {
            assert_eq!(NotificationStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(NotificationStatus::parse("Sent"), None);
    }
}
