//! Admission to the services behind the gateway: at most `--max-in-flight` requests are
//! forwarded at once, and the rest wait for a slot or are shed with `503` + `Retry-After`.
//!
//! How long a request may wait follows CoDel's rule for server queues. A burst that the queue
//! absorbs and then drains may wait the whole `--queue-wait-ms`. Once the queue has stood for
//! longer than that, the system is overloaded, not bursty, and newcomers wait only
//! `--overload-queue-wait-ms` before they are shed. The queue stops standing when it empties or
//! when a request gets its slot within that short wait: a busy gateway whose slots are always
//! taken still moves its queue quickly, and must not shed. Without the rule, a sustained overload
//! keeps a full-length queue: every admitted request pays the whole wait, and since a client's
//! open connections are its rate times its latency, thousands of connections pile onto the
//! gateway and their cost crowds out the work (measured in BENCHMARKS.md, "Session 9").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
// Tokio's clock, so tests can pause it; outside tests it is the monotonic clock.
use tokio::time::Instant;

/// The wait limits, separate from the clock so the rule can be tested on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitRule {
    /// What a request may wait while the queue is a passing burst; also how long the queue
    /// must stand before it counts as overload.
    pub patient: Duration,
    /// What a request may wait once the queue has stood longer than `patient`.
    pub overloaded: Duration,
}

impl WaitRule {
    /// How long a request arriving now may wait, given how long the queue has not been empty.
    pub fn budget(&self, queue_standing_for: Duration) -> Duration {
        if queue_standing_for > self.patient { self.overloaded.min(self.patient) } else { self.patient }
    }

    /// Whether a request that waited this long for its slot shows the queue moving freely.
    pub fn admitted_promptly(&self, waited: Duration) -> bool {
        waited <= self.overloaded.min(self.patient)
    }
}

/// The slots and the state of the queue in front of them.
pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    rule: WaitRule,
    waiting: AtomicUsize,
    /// When the queue was last seen empty, in nanoseconds since `epoch`.
    last_empty: AtomicU64,
    epoch: Instant,
}

/// Held while a request is forwarded; dropping it frees the slot.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    pub fn new(capacity: usize, rule: WaitRule) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            rule,
            waiting: AtomicUsize::new(0),
            last_empty: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A slot, at once when one is free, else after waiting within the rule's budget; `None`
    /// when the budget ran out first (the caller sheds the request).
    pub async fn admit(&self) -> Option<Slot> {
        // Tokio hands a freed permit to the first waiter, so a free permit means no queue.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            self.mark_empty();
            return Some(Slot(permit));
        }
        let budget = self.rule.budget(self.standing_for());
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let admitted = tokio::time::timeout(budget, self.slots.clone().acquire_owned()).await;
        let emptied = self.waiting.fetch_sub(1, Ordering::Relaxed) == 1;
        if emptied || (admitted.is_ok() && self.rule.admitted_promptly(started.elapsed())) {
            self.mark_empty();
        }
        match admitted {
            Ok(Ok(permit)) => Some(Slot(permit)),
            // The semaphore is never closed; a timeout is the only way to get here.
            _ => None,
        }
    }

    /// Requests being forwarded now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    fn mark_empty(&self) {
        self.last_empty.store(self.nanos_since_epoch(), Ordering::Relaxed);
    }

    /// How long the queue has gone without being empty (zero when it is empty now).
    fn standing_for(&self) -> Duration {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return Duration::ZERO;
        }
        let since = self.nanos_since_epoch().saturating_sub(self.last_empty.load(Ordering::Relaxed));
        Duration::from_nanos(since)
    }

    fn nanos_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: WaitRule = WaitRule { patient: Duration::from_millis(100), overloaded: Duration::from_millis(5) };

    #[test]
    fn a_passing_burst_waits_the_whole_budget_and_a_standing_queue_only_the_short_one() {
        assert_eq!(RULE.budget(Duration::ZERO), RULE.patient);
        assert_eq!(RULE.budget(Duration::from_millis(100)), RULE.patient);
        assert_eq!(RULE.budget(Duration::from_millis(101)), RULE.overloaded);
        let inverted = WaitRule { patient: Duration::from_millis(10), overloaded: Duration::from_millis(50) };
        assert_eq!(inverted.budget(Duration::from_secs(1)), inverted.patient, "overload never waits longer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_never_empties_but_moves_quickly_is_not_overload() {
        let admission = Arc::new(Admission::new(1, RULE));
        let mut held = admission.admit().await.expect("a free slot");
        let mut waiters = tokio::task::JoinSet::new();
        let wait_for_slot = |admission: Arc<Admission>| async move { admission.admit().await };
        waiters.spawn(wait_for_slot(admission.clone()));
        // Every 2 ms the slot passes to the oldest waiter and a new one joins: someone waits at
        // every moment for 150 ms, none for more than 4 ms.
        for _ in 0..75 {
            waiters.spawn(wait_for_slot(admission.clone()));
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(held);
            held = waiters.join_next().await.unwrap().unwrap().expect("admitted within the budget");
            assert!(admission.waiting.load(Ordering::Relaxed) > 0);
        }
        assert_eq!(admission.rule.budget(admission.standing_for()), RULE.patient);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_queued_and_then_served() {
        let admission = Arc::new(Admission::new(1, RULE));
        let held = admission.admit().await.expect("a free slot");
        assert_eq!(admission.in_flight(), 1);
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.unwrap(), "a slot freed within the budget is taken");
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_queue_has_stood_past_the_budget_newcomers_are_shed_quickly() {
        let admission = Arc::new(Admission::new(1, RULE));
        let _held = admission.admit().await.expect("a free slot");
        // A patient waiter keeps the queue standing; it gives up after 100 ms.
        let first = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Still a burst: the second waiter gets the whole budget, so the queue stands past it.
        let second = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!first.await.unwrap());
        let started = tokio::time::Instant::now();
        assert!(admission.admit().await.is_none(), "the slot is still held");
        assert_eq!(started.elapsed(), RULE.overloaded, "the queue has stood 110 ms: overload");
        assert!(!second.await.unwrap());
        // The queue drained: the next one is patient again.
        let started = tokio::time::Instant::now();
        assert!(admission.admit().await.is_none());
        assert_eq!(started.elapsed(), RULE.patient);
    }
}
