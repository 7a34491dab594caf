//! The drone scheduler's API shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Location;

/// `PUT /api/dronedeliveries/{deliveryId}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroneDeliveryRequest {
    pub delivery_id: String,
    pub owner_id: String,
    pub pickup: Location,
    pub dropoff: Location,
    pub package_detail: PackageDetail,
    #[serde(default)]
    pub expedited: bool,
    /// The account that requested the delivery; utilization counts only the caller's
    /// account's flights. Absent: the owner stands for the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// `PATCH /api/dronedeliveries/{deliveryId}` body: the delivery's new places (absent: as
/// planned). The answer is the flight the drone now flies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DroneReroute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropoff: Option<Location>,
}

/// What the drone must carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageDetail {
    pub id: String,
    /// `small`, `medium` or `large`.
    pub size: String,
    /// Kilograms.
    pub weight: f64,
}

/// The answer to an assignment: the drone that flies this delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroneAssignment {
    pub drone_id: String,
    pub delivery_id: String,
    pub owner_id: String,
    pub depot_id: String,
    pub assigned_at: DateTime<Utc>,
    /// Depot → pickup → drop-off → depot.
    pub traveled_miles: f64,
    pub assigned_hours: f64,
    /// When the drone is back at its depot and free again.
    pub busy_until: DateTime<Utc>,
    pub released: bool,
}

/// `GET /api/dronedeliveries/utilization`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroneUtilization {
    pub traveled_miles: f64,
    pub assigned_hours: f64,
}

/// A drone as `GET /api/drones` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drone {
    pub id: String,
    pub depot_id: String,
    pub location: Location,
    /// Kilograms.
    pub max_payload: f64,
    /// Miles per hour.
    pub speed_mph: f64,
    /// `idle`, or while it flies a delivery `flying-to-pickup`, `flying-to-dropoff` or
    /// `returning` (after the drop-off, or turned back by a cancel before the pickup).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_delivery_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_until: Option<DateTime<Utc>>,
}
