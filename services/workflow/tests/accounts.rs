//! The account check before scheduling, against a stand-in account service (and stand-in
//! package, dronescheduler and delivery services) on a real socket: a suspended account's
//! request ends failed with the reason, dead-lettered once, no drone taken; an active one is
//! scheduled with the account on every call; an account service that is down is waited for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use contracts::messages::{DeliveryCommand, DeliveryRequestEnvelope};
use contracts::requests::{DeliveryRequest, PackageInfo};
use contracts::{ConfirmationType, ContainerSize};
use platform::bus::{OutgoingMessage, Queue, QueueOptions, SqliteQueue};
use platform::clock::SystemClock;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use workflow::state::{Step, WorkflowStatus};
use workflow::{Endpoints, Settings, WorkflowStore};

/// Every call made: "METHOD /path" and its JSON body.
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// One server for all four services: accounts answer from a script (then `active`), the rest
/// with their happy path.
#[derive(Clone, Default)]
struct Services {
    calls: Calls,
    account_answers: Arc<Mutex<VecDeque<(StatusCode, Value)>>>,
}

impl Services {
    fn routes(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|(route, _)| route.clone()).collect()
    }

    fn body_of(&self, route: &str) -> Value {
        let calls = self.calls.lock().unwrap();
        calls.iter().find(|(r, _)| r == route).map(|(_, body)| body.clone()).unwrap_or(Value::Null)
    }
}

async fn serve(State(services): State<Services>, request: Request) -> Response {
    let route = format!("{} {}", request.method(), request.uri().path());
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    services.calls.lock().unwrap().push((route.clone(), body.clone()));
    if let Some(account) = route.strip_prefix("GET /internal/accounts/") {
        let scripted = services.account_answers.lock().unwrap().pop_front();
        let (status, answer) = scripted.unwrap_or((StatusCode::OK, json!({ "status": "active" })));
        let mut answer = answer;
        answer["id"] = json!(account);
        answer["name"] = json!("Contoso");
        answer["createdAt"] = json!(Utc::now());
        return (status, axum::Json(answer)).into_response();
    }
    if let Some(delivery_id) = route.strip_prefix("PUT /api/dronedeliveries/") {
        return axum::Json(json!({
            "droneId": "drone-0042", "deliveryId": delivery_id, "ownerId": body["ownerId"], "depotId": "sodo",
            "assignedAt": Utc::now(), "traveledMiles": 5.0, "assignedHours": 0.125, "busyUntil": Utc::now(),
            "released": false
        }))
        .into_response();
    }
    if route.starts_with("DELETE ") {
        return StatusCode::NO_CONTENT.into_response();
    }
    StatusCode::CREATED.into_response()
}

struct Harness {
    services: Services,
    queue: Arc<dyn Queue>,
    store: Arc<dyn WorkflowStore>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Harness {
    let services = Services::default();
    let app = Router::new().fallback(serve).with_state(services.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let settings = Settings {
        backoff_base_ms: 20,
        backoff_max_secs: 1,
        call_retries: 0,
        supervise_every_ms: 0,
        account_url: Some(base.clone()),
        ..Settings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let options =
        QueueOptions { max_attempts: 20, poll_interval: Duration::from_millis(10), ..QueueOptions::default() };
    let queue: Arc<dyn Queue> =
        Arc::new(SqliteQueue::open(&dir.path().join("bus.db"), "delivery-requests", options).await.unwrap());
    let store = workflow::open_store(&format!("sqlite://{}", dir.path().join("workflow.db").display())).await.unwrap();
    let endpoints = Endpoints { package: base.clone(), dronescheduler: base.clone(), delivery: base };
    let processor = workflow::processor(&endpoints, &settings, store.clone(), Arc::new(SystemClock));
    let shutdown = CancellationToken::new();
    let consumer_options = settings.consumer_options(Duration::from_secs(1));
    tokio::spawn(workflow::consumer::run(queue.clone(), processor, consumer_options, shutdown.clone()));
    Harness { services, queue, store, shutdown, _dir: dir }
}

fn request() -> DeliveryRequest {
    DeliveryRequest {
        delivery_id: None,
        owner_id: "user-7".to_owned(),
        pickup_location: "47.60,-122.33".to_owned(),
        drop_off_location: "Space Needle".to_owned(),
        pickup_time: "2026-11-26T10:00:00Z".to_owned(),
        deadline: String::new(),
        expedited: false,
        confirmation_required: ConfirmationType::None,
        package_info: PackageInfo {
            package_id: "pkg-1".to_owned(),
            size: ContainerSize::Small,
            weight: 1.0,
            tag: String::new(),
        },
    }
}

impl Harness {
    async fn publish(&self, delivery_id: &str, account_id: Option<&str>) {
        let envelope = DeliveryRequestEnvelope {
            message_id: format!("delivery:{delivery_id}"),
            delivery_id: delivery_id.to_owned(),
            occurred_at: Utc::now(),
            traceparent: None,
            account_id: account_id.map(str::to_owned),
            command: DeliveryCommand::Delivery(request()),
        };
        let payload = serde_json::to_vec(&envelope).unwrap();
        self.queue.publish(OutgoingMessage { id: envelope.message_id, payload: payload.into() }).await.unwrap();
    }

    async fn drained(&self) {
        for _ in 0..500 {
            if self.queue.depth().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("queue did not drain; calls so far: {:?}", self.services.routes());
    }
}

#[tokio::test]
async fn a_suspended_accounts_request_ends_failed_with_the_reason_and_takes_no_drone() {
    let h = start().await;
    h.services.account_answers.lock().unwrap().push_back((StatusCode::OK, json!({ "status": "suspended" })));
    h.publish("d1", Some("acc-1")).await;
    h.drained().await;

    let dead = h.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered once");
    assert!(dead[0].last_error.contains("account acc-1 is suspended"), "{}", dead[0].last_error);
    assert_eq!(
        h.services.routes(),
        ["GET /internal/accounts/acc-1", "DELETE /api/dronedeliveries/d1", "PUT /api/deliveries/d1/closure"],
        "nothing stored or assigned; the release only fences the id off"
    );
    let closure = h.services.body_of("PUT /api/deliveries/d1/closure");
    assert_eq!(closure["stage"], "Failed");
    assert!(closure["reason"].as_str().unwrap().contains("account acc-1 is suspended"), "{closure}");
    assert_eq!(closure["delivery"]["owner"], json!({ "userId": "user-7", "accountId": "acc-1" }));
    let record = h.store.get("d1").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Failed);
    assert!(record.reason.unwrap().contains("suspended"));
}

#[tokio::test]
async fn an_unknown_account_is_refused_like_a_suspended_one() {
    let h = start().await;
    h.services.account_answers.lock().unwrap().push_back((StatusCode::NOT_FOUND, json!({ "title": "Not Found" })));
    h.publish("d1", Some("acc-gone")).await;
    h.drained().await;
    let dead = h.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.contains("account acc-gone does not exist"), "{}", dead[0].last_error);
    assert_eq!(h.services.routes().iter().filter(|r| r.starts_with("PUT /api/dronedeliveries")).count(), 0);
}

#[tokio::test]
async fn an_active_account_is_scheduled_with_the_account_on_every_call() {
    let h = start().await;
    h.publish("d1", Some("acc-1")).await;
    h.drained().await;
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(
        h.services.routes(),
        [
            "GET /internal/accounts/acc-1",
            "PUT /api/packages/pkg-1",
            "PUT /api/dronedeliveries/d1",
            "PUT /api/deliveries/d1"
        ]
    );
    assert_eq!(h.services.body_of("PUT /api/packages/pkg-1")["accountId"], "acc-1");
    assert_eq!(h.services.body_of("PUT /api/dronedeliveries/d1")["accountId"], "acc-1");
    let delivery = h.services.body_of("PUT /api/deliveries/d1");
    assert_eq!(delivery["owner"], json!({ "userId": "user-7", "accountId": "acc-1" }));
    let record = h.store.get("d1").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Scheduled);
    assert!(record.is_done(Step::Account));
}

#[tokio::test]
async fn an_account_service_that_is_down_is_waited_for() {
    let h = start().await;
    for _ in 0..3 {
        h.services.account_answers.lock().unwrap().push_back((StatusCode::SERVICE_UNAVAILABLE, json!({})));
    }
    h.publish("d1", Some("acc-1")).await;
    h.drained().await;
    assert!(h.queue.dead_letters(10).await.unwrap().is_empty(), "not dead-lettered");
    let routes = h.services.routes();
    assert_eq!(routes.iter().filter(|r| r.starts_with("GET /internal/accounts/")).count(), 4, "{routes:?}");
    assert_eq!(routes.last().unwrap(), "PUT /api/deliveries/d1");
    assert_eq!(h.store.get("d1").await.unwrap().unwrap().status, WorkflowStatus::Scheduled);
}

#[tokio::test]
async fn a_request_without_an_account_is_not_checked_and_the_owner_stands_for_it() {
    let h = start().await;
    h.publish("d1", None).await;
    h.drained().await;
    let routes = h.services.routes();
    assert!(!routes.iter().any(|r| r.starts_with("GET /internal/accounts")), "{routes:?}");
    let delivery = h.services.body_of("PUT /api/deliveries/d1");
    assert_eq!(delivery["owner"], json!({ "userId": "user-7", "accountId": "user-7" }));
    assert!(h.services.body_of("PUT /api/packages/pkg-1").get("accountId").is_none());
}

#[tokio::test]
async fn an_active_account_is_asked_about_once_within_the_cache_time_and_a_refusal_is_never_cached() {
    let h = start().await;
    let asked = |account: &str| {
        let route = format!("GET /internal/accounts/{account}");
        h.services.routes().iter().filter(|r| **r == route).count()
    };
    h.publish("d1", Some("acc-1")).await;
    h.drained().await;
    h.publish("d2", Some("acc-1")).await;
    h.drained().await;
    assert_eq!(asked("acc-1"), 1, "an active account was asked about again within the cache time");
    assert_eq!(h.store.get("d2").await.unwrap().unwrap().status, WorkflowStatus::Scheduled);

    h.services.account_answers.lock().unwrap().push_back((StatusCode::OK, json!({ "status": "suspended" })));
    h.publish("d3", Some("acc-2")).await;
    h.drained().await;
    assert_eq!(h.store.get("d3").await.unwrap().unwrap().status, WorkflowStatus::Failed);
    // Reinstated: the next request asks again and is scheduled.
    h.publish("d4", Some("acc-2")).await;
    h.drained().await;
    assert_eq!(asked("acc-2"), 2, "a suspension was remembered");
    assert_eq!(h.store.get("d4").await.unwrap().unwrap().status, WorkflowStatus::Scheduled);
}
