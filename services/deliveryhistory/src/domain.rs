//! The history's rules, free of I/O: what the consumer makes of an event, and which of two
//! finishes of one delivery the history keeps.

use contracts::DeliveryStage;
use contracts::events::{DeliveryEvent, EventEnvelope, FinishedDelivery};
use platform::clock::unix_millis;

/// What to do with one event from `delivery-events`.
#[derive(Debug, Clone, PartialEq)]
pub enum Handling {
    /// A finish to record (its stage filled in from the event type when the body left it out).
    Record(Box<FinishedDelivery>),
    /// Not a finish: nothing for the history.
    Ignore,
    /// A finish the history cannot file; the reason goes with it to the dead letters.
    Reject(String),
}

/// Decides what `envelope` means for the history.
pub fn handling(envelope: EventEnvelope<DeliveryEvent>) -> Handling {
    let kind = envelope.event.kind();
    let (stage, mut finished) = match envelope.event {
        DeliveryEvent::DeliveryCompleted(f) => (DeliveryStage::Completed, f),
        DeliveryEvent::DeliveryCancelled(f) => (DeliveryStage::Cancelled, f),
        DeliveryEvent::DeliveryFailed(f) => (DeliveryStage::Failed, f),
        DeliveryEvent::DeliveryCreated(_) | DeliveryEvent::DeliveryRescheduled(_) => return Handling::Ignore,
    };
    let delivery = &mut finished.delivery;
    if delivery.id.trim().is_empty() {
        return Handling::Reject(format!("{kind} carries a delivery without an id"));
    }
    if delivery.id != envelope.delivery_id {
        return Handling::Reject(format!(
            "{kind}: the envelope names delivery {:?} but its body is delivery {:?}",
            envelope.delivery_id, delivery.id
        ));
    }
    // Without an owner it could never be listed.
    if delivery.owner.user_id.trim().is_empty() {
        return Handling::Reject(format!("{kind} carries a delivery without owner.userId"));
    }
    match delivery.stage {
        None => delivery.stage = Some(stage),
        Some(given) if given == stage => {}
        Some(given) => return Handling::Reject(format!("{kind} carries a delivery in stage {given}")),
    }
    Handling::Record(Box::new(finished))
}

/// Breaks ties between finishes recorded in the same millisecond, so that the history ends up
/// the same whatever order a replay delivers them in.
pub fn stage_rank(stage: Option<DeliveryStage>) -> i32 {
    match stage {
        Some(DeliveryStage::Completed) => 3,
        Some(DeliveryStage::Cancelled) => 2,
        Some(DeliveryStage::Failed) => 1,
        _ => 0,
    }
}

/// A finish as the stores keep it: the columns both backends write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFinish {
    pub delivery_id: String,
    pub owner_id: String,
    pub finished_at: i64,
    pub stage_rank: i32,
    /// The finished delivery as JSON, returned verbatim by reads.
    pub document: String,
}

impl StoredFinish {
    pub fn new(finished: &FinishedDelivery) -> Result<Self, serde_json::Error> {
        Ok(Self {
            delivery_id: finished.delivery.id.clone(),
            owner_id: finished.delivery.owner.user_id.clone(),
            finished_at: unix_millis(finished.finished_at),
            stage_rank: stage_rank(finished.delivery.stage),
            document: serde_json::to_string(finished)?,
        })
    }

    /// Whether this finish replaces `stored`: a later finish wins; within one millisecond the
    /// higher stage rank, then the greater document (byte order). The same finish again, or an
    /// older one, changes nothing. The stores apply this rule in SQL, atomically; this is its
    /// statement for tests and readers.
    pub fn supersedes(&self, stored: &StoredFinish) -> bool {
        (self.finished_at, self.stage_rank, self.document.as_bytes())
            > (stored.finished_at, stored.stage_rank, stored.document.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use contracts::delivery::Delivery;
    use contracts::{ConfirmationType, Location, UserAccount};

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn finished(id: &str, stage: Option<DeliveryStage>, finished_at: DateTime<Utc>) -> FinishedDelivery {
        FinishedDelivery {
            delivery: Delivery {
                id: id.to_owned(),
                owner: UserAccount { user_id: "contoso".into(), account_id: "acct".into() },
                pickup: Location::new(47.6, -122.3, 0.0),
                dropoff: Location::new(47.7, -122.3, 0.0),
                deadline: String::new(),
                expedited: false,
                confirmation_required: ConfirmationType::None,
                drone_id: "drone-0001".into(),
                stage,
                pickup_time: None,
                package_id: None,
            },
            tracking: Vec::new(),
            confirmation: None,
            finished_at,
        }
    }

    fn envelope(delivery_id: &str, event: DeliveryEvent) -> EventEnvelope<DeliveryEvent> {
        EventEnvelope {
            message_id: format!("{delivery_id}:{}", event.kind()),
            delivery_id: delivery_id.to_owned(),
            occurred_at: at(0),
            traceparent: None,
            event,
        }
    }

    fn stored(stage: DeliveryStage, ms: i64) -> StoredFinish {
        StoredFinish::new(&finished("d1", Some(stage), at(ms))).unwrap()
    }

    #[test]
    fn finishes_are_recorded_and_other_events_ignored() {
        let done = finished("d1", Some(DeliveryStage::Completed), at(5));
        let handled = handling(envelope("d1", DeliveryEvent::DeliveryCompleted(done.clone())));
        assert_eq!(handled, Handling::Record(Box::new(done)));
        let created = finished("d1", None, at(5)).delivery;
        assert_eq!(handling(envelope("d1", DeliveryEvent::DeliveryCreated(created.clone()))), Handling::Ignore);
        assert_eq!(handling(envelope("d1", DeliveryEvent::DeliveryRescheduled(created))), Handling::Ignore);
    }

    #[test]
    fn a_missing_stage_is_taken_from_the_event_type() {
        let handled = handling(envelope("d1", DeliveryEvent::DeliveryFailed(finished("d1", None, at(5)))));
        let Handling::Record(recorded) = handled else { panic!("{handled:?}") };
        assert_eq!(recorded.delivery.stage, Some(DeliveryStage::Failed));
    }

    #[test]
    fn finishes_that_cannot_be_filed_are_rejected_with_the_reason() {
        let cases = [
            (envelope("d2", DeliveryEvent::DeliveryCompleted(finished("d1", None, at(5)))), "\"d2\""),
            (envelope("", DeliveryEvent::DeliveryCompleted(finished("", None, at(5)))), "without an id"),
            (
                envelope("d1", DeliveryEvent::DeliveryCancelled(finished("d1", Some(DeliveryStage::Completed), at(5)))),
                "DeliveryCancelled carries a delivery in stage Completed",
            ),
        ];
        for (event, expected) in cases {
            match handling(event) {
                Handling::Reject(reason) => assert!(reason.contains(expected), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        let mut ownerless = finished("d1", None, at(5));
        ownerless.delivery.owner.user_id = " ".into();
        let handled = handling(envelope("d1", DeliveryEvent::DeliveryCancelled(ownerless)));
        assert!(matches!(handled, Handling::Reject(ref r) if r.contains("owner.userId")), "{handled:?}");
    }

    #[test]
    fn the_later_finish_wins_and_the_same_one_changes_nothing() {
        let failed = stored(DeliveryStage::Failed, 1_000);
        let completed = stored(DeliveryStage::Completed, 2_000);
        assert!(completed.supersedes(&failed), "a failed delivery reopened and completed");
        assert!(!failed.supersedes(&completed), "never older over newer, whatever the stage");
        assert!(!completed.supersedes(&completed.clone()), "the same finish again");
    }

    #[test]
    fn ties_within_a_millisecond_are_broken_the_same_way_in_any_order() {
        let cancelled = stored(DeliveryStage::Cancelled, 1_000);
        let completed = stored(DeliveryStage::Completed, 1_000);
        assert!(completed.supersedes(&cancelled) && !cancelled.supersedes(&completed));
        let mut more_tracking = completed.clone();
        more_tracking.document.push(' ');
        assert!(more_tracking.supersedes(&completed) && !completed.supersedes(&more_tracking));
    }

    #[test]
    fn stored_columns_come_from_the_delivery() {
        let row = stored(DeliveryStage::Completed, 1_234);
        assert_eq!((row.delivery_id.as_str(), row.owner_id.as_str()), ("d1", "contoso"));
        assert_eq!((row.finished_at, row.stage_rank), (1_234, 3));
        let back: FinishedDelivery = serde_json::from_str(&row.document).unwrap();
        assert_eq!(back, finished("d1", Some(DeliveryStage::Completed), at(1_234)));
    }
}
