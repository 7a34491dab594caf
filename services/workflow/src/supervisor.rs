//! The supervisor (the guide's Scheduler Agent Supervisor): finds workflows that the message
//! flow alone will not finish, and finishes them.
//!
//! Retrying a failed step is the queue's job: the message comes back with backoff and every
//! step is idempotent. The supervisor handles the rest: a running workflow past its complete-by
//! time (its message keeps failing, or was dead-lettered when its attempts ran out) is given up
//! and compensated; a compensation that could not finish (a downstream was down) is retried
//! until it does. Only the holder of a lease in the store acts, so several workflow processes
//! can each run one.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::processor::Processor;
use chrono::{DateTime, Utc};

use crate::state::{WorkflowRecord, WorkflowStatus};
use crate::store::{Saved, WorkflowStore};

/// The lease's name in the store.
pub const LEASE: &str = "workflow-supervisor";

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// How often it looks.
    pub every: Duration,
    /// Workflows handled per round.
    pub batch: usize,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Running workflows given up at their deadline.
    pub given_up: usize,
    /// Compensations finished (including those of the given-up ones).
    pub compensated: usize,
    /// Compensations that failed this time and will be tried again.
    pub pending: usize,
}

pub struct Supervisor {
    pub store: Arc<dyn WorkflowStore>,
    pub processor: Processor,
    pub options: SupervisorOptions,
    /// This process's name in the lease.
    pub holder: String,
}

impl Supervisor {
    /// Looks every `options.every` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.options.every.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(service = crate::SERVICE, holder = %self.holder, every_ms = self.options.every.as_millis() as u64, "supervising");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.round().await {
                Ok(Some(round)) if round != Round::default() => {
                    tracing::info!(
                        given_up = round.given_up,
                        compensated = round.compensated,
                        pending = round.pending,
                        "supervisor round"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "supervisor round failed; trying again next time"),
            }
        }
    }

    /// One round; `None` when another process holds the lease.
    pub async fn round(&self) -> Result<Option<Round>, crate::store::StoreError> {
        let now = self.processor.clock.now();
        // The lease outlives a few missed rounds, so a slow round does not hand it over.
        let ttl = self.options.every * 3;
        if !self.store.try_lease(LEASE, &self.holder, ttl, now).await? {
            return Ok(None);
        }
        self.export_counts().await;
        let mut round = Round::default();
        for mut record in self.store.due(now, self.options.batch.max(1)).await? {
            if !left_alone_long_enough(&record, now, self.options.every) {
                continue; // A processor is compensating it right now; it is not stuck.
            }
            if record.status == WorkflowStatus::Running {
                let reason = record.deadline_reason();
                record.give_up(reason, now);
                if self.store.save(&mut record).await? == Saved::Conflict {
                    continue; // It moved on meanwhile; the next round sees where it is.
                }
                round.given_up += 1;
                metrics::counter!("workflow_supervisor_given_up_total", "service" => crate::SERVICE).increment(1);
            }
            match self.processor.compensate(record).await {
                Ok(()) => round.compensated += 1,
                Err(failure) => {
                    round.pending += 1;
                    tracing::warn!(%failure, "compensation failed; retrying next round");
                }
            }
        }
        Ok(Some(round))
    }

    async fn export_counts(&self) {
        if let Ok(counts) = self.store.counts().await {
            for status in WorkflowStatus::ALL {
                let n = counts.get(&status).copied().unwrap_or(0);
                metrics::gauge!("workflow_workflows", "service" => crate::SERVICE, "status" => status.as_str())
                    .set(n as f64);
            }
        }
    }
}

/// Whether the supervisor should take the workflow over: a running one is past its deadline
/// (the store only returns those), and a compensation is taken over only when nobody has touched
/// it for a whole round. Without that grace the supervisor would compensate alongside the
/// processor that just started to, and call the downstreams twice.
fn left_alone_long_enough(record: &WorkflowRecord, now: DateTime<Utc>, grace: Duration) -> bool {
    if record.status != WorkflowStatus::Compensating {
        return true;
    }
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(record.updated_at) >= grace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_compensation_is_taken_over_only_after_a_round_without_progress() {
        let mut record = WorkflowRecord::new("d1", WorkflowStatus::Compensating, at(3600), at(0));
        record.updated_at = at(100);
        let round = Duration::from_secs(5);
        assert!(!left_alone_long_enough(&record, at(100), round), "the processor is at it right now");
        assert!(!left_alone_long_enough(&record, at(104), round));
        assert!(left_alone_long_enough(&record, at(105), round), "a whole round without progress");
    }

    #[test]
    fn an_overdue_running_workflow_is_taken_over_at_once() {
        let mut record = WorkflowRecord::new("d1", WorkflowStatus::Running, at(10), at(0));
        record.updated_at = at(100);
        assert!(left_alone_long_enough(&record, at(100), Duration::from_secs(5)));
    }
}
