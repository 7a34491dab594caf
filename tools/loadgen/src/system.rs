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

/// The Prometheus text of every endpoint (one per process), one after the other: series of
/// different processes are distinct, so sums over it are sums over the system.
pub async fn scrape(client: &reqwest::Client, metrics_urls: &[String]) -> anyhow::Result<String> {
    let mut text = String::new();
    for url in metrics_urls {
        text.push_str(&client.get(url).send().await?.error_for_status()?.text().await?);
        text.push('\n');
    }
    Ok(text)
}

/// Reads the counters from the system's Prometheus endpoints.
pub async fn counters(client: &reqwest::Client, metrics_urls: &[String]) -> anyhow::Result<Counters> {
    Ok(counters_in(&scrape(client, metrics_urls).await?))
}

pub fn counters_in(text: &str) -> Counters {
    let outcome = |o| prom::sum(text, "workflow_messages_total", &[("type", "delivery"), ("outcome", o)]);
    Counters {
        scheduled: prom::sum(text, "deliveries_scheduled_total", &[]),
        already_cancelled: outcome("already_cancelled"),
        dead_lettered: outcome("dead_lettered"),
    }
}

/// A histogram summed over every process's series of one family: `(upper bound, cumulative
/// count)` per bucket in increasing order, then the sum and the count of the observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The family `name` (seconds) as exposed in `text`.
    pub fn read(text: &str, name: &str) -> Histogram {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (labels, value) in prom::samples(text, &format!("{name}_bucket")) {
            let Some(le) = labels.iter().find(|(k, _)| *k == "le").and_then(|(_, v)| v.parse::<f64>().ok()) else {
                continue;
            };
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some(bucket) => bucket.1 += value,
                None => buckets.push((le, value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram {
            buckets,
            sum: prom::sum(text, &format!("{name}_sum"), &[]),
            count: prom::sum(text, &format!("{name}_count"), &[]),
        }
    }

    /// The observations made since `before` (same buckets).
    pub fn since(&self, before: &Histogram) -> Histogram {
        let earlier = |le: f64| before.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, n)| *n);
        Histogram {
            buckets: self.buckets.iter().map(|&(le, n)| (le, n - earlier(le))).collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (infinite past the last bound);
    /// none without observations.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let wanted = q * self.count;
        Some(self.buckets.iter().find(|(_, n)| *n >= wanted).map_or(f64::INFINITY, |(le, _)| *le))
    }
}

/// Events stored on the streams and not yet settled (acked or dead-lettered) by one of their
/// consumer groups, summed over the groups: how far the consumers that follow the workflow
/// (delivery tracking, history, notifications) trail it. A level, not a count since a start.
/// Work queues, whose consumers are the workflow itself, are left to the scheduling counters.
pub fn events_behind(text: &str) -> f64 {
    let mut groups = std::collections::BTreeSet::new();
    for (labels, _) in prom::samples(text, "bus_messages_acked_total") {
        let label = |key| labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if let (Some(queue), Some(group)) = (label("queue"), label("group"))
            && queue != group
        {
            groups.insert((queue, group));
        }
    }
    groups
        .into_iter()
        .map(|(queue, group)| {
            let stored = prom::sum(text, "bus_messages_published_total", &[("queue", queue), ("outcome", "stored")]);
            let settled = prom::sum(text, "bus_messages_acked_total", &[("queue", queue), ("group", group)])
                + prom::sum(text, "bus_messages_dead_lettered_total", &[("queue", queue), ("group", group)]);
            // A redelivered message can be acked twice.
            (stored - settled).max(0.0)
        })
        .sum()
}

/// Once scheduling has drained: how many events the consumers were behind, and how long they
/// then took to catch up (none when they stopped making progress for `stall`).
pub async fn catch_up(
    client: &reqwest::Client,
    metrics_urls: &[String],
    stall: Duration,
) -> anyhow::Result<(f64, Option<Duration>)> {
    let started = Instant::now();
    let behind_at_start = events_behind(&scrape(client, metrics_urls).await?);
    let (mut behind, mut last_progress) = (behind_at_start, Instant::now());
    while behind > 0.0 {
        if last_progress.elapsed() >= stall {
            return Ok((behind_at_start, None));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = events_behind(&scrape(client, metrics_urls).await?);
        if now < behind {
            last_progress = Instant::now();
        }
        behind = now;
    }
    Ok((behind_at_start, Some(started.elapsed())))
}

/// Waits until `created` requests are settled or progress stops for `stall`; returns the
/// counters since `before` and how long the drain took.
pub async fn drain(
    client: &reqwest::Client,
    metrics_urls: &[String],
    before: &Counters,
    created: u64,
    stall: Duration,
) -> anyhow::Result<(Counters, Duration)> {
    let started = Instant::now();
    let mut last = counters(client, metrics_urls).await?.since(before);
    let mut last_progress = Instant::now();
    while last.settled() < created as f64 && last_progress.elapsed() < stall {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = counters(client, metrics_urls).await?.since(before);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes' series, one after the other, as [`scrape`] joins them: the scheduler
    /// publishes drone events, the delivery service consumes them and publishes delivery events
    /// that two groups follow.
    const SYSTEM: &str = r#"# TYPE bus_messages_published_total counter
bus_messages_published_total{queue="drone-events",outcome="stored"} 500
bus_messages_published_total{queue="drone-events",outcome="duplicate"} 7
bus_messages_published_total{queue="delivery-requests",outcome="stored"} 100
deliveries_scheduled_total{service="workflow"} 98
workflow_messages_total{service="workflow",type="delivery",outcome="dead_lettered"} 1
workflow_messages_total{service="workflow",type="delivery",outcome="already_cancelled"} 1

bus_messages_acked_total{queue="delivery-requests",group="delivery-requests"} 60
bus_messages_acked_total{queue="drone-events",group="delivery"} 380
bus_messages_dead_lettered_total{queue="drone-events",group="delivery"} 20
bus_messages_published_total{queue="delivery-events",outcome="stored"} 90
bus_messages_acked_total{queue="delivery-events",group="deliveryhistory"} 90
bus_messages_acked_total{queue="delivery-events",group="notifications"} 92
"#;

    #[test]
    fn histograms_sum_processes_and_subtract_an_earlier_reading() {
        let at = |fast: u32, slow: u32| {
            format!(
                "lateness_seconds_bucket{{service=\"a\",le=\"0.01\"}} {fast}\n\
                 lateness_seconds_bucket{{service=\"a\",le=\"1\"}} {}\n\
                 lateness_seconds_bucket{{service=\"a\",le=\"+Inf\"}} {}\n\
                 lateness_seconds_sum{{service=\"a\"}} 2.5\n\
                 lateness_seconds_count{{service=\"a\"}} {}\n\
                 lateness_seconds_bucket{{service=\"b\",le=\"0.01\"}} 1\n\
                 lateness_seconds_bucket{{service=\"b\",le=\"1\"}} 1\n\
                 lateness_seconds_bucket{{service=\"b\",le=\"+Inf\"}} 1\n\
                 lateness_seconds_sum{{service=\"b\"}} 0.5\n\
                 lateness_seconds_count{{service=\"b\"}} 1\n",
                fast + slow,
                fast + slow,
                fast + slow
            )
        };
        let before = Histogram::read(&at(10, 0), "lateness_seconds");
        assert_eq!(before.buckets, vec![(0.01, 11.0), (1.0, 11.0), (f64::INFINITY, 11.0)]);
        assert_eq!((before.sum, before.count), (3.0, 11.0));
        assert_eq!(before.quantile_upper_bound(0.99), Some(0.01));
        let run = Histogram::read(&at(100, 10), "lateness_seconds").since(&before);
        assert_eq!(run.count, 100.0);
        assert_eq!(run.quantile_upper_bound(0.5), Some(0.01), "90 of the 100 new ones were fast");
        assert_eq!(run.quantile_upper_bound(0.99), Some(1.0));
        assert_eq!(Histogram::default().quantile_upper_bound(0.99), None);
    }

    #[test]
    fn counters_sum_over_every_process() {
        let counters = counters_in(SYSTEM);
        assert_eq!((counters.scheduled, counters.already_cancelled, counters.dead_lettered), (98.0, 1.0, 1.0));
        assert_eq!(counters.settled(), 100.0);
    }

    #[test]
    fn events_behind_are_stored_events_each_group_has_not_settled() {
        // drone-events/delivery: 500 stored - 380 acked - 20 dead; history is caught up; a
        // notification acked twice counts as caught up, not ahead; the work queue is left out.
        assert_eq!(events_behind(SYSTEM), 100.0);
        assert_eq!(events_behind("deliveries_scheduled_total 3\n"), 0.0);
    }
}
