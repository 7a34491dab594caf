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
}

/// `GET /api/deliveries/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveriesSummary {
    pub count: u64,
}
