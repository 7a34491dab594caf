//! The public delivery-request shapes (ingestion), as the reference's clients send them.

use serde::{Deserialize, Serialize};

use crate::{ConfirmationType, ContainerSize};

/// `POST /api/deliveryrequests`, and the same document echoed back with `deliveryId` set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub owner_id: String,
    pub pickup_location: String,
    #[serde(alias = "dropoffLocation")]
    pub drop_off_location: String,
    /// RFC 3339.
    pub pickup_time: String,
    /// RFC 3339 or empty.
    #[serde(default)]
    pub deadline: String,
    #[serde(default)]
    pub expedited: bool,
    #[serde(default = "no_confirmation")]
    pub confirmation_required: ConfirmationType,
    pub package_info: PackageInfo,
}

fn no_confirmation() -> ConfirmationType {
    ConfirmationType::None
}

/// The package part of a delivery request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageInfo {
    pub package_id: String,
    pub size: ContainerSize,
    /// Kilograms.
    #[serde(default)]
    pub weight: f64,
    #[serde(default)]
    pub tag: String,
}

/// `PATCH /api/deliveryrequests/{id}`: any of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RescheduleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "dropoffLocation")]
    pub drop_off_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// The delivery request the reference implementation uses to validate a deployment; clients,
/// docs and tests use it as the canonical example.
pub fn reference_validation_request() -> serde_json::Value {
    serde_json::json!({
        "ownerId": "myowner",
        "pickupLocation": "my pickup",
        "dropOffLocation": "drop off",
        "pickupTime": "2019-05-08T20:00:00.000Z",
        "deadline": "",
        "expedited": true,
        "confirmationRequired": "None",
        "packageInfo": { "packageId": "mypackage", "size": "Small", "weight": 10, "tag": "mytag" }
    })
}
