//! What the delivery service decides: valid input, and which stage changes are allowed.
//! Pure: no I/O.

use std::collections::BTreeMap;

use chrono::DateTime;
use contracts::DeliveryStage;
use contracts::Location;
use contracts::delivery::{Confirmation, Delivery, DeliveryClosure, NotifyMeRequest, RescheduledDelivery};
use platform::Problem;

type Errors = BTreeMap<String, String>;

/// The longest reason a closure may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// What a client asks to do to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reschedule,
    Cancel,
    Complete,
    /// The workflow gave up on the delivery: it will never fly.
    Fail,
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
/// changes again.
pub fn transition(current: DeliveryStage, action: Action) -> Transition {
    use DeliveryStage::*;
    match (action, current) {
        (Action::Cancel, Cancelled) | (Action::Complete, Completed) | (Action::Fail, Failed) => Transition::AlreadyDone,
        (_, stage) if is_final(stage) => Transition::Refused(format!("the delivery is already {current}")),
        (Action::Cancel, HeadedToDropoff) => {
            Transition::Refused("the drone has picked the package up; it can no longer be cancelled".to_owned())
        }
        (Action::Reschedule, _) => Transition::To(Rescheduled),
        (Action::Cancel, _) => Transition::To(Cancelled),
        (Action::Complete, _) => Transition::To(Completed),
        (Action::Fail, _) => Transition::To(Failed),
    }
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
        errors.insert("/emailAddress".to_owned(), "must look like name@example.com".to_owned());
    }
    if sms.as_deref().is_some_and(|s| !is_phone_number(s)) {
        errors.insert("/sms".to_owned(), "must be a phone number: optional +, then 7 to 15 digits".to_owned());
    }
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

fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else { return false };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && text.len() <= 254
        && !text.chars().any(char::is_whitespace)
        && labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
}

fn is_phone_number(text: &str) -> bool {
    let body = text.strip_prefix('+').unwrap_or(text);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    body.chars().all(|c| c.is_ascii_digit() || c == ' ' || c == '-') && (7..=15).contains(&digits)
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
        assert!(validate_notify(NotifyMeRequest { email_address: Some("a@b.co".into()), sms: None }).is_ok());
        assert!(validate_notify(NotifyMeRequest { email_address: None, sms: Some("+1 425-555-0100".into()) }).is_ok());
        let problem = validate_notify(NotifyMeRequest { email_address: Some("nope".into()), sms: Some("12ab".into()) })
            .unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/emailAddress", "/sms"]);
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
        for good in ["pat@contoso.com", "a.b+c@mail.example.co.uk"] {
            assert!(is_email(good), "{good}");
        }
        for bad in ["pat", "@contoso.com", "pat@contoso", "pat@.com", "pat@contoso.", "p at@contoso.com"] {
            assert!(!is_email(bad), "{bad}");
        }
        for good in ["4255550100", "+1 425-555-0100", "1234567", "+123456789012345"] {
            assert!(is_phone_number(good), "{good}");
        }
        for bad in ["123456", "+1234567890123456", "call me", "++1234567", "425.555.0100", "+"] {
            assert!(!is_phone_number(bad), "{bad}");
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
