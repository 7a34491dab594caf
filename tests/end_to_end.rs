//! The whole system in-process, driven through the gateway as a client would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::Client;
use fabrikam::{System, SystemOptions};
use platform::clock::SystemClock;
use platform::geo::{Geocoder, HashingGeocoder};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start(data: &Path, tune: impl FnOnce(&mut SystemOptions)) -> System {
    platform::telemetry::init("fabrikam", platform::telemetry::LogFormat::Pretty);
    let mut options = SystemOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), data);
    options.workflow.backoff_base_ms = 50;
    options.workflow.backoff_max_secs = 1;
    tune(&mut options);
    System::start(options, Arc::new(SystemClock)).await.expect("system starts")
}

fn reference_request() -> Value {
    contracts::requests::reference_validation_request()
}

fn location(place: &str) -> Value {
    let p = HashingGeocoder::default().locate(place).unwrap();
    json!({ "altitude": p.altitude, "latitude": p.latitude, "longitude": p.longitude })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_becomes_a_scheduled_delivery_then_is_rescheduled_and_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path(), |_| {}).await;
    let gateway = Client::gateway(&system);
    let internal_drones = Client::new(system.addresses.dronescheduler);

    let posted = Instant::now();
    let (status, accepted) =
        gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(reference_request())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["deliveryId"].as_str().unwrap().to_owned();

    let delivery = gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(10), |_| true).await;
    eprintln!("POST to scheduled: {:?}", posted.elapsed());
    assert_eq!(delivery["id"], id);
    assert_eq!(delivery["owner"]["userId"], "myowner");
    assert_eq!(delivery["pickup"], location("my pickup"));
    assert_eq!(delivery["dropoff"], location("drop off"));
    assert_eq!(delivery["expedited"], true);
    assert_eq!(delivery["packageId"], "mypackage");
    let drone_id = delivery["droneId"].as_str().unwrap().to_owned();
    assert!(drone_id.starts_with("drone-"), "{delivery}");
    let (_, drone) = internal_drones.get(&format!("/api/drones/{drone_id}")).await;
    assert_eq!(drone["currentDeliveryId"], id, "{drone}");
    assert_ne!(drone["status"], "idle", "{drone}");

    let (status, versioned) = gateway.get(&format!("/v0.1.0/api/deliveries/{id}")).await;
    assert_eq!((status, &versioned), (StatusCode::OK, &delivery));
    let (_, status_now) = gateway.get(&format!("/api/deliveries/{id}/status")).await;
    assert_eq!(status_now["stage"], "Created");

    let now = chrono::Utc::now();
    let summary_path = format!("/api/packages/summary/myowner?year={}&month={}", now.format("%Y"), now.format("%m"));
    let (_, summary) = gateway.get(&summary_path).await;
    assert_eq!(summary["totalWeight"], 10.0);

    let (status, _) = gateway
        .send(
            reqwest::Method::PATCH,
            &format!("/api/deliveryrequests/{id}"),
            Some(json!({ "dropOffLocation": "47.61,-122.33" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    gateway
        .eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(10), |d| d["dropoff"]["latitude"] == 47.61)
        .await;
    let (_, status_now) = gateway.get(&format!("/api/deliveries/{id}/status")).await;
    assert_eq!(status_now["stage"], "Rescheduled");

    let (status, _) = gateway.send(reqwest::Method::DELETE, &format!("/api/deliveryrequests/{id}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    gateway
        .eventually(&format!("/api/deliveries/{id}/status"), Duration::from_secs(10), |s| s["stage"] == "Cancelled")
        .await;
    internal_drones
        .eventually(&format!("/api/drones/{drone_id}"), Duration::from_secs(10), |d| d["status"] == "idle")
        .await;
    assert!(system.queue.dead_letters(10).await.unwrap().is_empty());
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_at_the_door_and_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path(), |_| {}).await;
    let gateway = Client::gateway(&system);
    let raw = |body: &'static str| {
        gateway
            .http
            .post(format!("{}/api/deliveryrequests", gateway.base))
            .header("content-type", "application/json")
            .body(body)
    };
    let response = raw("{\"ownerId\": ").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    let mut bad = reference_request();
    bad["packageInfo"]["size"] = json!("Colossal");
    bad["expedited"] = json!("sometimes");
    bad.as_object_mut().unwrap().remove("pickupTime");
    let (status, problem) = gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["/packageInfo/size", "/expedited", "/pickupTime"] {
        assert!(problem["errors"][field].is_string(), "{field}: {problem}");
    }

    let mut huge = reference_request();
    // Over the 64 KiB limit but small enough for the socket buffers, so the client reads the
    // 413 instead of a reset while it is still writing.
    huge["packageInfo"]["tag"] = json!("x".repeat(100 * 1024));
    let (status, _) = gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let unknown = uuid::Uuid::new_v4();
    let (status, problem) = gateway
        .send(reqwest::Method::PATCH, &format!("/api/deliveryrequests/{unknown}"), Some(json!({ "deadline": "" })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, _) = gateway.send(reqwest::Method::DELETE, &format!("/api/deliveryrequests/{unknown}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = gateway.get(&format!("/api/deliveries/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
    let (status, _) = gateway.send(reqwest::Method::PUT, &format!("/api/deliveries/{unknown}"), Some(json!({}))).await;
    assert!(status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND, "{status}");

    assert_eq!(system.queue.depth().await.unwrap(), 0);
    assert!(system.queue.dead_letters(10).await.unwrap().is_empty());
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_request_is_scheduled_once_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let crashy = |options: &mut SystemOptions| {
        // A short lease so work the crash interrupted comes back quickly, and flights long
        // enough that every drone is still out when the test counts them.
        options.workflow.ack_wait_secs = 2;
        options.fleet.time_scale = 1.0;
    };
    let system = start(dir.path(), crashy).await;
    let gateway = Client::gateway(&system);
    let total = 60;
    let posts = (0..total).map(|i| {
        let mut request = reference_request();
        request["ownerId"] = json!(format!("owner-{}", i % 7));
        request["packageInfo"]["packageId"] = json!(format!("package-{i}"));
        request["pickupLocation"] = json!(format!("warehouse {i}"));
        let gateway = &gateway;
        async move { gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request)).await }
    });
    let accepted: Vec<String> = futures::future::join_all(posts)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["deliveryId"].as_str().unwrap().to_owned()
        })
        .collect();
    // The process dies with work queued and in flight.
    let unfinished = system.queue.depth().await.unwrap();
    eprintln!("killing with {unfinished} of {total} requests unfinished");
    assert!(unfinished > 0, "the workflow finished everything before the crash; the test proves nothing");
    system.kill().await;

    let system = start(dir.path(), crashy).await;
    let gateway = Client::gateway(&system);
    let mut drones = Vec::new();
    for id in &accepted {
        let delivery = gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(30), |_| true).await;
        drones.push(delivery["droneId"].as_str().unwrap().to_owned());
    }
    drones.sort();
    drones.dedup();
    assert_eq!(drones.len(), total, "two deliveries share a drone");
    let internal_drones = Client::new(system.addresses.dronescheduler);
    let (_, fleet) = internal_drones.get("/api/drones").await;
    let busy = fleet.as_array().unwrap().iter().filter(|d| d["status"] != "idle").count();
    assert_eq!(busy, total, "each delivery holds exactly one drone");
    assert!(system.queue.dead_letters(10).await.unwrap().is_empty());
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_flown_tracked_to_completion_and_kept_in_history() {
    let dir = tempfile::tempdir().unwrap();
    // A webhook receiver, as a customer's system would run one.
    let calls: Arc<std::sync::Mutex<Vec<(String, Value)>>> = Arc::default();
    let receiver = {
        let calls = calls.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let calls = calls.clone();
                async move {
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    calls.lock().unwrap().push((key, body));
                    StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(hook, receiver).await.unwrap() });

    // A fast clock: a flight of a few Seattle miles takes seconds, not half an hour.
    let system = start(dir.path(), |o| {
        o.fleet.time_scale = 300.0;
        o.webhook_url = Some(hook_url);
    })
    .await;
    let gateway = Client::gateway(&system);
    let (status, accepted) =
        gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(reference_request())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["deliveryId"].as_str().unwrap().to_owned();
    let status_path = format!("/api/deliveries/{id}/status");
    gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(10), |_| true).await;
    let notify = json!({ "emailAddress": "pat@contoso.com", "sms": "+1 425 555 0100" });
    let (status, _) =
        gateway.send(reqwest::Method::POST, &format!("/api/deliveries/{id}/notifymerequests"), Some(notify)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // On its way to the pickup: a live position and both ETAs, which never grow.
    let first = gateway
        .eventually(&status_path, Duration::from_secs(10), |s| {
            s["stage"] == "HeadedToPickup" && !s["pickupETA"].is_null()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, second) = gateway.get(&status_path).await;
    if second["stage"] == "HeadedToPickup" {
        assert_ne!(second["lastKnownLocation"], first["lastKnownLocation"], "the drone moves: {first} {second}");
        assert!(second["pickupETA"].as_str() <= first["pickupETA"].as_str(), "{first} {second}");
    }
    assert!(second["deliveryETA"].as_str() <= first["deliveryETA"].as_str(), "{first} {second}");

    // Picked up, then delivered: confirmed on arrival as the request asked.
    let done = gateway.eventually(&status_path, Duration::from_secs(60), |s| s["stage"] == "Completed").await;
    assert!(done["pickupETA"].is_null() && done["deliveryETA"].is_null(), "{done}");

    // The history service has it, with every stage it went through.
    let history = gateway.eventually(&format!("/api/deliveryhistory/{id}"), Duration::from_secs(10), |_| true).await;
    let stages: Vec<&str> =
        history["tracking"].as_array().unwrap().iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"], "{history}");
    assert_eq!(history["delivery"]["stage"], "Completed");
    assert_eq!(history["confirmation"]["confirmationType"], reference_request()["confirmationRequired"]);
    let (status, page) = gateway.get("/api/deliveryhistory?ownerId=myowner").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["delivery"]["id"], id);

    // The customer's webhook heard about it exactly once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = calls.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].0.starts_with(&id), "the idempotency key names the delivery: {heard:?}");
    assert!(heard[0].1.to_string().contains(&id), "{heard:?}");

    // Invoicing reads reflect the flight.
    let (year, month) = (chrono::Utc::now().format("%Y"), chrono::Utc::now().format("%-m"));
    let (_, usage) =
        gateway.get(&format!("/api/dronedeliveries/utilization?ownerId=myowner&year={year}&month={month}")).await;
    assert!(usage["traveledMiles"].as_f64().unwrap() > 0.0, "{usage}");
    let (_, count) = gateway.get(&format!("/api/deliveries/summary?ownerId=myowner&year={year}&month={month}")).await;
    assert_eq!(count["count"], 1);
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_in_flight_re_plans_the_drone_and_a_moved_pickup_after_pickup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Sixty times faster than life: each leg takes seconds, time enough to change course.
    let system = start(dir.path(), |o| o.fleet.time_scale = 60.0).await;
    let gateway = Client::gateway(&system);
    let post = |pickup: &'static str| {
        let mut request = reference_request();
        request["pickupLocation"] = json!(pickup);
        request["dropOffLocation"] = json!("47.6205,-122.3493");
        let gateway = &gateway;
        async move {
            let (status, accepted) = gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
            accepted["deliveryId"].as_str().unwrap().to_owned()
        }
    };
    let patch = |id: String, change: Value| {
        let gateway = &gateway;
        async move {
            let path = format!("/api/deliveryrequests/{id}");
            assert_eq!(gateway.send(reqwest::Method::PATCH, &path, Some(change)).await.0, StatusCode::ACCEPTED);
        }
    };

    // On its way to the pickup, the drop-off moves: the drone flies to the new one.
    let moved = post("47.6097,-122.3331").await;
    let status_path = format!("/api/deliveries/{moved}/status");
    let before = gateway.eventually(&status_path, Duration::from_secs(10), |s| s["stage"] == "HeadedToPickup").await;
    patch(moved.clone(), json!({ "dropOffLocation": "47.6553,-122.3035" })).await;
    gateway
        .eventually(&format!("/api/deliveries/{moved}"), Duration::from_secs(10), |d| {
            d["dropoff"]["latitude"] == 47.6553
        })
        .await;
    let done = gateway.eventually(&status_path, Duration::from_secs(90), |s| s["stage"] == "Completed").await;
    assert_eq!(done["lastKnownLocation"]["latitude"], 47.6553, "delivered where it was moved to: {done}");
    assert_eq!(done["lastKnownLocation"]["longitude"], -122.3035, "{done}");
    assert!(before["deliveryETA"].is_string(), "{before}");
    let history = gateway.eventually(&format!("/api/deliveryhistory/{moved}"), Duration::from_secs(10), |_| true).await;
    let completed = history["tracking"].as_array().unwrap().iter().find(|e| e["stage"] == "Completed").cloned();
    assert_eq!(completed.unwrap()["location"]["latitude"], 47.6553, "{history}");

    // With the package on board, a new pickup is refused, and the delivery says why.
    let loaded = post("47.6097,-122.3331").await;
    let status_path = format!("/api/deliveries/{loaded}/status");
    gateway.eventually(&status_path, Duration::from_secs(30), |s| s["stage"] == "HeadedToDropoff").await;
    patch(loaded.clone(), json!({ "pickupLocation": "47.6150,-122.3400" })).await;
    let refused = gateway
        .eventually(&status_path, Duration::from_secs(10), |s| {
            s["reason"].as_str().is_some_and(|r| r.starts_with("reschedule refused"))
        })
        .await;
    assert!(refused["reason"].as_str().unwrap().contains("picked up"), "{refused}");
    let (_, delivery) = gateway.get(&format!("/api/deliveries/{loaded}")).await;
    assert_eq!(delivery["pickup"]["latitude"], 47.6097, "the refused change is not applied: {delivery}");
    gateway.eventually(&status_path, Duration::from_secs(90), |s| s["stage"] == "Completed").await;
    assert!(system.queue.dead_letters(10).await.unwrap().is_empty());
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_requests_than_drones_all_get_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path(), |o| {
        o.fleet.size = 2;
        o.fleet.time_scale = 3000.0;
        o.fleet.retry_after_secs = 1;
    })
    .await;
    let gateway = Client::gateway(&system);
    let mut ids = Vec::new();
    for i in 0..8 {
        let mut request = reference_request();
        request["packageInfo"]["packageId"] = json!(format!("pkg-{i}"));
        request["packageInfo"]["weight"] = json!(4);
        let (status, accepted) = gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        ids.push(accepted["deliveryId"].as_str().unwrap().to_owned());
    }
    // Two drones, eight deliveries: each waits its turn for a free drone; none fails.
    for id in &ids {
        let done = gateway
            .eventually(&format!("/api/deliveries/{id}/status"), Duration::from_secs(90), |s| {
                s["stage"] == "Completed" || s["stage"] == "Failed"
            })
            .await;
        assert_eq!(done["stage"], "Completed", "{id}: {done}");
    }
    assert!(system.queue.dead_letters(10).await.unwrap().is_empty());
    system.stop().await.unwrap();
}
