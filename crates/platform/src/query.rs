//! Query-string parameters shared by the per-owner monthly reports (package summary, drone
//! utilization, delivery summary): bad values are a 400 naming the parameter.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::problem::Problem;

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// `[start, end)` of the month.
    pub fn range(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month");
        let (next_year, next_month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        let end = NaiveDate::from_ymd_opt(next_year, next_month, 1).expect("validated month");
        let at_midnight = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"));
        (at_midnight(start), at_midnight(end))
    }
}

/// Reads `year` and `month` (both required), reporting every bad one at once.
pub fn month(params: &HashMap<String, String>) -> Result<Month, Problem> {
    let mut errors = BTreeMap::new();
    let year = match params.get("year").map(|s| s.trim().parse::<i32>()) {
        None => {
            errors.insert("year".to_owned(), "required".to_owned());
            None
        }
        Some(Ok(y)) if (1970..=9999).contains(&y) => Some(y),
        Some(_) => {
            errors.insert("year".to_owned(), "must be a year between 1970 and 9999".to_owned());
            None
        }
    };
    let month = match params.get("month").map(|s| s.trim().parse::<u32>()) {
        None => {
            errors.insert("month".to_owned(), "required".to_owned());
            None
        }
        Some(Ok(m)) if (1..=12).contains(&m) => Some(m),
        Some(_) => {
            errors.insert("month".to_owned(), "must be a month number from 1 to 12".to_owned());
            None
        }
    };
    match (year, month) {
        (Some(year), Some(month)) => Ok(Month { year, month }),
        _ => Err(bad_query(errors)),
    }
}

/// A required, non-blank parameter.
pub fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Problem> {
    match params.get(name).map(|s| s.trim()) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(bad_query(BTreeMap::from([(name.to_owned(), "required".to_owned())]))),
    }
}

fn bad_query(errors: BTreeMap<String, String>) -> Problem {
    let mut problem = Problem::invalid_fields(errors);
    problem.status = 400;
    problem.title = "Bad Request".to_owned();
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn december_ends_at_the_new_year() {
        let m = month(&params(&[("year", "2026"), ("month", "12")])).unwrap();
        let (start, end) = m.range();
        assert_eq!(start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    #[test]
    fn names_every_bad_parameter() {
        let problem = month(&params(&[("month", "13")])).unwrap_err();
        assert_eq!(problem.status, 400);
        assert_eq!(problem.errors.len(), 2);
    }
}
