//! What makes a package valid. Pure: no I/O.

use std::collections::BTreeMap;

use contracts::package::{PackagePatch, PackageUpsert};
use platform::Problem;

/// Sizes the package service knows, in its own (lower-case) spelling.
pub const SIZES: &[&str] = &["small", "medium", "large"];

/// A package ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPackage {
    pub id: String,
    pub size: &'static str,
    pub weight: f64,
    pub tag: Option<String>,
    pub owner_id: Option<String>,
    /// The account of the delivery request that stored it (none: the owner stands for it).
    pub account_id: Option<String>,
}

/// Changes to apply to a stored package.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackageChanges {
    pub size: Option<&'static str>,
    pub weight: Option<f64>,
    pub tag: Option<String>,
}

/// Checks a PUT body; every bad field is named.
pub fn validate_upsert(id: &str, body: PackageUpsert) -> Result<NewPackage, Problem> {
    let mut errors = BTreeMap::new();
    check_id(id, &mut errors);
    let size = check_size(&body.size, &mut errors);
    check_weight(body.weight, &mut errors);
    if !errors.is_empty() {
        return Err(Problem::invalid_fields(errors));
    }
    Ok(NewPackage {
        id: id.to_owned(),
        size: size.expect("checked"),
        weight: body.weight,
        tag: body.tag,
        owner_id: body.owner_id.filter(|o| !o.trim().is_empty()),
        account_id: body.account_id.filter(|a| !a.trim().is_empty()),
    })
}

/// Checks a PATCH body; at least one field must be given.
pub fn validate_patch(body: PackagePatch) -> Result<PackageChanges, Problem> {
    let mut errors = BTreeMap::new();
    let size = body.size.as_deref().and_then(|s| check_size(s, &mut errors));
    if let Some(weight) = body.weight {
        check_weight(weight, &mut errors);
    }
    if body.size.is_none() && body.weight.is_none() && body.tag.is_none() {
        errors.insert("/".to_owned(), "give at least one of size, weight, tag".to_owned());
    }
    if !errors.is_empty() {
        return Err(Problem::invalid_fields(errors));
    }
    Ok(PackageChanges { size, weight: body.weight, tag: body.tag })
}

fn check_id(id: &str, errors: &mut BTreeMap<String, String>) {
    if id.trim().is_empty() || id.len() > 200 {
        errors.insert("packageId".to_owned(), "must be 1 to 200 characters".to_owned());
    }
}

fn check_size(size: &str, errors: &mut BTreeMap<String, String>) -> Option<&'static str> {
    let found = SIZES.iter().find(|s| s.eq_ignore_ascii_case(size.trim())).copied();
    if found.is_none() {
        errors.insert("/size".to_owned(), format!("unknown size {size:?}, expected one of small, medium, large"));
    }
    found
}

fn check_weight(weight: f64, errors: &mut BTreeMap<String, String>) {
    if !(weight.is_finite() && weight > 0.0) {
        errors.insert("/weight".to_owned(), "must be a number greater than 0".to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(size: &str, weight: f64) -> PackageUpsert {
        PackageUpsert { size: size.to_owned(), weight, tag: None, owner_id: None, account_id: None }
    }

    #[test]
    fn size_is_case_insensitive_and_stored_lower_case() {
        assert_eq!(validate_upsert("p1", upsert("Medium", 2.0)).unwrap().size, "medium");
    }

    #[test]
    fn every_bad_field_is_named() {
        let problem = validate_upsert("p1", upsert("huge", -1.0)).unwrap_err();
        assert_eq!(problem.errors.keys().collect::<Vec<_>>(), ["/size", "/weight"]);
    }

    #[test]
    fn empty_patch_is_rejected() {
        assert!(validate_patch(PackagePatch::default()).is_err());
        assert_eq!(validate_patch(PackagePatch { weight: Some(3.0), ..Default::default() }).unwrap().weight, Some(3.0));
    }
}
