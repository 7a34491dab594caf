//! Ingestion with the gateway's identity required: the caller's account goes on the message
//! and on the ledger, another account's ids are unknown (404), and idempotency keys are the
//! caller's own.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use contracts::messages::{DeliveryCommand, DeliveryRequestEnvelope};
use ingestion::Settings;
use platform::bus::{Queue, QueueOptions, SqliteQueue};
use platform::clock::SystemClock;
use platform::config::CommonArgs;
use platform::identity::IdentityKey;
use platform::testing::{call_with, identity_headers};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "the gateway and the services share this";

struct TestApp {
    router: Router,
    queue: Arc<dyn Queue>,
    key: IdentityKey,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let queue: Arc<dyn Queue> = Arc::new(
        SqliteQueue::open(&dir.path().join("bus.db"), "delivery-requests", QueueOptions::default()).await.unwrap(),
    );
    let store =
        ingestion::open_store(&format!("sqlite://{}", dir.path().join("ingestion.db").display())).await.unwrap();
    let common = CommonArgs { identity_secret: Some(SECRET.to_owned()), ..CommonArgs::default() };
    let router = ingestion::router(
        queue.clone(),
        store,
        Arc::new(SystemClock),
        &Settings::default(),
        &common,
        CancellationToken::new(),
    );
    TestApp { router, queue, key: IdentityKey::new(SECRET).unwrap(), _dir: dir }
}

impl TestApp {
    fn as_account(&self, account: &str) -> HeaderMap {
        identity_headers(&self.key, account)
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>, headers: &HeaderMap) -> (StatusCode, Value) {
        let (status, body, _) = call_with(&self.router, method, uri, body, headers).await;
        (status, body)
    }

    async fn post(&self, headers: &HeaderMap) -> (StatusCode, Value) {
        let body = contracts::requests::reference_validation_request();
        self.call(Method::POST, "/api/deliveryrequests", Some(body), headers).await
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
async fn calls_without_a_valid_identity_are_refused_and_queue_nothing() {
    let app = spawn_app().await;
    let (status, body) = app.post(&HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let other_key = IdentityKey::new("a different secret, also long").unwrap();
    let (status, _) = app.post(&identity_headers(&other_key, "acc-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = app.call(Method::DELETE, "/api/deliveryrequests/d1", None, &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(app.queued().await.is_empty());
}

#[tokio::test]
async fn the_callers_account_travels_with_every_message() {
    let app = spawn_app().await;
    let (status, body) = app.post(&app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["deliveryId"].as_str().unwrap().to_owned();
    let uri = format!("/api/deliveryrequests/{id}");
    let change = serde_json::json!({ "pickupTime": "2030-01-01T10:00:00Z" });
    let (status, _) = app.call(Method::PATCH, &uri, Some(change), &app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = app.call(Method::DELETE, &uri, None, &app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let queued = app.queued().await;
    assert_eq!(queued.len(), 3);
    for envelope in &queued {
        assert_eq!(envelope.account_id.as_deref(), Some("acc-1"), "{envelope:?}");
    }
    let DeliveryCommand::Delivery(request) = &queued[0].command else { panic!("{:?}", queued[0]) };
    assert_eq!(request.owner_id, "myowner", "the body's owner stays the user within the account");
}

#[tokio::test]
async fn another_accounts_ids_are_unknown() {
    let app = spawn_app().await;
    let (_, body) = app.post(&app.as_account("acc-1")).await;
    let uri = format!("/api/deliveryrequests/{}", body["deliveryId"].as_str().unwrap());
    let _ = app.queued().await;

    let (status, problem) = app.call(Method::DELETE, &uri, None, &app.as_account("acc-2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (unknown, _) = app.call(Method::DELETE, "/api/deliveryrequests/never", None, &app.as_account("acc-2")).await;
    assert_eq!(unknown, StatusCode::NOT_FOUND, "the same answer as an id nobody was given");
    let change = serde_json::json!({ "pickupTime": "2030-01-01T10:00:00Z" });
    let (status, _) = app.call(Method::PATCH, &uri, Some(change), &app.as_account("acc-2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(app.queued().await.is_empty(), "nothing queued for another account's id");
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_account() {
    let app = spawn_app().await;
    let with_key = |account: &str| {
        let mut headers = app.as_account(account);
        headers.insert("idempotency-key", HeaderValue::from_static("order-42"));
        headers
    };
    let (first, a1) = app.post(&with_key("acc-1")).await;
    let (_, a1_again) = app.post(&with_key("acc-1")).await;
    let (second, b1) = app.post(&with_key("acc-2")).await;
    assert_eq!((first, second), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(a1["deliveryId"], a1_again["deliveryId"], "a retry names the same delivery");
    assert_ne!(a1["deliveryId"], b1["deliveryId"], "another account's same key is its own request");
    let accounts: Vec<_> = app.queued().await.into_iter().map(|e| e.account_id.unwrap()).collect();
    assert_eq!(accounts, ["acc-1", "acc-2"]);
}
