//! What a valid delivery request is, and how requests become messages. Pure: no I/O.
//!
//! The public body is checked field by field from raw JSON rather than through serde, so one
//! answer names every bad field at once instead of stopping at the first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::messages::{CancelRequest, DeliveryCommand, DeliveryRequestEnvelope};
use contracts::requests::{DeliveryRequest, PackageInfo, RescheduleRequest};
use contracts::{ConfirmationType, ContainerSize};
use platform::Problem;
use platform::geo::ServiceArea;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Namespace for delivery ids derived from an `Idempotency-Key`.
const IDEMPOTENT_IDS: Uuid = Uuid::from_u128(0x6b1f_0c2e_8a4d_4f5b_9e3a_71d2_c0ff_ee01);

/// Limits that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The heaviest package any drone can carry, in kilograms.
    pub max_package_weight: f64,
}

type Errors = BTreeMap<String, String>;

/// Checks a `POST /api/deliveryrequests` body.
pub fn validate_delivery_request(body: &Value, limits: Limits) -> Result<DeliveryRequest, Problem> {
    let object = as_object(body)?;
    let mut errors = Errors::new();
    let owner_id = required_text(object, "ownerId", &mut errors);
    let pickup_location = required_place(object, "pickupLocation", None, &mut errors);
    let drop_off_location = required_place(object, "dropOffLocation", Some("dropoffLocation"), &mut errors);
    let pickup_time = match optional_text(object, "pickupTime", &mut errors) {
        None if !errors.contains_key("/pickupTime") => {
            errors.insert("/pickupTime".to_owned(), "required".to_owned());
            None
        }
        value => value.and_then(|t| rfc3339(&t, "/pickupTime", &mut errors).map(|_| t)),
    };
    let deadline = optional_deadline(object, "deadline", &mut errors).unwrap_or_default();
    let expedited = match object.get("expedited") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.insert("/expedited".to_owned(), "must be true or false".to_owned());
            false
        }
    };
    let confirmation_required = match optional_text(object, "confirmationRequired", &mut errors) {
        None => ConfirmationType::None,
        Some(text) => text.parse().unwrap_or_else(|e: contracts::UnknownVariant| {
            errors.insert("/confirmationRequired".to_owned(), e.to_string());
            ConfirmationType::None
        }),
    };
    let package_info = validate_package(object.get("packageInfo"), limits, &mut errors);
    if !errors.is_empty() {
        return Err(Problem::invalid_fields(errors));
    }
    Ok(DeliveryRequest {
        delivery_id: None,
        owner_id: owner_id.expect("checked"),
        pickup_location: pickup_location.expect("checked"),
        drop_off_location: drop_off_location.expect("checked"),
        pickup_time: pickup_time.expect("checked"),
        deadline,
        expedited,
        confirmation_required,
        package_info: package_info.expect("checked"),
    })
}

/// Checks a `PATCH /api/deliveryrequests/{id}` body: at least one known field.
pub fn validate_reschedule(body: &Value) -> Result<RescheduleRequest, Problem> {
    let object = as_object(body)?;
    let mut errors = Errors::new();
    let place = |name: &str, alias: Option<&str>, errors: &mut Errors| {
        let present = object.get(name).or_else(|| alias.and_then(|a| object.get(a)));
        if present.is_none_or(Value::is_null) { None } else { required_place(object, name, alias, errors) }
    };
    let pickup_location = place("pickupLocation", None, &mut errors);
    let drop_off_location = place("dropOffLocation", Some("dropoffLocation"), &mut errors);
    let pickup_time = optional_text(object, "pickupTime", &mut errors)
        .and_then(|t| rfc3339(&t, "/pickupTime", &mut errors).map(|_| t));
    let deadline = optional_deadline(object, "deadline", &mut errors);
    let request = RescheduleRequest { pickup_location, drop_off_location, pickup_time, deadline };
    if errors.is_empty() && request == RescheduleRequest::default() {
        errors.insert(
            "/".to_owned(),
            "give at least one of pickupLocation, dropOffLocation, pickupTime, deadline".to_owned(),
        );
    }
    if !errors.is_empty() {
        return Err(Problem::invalid_fields(errors));
    }
    Ok(request)
}

fn as_object(body: &Value) -> Result<&Map<String, Value>, Problem> {
    body.as_object().ok_or_else(|| Problem::invalid_field("/", "the body must be a JSON object"))
}

fn validate_package(value: Option<&Value>, limits: Limits, errors: &mut Errors) -> Option<PackageInfo> {
    let object = match value {
        None | Some(Value::Null) => {
            errors.insert("/packageInfo".to_owned(), "required".to_owned());
            return None;
        }
        Some(Value::Object(object)) => object,
        Some(_) => {
            errors.insert("/packageInfo".to_owned(), "must be an object".to_owned());
            return None;
        }
    };
    let mut nested = Errors::new();
    let package_id = required_text(object, "packageId", &mut nested);
    let size = match required_text(object, "size", &mut nested) {
        Some(text) => text.parse::<ContainerSize>().map_err(|e| nested.insert("/size".to_owned(), e.to_string())).ok(),
        None => None,
    };
    let weight = match object.get("weight") {
        None | Some(Value::Null) => {
            nested.insert("/weight".to_owned(), "required".to_owned());
            None
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(w) if w > 0.0 && w <= limits.max_package_weight => Some(w),
            _ => {
                nested.insert(
                    "/weight".to_owned(),
                    format!(
                        "must be greater than 0 and at most {} kg, the most a drone carries",
                        limits.max_package_weight
                    ),
                );
                None
            }
        },
        Some(_) => {
            nested.insert("/weight".to_owned(), "must be a number (kilograms)".to_owned());
            None
        }
    };
    let tag = optional_text(object, "tag", &mut nested).unwrap_or_default();
    let valid = nested.is_empty();
    errors.extend(nested.into_iter().map(|(k, v)| (format!("/packageInfo{k}"), v)));
    valid.then(|| PackageInfo {
        package_id: package_id.expect("checked"),
        size: size.expect("checked"),
        weight: weight.expect("checked"),
        tag,
    })
}

/// A string field that may be absent or null; present with another type is an error.
fn optional_text(object: &Map<String, Value>, name: &str, errors: &mut Errors) -> Option<String> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.insert(format!("/{name}"), "must be a string".to_owned());
            None
        }
    }
}

fn required_text(object: &Map<String, Value>, name: &str, errors: &mut Errors) -> Option<String> {
    let text = optional_text(object, name, errors);
    match text {
        Some(t) if !t.trim().is_empty() && t.len() <= 200 => Some(t.trim().to_owned()),
        Some(t) if t.len() > 200 => {
            errors.insert(format!("/{name}"), "must be at most 200 characters".to_owned());
            None
        }
        _ => {
            errors.entry(format!("/{name}")).or_insert_with(|| "required".to_owned());
            None
        }
    }
}

/// A place: a name (geocoded later) or `"lat,lon[,alt]"`, which must then be in range.
fn required_place(object: &Map<String, Value>, name: &str, alias: Option<&str>, errors: &mut Errors) -> Option<String> {
    let key = if object.contains_key(name) { name } else { alias.filter(|a| object.contains_key(*a)).unwrap_or(name) };
    let place = required_text(object, key, errors)?;
    match platform::geo::parse_coordinates(&place) {
        Some(Err(e)) => {
            errors.insert(format!("/{key}"), e.to_string());
            return None;
        }
        // Names are geocoded inside the area; coordinates are taken as given, so check them
        // here rather than accept a request no drone will ever fly.
        Some(Ok(point)) if !ServiceArea::SEATTLE.contains(point) => {
            errors.insert(format!("/{key}"), format!("outside the service area ({})", ServiceArea::SEATTLE));
            return None;
        }
        _ => {}
    }
    Some(place)
}

fn optional_deadline(object: &Map<String, Value>, name: &str, errors: &mut Errors) -> Option<String> {
    let text = optional_text(object, name, errors)?;
    if text.trim().is_empty() {
        return Some(String::new());
    }
    rfc3339(&text, &format!("/{name}"), errors).map(|_| text)
}

fn rfc3339(text: &str, field: &str, errors: &mut Errors) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.insert(field.to_owned(), format!("{text:?} is not an RFC 3339 time such as 2019-05-08T20:00:00Z"));
            None
        }
    }
}

/// Where a POST's idempotency keys live: per owner, and per account when the caller has one, so
/// two accounts may use the same key (and get different deliveries). The account comes first:
/// it cannot hold a newline (it travelled in a header), so no owner id can imitate another
/// account's scope.
pub fn idempotency_scope(account_id: Option<&str>, owner_id: &str) -> String {
    match account_id {
        Some(account) => format!("POST account={account}\n{owner_id}"),
        None => format!("POST {owner_id}"),
    }
}

/// A new delivery id: derived from the client's idempotency key so a retried request names the
/// same delivery even if our first answer was lost, or else a time-ordered UUID (version 7).
/// Every store keys on this id; ids that grow with time land at the end of those indexes
/// instead of on a random page each, which keeps a commit's writes to a few pages.
pub fn new_delivery_id(idempotency_scope: Option<(&str, &str)>) -> String {
    match idempotency_scope {
        Some((scope, key)) => Uuid::new_v5(&IDEMPOTENT_IDS, format!("{scope}\n{key}").as_bytes()).to_string(),
        None => Uuid::now_v7().to_string(),
    }
}

/// The message for a command. `message_id` de-duplicates: one per delivery for creation and
/// cancellation (asking twice is the same intent), one per request for a reschedule.
pub fn envelope(
    delivery_id: &str,
    command: DeliveryCommand,
    message_id: String,
    now: DateTime<Utc>,
    traceparent: Option<String>,
) -> DeliveryRequestEnvelope {
    DeliveryRequestEnvelope {
        message_id,
        delivery_id: delivery_id.to_owned(),
        occurred_at: now,
        traceparent,
        account_id: None,
        command,
    }
}

/// Message id for each kind of command.
pub fn message_id(delivery_id: &str, command: &DeliveryCommand, idempotency: Option<&str>) -> String {
    match command {
        DeliveryCommand::Delivery(_) => format!("delivery:{delivery_id}"),
        DeliveryCommand::Cancel(CancelRequest {}) => format!("cancel:{delivery_id}"),
        DeliveryCommand::Reschedule(_) => match idempotency {
            Some(key) => format!("reschedule:{delivery_id}:{}", hash(key.as_bytes())),
            None => format!("reschedule:{delivery_id}:{}", Uuid::new_v4()),
        },
    }
}

/// Hex SHA-256, used to recognise a request replayed under the same idempotency key.
pub fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A W3C `traceparent` to carry: the caller's when well formed, otherwise a new root.
pub fn traceparent(incoming: Option<&str>) -> String {
    if let Some(value) = incoming.filter(|v| is_traceparent(v)) {
        return value.to_owned();
    }
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, part)| part.len() == *len && part.chars().all(|c| c.is_ascii_hexdigit()))
        && parts[1] != "00000000000000000000000000000000"
        && parts[2] != "0000000000000000"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits { max_package_weight: 25.0 };

    fn reference_request() -> Value {
        contracts::requests::reference_validation_request()
    }

    #[test]
    fn accepts_the_reference_validation_request() {
        let request = validate_delivery_request(&reference_request(), LIMITS).unwrap();
        assert_eq!(request.owner_id, "myowner");
        assert_eq!(request.package_info.size, ContainerSize::Small);
        assert!(request.expedited);
    }

    #[test]
    fn accepts_the_lower_case_alias_and_any_enum_case() {
        let mut body = reference_request();
        let drop = body.as_object_mut().unwrap().remove("dropOffLocation").unwrap();
        body["dropoffLocation"] = drop;
        body["confirmationRequired"] = json!("fingerprint");
        body["packageInfo"]["size"] = json!("LARGE");
        let request = validate_delivery_request(&body, LIMITS).unwrap();
        assert_eq!(request.drop_off_location, "drop off");
        assert_eq!(request.confirmation_required, ConfirmationType::FingerPrint);
    }

    #[test]
    fn names_every_bad_field() {
        let body = json!({
            "ownerId": 7,
            "pickupLocation": "",
            "dropOffLocation": "95,200",
            "pickupTime": "yesterday",
            "deadline": "soon",
            "expedited": "yes",
            "confirmationRequired": "Retina",
            "packageInfo": { "size": "Huge", "weight": 400 }
        });
        let problem = validate_delivery_request(&body, LIMITS).unwrap_err();
        let fields: Vec<&str> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "/confirmationRequired",
                "/deadline",
                "/dropOffLocation",
                "/expedited",
                "/ownerId",
                "/packageInfo/packageId",
                "/packageInfo/size",
                "/packageInfo/weight",
                "/pickupLocation",
                "/pickupTime",
            ]
        );
        assert_eq!(problem.status, 422);
    }

    #[test]
    fn coordinates_outside_the_service_area_are_refused_at_the_door() {
        let mut body = reference_request();
        body["dropOffLocation"] = json!("40.71,-74.00");
        let problem = validate_delivery_request(&body, LIMITS).unwrap_err();
        assert!(problem.errors["/dropOffLocation"].contains("outside the service area"), "{:?}", problem.errors);
        let problem = validate_reschedule(&json!({ "pickupLocation": "47.9,-122.3" })).unwrap_err();
        assert!(problem.errors.contains_key("/pickupLocation"), "{:?}", problem.errors);
        assert!(validate_reschedule(&json!({ "pickupLocation": "47.6,-122.3" })).is_ok());
    }

    #[test]
    fn missing_required_fields_are_named() {
        let problem = validate_delivery_request(&json!({}), LIMITS).unwrap_err();
        for field in ["/ownerId", "/pickupLocation", "/dropOffLocation", "/pickupTime", "/packageInfo"] {
            assert_eq!(problem.errors.get(field).map(String::as_str), Some("required"), "{field}");
        }
        assert!(validate_delivery_request(&json!([1]), LIMITS).is_err());
    }

    #[test]
    fn reschedule_needs_one_valid_field() {
        assert!(validate_reschedule(&json!({})).is_err());
        assert!(validate_reschedule(&json!({ "pickupTime": "nope" })).unwrap_err().errors.contains_key("/pickupTime"));
        let ok = validate_reschedule(&json!({ "dropoffLocation": "47.61,-122.33" })).unwrap();
        assert_eq!(ok.drop_off_location.as_deref(), Some("47.61,-122.33"));
    }

    #[test]
    fn idempotent_ids_are_stable() {
        assert_eq!(new_delivery_id(Some(("owner", "k1"))), new_delivery_id(Some(("owner", "k1"))));
        assert_ne!(new_delivery_id(Some(("owner", "k1"))), new_delivery_id(Some(("other", "k1"))));
        assert_ne!(new_delivery_id(None), new_delivery_id(None));
    }

    #[test]
    fn fresh_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| new_delivery_id(None)).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids out of order");
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn keeps_a_valid_traceparent_and_replaces_a_bad_one() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(good)), good);
        let fresh = traceparent(Some("garbage"));
        assert!(is_traceparent(&fresh), "{fresh}");
    }
}
