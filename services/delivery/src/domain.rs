//! What the delivery service decides: valid input, which stage changes are allowed, what a
//! drone event asks of a delivery, and what its status shows. Pure: no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::DeliveryStage;
use contracts::Location;
use contracts::delivery::{
    Confirmation, Delivery, DeliveryClosure, DeliveryRefusal, DeliveryStatus, DeliveryTrackingEvent, NotifyMeRequest,
    RescheduledDelivery,
};
use contracts::events::{DroneEvent, DronePosition, Flight};
use platform::Problem;

use crate::flight;

type Errors = BTreeMap<String, String>;

/// The longest reason a closure may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Why a cancel is refused once the package is on board; the refusal note shown on the
/// delivery quotes it.
pub const PICKED_UP: &str = "the drone has picked the package up; it can no longer be cancelled";

/// What a client, the workflow or the delivery's drone asks to do to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reschedule,
    Cancel,
    Complete,
    /// The workflow gave up on the delivery: it will never fly.
    Fail,
    /// The drone left for the pickup (a `HeadedToPickup` drone event).
    HeadToPickup,
    /// The drone picked the package up and flies to the drop-off (`HeadedToDropoff`).
    HeadToDropoff,
}

/// The answer of the stage rules to an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Apply it: the delivery moves to this stage.
    To(DeliveryStage),
    /// It already happened; nothing changes (a retried request).
    AlreadyDone,
    /// Not allowed from the current stage.
    Refused(String),
}

/// Whether a delivery in `stage` is finished: it never changes again.
pub fn is_final(stage: DeliveryStage) -> bool {
    matches!(stage, DeliveryStage::Completed | DeliveryStage::Cancelled | DeliveryStage::Failed)
}

/// The stage rules. A delivery can be cancelled until the drone has picked the package up, can
/// fail at any point before it is finished, and a cancelled, completed or failed delivery never
/// changes again. The drone's progress only moves a delivery forward (see [`progress`]); it may
/// skip a stage (its events are handled concurrently and may overtake each other), and a stage
/// already passed, or a finished delivery, makes it a no-op rather than an error: the event is
/// simply old news.
///
/// `current` is the stage as the rules see it: [`tracked_stage`], not just the stored one.
pub fn transition(current: DeliveryStage, action: Action) -> Transition {
    use DeliveryStage::*;
    match (action, current) {
        (Action::Cancel, Cancelled) | (Action::Complete, Completed) | (Action::Fail, Failed) => Transition::AlreadyDone,
        (Action::HeadToPickup, _) => forward(current, HeadedToPickup),
        (Action::HeadToDropoff, _) => forward(current, HeadedToDropoff),
        (_, stage) if is_final(stage) => Transition::Refused(format!("the delivery is already {current}")),
        (Action::Cancel, HeadedToDropoff) => Transition::Refused(PICKED_UP.to_owned()),
        (Action::Reschedule, _) => Transition::To(Rescheduled),
        (Action::Cancel, _) => Transition::To(Cancelled),
        (Action::Complete, _) => Transition::To(Completed),
        (Action::Fail, _) => Transition::To(Failed),
    }
}

/// How far along its flight a delivery in `stage` is: 0 before the drone leaves, 1 flying to
/// the pickup, 2 with the package on board, 3 finished.
pub fn progress(stage: DeliveryStage) -> u8 {
    use DeliveryStage::*;
    match stage {
        Created | Rescheduled => 0,
        HeadedToPickup => 1,
        HeadedToDropoff => 2,
        Completed | Cancelled | Failed => 3,
    }
}

/// The drone reached `target`'s part of the flight: move there unless the delivery is already
/// there, further along, or finished.
fn forward(current: DeliveryStage, target: DeliveryStage) -> Transition {
    if progress(current) >= progress(target) { Transition::AlreadyDone } else { Transition::To(target) }
}

/// Whether [`tracked_stage`] needs the delivery's history to judge a delivery in `current`.
/// Only `Rescheduled` hides how far the flight got, so the stores read the history only then.
pub fn needs_history(current: DeliveryStage) -> bool {
    current == DeliveryStage::Rescheduled
}

/// The stage the rules judge a delivery by. `Rescheduled` can follow any stage that is not
/// final, so on its own it would forget that the drone already left or already has the package:
/// a late `HeadedToPickup` would move the delivery back, and a cancel after the pickup would be
/// let through. So a rescheduled delivery counts as the furthest flight stage it reached since it
/// was (re)created. `history` is the stages of its tracking events, oldest first.
pub fn tracked_stage(current: DeliveryStage, history: &[DeliveryStage]) -> DeliveryStage {
    if !needs_history(current) {
        return current;
    }
    history
        .iter()
        .rev()
        .take_while(|stage| **stage != DeliveryStage::Created)
        .filter(|stage| matches!(stage, DeliveryStage::HeadedToPickup | DeliveryStage::HeadedToDropoff))
        .max_by_key(|stage| progress(**stage))
        .copied()
        .unwrap_or(current)
}

/// The note to record on a delivery (a tracking event in its current stage) when `action` is
/// refused in `current` (its [`tracked_stage`]), for the refusals a customer should see in the
/// status; `None` for the rest (a cancel of a finished delivery says nothing new about it).
///
/// `reason` is why another service refused the action for the delivery: a reschedule whose new
/// places the drone scheduler could not re-plan the flight for (the package is on board, the
/// drone is at the drop-off). Such a refusal is shown while the delivery is not finished.
pub fn refusal_note(current: DeliveryStage, action: Action, reason: Option<&str>) -> Option<String> {
    match (action, current, reason) {
        (Action::Cancel, DeliveryStage::HeadedToDropoff, _) => Some(format!("cancel refused: {PICKED_UP}")),
        (Action::Reschedule, stage, Some(reason)) if !is_final(stage) => Some(format!("reschedule refused: {reason}")),
        _ => None,
    }
}

/// Whether `note` was already recorded since the delivery was last (re)created: a refusal is
/// recorded once per kind, however often the client repeats the refused call.
pub fn already_noted(history: &[DeliveryTrackingEvent], note: &str) -> bool {
    history
        .iter()
        .rev()
        .take_while(|event| event.stage != DeliveryStage::Created)
        .any(|event| event.reason.as_deref() == Some(note))
}

/// What a drone event asks of its delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DroneStep {
    /// Keep the flight plan: positions and ETAs are computed from it.
    RecordFlight(Flight),
    /// Move the delivery forward (`HeadToPickup` or `HeadToDropoff`) with a tracking event here.
    Advance { action: Action, location: Location, at: DateTime<Utc> },
    /// The drone is at the drop-off: the package is delivered.
    Arrive { location: Location, at: DateTime<Utc> },
    /// Where the drone is now: kept as the last known location if it is the newest.
    Report(DronePosition),
    /// Nothing to do.
    Ignore,
}

/// The step a drone event asks for.
pub fn drone_step(event: DroneEvent) -> DroneStep {
    match event {
        // A re-plan departs later than the plan it replaces, so the store keeps it as the newer.
        DroneEvent::DroneAssigned(flight) | DroneEvent::FlightReplanned(flight) => DroneStep::RecordFlight(flight),
        DroneEvent::HeadedToPickup(p) => {
            DroneStep::Advance { action: Action::HeadToPickup, location: p.location, at: p.at }
        }
        DroneEvent::HeadedToDropoff(p) => {
            DroneStep::Advance { action: Action::HeadToDropoff, location: p.location, at: p.at }
        }
        DroneEvent::DroneArrived(p) => DroneStep::Arrive { location: p.location, at: p.at },
        DroneEvent::DronePosition(p) => DroneStep::Report(p),
        // Released: the delivery's own events already say how it ended.
        DroneEvent::DroneReleased(_) => DroneStep::Ignore,
    }
}

/// The confirmation a drone's arrival at the drop-off stands for: the drone confirms by the
/// delivery's required kind and carries no blob.
pub fn arrival_confirmation(delivery: &Delivery, location: Location, at: DateTime<Utc>) -> Confirmation {
    Confirmation {
        date_time: at,
        geo_coordinates: location,
        confirmation_type: delivery.confirmation_required,
        confirmation_blob: String::new(),
    }
}

/// Whether a drone event whose delivery does not exist should be given up: its delivery is
/// created by the workflow just after the drone is assigned, so a missing one is normally only
/// late, but one whose workflow failed after the assignment never comes.
pub fn is_orphan(occurred_at: DateTime<Utc>, now: DateTime<Utc>, max_age: chrono::Duration) -> bool {
    now - occurred_at > max_age
}

/// A delivery's status (`None` when it has no tracking events: it does not exist) from its
/// tracking events (oldest first), its drone's flight if one is known, at `now`.
///
/// - `stage`: the latest event's.
/// - `lastKnownLocation`: while the drone flies for it and it is not finished, where the flight
///   puts the drone now (the drop-off once the flight says it is there); otherwise the newest of
///   the drone's last reported position and the location of the latest event that has one
///   (a delivery whose flight plan is not known yet is still followed by its drone's reports,
///   and a report older than the latest event never moves it back).
/// - `pickupETA` until the package is on board, `deliveryETA` until it is delivered: from the
///   flight ([`flight::etas`]); `null` without a flight or once finished.
/// - `reason`: see [`status_reason`].
pub fn status(
    events: &[DeliveryTrackingEvent],
    flight: Option<&Flight>,
    reported: Option<&DronePosition>,
    now: DateTime<Utc>,
) -> Option<DeliveryStatus> {
    let stage = events.last()?.stage;
    let live_flight = flight.filter(|_| !is_final(stage));
    let flying_at = live_flight.and_then(|f| flight::delivery_position(f, now));
    let last_event = events.iter().rev().find_map(|e| Some((e.location?, e.at)));
    let newest = match (last_event, reported) {
        (Some((location, at)), Some(r)) => Some(if r.at > at { r.location } else { location }),
        (Some((location, _)), None) => Some(location),
        (None, r) => r.map(|r| r.location),
    };
    let last_known_location = flying_at.or(newest);
    let etas = live_flight.map(|f| flight::etas(f, now));
    let history: Vec<DeliveryStage> = events.iter().map(|e| e.stage).collect();
    let on_board = progress(tracked_stage(stage, &history)) >= progress(DeliveryStage::HeadedToDropoff);
    Some(DeliveryStatus {
        stage,
        last_known_location,
        pickup_eta: etas.filter(|_| !on_board).map(|e| e.pickup),
        delivery_eta: etas.map(|e| e.dropoff),
        reason: status_reason(events),
    })
}

/// Why the delivery is where it is, when an event of its current stage says so (a closure's
/// reason, a refusal note). Only events since the stage last changed count, so a delivery that
/// moved on (a refused cancel, then delivered; a failed delivery reopened) does not keep
/// showing an old reason.
pub fn status_reason(events: &[DeliveryTrackingEvent]) -> Option<String> {
    let stage = events.last()?.stage;
    events.iter().rev().take_while(|e| e.stage == stage).find_map(|e| e.reason.clone())
}

/// The rules of a closure (`PUT …/closure`): recording that a delivery will never fly, in
/// `stage` Failed or Cancelled. `current` is the delivery's stage, `None` when the service does
/// not have it; then `To(stage)` means "create it directly in that stage". An existing delivery
/// follows [`transition`]: Cancelled by the cancel rules, Failed from any stage not yet final.
pub fn close(current: Option<DeliveryStage>, stage: DeliveryStage) -> Transition {
    let action = match stage {
        DeliveryStage::Failed => Action::Fail,
        DeliveryStage::Cancelled => Action::Cancel,
        other => return Transition::Refused(format!("a delivery is closed as Failed or Cancelled, not {other}")),
    };
    match current {
        None => Transition::To(stage),
        Some(current) => transition(current, action),
    }
}

/// Checks a PUT body; the stage is the service's to set, so it is dropped.
pub fn validate_delivery(path_id: &str, delivery: Delivery) -> Result<Delivery, Problem> {
    let mut errors = Errors::new();
    let delivery = check_delivery(path_id, delivery, "", DroneId::Required, &mut errors);
    if errors.is_empty() { Ok(delivery) } else { Err(Problem::invalid_fields(errors)) }
}

/// Checks a closure body: a closing stage, a reason (returned trimmed), and the delivery as a
/// PUT would carry it except that it may have no drone (none was ever assigned).
pub fn validate_closure(path_id: &str, closure: DeliveryClosure) -> Result<DeliveryClosure, Problem> {
    let mut errors = Errors::new();
    let delivery = check_delivery(path_id, closure.delivery, "/delivery", DroneId::Optional, &mut errors);
    if !matches!(closure.stage, DeliveryStage::Failed | DeliveryStage::Cancelled) {
        errors.insert("/stage".to_owned(), format!("must be Failed or Cancelled, not {}", closure.stage));
    }
    let reason = closure.reason.trim();
    if reason.is_empty() {
        errors.insert("/reason".to_owned(), "required".to_owned());
    } else if reason.chars().count() > MAX_REASON_CHARS {
        errors.insert("/reason".to_owned(), format!("must be at most {MAX_REASON_CHARS} characters"));
    }
    if errors.is_empty() {
        Ok(DeliveryClosure { delivery, stage: closure.stage, reason: reason.to_owned() })
    } else {
        Err(Problem::invalid_fields(errors))
    }
}

/// Whether a delivery must name its drone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DroneId {
    Required,
    Optional,
}

/// Checks a delivery document whose fields sit under `field` (`""` for a PUT body); takes the
/// id from the path when it has none and drops the stage, which is the service's to set.
fn check_delivery(path_id: &str, mut delivery: Delivery, field: &str, drone: DroneId, errors: &mut Errors) -> Delivery {
    if delivery.id.is_empty() {
        delivery.id = path_id.to_owned();
    } else if delivery.id != path_id {
        errors.insert(format!("{field}/id"), format!("must equal the id in the path ({path_id})"));
    }
    if delivery.owner.user_id.trim().is_empty() {
        errors.insert(format!("{field}/owner/userId"), "required".to_owned());
    }
    if drone == DroneId::Required && delivery.drone_id.trim().is_empty() {
        errors.insert(format!("{field}/droneId"), "required".to_owned());
    }
    check_location(&delivery.pickup, &format!("{field}/pickup"), errors);
    check_location(&delivery.dropoff, &format!("{field}/dropoff"), errors);
    check_time(&delivery.deadline, &format!("{field}/deadline"), true, errors);
    if let Some(pickup_time) = &delivery.pickup_time {
        check_time(pickup_time, &format!("{field}/pickupTime"), false, errors);
    }
    delivery.stage = None;
    delivery
}

/// Checks a PATCH body: at least one change, each well formed.
pub fn validate_reschedule(change: &RescheduledDelivery) -> Result<(), Problem> {
    let mut errors = Errors::new();
    if let Some(pickup) = &change.pickup {
        check_location(pickup, "/pickup", &mut errors);
    }
    if let Some(dropoff) = &change.dropoff {
        check_location(dropoff, "/dropoff", &mut errors);
    }
    if let Some(deadline) = &change.deadline {
        check_time(deadline, "/deadline", true, &mut errors);
    }
    if let Some(pickup_time) = &change.pickup_time {
        check_time(pickup_time, "/pickupTime", false, &mut errors);
    }
    if *change == RescheduledDelivery::default() {
        errors.insert("/".to_owned(), "give at least one of pickup, dropoff, deadline, pickupTime".to_owned());
    }
    if errors.is_empty() { Ok(()) } else { Err(Problem::invalid_fields(errors)) }
}

/// Checks a refusal sent by the workflow: a reschedule, with a reason. Returns the reason,
/// trimmed and cut to 500 characters.
pub fn validate_refusal(refusal: &DeliveryRefusal) -> Result<String, Problem> {
    let mut errors = Errors::new();
    if refusal.action != "reschedule" {
        errors.insert("/action".to_owned(), "must be \"reschedule\"".to_owned());
    }
    let reason: String = refusal.reason.trim().chars().take(500).collect();
    if reason.is_empty() {
        errors.insert("/reason".to_owned(), "required".to_owned());
    }
    if errors.is_empty() { Ok(reason) } else { Err(Problem::invalid_fields(errors)) }
}

/// Applies a reschedule to a delivery document.
pub fn rescheduled(mut delivery: Delivery, change: &RescheduledDelivery) -> Delivery {
    if let Some(pickup) = change.pickup {
        delivery.pickup = pickup;
    }
    if let Some(dropoff) = change.dropoff {
        delivery.dropoff = dropoff;
    }
    if let Some(deadline) = &change.deadline {
        delivery.deadline.clone_from(deadline);
    }
    if let Some(pickup_time) = &change.pickup_time {
        delivery.pickup_time = Some(pickup_time.clone());
    }
    delivery
}

/// Checks a notify-me request: at least one channel, each well formed. Returns it trimmed.
pub fn validate_notify(request: NotifyMeRequest) -> Result<NotifyMeRequest, Problem> {
    let mut errors = Errors::new();
    let email = request.email_address.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty());
    let sms = request.sms.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if email.is_none() && sms.is_none() {
        errors.insert("/".to_owned(), "give emailAddress, sms, or both".to_owned());
    }
    if email.as_deref().is_some_and(|e| !is_email(e)) {
        errors.insert("/emailAddress".to_owned(), "must be an email address like name@example.com".to_owned());
    }
    // Kept in E.164 form, so the same number written two ways is one recipient.
    let sms = match sms.as_deref().map(e164) {
        None => None,
        Some(Some(number)) => Some(number),
        Some(None) => {
            errors.insert(
                "/sms".to_owned(),
                "must be an international phone number: +, country code and number, 7 to 15 digits \
                 (spaces or hyphens between groups), e.g. +1 425-555-0100"
                    .to_owned(),
            );
            None
        }
    };
    if errors.is_empty() {
        Ok(NotifyMeRequest { email_address: email, sms })
    } else {
        Err(Problem::invalid_fields(errors))
    }
}

/// Checks a confirmation's location.
pub fn validate_confirmation(confirmation: &Confirmation) -> Result<(), Problem> {
    let mut errors = Errors::new();
    check_location(&confirmation.geo_coordinates, "/geoCoordinates", &mut errors);
    if errors.is_empty() { Ok(()) } else { Err(Problem::invalid_fields(errors)) }
}

/// Whether `text` is an email address a mail system takes: `local@domain` in the ASCII dot-atom
/// form of RFC 5322, within the lengths of RFC 5321. The local part is 1 to 64 characters of
/// letters, digits and ``!#$%&'*+/=?^_`{|}~-``, with single dots between them; the domain is two
/// or more labels of letters, digits and inner hyphens (1 to 63 characters each, 253 in all)
/// ending in a top-level domain of letters (or `xn--` punycode). Quoted local parts, IP-literal
/// domains and non-ASCII addresses are refused: customers do not need them, and a mail gateway
/// may not take them.
pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else { return false };
    text.len() <= 254 && local.len() <= 64 && is_dot_atom(local) && is_domain(domain)
}

fn is_dot_atom(text: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    text.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c)))
}

fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let is_label = |label: &&str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let top = labels.last().copied().unwrap_or_default();
    let is_top = top.len() >= 2 && (top.chars().all(|c| c.is_ascii_alphabetic()) || top.starts_with("xn--"));
    domain.len() <= 253 && labels.len() >= 2 && labels.iter().all(is_label) && is_top
}

/// `text` as an E.164 number (`+` and its digits) when it is an international phone number: `+`,
/// then 7 to 15 digits, the first not 0 (country codes never start with 0), in groups separated
/// by single spaces or hyphens. A number without its country code cannot be routed by an SMS
/// gateway, so it is refused rather than guessed.
pub fn e164(text: &str) -> Option<String> {
    let rest = text.strip_prefix('+')?;
    let groups: Vec<&str> = rest.split([' ', '-']).collect();
    if groups.iter().any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let digits = groups.concat();
    ((7..=15).contains(&digits.len()) && !digits.starts_with('0')).then(|| format!("+{digits}"))
}

/// Names each bad coordinate (`/pickup/latitude`, …); every one must be a finite number and
/// latitude and longitude within their ranges.
fn check_location(location: &Location, field: &str, errors: &mut Errors) {
    if !(location.latitude.is_finite() && (-90.0..=90.0).contains(&location.latitude)) {
        errors.insert(format!("{field}/latitude"), "must be a number in [-90, 90]".to_owned());
    }
    if !(location.longitude.is_finite() && (-180.0..=180.0).contains(&location.longitude)) {
        errors.insert(format!("{field}/longitude"), "must be a number in [-180, 180]".to_owned());
    }
    if !location.altitude.is_finite() {
        errors.insert(format!("{field}/altitude"), "must be a finite number".to_owned());
    }
}

fn check_time(text: &str, field: &str, empty_allowed: bool, errors: &mut Errors) {
    if empty_allowed && text.trim().is_empty() {
        return;
    }
    if DateTime::parse_from_rfc3339(text.trim()).is_err() {
        errors.insert(field.to_owned(), format!("{text:?} is not an RFC 3339 time"));
    }
}

#[cfg(test)]
mod tests {
    use contracts::{ConfirmationType, UserAccount};

    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            id: "d1".into(),
            owner: UserAccount { user_id: "u".into(), account_id: "a".into() },
            pickup: Location::new(47.6, -122.3, 0.0),
            dropoff: Location::new(47.7, -122.3, 0.0),
            deadline: String::new(),
            expedited: false,
            confirmation_required: ConfirmationType::None,
            drone_id: "drone-0001".into(),
            stage: Some(DeliveryStage::Completed),
            pickup_time: None,
            package_id: None,
        }
    }

    #[test]
    fn stage_rules() {
        use DeliveryStage::*;
        assert_eq!(transition(Created, Action::Cancel), Transition::To(Cancelled));
        assert_eq!(transition(Cancelled, Action::Cancel), Transition::AlreadyDone);
        assert!(matches!(transition(Completed, Action::Cancel), Transition::Refused(_)));
        assert!(matches!(transition(HeadedToDropoff, Action::Cancel), Transition::Refused(_)));
        assert_eq!(transition(HeadedToPickup, Action::Reschedule), Transition::To(Rescheduled));
        assert!(matches!(transition(Cancelled, Action::Reschedule), Transition::Refused(_)));
        assert_eq!(transition(Completed, Action::Complete), Transition::AlreadyDone);
        assert!(matches!(transition(Cancelled, Action::Complete), Transition::Refused(_)));
        assert_eq!(transition(HeadedToDropoff, Action::Fail), Transition::To(Failed));
        assert_eq!(transition(Failed, Action::Fail), Transition::AlreadyDone);
        for action in [Action::Reschedule, Action::Cancel, Action::Complete] {
            let Transition::Refused(reason) = transition(Failed, action) else { panic!("{action:?} after Failed") };
            assert!(reason.contains("already Failed"), "{reason}");
        }
    }

    #[test]
    fn closure_rules() {
        use DeliveryStage::*;
        // Unknown to the service: created directly in the closing stage.
        assert_eq!(close(None, Failed), Transition::To(Failed));
        assert_eq!(close(None, Cancelled), Transition::To(Cancelled));
        // Failed from any stage not yet final, even after pickup.
        for stage in [Created, Rescheduled, HeadedToPickup, HeadedToDropoff] {
            assert_eq!(close(Some(stage), Failed), Transition::To(Failed), "{stage}");
        }
        // Cancelled follows the cancel rules: refused once the package is picked up.
        assert_eq!(close(Some(Rescheduled), Cancelled), Transition::To(Cancelled));
        let Transition::Refused(reason) = close(Some(HeadedToDropoff), Cancelled) else {
            panic!("cancelled in flight")
        };
        assert!(reason.contains("picked the package up"), "{reason}");
        // The same final stage again is a retry; another final stage is a conflict.
        assert_eq!(close(Some(Failed), Failed), Transition::AlreadyDone);
        assert_eq!(close(Some(Cancelled), Cancelled), Transition::AlreadyDone);
        for (current, stage) in [(Completed, Failed), (Completed, Cancelled), (Cancelled, Failed), (Failed, Cancelled)]
        {
            let Transition::Refused(reason) = close(Some(current), stage) else { panic!("{stage} after {current}") };
            assert_eq!(reason, format!("the delivery is already {current}"));
        }
        // Only the two closing stages close.
        for stage in [Created, Rescheduled, HeadedToPickup, HeadedToDropoff, Completed] {
            assert!(matches!(close(None, stage), Transition::Refused(_)), "{stage}");
            assert!(matches!(close(Some(Created), stage), Transition::Refused(_)), "{stage}");
        }
    }

    fn closure(stage: DeliveryStage, reason: &str) -> DeliveryClosure {
        DeliveryClosure { delivery: delivery(), stage, reason: reason.to_owned() }
    }

    #[test]
    fn a_closure_needs_a_closing_stage_a_reason_and_a_valid_delivery() {
        let mut ok = closure(DeliveryStage::Failed, "  the deadline passed \n");
        ok.delivery.drone_id = String::new();
        ok.delivery.id = String::new();
        let valid = validate_closure("d1", ok).unwrap();
        assert_eq!(valid.reason, "the deadline passed", "the reason is trimmed");
        assert_eq!(valid.delivery.id, "d1", "the id comes from the path");
        assert_eq!(valid.delivery.stage, None, "the stage is the service's to set");
        assert_eq!(valid.delivery.drone_id, "", "no drone was ever assigned");
        validate_closure("d1", closure(DeliveryStage::Cancelled, &"é".repeat(MAX_REASON_CHARS))).unwrap();

        for (stage, reason) in [
            (DeliveryStage::Completed, " "),
            (DeliveryStage::Created, ""),
            (DeliveryStage::HeadedToDropoff, &"x".repeat(MAX_REASON_CHARS + 1)),
        ] {
            let problem = validate_closure("d1", closure(stage, reason)).unwrap_err();
            assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/reason", "/stage"], "{stage}");
        }

        let mut bad = closure(DeliveryStage::Failed, "gave up");
        bad.delivery.id = "other".into();
        bad.delivery.owner.user_id = " ".into();
        bad.delivery.dropoff.longitude = 181.0;
        bad.delivery.pickup_time = Some("later".into());
        let problem = validate_closure("d1", bad).unwrap_err();
        assert_eq!(
            problem.errors.keys().collect::<Vec<_>>(),
            ["/delivery/dropoff/longitude", "/delivery/id", "/delivery/owner/userId", "/delivery/pickupTime"]
        );
    }

    #[test]
    fn put_drops_the_clients_stage_and_names_bad_fields() {
        assert_eq!(validate_delivery("d1", delivery()).unwrap().stage, None);
        let mut bad = delivery();
        bad.id = "other".into();
        bad.drone_id = " ".into();
        bad.pickup.latitude = 120.0;
        bad.deadline = "tomorrow".into();
        let problem = validate_delivery("d1", bad).unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/deadline", "/droneId", "/id", "/pickup/latitude"]);
    }

    #[test]
    fn notify_me_needs_a_well_formed_channel() {
        assert!(validate_notify(NotifyMeRequest::default()).is_err());
        let blank = NotifyMeRequest { email_address: Some(" ".into()), sms: Some("".into()) };
        assert_eq!(validate_notify(blank).unwrap_err().errors.keys().collect::<Vec<_>>(), ["/"]);
        let email = validate_notify(NotifyMeRequest { email_address: Some(" a@b.co ".into()), sms: None }).unwrap();
        assert_eq!(email, NotifyMeRequest { email_address: Some("a@b.co".into()), sms: None }, "trimmed");
        let sms = validate_notify(NotifyMeRequest { email_address: None, sms: Some("+1 425-555-0100".into()) });
        assert_eq!(sms.unwrap().sms.as_deref(), Some("+14255550100"), "kept in E.164 form");
        let problem = validate_notify(NotifyMeRequest { email_address: Some("nope".into()), sms: Some("12ab".into()) })
            .unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/emailAddress", "/sms"]);
        let local = NotifyMeRequest { email_address: Some("pat@contoso.com".into()), sms: Some("4255550100".into()) };
        let problem = validate_notify(local).unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/sms"], "a number needs its country code");
    }

    #[test]
    fn reschedule_applies_only_what_is_given() {
        let change = RescheduledDelivery { dropoff: Some(Location::new(47.5, -122.2, 0.0)), ..Default::default() };
        validate_reschedule(&change).unwrap();
        let moved = rescheduled(delivery(), &change);
        assert_eq!(moved.dropoff.latitude, 47.5);
        assert_eq!(moved.pickup, delivery().pickup);
        assert!(validate_reschedule(&RescheduledDelivery::default()).is_err());
    }

    #[test]
    fn locations_name_each_bad_coordinate() {
        let mut errors = Errors::new();
        check_location(&Location::new(90.0, -180.0, 0.0), "/pickup", &mut errors);
        assert!(errors.is_empty(), "the bounds are inclusive");
        check_location(&Location::new(-90.5, 180.5, f64::NAN), "/dropoff", &mut errors);
        check_location(&Location::new(f64::INFINITY, 0.0, 0.0), "/pickup", &mut errors);
        assert_eq!(
            errors.keys().collect::<Vec<_>>(),
            ["/dropoff/altitude", "/dropoff/latitude", "/dropoff/longitude", "/pickup/latitude"]
        );
    }

    #[test]
    fn times_are_rfc_3339_and_deadline_may_be_empty() {
        let mut errors = Errors::new();
        check_time("", "/deadline", true, &mut errors);
        check_time("2026-03-15T12:00:00Z", "/deadline", true, &mut errors);
        check_time("2026-03-15T12:00:00.123+02:00", "/pickupTime", false, &mut errors);
        assert!(errors.is_empty());
        check_time("", "/pickupTime", false, &mut errors);
        check_time("2026-03-15", "/deadline", true, &mut errors);
        assert_eq!(errors.keys().collect::<Vec<_>>(), ["/deadline", "/pickupTime"]);
    }

    #[test]
    fn email_and_phone_shapes() {
        let local_64 = format!("{}@contoso.com", "a".repeat(64));
        let long_domain = format!("pat@{}.com", ["a".repeat(63).as_str(); 3].join("."));
        for good in [
            "pat@contoso.com",
            "a.b+c@mail.example.co.uk",
            "o'brien@contoso.com",
            "x_y-z@sub-domain.contoso.io",
            "PAT@CONTOSO.COM",
            "pat@xn--bcher-kva.xn--p1ai",
            "1@2.example",
            &local_64,
            &long_domain,
        ] {
            assert!(is_email(good), "{good}");
        }
        let local_65 = format!("{}@contoso.com", "a".repeat(65));
        let label_64 = format!("pat@{}.com", "a".repeat(64));
        let too_long = format!("{}@{}.com", "a".repeat(64), ["b".repeat(60).as_str(); 4].join("."));
        for bad in [
            "pat",
            "@contoso.com",
            "pat@",
            "pat@contoso",
            "pat@.com",
            "pat@contoso.",
            "p at@contoso.com",
            "pat@@contoso.com",
            "pat@contoso@com.com",
            ".pat@contoso.com",
            "pat.@contoso.com",
            "pa..t@contoso.com",
            "pat@contoso..com",
            "pat@-contoso.com",
            "pat@contoso-.com",
            "pat@con_toso.com",
            "pat@contoso.c",
            "pat@contoso.c0m",
            "pat@[10.0.0.1]",
            "\"pat\"@contoso.com",
            "pât@contoso.com",
            "pat@bücher.de",
            "pat,x@contoso.com",
            "<pat@contoso.com>",
            "pat@contoso.com\n",
            &local_65,
            &label_64,
            &too_long,
        ] {
            assert!(!is_email(bad), "{bad:?}");
        }
        for (good, canonical) in [
            ("+14255550100", "+14255550100"),
            ("+1 425-555-0100", "+14255550100"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+2901234", "+2901234"),
            ("+123456789012345", "+123456789012345"),
        ] {
            assert_eq!(e164(good).as_deref(), Some(canonical), "{good}");
        }
        for bad in [
            "4255550100",
            "1234567",
            "+123456",
            "+1234567890123456",
            "+0123456789",
            "call me",
            "++14255550100",
            "+ 14255550100",
            "+1  425 555 0100",
            "+1 425 555 0100 ",
            "+1-425-555-0100-",
            "+1 (425) 555-0100",
            "+1.425.555.0100",
            "+١٤٢٥٥٥٥٠١٠٠",
            "+",
        ] {
            assert_eq!(e164(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reschedule_and_confirmation_name_bad_fields() {
        let change = RescheduledDelivery {
            pickup: Some(Location::new(0.0, 200.0, 0.0)),
            pickup_time: Some("soon".into()),
            ..Default::default()
        };
        let problem = validate_reschedule(&change).unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/pickup/longitude", "/pickupTime"]);
        let confirmation = Confirmation {
            date_time: chrono::Utc::now(),
            geo_coordinates: Location::new(91.0, 0.0, 0.0),
            confirmation_type: ConfirmationType::Picture,
            confirmation_blob: String::new(),
        };
        let problem = validate_confirmation(&confirmation).unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/geoCoordinates/latitude"]);
    }

    #[test]
    fn the_drone_moves_a_delivery_forward_only() {
        use DeliveryStage::*;
        assert_eq!(transition(Created, Action::HeadToPickup), Transition::To(HeadedToPickup));
        assert_eq!(transition(Rescheduled, Action::HeadToPickup), Transition::To(HeadedToPickup));
        assert_eq!(transition(HeadedToPickup, Action::HeadToDropoff), Transition::To(HeadedToDropoff));
        // Skipping ahead: its events may overtake each other.
        assert_eq!(transition(Created, Action::HeadToDropoff), Transition::To(HeadedToDropoff));
        // A stage already reached or passed is old news, not an error.
        assert_eq!(transition(HeadedToPickup, Action::HeadToPickup), Transition::AlreadyDone);
        assert_eq!(transition(HeadedToDropoff, Action::HeadToPickup), Transition::AlreadyDone);
        assert_eq!(transition(HeadedToDropoff, Action::HeadToDropoff), Transition::AlreadyDone);
        // A finished delivery changes for nothing the drone does.
        for stage in [Completed, Cancelled, Failed] {
            for action in [Action::HeadToPickup, Action::HeadToDropoff] {
                assert_eq!(transition(stage, action), Transition::AlreadyDone, "{action:?} on {stage}");
            }
        }
        // The drone's arrival completes it from any stage not yet final.
        assert_eq!(transition(HeadedToDropoff, Action::Complete), Transition::To(Completed));
        assert_eq!(transition(Created, Action::Complete), Transition::To(Completed));
        assert!(matches!(transition(Cancelled, Action::Complete), Transition::Refused(_)));
    }

    #[test]
    fn progress_orders_the_stages_of_a_flight() {
        use DeliveryStage::*;
        assert_eq!(progress(Created), progress(Rescheduled));
        assert!(progress(Rescheduled) < progress(HeadedToPickup));
        assert!(progress(HeadedToPickup) < progress(HeadedToDropoff));
        for stage in [Completed, Cancelled, Failed] {
            assert!(progress(HeadedToDropoff) < progress(stage));
        }
    }

    #[test]
    fn a_rescheduled_delivery_remembers_how_far_its_flight_got() {
        use DeliveryStage::*;
        assert_eq!(tracked_stage(HeadedToPickup, &[Created, HeadedToPickup]), HeadedToPickup, "not rescheduled");
        assert_eq!(tracked_stage(Rescheduled, &[Created, Rescheduled]), Rescheduled, "not flying yet");
        let after_pickup = [Created, HeadedToPickup, HeadedToDropoff, Rescheduled];
        assert_eq!(tracked_stage(Rescheduled, &after_pickup), HeadedToDropoff);
        assert_eq!(tracked_stage(Rescheduled, &[Created, HeadedToPickup, Rescheduled, Rescheduled]), HeadedToPickup);
        // Since it was last (re)created: a failed delivery put again starts over.
        let reopened = [Created, HeadedToPickup, HeadedToDropoff, Failed, Created, Rescheduled];
        assert_eq!(tracked_stage(Rescheduled, &reopened), Rescheduled);
        // So a late HeadedToPickup does not move it back, and a cancel after pickup stays refused.
        assert_eq!(
            transition(tracked_stage(Rescheduled, &after_pickup), Action::HeadToPickup),
            Transition::AlreadyDone
        );
        assert!(matches!(
            transition(tracked_stage(Rescheduled, &after_pickup), Action::Cancel),
            Transition::Refused(_)
        ));
        assert!(needs_history(Rescheduled));
        assert!(!needs_history(HeadedToDropoff) && !needs_history(Created));
    }

    fn tracked(stage: DeliveryStage, reason: Option<&str>) -> DeliveryTrackingEvent {
        DeliveryTrackingEvent {
            delivery_id: "d1".into(),
            stage,
            location: Some(Location::new(47.6, -122.3, 0.0)),
            at: chrono::Utc::now(),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn only_a_cancel_after_pickup_is_noted_and_only_once() {
        use DeliveryStage::*;
        let note = refusal_note(HeadedToDropoff, Action::Cancel, None).unwrap();
        assert_eq!(note, format!("cancel refused: {PICKED_UP}"));
        let Transition::Refused(reason) = transition(HeadedToDropoff, Action::Cancel) else { panic!("allowed") };
        assert!(note.ends_with(&reason), "the note quotes the refusal: {note}");
        for (stage, action) in [
            (Completed, Action::Cancel),
            (Failed, Action::Cancel),
            (HeadedToPickup, Action::Cancel),
            (HeadedToDropoff, Action::Reschedule),
            (Cancelled, Action::Complete),
        ] {
            assert_eq!(refusal_note(stage, action, None), None, "{action:?} on {stage}");
        }
        let moved = refusal_note(HeadedToDropoff, Action::Reschedule, Some("the pickup can no longer move"));
        assert_eq!(moved.as_deref(), Some("reschedule refused: the pickup can no longer move"));
        assert_eq!(refusal_note(Completed, Action::Reschedule, Some("too late")), None, "finished: nothing new");
        let history = [tracked(Created, None), tracked(HeadedToDropoff, None)];
        assert!(!already_noted(&history, &note));
        let noted = [tracked(Created, None), tracked(HeadedToDropoff, None), tracked(HeadedToDropoff, Some(&note))];
        assert!(already_noted(&noted, &note));
        let reopened = [tracked(HeadedToDropoff, Some(&note)), tracked(Failed, Some("x")), tracked(Created, None)];
        assert!(!already_noted(&reopened, &note), "a reopened delivery starts a new history");
    }

    #[test]
    fn each_drone_event_asks_for_its_step() {
        use contracts::events::DronePosition;
        let at = chrono::Utc::now();
        let position = DronePosition { drone_id: "drone-1".into(), location: Location::new(47.6, -122.3, 10.0), at };
        let (location, drone) = (position.location, || position.clone());
        assert_eq!(
            drone_step(DroneEvent::HeadedToPickup(drone())),
            DroneStep::Advance { action: Action::HeadToPickup, location, at }
        );
        assert_eq!(
            drone_step(DroneEvent::HeadedToDropoff(drone())),
            DroneStep::Advance { action: Action::HeadToDropoff, location, at }
        );
        assert_eq!(drone_step(DroneEvent::DroneArrived(drone())), DroneStep::Arrive { location, at });
        assert_eq!(drone_step(DroneEvent::DroneReleased(drone())), DroneStep::Ignore);
        assert_eq!(drone_step(DroneEvent::DronePosition(drone())), DroneStep::Report(drone()));
        let flight = Flight {
            drone_id: "drone-1".into(),
            depot: location,
            origin: None,
            carrying: false,
            pickup: location,
            dropoff: location,
            speed_mph: 40.0,
            time_scale: 60.0,
            departed_at: at,
            pickup_at: at,
            dropoff_at: at,
            back_at: at,
        };
        assert_eq!(drone_step(DroneEvent::DroneAssigned(flight.clone())), DroneStep::RecordFlight(flight));
    }

    #[test]
    fn an_arrival_confirms_as_the_delivery_requires() {
        let at = chrono::Utc::now();
        let mut d = delivery();
        d.confirmation_required = ConfirmationType::Voice;
        let confirmation = arrival_confirmation(&d, d.dropoff, at);
        assert_eq!(
            confirmation,
            Confirmation {
                date_time: at,
                geo_coordinates: d.dropoff,
                confirmation_type: ConfirmationType::Voice,
                confirmation_blob: String::new()
            }
        );
    }

    #[test]
    fn an_event_is_an_orphan_only_past_the_age_limit() {
        let now = chrono::Utc::now();
        let limit = chrono::Duration::seconds(600);
        assert!(!is_orphan(now, now, limit));
        assert!(!is_orphan(now - limit, now, limit), "the limit itself is still waited for");
        assert!(is_orphan(now - limit - chrono::Duration::milliseconds(1), now, limit));
        assert!(!is_orphan(now + chrono::Duration::seconds(5), now, limit), "a clock ahead is no orphan");
    }

    fn flight_from(start: DateTime<Utc>) -> Flight {
        let minute = chrono::Duration::minutes(1);
        Flight {
            drone_id: "drone-1".into(),
            depot: Location::new(47.60, -122.33, 0.0),
            origin: None,
            carrying: false,
            pickup: Location::new(47.62, -122.33, 0.0),
            dropoff: Location::new(47.64, -122.33, 0.0),
            speed_mph: 40.0,
            time_scale: 60.0,
            departed_at: start,
            pickup_at: start + minute * 2,
            dropoff_at: start + minute * 4,
            back_at: start + minute * 6,
        }
    }

    #[test]
    fn the_status_shows_the_flying_drone_until_the_delivery_is_finished() {
        use DeliveryStage::*;
        let start = chrono::Utc::now();
        let flight = flight_from(start);
        let created = [tracked(Created, None)];
        // No flight: the last event's location and no ETAs.
        let status = super::status(&created, None, None, start).unwrap();
        assert_eq!((status.stage, status.last_known_location), (Created, Some(Location::new(47.6, -122.3, 0.0))));
        assert_eq!((status.pickup_eta, status.delivery_eta), (None, None));
        // Flying to the pickup.
        let status = super::status(&created, Some(&flight), None, flight.pickup_at).unwrap();
        assert_eq!(status.last_known_location, Some(flight.pickup));
        assert_eq!((status.pickup_eta, status.delivery_eta), (Some(flight.pickup_at), Some(flight.dropoff_at)));
        // Before departure the drone is not flying for it yet.
        let status = super::status(&created, Some(&flight), None, start - chrono::Duration::seconds(1)).unwrap();
        assert_eq!(status.last_known_location, created[0].location);
        assert_eq!(status.pickup_eta, Some(flight.pickup_at));
        // The package on board: no pickup ETA, even after a reschedule.
        for history in [vec![tracked(Created, None), tracked(HeadedToDropoff, None)], {
            vec![tracked(Created, None), tracked(HeadedToDropoff, None), tracked(Rescheduled, None)]
        }] {
            let status = super::status(&history, Some(&flight), None, flight.pickup_at).unwrap();
            assert_eq!((status.pickup_eta, status.delivery_eta), (None, Some(flight.dropoff_at)));
        }
        // Finished: the last event's location, no ETAs.
        let mut done = tracked(Completed, None);
        done.location = Some(flight.dropoff);
        let history = [tracked(Created, None), done];
        let status = super::status(&history, Some(&flight), None, flight.pickup_at).unwrap();
        assert_eq!(status.last_known_location, Some(flight.dropoff));
        assert_eq!((status.pickup_eta, status.delivery_eta), (None, None));
        assert_eq!(super::status(&[], Some(&flight), None, start), None, "no events: no delivery");
    }

    #[test]
    fn without_a_flight_plan_the_newest_of_reports_and_events_is_shown() {
        use contracts::events::DronePosition;
        let created = tracked(DeliveryStage::Created, None);
        let report = |secs: i64, lat: f64| DronePosition {
            drone_id: "drone-1".into(),
            location: Location::new(lat, -122.3, 30.0),
            at: created.at + chrono::Duration::seconds(secs),
        };
        let status = |events: &[DeliveryTrackingEvent], reported: Option<&DronePosition>| {
            super::status(events, None, reported, created.at).unwrap().last_known_location
        };
        let events = [created.clone()];
        // A report after the latest event is where the drone is.
        assert_eq!(status(&events, Some(&report(5, 47.61))), Some(Location::new(47.61, -122.3, 30.0)));
        // One older than the latest event does not move it back.
        assert_eq!(status(&events, Some(&report(-5, 47.61))), created.location);
        assert_eq!(status(&events, None), created.location);
        // Events without a location: the report.
        let unplaced = [DeliveryTrackingEvent { location: None, ..created.clone() }];
        assert_eq!(status(&unplaced, Some(&report(-5, 47.61))), Some(Location::new(47.61, -122.3, 30.0)));
        // With a live flight, the plan at `now` wins: it is as new as it gets.
        let flight = flight_from(created.at);
        let planned = super::status(&events, Some(&flight), Some(&report(5, 47.61)), flight.pickup_at).unwrap();
        assert_eq!(planned.last_known_location, Some(flight.pickup));
    }

    #[test]
    fn the_reason_is_that_of_the_current_stage() {
        use DeliveryStage::*;
        let failed = [tracked(Created, None), tracked(Failed, Some("gave up"))];
        assert_eq!(status_reason(&failed).as_deref(), Some("gave up"));
        let refused = [tracked(HeadedToDropoff, None), tracked(HeadedToDropoff, Some("cancel refused: x"))];
        assert_eq!(status_reason(&refused).as_deref(), Some("cancel refused: x"));
        let then_delivered = [tracked(HeadedToDropoff, Some("cancel refused: x")), tracked(Completed, None)];
        assert_eq!(status_reason(&then_delivered), None);
        let reopened = [tracked(Created, None), tracked(Failed, Some("gave up")), tracked(Created, None)];
        assert_eq!(status_reason(&reopened), None, "a reopened delivery no longer shows why it failed");
        assert_eq!(status_reason(&[]), None);
    }

    #[test]
    fn final_stages_never_change() {
        use DeliveryStage::*;
        for stage in [Created, Rescheduled, HeadedToPickup, HeadedToDropoff] {
            assert!(!is_final(stage), "{stage}");
            assert_eq!(transition(stage, Action::Complete), Transition::To(Completed));
        }
        for stage in [Completed, Cancelled, Failed] {
            assert!(is_final(stage));
            assert!(matches!(transition(stage, Action::Reschedule), Transition::Refused(_)));
        }
        for text in DeliveryStage::ALL {
            let stage: DeliveryStage = text.parse().unwrap();
            assert_eq!(is_final(stage), stage.is_final(), "the service and the contract agree on {stage}");
        }
    }
}
