//! Where the fleet and its assignments live: the [`DroneStore`] port and its backends.

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::drone::DroneAssignment;
use platform::query::Month;

pub use postgres::PostgresDroneStore;
pub use sqlite::SqliteDroneStore;

use crate::domain::{AssignmentRequest, Depot, DroneRecord, FleetConfig};

pub type StoreError = sqlx::Error;

/// What an assignment did.
#[derive(Debug, Clone, PartialEq)]
pub enum Assigned {
    /// A drone was assigned now, or had been earlier for this delivery (same answer).
    Drone(DroneAssignment),
    /// The delivery was cancelled and its drone released: it must not get one again.
    Released,
    /// No free drone can carry the package now; one will be after its flight.
    NoneFree,
    /// No drone of the stored fleet can ever carry the package: its heaviest payload, kg.
    TooHeavy(f64),
}

/// The fleet repository. Assignment and release are atomic: a drone never serves two
/// deliveries at once, and a delivery never gets two drones.
#[async_trait]
pub trait DroneStore: Send + Sync {
    /// Creates the depots and the fleet when the store has no drones; keeps an existing fleet.
    async fn seed(&self, depots: &[Depot], fleet: &[DroneRecord]) -> Result<(), StoreError>;
    /// Assigns the chosen drone to the delivery in one transaction, or returns the delivery's
    /// earlier answer unchanged (`Drone` again, or `Released` once it was cancelled).
    async fn assign(
        &self,
        request: &AssignmentRequest,
        now: DateTime<Utc>,
        fleet: &FleetConfig,
    ) -> Result<Assigned, StoreError>;
    /// Frees the delivery's drone; for a delivery with no assignment yet, records the release
    /// so that a later assignment is refused. Idempotent.
    async fn release(&self, delivery_id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Miles and hours of the owner's flown (not released) assignments in `month`; `None` if none.
    async fn utilization(&self, owner_id: &str, month: Month) -> Result<Option<(f64, f64)>, StoreError>;
    async fn drones(&self) -> Result<Vec<DroneRecord>, StoreError>;
    async fn drone(&self, id: &str) -> Result<Option<DroneRecord>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
