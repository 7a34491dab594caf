//! What the HTTP and tracking tests share: a flight plan, and reading back what was published.

use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::Location;
use contracts::events::{DeliveryEvent, EventEnvelope, Flight};
use platform::bus::QueueOptions;
use platform::bus::stream::{EventStream, StartAt};

/// A flight from a depot in the south of Seattle, planned as the drone scheduler plans: each
/// leg takes its miles at `speed_mph`, scaled by `time_scale` (whole milliseconds).
pub fn flight(departed_at: DateTime<Utc>, pickup: Location, dropoff: Location, speed_mph: f64) -> Flight {
    // Plain literals: JSON brings them back exactly (serde_json's parser may miss the last bit).
    let depot = Location::new(47.55, -122.30, 0.0);
    let time_scale = 60.0;
    let leg = |a: Location, b: Location| {
        let miles = platform::geo::distance_miles(
            platform::geo::Point::new(a.latitude, a.longitude),
            platform::geo::Point::new(b.latitude, b.longitude),
        );
        chrono::Duration::milliseconds((miles / speed_mph * 3_600_000.0 / time_scale).round() as i64)
    };
    let pickup_at = departed_at + leg(depot, pickup);
    let dropoff_at = pickup_at + leg(pickup, dropoff);
    Flight {
        drone_id: "drone-0007".to_owned(),
        depot,
        origin: None,
        carrying: false,
        pickup,
        dropoff,
        speed_mph,
        time_scale,
        departed_at,
        pickup_at,
        dropoff_at,
        back_at: dropoff_at + leg(dropoff, depot),
    }
}

/// Every event on `stream` so far, in publication order: read by a consumer group of its own,
/// from the beginning.
pub async fn published(stream: &dyn EventStream) -> Vec<EventEnvelope<DeliveryEvent>> {
    let group = format!("test_{}", uuid::Uuid::new_v4().simple());
    let subscription = stream.subscribe(&group, StartAt::Beginning, QueueOptions::default()).await.unwrap();
    let mut events = Vec::new();
    loop {
        let batch = subscription.receive(100, Duration::from_millis(100)).await.unwrap();
        if batch.is_empty() {
            return events;
        }
        for message in batch {
            let envelope: EventEnvelope<DeliveryEvent> = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(message.id, envelope.message_id, "the message id is the envelope's");
            events.push(envelope);
            message.ack().await.unwrap();
        }
    }
}
