//! Open-loop pacing: request `i` is due at `start + i / rate`, whatever happened to earlier
//! requests. Latency is measured from that due time, so a stalled system cannot hide its
//! queueing delay (no coordinated omission).

use std::time::Duration;

/// How many requests are due `elapsed` after the start at `rate` per second. Request `i` is due
/// at `i / rate`, so one is due at the start and request `i` as soon as its slot begins (not a
/// slot later, which would add `1 / rate` to every latency measured from the due time).
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

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
        assert_eq!(due(Duration::ZERO, 1000.0), 1, "the first request is due at the start");
        assert_eq!(due(Duration::from_micros(999), 1000.0), 1);
        assert_eq!(due(Duration::from_millis(999), 1000.0), 1000);
        assert_eq!(due(Duration::from_millis(250), 10.0), 3);
        assert_eq!(due_at(1500, 1000.0), Duration::from_millis(1500));
        for i in 0..100 {
            let slot = due_at(i, 333.0);
            // Due once its slot has begun (a hair later for rounding), never a slot late.
            assert!(due(slot + Duration::from_nanos(10), 333.0) > i, "{i}");
            assert!(due(slot, 333.0) <= i + 1, "{i}");
        }
    }

    #[test]
    fn a_run_sends_the_requests_due_before_it_ends() {
        assert_eq!(in_run(Duration::from_secs(10), 2000.0), 20_000);
        assert_eq!(in_run(Duration::from_millis(2500), 1.0), 3);
        assert_eq!(in_run(Duration::ZERO, 1000.0), 0);
    }
}
