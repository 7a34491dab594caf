//! Wire types that cross Fabrikam service boundaries: the public request shapes (kept
//! compatible with the reference implementation), the internal service DTOs, and the messages
//! on the bus. camelCase JSON throughout.
//!
//! Only shapes live here; rules about what is valid live with the service that decides.

mod common;
pub mod delivery;
pub mod drone;
pub mod events;
pub mod messages;
pub mod package;
pub mod requests;

pub use common::{ConfirmationType, ContainerSize, DeliveryStage, Location, UnknownVariant, UserAccount};
