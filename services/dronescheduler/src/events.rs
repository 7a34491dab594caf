//! The `drone-events` a flight produces and when each one is due. Pure: the flight clock
//! publishes them, the store only remembers how many of a flight's events went out.
//!
//! A flight's events form a fixed, ordered list computed from the flight alone, so "which events
//! were published" is one number per flight (an outbox kept by state, not by rows):
//!
//! | # | event | due (and `occurredAt`, `at`) | location |
//! |---|---|---|---|
//! | 0 | `DroneAssigned` (the planned [`Flight`](contracts::events::Flight)) | departure | depot |
//! | 1 | `HeadedToPickup` | departure | depot |
//! | 2 | `HeadedToDropoff` | pickup time | pickup |
//! | 3 | `DroneArrived` | drop-off time | drop-off |
//! | 4 | `DroneReleased` | drop-off time (released on arrival) | drop-off |
//!
//! A flight turned back by a release before its pickup has three: the first two as above, then
//! `DroneReleased` at the release, where it turned. A turn-back only happens while event 2 has not
//! been announced, so the events already published are always a prefix of the current list.

use chrono::{DateTime, Utc};
use contracts::events::{DroneEvent, DronePosition, EventEnvelope};
use platform::geo::Point;

use crate::flight::{FlightPath, location};

/// One event of a flight, ready to publish once `due_at` has come.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEvent {
    pub due_at: DateTime<Utc>,
    pub envelope: EventEnvelope<DroneEvent>,
}

impl DueEvent {
    /// The stream's de-duplication key: `{deliveryId}:{type}`.
    pub fn message_id(&self) -> &str {
        &self.envelope.message_id
    }
}

/// The de-duplication key of the event `kind` of a delivery: each happens once per delivery.
pub fn message_id(delivery_id: &str, kind: &str) -> String {
    format!("{delivery_id}:{kind}")
}

/// Every event of `flight`, in the order they are published.
pub fn flight_events(delivery_id: &str, flight: &FlightPath) -> Vec<DueEvent> {
    let at = |place: Point, time: DateTime<Utc>| DronePosition {
        drone_id: flight.drone_id.clone(),
        location: location(place),
        at: time,
    };
    let departure = flight.departed_at;
    let mut events = vec![
        (departure, DroneEvent::DroneAssigned(flight.contract())),
        (departure, DroneEvent::HeadedToPickup(at(flight.depot, departure))),
    ];
    match flight.turned_back {
        Some(turn) => events.push((turn.at, DroneEvent::DroneReleased(at(turn.from, turn.at)))),
        None => events.extend([
            (flight.pickup_at, DroneEvent::HeadedToDropoff(at(flight.pickup, flight.pickup_at))),
            (flight.dropoff_at, DroneEvent::DroneArrived(at(flight.dropoff, flight.dropoff_at))),
            (flight.dropoff_at, DroneEvent::DroneReleased(at(flight.dropoff, flight.dropoff_at))),
        ]),
    }
    events
        .into_iter()
        .map(|(due_at, event)| DueEvent {
            due_at,
            envelope: EventEnvelope {
                message_id: message_id(delivery_id, event.kind()),
                delivery_id: delivery_id.to_owned(),
                occurred_at: due_at,
                // Set by the flight clock as it publishes, from its publish span.
                traceparent: None,
                event,
            },
        })
        .collect()
}

/// When the first of `flight`'s events after the `published` ones is due; `None` once every
/// event is out. What the store keeps to find the flights with work to do.
pub fn next_due(flight: &FlightPath, published: usize) -> Option<DateTime<Utc>> {
    // The list is small (five at most); building it keeps one definition of the schedule.
    flight_events("", flight).get(published).map(|e| e.due_at)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn flight() -> FlightPath {
        let departure = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        FlightPath::plan(
            "drone-0007",
            Point::new(47.5802, -122.3353),
            Point::new(47.6062, -122.3321),
            Point { altitude: 30.0, ..Point::new(47.6505, -122.3493) },
            40.0,
            60.0,
            departure,
        )
    }

    fn kinds(events: &[DueEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.envelope.event.kind()).collect()
    }

    #[test]
    fn a_flight_announces_assignment_pickup_arrival_and_release_in_order() {
        let f = flight();
        let events = flight_events("d1", &f);
        assert_eq!(
            kinds(&events),
            ["DroneAssigned", "HeadedToPickup", "HeadedToDropoff", "DroneArrived", "DroneReleased"]
        );
        let due: Vec<_> = events.iter().map(|e| e.due_at).collect();
        assert_eq!(due, [f.departed_at, f.departed_at, f.pickup_at, f.dropoff_at, f.dropoff_at]);
        assert!(events.iter().all(|e| e.envelope.occurred_at == e.due_at && e.envelope.delivery_id == "d1"));
        assert!(events.iter().all(|e| e.envelope.traceparent.is_none()));
        assert_eq!(events[2].message_id(), "d1:HeadedToDropoff");
        assert_eq!(events[0].envelope.event, DroneEvent::DroneAssigned(f.contract()));
        let DroneEvent::DroneArrived(arrived) = &events[3].envelope.event else { panic!("{events:?}") };
        assert_eq!((arrived.drone_id.as_str(), arrived.at), ("drone-0007", f.dropoff_at));
        assert_eq!(arrived.location, location(f.dropoff));
        let DroneEvent::HeadedToPickup(leaving) = &events[1].envelope.event else { panic!("{events:?}") };
        assert_eq!(leaving.location, location(f.depot));
        // On the wire, as API.md has it.
        let json = serde_json::to_value(&events[1].envelope).unwrap();
        assert_eq!(
            (json["messageId"].as_str(), json["type"].as_str()),
            (Some("d1:HeadedToPickup"), Some("HeadedToPickup"))
        );
    }

    #[test]
    fn a_flight_turned_back_is_released_where_it_turned() {
        let f = flight();
        let at = f.departed_at + Duration::seconds(1);
        let turned = f.released_at(at).unwrap();
        let events = flight_events("d1", &turned);
        assert_eq!(kinds(&events), ["DroneAssigned", "HeadedToPickup", "DroneReleased"]);
        // What may have gone out before the release is unchanged.
        assert_eq!(events[..2], flight_events("d1", &f)[..2]);
        assert_eq!(events[2].due_at, at);
        let DroneEvent::DroneReleased(released) = &events[2].envelope.event else { panic!("{events:?}") };
        assert_eq!((released.location, released.at), (location(f.position_at(at)), at));
    }

    #[test]
    fn the_next_due_time_follows_what_was_published() {
        let f = flight();
        assert_eq!(next_due(&f, 0), Some(f.departed_at));
        assert_eq!(next_due(&f, 2), Some(f.pickup_at));
        assert_eq!(next_due(&f, 4), Some(f.dropoff_at));
        assert_eq!(next_due(&f, 5), None);
        let turned = f.released_at(f.departed_at + Duration::seconds(1)).unwrap();
        assert_eq!(next_due(&turned, 2), Some(f.departed_at + Duration::seconds(1)));
        assert_eq!(next_due(&turned, 3), None);
    }
}
