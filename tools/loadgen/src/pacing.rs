//! Open-loop pacing: request `i` is due at `start + i / rate`, whatever happened to earlier
//! requests. Latency is measured from that due time, so a stalled system cannot hide its
//! queueing delay (no coordinated omission).

use std::time::Duration;

/// How many requests a run of `duration` at `rate` per second sends: those due before it ends.
pub fn in_run(duration: Duration, rate: f64) -> u64 {
    (duration.as_secs_f64() * rate).ceil() as u64
}

/// When request `index` is due, relative to the start.
pub fn due_at(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spread_evenly() {
        assert_eq!(due_at(0, 1000.0), Duration::ZERO, "the first request is due at the start");
        assert_eq!(due_at(1500, 1000.0), Duration::from_millis(1500));
        assert_eq!(due_at(3, 10.0), Duration::from_millis(300));
        for i in 1..100 {
            let gap = due_at(i, 333.0) - due_at(i - 1, 333.0);
            assert!(gap.abs_diff(Duration::from_secs_f64(1.0 / 333.0)) < Duration::from_nanos(2), "{i}: {gap:?}");
        }
    }

    #[test]
    fn a_run_sends_the_requests_due_before_it_ends() {
        assert_eq!(in_run(Duration::from_secs(10), 2000.0), 20_000);
        assert_eq!(in_run(Duration::from_millis(2500), 1.0), 3);
        assert_eq!(in_run(Duration::ZERO, 1000.0), 0);
    }
}
