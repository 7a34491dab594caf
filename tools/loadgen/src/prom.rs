//! Reading the numbers we need out of Prometheus text exposition.

/// Every sample of `name`: its labels (`key`, `value`, in order) and its value.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (Vec<(&'a str, &'a str)>, f64)> + 'a {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(move |line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let labels = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        Some((labels, value.trim().parse::<f64>().ok()?))
    })
}

/// Sum of every sample of `name` whose labels include all of `labels` (`key="value"` pairs).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name).filter(|(have, _)| labels.iter().all(|wanted| have.contains(wanted))).map(|(_, v)| v).sum()
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

    #[test]
    fn samples_carry_their_labels() {
        let all: Vec<_> = samples(TEXT, "workflow_messages_total").collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].0, vec![("service", "workflow"), ("type", "cancel"), ("outcome", "cancelled")]);
        assert_eq!(all[2].1, 5.0);
        assert_eq!(samples("up 1\n", "up").collect::<Vec<_>>(), vec![(vec![], 1.0)]);
    }
}
