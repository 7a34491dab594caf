//! The report of a run: a table for people, JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Percentiles;

/// Everything measured in one scenario.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub mode: String,
    pub duration_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    pub dropped_by_client: u64,
    pub accepted_per_s: f64,
    pub accept_latency: Option<Percentiles>,
    pub created: u64,
    pub scheduled: Option<u64>,
    pub scheduled_per_s: Option<f64>,
    pub accept_to_scheduled_sampled: Option<Percentiles>,
    pub lost: Option<i64>,
    pub dead_lettered: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub cpu_ms_per_scheduled: Option<f64>,
    /// Events the consumers that follow the workflow (delivery tracking, history,
    /// notifications) had yet to handle once every accepted request was scheduled.
    pub events_behind: Option<u64>,
    /// Seconds they then took to catch up (none: they stalled).
    pub caught_up_after_s: Option<f64>,
    /// How late the flight clock published the drone events of the run (due → published): a
    /// clock that trails the flights shows here, not in `events_behind`.
    pub drone_event_lateness: Option<Lateness>,
    pub ratio_to_baseline: Option<f64>,
}

/// Lateness of published events, from the system's histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lateness {
    pub events: u64,
    pub mean_ms: f64,
    /// The upper bound of the histogram bucket holding the 99th percentile.
    pub p99_at_most_ms: f64,
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// One markdown table row; see [`table_header`].
    pub fn row(&self) -> String {
        let accept = self.accept_latency;
        let e2e = self.accept_to_scheduled_sampled;
        format!(
            "| {} | {} | {:.0} | {} | {} | {} / {} / {} / {} | {} | {} / {} | {} | {} / {} | {} | {} | {} |",
            self.scenario,
            self.mode,
            self.accepted_per_s,
            self.errors,
            opt(self.ratio_to_baseline, 3),
            opt(accept.map(|p| p.p50_ms), 2),
            opt(accept.map(|p| p.p95_ms), 2),
            opt(accept.map(|p| p.p99_ms), 2),
            opt(accept.map(|p| p.max_ms), 1),
            opt(self.scheduled_per_s, 0),
            opt(e2e.map(|p| p.p50_ms), 1),
            opt(e2e.map(|p| p.p99_ms), 1),
            self.lost.map_or_else(|| "–".to_owned(), |l| l.to_string()),
            self.events_behind.map_or_else(|| "–".to_owned(), |n| n.to_string()),
            match (self.events_behind, self.caught_up_after_s) {
                (None, _) => "–".to_owned(),
                (Some(_), None) => "stalled".to_owned(),
                (Some(_), Some(after)) => format!("{after:.1}"),
            },
            opt(self.cpu_ms_per_scheduled, 3),
            opt(self.peak_rss_mib, 0),
            opt(self.cpu_seconds, 1),
        )
    }

    /// A human-readable summary for the terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n{}", table_header(), self.row());
        if !self.errors_by_status.is_empty() {
            let _ = writeln!(out, "errors by status: {:?}", self.errors_by_status);
        }
        if let Some(late) = self.drone_event_lateness {
            let _ = writeln!(
                out,
                "drone events published: {}, late by {:.1} ms on average, p99 at most {} ms",
                late.events, late.mean_ms, late.p99_at_most_ms
            );
        }
        if self.dropped_by_client > 0 {
            let _ = writeln!(out, "requests not sent because {} were already outstanding", self.dropped_by_client);
        }
        out
    }
}

/// Header of the markdown table rows.
pub fn table_header() -> String {
    "| scenario | load | accepted/s | errors | ratio to bare HTTP | accept p50 / p95 / p99 / max (ms) | scheduled/s | \
     accept→scheduled p50 / p99 (ms, sampled) | lost | events behind / caught up after (s) | CPU ms / scheduled | \
     peak RSS (MiB) | CPU s |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_a_cell_per_column() {
        let report = Report {
            scenario: "ingest".into(),
            mode: "open 1000/s".into(),
            accepted_per_s: 999.6,
            lost: Some(0),
            ..Report::default()
        };
        let columns = table_header().lines().next().unwrap().matches('|').count();
        assert_eq!(report.row().matches('|').count(), columns);
        assert!(report.row().contains("| 1000 |"));
        assert!(serde_json::to_string(&report).unwrap().contains("\"accepted_per_s\":999.6"));
    }
}
