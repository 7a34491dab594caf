//! Notifications of notify-me requests (issue 6): when a delivery finishes (completed,
//! cancelled or failed), everyone who asked through `POST /api/deliveries/{id}/notifymerequests`
//! is told, through a [`Notifier`] port with one implementation per kind of channel:
//!
//! | channel | notifier | what it does |
//! |---|---|---|
//! | email, sms | [`RecordingNotifier`] | **records** what would be sent: no mail server or SMS gateway exists here, so this stands in for one behind the same port |
//! | webhook | [`WebhookNotifier`] | one JSON `POST` per finished delivery to `--webhook-url` (when set), naming every recipient, with `Idempotency-Key` = the notification id |
//! | log | [`LogNotifier`] | one structured log line per finished delivery, addresses redacted |
//!
//! A [`Notification`]'s id is `{deliveryId}:{eventType}:{channel}:{n}`, stable across
//! redeliveries of the event ([`model::notification_id`]). A finished delivery nobody asked
//! about sends nothing; one with requests sends one email per distinct address, one SMS per
//! distinct number, one webhook call (when configured) and one log line. What was sent, refused
//! or is still pending is listed by the internal route `GET /api/deliveries/{id}/notifications`,
//! and counted by `delivery_notifications_total{channel, outcome}` (`sent`, `retried`, `failed`:
//! refused for good, `expired`: given up as too late, `duplicate`: settled before).
//!
//! The [`dispatcher`] reads `delivery-events` in its own consumer group (`--notifications-group`,
//! default [`DEFAULT_GROUP`]) from the beginning of the stream, so finishes published before it
//! first ran are not missed (and those older than [`NotificationOptions::max_age`] are not sent
//! late).
//!
//! # Each notification once
//!
//! The delivery store holds an outbox record per notification id ([`outbox::send_once`]):
//! created `pending` before the first try, read before every try, and marked `sent` (or
//! `failed`: refused for good, or too late) after it; each try's error and count are kept. The
//! event is acked only once every notification it calls for is settled; until then it stays
//! un-acked in the stream and comes back with backoff, so the stream is the outbox's durable
//! trigger: nothing is lost when the process dies, and nothing settled is sent again.
//!
//! One window remains: a crash (or a store failure) after the channel took a notification and
//! before it was marked sent. The redelivered event then sends it again, with the same id. The
//! webhook carries that id as `Idempotency-Key`, so a receiver that remembers the keys it
//! processed (as webhook receivers are expected to) drops the repeat: effectively once. The same
//! holds when two copies of an event are handled at the same moment (two processes, or the
//! event published again under another message id). The recorded channels have no receiver to
//! repeat to. The log channel may print a line twice in that window; it is a log.

pub mod dispatcher;
pub mod log;
pub mod model;
pub mod notifier;
pub mod outbox;
pub mod recording;
pub mod redact;
pub mod webhook;

use std::sync::Arc;

use platform::bus::stream::{EventStream, StartAt, Subscription};
use platform::bus::{BusError, QueueOptions};

pub use dispatcher::{NotificationOptions, run};
pub use log::LogNotifier;
pub use model::{Channel, Finish, Notification, NotificationRecord, NotificationStatus, Outcome};
pub use notifier::{Notifier, Notifiers, SendError, WebhookTarget};
pub use recording::RecordingNotifier;
pub use webhook::WebhookNotifier;

/// The consumer group's default name.
pub const DEFAULT_GROUP: &str = "notifications";

/// The group's queue settings. Attempts are only a safety net: a notification that cannot be
/// sent is given up by [`NotificationOptions::max_age`], and a store that is down for hours
/// must not push events into the dead letters.
pub fn queue_options() -> QueueOptions {
    QueueOptions { max_attempts: 10_000, ..QueueOptions::default() }
}

/// Joins consumer group `group` of `delivery-events`. A new group starts at the beginning of the
/// stream: finishes published before the dispatcher first ran still get their notifications.
pub async fn subscribe(stream: &dyn EventStream, group: &str) -> Result<Arc<dyn Subscription>, BusError> {
    stream.subscribe(group, StartAt::Beginning, queue_options()).await
}
