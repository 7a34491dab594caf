//! The durable state of each delivery's workflow: where it stands and what each step did.
//! Pure data and rules; the store keeps it, the processor and the supervisor change it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::requests::DeliveryRequest;
use serde::{Deserialize, Serialize};

/// Where a delivery's workflow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkflowStatus {
    /// The delivery request is being carried out.
    Running,
    /// Package stored, drone assigned, delivery created.
    Scheduled,
    /// Cancelled: the delivery is cancelled (or never was created) and its drone released.
    Cancelled,
    /// Given up; the drone is being released and the delivery marked failed.
    Compensating,
    /// Given up and compensated; `reason` says why.
    Failed,
}

impl WorkflowStatus {
    pub const ALL: [WorkflowStatus; 5] = [
        WorkflowStatus::Running,
        WorkflowStatus::Scheduled,
        WorkflowStatus::Cancelled,
        WorkflowStatus::Compensating,
        WorkflowStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Scheduled => "scheduled",
            WorkflowStatus::Cancelled => "cancelled",
            WorkflowStatus::Compensating => "compensating",
            WorkflowStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One call the workflow makes for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    Package,
    Drone,
    Delivery,
    CancelDelivery,
    ReleaseDrone,
    CloseDelivery,
    /// The account was found active (only when the request carried one and an account
    /// service is configured).
    Account,
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepStatus {
    Done,
    Failed,
}

/// The record of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub at: DateTime<Utc>,
}

/// A delivery's workflow, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRecord {
    pub delivery_id: String,
    pub status: WorkflowStatus,
    #[serde(default)]
    pub steps: BTreeMap<Step, StepRecord>,
    /// The request being carried out (none when a cancel came first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<DeliveryRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drone_id: Option<String>,
    /// The account the gateway authenticated for the request; none when the request came
    /// without one (the owner then stands for the account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a running workflow is given up if it has not finished.
    pub complete_by: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every save; a save that read an older version loses (optimistic concurrency).
    #[serde(skip)]
    pub version: i64,
}

impl WorkflowRecord {
    /// A workflow not stored yet.
    pub fn new(delivery_id: &str, status: WorkflowStatus, complete_by: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            delivery_id: delivery_id.to_owned(),
            status,
            steps: BTreeMap::new(),
            request: None,
            drone_id: None,
            account_id: None,
            reason: None,
            complete_by,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    pub fn is_done(&self, step: Step) -> bool {
        self.steps.get(&step).is_some_and(|s| s.status == StepStatus::Done)
    }

    /// Records that `step` succeeded.
    pub fn step_done(&mut self, step: Step, now: DateTime<Utc>) {
        let attempts = self.steps.get(&step).map_or(0, |s| s.attempts) + 1;
        self.steps.insert(step, StepRecord { status: StepStatus::Done, attempts, last_error: None, at: now });
        self.updated_at = now;
    }

    /// Records that `step` failed with `error`.
    pub fn step_failed(&mut self, step: Step, error: &str, now: DateTime<Utc>) {
        let attempts = self.steps.get(&step).map_or(0, |s| s.attempts) + 1;
        let last_error = Some(error.chars().take(500).collect());
        self.steps.insert(step, StepRecord { status: StepStatus::Failed, attempts, last_error, at: now });
        self.updated_at = now;
    }

    /// The most recent step error, for the reason shown when the workflow is given up.
    pub fn last_error(&self) -> Option<(Step, &str)> {
        self.steps
            .iter()
            .filter(|(_, r)| r.status == StepStatus::Failed)
            .max_by_key(|(_, r)| r.at)
            .and_then(|(step, r)| r.last_error.as_deref().map(|e| (*step, e)))
    }

    /// Starts giving up: compensation (release the drone, mark the delivery failed) comes next.
    pub fn give_up(&mut self, reason: String, now: DateTime<Utc>) {
        self.status = WorkflowStatus::Compensating;
        self.reason = Some(reason);
        self.updated_at = now;
    }

    /// Why a running workflow was given up at its deadline.
    pub fn deadline_reason(&self) -> String {
        match self.last_error() {
            Some((step, error)) => {
                format!("not scheduled by {}: the {step:?} step kept failing: {error}", self.complete_by.to_rfc3339())
            }
            None => format!("not scheduled by {}", self.complete_by.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn steps_count_attempts_and_keep_the_last_error() {
        let t0 = Utc::now();
        let mut r = WorkflowRecord::new("d1", WorkflowStatus::Running, t0 + Duration::hours(1), t0);
        r.step_failed(Step::Drone, "no drone", t0);
        r.step_failed(Step::Drone, "still no drone", t0 + Duration::seconds(1));
        assert!(!r.is_done(Step::Drone));
        assert_eq!(r.last_error(), Some((Step::Drone, "still no drone")));
        r.step_done(Step::Drone, t0 + Duration::seconds(2));
        assert!(r.is_done(Step::Drone));
        assert_eq!(r.steps[&Step::Drone].attempts, 3);
        assert_eq!(r.last_error(), None);
        assert!(r.deadline_reason().starts_with("not scheduled by"));
    }

    #[test]
    fn the_record_round_trips_through_json_and_status_names() {
        let t0 = Utc::now();
        let mut r = WorkflowRecord::new("d1", WorkflowStatus::Running, t0, t0);
        r.step_done(Step::Package, t0);
        r.give_up("no".into(), t0);
        let back: WorkflowRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        for status in WorkflowStatus::ALL {
            assert_eq!(WorkflowStatus::parse(status.as_str()), Some(status));
        }
    }
}
