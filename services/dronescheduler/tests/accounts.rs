//! Utilization with the gateway's identity required: 401 without one, and only the caller's
//! account's flights count. The workflow's assignment keeps working without an identity.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use chrono::TimeZone;
use dronescheduler::FleetConfig;
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use platform::identity::IdentityKey;
use platform::testing::{call_with, identity_headers};
use serde_json::json;

const SECRET: &str = "the gateway and the services share this";

#[tokio::test]
async fn utilization_counts_only_the_callers_account() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let fleet = FleetConfig { size: 4, time_scale: 1.0, ..FleetConfig::default() };
    let url = format!("sqlite://{}", dir.path().join("drones.db").display());
    let store = dronescheduler::open_store(&url, &fleet).await.unwrap();
    let common = CommonArgs { identity_secret: Some(SECRET.to_owned()), ..CommonArgs::default() };
    let router = dronescheduler::router(store, &fleet, Arc::new(clock), &common);
    let key = IdentityKey::new(SECRET).unwrap();

    let mut miles = Vec::new();
    for (id, account) in [("d1", "acc-1"), ("d2", "acc-2")] {
        let body = json!({
            "deliveryId": id, "ownerId": "user-7", "accountId": account,
            "pickup": { "latitude": 47.6062, "longitude": -122.3321, "altitude": 0 },
            "dropoff": { "latitude": 47.62, "longitude": -122.35, "altitude": 0 },
            "packageDetail": { "id": "p", "size": "small", "weight": 1.0 }
        });
        let uri = format!("/api/dronedeliveries/{id}");
        let (status, assignment, _) = call_with(&router, Method::PUT, &uri, Some(body), &HeaderMap::new()).await;
        assert_eq!(status, StatusCode::OK, "{assignment}");
        miles.push(assignment["traveledMiles"].as_f64().unwrap());
    }
    let uri = "/api/dronedeliveries/utilization?ownerId=user-7&year=2026&month=3";
    let (status, _, _) = call_with(&router, Method::GET, uri, None, &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, _) = call_with(&router, Method::GET, uri, None, &identity_headers(&key, "acc-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!((body["traveledMiles"].as_f64().unwrap() - miles[0]).abs() < 1e-9, "{body} {miles:?}");
    let (status, _, _) = call_with(&router, Method::GET, uri, None, &identity_headers(&key, "acc-3")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no flights of that account");
}
