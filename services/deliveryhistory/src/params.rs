//! The list route's query parameters: `ownerId` (required), `from` and `to` (RFC 3339, the range
//! `[from, to)` of finish times), `limit` (1 to 500, default 50) and `after` (the `next` cursor
//! of the previous page). An empty optional parameter counts as absent. Every bad parameter is
//! named in one 400 problem, the way the other services report query parameters.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use platform::Problem;

use crate::cursor::Cursor;
use crate::store::HistoryQuery;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

type Errors = BTreeMap<String, String>;

/// Reads the list parameters, reporting every bad one at once.
pub fn history_query(params: &HashMap<String, String>) -> Result<HistoryQuery, Problem> {
    let mut errors = Errors::new();
    let value = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let owner_id = value("ownerId");
    if owner_id.is_none() {
        errors.insert("ownerId".to_owned(), "required".to_owned());
    }
    let from = value("from").and_then(|v| time("from", v, &mut errors));
    let to = value("to").and_then(|v| time("to", v, &mut errors));
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        errors.insert("to".to_owned(), "must not be before from".to_owned());
    }
    let limit = match value("limit").map(str::parse::<u32>) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            errors.insert("limit".to_owned(), format!("must be a whole number from 1 to {MAX_LIMIT}"));
            DEFAULT_LIMIT
        }
    };
    let after = value("after").and_then(|token| {
        let cursor = Cursor::decode(token);
        if cursor.is_none() {
            errors.insert("after".to_owned(), "must be the `next` value of an earlier page".to_owned());
        }
        cursor
    });
    match owner_id {
        Some(owner_id) if errors.is_empty() => {
            Ok(HistoryQuery { owner_id: owner_id.to_owned(), account_id: None, from, to, after, limit })
        }
        _ => Err(bad_query(errors)),
    }
}

fn time(name: &str, value: &str, errors: &mut Errors) -> Option<DateTime<Utc>> {
    let parse = |text: &str| DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc));
    // A `+01:00` offset sent unescaped arrives as ` 01:00`: the form decoding made `+` a space.
    let parsed = parse(value).or_else(|| parse(&value.replace(' ', "+")));
    if parsed.is_none() {
        errors.insert(name.to_owned(), "must be an RFC 3339 time, e.g. 2026-03-01T00:00:00Z".to_owned());
    }
    parsed
}

/// The validation problem with status 400, as `platform::query` answers for query parameters.
fn bad_query(errors: Errors) -> Problem {
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

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn only_the_owner_is_required() {
        let q = history_query(&params(&[("ownerId", " contoso ")])).unwrap();
        assert_eq!(
            q,
            HistoryQuery {
                owner_id: "contoso".into(),
                account_id: None,
                from: None,
                to: None,
                after: None,
                limit: DEFAULT_LIMIT
            }
        );
        let empty = params(&[("ownerId", "contoso"), ("from", ""), ("to", " "), ("limit", ""), ("after", "")]);
        assert_eq!(history_query(&empty).unwrap(), q, "empty optional parameters count as absent");
    }

    #[test]
    fn reads_every_parameter() {
        let cursor = Cursor { finished_at: 42, delivery_id: "d1".into() };
        let q = history_query(&params(&[
            ("ownerId", "contoso"),
            ("from", "2026-03-01T00:00:00Z"),
            ("to", "2026-04-01T02:00:00+02:00"),
            ("limit", "500"),
            ("after", &cursor.encode()),
        ]))
        .unwrap();
        assert_eq!(q.from, Some(utc("2026-03-01T00:00:00Z")));
        assert_eq!(q.to, Some(utc("2026-04-01T00:00:00Z")));
        assert_eq!((q.limit, q.after), (500, Some(cursor)));
        let limit_one = history_query(&params(&[("ownerId", "contoso"), ("limit", "1")])).unwrap();
        assert_eq!(limit_one.limit, 1);
    }

    #[test]
    fn an_offset_whose_plus_became_a_space_still_reads() {
        let q = history_query(&params(&[("ownerId", "o"), ("from", "2026-03-01T01:00:00 01:00")])).unwrap();
        assert_eq!(q.from, Some(utc("2026-03-01T00:00:00Z")));
    }

    #[test]
    fn names_every_bad_parameter_in_one_400() {
        let problem = history_query(&params(&[
            ("from", "yesterday"),
            ("to", "2026-13-01T00:00:00Z"),
            ("limit", "0"),
            ("after", "not-a-cursor"),
        ]))
        .unwrap_err();
        assert_eq!(problem.status, 400);
        let named: Vec<&str> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(named, ["after", "from", "limit", "ownerId", "to"]);
        assert_eq!(problem.errors["ownerId"], "required");
    }

    #[test]
    fn limits_and_ranges_out_of_bounds_are_refused() {
        for limit in ["501", "-1", "1.5", "ten", "4294967296"] {
            let problem = history_query(&params(&[("ownerId", "o"), ("limit", limit)])).unwrap_err();
            assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["limit"], "{limit}");
        }
        let backwards = params(&[("ownerId", "o"), ("from", "2026-03-02T00:00:00Z"), ("to", "2026-03-01T00:00:00Z")]);
        let problem = history_query(&backwards).unwrap_err();
        assert_eq!(problem.errors["to"], "must not be before from");
        let same = params(&[("ownerId", "o"), ("from", "2026-03-01T00:00:00Z"), ("to", "2026-03-01T00:00:00Z")]);
        assert!(history_query(&same).is_ok(), "an empty range is a valid, empty question");
    }
}
