//! The drone scheduler's HTTP API against a real SQLite store and a controllable clock.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, header};
use chrono::TimeZone;
use dronescheduler::FleetConfig;
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use serde_json::{Value, json};

struct TestApp {
    router: Router,
    clock: ManualClock,
    dir: tempfile::TempDir,
}

fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

async fn build(dir: &Path, fleet: &FleetConfig, clock: &ManualClock) -> Router {
    let url = format!("sqlite://{}", dir.join("drones.db").display());
    let store = dronescheduler::open_store(&url, fleet).await.unwrap();
    dronescheduler::router(store, fleet, Arc::new(clock.clone()), &CommonArgs::default())
}

async fn spawn_app(fleet: FleetConfig) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    TestApp { router: build(dir.path(), &fleet, &clock).await, clock, dir }
}

fn small_fleet(size: u32) -> FleetConfig {
    FleetConfig { size, time_scale: 1.0, ..FleetConfig::default() }
}

fn body(delivery_id: &str, owner: &str, weight: f64, pickup: (f64, f64)) -> Value {
    json!({
        "deliveryId": delivery_id,
        "ownerId": owner,
        "pickup": { "latitude": pickup.0, "longitude": pickup.1, "altitude": 0 },
        "dropoff": { "latitude": 47.62, "longitude": -122.35, "altitude": 0 },
        "packageDetail": { "id": "p", "size": "small", "weight": weight },
        "expedited": false
    })
}

const DOWNTOWN: (f64, f64) = (47.6062, -122.3321);
const BELLEVUE: (f64, f64) = (47.6150, -122.1950);

impl TestApp {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, HeaderMap) {
        call(&self.router, method, uri, body).await
    }

    async fn assign(&self, id: &str, owner: &str, weight: f64, pickup: (f64, f64)) -> (StatusCode, Value) {
        let (status, body, _) =
            self.call(Method::PUT, &format!("/api/dronedeliveries/{id}"), Some(body(id, owner, weight, pickup))).await;
        (status, body)
    }
}

async fn call(router: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, HeaderMap) {
    platform::testing::call(router, method, uri, body).await
}

#[tokio::test]
async fn the_same_delivery_always_gets_the_same_drone() {
    let app = spawn_app(FleetConfig::default()).await;
    let (status, first) = app.assign("d1", "contoso", 2.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first["traveledMiles"].as_f64().unwrap() > 0.0);
    assert_eq!(first["ownerId"], "contoso");
    let (_, again) = app.assign("d1", "contoso", 2.0, DOWNTOWN).await;
    assert_eq!(first, again);
    let (_, drone, _) =
        app.call(Method::GET, &format!("/api/drones/{}", first["droneId"].as_str().unwrap()), None).await;
    assert_eq!(drone["status"], "assigned");
    assert_eq!(drone["currentDeliveryId"], "d1");
}

#[tokio::test]
async fn concurrent_assignments_never_share_a_drone() {
    let app = spawn_app(FleetConfig::default()).await;
    let calls = (0..20).map(|i| {
        let app = &app;
        async move { app.assign(&format!("d{i}"), "o", 1.0, DOWNTOWN).await }
    });
    let mut drones: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(status, b)| {
            assert_eq!(status, StatusCode::OK);
            b["droneId"].as_str().unwrap().to_owned()
        })
        .collect();
    drones.sort();
    drones.dedup();
    assert_eq!(drones.len(), 20);

    let same = (0..10).map(|_| app.assign("one", "o", 1.0, DOWNTOWN));
    let mut ids: Vec<Value> =
        futures::future::join_all(same).await.into_iter().map(|(_, b)| b["droneId"].clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one delivery got several drones: {ids:?}");
}

#[tokio::test]
async fn nearest_capable_drone_is_chosen() {
    let app = spawn_app(FleetConfig::default()).await;
    let (_, near) = app.assign("d1", "o", 1.0, BELLEVUE).await;
    assert_eq!(near["depotId"], "bellevue");
    let (_, heavy) = app.assign("d2", "o", 20.0, BELLEVUE).await;
    let (_, drone, _) =
        app.call(Method::GET, &format!("/api/drones/{}", heavy["droneId"].as_str().unwrap()), None).await;
    assert!(drone["maxPayload"].as_f64().unwrap() >= 20.0, "{drone}");
}

#[tokio::test]
async fn an_exhausted_fleet_answers_503_then_frees_up_after_the_flight() {
    let app = spawn_app(small_fleet(1)).await;
    let (status, first) = app.assign("d1", "o", 1.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem, headers) =
        app.call(Method::PUT, "/api/dronedeliveries/d2", Some(body("d2", "o", 1.0, DOWNTOWN))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let hours = first["assignedHours"].as_f64().unwrap();
    app.clock.advance(chrono::Duration::milliseconds((hours * 3_600_000.0) as i64 + 1));
    let (status, second) = app.assign("d2", "o", 1.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["droneId"], first["droneId"]);
}

#[tokio::test]
async fn release_frees_the_drone_and_fences_the_delivery() {
    let app = spawn_app(small_fleet(1)).await;
    app.assign("d1", "o", 1.0, DOWNTOWN).await;
    assert_eq!(app.call(Method::DELETE, "/api/dronedeliveries/d1", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::DELETE, "/api/dronedeliveries/d1", None).await.0, StatusCode::NO_CONTENT);
    let (status, problem) = app.assign("d1", "o", 1.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(app.assign("d2", "o", 1.0, DOWNTOWN).await.0, StatusCode::OK, "the drone is free again");
    // A delivery cancelled before any drone was assigned is fenced too.
    assert_eq!(app.call(Method::DELETE, "/api/dronedeliveries/never", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.assign("never", "o", 1.0, DOWNTOWN).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn utilization_sums_the_owners_flights_per_month() {
    let app = spawn_app(FleetConfig::default()).await;
    let (_, a) = app.assign("d1", "contoso", 1.0, DOWNTOWN).await;
    let (_, b) = app.assign("d2", "contoso", 1.0, BELLEVUE).await;
    app.assign("d3", "fabrikam", 1.0, BELLEVUE).await;
    app.assign("d4", "contoso", 1.0, BELLEVUE).await;
    app.call(Method::DELETE, "/api/dronedeliveries/d4", None).await;
    app.clock.advance(chrono::Duration::days(31));
    app.assign("d5", "contoso", 1.0, BELLEVUE).await;

    let (status, used, _) =
        app.call(Method::GET, "/api/dronedeliveries/utilization?ownerId=contoso&year=2026&month=3", None).await;
    assert_eq!(status, StatusCode::OK);
    let miles = a["traveledMiles"].as_f64().unwrap() + b["traveledMiles"].as_f64().unwrap();
    assert!((used["traveledMiles"].as_f64().unwrap() - miles).abs() < 1e-9, "{used}");
    let hours = a["assignedHours"].as_f64().unwrap() + b["assignedHours"].as_f64().unwrap();
    assert!((used["assignedHours"].as_f64().unwrap() - hours).abs() < 1e-9);

    let (status, _, _) =
        app.call(Method::GET, "/api/dronedeliveries/utilization?ownerId=nobody&year=2026&month=3", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem, _) = app.call(Method::GET, "/api/dronedeliveries/utilization?year=2026&month=3", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["errors"]["ownerId"].is_string());
    let (status, problem, _) =
        app.call(Method::GET, "/api/dronedeliveries/utilization?ownerId=o&year=x&month=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["errors"]["year"].is_string() && problem["errors"]["month"].is_string());
}

#[tokio::test]
async fn bad_requests_name_their_fields() {
    let app = spawn_app(FleetConfig::default()).await;
    let (status, problem) = app.assign("d1", "o", 100.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/packageDetail/weight"].as_str().unwrap().contains("25"));
    let (status, problem, _) =
        app.call(Method::PUT, "/api/dronedeliveries/d1", Some(body("d2", "o", 1.0, (95.0, 0.0)))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/deliveryId"].is_string() && problem["errors"]["/pickup"].is_string());
    let (status, problem, _) =
        app.call(Method::PUT, "/api/dronedeliveries/d1", Some(json!({ "deliveryId": "d1" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _, _) = app.call(Method::GET, "/api/dronedeliveries/d1", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_fleet_is_listed_and_unknown_drones_are_404() {
    let app = spawn_app(small_fleet(6)).await;
    let (status, fleet, _) = app.call(Method::GET, "/api/drones", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fleet.as_array().unwrap().len(), 6);
    assert!(fleet.as_array().unwrap().iter().all(|d| d["status"] == "idle"));
    assert_eq!(app.call(Method::GET, "/api/drones/drone-9999", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.call(Method::GET, "/healthz/ready", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_restart_keeps_the_fleet_and_its_assignments() {
    let app = spawn_app(small_fleet(3)).await;
    let (_, first) = app.assign("d1", "o", 1.0, DOWNTOWN).await;
    // Reopen on the same file, even with a different configured size: the fleet is kept.
    let reopened = build(app.dir.path(), &small_fleet(50), &app.clock).await;
    let (_, again, _) =
        call(&reopened, Method::PUT, "/api/dronedeliveries/d1", Some(body("d1", "o", 1.0, DOWNTOWN))).await;
    assert_eq!(again["droneId"], first["droneId"]);
    let (_, fleet, _) = call(&reopened, Method::GET, "/api/drones", None).await;
    assert_eq!(fleet.as_array().unwrap().len(), 3);
}
