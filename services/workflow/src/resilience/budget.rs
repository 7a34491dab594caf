//! A retry budget: retries may add at most a set share on top of the calls being made, so when
//! a downstream struggles, our retries cannot multiply its load.
//!
//! Over a rolling window, retries are allowed while `retries < min_retries + ratio * calls`.
//! The floor lets a quiet service still retry its few calls. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// How many retries the budget allows.
#[derive(Debug, Clone, Copy)]
pub struct BudgetSettings {
    pub window: Duration,
    /// Retries allowed per first call in the window (0.2: one retry per five calls).
    pub ratio: f64,
    /// Retries allowed in any window regardless of traffic.
    pub min_retries: u32,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self { window: Duration::from_secs(10), ratio: 0.2, min_retries: 10 }
    }
}

const SLICES: u64 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slice {
    round: u64,
    calls: u32,
    retries: u32,
}

/// Counts first calls and retries over the rolling window.
#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    epoch: Option<Instant>,
    slices: [Slice; SLICES as usize],
}

impl RetryBudget {
    pub fn new(settings: BudgetSettings) -> Self {
        Self { settings, epoch: None, slices: [Slice::default(); SLICES as usize] }
    }

    /// A first attempt of a call was made.
    pub fn record_call(&mut self, now: Instant) {
        self.slice_for(now).calls += 1;
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is spent.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        let round = self.round(now);
        let (calls, retries) = self
            .slices
            .iter()
            .filter(|s| s.round + SLICES > round)
            .fold((0u64, 0u64), |(c, r), s| (c + u64::from(s.calls), r + u64::from(s.retries)));
        let allowed = f64::from(self.settings.min_retries) + self.settings.ratio * calls as f64;
        if (retries as f64) < allowed {
            self.slice_for(now).retries += 1;
            true
        } else {
            false
        }
    }

    fn round(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let length = (self.settings.window / SLICES as u32).max(Duration::from_millis(1));
        (now.saturating_duration_since(epoch).as_nanos() / length.as_nanos()) as u64
    }

    fn slice_for(&mut self, now: Instant) -> &mut Slice {
        let round = self.round(now);
        let slice = &mut self.slices[(round % SLICES) as usize];
        if slice.round != round {
            *slice = Slice { round, calls: 0, retries: 0 };
        }
        slice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> RetryBudget {
        RetryBudget::new(BudgetSettings { window: Duration::from_secs(10), ratio: 0.5, min_retries: 2 })
    }

    #[test]
    fn the_floor_allows_a_few_retries_without_traffic() {
        let t0 = Instant::now();
        let mut b = budget();
        assert!(b.try_retry(t0));
        assert!(b.try_retry(t0));
        assert!(!b.try_retry(t0), "the floor of 2 is spent");
    }

    #[test]
    fn retries_grow_with_the_calls_made() {
        let t0 = Instant::now();
        let mut b = budget();
        for _ in 0..10 {
            b.record_call(t0);
        }
        // 2 + 0.5 * 10 = 7 retries.
        let granted = (0..20).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 7);
    }

    #[test]
    fn the_budget_refills_as_the_window_moves_on() {
        let t0 = Instant::now();
        let mut b = budget();
        assert!(b.try_retry(t0) && b.try_retry(t0));
        assert!(!b.try_retry(t0 + Duration::from_secs(5)));
        assert!(b.try_retry(t0 + Duration::from_secs(11)), "the old retries left the window");
    }
}
