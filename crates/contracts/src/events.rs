//! Events on the bus's streams: what happened to drones (`drone-events`, published by the drone
//! scheduler) and to deliveries (`delivery-events`, published by the delivery service). Every
//! event has the envelope of API.md: `messageId` (the de-duplication key: the same fact
//! published twice has the same id), `deliveryId`, `type`, `occurredAt`, `traceparent`, `body`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Location;
use crate::delivery::{Confirmation, Delivery, DeliveryTrackingEvent};

/// The stream the drone scheduler publishes to.
pub const DRONE_EVENTS_STREAM: &str = "drone-events";
/// The stream the delivery service publishes to.
pub const DELIVERY_EVENTS_STREAM: &str = "delivery-events";

/// Every event on a stream: the envelope fields plus a typed body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope<E> {
    /// De-duplication key: `{deliveryId}:{type}` for facts that happen once per delivery.
    pub message_id: String,
    pub delivery_id: String,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the work that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub event: E,
}

/// A drone's flight for one delivery, as planned when it was assigned (or re-planned when the
/// delivery was rescheduled or released). Positions in between follow great circles at
/// `speedMph`; the times are real (wall-clock) times, the time scale already applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flight {
    pub drone_id: String,
    pub depot: Location,
    /// Where the drone starts this plan: absent for the plan made at assignment (it starts at its
    /// depot); where the drone was when the plan was re-made for a rescheduled delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Location>,
    /// The package was already on board when this plan was made: the drone flies origin →
    /// drop-off → depot, and `pickupAt` is the plan's start (its pickup leg is empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carrying: bool,
    pub pickup: Location,
    pub dropoff: Location,
    /// Simulated miles per hour.
    pub speed_mph: f64,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    pub departed_at: DateTime<Utc>,
    /// When it reaches the pickup, the drop-off, and its depot again.
    pub pickup_at: DateTime<Utc>,
    pub dropoff_at: DateTime<Utc>,
    pub back_at: DateTime<Utc>,
}

/// What happened to a delivery's drone (`drone-events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body")]
pub enum DroneEvent {
    /// A drone was assigned and leaves its depot for the pickup.
    DroneAssigned(Flight),
    /// The delivery was rescheduled while its drone flew: this plan replaces the one before,
    /// from where the drone was then.
    FlightReplanned(Flight),
    /// Flying to the pickup (sent with the assignment's departure).
    HeadedToPickup(DronePosition),
    /// Package picked up, flying to the drop-off.
    HeadedToDropoff(DronePosition),
    /// At the drop-off: the package is delivered.
    DroneArrived(DronePosition),
    /// Freed from the delivery (delivered, or the delivery was cancelled): flying home.
    DroneReleased(DronePosition),
    /// Where the drone is now (periodic, while it flies for a delivery).
    DronePosition(DronePosition),
}

/// A drone at a place and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DronePosition {
    pub drone_id: String,
    pub location: Location,
    pub at: DateTime<Utc>,
}

impl DroneEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DroneAssigned(_) => "DroneAssigned",
            Self::FlightReplanned(_) => "FlightReplanned",
            Self::HeadedToPickup(_) => "HeadedToPickup",
            Self::HeadedToDropoff(_) => "HeadedToDropoff",
            Self::DroneArrived(_) => "DroneArrived",
            Self::DroneReleased(_) => "DroneReleased",
            Self::DronePosition(_) => "DronePosition",
        }
    }
}

/// What happened to a delivery (`delivery-events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body")]
pub enum DeliveryEvent {
    DeliveryCreated(Delivery),
    DeliveryRescheduled(Delivery),
    /// Finished: the whole delivery with its tracking, so history needs no call back.
    DeliveryCompleted(FinishedDelivery),
    DeliveryCancelled(FinishedDelivery),
    DeliveryFailed(FinishedDelivery),
}

impl DeliveryEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DeliveryCreated(_) => "DeliveryCreated",
            Self::DeliveryRescheduled(_) => "DeliveryRescheduled",
            Self::DeliveryCompleted(_) => "DeliveryCompleted",
            Self::DeliveryCancelled(_) => "DeliveryCancelled",
            Self::DeliveryFailed(_) => "DeliveryFailed",
        }
    }

    /// The finished delivery, for the events that end one.
    pub fn finished(&self) -> Option<&FinishedDelivery> {
        match self {
            Self::DeliveryCompleted(f) | Self::DeliveryCancelled(f) | Self::DeliveryFailed(f) => Some(f),
            Self::DeliveryCreated(_) | Self::DeliveryRescheduled(_) => None,
        }
    }
}

/// A delivery that will not change again, with everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedDelivery {
    /// Its final stage is `delivery.stage` (Completed, Cancelled or Failed).
    pub delivery: Delivery,
    /// Oldest first.
    pub tracking: Vec<DeliveryTrackingEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<Confirmation>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_envelope_of_the_api_contract() {
        let event = EventEnvelope {
            message_id: "d1:DroneArrived".to_owned(),
            delivery_id: "d1".to_owned(),
            occurred_at: DateTime::from_timestamp(0, 0).unwrap(),
            traceparent: None,
            event: DroneEvent::DroneArrived(DronePosition {
                drone_id: "drone-0001".to_owned(),
                location: Location::new(47.6, -122.3, 0.0),
                at: DateTime::from_timestamp(0, 0).unwrap(),
            }),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["messageId"], "d1:DroneArrived");
        assert_eq!(json["type"], "DroneArrived");
        assert_eq!(json["body"]["droneId"], "drone-0001");
        let back: EventEnvelope<DroneEvent> = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
