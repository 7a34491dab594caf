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
//! | … | `DronePosition`, every [`FlightPath::position_every_ms`] | departure + k × interval | on the way |
//! | | `HeadedToDropoff` | pickup time | pickup |
//! | | `DroneArrived` | drop-off time | drop-off |
//! | | `DroneReleased` | drop-off time (released on arrival) | drop-off |
//!
//! Positions ([`FlightPath::position_times`]) come between the others in time order, before a
//! milestone due at the same moment. A flight turned back by a release before its pickup has the
//! first two, its positions up to the turn, then `DroneReleased` at the release, where it turned.
//! A turn-back only happens while nothing after the turn has been announced, so the events
//! already published are always a prefix of the current list.
//!
//! A flight re-planned for a reschedule ([`FlightPath::rerouted_at`]) has a list of its own,
//! published from the start again: `FlightReplanned` (the new plan) at the re-plan, its
//! positions, `HeadedToDropoff` unless the package was already on board, `DroneArrived` and
//! `DroneReleased`. A re-plan only happens once every event due before it is out, so nothing of
//! the plan before is lost, and it never moves what was announced.
//!
//! Message ids are `{deliveryId}:{type}` (each happens once per delivery),
//! `{deliveryId}:FlightReplanned:{n}` for the n-th re-plan, and
//! `{deliveryId}:DronePosition:{unix ms}` for positions, so a re-publish is dropped by the stream.

use chrono::{DateTime, Utc};
use contracts::events::{DroneEvent, DronePosition, EventEnvelope};
use platform::geo::Point;

use platform::clock::unix_millis;

use crate::flight::{FlightPath, location};

/// One event of a flight, ready to publish once `due_at` has come.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEvent {
    pub due_at: DateTime<Utc>,
    pub envelope: EventEnvelope<DroneEvent>,
}

impl DueEvent {
    /// The stream's de-duplication key.
    pub fn message_id(&self) -> &str {
        &self.envelope.message_id
    }
}

/// What one entry of a flight's schedule announces (the event without its body, cheap to list).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Assigned,
    Replanned,
    HeadedToPickup,
    Position,
    HeadedToDropoff,
    Arrived,
    /// Released where the drone then is.
    Released(Point),
}

/// The de-duplication key of the event `kind` of a delivery: each happens once per delivery.
pub fn message_id(delivery_id: &str, kind: &str) -> String {
    format!("{delivery_id}:{kind}")
}

/// The de-duplication key of the delivery's position at `at`: one per delivery and moment.
pub fn position_message_id(delivery_id: &str, at: DateTime<Utc>) -> String {
    format!("{delivery_id}:DronePosition:{}", unix_millis(at))
}

/// When each of `flight`'s events is due, in the order they are published.
pub fn schedule(flight: &FlightPath) -> Vec<(DateTime<Utc>, Slot)> {
    let departure = flight.departed_at;
    let mut milestones = if flight.replans == 0 {
        vec![(departure, Slot::Assigned), (departure, Slot::HeadedToPickup)]
    } else {
        vec![(departure, Slot::Replanned)]
    };
    match flight.turned_back {
        Some(turn) => milestones.push((turn.at, Slot::Released(turn.from))),
        None => {
            if !flight.carrying {
                milestones.push((flight.pickup_at, Slot::HeadedToDropoff));
            }
            milestones
                .extend([(flight.dropoff_at, Slot::Arrived), (flight.dropoff_at, Slot::Released(flight.dropoff))]);
        }
    }
    let mut positions = flight.position_times().peekable();
    let mut all = Vec::with_capacity(milestones.len());
    for milestone in milestones {
        while let Some(at) = positions.next_if(|at| *at <= milestone.0) {
            all.push((at, Slot::Position));
        }
        all.push(milestone);
    }
    all.extend(positions.map(|at| (at, Slot::Position)));
    all
}

/// The event of `slot`, due at `due_at`, of the delivery's `flight`.
pub fn event(delivery_id: &str, flight: &FlightPath, due_at: DateTime<Utc>, slot: Slot) -> DueEvent {
    let at = |place: Point| DronePosition { drone_id: flight.drone_id.clone(), location: location(place), at: due_at };
    let event = match slot {
        Slot::Assigned => DroneEvent::DroneAssigned(flight.contract()),
        Slot::Replanned => DroneEvent::FlightReplanned(flight.contract()),
        Slot::HeadedToPickup => DroneEvent::HeadedToPickup(at(flight.depot)),
        Slot::Position => DroneEvent::DronePosition(at(flight.position_at(due_at))),
        Slot::HeadedToDropoff => DroneEvent::HeadedToDropoff(at(flight.pickup)),
        Slot::Arrived => DroneEvent::DroneArrived(at(flight.dropoff)),
        Slot::Released(place) => DroneEvent::DroneReleased(at(place)),
    };
    let message_id = match slot {
        Slot::Position => position_message_id(delivery_id, due_at),
        Slot::Replanned => format!("{}:{}", message_id(delivery_id, event.kind()), flight.replans),
        _ => message_id(delivery_id, event.kind()),
    };
    DueEvent {
        due_at,
        envelope: EventEnvelope {
            message_id,
            delivery_id: delivery_id.to_owned(),
            occurred_at: due_at,
            // Set by the flight clock as it publishes, from its publish span.
            traceparent: None,
            event,
        },
    }
}

/// Every event of `flight`, in the order they are published.
pub fn flight_events(delivery_id: &str, flight: &FlightPath) -> Vec<DueEvent> {
    schedule(flight).into_iter().map(|(due_at, slot)| event(delivery_id, flight, due_at, slot)).collect()
}

/// When the first of `flight`'s events after the `published` ones is due; `None` once every
/// event is out. What the store keeps to find the flights with work to do.
pub fn next_due(flight: &FlightPath, published: usize) -> Option<DateTime<Utc>> {
    schedule(flight).get(published).map(|e| e.0)
}

/// Whether the entry `index` of `schedule` need not be published at `now`: a position that a
/// later event, also due, already supersedes. A clock that fell behind (a pause, a backlog)
/// then sends each flight's latest position only, instead of a burst of stale ones.
pub fn superseded(schedule: &[(DateTime<Utc>, Slot)], index: usize, now: DateTime<Utc>) -> bool {
    matches!(schedule.get(index), Some((_, Slot::Position)))
        && schedule.get(index + 1).is_some_and(|(due, _)| *due <= now)
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
    fn a_replanned_flight_announces_its_new_plan_then_the_rest() {
        let f = flight();
        let elsewhere = Point::new(47.6253, -122.3222);
        let before_pickup = f.rerouted_at(f.departed_at + Duration::seconds(1), f.pickup, elsewhere).unwrap().unwrap();
        let events = flight_events("d1", &before_pickup);
        assert_eq!(kinds(&events), ["FlightReplanned", "HeadedToDropoff", "DroneArrived", "DroneReleased"]);
        assert_eq!(events[0].message_id(), "d1:FlightReplanned:1");
        assert_eq!(events[0].due_at, before_pickup.departed_at);
        let DroneEvent::FlightReplanned(plan) = &events[0].envelope.event else { panic!("{events:?}") };
        assert_eq!(plan.origin, Some(location(before_pickup.origin)));
        assert!(!plan.carrying);
        assert_eq!(events[1].message_id(), "d1:HeadedToDropoff", "still once per delivery");

        let loaded_at = f.pickup_at + Duration::seconds(1);
        let loaded = before_pickup.rerouted_at(loaded_at, f.pickup, f.dropoff).unwrap().unwrap();
        let events = flight_events("d1", &loaded);
        assert_eq!(kinds(&events), ["FlightReplanned", "DroneArrived", "DroneReleased"], "picked up already");
        assert_eq!(events[0].message_id(), "d1:FlightReplanned:2");
        let DroneEvent::FlightReplanned(plan) = &events[0].envelope.event else { panic!("{events:?}") };
        assert!(plan.carrying);
        // The assignment's plan says nothing of an origin: its consumers read it as before.
        let json = serde_json::to_value(f.contract()).unwrap();
        assert!(json.get("origin").is_none() && json.get("carrying").is_none(), "{json}");
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

    /// The test flight (about 2.7 s to the pickup, 7.6 s to the drop-off) reporting every `ms`.
    fn positions_every(ms: u64) -> FlightPath {
        flight().with_positions_every(std::time::Duration::from_millis(ms))
    }

    #[test]
    fn positions_come_between_the_milestones_from_the_flight_plan() {
        let f = positions_every(500);
        let events = flight_events("d1", &f);
        let positions: Vec<&DueEvent> = events.iter().filter(|e| e.envelope.event.kind() == "DronePosition").collect();
        assert_eq!(positions.len(), f.position_times().count());
        assert!(positions.len() >= 10, "{} positions", positions.len());
        // In time order, the milestones where they were.
        assert!(events.windows(2).all(|w| w[0].due_at <= w[1].due_at));
        let milestones: Vec<_> = events.iter().filter(|e| e.envelope.event.kind() != "DronePosition").collect();
        assert_eq!(milestones.iter().map(|e| (*e).clone()).collect::<Vec<_>>(), flight_events("d1", &flight()));
        for p in positions {
            let DroneEvent::DronePosition(position) = &p.envelope.event else { unreachable!() };
            // Where the plan has the drone at that moment: never random.
            assert_eq!(position.location, location(f.position_at(p.due_at)));
            assert_eq!((position.at, p.envelope.occurred_at), (p.due_at, p.due_at));
            assert_eq!(p.message_id(), format!("d1:DronePosition:{}", unix_millis(p.due_at)));
        }
        // Deterministic: the same flight gives the same events, ids included.
        assert_eq!(flight_events("d1", &positions_every(500)), events);
        assert_eq!(next_due(&f, 2), Some(f.departed_at + Duration::milliseconds(500)));
        // A position due with a milestone comes first.
        let pickup = events.iter().position(|e| e.envelope.event.kind() == "HeadedToDropoff").unwrap();
        assert!(events[pickup - 1].due_at <= f.pickup_at && events[pickup + 1].due_at >= f.pickup_at);
    }

    #[test]
    fn a_turn_back_keeps_the_positions_already_due_as_a_prefix() {
        let f = positions_every(500);
        for ms in [0, 300, 500, 1_000, 1_100, 2_500] {
            let at = f.departed_at + Duration::milliseconds(ms);
            let turned = f.released_at(at).unwrap();
            let events = flight_events("d1", &turned);
            let before = events.len() - 1;
            assert_eq!(events[..before], flight_events("d1", &f)[..before], "turned at +{ms} ms");
            assert_eq!(events[before].envelope.event.kind(), "DroneReleased");
            assert!(events[..before].iter().all(|e| e.due_at <= at));
            assert_eq!(before - 2, (ms / 500) as usize, "positions up to and including the turn");
        }
    }

    #[test]
    fn only_the_latest_of_several_due_positions_is_sent() {
        let f = positions_every(500);
        let plan = schedule(&f);
        let now = f.departed_at + Duration::milliseconds(1_200);
        // Entries: assigned, headed, +0.5 s, +1 s, +1.5 s, …
        assert!(!superseded(&plan, 1, now), "milestones are always sent");
        assert!(superseded(&plan, 2, now), "+0.5 s is stale once +1 s is due");
        assert!(!superseded(&plan, 3, now), "+1 s is the latest due");
        assert!(superseded(&plan, 3, now + Duration::milliseconds(300)), "+1.5 s has come");
        assert!(!superseded(&plan, plan.len(), now));
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
