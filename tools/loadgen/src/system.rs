//! The system's side of a run: its own counters (from `/metrics`) and its process's CPU and
//! memory (from /proc).

use std::time::{Duration, Instant};

use crate::{procfs, prom};

/// Workflow counters that say what became of accepted delivery requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub scheduled: f64,
    pub already_cancelled: f64,
    pub dead_lettered: f64,
}

impl Counters {
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            scheduled: self.scheduled - before.scheduled,
            already_cancelled: self.already_cancelled - before.already_cancelled,
            dead_lettered: self.dead_lettered - before.dead_lettered,
        }
    }

    /// Requests whose fate is known.
    pub fn settled(&self) -> f64 {
        self.scheduled + self.already_cancelled + self.dead_lettered
    }
}

/// Reads the counters from a Prometheus endpoint.
pub async fn counters(client: &reqwest::Client, metrics_url: &str) -> anyhow::Result<Counters> {
    let text = client.get(metrics_url).send().await?.error_for_status()?.text().await?;
    let outcome = |o| prom::sum(&text, "workflow_messages_total", &[("type", "delivery"), ("outcome", o)]);
    Ok(Counters {
        scheduled: prom::sum(&text, "deliveries_scheduled_total", &[]),
        already_cancelled: outcome("already_cancelled"),
        dead_lettered: outcome("dead_lettered"),
    })
}

/// Waits until `created` requests are settled or progress stops for `stall`; returns the
/// counters since `before` and how long the drain took.
pub async fn drain(
    client: &reqwest::Client,
    metrics_url: &str,
    before: &Counters,
    created: u64,
    stall: Duration,
) -> anyhow::Result<(Counters, Duration)> {
    let started = Instant::now();
    let mut last = counters(client, metrics_url).await?.since(before);
    let mut last_progress = Instant::now();
    while last.settled() < created as f64 && last_progress.elapsed() < stall {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = counters(client, metrics_url).await?.since(before);
        if now.settled() > last.settled() {
            last_progress = Instant::now();
        }
        last = now;
    }
    Ok((last, started.elapsed()))
}

/// CPU seconds and peak RSS of the system's processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

pub fn usage(pids: &[u32]) -> Usage {
    Usage {
        cpu_seconds: pids.iter().filter_map(|p| procfs::cpu_seconds(*p)).sum(),
        peak_rss_mib: pids.iter().filter_map(|p| procfs::peak_rss_mib(*p)).sum(),
    }
}
