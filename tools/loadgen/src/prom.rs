//! Reading the numbers we need out of Prometheus text exposition.

/// Sum of every sample of `name` whose labels include all of `labels` (`key="value"` pairs).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            if !matches {
                return None;
            }
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE workflow_messages_total counter
workflow_messages_total{service="workflow",type="delivery",outcome="scheduled"} 120
workflow_messages_total{service="workflow",type="delivery",outcome="retried"} 3
workflow_messages_total{service="workflow",type="cancel",outcome="cancelled"} 5
deliveries_scheduled_total{service="workflow"} 120
"#;

    #[test]
    fn sums_matching_series() {
        assert_eq!(sum(TEXT, "deliveries_scheduled_total", &[]), 120.0);
        assert_eq!(sum(TEXT, "workflow_messages_total", &[("type", "delivery")]), 123.0);
        assert_eq!(sum(TEXT, "workflow_messages_total", &[("type", "delivery"), ("outcome", "scheduled")]), 120.0);
        assert_eq!(sum(TEXT, "missing_total", &[]), 0.0);
    }
}
