//! The ingestion API: what is accepted is queued, what is rejected is not.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use contracts::messages::{DeliveryCommand, DeliveryRequestEnvelope};
use http_body_util::BodyExt;
use ingestion::Settings;
use platform::bus::{
    BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, SqliteQueue,
};
use platform::clock::SystemClock;
use platform::config::CommonArgs;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct TestApp {
    router: Router,
    queue: Arc<dyn Queue>,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let queue: Arc<dyn Queue> = Arc::new(
        SqliteQueue::open(&dir.path().join("bus.db"), "delivery-requests", QueueOptions::default()).await.unwrap(),
    );
    spawn_with_queue(dir, queue).await
}

async fn spawn_with_queue(dir: tempfile::TempDir, queue: Arc<dyn Queue>) -> TestApp {
    let store =
        ingestion::open_store(&format!("sqlite://{}", dir.path().join("ingestion.db").display())).await.unwrap();
    let router = ingestion::router(
        queue.clone(),
        store,
        Arc::new(SystemClock),
        &Settings::default(),
        &CommonArgs::default(),
        CancellationToken::new(),
    );
    TestApp { router, queue, _dir: dir }
}

fn reference_request() -> Value {
    contracts::requests::reference_validation_request()
}

impl TestApp {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, HeaderMap) {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, value, headers)
    }

    async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> (StatusCode, Value, HeaderMap) {
        self.send(Method::POST, "/api/deliveryrequests", Some(&body.to_string()), headers).await
    }

    async fn queued(&self) -> Vec<DeliveryRequestEnvelope> {
        let mut all = Vec::new();
        loop {
            let batch = self.queue.receive(100, Duration::from_millis(20)).await.unwrap();
            if batch.is_empty() {
                return all;
            }
            for m in batch {
                all.push(serde_json::from_slice(&m.payload).unwrap());
                m.ack().await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn accepts_the_reference_request_and_queues_it() {
    let app = spawn_app().await;
    let (status, body, headers) = app.post(&reference_request(), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["deliveryId"].as_str().unwrap().to_owned();
    assert_eq!(headers[header::LOCATION], format!("/api/deliveries/{id}"));
    assert_eq!(body["ownerId"], "myowner");
    assert_eq!(body["packageInfo"]["weight"], 10.0);
    let queued = app.queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].delivery_id, id);
    assert!(queued[0].traceparent.is_some());
    let DeliveryCommand::Delivery(request) = &queued[0].command else { panic!("{:?}", queued[0]) };
    assert_eq!(request.pickup_location, "my pickup");
    assert!(request.expedited);
}

#[tokio::test]
async fn bad_input_is_a_problem_and_queues_nothing() {
    let app = spawn_app().await;
    let mut wrong_types = reference_request();
    wrong_types["expedited"] = json!("yes");
    wrong_types["packageInfo"]["weight"] = json!("ten");
    let mut unknown_enum = reference_request();
    unknown_enum["packageInfo"]["size"] = json!("Gigantic");
    let mut missing = reference_request();
    missing.as_object_mut().unwrap().remove("ownerId");
    let mut too_heavy = reference_request();
    too_heavy["packageInfo"]["weight"] = json!(1000);
    let cases: Vec<(Option<String>, StatusCode, Option<&str>)> = vec![
        (Some("{\"ownerId\": ".to_owned()), StatusCode::BAD_REQUEST, None),
        (Some(String::new()), StatusCode::BAD_REQUEST, None),
        (Some("[]".to_owned()), StatusCode::UNPROCESSABLE_ENTITY, Some("/")),
        (Some(wrong_types.to_string()), StatusCode::UNPROCESSABLE_ENTITY, Some("/packageInfo/weight")),
        (Some(unknown_enum.to_string()), StatusCode::UNPROCESSABLE_ENTITY, Some("/packageInfo/size")),
        (Some(missing.to_string()), StatusCode::UNPROCESSABLE_ENTITY, Some("/ownerId")),
        (Some(too_heavy.to_string()), StatusCode::UNPROCESSABLE_ENTITY, Some("/packageInfo/weight")),
    ];
    for (body, expected, field) in cases {
        let (status, problem, headers) = app.send(Method::POST, "/api/deliveryrequests", body.as_deref(), &[]).await;
        assert_eq!(status, expected, "{body:?} → {problem}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        if let Some(field) = field {
            assert!(problem["errors"][field].is_string(), "{field} not named in {problem}");
        }
    }
    let (status, _, _) = app.send(Method::POST, "/api/deliveryrequests", None, &[]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut huge = reference_request();
    huge["packageInfo"]["tag"] = json!("x".repeat(200 * 1024));
    let (status, _, _) = app.post(&huge, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(app.queued().await.is_empty());
}

#[tokio::test]
async fn one_bad_request_names_all_its_bad_fields() {
    let app = spawn_app().await;
    let body = json!({ "ownerId": "", "pickupLocation": "a", "dropOffLocation": "b", "pickupTime": "noon",
                       "packageInfo": { "packageId": "p", "size": "Tiny" } });
    let (status, problem, _) = app.post(&body, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = problem["errors"].as_object().unwrap();
    for field in ["/ownerId", "/pickupTime", "/packageInfo/size", "/packageInfo/weight"] {
        assert!(errors.contains_key(field), "{field} missing from {problem}");
    }
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "order-42")];
    let (s1, first, h1) = app.post(&reference_request(), &key).await;
    let (s2, second, h2) = app.post(&reference_request(), &key).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first, second);
    assert_eq!(h1[header::LOCATION], h2[header::LOCATION]);
    let mut changed = reference_request();
    changed["packageInfo"]["weight"] = json!(3);
    let (status, problem, _) = app.post(&changed, &key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(app.queued().await.len(), 1);
}

#[tokio::test]
async fn reschedule_and_cancel_known_ids_only() {
    let app = spawn_app().await;
    let (_, body, _) = app.post(&reference_request(), &[]).await;
    let id = body["deliveryId"].as_str().unwrap().to_owned();
    let uri = format!("/api/deliveryrequests/{id}");

    let (status, body, _) = app.send(Method::PATCH, &uri, Some(r#"{"dropOffLocation":"47.61,-122.33"}"#), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["deliveryId"], id);
    let (status, problem, _) = app.send(Method::PATCH, &uri, Some(r#"{"pickupTime":"tomorrow"}"#), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/pickupTime"].is_string());
    let (status, _, _) = app.send(Method::PATCH, &uri, Some("{}"), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(app.send(Method::DELETE, &uri, None, &[]).await.0, StatusCode::ACCEPTED);
    assert_eq!(app.send(Method::DELETE, &uri, None, &[]).await.0, StatusCode::ACCEPTED);

    let unknown = "/api/deliveryrequests/00000000-0000-0000-0000-000000000000";
    let (status, problem, _) = app.send(Method::PATCH, unknown, Some(r#"{"deadline":""}"#), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
    assert_eq!(app.send(Method::DELETE, unknown, None, &[]).await.0, StatusCode::NOT_FOUND);

    let kinds: Vec<&'static str> = app.queued().await.iter().map(|e| e.command.kind()).collect();
    // The two cancels share a message id: one cancel is queued.
    assert_eq!(kinds, ["delivery", "reschedule", "cancel"]);
}

/// A queue that is down: publishing fails.
struct DownQueue;

#[async_trait]
impl Queue for DownQueue {
    fn name(&self) -> &str {
        "delivery-requests"
    }
    async fn publish(&self, _: OutgoingMessage) -> Result<Published, BusError> {
        Err(BusError::Unavailable("disk full".to_owned()))
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        Err(BusError::Unavailable("disk full".to_owned()))
    }
    async fn dead_letters(&self, _: usize) -> Result<Vec<DeadLetter>, BusError> {
        Ok(Vec::new())
    }
    async fn find_dead_letter(&self, _: &str) -> Result<Option<DeadLetter>, BusError> {
        Ok(None)
    }
    async fn replay_dead_letter(&self, _: &str) -> Result<bool, BusError> {
        Ok(false)
    }
    async fn purge_dead_letter(&self, _: &str) -> Result<bool, BusError> {
        Ok(false)
    }
    async fn purge_dead_letters(&self) -> Result<u64, BusError> {
        Ok(0)
    }
    async fn depth(&self) -> Result<u64, BusError> {
        Ok(0)
    }
    async fn ping(&self) -> Result<(), BusError> {
        Err(BusError::Unavailable("disk full".to_owned()))
    }
}

#[tokio::test]
async fn a_queue_failure_is_503_and_not_ready() {
    let app = spawn_with_queue(tempfile::tempdir().unwrap(), Arc::new(DownQueue)).await;
    let (status, problem, headers) = app.post(&reference_request(), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _, _) = app.send(Method::GET, "/healthz/ready", None, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn internal_paths_and_methods_are_problems() {
    let app = spawn_app().await;
    let (status, body, _) = app.send(Method::GET, "/api/deliveryrequests", None, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["status"], 405);
    assert_eq!(app.send(Method::GET, "/nope", None, &[]).await.0, StatusCode::NOT_FOUND);
}
