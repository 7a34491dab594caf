//! Open-loop pacing: request `i` is due at `start + i / rate`, whatever happened to earlier
//! requests. Latency is measured from that due time, so a stalled system cannot hide its
//! queueing delay (no coordinated omission).

use std::time::Duration;

/// How many requests are due `elapsed` after the start at `rate` per second.
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64
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
        assert_eq!(due(Duration::from_millis(999), 1000.0), 999);
        assert_eq!(due(Duration::from_secs(2), 1000.0), 2000);
        assert_eq!(due(Duration::from_millis(250), 10.0), 2);
        assert_eq!(due_at(1500, 1000.0), Duration::from_millis(1500));
        for i in 0..100 {
            // A request is never due before its slot.
            assert!(due(due_at(i, 333.0), 333.0) <= i + 1);
        }
    }
}
