//! Load generator and benchmark harness for Fabrikam Drone Delivery.
//!
//! Open-loop (constant arrival rate, latency from each request's due time) or closed-loop load
//! through the gateway, with a reference-shaped request mix; the system's own counters say how
//! many deliveries were scheduled and whether any accepted request was lost; /proc says what it
//! cost. A bare HTTP server measured the same way gives the yardstick every report is divided by.

pub mod baseline;
pub mod bench;
pub mod cleanup;
pub mod overhead;
pub mod pacing;
pub mod procfs;
pub mod prom;
pub mod report;
pub mod runner;
pub mod stats;
pub mod system;
pub mod workload;

use std::time::Duration;

use report::Report;
use runner::{Mode, RunOptions};
use stats::Percentiles;
use workload::{Mix, Workload};

/// Where the system under test can be observed.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// Its Prometheus endpoints, one per process (the all-in-one gateway's `/metrics` shows
    /// every service); none: the system's counters are not watched.
    pub metrics_urls: Vec<String>,
    /// Its processes, for CPU and memory.
    pub pids: Vec<u32>,
    /// How long to wait for accepted requests to be scheduled once the load stops.
    pub drain_stall: Duration,
}

/// Runs one scenario and reports it.
pub async fn measure(scenario: &str, options: &RunOptions, mix: Mix, observe: &Observe) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let urls = &observe.metrics_urls;
    let before_text = if urls.is_empty() { None } else { Some(system::scrape(&client, urls).await?) };
    let before = before_text.as_deref().map(system::counters_in);
    let cpu_before = system::usage(&observe.pids).cpu_seconds;
    let result = runner::run(options, Workload::new(mix, 0x5eed), observe.drain_stall).await;
    let created = result.stats.created;
    let settled = match before {
        Some(before) => Some(system::drain(&client, urls, &before, created, observe.drain_stall).await?),
        None => None,
    };
    // The consumers behind the workflow (tracking, history) may still be busy with this load:
    // wait for them too, so the CPU it cost is counted in full.
    let caught_up = match before {
        Some(_) => Some(system::catch_up(&client, urls, observe.drain_stall).await?),
        None => None,
    };
    let lateness = match &before_text {
        Some(text) => {
            let late = |text: &str| system::Histogram::read(text, DRONE_EVENT_LATENESS);
            Some(late(&system::scrape(&client, urls).await?).since(&late(text)))
        }
        None => None,
    };
    let usage = system::usage(&observe.pids);
    let cpu_seconds = (!observe.pids.is_empty()).then_some(usage.cpu_seconds - cpu_before);
    let elapsed = result.elapsed.as_secs_f64();
    let stats = &result.stats;
    let scheduled = settled.map(|(c, _)| c.scheduled.max(0.0) as u64);
    // Scheduling goes on after the load stops (the backlog drains, first while the followed
    // deliveries are awaited, then until the counters settle): the rate counts that time too.
    let scheduling_secs = scheduling_secs(&result, settled.map(|(_, drained)| drained));
    let mode = match options.mode {
        Mode::Open { rate, connections } => {
            format!("open loop {rate:.0}/s ≤ {connections} conn, {:.0} s", options.duration.as_secs_f64())
        }
        Mode::Closed { connections } => {
            format!("closed loop {connections} conn, {:.0} s", options.duration.as_secs_f64())
        }
    };
    Ok(Report {
        scenario: scenario.to_owned(),
        mode,
        duration_s: elapsed,
        sent: result.sent,
        ok: stats.ok(),
        errors: stats.errors() + result.dropped,
        errors_by_status: stats
            .by_status
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(s, n)| (s.to_string(), *n))
            .chain((stats.transport_errors > 0).then(|| ("transport".to_owned(), stats.transport_errors)))
            .collect(),
        dropped_by_client: result.dropped,
        accepted_per_s: stats.ok() as f64 / elapsed,
        accept_latency: Some(Percentiles::of(&stats.accept_latency)),
        created,
        scheduled,
        scheduled_per_s: scheduled.map(|s| s as f64 / scheduling_secs),
        accept_to_scheduled_sampled: (!stats.scheduled_latency.is_empty())
            .then(|| Percentiles::of(&stats.scheduled_latency)),
        lost: settled.map(|(c, _)| created as i64 - c.settled().round() as i64),
        dead_lettered: settled.map(|(c, _)| c.dead_lettered as u64),
        cpu_seconds,
        peak_rss_mib: (!observe.pids.is_empty()).then_some(usage.peak_rss_mib),
        cpu_ms_per_scheduled: match (cpu_seconds, scheduled) {
            (Some(cpu), Some(s)) if s > 0 => Some(cpu * 1000.0 / s as f64),
            _ => None,
        },
        events_behind: caught_up.map(|(behind, _)| behind.round() as u64),
        caught_up_after_s: caught_up.and_then(|(_, after)| after).map(|after| after.as_secs_f64()),
        drone_event_lateness: lateness.and_then(|h| {
            Some(report::Lateness {
                events: h.count as u64,
                mean_ms: h.sum * 1000.0 / h.count,
                p99_at_most_ms: h.quantile_upper_bound(0.99)? * 1000.0,
            })
        }),
        ratio_to_baseline: None,
    })
}

/// The flight clock's histogram of how late it published drone events.
const DRONE_EVENT_LATENESS: &str = "drone_event_lateness_seconds";

/// The time over which a run's deliveries were scheduled: the load, the wait for the followed
/// deliveries, and the drain after it (when the system's counters were watched).
fn scheduling_secs(result: &runner::RunResult, drained: Option<Duration>) -> f64 {
    (result.elapsed + result.followed_for + drained.unwrap_or_default()).as_secs_f64()
}

#[cfg(test)]
mod scheduling_rate_tests {
    use super::*;

    #[test]
    fn the_scheduling_time_counts_the_wait_for_followed_deliveries() {
        let result = runner::RunResult {
            stats: stats::Stats::default(),
            elapsed: Duration::from_secs(10),
            followed_for: Duration::from_secs(12),
            sent: 0,
            dropped: 0,
        };
        assert_eq!(scheduling_secs(&result, Some(Duration::from_secs(3))), 25.0);
        assert_eq!(scheduling_secs(&result, None), 22.0);
    }
}
