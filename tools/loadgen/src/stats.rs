//! What a run observed: latency histograms (microseconds) and outcome counts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Outcomes and latencies of one run, or one worker's share of it.
#[derive(Debug, Clone)]
pub struct Stats {
    pub accept_latency: Histogram<u64>,
    pub scheduled_latency: Histogram<u64>,
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub created: u64,
    pub rescheduled: u64,
    pub cancelled: u64,
}

impl Default for Stats {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid");
        Self {
            accept_latency: histogram(),
            scheduled_latency: histogram(),
            by_status: BTreeMap::new(),
            transport_errors: 0,
            created: 0,
            rescheduled: 0,
            cancelled: 0,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, 120_000_000)
}

impl Stats {
    pub fn record_answer(&mut self, status: u16, latency: Duration) {
        *self.by_status.entry(status).or_default() += 1;
        self.accept_latency.record(micros(latency)).expect("clamped into range");
    }

    pub fn record_transport_error(&mut self) {
        self.transport_errors += 1;
    }

    pub fn record_scheduled(&mut self, latency: Duration) {
        self.scheduled_latency.record(micros(latency)).expect("clamped into range");
    }

    /// Answers with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.by_status.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum()
    }

    /// Answers that were not 2xx, and requests with no answer at all.
    pub fn errors(&self) -> u64 {
        self.by_status.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(_, n)| n).sum::<u64>()
            + self.transport_errors
    }

    pub fn merge(&mut self, other: &Stats) {
        self.accept_latency.add(&other.accept_latency).expect("same bounds");
        self.scheduled_latency.add(&other.scheduled_latency).expect("same bounds");
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.created += other.created;
        self.rescheduled += other.rescheduled;
        self.cancelled += other.cancelled;
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_latencies() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for ms in 1..=100 {
            a.record_answer(202, Duration::from_millis(ms));
        }
        b.record_answer(503, Duration::from_millis(500));
        b.record_transport_error();
        a.merge(&b);
        assert_eq!(a.ok(), 100);
        assert_eq!(a.errors(), 2);
        let p = Percentiles::of(&a.accept_latency);
        assert_eq!(p.count, 101);
        assert!((p.p50_ms - 51.0).abs() < 0.5, "{p:?}");
        assert!((p.max_ms - 500.0).abs() < 1.0, "{p:?}");
    }
}
