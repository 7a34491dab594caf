//! The delivery service's HTTP API, route by route, against a real SQLite store and an embedded
//! `delivery-events` stream.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use contracts::events::{DELIVERY_EVENTS_STREAM, DeliveryEvent};
use contracts::{DeliveryStage, Location};
use delivery::DeliveryStore;
use delivery::domain::Action;
use platform::bus::stream::{EventStream, StartAt, Subscription};
use platform::bus::{BusError, OutgoingMessage, Published, QueueOptions};
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use serde_json::{Value, json};
use tower::ServiceExt;

struct TestApp {
    router: Router,
    clock: ManualClock,
    store: Arc<dyn DeliveryStore>,
    events: Arc<Flaky>,
    _dir: tempfile::TempDir,
}

/// The `delivery-events` stream, which a test can take down.
struct Flaky {
    inner: Arc<dyn EventStream>,
    down: AtomicBool,
}

impl Flaky {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BusError::Unavailable("down for the test".to_owned()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl EventStream for Flaky {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError> {
        self.check()?;
        self.inner.publish(event).await
    }

    async fn subscribe(
        &self,
        group: &str,
        start: StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn Subscription>, BusError> {
        self.inner.subscribe(group, start, options).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.check()?;
        self.inner.ping().await
    }
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(noon());
    let store = delivery::open_store(&format!("sqlite://{}", dir.path().join("delivery.db").display())).await.unwrap();
    let bus = format!("sqlite://{}", dir.path().join("bus.db").display());
    let stream =
        platform::bus::stream::open_stream(&bus, DELIVERY_EVENTS_STREAM, delivery::STREAM_DEDUP_WINDOW).await.unwrap();
    let events = Arc::new(Flaky { inner: stream, down: AtomicBool::new(false) });
    let router = delivery::router(store.clone(), events.clone(), Arc::new(clock.clone()), &CommonArgs::default());
    TestApp { router, clock, store, events, _dir: dir }
}

fn delivery(id: &str, owner: &str) -> Value {
    json!({
        "id": id,
        "owner": { "userId": owner, "accountId": owner },
        "pickup": { "altitude": 0, "latitude": 47.60, "longitude": -122.33 },
        "dropoff": { "altitude": 0, "latitude": 47.62, "longitude": -122.35 },
        "deadline": "",
        "expedited": true,
        "confirmationRequired": "Picture",
        "droneId": "drone-0007"
    })
}

impl TestApp {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, HeaderMap) {
        platform::testing::call(&self.router, method, uri, body).await
    }

    async fn create(&self, id: &str, owner: &str) {
        let (status, _, _) = self.call(Method::PUT, &format!("/api/deliveries/{id}"), Some(delivery(id, owner))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
}

fn confirmation() -> Value {
    json!({
        "dateTime": "2026-03-15T13:00:00Z",
        "geoCoordinates": { "altitude": 0, "latitude": 47.62, "longitude": -122.35 },
        "confirmationType": "picture",
        "confirmationBlob": "aGVsbG8="
    })
}

#[tokio::test]
async fn put_creates_then_updates_without_touching_the_stage() {
    let app = spawn_app().await;
    let (status, body, headers) = app.call(Method::PUT, "/api/deliveries/d1", Some(delivery("d1", "contoso"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[header::LOCATION], "/api/deliveries/d1");
    assert_eq!(body["stage"], "Created");
    assert_eq!(app.call(Method::DELETE, "/api/deliveries/d1", None).await.0, StatusCode::OK);
    let mut changed = delivery("d1", "contoso");
    changed["droneId"] = json!("drone-0008");
    changed["stage"] = json!("Created");
    let (status, body, _) = app.call(Method::PUT, "/api/deliveries/d1", Some(changed)).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (_, body, _) = app.call(Method::GET, "/api/deliveries/d1", None).await;
    assert_eq!(body["droneId"], "drone-0008");
    assert_eq!(body["stage"], "Cancelled", "a PUT must not resurrect a cancelled delivery");
}

#[tokio::test]
async fn concurrent_puts_create_once() {
    let app = spawn_app().await;
    let calls = (0..10).map(|_| app.call(Method::PUT, "/api/deliveries/same", Some(delivery("same", "o"))));
    let created = futures::future::join_all(calls).await.into_iter().filter(|r| r.0 == StatusCode::CREATED).count();
    assert_eq!(created, 1);
}

#[tokio::test]
async fn reads_by_id_public_owner_and_404() {
    let app = spawn_app().await;
    app.create("d1", "contoso").await;
    let (status, body, _) = app.call(Method::GET, "/api/deliveries/d1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["owner"]["userId"], "contoso");
    assert_eq!(body["confirmationRequired"], "Picture");
    let (_, public, _) = app.call(Method::GET, "/api/deliveries/public/d1", None).await;
    assert_eq!(public, body);
    let (_, owner, _) = app.call(Method::GET, "/api/deliveries/d1/owner", None).await;
    assert_eq!(owner, json!({ "userId": "contoso", "accountId": "contoso" }));
    for uri in [
        "/api/deliveries/none",
        "/api/deliveries/public/none",
        "/api/deliveries/none/owner",
        "/api/deliveries/none/status",
    ] {
        let (status, problem, headers) = app.call(Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(problem["status"], 404);
    }
    let (status, _, _) = app.call(Method::PUT, "/api/deliveries/public/d1", Some(delivery("d1", "x"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn status_follows_the_tracking_events() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Created");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.60);
    assert_eq!(status["pickupETA"], Value::Null);

    let change = json!({ "pickup": { "altitude": 0, "latitude": 47.55, "longitude": -122.30 }, "deadline": "2026-03-16T00:00:00Z" });
    let (code, body, _) = app.call(Method::PATCH, "/api/deliveries/d1", Some(change)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["stage"], "Rescheduled");
    assert_eq!(body["pickup"]["latitude"], 47.55);
    assert_eq!(body["deadline"], "2026-03-16T00:00:00Z");
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Rescheduled");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.55);

    let (code, body, _) = app.call(Method::DELETE, "/api/deliveries/d1", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["stage"], "Cancelled");
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Cancelled");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.55);
}

#[tokio::test]
async fn a_refused_reschedule_is_shown_once_on_the_status() {
    let app = spawn_app().await;
    let refusal = |reason: &str| Some(json!({ "action": "reschedule", "reason": reason }));
    let (code, _, _) = app.call(Method::POST, "/api/deliveries/nope/refusals", refusal("too late")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    app.create("d1", "o").await;
    let (code, problem, _) =
        app.call(Method::POST, "/api/deliveries/d1/refusals", Some(json!({ "action": "cancel", "reason": " " }))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/action"].is_string() && problem["errors"]["/reason"].is_string(), "{problem}");
    for _ in 0..2 {
        let (code, _, _) =
            app.call(Method::POST, "/api/deliveries/d1/refusals", refusal("the pickup can no longer move")).await;
        assert_eq!(code, StatusCode::NO_CONTENT);
    }
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Created", "a refusal changes no stage: {status}");
    assert_eq!(status["reason"], "reschedule refused: the pickup can no longer move");
}

#[tokio::test]
async fn stage_rules_are_enforced() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    assert_eq!(app.call(Method::DELETE, "/api/deliveries/d1", None).await.0, StatusCode::OK);
    assert_eq!(app.call(Method::DELETE, "/api/deliveries/d1", None).await.0, StatusCode::OK, "cancel is idempotent");
    let (status, problem, _) =
        app.call(Method::PATCH, "/api/deliveries/d1", Some(json!({ "deadline": "2026-03-16T00:00:00Z" }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(
        app.call(Method::POST, "/api/deliveries/d1/confirmations", Some(confirmation())).await.0,
        StatusCode::CONFLICT
    );

    app.create("d2", "o").await;
    let (status, body, _) = app.call(Method::POST, "/api/deliveries/d2/confirmations", Some(confirmation())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stage"], "Completed");
    assert_eq!(
        app.call(Method::POST, "/api/deliveries/d2/confirmations", Some(confirmation())).await.0,
        StatusCode::OK
    );
    assert_eq!(app.call(Method::DELETE, "/api/deliveries/d2", None).await.0, StatusCode::CONFLICT);
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d2/status", None).await;
    assert_eq!(status["stage"], "Completed");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.62);

    for (method, uri, body) in [
        (Method::PATCH, "/api/deliveries/none", Some(json!({ "deadline": "" }))),
        (Method::DELETE, "/api/deliveries/none", None),
        (Method::POST, "/api/deliveries/none/confirmations", Some(confirmation())),
        (Method::POST, "/api/deliveries/none/notifymerequests", Some(json!({ "sms": "+14255550100" }))),
    ] {
        assert_eq!(app.call(method.clone(), uri, body).await.0, StatusCode::NOT_FOUND, "{method} {uri}");
    }
}

#[tokio::test]
async fn bad_input_names_the_fields() {
    let app = spawn_app().await;
    let mut bad = delivery("other", "");
    bad["pickup"]["latitude"] = json!(100);
    bad["droneId"] = json!("");
    bad["deadline"] = json!("next tuesday");
    let (status, problem, _) = app.call(Method::PUT, "/api/deliveries/d1", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["/id", "/owner/userId", "/pickup/latitude", "/droneId", "/deadline"] {
        assert!(problem["errors"][field].is_string(), "{field}: {problem}");
    }
    let mut wrong_type = delivery("d1", "o");
    wrong_type["expedited"] = json!("yes");
    let (status, problem, _) = app.call(Method::PUT, "/api/deliveries/d1", Some(wrong_type)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/expedited"].is_string(), "{problem}");
    let mut bad_enum = delivery("d1", "o");
    bad_enum["confirmationRequired"] = json!("Telepathy");
    assert_eq!(app.call(Method::PUT, "/api/deliveries/d1", Some(bad_enum)).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    app.create("d1", "o").await;
    assert_eq!(
        app.call(Method::PATCH, "/api/deliveries/d1", Some(json!({}))).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, problem, _) =
        app.call(Method::PATCH, "/api/deliveries/d1", Some(json!({ "deadline": "whenever" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/deadline"].is_string());

    let request = Request::put("/api/deliveries/d1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"id\":"))
        .unwrap();
    assert_eq!(app.router.clone().oneshot(request).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let request = Request::put("/api/deliveries/d1").body(Body::from("{}")).unwrap();
    assert_eq!(app.router.clone().oneshot(request).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut huge = delivery("d1", "o");
    huge["deadline"] = json!("x".repeat(100 * 1024));
    assert_eq!(app.call(Method::PUT, "/api/deliveries/d1", Some(huge)).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn notify_me_requests_are_validated_and_stored() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let uri = "/api/deliveries/d1/notifymerequests";
    assert_eq!(
        app.call(Method::POST, uri, Some(json!({ "emailAddress": "pat@contoso.com" }))).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.call(Method::POST, uri, Some(json!({ "sms": "+1 425 555 0100" }))).await.0, StatusCode::NO_CONTENT);
    let (status, problem, _) = app.call(Method::POST, uri, Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem, _) =
        app.call(Method::POST, uri, Some(json!({ "emailAddress": "pat", "sms": "call me" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/emailAddress"].is_string() && problem["errors"]["/sms"].is_string());
}

#[tokio::test]
async fn notify_me_addresses_must_be_deliverable_and_numbers_are_kept_in_e164() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let uri = "/api/deliveries/d1/notifymerequests";
    for (body, field) in [
        (json!({ "emailAddress": "pat@contoso" }), "/emailAddress"),
        (json!({ "emailAddress": "pat..x@contoso.com" }), "/emailAddress"),
        (json!({ "emailAddress": "pat@contoso.com", "sms": "425-555-0100" }), "/sms"),
        (json!({ "sms": "+1 (425) 555-0100" }), "/sms"),
    ] {
        let (status, problem, headers) = app.call(Method::POST, uri, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(problem["errors"].as_object().unwrap().keys().collect::<Vec<_>>(), [field], "{body}: {problem}");
    }
    let body = json!({ "emailAddress": " pat@contoso.com ", "sms": "+44 20-7946-0958" });
    assert_eq!(app.call(Method::POST, uri, Some(body)).await.0, StatusCode::NO_CONTENT);
    let stored = app.store.notify_requests("d1").await.unwrap();
    assert_eq!(stored.len(), 1, "only the valid request was stored");
    assert_eq!(stored[0].email_address.as_deref(), Some("pat@contoso.com"));
    assert_eq!(stored[0].sms.as_deref(), Some("+442079460958"));
}

#[tokio::test]
async fn the_notifications_route_lists_the_outbox_and_404s_an_unknown_delivery() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let (status, body, _) = app.call(Method::GET, "/api/deliveries/d1/notifications", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])), "nothing sent yet");
    let (status, problem, _) = app.call(Method::GET, "/api/deliveries/none/notifications", None).await;
    assert_eq!((status, &problem["status"]), (StatusCode::NOT_FOUND, &json!(404)));
}

#[tokio::test]
async fn summary_counts_the_owners_deliveries_per_month() {
    let app = spawn_app().await;
    app.create("m1", "contoso").await;
    app.create("m2", "contoso").await;
    app.create("x1", "fabrikam").await;
    app.clock.advance(chrono::Duration::days(31));
    app.create("a1", "contoso").await;
    let (status, body, _) =
        app.call(Method::GET, "/api/deliveries/summary?ownerId=contoso&year=2026&month=3", None).await;
    assert_eq!(status, StatusCode::OK, "the summary route must not be taken for a delivery id");
    assert_eq!(body, json!({ "count": 2 }));
    let (_, body, _) = app.call(Method::GET, "/api/deliveries/summary?ownerId=contoso&year=2026&month=4", None).await;
    assert_eq!(body, json!({ "count": 1 }));
    let (_, body, _) = app.call(Method::GET, "/api/deliveries/summary?ownerId=nobody&year=2026&month=4", None).await;
    assert_eq!(body, json!({ "count": 0 }));
    let (status, problem, _) = app.call(Method::GET, "/api/deliveries/summary?year=2026&month=4", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["errors"]["ownerId"].is_string());
    assert_eq!(
        app.call(Method::GET, "/api/deliveries/summary?ownerId=o&year=2026&month=20", None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn without_the_identity_policy_the_summary_counts_every_account() {
    let app = spawn_app().await;
    app.create("m1", "contoso").await;
    let mut elsewhere = delivery("m2", "contoso");
    elsewhere["owner"]["accountId"] = json!("another-account");
    assert_eq!(app.call(Method::PUT, "/api/deliveries/m2", Some(elsewhere)).await.0, StatusCode::CREATED);
    let (_, body, _) = app.call(Method::GET, "/api/deliveries/summary?ownerId=contoso&year=2026&month=3", None).await;
    assert_eq!(body, json!({ "count": 2 }), "nothing is scoped without an identity");
}

#[tokio::test]
async fn health_routes() {
    let app = spawn_app().await;
    for uri in ["/healthz", "/healthz/live", "/healthz/ready", "/metrics"] {
        assert_eq!(app.call(Method::GET, uri, None).await.0, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn put_takes_the_id_from_the_path_and_a_repeat_keeps_the_history() {
    let app = spawn_app().await;
    let mut body = delivery("", "contoso");
    body["packageId"] = json!("p1");
    body["pickupTime"] = json!("2026-03-15T13:00:00Z");
    let (status, created, _) = app.call(Method::PUT, "/api/deliveries/d9", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["id"], "d9");
    assert_eq!(created["packageId"], "p1");
    let change = json!({ "pickup": { "altitude": 0, "latitude": 47.50, "longitude": -122.30 } });
    assert_eq!(app.call(Method::PATCH, "/api/deliveries/d9", Some(change)).await.0, StatusCode::OK);

    body["owner"] = json!({ "userId": "fabrikam", "accountId": "acct-2" });
    body["pickup"]["latitude"] = json!(47.45);
    let (status, empty, headers) = app.call(Method::PUT, "/api/deliveries/d9", Some(body)).await;
    assert_eq!((status, empty), (StatusCode::NO_CONTENT, Value::Null));
    assert!(headers.get(header::LOCATION).is_none());
    let (_, owner, _) = app.call(Method::GET, "/api/deliveries/d9/owner", None).await;
    assert_eq!(owner, json!({ "userId": "fabrikam", "accountId": "acct-2" }));
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d9/status", None).await;
    assert_eq!(status["stage"], "Rescheduled", "a repeated PUT neither resets the stage nor adds an event");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.50);
    let (_, read, _) = app.call(Method::GET, "/api/deliveries/d9", None).await;
    assert_eq!(read["pickup"]["latitude"], 47.45);
    assert_eq!(read["stage"], "Rescheduled");
    let (_, summary, _) =
        app.call(Method::GET, "/api/deliveries/summary?ownerId=fabrikam&year=2026&month=3", None).await;
    assert_eq!(summary, json!({ "count": 1 }), "the summary follows the current owner");
}

#[tokio::test]
async fn reschedule_is_validated_repeatable_and_keeps_the_last_location() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let uri = "/api/deliveries/d1";
    let (status, problem, _) = app
        .call(
            Method::PATCH,
            uri,
            Some(json!({ "pickup": { "latitude": 47.6, "longitude": -190 }, "pickupTime": "at noon" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"].as_object().unwrap().keys().collect::<Vec<_>>(), ["/pickup/longitude", "/pickupTime"]);
    let (status, problem, _) = app.call(Method::PATCH, uri, Some(json!({ "dropoff": { "latitude": "north" } }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    let change = json!({ "dropoff": { "altitude": 0, "latitude": 47.70, "longitude": -122.20 }, "pickupTime": "2026-03-15T18:00:00Z" });
    let (first, once, _) = app.call(Method::PATCH, uri, Some(change.clone())).await;
    let (second, twice, _) = app.call(Method::PATCH, uri, Some(change)).await;
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    assert_eq!(once, twice);
    assert_eq!(twice["dropoff"]["latitude"], 47.70);
    assert_eq!(twice["pickupTime"], "2026-03-15T18:00:00Z");
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Rescheduled");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.60, "a reschedule without a pickup has no location");
    assert_eq!((status["pickupETA"].clone(), status["deliveryETA"].clone()), (Value::Null, Value::Null));

    assert_eq!(
        app.call(Method::POST, "/api/deliveries/d1/confirmations", Some(confirmation())).await.0,
        StatusCode::OK
    );
    let (status, problem, headers) = app.call(Method::PATCH, uri, Some(json!({ "deadline": "" }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "a completed delivery cannot be rescheduled");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(problem["status"], 409);
}

#[tokio::test]
async fn confirmations_are_validated() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let uri = "/api/deliveries/d1/confirmations";
    let mut bad = confirmation();
    bad["geoCoordinates"]["longitude"] = json!(181);
    let (status, problem, _) = app.call(Method::POST, uri, Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/geoCoordinates/longitude"].is_string(), "{problem}");
    let mut bad = confirmation();
    bad["dateTime"] = json!("yesterday");
    let (status, problem, _) = app.call(Method::POST, uri, Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/dateTime"].is_string(), "{problem}");
    let mut bad = confirmation();
    bad["confirmationType"] = json!("Smell");
    assert_eq!(app.call(Method::POST, uri, Some(bad)).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Created", "a rejected confirmation changes nothing");
}

#[tokio::test]
async fn wrong_methods_and_bodies_are_problems() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    for (method, uri) in [
        (Method::PUT, "/api/deliveries/public/d1"),
        (Method::DELETE, "/api/deliveries/public/d1"),
        (Method::POST, "/api/deliveries/d1"),
        (Method::GET, "/api/deliveries/d1/confirmations"),
    ] {
        let (status, problem, headers) = app.call(method.clone(), uri, Some(delivery("d1", "o"))).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json", "{method} {uri}");
        assert_eq!(problem["status"], 405);
    }
    let request = Request::post("/api/deliveries/d1/notifymerequests")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"sms\":\"4255550100\"}"))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    let request = Request::patch("/api/deliveries/d1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("not json"))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
}

/// A closure body for `id`, as the workflow sends it before any drone was assigned.
fn closure(id: &str, stage: &str, reason: &str) -> Value {
    let mut delivery = delivery(id, "contoso");
    delivery["droneId"] = json!("");
    json!({ "delivery": delivery, "stage": stage, "reason": reason })
}

#[tokio::test]
async fn a_closure_creates_a_delivery_the_service_does_not_have() {
    let app = spawn_app().await;
    let uri = "/api/deliveries/d1/closure";
    let (status, created, headers) = app.call(Method::PUT, uri, Some(closure("d1", "Failed", "deadline passed"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers[header::LOCATION], "/api/deliveries/d1");
    assert_eq!((created["id"].clone(), created["stage"].clone()), (json!("d1"), json!("Failed")));
    assert_eq!(created["droneId"], "", "no drone was ever assigned");

    let (status, again, headers) = app.call(Method::PUT, uri, Some(closure("d1", "failed", "deadline passed"))).await;
    assert_eq!((status, &again), (StatusCode::OK, &created), "a retried closure answers the same");
    assert!(headers.get(header::LOCATION).is_none());
    let (_, read, _) = app.call(Method::GET, "/api/deliveries/d1", None).await;
    assert_eq!(read, created);

    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Failed");
    assert_eq!(status["reason"], "deadline passed");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.60, "the one event is at the pickup");

    // Failed is final.
    let (code, problem, _) = app.call(Method::DELETE, "/api/deliveries/d1", None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("already Failed"), "{problem}");
    let (code, problem, _) = app.call(Method::PUT, uri, Some(closure("d1", "Cancelled", "too late"))).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(problem["detail"].as_str().unwrap().contains("already Failed"), "{problem}");

    // A cancel that arrived before the request was processed, with the id taken from the path.
    let (status, body, _) = app
        .call(
            Method::PUT,
            "/api/deliveries/d2/closure",
            Some(closure("", "Cancelled", "cancelled before it was scheduled")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["id"].clone(), body["stage"].clone()), (json!("d2"), json!("Cancelled")));
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d2/status", None).await;
    assert_eq!(
        (status["stage"].clone(), status["reason"].clone()),
        (json!("Cancelled"), json!("cancelled before it was scheduled"))
    );
}

#[tokio::test]
async fn a_closure_fails_or_cancels_a_live_delivery() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert!(status.get("reason").is_none(), "a normal delivery has no reason: {status}");
    let change = json!({ "pickup": { "altitude": 0, "latitude": 47.55, "longitude": -122.30 } });
    assert_eq!(app.call(Method::PATCH, "/api/deliveries/d1", Some(change)).await.0, StatusCode::OK);

    let (code, failed, headers) = app
        .call(Method::PUT, "/api/deliveries/d1/closure", Some(closure("d1", "Failed", " no drone available ")))
        .await;
    assert_eq!(code, StatusCode::OK, "{failed}");
    assert!(headers.get(header::LOCATION).is_none());
    assert_eq!(failed["stage"], "Failed");
    assert_eq!(failed["droneId"], "drone-0007", "an existing delivery keeps its fields");
    assert_eq!(failed["pickup"]["latitude"], 47.55);
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Failed");
    assert_eq!(status["reason"], "no drone available", "the reason is trimmed");
    assert_eq!(status["lastKnownLocation"]["latitude"], 47.55);

    app.create("d2", "o").await;
    let (code, cancelled, _) = app
        .call(Method::PUT, "/api/deliveries/d2/closure", Some(closure("d2", "Cancelled", "customer cancelled")))
        .await;
    assert_eq!(code, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["stage"], "Cancelled");
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d2/status", None).await;
    assert_eq!((status["stage"].clone(), status["reason"].clone()), (json!("Cancelled"), json!("customer cancelled")));
    assert_eq!(app.call(Method::DELETE, "/api/deliveries/d2", None).await.0, StatusCode::OK, "cancel stays idempotent");
}

#[tokio::test]
async fn a_closure_after_completion_is_a_conflict() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let (code, _, _) = app.call(Method::POST, "/api/deliveries/d1/confirmations", Some(confirmation())).await;
    assert_eq!(code, StatusCode::OK);
    for stage in ["Failed", "Cancelled"] {
        let (code, problem, headers) =
            app.call(Method::PUT, "/api/deliveries/d1/closure", Some(closure("d1", stage, "gave up"))).await;
        assert_eq!(code, StatusCode::CONFLICT, "{stage}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert!(problem["detail"].as_str().unwrap().contains("already Completed"), "{problem}");
    }
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Completed");
    assert!(status.get("reason").is_none(), "{status}");
}

#[tokio::test]
async fn a_closure_names_bad_fields() {
    let app = spawn_app().await;
    let uri = "/api/deliveries/d1/closure";
    let invalid = async |body: Value| {
        let (status, problem, headers) = app.call(Method::PUT, uri, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        problem["errors"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(invalid(closure("d1", "Completed", "  ")).await, ["/reason", "/stage"]);
    assert_eq!(invalid(closure("d1", "Created", "gave up")).await, ["/stage"]);
    assert_eq!(invalid(closure("d1", "Failed", &"x".repeat(501))).await, ["/reason"]);
    assert_eq!(invalid(closure("d1", "Exploded", "gave up")).await, ["/stage"], "not a stage at all");
    let mut no_reason = closure("d1", "Failed", "");
    no_reason.as_object_mut().unwrap().remove("reason");
    assert_eq!(invalid(no_reason).await, ["/reason"]);
    let mut no_stage = closure("d1", "Failed", "gave up");
    no_stage.as_object_mut().unwrap().remove("stage");
    let (status, problem, _) = app.call(Method::PUT, uri, Some(no_stage)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["/"].as_str().unwrap().contains("stage"), "{problem}");
    let mut bad_delivery = closure("other", "Failed", "gave up");
    bad_delivery["delivery"]["owner"]["userId"] = json!("");
    bad_delivery["delivery"]["pickup"]["latitude"] = json!(100);
    assert_eq!(invalid(bad_delivery).await, ["/delivery/id", "/delivery/owner/userId", "/delivery/pickup/latitude"]);
    assert_eq!(app.call(Method::GET, "/api/deliveries/d1", None).await.0, StatusCode::NOT_FOUND, "nothing was created");

    let (status, _, _) = app.call(Method::PUT, uri, Some(closure("d1", "Failed", &"é".repeat(500)))).await;
    assert_eq!(status, StatusCode::CREATED, "500 characters is the limit, not 500 bytes");
}

#[tokio::test]
async fn a_reopened_delivery_publishes_what_happens_to_it_again_under_new_ids() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let close = |reason: &'static str| {
        app.call(Method::PUT, "/api/deliveries/d1/closure", Some(closure("d1", "Failed", reason)))
    };
    assert_eq!(close("no drone").await.0, StatusCode::OK);
    // Put again (the workflow running its replayed request): reopened; it fails again, is
    // reopened again and this time delivered.
    assert_eq!(app.call(Method::PUT, "/api/deliveries/d1", Some(delivery("d1", "o"))).await.0, StatusCode::NO_CONTENT);
    assert_eq!(close("no drone, again").await.0, StatusCode::OK);
    assert_eq!(close("no drone, again").await.0, StatusCode::OK, "a retried closure publishes the same id");
    assert_eq!(app.call(Method::PUT, "/api/deliveries/d1", Some(delivery("d1", "o"))).await.0, StatusCode::NO_CONTENT);
    let (code, _, _) = app.call(Method::POST, "/api/deliveries/d1/confirmations", Some(confirmation())).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        published_ids(&app).await,
        [
            "d1:DeliveryCreated",
            "d1:DeliveryFailed",
            "d1:DeliveryCreated:1",
            "d1:DeliveryFailed:1",
            "d1:DeliveryCreated:2",
            "d1:DeliveryCompleted:2",
        ],
        "each incarnation's facts are published, none taken for a copy of an earlier one"
    );
    let events = common::published(&*app.events.inner).await;
    let failed_again = events[3].event.finished().unwrap();
    assert_eq!(failed_again.delivery.stage, Some(DeliveryStage::Failed));
    assert_eq!(failed_again.tracking.len(), 4, "the whole history, both incarnations");
    let completed = events[5].event.finished().unwrap();
    assert_eq!(completed.delivery.stage, Some(DeliveryStage::Completed));
}

/// The message ids published so far, in order.
async fn published_ids(app: &TestApp) -> Vec<String> {
    common::published(&*app.events.inner).await.into_iter().map(|e| e.message_id).collect()
}

fn pickup() -> Location {
    Location::new(47.60, -122.33, 0.0)
}

fn dropoff() -> Location {
    Location::new(47.62, -122.35, 0.0)
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

fn location(value: &Value) -> Location {
    serde_json::from_value(value.clone()).unwrap()
}

#[tokio::test]
async fn the_status_follows_the_drone_on_its_flight() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    let flight = common::flight(noon(), pickup(), dropoff(), 40.0);
    assert!(app.store.record_flight("d1", &flight, noon()).await.unwrap());
    let status = async || app.call(Method::GET, "/api/deliveries/d1/status", None).await.1;

    // Leaving the depot: the planned times, as the drone keeps its speed.
    let at_departure = status().await;
    assert_eq!(at_departure["stage"], "Created", "the stage follows the drone's events, not the clock");
    assert_near(location(&at_departure["lastKnownLocation"]), flight.depot);
    assert_eq!(
        (time(&at_departure["pickupETA"]), time(&at_departure["deliveryETA"])),
        (flight.pickup_at, flight.dropoff_at)
    );

    // Halfway to the pickup: between the depot and the pickup, nearer each minute; the time left shrinks.
    let mut previous: Option<(f64, chrono::Duration)> = None;
    for step in 1..=4 {
        app.clock.set(flight.departed_at + (flight.pickup_at - flight.departed_at) * step / 5);
        let now = status().await;
        let here = location(&now["lastKnownLocation"]);
        let miles = miles_between(here, flight.pickup);
        let left = time(&now["pickupETA"]) - app.clock_now();
        assert_eq!(time(&now["pickupETA"]), flight.pickup_at);
        if let Some((miles_before, left_before)) = previous {
            assert!(miles < miles_before && left < left_before, "step {step}: {miles} mi, {left} left");
        }
        previous = Some((miles, left));
    }

    // At the pickup time the drone is at the pickup; once it reports the package on board
    // there is no pickup ETA any more.
    app.clock.set(flight.pickup_at);
    assert_near(location(&status().await["lastKnownLocation"]), pickup());
    app.store.advance("d1", Action::HeadToPickup, flight.depot, flight.departed_at).await.unwrap();
    app.store.advance("d1", Action::HeadToDropoff, pickup(), flight.pickup_at).await.unwrap();
    app.clock.set(flight.pickup_at + (flight.dropoff_at - flight.pickup_at) / 2);
    let on_board = status().await;
    assert_eq!(on_board["stage"], "HeadedToDropoff");
    assert_eq!(on_board["pickupETA"], Value::Null);
    assert_eq!(time(&on_board["deliveryETA"]), flight.dropoff_at);
    let here = location(&on_board["lastKnownLocation"]);
    assert!(miles_between(here, pickup()) > 0.1 && miles_between(here, dropoff()) > 0.1, "{here:?}");

    // Delivered: where it was confirmed, and no ETAs.
    let (code, _, _) = app.call(Method::POST, "/api/deliveries/d1/confirmations", Some(confirmation())).await;
    assert_eq!(code, StatusCode::OK);
    let done = status().await;
    assert_eq!(done["stage"], "Completed");
    assert_near(location(&done["lastKnownLocation"]), Location::new(47.62, -122.35, 0.0));
    assert_eq!((done["pickupETA"].clone(), done["deliveryETA"].clone()), (Value::Null, Value::Null));
}

#[tokio::test]
async fn the_etas_of_a_drone_behind_its_plan_shrink_as_it_flies() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    // Planned at 40 mph but flying at 20: twice as long as planned on each leg.
    let mut flight = common::flight(noon(), pickup(), dropoff(), 40.0);
    flight.speed_mph = 20.0;
    app.store.record_flight("d1", &flight, noon()).await.unwrap();
    let mut previous: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for step in 0..=10 {
        app.clock.set(flight.departed_at + (flight.dropoff_at - flight.departed_at) * step / 10);
        let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
        let delivery_eta = time(&status["deliveryETA"]);
        let pickup_eta = if status["pickupETA"].is_null() { None } else { Some(time(&status["pickupETA"])) };
        assert!(delivery_eta >= flight.dropoff_at, "never earlier than planned");
        if let Some((pickup_before, delivery_before)) = previous {
            assert!(delivery_eta <= delivery_before, "step {step}");
            if let Some(pickup_eta) = pickup_eta {
                assert!(pickup_eta <= pickup_before, "step {step}");
            }
        }
        previous = Some((pickup_eta.unwrap_or(flight.pickup_at), delivery_eta));
        if step == 0 {
            let planned = flight.dropoff_at - flight.departed_at;
            assert!(((delivery_eta - flight.departed_at) - planned * 2).num_milliseconds().abs() <= 2);
        }
    }
    assert_eq!(previous.unwrap().1, flight.dropoff_at, "at the planned drop-off time the drone is there");
}

/// The same place, but for the last digit JSON may round (its floats do not round-trip exactly).
fn assert_near(a: Location, b: Location) {
    assert!(miles_between(a, b) < 1e-9, "{a:?} is not {b:?}");
}

fn miles_between(a: Location, b: Location) -> f64 {
    platform::geo::distance_miles(
        platform::geo::Point::new(a.latitude, a.longitude),
        platform::geo::Point::new(b.latitude, b.longitude),
    )
}

impl TestApp {
    fn clock_now(&self) -> DateTime<Utc> {
        platform::clock::Clock::now(&self.clock)
    }
}

#[tokio::test]
async fn a_cancel_after_pickup_is_refused_and_shown_once() {
    let app = spawn_app().await;
    app.create("d1", "o").await;
    app.store.advance("d1", Action::HeadToDropoff, pickup(), noon()).await.unwrap();
    for _ in 0..3 {
        let (code, problem, headers) = app.call(Method::DELETE, "/api/deliveries/d1", None).await;
        assert_eq!(code, StatusCode::CONFLICT, "{problem}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(problem["detail"], delivery::domain::PICKED_UP);
    }
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "HeadedToDropoff");
    assert_eq!(status["reason"], format!("cancel refused: {}", delivery::domain::PICKED_UP));
    let events = app.store.tracking("d1").await.unwrap();
    assert_eq!(events.len(), 3, "created, on board, one refusal however often it is asked: {events:?}");
    // The workflow's closing cancel is refused the same way and adds nothing.
    let (code, _, _) =
        app.call(Method::PUT, "/api/deliveries/d1/closure", Some(closure("d1", "Cancelled", "by the customer"))).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(app.store.tracking("d1").await.unwrap().len(), 3);
    // Nothing was published for a refusal; delivered, the note is history.
    assert_eq!(published_ids(&app).await, ["d1:DeliveryCreated"]);
    assert_eq!(
        app.call(Method::POST, "/api/deliveries/d1/confirmations", Some(confirmation())).await.0,
        StatusCode::OK
    );
    let (_, status, _) = app.call(Method::GET, "/api/deliveries/d1/status", None).await;
    assert_eq!(status["stage"], "Completed");
    assert!(status.get("reason").is_none(), "{status}");
}

#[tokio::test]
async fn every_change_is_published_once_with_what_it_changed() {
    let app = spawn_app().await;
    app.create("d1", "contoso").await;
    assert_eq!(
        app.call(Method::PUT, "/api/deliveries/d1", Some(delivery("d1", "contoso"))).await.0,
        StatusCode::NO_CONTENT
    );
    let change = json!({ "deadline": "2026-03-16T00:00:00Z" });
    for _ in 0..2 {
        assert_eq!(app.call(Method::PATCH, "/api/deliveries/d1", Some(change.clone())).await.0, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(app.call(Method::DELETE, "/api/deliveries/d1", None).await.0, StatusCode::OK);
    }
    app.create("d2", "contoso").await;
    for _ in 0..2 {
        assert_eq!(
            app.call(Method::POST, "/api/deliveries/d2/confirmations", Some(confirmation())).await.0,
            StatusCode::OK
        );
    }
    let uri = "/api/deliveries/d3/closure";
    assert_eq!(app.call(Method::PUT, uri, Some(closure("d3", "Failed", "no drone"))).await.0, StatusCode::CREATED);
    assert_eq!(app.call(Method::PUT, uri, Some(closure("d3", "Failed", "no drone"))).await.0, StatusCode::OK);
    app.create("d4", "contoso").await;
    let uri = "/api/deliveries/d4/closure";
    assert_eq!(app.call(Method::PUT, uri, Some(closure("d4", "Cancelled", "by the customer"))).await.0, StatusCode::OK);

    let events = common::published(&*app.events.inner).await;
    let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "d1:DeliveryCreated",
            "d1:DeliveryRescheduled:1",
            "d1:DeliveryRescheduled:2",
            "d1:DeliveryCancelled",
            "d2:DeliveryCreated",
            "d2:DeliveryCompleted",
            "d3:DeliveryFailed",
            "d4:DeliveryCreated",
            "d4:DeliveryCancelled",
        ],
        "retried calls re-publish, and the stream keeps one of each"
    );
    for event in &events {
        assert_eq!(
            event.message_id,
            format!("{}:{}", event.delivery_id, event.event.kind()) + suffix(&event.message_id)
        );
    }
    let DeliveryEvent::DeliveryCreated(created) = &events[0].event else { panic!("{:?}", events[0]) };
    assert_eq!((created.id.as_str(), created.stage), ("d1", Some(DeliveryStage::Created)));
    let DeliveryEvent::DeliveryRescheduled(rescheduled) = &events[2].event else { panic!("{:?}", events[2]) };
    assert_eq!(rescheduled.deadline, "2026-03-16T00:00:00Z");
    let cancelled = events[3].event.finished().unwrap();
    assert_eq!(cancelled.delivery.stage, Some(DeliveryStage::Cancelled));
    let stages: Vec<_> = cancelled.tracking.iter().map(|t| t.stage).collect();
    assert_eq!(
        stages,
        [DeliveryStage::Created, DeliveryStage::Rescheduled, DeliveryStage::Rescheduled, DeliveryStage::Cancelled]
    );
    assert_eq!(cancelled.finished_at, cancelled.tracking[3].at);
    let completed = events[5].event.finished().unwrap();
    assert_eq!(completed.delivery.stage, Some(DeliveryStage::Completed));
    let confirmation = completed.confirmation.as_ref().expect("a completion carries its confirmation");
    assert_eq!(confirmation.confirmation_blob, "aGVsbG8=");
    let failed = events[6].event.finished().unwrap();
    assert_eq!(
        (failed.delivery.stage, failed.tracking[0].reason.as_deref()),
        (Some(DeliveryStage::Failed), Some("no drone"))
    );
    assert_eq!(failed.confirmation, None);
}

/// The `:n` of a reschedule's message id.
fn suffix(message_id: &str) -> &str {
    if message_id.contains(":DeliveryRescheduled:") { &message_id[message_id.rfind(':').unwrap()..] } else { "" }
}

#[tokio::test]
async fn a_change_whose_event_cannot_be_published_is_a_503_and_its_retry_publishes() {
    let app = spawn_app().await;
    app.events.set_down(true);
    let (code, problem, headers) = app.call(Method::PUT, "/api/deliveries/d1", Some(delivery("d1", "o"))).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(app.call(Method::GET, "/healthz/ready", None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (code, _, _) = app.call(Method::DELETE, "/api/deliveries/d1", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "the cancel is stored, its event is not");
    assert_eq!(published_ids(&app).await, Vec::<String>::new());

    // The workflow retries its idempotent calls: each finds its change made and publishes it.
    app.events.set_down(false);
    assert_eq!(app.call(Method::PUT, "/api/deliveries/d1", Some(delivery("d1", "o"))).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::DELETE, "/api/deliveries/d1", None).await.0, StatusCode::OK);
    assert_eq!(published_ids(&app).await, ["d1:DeliveryCreated", "d1:DeliveryCancelled"]);
    assert_eq!(app.call(Method::GET, "/healthz/ready", None).await.0, StatusCode::OK);
}
