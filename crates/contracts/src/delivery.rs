//! The delivery service's API shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ConfirmationType, DeliveryStage, Location, UserAccount};

/// A scheduled or in-flight delivery (`PUT /api/deliveries/{id}` and the reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub owner: UserAccount,
    pub pickup: Location,
    pub dropoff: Location,
    #[serde(default)]
    pub deadline: String,
    #[serde(default)]
    pub expedited: bool,
    #[serde(default = "no_confirmation")]
    pub confirmation_required: ConfirmationType,
    pub drone_id: String,
    /// Set by the delivery service; ignored on PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<DeliveryStage>,
    /// Requested pickup time (RFC 3339), an addition to the reference shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_time: Option<String>,
    /// The package this delivery carries, an addition to the reference shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_id: Option<String>,
}

fn no_confirmation() -> ConfirmationType {
    ConfirmationType::None
}

/// `GET /api/deliveries/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    pub stage: DeliveryStage,
    pub last_known_location: Option<Location>,
    #[serde(rename = "pickupETA")]
    pub pickup_eta: Option<DateTime<Utc>>,
    #[serde(rename = "deliveryETA")]
    pub delivery_eta: Option<DateTime<Utc>>,
    /// Why the delivery is Cancelled or Failed, when known; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PATCH /api/deliveries/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RescheduledDelivery {
    #[serde(default)]
    pub pickup: Option<Location>,
    #[serde(default)]
    pub dropoff: Option<Location>,
    #[serde(default)]
    pub deadline: Option<String>,
    #[serde(default)]
    pub pickup_time: Option<String>,
}

/// `POST /api/deliveries/{id}/refusals` (internal, for the workflow): a change another service
/// refused for the delivery, to be shown on its status. `action` is `reschedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRefusal {
    pub action: String,
    pub reason: String,
}

/// `POST /api/deliveries/{id}/notifymerequests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotifyMeRequest {
    #[serde(default, alias = "EmailAddress")]
    pub email_address: Option<String>,
    #[serde(default, alias = "SMS")]
    pub sms: Option<String>,
}

/// `POST /api/deliveries/{id}/confirmations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Confirmation {
    pub date_time: DateTime<Utc>,
    pub geo_coordinates: Location,
    pub confirmation_type: ConfirmationType,
    #[serde(default)]
    pub confirmation_blob: String,
}

/// One change of stage, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryTrackingEvent {
    pub delivery_id: String,
    pub stage: DeliveryStage,
    pub location: Option<Location>,
    pub at: DateTime<Utc>,
    /// Why the delivery changed stage, when the change came with one (a closure's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /api/deliveries/{id}/closure`: records that a delivery will never fly. `stage` is
/// `Failed` (the workflow gave up on it) or `Cancelled`; the delivery is created in that stage
/// when the service does not have it yet, so `delivery` carries what a PUT would (`droneId` may
/// be empty: no drone was ever assigned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryClosure {
    pub delivery: Delivery,
    pub stage: DeliveryStage,
    /// Why it will never fly (1 to 500 characters). Absent reads as empty, which the service
    /// rejects naming `/reason`.
    #[serde(default)]
    pub reason: String,
}

/// `GET /api/deliveries/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveriesSummary {
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_status_shows_a_reason_only_when_it_has_one() {
        let status = DeliveryStatus {
            stage: DeliveryStage::Created,
            last_known_location: None,
            pickup_eta: None,
            delivery_eta: None,
            reason: None,
        };
        let written = serde_json::to_value(&status).unwrap();
        assert_eq!(
            written,
            json!({ "stage": "Created", "lastKnownLocation": null, "pickupETA": null, "deliveryETA": null })
        );
        assert_eq!(serde_json::from_value::<DeliveryStatus>(written).unwrap(), status);
        let failed = DeliveryStatus { stage: DeliveryStage::Failed, reason: Some("no drone".into()), ..status };
        assert_eq!(serde_json::to_value(&failed).unwrap()["reason"], "no drone");
    }

    #[test]
    fn a_closure_is_camel_case() {
        let closure: DeliveryClosure = serde_json::from_value(json!({
            "delivery": {
                "id": "d1",
                "owner": { "userId": "u", "accountId": "a" },
                "pickup": { "latitude": 47.6, "longitude": -122.3 },
                "dropoff": { "latitude": 47.7, "longitude": -122.3 },
                "droneId": ""
            },
            "stage": "failed",
            "reason": "the deadline passed"
        }))
        .unwrap();
        assert_eq!((closure.stage, closure.reason.as_str()), (DeliveryStage::Failed, "the deadline passed"));
        let written = serde_json::to_value(&closure).unwrap();
        assert_eq!(written["stage"], "Failed");
        assert_eq!(written["delivery"]["droneId"], "");
    }
}
