//! What the workflow decides, without I/O: the downstream requests a delivery request turns
//! into, and what to do with a message after a failure.

use std::time::Duration;

use contracts::delivery::{Delivery, RescheduledDelivery};
use contracts::drone::{DroneDeliveryRequest, PackageDetail};
use contracts::package::PackageUpsert;
use contracts::requests::{DeliveryRequest, RescheduleRequest};
use contracts::{Location, UserAccount};
use platform::backoff::Backoff;
use platform::client::CallError;
use platform::geo::{GeocodeError, Geocoder};

/// Turns a place string into a location.
pub fn locate(geocoder: &dyn Geocoder, place: &str) -> Result<Location, GeocodeError> {
    let p = geocoder.locate(place)?;
    Ok(Location::new(p.latitude, p.longitude, p.altitude))
}

/// The package service's view of the request's package.
pub fn package_upsert(request: &DeliveryRequest) -> PackageUpsert {
    let info = &request.package_info;
    PackageUpsert {
        size: info.size.lower().to_owned(),
        weight: info.weight,
        tag: (!info.tag.is_empty()).then(|| info.tag.clone()),
        owner_id: Some(request.owner_id.clone()),
        account_id: None,
    }
}

/// What the drone scheduler needs to pick a drone.
pub fn drone_request(
    delivery_id: &str,
    request: &DeliveryRequest,
    pickup: Location,
    dropoff: Location,
) -> DroneDeliveryRequest {
    DroneDeliveryRequest {
        delivery_id: delivery_id.to_owned(),
        owner_id: request.owner_id.clone(),
        pickup,
        dropoff,
        package_detail: PackageDetail {
            id: request.package_info.package_id.clone(),
            size: request.package_info.size.lower().to_owned(),
            weight: request.package_info.weight,
        },
        expedited: request.expedited,
        account_id: None,
    }
}

/// The delivery record, with the request's own owner, places, flag and package.
pub fn delivery(
    delivery_id: &str,
    request: &DeliveryRequest,
    pickup: Location,
    dropoff: Location,
    drone_id: &str,
) -> Delivery {
    Delivery {
        id: delivery_id.to_owned(),
        // Without an account from the gateway, the business that asked is both the user and the
        // account; the processor sets the gateway's account when the request carried one.
        owner: UserAccount { user_id: request.owner_id.clone(), account_id: request.owner_id.clone() },
        pickup,
        dropoff,
        deadline: request.deadline.clone(),
        expedited: request.expedited,
        confirmation_required: request.confirmation_required,
        drone_id: drone_id.to_owned(),
        stage: None,
        pickup_time: Some(request.pickup_time.clone()),
        package_id: Some(request.package_info.package_id.clone()),
    }
}

/// The delivery service's view of a reschedule.
pub fn rescheduled(geocoder: &dyn Geocoder, request: &RescheduleRequest) -> Result<RescheduledDelivery, GeocodeError> {
    Ok(RescheduledDelivery {
        pickup: request.pickup_location.as_deref().map(|p| locate(geocoder, p)).transpose()?,
        dropoff: request.drop_off_location.as_deref().map(|p| locate(geocoder, p)).transpose()?,
        deadline: request.deadline.clone(),
        pickup_time: request.pickup_time.clone(),
    })
}

/// Why processing a message stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Trying again later may work (a downstream is down, busy, or not ready for this step yet).
    Transient { reason: String, retry_after: Option<Duration> },
    /// Trying again cannot work; keep the message for an operator.
    Permanent(String),
}

impl From<CallError> for Failure {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Transient { reason, retry_after } => Failure::Transient { reason, retry_after },
            CallError::Permanent { reason, .. } => Failure::Permanent(reason),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient { reason, .. } => write!(f, "transient: {reason}"),
            Failure::Permanent(reason) => write!(f, "permanent: {reason}"),
        }
    }
}

/// What to do with a message after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    RetryAfter(Duration, String),
    DeadLetter(String),
}

/// Transient failures come back after the downstream's `Retry-After` when it gave one (never
/// sooner than the backoff floor), otherwise after exponential backoff with jitter.
pub fn settle_failure(failure: Failure, attempt: u32, backoff: &Backoff) -> Settle {
    match failure {
        Failure::Permanent(reason) => Settle::DeadLetter(reason),
        Failure::Transient { reason, retry_after } => {
            let backoff_delay = backoff.delay(attempt);
            let delay = match retry_after {
                Some(asked) => asked.max(backoff.base) + (backoff_delay / 4).min(Duration::from_secs(2)),
                None => backoff_delay,
            };
            Settle::RetryAfter(delay, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use contracts::requests::PackageInfo;
    use contracts::{ConfirmationType, ContainerSize};
    use platform::geo::HashingGeocoder;

    use super::*;

    fn request() -> DeliveryRequest {
        DeliveryRequest {
            delivery_id: Some("d1".to_owned()),
            owner_id: "contoso".to_owned(),
            pickup_location: "47.6,-122.3".to_owned(),
            drop_off_location: "Space Needle".to_owned(),
            pickup_time: "2026-11-26T10:00:00Z".to_owned(),
            deadline: String::new(),
            expedited: true,
            confirmation_required: ConfirmationType::Picture,
            package_info: PackageInfo {
                package_id: "p1".to_owned(),
                size: ContainerSize::Medium,
                weight: 4.0,
                tag: String::new(),
            },
        }
    }

    #[test]
    fn the_delivery_keeps_the_requests_own_data() {
        let g = HashingGeocoder::default();
        let r = request();
        let pickup = locate(&g, &r.pickup_location).unwrap();
        let dropoff = locate(&g, &r.drop_off_location).unwrap();
        assert_eq!(pickup, Location::new(47.6, -122.3, 0.0));
        let d = delivery("d1", &r, pickup, dropoff, "drone-0001");
        assert_eq!(d.owner.user_id, "contoso");
        assert!(d.expedited);
        assert_eq!(d.confirmation_required, ConfirmationType::Picture);
        assert_eq!(d.package_id.as_deref(), Some("p1"));
        let drone = drone_request("d1", &r, pickup, dropoff);
        assert!(drone.expedited, "the reference always sent false");
        assert_eq!(drone.package_detail.size, "medium");
        assert_eq!(package_upsert(&r).owner_id.as_deref(), Some("contoso"));
    }

    #[test]
    fn failures_settle_by_kind() {
        let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10) };
        assert_eq!(settle_failure(Failure::Permanent("bad".into()), 1, &backoff), Settle::DeadLetter("bad".into()));
        let busy = Failure::Transient { reason: "no drone".into(), retry_after: Some(Duration::from_secs(5)) };
        let Settle::RetryAfter(delay, _) = settle_failure(busy, 1, &backoff) else { panic!() };
        assert!(delay >= Duration::from_secs(5) && delay < Duration::from_secs(6), "{delay:?}");
        let down = Failure::Transient { reason: "refused".into(), retry_after: None };
        let Settle::RetryAfter(delay, _) = settle_failure(down, 3, &backoff) else { panic!() };
        assert!(delay >= Duration::from_millis(200) && delay <= Duration::from_millis(400), "{delay:?}");
    }
}
