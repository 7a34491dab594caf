//! The delivery service's public routes with the gateway's identity required: no identity is
//! 401, another account's delivery is 404 on every public route, the summary counts only the
//! caller's account, and the internal routes the workflow calls keep working without an
//! identity.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use chrono::TimeZone;
use contracts::events::DELIVERY_EVENTS_STREAM;
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use platform::identity::IdentityKey;
use platform::testing::{call_with, identity_headers};
use serde_json::{Value, json};

const SECRET: &str = "the gateway and the services share this";

struct TestApp {
    router: Router,
    key: IdentityKey,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let store = delivery::open_store(&format!("sqlite://{}", dir.path().join("delivery.db").display())).await.unwrap();
    let bus = format!("sqlite://{}", dir.path().join("bus.db").display());
    let events =
        platform::bus::stream::open_stream(&bus, DELIVERY_EVENTS_STREAM, delivery::STREAM_DEDUP_WINDOW).await.unwrap();
    let common = CommonArgs { identity_secret: Some(SECRET.to_owned()), ..CommonArgs::default() };
    let router = delivery::router(store, events, Arc::new(clock), &common);
    TestApp { router, key: IdentityKey::new(SECRET).unwrap(), _dir: dir }
}

impl TestApp {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>, headers: &HeaderMap) -> (StatusCode, Value) {
        let (status, body, _) = call_with(&self.router, method, uri, body, headers).await;
        (status, body)
    }

    fn as_account(&self, account: &str) -> HeaderMap {
        identity_headers(&self.key, account)
    }

    /// Creates a delivery the way the workflow does: the internal PUT, no identity.
    async fn create(&self, id: &str, user: &str, account: &str) {
        let body = json!({
            "id": id,
            "owner": { "userId": user, "accountId": account },
            "pickup": { "altitude": 0, "latitude": 47.60, "longitude": -122.33 },
            "dropoff": { "altitude": 0, "latitude": 47.62, "longitude": -122.35 },
            "droneId": "drone-0007"
        });
        let (status, problem) =
            self.call(Method::PUT, &format!("/api/deliveries/{id}"), Some(body), &HeaderMap::new()).await;
        assert_eq!(status, StatusCode::CREATED, "{problem}");
    }
}

fn public_reads(id: &str) -> [String; 3] {
    [
        format!("/api/deliveries/public/{id}"),
        format!("/api/deliveries/{id}/status"),
        format!("/api/deliveries/{id}/owner"),
    ]
}

#[tokio::test]
async fn public_routes_need_the_gateways_identity() {
    let app = spawn_app().await;
    app.create("d1", "user-7", "acc-1").await;
    for uri in public_reads("d1") {
        let (status, body) = app.call(Method::GET, &uri, None, &HeaderMap::new()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    let notify = json!({ "emailAddress": "someone@example.com" });
    let uri = "/api/deliveries/d1/notifymerequests";
    let (status, _) = app.call(Method::POST, uri, Some(notify), &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The internal routes the workflow calls do not take one.
    let (status, _) = app.call(Method::GET, "/api/deliveries/d1", None, &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_caller_sees_its_own_accounts_delivery_and_not_anothers() {
    let app = spawn_app().await;
    app.create("d1", "user-7", "acc-1").await;
    for uri in public_reads("d1") {
        let (status, body) = app.call(Method::GET, &uri, None, &app.as_account("acc-1")).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let (status, body) = app.call(Method::GET, &uri, None, &app.as_account("acc-2")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        let (unknown, _) = app.call(Method::GET, &uri.replace("d1", "nope"), None, &app.as_account("acc-2")).await;
        assert_eq!(unknown, StatusCode::NOT_FOUND, "the same answer as an unknown id");
    }
    let (_, owner) = app.call(Method::GET, "/api/deliveries/d1/owner", None, &app.as_account("acc-1")).await;
    assert_eq!(owner, json!({ "userId": "user-7", "accountId": "acc-1" }));

    let notify = json!({ "emailAddress": "someone@example.com" });
    let uri = "/api/deliveries/d1/notifymerequests";
    let (status, _) = app.call(Method::POST, uri, Some(notify.clone()), &app.as_account("acc-2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.call(Method::POST, uri, Some(notify), &app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, notifications) = app.call(Method::GET, "/api/deliveries/d1/notifications", None, &HeaderMap::new()).await;
    assert_eq!(notifications, json!([]), "only the own account's notify-me request was stored, none sent yet");
}

#[tokio::test]
async fn the_summary_counts_only_the_callers_accounts_deliveries() {
    let app = spawn_app().await;
    // Two accounts whose users both go by "shared" (the owner id is unique within an account).
    app.create("a1", "shared", "acc-1").await;
    app.create("a2", "shared", "acc-1").await;
    app.create("b1", "shared", "acc-2").await;
    let uri = "/api/deliveries/summary?ownerId=shared&year=2026&month=3";
    for (account, count) in [("acc-1", 2), ("acc-2", 1), ("acc-3", 0)] {
        let (status, body) = app.call(Method::GET, uri, None, &app.as_account(account)).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "count": count })), "{account}");
    }
    let (status, _) = app.call(Method::GET, uri, None, &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
