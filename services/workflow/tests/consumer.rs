//! The workflow against stand-in downstream services on real sockets: which calls it makes,
//! in what order, with what data, and how each kind of failure settles the message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use contracts::messages::{CancelRequest, DeliveryCommand, DeliveryRequestEnvelope};
use contracts::requests::{DeliveryRequest, PackageInfo, RescheduleRequest};
use contracts::{ConfirmationType, ContainerSize};
use platform::bus::{OutgoingMessage, Queue, QueueOptions, SqliteQueue};
use platform::clock::SystemClock;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use workflow::WorkflowStore;
use workflow::state::WorkflowStatus;
use workflow::{Endpoints, Settings};

/// A recorded call: method, path, JSON body.
type Call = (String, String, Value);
/// A scripted answer: status, JSON body, Retry-After seconds.
type Answer = (StatusCode, Value, Option<u64>);
/// Answers queued per route prefix.
type Script = Vec<(String, VecDeque<Answer>)>;

/// One fake server standing in for package, dronescheduler and delivery, answering from a
/// script per "METHOD /path-prefix" and recording every call.
#[derive(Clone, Default)]
struct Downstream {
    calls: Arc<Mutex<Vec<Call>>>,
    scripted: Arc<Mutex<Script>>,
    /// Calls matching the route prefix answer only after the delay.
    slow: Arc<Mutex<Option<(String, Duration)>>>,
}

impl Downstream {
    /// The next calls matching `route` ("PUT /api/dronedeliveries") answer with these, in order.
    fn script(&self, route: &str, answers: Vec<Answer>) {
        self.scripted.lock().unwrap().push((route.to_owned(), answers.into()));
    }

    fn slow_down(&self, route: &str, delay: Duration) {
        *self.slow.lock().unwrap() = Some((route.to_owned(), delay));
    }

    fn count(&self, route: &str) -> usize {
        self.routes_called().iter().filter(|r| r.starts_with(route)).count()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn routes_called(&self) -> Vec<String> {
        self.calls().into_iter().map(|(m, p, _)| format!("{m} {p}")).collect()
    }

    fn answer(&self, method: &Method, path: &str, body: &Value) -> Response {
        let key = format!("{method} {path}");
        for (route, answers) in self.scripted.lock().unwrap().iter_mut() {
            if !key.starts_with(route.as_str()) {
                continue;
            }
            if let Some((status, body, retry_after)) = answers.pop_front() {
                let mut headers = HeaderMap::new();
                if let Some(secs) = retry_after {
                    headers.insert("retry-after", secs.into());
                }
                return (status, headers, axum::Json(body)).into_response();
            }
        }
        // Default: the happy path of each service.
        match (method.as_str(), path) {
            ("PUT", p) if p.starts_with("/api/packages/") => StatusCode::CREATED.into_response(),
            ("PUT", p) if p.starts_with("/api/dronedeliveries/") => {
                let delivery_id = p.trim_start_matches("/api/dronedeliveries/");
                axum::Json(json!({
                    "droneId": "drone-0042", "deliveryId": delivery_id, "ownerId": body["ownerId"],
                    "depotId": "sodo", "assignedAt": Utc::now(), "traveledMiles": 5.0, "assignedHours": 0.125,
                    "busyUntil": Utc::now(), "released": false
                }))
                .into_response()
            }
            ("DELETE", p) if p.starts_with("/api/dronedeliveries/") => StatusCode::NO_CONTENT.into_response(),
            ("PUT", _) => StatusCode::CREATED.into_response(),
            ("POST", p) if p.ends_with("/refusals") => StatusCode::NO_CONTENT.into_response(),
            ("PATCH" | "DELETE", _) => (StatusCode::OK, axum::Json(json!({}))).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

async fn record(State(downstream): State<Downstream>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let bytes: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    downstream.calls.lock().unwrap().push((method.to_string(), path.clone(), body.clone()));
    let delay = downstream.slow.lock().unwrap().clone();
    if let Some((route, delay)) = delay
        && format!("{method} {path}").starts_with(&route)
    {
        tokio::time::sleep(delay).await;
    }
    downstream.answer(&method, &path, &body)
}

struct Harness {
    /// The workflow's operator API.
    admin: String,
    /// The stand-in downstream services.
    downstream_base: String,
    queue: Arc<dyn Queue>,
    store: Arc<dyn WorkflowStore>,
    downstream: Downstream,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// Message-level retries only (no quick in-call retries), so each test counts calls exactly.
fn test_settings() -> Settings {
    Settings { backoff_base_ms: 20, backoff_max_secs: 1, call_retries: 0, ..Settings::default() }
}

async fn start(max_attempts: u32) -> Harness {
    start_with(max_attempts, test_settings()).await
}

async fn start_with(max_attempts: u32, settings: Settings) -> Harness {
    let downstream = Downstream::default();
    let app = Router::new().fallback(record).with_state(downstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let options = QueueOptions {
        max_attempts,
        ack_wait: Duration::from_secs(settings.ack_wait_secs),
        poll_interval: Duration::from_millis(10),
        ..QueueOptions::default()
    };
    let queue: Arc<dyn Queue> =
        Arc::new(SqliteQueue::open(&dir.path().join("bus.db"), "delivery-requests", options).await.unwrap());
    let store = workflow::open_store(&format!("sqlite://{}", dir.path().join("workflow.db").display())).await.unwrap();
    let endpoints = Endpoints { package: base.clone(), dronescheduler: base.clone(), delivery: base.clone() };
    let processor = workflow::processor(&endpoints, &settings, store.clone(), Arc::new(SystemClock));
    let shutdown = CancellationToken::new();
    if let Some(options) = settings.supervisor_options() {
        tokio::spawn(workflow::supervisor(&processor, options).run(shutdown.clone()));
    }
    let consumer_options = settings.consumer_options(Duration::from_secs(1));
    tokio::spawn(workflow::consumer::run(queue.clone(), processor, consumer_options, shutdown.clone()));
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    let router = workflow::router(queue.clone(), store.clone(), &platform::config::CommonArgs::default());
    tokio::spawn(async move { axum::serve(admin_listener, router).await.unwrap() });
    Harness { admin, downstream_base: base, queue, store, downstream, shutdown, _dir: dir }
}

fn request(owner: &str) -> DeliveryRequest {
    DeliveryRequest {
        delivery_id: None,
        owner_id: owner.to_owned(),
        pickup_location: "47.60,-122.33".to_owned(),
        drop_off_location: "Space Needle".to_owned(),
        pickup_time: "2026-11-26T10:00:00Z".to_owned(),
        deadline: String::new(),
        expedited: true,
        confirmation_required: ConfirmationType::Picture,
        package_info: PackageInfo {
            package_id: "pkg-1".to_owned(),
            size: ContainerSize::Large,
            weight: 7.5,
            tag: "t".to_owned(),
        },
    }
}

impl Harness {
    async fn publish(&self, delivery_id: &str, command: DeliveryCommand) {
        let envelope = DeliveryRequestEnvelope {
            message_id: format!("{}:{delivery_id}:{}", command.kind(), uuid::Uuid::new_v4()),
            delivery_id: delivery_id.to_owned(),
            occurred_at: Utc::now(),
            traceparent: None,
            account_id: None,
            command,
        };
        let payload = serde_json::to_vec(&envelope).unwrap();
        self.queue.publish(OutgoingMessage { id: envelope.message_id, payload: payload.into() }).await.unwrap();
    }

    async fn publish_raw(&self, payload: &str) {
        self.queue
            .publish(OutgoingMessage { id: "raw".to_owned(), payload: payload.as_bytes().to_vec().into() })
            .await
            .unwrap();
    }

    /// Waits until the queue is empty (everything acked or dead).
    async fn drained(&self) {
        for _ in 0..500 {
            if self.queue.depth().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("queue did not drain; calls so far: {:?}", self.downstream.routes_called());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn a_delivery_stores_the_package_assigns_a_drone_and_creates_the_delivery() {
    let h = start(5).await;
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    let calls = h.downstream.calls();
    let routes: Vec<String> = calls.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    assert_eq!(routes, ["PUT /api/packages/pkg-1", "PUT /api/dronedeliveries/d1", "PUT /api/deliveries/d1"]);
    assert_eq!(calls[0].2, json!({ "size": "large", "weight": 7.5, "tag": "t", "ownerId": "contoso" }));
    let drone = &calls[1].2;
    assert_eq!(drone["ownerId"], "contoso");
    assert_eq!(drone["expedited"], true);
    assert_eq!(drone["pickup"]["latitude"], 47.60);
    assert_eq!(drone["packageDetail"]["weight"], 7.5);
    let delivery = &calls[2].2;
    assert_eq!(delivery["droneId"], "drone-0042");
    assert_eq!(delivery["owner"]["userId"], "contoso");
    assert_eq!(delivery["expedited"], true);
    assert_eq!(delivery["confirmationRequired"], "Picture");
    assert_eq!(delivery["pickup"]["longitude"], -122.33);
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn no_free_drone_waits_and_tries_again() {
    let h = start(5).await;
    h.downstream.script(
        "PUT /api/dronedeliveries",
        vec![(StatusCode::SERVICE_UNAVAILABLE, json!({ "title": "no drone" }), Some(0))],
    );
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    let routes = h.downstream.routes_called();
    assert_eq!(routes.iter().filter(|r| r.starts_with("PUT /api/dronedeliveries")).count(), 2, "{routes:?}");
    assert_eq!(routes.last().unwrap(), "PUT /api/deliveries/d1");
}

#[tokio::test]
async fn a_downstream_that_is_down_is_retried_with_backoff() {
    let h = start(10).await;
    h.downstream.script(
        "PUT /api/packages",
        vec![
            (StatusCode::INTERNAL_SERVER_ERROR, json!({}), None),
            (StatusCode::BAD_GATEWAY, json!({}), None),
            (StatusCode::TOO_MANY_REQUESTS, json!({}), None),
        ],
    );
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    let routes = h.downstream.routes_called();
    assert_eq!(routes.iter().filter(|r| r.starts_with("PUT /api/packages")).count(), 4, "{routes:?}");
    assert_eq!(routes.last().unwrap(), "PUT /api/deliveries/d1");
}

#[tokio::test]
async fn a_rejected_request_is_dead_lettered_with_the_reason() {
    let h = start(5).await;
    h.downstream
        .script("PUT /api/packages", vec![(StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": "weight" }), None)]);
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    let dead = h.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.contains("422"), "{}", dead[0].last_error);
    // Compensation: the drone is released (and fenced off) and the delivery shows failed.
    assert_eq!(
        h.downstream.routes_called(),
        ["PUT /api/packages/pkg-1", "DELETE /api/dronedeliveries/d1", "PUT /api/deliveries/d1/closure"]
    );
    let closure = &h.downstream.calls()[2].2;
    assert_eq!(closure["stage"], "Failed");
    assert!(closure["reason"].as_str().unwrap().contains("422"), "{closure}");
    assert_eq!(closure["delivery"]["owner"]["userId"], "contoso");
    let record = h.store.get("d1").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Failed);
}

#[tokio::test]
async fn a_failure_that_never_clears_ends_in_the_dead_letters() {
    let h = start(3).await;
    let down = (StatusCode::SERVICE_UNAVAILABLE, json!({}), None);
    h.downstream.script("PUT /api/packages", vec![down.clone(), down.clone(), down]);
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    let dead = h.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
}

#[tokio::test]
async fn a_cancelled_delivery_is_not_scheduled() {
    let h = start(5).await;
    h.downstream
        .script("PUT /api/dronedeliveries", vec![(StatusCode::CONFLICT, json!({ "detail": "released" }), None)]);
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    assert_eq!(
        h.downstream.routes_called(),
        ["PUT /api/packages/pkg-1", "PUT /api/dronedeliveries/d1", "PUT /api/deliveries/d1/closure"]
    );
    assert_eq!(h.downstream.calls()[2].2["stage"], "Cancelled");
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn cancel_cancels_the_delivery_then_releases_the_drone() {
    let h = start(5).await;
    h.publish("d1", DeliveryCommand::Cancel(CancelRequest {})).await;
    h.drained().await;
    assert_eq!(h.downstream.routes_called(), ["DELETE /api/deliveries/d1", "DELETE /api/dronedeliveries/d1"]);
}

#[tokio::test]
async fn cancel_of_a_completed_delivery_keeps_the_drone() {
    let h = start(5).await;
    h.downstream.script("DELETE /api/deliveries", vec![(StatusCode::CONFLICT, json!({}), None)]);
    h.publish("d1", DeliveryCommand::Cancel(CancelRequest {})).await;
    h.drained().await;
    assert_eq!(h.downstream.routes_called(), ["DELETE /api/deliveries/d1"]);
}

#[tokio::test]
async fn reschedule_waits_for_the_delivery_to_exist() {
    let h = start(5).await;
    h.downstream.script("PATCH /api/deliveries", vec![(StatusCode::NOT_FOUND, json!({}), None)]);
    let change = RescheduleRequest { drop_off_location: Some("47.62,-122.35".to_owned()), ..Default::default() };
    h.publish("d1", DeliveryCommand::Reschedule(change)).await;
    h.drained().await;
    let calls = h.downstream.calls();
    // The drone's flight is re-planned first (the same places again on the retry change nothing).
    assert_eq!(
        h.downstream.routes_called(),
        [
            "PATCH /api/dronedeliveries/d1",
            "PATCH /api/deliveries/d1",
            "PATCH /api/dronedeliveries/d1",
            "PATCH /api/deliveries/d1"
        ]
    );
    assert_eq!(calls[0].2, json!({ "dropoff": { "latitude": 47.62, "longitude": -122.35, "altitude": 0.0 } }));
    assert_eq!(calls[3].2["dropoff"]["latitude"], 47.62);
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reschedule_the_drone_cannot_fly_is_shown_on_the_delivery_instead() {
    let h = start(5).await;
    let detail = "delivery d1 cannot be re-routed: the package has been picked up; the pickup can no longer move";
    h.downstream.script("PATCH /api/dronedeliveries", vec![(StatusCode::CONFLICT, json!({ "detail": detail }), None)]);
    let change = RescheduleRequest { pickup_location: Some("47.61,-122.34".to_owned()), ..Default::default() };
    h.publish("d1", DeliveryCommand::Reschedule(change)).await;
    h.drained().await;
    assert_eq!(h.downstream.routes_called(), ["PATCH /api/dronedeliveries/d1", "POST /api/deliveries/d1/refusals"]);
    assert_eq!(h.downstream.calls()[1].2, json!({ "action": "reschedule", "reason": detail }));
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty(), "a refusal is an answer, not a failure");
}

#[tokio::test]
async fn a_reschedule_of_times_only_leaves_the_drone_alone() {
    let h = start(5).await;
    let change = RescheduleRequest { deadline: Some("2026-12-01T00:00:00Z".to_owned()), ..Default::default() };
    h.publish("d1", DeliveryCommand::Reschedule(change)).await;
    h.drained().await;
    assert_eq!(h.downstream.routes_called(), ["PATCH /api/deliveries/d1"]);
}

#[tokio::test]
async fn an_unreadable_message_is_dead_lettered() {
    let h = start(5).await;
    h.publish_raw("{not json").await;
    h.drained().await;
    let dead = h.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.contains("unreadable"));
    assert!(h.downstream.calls().is_empty());
}

#[tokio::test]
async fn many_messages_are_processed_concurrently() {
    let h = start(5).await;
    for i in 0..50 {
        let mut r = request("contoso");
        r.package_info.package_id = format!("pkg-{i}");
        h.publish(&format!("d{i}"), DeliveryCommand::Delivery(r)).await;
    }
    h.drained().await;
    let creates = h.downstream.routes_called().into_iter().filter(|r| r.starts_with("PUT /api/deliveries/")).count();
    assert_eq!(creates, 50);
}

#[tokio::test]
async fn a_cancel_before_the_request_leaves_the_delivery_cancelled_with_a_reason() {
    let h = start(5).await;
    h.downstream.script("DELETE /api/deliveries", vec![(StatusCode::NOT_FOUND, json!({}), None)]);
    h.publish("d1", DeliveryCommand::Cancel(CancelRequest {})).await;
    h.drained().await;
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    assert_eq!(
        h.downstream.routes_called(),
        ["DELETE /api/deliveries/d1", "DELETE /api/dronedeliveries/d1", "PUT /api/deliveries/d1/closure"],
        "no package, no drone for a cancelled delivery"
    );
    let closure = &h.downstream.calls()[2].2;
    assert_eq!(closure["stage"], "Cancelled");
    assert_eq!(closure["reason"], "cancelled before it was scheduled");
    // Duplicates of either change nothing.
    h.publish("d1", DeliveryCommand::Cancel(CancelRequest {})).await;
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    assert_eq!(h.downstream.calls().len(), 3);
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reschedule_of_a_cancelled_delivery_is_too_late_and_never_waits() {
    let h = start(5).await;
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    h.publish("d1", DeliveryCommand::Cancel(CancelRequest {})).await;
    h.drained().await;
    let change = RescheduleRequest { deadline: Some("2026-12-01T00:00:00Z".to_owned()), ..Default::default() };
    h.publish("d1", DeliveryCommand::Reschedule(change)).await;
    h.drained().await;
    assert_eq!(h.downstream.count("PATCH"), 0, "{:?}", h.downstream.routes_called());
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Cancelled);
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_request_not_done_by_its_deadline_is_given_up_and_compensated() {
    let h = start_with(1000, Settings { complete_within_secs: 1, ..test_settings() }).await;
    let busy = (StatusCode::SERVICE_UNAVAILABLE, json!({ "title": "no drone" }), Some(0));
    h.downstream.script("PUT /api/dronedeliveries", vec![busy; 1000]);
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    let dead = h.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered once");
    assert!(dead[0].last_error.contains("not scheduled by"), "{}", dead[0].last_error);
    assert!(dead[0].attempts < 100, "a deadline, not the attempts, ended it: {}", dead[0].attempts);
    assert_eq!(h.downstream.count("DELETE /api/dronedeliveries/d1"), 1);
    let closure = h.downstream.calls().into_iter().find(|(_, p, _)| p.ends_with("/closure")).unwrap().2;
    assert_eq!(closure["stage"], "Failed");
    assert!(closure["reason"].as_str().unwrap().contains("no drone"), "{closure}");
    let record = h.store.get("d1").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Failed);
    assert!(record.steps[&workflow::state::Step::Drone].attempts >= 2);
}

#[tokio::test]
async fn a_downstream_down_for_a_while_opens_the_breaker_and_every_message_completes_after_recovery() {
    let settings = Settings { breaker_min_calls: 4, breaker_break_ms: 100, concurrency: 8, ..test_settings() };
    let h = start_with(8, settings).await;
    let down = (StatusCode::SERVICE_UNAVAILABLE, json!({}), None);
    h.downstream.script("PUT /api/packages", vec![down; 12]);
    for i in 0..10 {
        let mut r = request("contoso");
        r.package_info.package_id = format!("pkg-{i}");
        h.publish(&format!("d{i}"), DeliveryCommand::Delivery(r)).await;
    }
    h.drained().await;
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty(), "nothing that could succeed was given up");
    assert_eq!(h.downstream.count("PUT /api/deliveries/"), 10);
    // With the breaker open, messages waited instead of hammering the package service: far
    // fewer calls than 10 messages retried at the backoff pace would make.
    let package_calls = h.downstream.count("PUT /api/packages");
    assert!(package_calls < 12 + 10 + 10, "{package_calls} package calls");
}

#[tokio::test]
async fn a_slow_downstream_keeps_the_lease_and_is_called_once() {
    let settings = Settings { ack_wait_secs: 1, ..test_settings() };
    let h = start_with(5, settings).await;
    h.downstream.slow_down("PUT /api/deliveries/", Duration::from_millis(2500));
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    assert_eq!(h.downstream.count("PUT /api/deliveries/d1"), 1, "no redelivery while the call was slow");
    assert_eq!(h.downstream.count("PUT /api/dronedeliveries/d1"), 1);
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Scheduled);
}

async fn admin(h: &Harness, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new().request(method, format!("{}{path}", h.admin)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_delivery_that_fails_for_good_is_dead_lettered_once_and_an_operator_replay_schedules_it() {
    let h = start(5).await;
    let rejected = (StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": "too heavy for this depot" }), None);
    h.downstream.script("PUT /api/dronedeliveries", vec![rejected]);
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    h.drained().await;
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Failed);
    assert_eq!(h.downstream.count("DELETE /api/dronedeliveries/d1"), 1, "the drone is freed");

    let (status, list) = admin(&h, reqwest::Method::GET, "/api/deadletters").await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "dead-lettered once: {list}");
    let id = items[0]["messageId"].as_str().unwrap().to_owned();
    assert!(items[0]["lastError"].as_str().unwrap().contains("too heavy"), "{list}");
    assert_eq!(items[0]["message"]["deliveryId"], "d1");
    let (status, one) = admin(&h, reqwest::Method::GET, &format!("/api/deadletters/{id}")).await;
    assert_eq!((status, one["messageId"].as_str()), (200, Some(id.as_str())));
    let (status, state) = admin(&h, reqwest::Method::GET, "/api/workflows/d1").await;
    assert_eq!((status, state["status"].as_str()), (200, Some("failed")), "{state}");
    assert!(state["reason"].as_str().unwrap().contains("too heavy"), "{state}");
    let (status, _) = admin(&h, reqwest::Method::GET, "/api/deadletters/nope").await;
    assert_eq!(status, 404);

    // The cause is fixed (the script is used up); the operator replays it, twice.
    let (status, replayed) = admin(&h, reqwest::Method::POST, &format!("/api/deadletters/{id}/replay")).await;
    assert_eq!(status, 202, "{replayed}");
    let (status, _) = admin(&h, reqwest::Method::POST, &format!("/api/deadletters/{id}/replay")).await;
    assert_eq!(status, 404, "replaying twice queues it once");
    h.drained().await;
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Scheduled);
    assert_eq!(h.downstream.count("PUT /api/deliveries/d1"), 2, "closed as failed, then created by the replay");
    let (_, list) = admin(&h, reqwest::Method::GET, "/api/deadletters").await;
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    let (_, summary) = admin(&h, reqwest::Method::GET, "/api/workflows/summary").await;
    assert_eq!(summary, json!({ "scheduled": 1 }));
}

#[tokio::test]
async fn dead_letters_can_be_purged_one_or_all() {
    let h = start(5).await;
    for i in 0..3 {
        h.queue
            .publish(OutgoingMessage { id: format!("raw-{i}"), payload: b"{not json".to_vec().into() })
            .await
            .unwrap();
    }
    h.drained().await;
    let (status, _) = admin(&h, reqwest::Method::DELETE, "/api/deadletters/raw-0").await;
    assert_eq!(status, 204);
    let (status, _) = admin(&h, reqwest::Method::DELETE, "/api/deadletters/raw-0").await;
    assert_eq!(status, 404);
    let (status, purged) = admin(&h, reqwest::Method::DELETE, "/api/deadletters").await;
    assert_eq!((status, purged["purged"].as_u64()), (200, Some(2)));
    let (status, bad) = admin(&h, reqwest::Method::GET, "/api/deadletters?limit=0").await;
    assert_eq!(status, 422, "{bad}");
}

/// A supervisor over the harness's store, on a clock the test moves.
fn supervisor_at(h: &Harness, clock: &platform::clock::ManualClock, holder: &str) -> workflow::Supervisor {
    let base = h.downstream_base.clone();
    let endpoints = Endpoints { package: base.clone(), dronescheduler: base.clone(), delivery: base };
    let processor = workflow::processor(&endpoints, &test_settings(), h.store.clone(), Arc::new(clock.clone()));
    let options = workflow::SupervisorOptions { every: Duration::from_secs(10), batch: 10 };
    workflow::Supervisor { store: h.store.clone(), processor, options, holder: holder.to_owned() }
}

#[tokio::test]
async fn the_supervisor_gives_up_an_overdue_workflow_and_retries_its_compensation_until_it_succeeds() {
    let h = start_with(5, Settings { supervise_every_ms: 0, ..test_settings() }).await;
    // A request whose drone never comes: the workflow keeps it running, well within its hour.
    let busy = (StatusCode::SERVICE_UNAVAILABLE, json!({ "title": "no drone" }), Some(3600));
    h.downstream.script("PUT /api/dronedeliveries", vec![busy]);
    h.publish("d1", DeliveryCommand::Delivery(request("contoso"))).await;
    for _ in 0..200 {
        if h.store.get("d1").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Running);

    let clock = platform::clock::ManualClock::new(Utc::now());
    let supervisor = supervisor_at(&h, &clock, "a");
    let rival = supervisor_at(&h, &clock, "b");
    assert_eq!(supervisor.round().await.unwrap(), Some(workflow::supervisor::Round::default()), "nothing due yet");
    assert_eq!(rival.round().await.unwrap(), None, "one supervisor acts at a time");

    // Two hours later it is overdue, and the delivery service is down: compensation waits.
    clock.advance(chrono::Duration::hours(2));
    let down = (StatusCode::SERVICE_UNAVAILABLE, json!({}), None);
    h.downstream.script("PUT /api/deliveries/d1/closure", vec![down]);
    let round = supervisor.round().await.unwrap().unwrap();
    assert_eq!((round.given_up, round.compensated, round.pending), (1, 0, 1));
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Compensating);

    // Within the same round's time the compensation counts as in progress: left alone.
    let round = supervisor.round().await.unwrap().unwrap();
    assert_eq!(round, workflow::supervisor::Round::default(), "a compensation just tried is not taken over");

    clock.advance(chrono::Duration::seconds(10));
    let round = supervisor.round().await.unwrap().unwrap();
    assert_eq!((round.given_up, round.compensated, round.pending), (0, 1, 0));
    let record = h.store.get("d1").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Failed);
    assert!(record.reason.as_deref().unwrap().contains("no drone"), "{:?}", record.reason);
    let closures = h.downstream.calls().into_iter().filter(|(_, p, _)| p.ends_with("/closure")).collect::<Vec<_>>();
    assert_eq!(closures.last().unwrap().2["stage"], "Failed");
    assert!(h.downstream.count("DELETE /api/dronedeliveries/d1") >= 1, "the drone is released");
    assert_eq!(supervisor.round().await.unwrap(), Some(workflow::supervisor::Round::default()), "nothing left");
}
