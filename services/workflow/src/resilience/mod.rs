//! Per-downstream protection for the workflow's calls: a bulkhead (bounded calls in flight,
//! bounded wait for a slot), a circuit breaker, and quick in-call retries under a retry budget.
//! Timeouts are the HTTP client's (one per call). Longer waits are the queue's job: a message
//! whose call failed comes back later, so in-call retries only smooth over blips.

pub mod breaker;
pub mod budget;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use platform::backoff::Backoff;
use platform::client::CallError;
use tokio::sync::Semaphore;

pub use breaker::{BreakerSettings, BreakerState, CircuitBreaker};
pub use budget::{BudgetSettings, RetryBudget};

/// Everything [`Guard`] enforces, per downstream.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    pub breaker: BreakerSettings,
    pub budget: BudgetSettings,
    /// Calls in flight at once.
    pub max_in_flight: usize,
    /// How long a call waits for a free slot before failing (transiently).
    pub bulkhead_wait: Duration,
    /// Retries inside one call, for failures that may be blips (transport errors, 5xx).
    pub call_retries: u32,
    /// Spacing of those retries.
    pub retry_backoff: Backoff,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            breaker: BreakerSettings::default(),
            budget: BudgetSettings::default(),
            max_in_flight: 64,
            bulkhead_wait: Duration::from_secs(2),
            call_retries: 2,
            retry_backoff: Backoff { base: Duration::from_millis(50), max: Duration::from_millis(500) },
        }
    }
}

/// Guards the calls to one downstream.
pub struct Guard {
    name: &'static str,
    settings: GuardSettings,
    breaker: Mutex<CircuitBreaker>,
    budget: Mutex<RetryBudget>,
    bulkhead: Semaphore,
}

/// Whether a failure says the downstream itself is unwell (what the breaker counts).
fn is_unwell(err: &CallError) -> bool {
    // A transient failure with a Retry-After is a live downstream asking us to wait (no free
    // drone, say); a permanent one is a live downstream refusing this request.
    matches!(err, CallError::Transient { retry_after: None, .. })
}

impl Guard {
    pub fn new(name: &'static str, settings: GuardSettings) -> Self {
        metrics::gauge!("downstream_breaker_state", "service" => crate::SERVICE, "downstream" => name).set(0.0);
        Self {
            name,
            breaker: Mutex::new(CircuitBreaker::new(settings.breaker)),
            budget: Mutex::new(RetryBudget::new(settings.budget)),
            bulkhead: Semaphore::new(settings.max_in_flight.max(1)),
            settings,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.lock().expect("breaker lock").state(Instant::now())
    }

    /// How long the breaker stays open; `None` when calls may go through.
    pub fn open_for(&self) -> Option<Duration> {
        self.breaker.lock().expect("breaker lock").open_for(Instant::now())
    }

    /// Runs `call` under the bulkhead and the breaker, retrying blips while the budget allows.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let _slot = match tokio::time::timeout(self.settings.bulkhead_wait, self.bulkhead.acquire()).await {
            Ok(permit) => permit.expect("the bulkhead is never closed"),
            Err(_) => {
                self.count("rejected_bulkhead");
                return Err(CallError::Transient {
                    reason: format!("{}: {} calls already in flight", self.name, self.settings.max_in_flight),
                    retry_after: None,
                });
            }
        };
        self.report_in_flight();
        // Reported again once the slot is free, so the gauge falls back when calls end.
        let _report = InFlightReport(self);
        self.budget.lock().expect("budget lock").record_call(Instant::now());
        let mut retry = 0;
        loop {
            let result = self.once(&call).await;
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let blip = is_unwell(&err) && retry < self.settings.call_retries;
            if !blip || self.open_for().is_some() {
                return Err(err);
            }
            if !self.budget.lock().expect("budget lock").try_retry(Instant::now()) {
                metrics::counter!(
                    "downstream_retry_budget_exhausted_total",
                    "service" => crate::SERVICE,
                    "downstream" => self.name
                )
                .increment(1);
                return Err(err);
            }
            retry += 1;
            metrics::counter!("downstream_retries_total", "service" => crate::SERVICE, "downstream" => self.name)
                .increment(1);
            tokio::time::sleep(self.settings.retry_backoff.delay(retry)).await;
        }
    }

    /// One call through the breaker.
    async fn once<T, F, Fut>(&self, call: &F) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        if let Err(rejected) = self.breaker.lock().expect("breaker lock").try_acquire(Instant::now()) {
            self.count("rejected_open");
            return Err(CallError::Transient {
                reason: format!("{}: circuit open after repeated failures", self.name),
                retry_after: Some(rejected.retry_in.max(Duration::from_millis(100))),
            });
        }
        // Gives a half-open probe slot back if this future is dropped mid-call.
        let mut pending = ProbeSlot { guard: self, settled: false };
        let result = call().await;
        let healthy = result.as_ref().err().is_none_or(|e| !is_unwell(e));
        pending.settle(healthy);
        self.count(if healthy { "ok" } else { "error" });
        result
    }

    fn report_in_flight(&self) {
        let in_flight = self.settings.max_in_flight.max(1) - self.bulkhead.available_permits();
        metrics::gauge!("downstream_in_flight", "service" => crate::SERVICE, "downstream" => self.name)
            .set(in_flight as f64);
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!(
            "downstream_calls_total",
            "service" => crate::SERVICE,
            "downstream" => self.name,
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// Declared after the bulkhead slot, so dropped before it: reports the calls in flight without
/// this one.
struct InFlightReport<'a>(&'a Guard);

impl Drop for InFlightReport<'_> {
    fn drop(&mut self) {
        let guard = self.0;
        let held = guard.settings.max_in_flight.max(1) - guard.bulkhead.available_permits();
        metrics::gauge!("downstream_in_flight", "service" => crate::SERVICE, "downstream" => guard.name)
            .set(held.saturating_sub(1) as f64);
    }
}

struct ProbeSlot<'a> {
    guard: &'a Guard,
    settled: bool,
}

impl ProbeSlot<'_> {
    fn settle(&mut self, healthy: bool) {
        self.settled = true;
        let mut breaker = self.guard.breaker.lock().expect("breaker lock");
        let now = Instant::now();
        breaker.record(healthy, now);
        let state = breaker.state(now);
        drop(breaker);
        metrics::gauge!("downstream_breaker_state", "service" => crate::SERVICE, "downstream" => self.guard.name)
            .set(state.gauge());
    }
}

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.guard.breaker.lock().expect("breaker lock").release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn down() -> CallError {
        CallError::Transient { reason: "refused".into(), retry_after: None }
    }

    fn settings() -> GuardSettings {
        GuardSettings {
            breaker: BreakerSettings { min_calls: 3, ..BreakerSettings::default() },
            retry_backoff: Backoff { base: Duration::from_millis(1), max: Duration::from_millis(2) },
            ..GuardSettings::default()
        }
    }

    #[tokio::test]
    async fn blips_are_retried_inside_the_call() {
        let guard = Guard::new("test", settings());
        let tries = AtomicU32::new(0);
        let result =
            guard.run(|| async { if tries.fetch_add(1, Ordering::SeqCst) == 0 { Err(down()) } else { Ok(7) } }).await;
        assert_eq!(result, Ok(7));
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refusals_and_busy_answers_are_not_retried_nor_counted_against_the_downstream() {
        let guard = Guard::new("test", settings());
        let tries = AtomicU32::new(0);
        for _ in 0..5 {
            let busy = CallError::Transient { reason: "no drone".into(), retry_after: Some(Duration::from_secs(1)) };
            let result: Result<(), _> = guard
                .run(|| {
                    tries.fetch_add(1, Ordering::SeqCst);
                    let busy = busy.clone();
                    async move { Err(busy) }
                })
                .await;
            assert!(result.is_err());
        }
        assert_eq!(tries.load(Ordering::SeqCst), 5, "one try each");
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failing_downstream_opens_the_breaker_and_later_calls_fail_fast() {
        let guard = Guard::new("test", settings());
        let tries = AtomicU32::new(0);
        let failing = || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(down()) }
        };
        let _ = guard.run(failing).await;
        assert_eq!(guard.state(), BreakerState::Open, "three failures (1 + 2 retries) reach min_calls");
        let before = tries.load(Ordering::SeqCst);
        let err = guard.run(failing).await.unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), before, "not called while open");
        assert!(err.retry_after().is_some(), "{err:?}");
    }

    #[tokio::test]
    async fn the_bulkhead_bounds_calls_in_flight() {
        let guard = Arc::new(Guard::new(
            "test",
            GuardSettings { max_in_flight: 1, bulkhead_wait: Duration::from_millis(20), ..settings() },
        ));
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let wait = Arc::new(tokio::sync::Mutex::new(Some(wait)));
        let holder = {
            let guard = guard.clone();
            let wait = wait.clone();
            tokio::spawn(async move {
                guard
                    .run(|| {
                        let wait = wait.clone();
                        async move {
                            if let Some(rx) = wait.lock().await.take() {
                                let _ = rx.await;
                            }
                            Ok(())
                        }
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let err = guard.run(|| async { Ok(()) }).await.unwrap_err();
        assert!(err.to_string().contains("in flight"), "{err}");
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        guard.run(|| async { Ok(()) }).await.unwrap();
    }
}
