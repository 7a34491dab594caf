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
    assert_eq!(drone["status"], "flying-to-pickup");
    assert_eq!(drone["currentDeliveryId"], "d1");
}

#[tokio::test]
async fn with_one_free_drone_a_waiting_expedited_request_beats_a_standard_one() {
    let app = spawn_app(FleetConfig {
        depots: vec![dronescheduler::domain::Depot::new("hub", "Hub", 47.6, -122.33)],
        ..small_fleet(1)
    })
    .await;
    let (status, first) = app.assign("d1", "contoso", 1.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let put = |id: &'static str, expedited: bool| {
        let mut b = body(id, "contoso", 1.0, DOWNTOWN);
        b["expedited"] = json!(expedited);
        let router = app.router.clone();
        async move { call(&router, Method::PUT, &format!("/api/dronedeliveries/{id}"), Some(b)).await }
    };
    // The fleet is busy: both are told to come back; the expedited one now waits.
    let (status, _, headers) = put("urgent", true).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert_eq!(put("standard", false).await.0, StatusCode::SERVICE_UNAVAILABLE);
    // The expedited request keeps retrying while the drone flies (each retry extends its wait).
    let busy_until: chrono::DateTime<chrono::Utc> = serde_json::from_value(first["busyUntil"].clone()).unwrap();
    app.clock.set(busy_until - chrono::Duration::seconds(5));
    assert_eq!(put("urgent", true).await.0, StatusCode::SERVICE_UNAVAILABLE);
    // The drone is home. The standard request's retry comes first and is still turned away,
    // with the same transient answer the workflow retries; the expedited retry gets the drone.
    app.clock.set(busy_until);
    let (status, problem, headers) = put("standard", false).await;
    assert_eq!(
        (status, headers.contains_key(header::RETRY_AFTER)),
        (StatusCode::SERVICE_UNAVAILABLE, true),
        "{problem}"
    );
    let (status, urgent, _) = put("urgent", true).await;
    assert_eq!(status, StatusCode::OK, "{urgent}");
    assert_eq!(urgent["droneId"], first["droneId"]);
    // After that flight, nobody waits ahead of it: the standard request flies.
    let busy_until: chrono::DateTime<chrono::Utc> = serde_json::from_value(urgent["busyUntil"].clone()).unwrap();
    app.clock.set(busy_until);
    let (status, standard, _) = put("standard", false).await;
    assert_eq!(status, StatusCode::OK, "{standard}");
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
async fn a_reroute_names_bad_places_and_waits_for_the_flights_due_events() {
    let app = spawn_app(small_fleet(1)).await;
    let place = |lat: f64| json!({ "latitude": lat, "longitude": -122.33, "altitude": 0 });
    let (status, problem, _) =
        app.call(Method::PATCH, "/api/dronedeliveries/d1", Some(json!({ "dropoff": place(47.63) }))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no drone assigned yet: {problem}");
    app.assign("d1", "o", 1.0, DOWNTOWN).await;
    let (status, problem, _) = app.call(Method::PATCH, "/api/dronedeliveries/d1", Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/"].is_string(), "{problem}");
    let (status, problem, _) =
        app.call(Method::PATCH, "/api/dronedeliveries/d1", Some(json!({ "pickup": place(123.0) }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/pickup"].is_string(), "{problem}");
    // No flight clock runs here, so the departure's events are never published: the re-plan
    // waits for them rather than lose them.
    let (status, problem, headers) =
        app.call(Method::PATCH, "/api/dronedeliveries/d1", Some(json!({ "dropoff": place(47.63) }))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    // The same places as planned need no re-plan.
    let (status, flight, _) = app
        .call(Method::PATCH, "/api/dronedeliveries/d1", Some(json!({ "dropoff": { "latitude": 47.62, "longitude": -122.35, "altitude": 0 }, "pickup": { "latitude": DOWNTOWN.0, "longitude": DOWNTOWN.1, "altitude": 0 } })))
        .await;
    assert_eq!(status, StatusCode::OK, "{flight}");
    assert_eq!(flight["dropoff"]["latitude"], 47.62);
    assert!(flight.get("origin").is_none(), "still the assignment's plan: {flight}");
}

#[tokio::test]
async fn utilization_sums_the_owners_flights_per_month() {
    let app = spawn_app(FleetConfig::default()).await;
    let (_, a) = app.assign("d1", "contoso", 1.0, DOWNTOWN).await;
    let (_, b) = app.assign("d2", "contoso", 1.0, BELLEVUE).await;
    app.assign("d3", "fabrikam", 1.0, BELLEVUE).await;
    app.assign("d4", "contoso", 1.0, BELLEVUE).await;
    // Cancelled as it left: it counts as flown, which is no distance at all.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_requests_on_many_threads_never_share_a_drone() {
    let app = spawn_app(small_fleet(40)).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let router = app.router.clone();
            tokio::spawn(async move {
                let id = format!("p{i}");
                call(&router, Method::PUT, &format!("/api/dronedeliveries/{id}"), Some(body(&id, "o", 1.0, DOWNTOWN)))
                    .await
            })
        })
        .collect();
    let mut drones = Vec::new();
    for task in tasks {
        let (status, b, _) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{b}");
        drones.push(b["droneId"].as_str().unwrap().to_owned());
    }
    drones.sort();
    drones.dedup();
    assert_eq!(drones.len(), 30);

    let same: Vec<_> = (0..10)
        .map(|_| {
            let router = app.router.clone();
            tokio::spawn(async move {
                call(&router, Method::PUT, "/api/dronedeliveries/one", Some(body("one", "o", 1.0, DOWNTOWN))).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in same {
        let (status, b, _) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{b}");
        answers.push(b);
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "one delivery got several answers: {answers:?}");
    let (_, fleet, _) = app.call(Method::GET, "/api/drones", None).await;
    let busy = fleet.as_array().unwrap().iter().filter(|d| d["status"] != "idle").count();
    assert_eq!(busy, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_never_share_a_drone() {
    // Two instances of the service (two processes in production) on the same database file.
    let app = spawn_app(small_fleet(12)).await;
    let other = build(app.dir.path(), &small_fleet(12), &app.clock).await;
    let routers = [app.router.clone(), other];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let router = routers[i % 2].clone();
            // Ten deliveries, each asked for by both instances at once.
            let id = format!("d{}", i / 2);
            tokio::spawn(async move {
                call(&router, Method::PUT, &format!("/api/dronedeliveries/{id}"), Some(body(&id, "o", 1.0, DOWNTOWN)))
                    .await
            })
        })
        .collect();
    let mut by_delivery = std::collections::BTreeMap::new();
    for task in tasks {
        let (status, b, _) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{b}");
        let drone = b["droneId"].as_str().unwrap().to_owned();
        let previous = by_delivery.insert(b["deliveryId"].as_str().unwrap().to_owned(), drone.clone());
        assert!(previous.is_none_or(|p| p == drone), "one delivery got two drones");
    }
    let mut drones: Vec<_> = by_delivery.into_values().collect();
    drones.sort();
    drones.dedup();
    assert_eq!(drones.len(), 10, "two deliveries shared a drone");
}

#[tokio::test]
async fn a_two_drone_fleet_runs_out_and_comes_back_as_flights_end() {
    let app = spawn_app(small_fleet(2)).await;
    let (_, a) = app.assign("d1", "o", 1.0, DOWNTOWN).await;
    let (_, b) = app.assign("d2", "o", 1.0, DOWNTOWN).await;
    assert_ne!(a["droneId"], b["droneId"]);
    let (status, problem, headers) =
        app.call(Method::PUT, "/api/dronedeliveries/d3", Some(body("d3", "o", 1.0, DOWNTOWN))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert_eq!(problem["status"], 503);
    // Just before the first flight ends there is still no drone.
    let first_back = [&a, &b]
        .iter()
        .map(|x| chrono::DateTime::parse_from_rfc3339(x["busyUntil"].as_str().unwrap()).unwrap())
        .min()
        .unwrap();
    app.clock.set(first_back.with_timezone(&chrono::Utc) - chrono::Duration::milliseconds(1));
    assert_eq!(app.assign("d3", "o", 1.0, DOWNTOWN).await.0, StatusCode::SERVICE_UNAVAILABLE);
    app.clock.set(first_back.with_timezone(&chrono::Utc));
    assert_eq!(app.assign("d3", "o", 1.0, DOWNTOWN).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_drone_view_follows_the_clock() {
    let app = spawn_app(small_fleet(1)).await;
    let (_, a) = app.assign("d1", "o", 1.0, DOWNTOWN).await;
    let (status, drone, _) = app.call(Method::GET, "/api/drones/drone-0001", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(drone["status"], "flying-to-pickup");
    assert_eq!(drone["busyUntil"], a["busyUntil"]);
    assert_eq!(drone["depotId"], "sodo");
    assert_eq!(drone["location"]["latitude"], 47.5802);
    app.clock.advance(chrono::Duration::hours(1));
    let (_, drone, _) = app.call(Method::GET, "/api/drones/drone-0001", None).await;
    assert_eq!(drone["status"], "idle");
    assert!(drone.get("currentDeliveryId").is_none() && drone.get("busyUntil").is_none(), "{drone}");
}

#[tokio::test]
async fn depots_and_payloads_come_from_the_fleet_config() {
    let fleet = FleetConfig {
        size: 4,
        depots: vec![
            dronescheduler::domain::Depot::new("north", "North", 47.75, -122.30),
            dronescheduler::domain::Depot::new("south", "South", 47.45, -122.30),
        ],
        payload_tiers: vec![30.0, 2.0],
        ..small_fleet(4)
    };
    let app = spawn_app(fleet).await;
    let (_, drones, _) = app.call(Method::GET, "/api/drones", None).await;
    let drones = drones.as_array().unwrap();
    assert_eq!(drones[1]["depotId"], "south");
    assert_eq!(drones[1]["location"]["latitude"], 47.45);
    assert_eq!(drones[1]["maxPayload"], 2.0);
    let (status, south) = app.assign("d1", "o", 1.0, (47.46, -122.30)).await;
    assert_eq!(status, StatusCode::OK, "{south}");
    assert_eq!((south["depotId"].as_str(), south["droneId"].as_str()), (Some("south"), Some("drone-0002")));
    let (_, heavy) = app.assign("d2", "o", 28.0, (47.46, -122.30)).await;
    assert_eq!(heavy["depotId"], "north", "only the north drones carry 28 kg");
    let (status, problem) = app.assign("d3", "o", 31.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/packageDetail/weight"].as_str().unwrap().contains("30"), "{problem}");
}

#[tokio::test]
async fn a_reopened_store_judges_weight_by_the_fleet_it_has() {
    // Created with two drones (5 and 10 kg), reopened with a config whose drones would carry 25 kg.
    let app = spawn_app(small_fleet(2)).await;
    let reopened = build(app.dir.path(), &FleetConfig::default(), &app.clock).await;
    let (status, problem, _) =
        call(&reopened, Method::PUT, "/api/dronedeliveries/d1", Some(body("d1", "o", 20.0, DOWNTOWN))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["errors"]["/packageDetail/weight"].as_str().unwrap().contains("10"), "{problem}");
}

#[tokio::test]
async fn malformed_and_empty_requests_are_refused_with_named_fields() {
    let app = spawn_app(small_fleet(3)).await;
    let (status, problem) = app.assign("d1", "o", 0.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/packageDetail/weight"].is_string(), "{problem}");
    let (status, problem) = app.assign("d1", "o", -3.0, DOWNTOWN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/packageDetail/weight"].is_string(), "{problem}");
    let (status, problem) = app.assign("d1", " ", 1.0, (47.6, -190.0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/ownerId"].is_string() && problem["errors"]["/pickup"].is_string(), "{problem}");
    let mut wrong_type = body("d1", "o", 1.0, DOWNTOWN);
    wrong_type["packageDetail"]["weight"] = json!("heavy");
    let (status, problem, headers) = app.call(Method::PUT, "/api/dronedeliveries/d1", Some(wrong_type)).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(problem["detail"].as_str().unwrap().contains("weight") || problem["errors"].is_object(), "{problem}");

    let request = axum::http::Request::builder()
        .method(Method::PUT)
        .uri("/api/dronedeliveries/d1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    // Nothing was assigned by any of these.
    let (_, fleet, _) = app.call(Method::GET, "/api/drones", None).await;
    assert!(fleet.as_array().unwrap().iter().all(|d| d["status"] == "idle"));
}

#[tokio::test]
async fn health_and_metrics_routes_answer() {
    let app = spawn_app(small_fleet(1)).await;
    for path in ["/healthz", "/healthz/live", "/healthz/ready"] {
        assert_eq!(app.call(Method::GET, path, None).await.0, StatusCode::OK, "{path}");
    }
    app.assign("d1", "o", 1.0, DOWNTOWN).await;
    let request = axum::http::Request::builder().uri("/metrics").body(axum::body::Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, problem, _) = app.call(Method::GET, "/api/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
}
