//! The package service's API shapes.

use serde::{Deserialize, Serialize};

/// `PUT /api/packages/{id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageUpsert {
    /// `small`, `medium` or `large` (any case accepted).
    pub size: String,
    /// Kilograms.
    pub weight: f64,
    #[serde(default)]
    pub tag: Option<String>,
    /// The business that sent it; used by the monthly summary.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// The account the package's delivery was requested by; the summary counts only the
    /// caller's account's packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// A stored package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub id: String,
    pub size: String,
    pub weight: f64,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

/// `PATCH /api/packages/{id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PackagePatch {
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// `GET /api/packages/summary/{ownerId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageSummary {
    pub total_weight: f64,
}
