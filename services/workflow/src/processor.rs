//! Carries out one message: the steps of a delivery, a reschedule or a cancel.

use std::sync::Arc;

use chrono::Utc;
use contracts::messages::{DeliveryCommand, DeliveryRequestEnvelope};
use contracts::requests::{DeliveryRequest, RescheduleRequest};
use platform::geo::Geocoder;

use crate::domain::{self, Failure};
use crate::downstream::{Assigned, Changed, Downstreams};

/// How a message ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Package stored, drone assigned, delivery created.
    Scheduled {
        drone_id: String,
    },
    /// The delivery was cancelled before it could be scheduled; nothing to do.
    AlreadyCancelled,
    Rescheduled,
    Cancelled,
    /// The delivery had completed or been cancelled; the change no longer applies.
    TooLate,
}

impl Done {
    pub fn label(&self) -> &'static str {
        match self {
            Done::Scheduled { .. } => "scheduled",
            Done::AlreadyCancelled => "already_cancelled",
            Done::Rescheduled => "rescheduled",
            Done::Cancelled => "cancelled",
            Done::TooLate => "too_late",
        }
    }
}

/// Runs the workflow steps against the downstream services.
#[derive(Clone)]
pub struct Processor {
    pub downstreams: Downstreams,
    pub geocoder: Arc<dyn Geocoder>,
}

impl Processor {
    pub async fn process(&self, envelope: &DeliveryRequestEnvelope) -> Result<Done, Failure> {
        let id = envelope.delivery_id.as_str();
        match &envelope.command {
            DeliveryCommand::Delivery(request) => self.schedule(id, request, envelope).await,
            DeliveryCommand::Reschedule(change) => self.reschedule(id, change).await,
            DeliveryCommand::Cancel(_) => self.cancel(id).await,
        }
    }

    async fn schedule(
        &self,
        id: &str,
        request: &DeliveryRequest,
        envelope: &DeliveryRequestEnvelope,
    ) -> Result<Done, Failure> {
        let geocode = |place: &str| {
            domain::locate(&*self.geocoder, place).map_err(|e| Failure::Permanent(format!("place {place:?}: {e}")))
        };
        let pickup = geocode(&request.pickup_location)?;
        let dropoff = geocode(&request.drop_off_location)?;

        self.downstreams.upsert_package(&request.package_info.package_id, &domain::package_upsert(request)).await?;
        let drone_request = domain::drone_request(id, request, pickup, dropoff);
        let assignment = match self.downstreams.assign_drone(&drone_request).await? {
            Assigned::Drone(assignment) => assignment,
            Assigned::Cancelled => return Ok(Done::AlreadyCancelled),
        };
        let delivery = domain::delivery(id, request, pickup, dropoff, &assignment.drone_id);
        self.downstreams.create_delivery(&delivery).await?;

        let waited = (Utc::now() - envelope.occurred_at).to_std().unwrap_or_default();
        metrics::histogram!("delivery_accept_to_scheduled_seconds", "service" => crate::SERVICE)
            .record(waited.as_secs_f64());
        metrics::counter!("deliveries_scheduled_total", "service" => crate::SERVICE).increment(1);
        tracing::info!(delivery_id = id, drone_id = %assignment.drone_id, waited_ms = waited.as_millis() as u64, "delivery scheduled");
        Ok(Done::Scheduled { drone_id: assignment.drone_id })
    }

    async fn reschedule(&self, id: &str, change: &RescheduleRequest) -> Result<Done, Failure> {
        let change = domain::rescheduled(&*self.geocoder, change).map_err(|e| Failure::Permanent(e.to_string()))?;
        match self.downstreams.reschedule_delivery(id, &change).await? {
            Changed::Applied => Ok(Done::Rescheduled),
            Changed::Final => Ok(Done::TooLate),
            Changed::NotFound => Err(not_created_yet(id)),
        }
    }

    /// Cancels the delivery, then releases its drone. Releasing also fences off an assignment
    /// that has not happened yet: the scheduler refuses (409) to assign a released delivery.
    async fn cancel(&self, id: &str) -> Result<Done, Failure> {
        let outcome = self.downstreams.cancel_delivery(id).await?;
        if outcome == Changed::Final {
            return Ok(Done::TooLate);
        }
        self.downstreams.release_drone(id).await?;
        Ok(Done::Cancelled)
    }
}

fn not_created_yet(id: &str) -> Failure {
    Failure::Transient {
        reason: format!("delivery {id} is not created yet; its request may still be queued"),
        retry_after: None,
    }
}
