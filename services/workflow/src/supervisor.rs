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
use crate::state::WorkflowStatus;
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
