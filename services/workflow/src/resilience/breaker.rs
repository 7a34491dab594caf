//! A circuit breaker: stop calling a downstream that keeps failing, so its recovery is not
//! buried under retries and our messages wait instead of burning their attempts.
//!
//! Closed, it counts outcomes over a rolling window. When at least `min_calls` ended in the
//! window and the share of failures reaches `failure_ratio`, it opens for `break_for`: calls fail
//! at once. Then it half-opens and lets `probes` calls through; one success closes it, one
//! failure opens it again. Pure: the caller passes the time in, so tests need no sleeping.

use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Outcomes older than this no longer count.
    pub window: Duration,
    /// Fewer outcomes than this in the window never open the breaker.
    pub min_calls: u32,
    /// Share of failed calls (0..=1) that opens it.
    pub failure_ratio: f64,
    /// How long it stays open before letting a probe through.
    pub break_for: Duration,
    /// Calls let through at once while half-open.
    pub probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_ratio: 0.5,
            break_for: Duration::from_secs(5),
            probes: 1,
        }
    }
}

/// The breaker's state, as exported in metrics (0 closed, 1 half-open, 2 open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// Why a call was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// When the breaker will let a probe through (zero when half-open probes are all in use).
    pub retry_in: Duration,
}

/// Slices of the rolling window: outcomes are counted per slice, so memory stays fixed however
/// many calls are made.
const SLICES: u32 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slice {
    /// Which slice-length period since `epoch` these counts belong to.
    round: u64,
    successes: u32,
    failures: u32,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32 },
}

/// One downstream's breaker. Wrap it in a mutex to share it; every method is O(1).
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    phase: Phase,
    /// The first time seen; rounds count from it.
    epoch: Option<Instant>,
    slices: [Slice; SLICES as usize],
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self { settings, phase: Phase::Closed, epoch: None, slices: [Slice::default(); SLICES as usize] }
    }

    /// The state at `now` (an open breaker whose break is over reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How long until an open breaker lets a probe through; `None` unless it is open.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    /// Asks to make a call. On `Ok`, report its outcome with [`record`](Self::record).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Rejected> {
        match self.phase {
            Phase::Closed => Ok(()),
            Phase::Open { until } if now < until => Err(Rejected { retry_in: until - now }),
            Phase::Open { .. } => {
                self.phase = Phase::HalfOpen { in_flight: 1 };
                Ok(())
            }
            Phase::HalfOpen { in_flight } if in_flight < self.settings.probes.max(1) => {
                self.phase = Phase::HalfOpen { in_flight: in_flight + 1 };
                Ok(())
            }
            Phase::HalfOpen { .. } => Err(Rejected { retry_in: Duration::ZERO }),
        }
    }

    /// Reports how a call let through by [`try_acquire`](Self::try_acquire) ended.
    pub fn record(&mut self, success: bool, now: Instant) {
        match self.phase {
            Phase::HalfOpen { .. } if success => self.close(),
            Phase::HalfOpen { .. } => self.open(now),
            // A call that started before the breaker opened: its outcome is old news.
            Phase::Open { .. } => {}
            Phase::Closed => {
                let slice = self.slice_for(now);
                if success {
                    slice.successes += 1;
                } else {
                    slice.failures += 1;
                }
                if !success && self.should_open(now) {
                    self.open(now);
                }
            }
        }
    }

    /// Gives back a half-open probe slot whose call ended without an outcome (it was cancelled).
    pub fn release(&mut self) {
        if let Phase::HalfOpen { in_flight } = self.phase {
            self.phase = Phase::HalfOpen { in_flight: in_flight.saturating_sub(1) };
        }
    }

    /// The rolling window's current round at `now`.
    fn round(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let length = (self.settings.window / SLICES).max(Duration::from_millis(1));
        (now.saturating_duration_since(epoch).as_nanos() / length.as_nanos()) as u64
    }

    /// The slice for `now`, cleared first when it still holds an older round's counts.
    fn slice_for(&mut self, now: Instant) -> &mut Slice {
        let round = self.round(now);
        let slice = &mut self.slices[(round % u64::from(SLICES)) as usize];
        if slice.round != round {
            *slice = Slice { round, successes: 0, failures: 0 };
        }
        slice
    }

    fn should_open(&mut self, now: Instant) -> bool {
        let round = self.round(now);
        let (mut successes, mut failures) = (0u64, 0u64);
        for slice in self.slices.iter().filter(|s| s.round + u64::from(SLICES) > round) {
            successes += u64::from(slice.successes);
            failures += u64::from(slice.failures);
        }
        let total = successes + failures;
        total >= u64::from(self.settings.min_calls.max(1))
            && failures as f64 >= self.settings.failure_ratio * total as f64
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Open { until: now + self.settings.break_for };
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.epoch = None;
        self.slices = [Slice::default(); SLICES as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_ratio: 0.5,
            break_for: Duration::from_secs(5),
            probes: 1,
        }
    }

    fn calls(breaker: &mut CircuitBreaker, now: Instant, outcomes: &[bool]) {
        for &ok in outcomes {
            breaker.try_acquire(now).expect("closed breakers let calls through");
            breaker.record(ok, now);
        }
    }

    #[test]
    fn opens_when_the_failure_ratio_is_reached_over_enough_calls() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings());
        calls(&mut b, t0, &[false, false, false]);
        assert_eq!(b.state(t0), BreakerState::Closed, "three calls are fewer than min_calls");
        calls(&mut b, t0, &[true]);
        assert_eq!(b.state(t0), BreakerState::Closed, "only failures open it");
        calls(&mut b, t0, &[false]);
        assert_eq!(b.state(t0), BreakerState::Open, "4 of 5 failed");
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(1)), Err(Rejected { retry_in: Duration::from_secs(4) }));
        assert_eq!(b.open_for(t0 + Duration::from_secs(2)), Some(Duration::from_secs(3)));
    }

    #[test]
    fn stays_closed_while_most_calls_succeed() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings());
        calls(&mut b, t0, &[true, true, true, false, true, true, false]);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings());
        calls(&mut b, t0, &[false, false, false]);
        // Eleven seconds later those failures no longer count: one more is 1 of 1 < min_calls.
        let later = t0 + Duration::from_secs(11);
        calls(&mut b, later, &[false]);
        assert_eq!(b.state(later), BreakerState::Closed);
        calls(&mut b, later, &[false, false, false]);
        assert_eq!(b.state(later), BreakerState::Open);
    }

    #[test]
    fn half_opens_after_the_break_and_a_successful_probe_closes_it() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings());
        calls(&mut b, t0, &[false; 4]);
        let after_break = t0 + Duration::from_secs(5);
        assert_eq!(b.state(after_break), BreakerState::HalfOpen);
        b.try_acquire(after_break).expect("one probe goes through");
        assert_eq!(b.try_acquire(after_break), Err(Rejected { retry_in: Duration::ZERO }), "only one probe");
        b.record(true, after_break);
        assert_eq!(b.state(after_break), BreakerState::Closed);
        calls(&mut b, after_break, &[false; 3]);
        assert_eq!(b.state(after_break), BreakerState::Closed, "closing forgot the old failures");
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_a_full_break() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings());
        calls(&mut b, t0, &[false; 4]);
        let probe_at = t0 + Duration::from_secs(6);
        b.try_acquire(probe_at).unwrap();
        b.record(false, probe_at);
        assert_eq!(b.state(probe_at), BreakerState::Open);
        assert_eq!(b.open_for(probe_at), Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings());
        calls(&mut b, t0, &[false; 4]);
        let later = t0 + Duration::from_secs(5);
        b.try_acquire(later).unwrap();
        b.release();
        assert!(b.try_acquire(later).is_ok());
    }
}
