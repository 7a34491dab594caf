//! Carries out one message: the steps of a delivery, a reschedule or a cancel, recorded in the
//! workflow store so that a restarted or a second workflow process resumes where this one was,
//! and so that a delivery that cannot be scheduled is compensated (drone released, delivery
//! marked failed with the reason) instead of left half done.
//!
//! On the happy path the record is written once, when the delivery is scheduled; failures,
//! cancels and giving up write it as they happen. Records are saved with optimistic concurrency: when another process changed the record
//! since it was read (a cancel racing the request, the supervisor giving up on it), the save
//! loses, and the message is carried out again against the new state. Every downstream call is
//! idempotent, so doing a step twice is harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::drone::DroneReroute;
use contracts::messages::{DeliveryCommand, DeliveryRequestEnvelope};
use contracts::requests::{DeliveryRequest, RescheduleRequest};
use contracts::{DeliveryStage, Location};
use platform::clock::SharedClock;
use platform::geo::Geocoder;

use crate::domain::{self, Failure};
use crate::downstream::{Assigned, Changed, Downstreams, Rerouted};
use crate::state::{Step, WorkflowRecord, WorkflowStatus};
use crate::store::{Saved, StoreError, WorkflowStore};

/// How a message ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Package stored, drone assigned, delivery created (now or by an earlier delivery).
    Scheduled {
        drone_id: String,
    },
    /// The delivery was cancelled before it could be scheduled; it shows as cancelled.
    AlreadyCancelled,
    Rescheduled,
    Cancelled,
    /// The delivery had completed, failed or been cancelled; the change no longer applies.
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

/// The reason a delivery shows when its cancel came before it was scheduled.
pub const CANCELLED_BEFORE_SCHEDULING: &str = "cancelled before it was scheduled";

/// Saves that lose to another writer in a row before the message is retried later instead.
const MAX_CONFLICTS: usize = 5;

/// Runs the workflow steps against the downstream services.
#[derive(Clone)]
pub struct Processor {
    pub downstreams: Downstreams,
    pub geocoder: Arc<dyn Geocoder>,
    pub store: Arc<dyn WorkflowStore>,
    pub clock: SharedClock,
    /// How long after it was accepted a request must be done; past that it is given up.
    pub complete_within: Duration,
}

/// What one pass over the record decided.
enum Pass<T> {
    Finished(T),
    /// Another writer changed the record: read it again and redo the pass.
    Conflict,
}

impl Processor {
    /// Carries out `envelope`; `attempt` is the message's delivery count (1: first delivery,
    /// or an operator's replay of a dead letter).
    pub async fn process(&self, envelope: &DeliveryRequestEnvelope, attempt: u32) -> Result<Done, Failure> {
        let id = envelope.delivery_id.as_str();
        let deadline = envelope.occurred_at + chrono::Duration::from_std(self.complete_within).unwrap_or_default();
        for _ in 0..MAX_CONFLICTS {
            let record = self.store.get(id).await.map_err(store_failure)?;
            let pass = match &envelope.command {
                DeliveryCommand::Delivery(request) => {
                    let account = envelope.account_id.as_deref();
                    self.schedule(id, request, account, record, deadline, attempt).await?
                }
                DeliveryCommand::Reschedule(change) => self.reschedule(id, change, record, deadline).await?,
                DeliveryCommand::Cancel(_) => self.cancel(id, record, deadline).await?,
            };
            if let Pass::Finished(done) = pass {
                return Ok(done);
            }
        }
        Err(Failure::Transient { reason: format!("delivery {id} is changing concurrently"), retry_after: None })
    }

    async fn schedule(
        &self,
        id: &str,
        request: &DeliveryRequest,
        account: Option<&str>,
        record: Option<WorkflowRecord>,
        deadline: DateTime<Utc>,
        attempt: u32,
    ) -> Result<Pass<Done>, Failure> {
        let now = self.clock.now();
        let mut record = match record {
            None => {
                let mut fresh = WorkflowRecord::new(id, WorkflowStatus::Running, deadline, now);
                fresh.request = Some(request.clone());
                fresh
            }
            Some(existing) => match existing.status {
                WorkflowStatus::Running => existing,
                WorkflowStatus::Scheduled => {
                    let drone_id = existing.drone_id.unwrap_or_default();
                    return Ok(Pass::Finished(Done::Scheduled { drone_id }));
                }
                WorkflowStatus::Cancelled => return self.show_cancelled(existing, request).await,
                WorkflowStatus::Failed if attempt == 1 => self.restart(existing, request, now),
                WorkflowStatus::Failed | WorkflowStatus::Compensating => {
                    // Compensating again is harmless and repairs what a racing step may have
                    // undone (a delivery created after it was marked failed).
                    let reason = existing.reason.clone().unwrap_or_default();
                    let _ = self.compensate(existing).await;
                    return Err(Failure::Permanent(format!("given up: {reason}")));
                }
            },
        };
        if record.request.is_none() {
            record.request = Some(request.clone());
        }
        if record.account_id.is_none() {
            record.account_id = account.map(str::to_owned);
        }
        if let Err(failure) = self.check_account(&mut record).await {
            return self.step_failed(record, Step::Account, failure).await;
        }

        let geocode = |place: &str| {
            domain::locate(&*self.geocoder, place).map_err(|e| Failure::Permanent(format!("place {place:?}: {e}")))
        };
        let places = geocode(&request.pickup_location).and_then(|p| Ok((p, geocode(&request.drop_off_location)?)));
        let (pickup, dropoff) = match places {
            Ok(places) => places,
            Err(failure) => return self.step_failed(record, Step::Package, failure).await,
        };

        if !record.is_done(Step::Package) {
            let mut package = domain::package_upsert(request);
            package.account_id = record.account_id.clone();
            if let Err(e) = self.downstreams.upsert_package(&request.package_info.package_id, &package).await {
                return self.step_failed(record, Step::Package, e.into()).await;
            }
            record.step_done(Step::Package, self.clock.now());
        }

        let drone_id = match record.drone_id.clone().filter(|_| record.is_done(Step::Drone)) {
            Some(drone_id) => drone_id,
            None => {
                let mut drone_request = domain::drone_request(id, request, pickup, dropoff);
                drone_request.account_id = record.account_id.clone();
                match self.downstreams.assign_drone(&drone_request).await {
                    // Not saved yet: if this process dies before the delivery is created, the
                    // redelivered message asks again and the scheduler answers the same drone.
                    // One write per delivery on the happy path keeps the hot path cheap.
                    Ok(Assigned::Drone(assignment)) => {
                        record.drone_id = Some(assignment.drone_id.clone());
                        record.step_done(Step::Drone, self.clock.now());
                        assignment.drone_id
                    }
                    // A cancel released this delivery first: the scheduler fences it off.
                    Ok(Assigned::Cancelled) => {
                        record.status = WorkflowStatus::Cancelled;
                        record.reason = Some(CANCELLED_BEFORE_SCHEDULING.to_owned());
                        if self.save(&mut record).await? == Saved::Conflict {
                            return Ok(Pass::Conflict);
                        }
                        return self.show_cancelled(record, request).await;
                    }
                    Err(e) => return self.step_failed(record, Step::Drone, e.into()).await,
                }
            }
        };

        let mut delivery = domain::delivery(id, request, pickup, dropoff, &drone_id);
        owned_by(&mut delivery, record.account_id.as_deref());
        if let Err(e) = self.downstreams.create_delivery(&delivery).await {
            return self.step_failed(record, Step::Delivery, e.into()).await;
        }
        record.step_done(Step::Delivery, self.clock.now());
        record.status = WorkflowStatus::Scheduled;
        if self.save(&mut record).await? == Saved::Conflict {
            return Ok(Pass::Conflict);
        }

        let accepted_at = deadline - chrono::Duration::from_std(self.complete_within).unwrap_or_default();
        let waited = (self.clock.now() - accepted_at).to_std().unwrap_or_default();
        metrics::histogram!("delivery_accept_to_scheduled_seconds", "service" => crate::SERVICE)
            .record(waited.as_secs_f64());
        metrics::counter!("deliveries_scheduled_total", "service" => crate::SERVICE).increment(1);
        tracing::info!(delivery_id = id, drone_id = %drone_id, waited_ms = waited.as_millis() as u64, "delivery scheduled");
        Ok(Pass::Finished(Done::Scheduled { drone_id }))
    }

    /// Before anything is scheduled: the request's account must be active. Checked once per
    /// run (the step is recorded), and only for a request that came with an account while an
    /// account service is configured.
    async fn check_account(&self, record: &mut WorkflowRecord) -> Result<(), Failure> {
        let Some(account_id) = record.account_id.clone() else { return Ok(()) };
        if !self.downstreams.checks_accounts() || record.is_done(Step::Account) {
            return Ok(());
        }
        let standing = self.downstreams.account_standing(&account_id).await?;
        if let Some(refusal) = standing.refusal(&account_id) {
            metrics::counter!("workflow_accounts_refused_total", "service" => crate::SERVICE).increment(1);
            return Err(Failure::Permanent(refusal));
        }
        record.step_done(Step::Account, self.clock.now());
        Ok(())
    }

    /// An operator replayed a failed request: run it again with a fresh deadline.
    fn restart(&self, mut record: WorkflowRecord, request: &DeliveryRequest, now: DateTime<Utc>) -> WorkflowRecord {
        tracing::info!(delivery_id = %record.delivery_id, "replayed after failure; running it again");
        record.status = WorkflowStatus::Running;
        record.reason = None;
        record.request = Some(request.clone());
        record.complete_by = now + chrono::Duration::from_std(self.complete_within).unwrap_or_default();
        record.steps.clear();
        record.drone_id = None;
        record.updated_at = now;
        record
    }

    /// Records a failed step. A transient failure before the deadline comes back later; any
    /// other failure gives the workflow up: compensation runs and the message is dead-lettered.
    async fn step_failed(
        &self,
        mut record: WorkflowRecord,
        step: Step,
        failure: Failure,
    ) -> Result<Pass<Done>, Failure> {
        let now = self.clock.now();
        let reason = match &failure {
            Failure::Transient { reason, .. } | Failure::Permanent(reason) => reason.clone(),
        };
        record.step_failed(step, &reason, now);
        let give_up = match &failure {
            Failure::Permanent(reason) => Some(format!("the {step:?} step failed: {reason}")),
            Failure::Transient { .. } if now >= record.complete_by => Some(record.deadline_reason()),
            Failure::Transient { .. } => None,
        };
        let Some(give_up) = give_up else {
            // Best effort: the failure is what matters; the record only tells operators why.
            let _ = self.save(&mut record).await;
            return Err(failure);
        };
        record.give_up(give_up.clone(), now);
        if self.save(&mut record).await? == Saved::Conflict {
            return Ok(Pass::Conflict);
        }
        tracing::warn!(delivery_id = %record.delivery_id, reason = %give_up, "giving up; compensating");
        let _ = self.compensate(record).await;
        Err(Failure::Permanent(give_up))
    }

    /// Makes a delivery that was cancelled before scheduling visible as cancelled.
    async fn show_cancelled(
        &self,
        mut record: WorkflowRecord,
        request: &DeliveryRequest,
    ) -> Result<Pass<Done>, Failure> {
        if !record.is_done(Step::CloseDelivery) {
            let reason = record.reason.clone().unwrap_or_else(|| CANCELLED_BEFORE_SCHEDULING.to_owned());
            let mut delivery = self.unscheduled_delivery(&record.delivery_id, request, record.drone_id.as_deref());
            owned_by(&mut delivery, record.account_id.as_deref());
            self.downstreams.close_delivery(&delivery, DeliveryStage::Cancelled, &reason).await?;
            record.step_done(Step::CloseDelivery, self.clock.now());
            if record.request.is_none() {
                record.request = Some(request.clone());
            }
            if self.save(&mut record).await? == Saved::Conflict {
                return Ok(Pass::Conflict);
            }
        }
        Ok(Pass::Finished(Done::AlreadyCancelled))
    }

    /// Undoes what a given-up workflow did: releases the drone (which also fences off an
    /// assignment still in flight) and marks the delivery failed with the reason. Saved as
    /// `Failed` when both calls succeeded; otherwise it stays `Compensating` for the supervisor.
    pub async fn compensate(&self, mut record: WorkflowRecord) -> Result<(), Failure> {
        let reason = record.reason.clone().unwrap_or_else(|| "given up".to_owned());
        let id = record.delivery_id.clone();
        self.downstreams.release_drone(&id).await?;
        record.step_done(Step::ReleaseDrone, self.clock.now());
        if let Some(request) = record.request.clone() {
            let mut delivery = self.unscheduled_delivery(&id, &request, record.drone_id.as_deref());
            owned_by(&mut delivery, record.account_id.as_deref());
            self.downstreams.close_delivery(&delivery, DeliveryStage::Failed, &reason).await?;
            record.step_done(Step::CloseDelivery, self.clock.now());
        }
        if record.status == WorkflowStatus::Compensating {
            record.status = WorkflowStatus::Failed;
            self.save(&mut record).await?;
            metrics::counter!("workflow_compensations_total", "service" => crate::SERVICE).increment(1);
            tracing::warn!(delivery_id = %id, %reason, "compensated: drone released, delivery marked failed");
        }
        Ok(())
    }

    /// The delivery record a customer sees for a delivery that will never fly. Places that do
    /// not geocode (often the very reason it failed) are shown at 0,0.
    fn unscheduled_delivery(
        &self,
        id: &str,
        request: &DeliveryRequest,
        drone_id: Option<&str>,
    ) -> contracts::delivery::Delivery {
        let place = |p: &str| domain::locate(&*self.geocoder, p).unwrap_or(Location::new(0.0, 0.0, 0.0));
        let pickup = place(&request.pickup_location);
        let dropoff = place(&request.drop_off_location);
        domain::delivery(id, request, pickup, dropoff, drone_id.unwrap_or_default())
    }

    async fn reschedule(
        &self,
        id: &str,
        change: &RescheduleRequest,
        record: Option<WorkflowRecord>,
        deadline: DateTime<Utc>,
    ) -> Result<Pass<Done>, Failure> {
        if let Some(record) = &record
            && matches!(
                record.status,
                WorkflowStatus::Cancelled | WorkflowStatus::Compensating | WorkflowStatus::Failed
            )
        {
            return Ok(Pass::Finished(Done::TooLate));
        }
        let change = domain::rescheduled(&*self.geocoder, change).map_err(|e| Failure::Permanent(e.to_string()))?;
        // New places re-plan the drone's flight first: the scheduler knows whether the package is
        // already on board, and the delivery record must not promise a route the drone does not
        // fly. A refusal is shown on the delivery instead of the change.
        if change.pickup.is_some() || change.dropoff.is_some() {
            let places = DroneReroute { pickup: change.pickup, dropoff: change.dropoff };
            let rerouted = self.downstreams.reroute_drone(id, &places).await.map_err(Failure::from);
            match self.by_deadline(rerouted, deadline)? {
                Rerouted::Flying => {}
                Rerouted::NotAssigned => return Err(self.past_deadline(not_created_yet(id), deadline)),
                Rerouted::Refused(reason) => {
                    tracing::info!(delivery_id = id, %reason, "reschedule refused by the drone scheduler");
                    let shown = self.downstreams.refuse_reschedule(id, &reason).await.map_err(Failure::from);
                    return match self.by_deadline(shown, deadline)? {
                        Changed::NotFound => Err(self.past_deadline(not_created_yet(id), deadline)),
                        Changed::Applied | Changed::Final => Ok(Pass::Finished(Done::TooLate)),
                    };
                }
            }
        }
        let outcome = self.downstreams.reschedule_delivery(id, &change).await.map_err(Failure::from);
        match self.by_deadline(outcome, deadline)? {
            Changed::Applied => Ok(Pass::Finished(Done::Rescheduled)),
            Changed::Final => Ok(Pass::Finished(Done::TooLate)),
            Changed::NotFound => Err(self.past_deadline(not_created_yet(id), deadline)),
        }
    }

    /// Cancels the delivery, then releases its drone. Releasing also fences off an assignment
    /// that has not happened yet: the scheduler refuses (409) to assign a released delivery.
    async fn cancel(
        &self,
        id: &str,
        record: Option<WorkflowRecord>,
        deadline: DateTime<Utc>,
    ) -> Result<Pass<Done>, Failure> {
        let now = self.clock.now();
        let mut record = match record {
            Some(r) if r.status == WorkflowStatus::Cancelled => return Ok(Pass::Finished(Done::Cancelled)),
            Some(r) if matches!(r.status, WorkflowStatus::Compensating | WorkflowStatus::Failed) => {
                return Ok(Pass::Finished(Done::TooLate));
            }
            Some(r) => r,
            None => WorkflowRecord::new(id, WorkflowStatus::Running, now, now),
        };
        let outcome = self.by_deadline(self.downstreams.cancel_delivery(id).await.map_err(Failure::from), deadline)?;
        if outcome == Changed::Final {
            return Ok(Pass::Finished(Done::TooLate));
        }
        record.step_done(Step::CancelDelivery, self.clock.now());
        self.by_deadline(self.downstreams.release_drone(id).await.map_err(Failure::from), deadline)?;
        record.step_done(Step::ReleaseDrone, self.clock.now());
        let cancelled_before_creation = outcome == Changed::NotFound;
        record.status = WorkflowStatus::Cancelled;
        record.reason = Some(
            if cancelled_before_creation { CANCELLED_BEFORE_SCHEDULING } else { "cancelled by the customer" }.into(),
        );
        if self.save(&mut record).await? == Saved::Conflict {
            return Ok(Pass::Conflict);
        }
        // The request was read but the delivery not created yet: show it as cancelled now,
        // rather than when (if ever) the request's message comes back.
        if cancelled_before_creation
            && let Some(request) = record.request.clone()
            && let Pass::Conflict = self.show_cancelled(record, &request).await?
        {
            return Ok(Pass::Conflict);
        }
        Ok(Pass::Finished(Done::Cancelled))
    }

    /// A transient failure past the message's deadline becomes permanent (dead-lettered).
    fn by_deadline<T>(&self, result: Result<T, Failure>, deadline: DateTime<Utc>) -> Result<T, Failure> {
        result.map_err(|failure| self.past_deadline(failure, deadline))
    }

    fn past_deadline(&self, failure: Failure, deadline: DateTime<Utc>) -> Failure {
        match failure {
            Failure::Transient { reason, .. } if self.clock.now() >= deadline => {
                Failure::Permanent(format!("not done by {}: {reason}", deadline.to_rfc3339()))
            }
            other => other,
        }
    }

    async fn save(&self, record: &mut WorkflowRecord) -> Result<Saved, Failure> {
        record.updated_at = self.clock.now();
        self.store.save(record).await.map_err(store_failure)
    }
}

/// The delivery belongs to the request's account, when it came with one; otherwise
/// [`domain::delivery`]'s fallback (the owner) stands.
fn owned_by(delivery: &mut contracts::delivery::Delivery, account_id: Option<&str>) {
    if let Some(account) = account_id {
        delivery.owner.account_id = account.to_owned();
    }
}

fn store_failure(err: StoreError) -> Failure {
    Failure::Transient { reason: err.to_string(), retry_after: None }
}

fn not_created_yet(id: &str) -> Failure {
    Failure::Transient {
        reason: format!("delivery {id} is not created yet; its request may still be queued"),
        retry_after: None,
    }
}
