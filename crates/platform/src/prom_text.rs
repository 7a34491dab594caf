//! A strict reader of the Prometheus text exposition format (0.0.4), for tests that check what
//! `/metrics` serves: every line must be a comment, a `# HELP`/`# TYPE` line or a well-formed
//! sample; a family's TYPE comes once and before its samples; no series appears twice; a
//! histogram's buckets carry `le`, are cumulative, and its `+Inf` bucket equals its `_count`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Family name → its declared type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Whether a family (a histogram by its base name) has any sample.
    pub fn has_family(&self, family: &str) -> bool {
        self.samples.iter().any(|s| family_of(&s.name, &self.types) == family)
    }

    /// Sum of the samples named `name` whose labels include every pair of `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name && matching.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// The family a sample belongs to: `x_bucket`, `x_sum`, `x_count` of a declared histogram or
/// summary `x` belong to `x`.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(types.get(base).map(String::as_str), Some("histogram" | "summary"))
        {
            return base;
        }
    }
    name
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `{a="x",b="y"}` (after the name) → labels and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("expected {")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once('=').ok_or("expected label=\"value\"")?;
        let name = name.trim();
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = after.strip_prefix('"').ok_or("label value must be quoted")?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        rest = &after[1 + end + 1..];
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".to_owned());
        }
    }
}

/// Parses `text`; `Err` names the first line that breaks the format.
pub fn parse(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    let mut seen_samples: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !matches!(kind.trim(), "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if scrape.types.insert(name.to_owned(), kind.trim().to_owned()).is_some() {
                        return Err(at("TYPE given twice".into()));
                    }
                    if seen_samples.contains(name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                }
                (Some("HELP"), Some(name), _) if !is_metric_name(name) => return Err(at("bad metric name".into())),
                _ => {}
            }
            continue;
        }
        let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = fields.next().and_then(parse_value).ok_or_else(|| at("bad value".into()))?;
        if let Some(timestamp) = fields.next()
            && timestamp.parse::<i64>().is_err()
        {
            return Err(at("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let family = family_of(name, &scrape.types).to_owned();
        seen_samples.insert(family.clone());
        if family.ends_with("_total") && scrape.types.get(&family).is_some_and(|t| t != "counter") {
            return Err(at("a _total family that is not a counter".into()));
        }
        if !series.insert((name.to_owned(), labels.clone())) {
            return Err(at("series given twice".into()));
        }
        scrape.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    check_histograms(&scrape)?;
    Ok(scrape)
}

type Buckets = Vec<(f64, f64)>;

/// Buckets cumulative, `+Inf` present and equal to `_count`, per series.
fn check_histograms(scrape: &Scrape) -> Result<(), String> {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        // Labels but `le` → (le, cumulative count) per bucket.
        let mut by_series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
        for sample in scrape.samples.iter().filter(|s| s.name == bucket) {
            let le = sample.labels.get("le").ok_or_else(|| format!("{bucket} without le"))?;
            let le = parse_value(le).ok_or_else(|| format!("{bucket}: bad le {le:?}"))?;
            let key = sample.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone())).collect();
            by_series.entry(key).or_default().push((le, sample.value));
        }
        for (key, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{key:?}: buckets are not cumulative"));
            }
            let inf =
                buckets.last().filter(|b| b.0 == f64::INFINITY).ok_or(format!("{family}{key:?}: no +Inf bucket"))?;
            let wanted: Vec<(&str, &str)> = key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let count = scrape
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && s.labels.len() == wanted.len()
                        && wanted.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .ok_or(format!("{family}{key:?}: no _count"))?;
            if count.value != inf.1 {
                return Err(format!("{family}{key:?}: +Inf bucket {} but _count {}", inf.1, count.value));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{service="a",route="/x/{id}"} 3
http_requests_total{service="b",path="say \"hi\"\\"} 4 1700000000000
# TYPE lat_seconds histogram
lat_seconds_bucket{service="a",le="0.1"} 1
lat_seconds_bucket{service="a",le="+Inf"} 2
lat_seconds_sum{service="a"} 0.3
lat_seconds_count{service="a"} 2
up 1
"#;

    #[test]
    fn reads_good_text() {
        let scrape = parse(GOOD).unwrap();
        assert_eq!(scrape.sum("http_requests_total", &[]), 7.0);
        assert_eq!(scrape.sum("http_requests_total", &[("route", "/x/{id}")]), 3.0);
        assert_eq!(scrape.samples[1].labels["path"], "say \"hi\"\\");
        assert!(
            scrape.has_family("lat_seconds") && scrape.has_family("up") && !scrape.has_family("lat_seconds_bucket")
        );
    }

    #[test]
    fn refuses_broken_text() {
        let broken = [
            "bad-name 1",
            "x{a=\"1\"",
            "x{a=1} 1",
            "x one",
            "x 1 2 3",
            "x{a=\"1\",a=\"2\"} 1",
            "x 1\nx 2",
            "x 1\n# TYPE x gauge",
            "# TYPE x gauge\n# TYPE x gauge",
            "# TYPE x_total gauge\nx_total 1",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1",
            "# TYPE x wobbly",
        ];
        for text in broken {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn reads_what_the_recorder_renders() {
        crate::metrics::handle();
        metrics::counter!("prom_text_test_total", "service" => "t").increment(2);
        metrics::histogram!("prom_text_test_seconds", "service" => "t").record(0.2);
        let scrape = parse(&crate::metrics::render()).unwrap();
        assert_eq!(scrape.sum("prom_text_test_total", &[("service", "t")]), 2.0);
        assert_eq!(scrape.sum("prom_text_test_seconds_count", &[]), 1.0);
        assert_eq!(scrape.types["prom_text_test_seconds"], "histogram");
        #[cfg(target_os = "linux")]
        assert!(scrape.has_family("process_cpu_seconds_total") && scrape.has_family("process_open_fds"));
    }
}
