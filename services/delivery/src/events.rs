//! Publishing to `delivery-events`: one function per kind of event, called after the change it
//! reports was stored.
//!
//! At least once, without an outbox: a caller publishes after every successful change, *also*
//! when the store says the change had already been applied, and fails (HTTP 503, or the drone
//! event is not acked) when publishing fails. The idempotent call is then retried, finds the
//! change applied, and publishes again; the stream's de-duplication by message id absorbs the
//! copies. For that the message ids name the fact, not the attempt:
//!
//! | event | message id |
//! |---|---|
//! | `DeliveryCreated` | `{id}:DeliveryCreated`, then `{id}:DeliveryCreated:{i}` |
//! | `DeliveryRescheduled` | `{id}:DeliveryRescheduled:{n}`, `n` = the delivery's `Rescheduled` tracking events |
//! | `DeliveryCompleted`, `DeliveryCancelled`, `DeliveryFailed` | `{id}:{type}`, then `{id}:{type}:{i}` |
//!
//! `i` is the delivery's incarnation ([`incarnation`]): a failed delivery put again is reopened,
//! and what happens to it from then on (created again, failed again, completed) is a new fact
//! that must not be taken for a copy of the first incarnation's. The first keeps the plain ids.
//!
//! A delivery can be rescheduled any number of times, so each reschedule gets its own id by its
//! position in the history. Each PATCH adds a `Rescheduled` event (a reschedule is not
//! idempotent in the store), so a PATCH retried after its publish failed is the next reschedule
//! and publishes under the next `n`; the earlier `n` is then never published, which loses
//! nothing, since every `DeliveryRescheduled` carries the whole delivery as it is.
//!
//! Every body is read back from the store rather than taken from the request, so a re-publish
//! says the same as the first publish, and a finished event carries the stored tracking events
//! and confirmation.

use chrono::{DateTime, Utc};
use contracts::DeliveryStage;
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent};
use contracts::events::{DeliveryEvent, EventEnvelope, FinishedDelivery};
use platform::Problem;
use platform::bus::stream::EventStream;
use platform::bus::{BusError, OutgoingMessage, Published};
use platform::telemetry::spans;
use tracing::Instrument;

use crate::store::{DeliveryStore, StoreError};

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Reading what to publish failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing to the event stream: {0}")]
    Bus(#[from] BusError),
    #[error("cannot encode an event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A stream that cannot take the event is a dependency down: 503 with a retry hint, so the
/// caller retries its idempotent call (which publishes again).
impl From<PublishError> for Problem {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::Store(e) => e.into(),
            PublishError::Bus(e) => {
                tracing::warn!(error = %e, "publishing a delivery event failed");
                Problem::unavailable("the event stream is unavailable; the change is saved, try again", 1)
            }
            PublishError::Encode(e) => Problem::internal(e),
        }
    }
}

/// `DeliveryCreated`, with the delivery as stored, for its `incarnation`.
pub async fn created(
    stream: &dyn EventStream,
    delivery: &Delivery,
    incarnation: usize,
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    let id = &delivery.id;
    let message_id = fact_id(id, "DeliveryCreated", incarnation);
    publish(stream, id, message_id, now, DeliveryEvent::DeliveryCreated(delivery.clone())).await?;
    Ok(())
}

/// `DeliveryRescheduled` for the latest reschedule of `id`; nothing when the delivery is gone.
pub async fn rescheduled(
    stream: &dyn EventStream,
    store: &dyn DeliveryStore,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    // The count first, then the body: the body is then at least as new as the reschedule the
    // count names, so whichever copy of an id the stream keeps is not older than that reschedule.
    let n = reschedules(&store.tracking(id).await?);
    let Some(delivery) = store.get(id).await? else { return Ok(()) };
    let message_id = format!("{id}:DeliveryRescheduled:{n}");
    publish(stream, id, message_id, now, DeliveryEvent::DeliveryRescheduled(delivery)).await?;
    Ok(())
}

/// `DeliveryCompleted`, `DeliveryCancelled` or `DeliveryFailed`, by the stage `id` is in, with
/// its tracking events and confirmation; nothing when it is not finished (or gone).
pub async fn finished(
    stream: &dyn EventStream,
    store: &dyn DeliveryStore,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    let Some(delivery) = store.get(id).await? else { return Ok(()) };
    let confirmation = match delivery.stage {
        Some(DeliveryStage::Completed) => store.confirmation(id).await?,
        _ => None,
    };
    let tracking = store.tracking(id).await?;
    let incarnation = incarnation(&tracking);
    let Some((event, finished_at)) = finished_event(delivery, tracking, confirmation, now) else { return Ok(()) };
    let counter = match &event {
        DeliveryEvent::DeliveryCompleted(_) => "deliveries_completed_total",
        DeliveryEvent::DeliveryCancelled(_) => "deliveries_cancelled_total",
        _ => "deliveries_failed_total",
    };
    // The stream keeps one finished event per delivery (per incarnation), so counting what it
    // stored counts each delivery once, however often a retried request or message publishes it.
    if publish(stream, id, fact_id(id, event.kind(), incarnation), finished_at, event).await? == Published::Stored {
        metrics::counter!(counter, "service" => crate::SERVICE).increment(1);
    }
    Ok(())
}

/// How many times the delivery was reopened: a reopen starts its history again with a `Created`
/// tracking event, stored with the record in the same change, so the number is part of the
/// delivery record and every reader (and every re-publish) sees the same one.
pub fn incarnation(tracking: &[DeliveryTrackingEvent]) -> usize {
    tracking.iter().filter(|e| e.stage == DeliveryStage::Created).count().saturating_sub(1)
}

/// The message id of a fact of `kind` that happens once per incarnation of delivery `id`.
pub fn fact_id(id: &str, kind: &str, incarnation: usize) -> String {
    match incarnation {
        0 => format!("{id}:{kind}"),
        i => format!("{id}:{kind}:{i}"),
    }
}

/// The finished event of a delivery in a final stage, and when it finished (its final-stage
/// event's time, so every re-publish says the same; `now` if that event is missing).
pub fn finished_event(
    delivery: Delivery,
    tracking: Vec<DeliveryTrackingEvent>,
    confirmation: Option<Confirmation>,
    now: DateTime<Utc>,
) -> Option<(DeliveryEvent, DateTime<Utc>)> {
    let stage = delivery.stage?;
    let finished_at = tracking.iter().rev().find(|e| e.stage == stage).map_or(now, |e| e.at);
    let finished = FinishedDelivery { delivery, tracking, confirmation, finished_at };
    let event = match stage {
        DeliveryStage::Completed => DeliveryEvent::DeliveryCompleted(finished),
        DeliveryStage::Cancelled => DeliveryEvent::DeliveryCancelled(finished),
        DeliveryStage::Failed => DeliveryEvent::DeliveryFailed(finished),
        _ => return None,
    };
    Some((event, finished_at))
}

/// How many times the delivery was rescheduled: the `n` of its latest reschedule's message id.
pub fn reschedules(tracking: &[DeliveryTrackingEvent]) -> usize {
    tracking.iter().filter(|e| e.stage == DeliveryStage::Rescheduled).count()
}

async fn publish(
    stream: &dyn EventStream,
    delivery_id: &str,
    message_id: String,
    occurred_at: DateTime<Utc>,
    event: DeliveryEvent,
) -> Result<Published, PublishError> {
    let kind = event.kind();
    let span = spans::message_publish(crate::SERVICE, stream.system(), stream.name(), &message_id, delivery_id);
    async {
        let envelope = EventEnvelope {
            message_id: message_id.clone(),
            delivery_id: delivery_id.to_owned(),
            occurred_at,
            // The consumers' spans continue this one: the event is part of the trace of the
            // request or drone event that produced it.
            traceparent: platform::telemetry::current_traceparent(),
            event,
        };
        let payload = serde_json::to_vec(&envelope)?;
        let published = stream.publish(OutgoingMessage { id: message_id, payload: payload.into() }).await?;
        tracing::debug!(event = kind, ?published, "delivery event published");
        Ok::<_, PublishError>(published)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use contracts::{ConfirmationType, Location, UserAccount};

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, minute, 0).unwrap()
    }

    fn delivery(stage: DeliveryStage) -> Delivery {
        Delivery {
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
        }
    }

    fn event(stage: DeliveryStage, minute: u32) -> DeliveryTrackingEvent {
        DeliveryTrackingEvent { delivery_id: "d1".into(), stage, location: None, at: at(minute), reason: None }
    }

    #[test]
    fn a_finished_delivery_is_published_by_its_stage_with_its_history() {
        use DeliveryStage::*;
        let tracking = vec![event(Created, 0), event(HeadedToPickup, 1), event(Completed, 5)];
        let (event_, finished_at) = finished_event(delivery(Completed), tracking.clone(), None, at(9)).unwrap();
        assert_eq!(event_.kind(), "DeliveryCompleted");
        assert_eq!(finished_at, at(5), "when it finished, not when it was published");
        assert_eq!(event_.finished().unwrap().tracking, tracking);
        let (cancelled, _) = finished_event(delivery(Cancelled), vec![event(Cancelled, 2)], None, at(9)).unwrap();
        assert_eq!(cancelled.kind(), "DeliveryCancelled");
        let (failed, when) = finished_event(delivery(Failed), vec![], None, at(9)).unwrap();
        assert_eq!((failed.kind(), when), ("DeliveryFailed", at(9)));
        for stage in [Created, Rescheduled, HeadedToPickup, HeadedToDropoff] {
            assert!(finished_event(delivery(stage), vec![], None, at(9)).is_none(), "{stage}");
        }
    }

    #[test]
    fn each_reopen_is_a_new_incarnation_with_ids_of_its_own() {
        use DeliveryStage::*;
        assert_eq!(incarnation(&[]), 0);
        assert_eq!(incarnation(&[event(Created, 0), event(HeadedToPickup, 1), event(Failed, 2)]), 0);
        let reopened = [event(Created, 0), event(Failed, 2), event(Created, 3), event(Rescheduled, 4)];
        assert_eq!(incarnation(&reopened), 1);
        let twice = [event(Created, 0), event(Failed, 2), event(Created, 3), event(Failed, 4), event(Created, 5)];
        assert_eq!(incarnation(&twice), 2);
        assert_eq!(fact_id("d1", "DeliveryFailed", 0), "d1:DeliveryFailed", "the first keeps the plain id");
        assert_eq!(fact_id("d1", "DeliveryFailed", 1), "d1:DeliveryFailed:1");
        assert_ne!(fact_id("d1", "DeliveryCompleted", 2), fact_id("d1", "DeliveryCompleted", 1));
    }

    #[test]
    fn each_reschedule_has_its_number() {
        use DeliveryStage::*;
        assert_eq!(reschedules(&[event(Created, 0)]), 0);
        assert_eq!(reschedules(&[event(Created, 0), event(Rescheduled, 1), event(HeadedToPickup, 2)]), 1);
        assert_eq!(reschedules(&[event(Created, 0), event(Rescheduled, 1), event(Rescheduled, 3)]), 2);
    }
}
