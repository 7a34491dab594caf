//! The overhead figures: each path's rate and latency, and how much the gateway adds to the
//! direct path, as a ratio and in microseconds. Pure: no I/O, tested here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Report;
use crate::stats::Percentiles;

/// One path measured: direct, or through the gateway with or without authentication.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Leg {
    pub name: String,
    /// Where the requests were posted.
    pub url: String,
    pub sent: u64,
    pub ok: u64,
    /// Non-2xx answers, transport errors and requests not sent because too many were outstanding.
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// 2xx answers per second.
    pub achieved_per_s: f64,
    /// From each request's due time to its answer.
    pub latency: Percentiles,
    /// The gateway process's CPU time per request sent (none on the direct path).
    pub gateway_cpu_us_per_request: Option<f64>,
}

impl Leg {
    pub fn from_report(name: &str, url: &str, report: &Report) -> Self {
        let empty = Percentiles { count: 0, p50_ms: 0.0, p95_ms: 0.0, p99_ms: 0.0, max_ms: 0.0 };
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            sent: report.sent,
            ok: report.ok,
            errors: report.errors,
            errors_by_status: report.errors_by_status.clone(),
            achieved_per_s: report.accepted_per_s,
            latency: report.accept_latency.unwrap_or(empty),
            gateway_cpu_us_per_request: report
                .cpu_seconds
                .filter(|_| report.sent > 0)
                .map(|cpu| cpu * 1_000_000.0 / report.sent as f64),
        }
    }
}

/// A path through the gateway against the direct one.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Comparison {
    /// p50 through the gateway ÷ p50 direct (none when the direct path has no latency at all).
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// p50 through the gateway − p50 direct, in microseconds.
    pub added_p50_us: f64,
    pub added_p99_us: f64,
}

impl Comparison {
    pub fn of(direct: &Percentiles, through: &Percentiles) -> Self {
        let ratio = |through: f64, direct: f64| (direct > 0.0).then(|| through / direct);
        Self {
            p50_ratio: ratio(through.p50_ms, direct.p50_ms),
            p99_ratio: ratio(through.p99_ms, direct.p99_ms),
            added_p50_us: (through.p50_ms - direct.p50_ms) * 1000.0,
            added_p99_us: (through.p99_ms - direct.p99_ms) * 1000.0,
        }
    }
}

/// Everything `loadgen overhead` measured, for the terminal and as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OverheadReport {
    pub rate_per_s: f64,
    pub secs: f64,
    pub warmup_secs: f64,
    pub direct: Leg,
    pub gateway_no_auth: Leg,
    pub gateway_jwt: Leg,
    /// (b) against (a): what routing and proxying cost.
    pub no_auth_vs_direct: Comparison,
    /// (c) against (a): routing, proxying and authentication.
    pub jwt_vs_direct: Comparison,
    /// (c) against (b): authentication alone (verifying the JWT, signing the identity).
    pub jwt_vs_no_auth: Comparison,
}

impl OverheadReport {
    pub fn new(rate_per_s: f64, secs: f64, warmup_secs: f64, direct: Leg, no_auth: Leg, jwt: Leg) -> Self {
        Self {
            rate_per_s,
            secs,
            warmup_secs,
            no_auth_vs_direct: Comparison::of(&direct.latency, &no_auth.latency),
            jwt_vs_direct: Comparison::of(&direct.latency, &jwt.latency),
            jwt_vs_no_auth: Comparison::of(&no_auth.latency, &jwt.latency),
            direct,
            gateway_no_auth: no_auth,
            gateway_jwt: jwt,
        }
    }

    /// A markdown table, one row per path, and the cost of authentication alone.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Gateway overhead: open loop {:.0}/s for {:.0} s per path after a {:.0} s warm-up, the same client \
             settings for each; latency counts from each request's due time.\n",
            self.rate_per_s, self.secs, self.warmup_secs
        );
        let _ = writeln!(
            out,
            "| path | achieved/s | errors | p50 (ms) | p99 (ms) | max (ms) | p50 ÷ direct | p99 ÷ direct | \
             added p50 (µs) | added p99 (µs) | gateway CPU (µs/request) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        );
        let itself = Comparison::of(&self.direct.latency, &self.direct.latency);
        for (leg, against) in [
            (&self.direct, itself),
            (&self.gateway_no_auth, self.no_auth_vs_direct),
            (&self.gateway_jwt, self.jwt_vs_direct),
        ] {
            let _ = writeln!(out, "{}", row(leg, &against));
        }
        let auth = self.jwt_vs_no_auth;
        let _ = writeln!(
            out,
            "\nAuthentication alone (gateway + JWT against gateway, no auth): p50 {:+.0} µs, p99 {:+.0} µs.",
            auth.added_p50_us, auth.added_p99_us
        );
        let _ = writeln!(
            out,
            "Every latency also holds the load generator's own delay in starting each request, the same on each \
             path: the added µs are the gateway's cost, the ratios understate it."
        );
        for leg in [&self.direct, &self.gateway_no_auth, &self.gateway_jwt].into_iter().filter(|l| l.errors > 0) {
            let _ = writeln!(
                out,
                "WARNING: {} had {} errors {:?}; its latencies are not comparable.",
                leg.name, leg.errors, leg.errors_by_status
            );
        }
        out
    }
}

fn row(leg: &Leg, against: &Comparison) -> String {
    let ratio = |r: Option<f64>| r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
    format!(
        "| {} | {:.0} | {} | {:.3} | {:.3} | {:.1} | {} | {} | {:.0} | {:.0} | {} |",
        leg.name,
        leg.achieved_per_s,
        leg.errors,
        leg.latency.p50_ms,
        leg.latency.p99_ms,
        leg.latency.max_ms,
        ratio(against.p50_ratio),
        ratio(against.p99_ratio),
        against.added_p50_us,
        against.added_p99_us,
        leg.gateway_cpu_us_per_request.map_or_else(|| "–".to_owned(), |cpu| format!("{cpu:.1}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p50_ms: f64, p99_ms: f64) -> Percentiles {
        Percentiles { count: 1000, p50_ms, p95_ms: p99_ms, p99_ms, max_ms: p99_ms * 2.0 }
    }

    fn leg(name: &str, p50_ms: f64, p99_ms: f64) -> Leg {
        Leg {
            name: name.to_owned(),
            url: "http://x/api/deliveryrequests".to_owned(),
            sent: 1000,
            ok: 1000,
            errors: 0,
            errors_by_status: BTreeMap::new(),
            achieved_per_s: 2000.0,
            latency: latency(p50_ms, p99_ms),
            gateway_cpu_us_per_request: None,
        }
    }

    #[test]
    fn the_comparison_is_a_ratio_and_a_difference_in_microseconds() {
        let c = Comparison::of(&latency(0.200, 0.500), &latency(0.450, 1.500));
        assert!((c.p50_ratio.unwrap() - 2.25).abs() < 1e-9, "{c:?}");
        assert!((c.p99_ratio.unwrap() - 3.0).abs() < 1e-9, "{c:?}");
        assert!((c.added_p50_us - 250.0).abs() < 1e-6, "{c:?}");
        assert!((c.added_p99_us - 1000.0).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn a_faster_path_adds_negative_latency_and_an_empty_direct_path_has_no_ratio() {
        let c = Comparison::of(&latency(0.300, 0.900), &latency(0.250, 0.900));
        assert!((c.added_p50_us + 50.0).abs() < 1e-6, "{c:?}");
        assert_eq!(c.added_p99_us, 0.0);
        let none = Comparison::of(&latency(0.0, 0.0), &latency(0.250, 0.900));
        assert_eq!((none.p50_ratio, none.p99_ratio), (None, None));
    }

    #[test]
    fn a_leg_takes_rate_latency_errors_and_cpu_per_request_from_the_run() {
        let report = Report {
            sent: 20_000,
            ok: 19_990,
            errors: 10,
            accepted_per_s: 1999.0,
            accept_latency: Some(latency(0.2, 0.8)),
            cpu_seconds: Some(1.5),
            ..Report::default()
        };
        let leg = Leg::from_report("gateway + JWT", "http://gw/api/deliveryrequests", &report);
        assert_eq!((leg.sent, leg.ok, leg.errors), (20_000, 19_990, 10));
        assert_eq!(leg.latency, latency(0.2, 0.8));
        assert!((leg.gateway_cpu_us_per_request.unwrap() - 75.0).abs() < 1e-9);
        let direct = Leg::from_report("direct", "http://bare/api/deliveryrequests", &Report::default());
        assert_eq!((direct.gateway_cpu_us_per_request, direct.latency.count), (None, 0));
    }

    #[test]
    fn the_report_compares_both_gateway_paths_with_the_direct_one() {
        let report = OverheadReport::new(
            2000.0,
            10.0,
            2.0,
            leg("direct", 0.2, 0.5),
            leg("gateway, no auth", 0.4, 1.0),
            leg("gateway + JWT", 0.5, 1.5),
        );
        assert!((report.no_auth_vs_direct.added_p50_us - 200.0).abs() < 1e-6);
        assert!((report.jwt_vs_direct.p99_ratio.unwrap() - 3.0).abs() < 1e-9);
        assert!((report.jwt_vs_no_auth.added_p99_us - 500.0).abs() < 1e-6);
        let text = report.text();
        let header = text.lines().find(|l| l.starts_with("| path")).unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| path")).collect();
        assert_eq!(rows.len(), 3, "{text}");
        for row in &rows {
            assert_eq!(row.matches('|').count(), header.matches('|').count(), "{row}");
        }
        assert!(rows[0].contains("| 1.00 | 1.00 | 0 | 0 |"), "{}", rows[0]);
        assert!(rows[1].contains("| 2.00 | 2.00 | 200 | 500 |"), "{}", rows[1]);
        assert!(rows[2].contains("| 2.50 | 3.00 | 300 | 1000 |"), "{}", rows[2]);
        assert!(text.contains("p50 +100 µs, p99 +500 µs"), "{text}");
        assert!(!text.contains("WARNING"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["gateway_no_auth"]["latency"]["p50_ms"], 0.4);
        assert!(json["jwt_vs_direct"]["added_p50_us"].as_f64().unwrap() > 299.0);
    }

    #[test]
    fn a_path_with_errors_is_flagged() {
        let mut failing = leg("gateway + JWT", 0.1, 0.2);
        failing.errors = 3;
        failing.errors_by_status.insert("401".to_owned(), 3);
        let report =
            OverheadReport::new(2000.0, 10.0, 2.0, leg("direct", 0.2, 0.5), leg("gateway, no auth", 0.4, 1.0), failing);
        assert!(report.text().contains("WARNING: gateway + JWT had 3 errors"), "{}", report.text());
    }
}
