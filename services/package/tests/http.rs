//! The package service's HTTP API, route by route, against a real SQLite store.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::TimeZone;
use http_body_util::BodyExt;
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use serde_json::{Value, json};
use tower::ServiceExt;

struct TestApp {
    router: Router,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let url = format!("sqlite://{}", dir.path().join("package.db").display());
    let store = package::open_store(&url, Arc::new(clock.clone())).await.unwrap();
    TestApp { router: package::router(store, &CommonArgs::default()), clock, _dir: dir }
}

impl TestApp {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, HeaderMap) {
        platform::testing::call(&self.router, method, uri, body).await
    }
}

fn package(weight: f64) -> Value {
    json!({ "size": "Small", "weight": weight, "tag": "fragile", "ownerId": "contoso" })
}

#[tokio::test]
async fn put_creates_then_replaces() {
    let app = spawn_app().await;
    let (status, body, headers) = app.call(Method::PUT, "/api/packages/p1", Some(package(2.5))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["id"], "p1");
    assert_eq!(body["size"], "small");
    assert_eq!(headers[header::LOCATION], "/api/packages/p1");
    let (status, body, _) = app.call(Method::PUT, "/api/packages/p1", Some(package(3.0))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body, _) = app.call(Method::GET, "/api/packages/p1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "id": "p1", "size": "small", "weight": 3.0, "tag": "fragile", "ownerId": "contoso" }));
}

#[tokio::test]
async fn concurrent_puts_create_once() {
    let app = spawn_app().await;
    let calls = (0..10).map(|_| app.call(Method::PUT, "/api/packages/same", Some(package(1.0))));
    let statuses: Vec<StatusCode> = futures::future::join_all(calls).await.into_iter().map(|r| r.0).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
}

#[tokio::test]
async fn put_without_id_generates_one() {
    let app = spawn_app().await;
    let (status, body, _) = app.call(Method::PUT, "/api/packages", Some(package(1.0))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap();
    assert_eq!(app.call(Method::GET, &format!("/api/packages/{id}"), None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn get_unknown_is_404_problem() {
    let app = spawn_app().await;
    let (status, body, headers) = app.call(Method::GET, "/api/packages/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn bad_fields_are_named() {
    let app = spawn_app().await;
    let (status, body, _) =
        app.call(Method::PUT, "/api/packages/p1", Some(json!({ "size": "enormous", "weight": 0 }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["/size"].is_string(), "{body}");
    assert!(body["errors"]["/weight"].is_string(), "{body}");
    let (status, body, _) =
        app.call(Method::PUT, "/api/packages/p1", Some(json!({ "size": "small", "weight": "x" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["/weight"].is_string(), "{body}");
}

#[tokio::test]
async fn malformed_json_and_wrong_media_type() {
    let app = spawn_app().await;
    let request = Request::put("/api/packages/p1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"size\": "))
        .unwrap();
    assert_eq!(app.router.clone().oneshot(request).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let request =
        Request::put("/api/packages/p1").header(header::CONTENT_TYPE, "text/plain").body(Body::from("hi")).unwrap();
    assert_eq!(app.router.clone().oneshot(request).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let huge = json!({ "size": "small", "weight": 1, "tag": "x".repeat(100 * 1024) });
    let (status, body, _) = app.call(Method::PUT, "/api/packages/p1", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["status"], 413);
}

#[tokio::test]
async fn patch_updates_or_404s() {
    let app = spawn_app().await;
    app.call(Method::PUT, "/api/packages/p1", Some(package(1.0))).await;
    let (status, _, _) = app.call(Method::PATCH, "/api/packages/p1", Some(json!({ "weight": 4.5 }))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::GET, "/api/packages/p1", None).await.1["weight"], 4.5);
    let (status, _, _) = app.call(Method::PATCH, "/api/packages/none", Some(json!({ "weight": 4.5 }))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app.call(Method::PATCH, "/api/packages/p1", Some(json!({ "weight": -1 }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn summary_sums_the_owners_month() {
    let app = spawn_app().await;
    app.call(Method::PUT, "/api/packages/march-1", Some(package(2.0))).await;
    app.call(Method::PUT, "/api/packages/march-2", Some(package(3.5))).await;
    app.call(
        Method::PUT,
        "/api/packages/other",
        Some(json!({ "size": "large", "weight": 100, "ownerId": "fabrikam" })),
    )
    .await;
    app.clock.advance(chrono::Duration::days(31));
    app.call(Method::PUT, "/api/packages/april-1", Some(package(7.0))).await;

    let (status, body, _) = app.call(Method::GET, "/api/packages/summary/contoso?year=2026&month=3", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "totalWeight": 5.5 }));
    let (_, body, _) = app.call(Method::GET, "/api/packages/summary/contoso?year=2026&month=4", None).await;
    assert_eq!(body, json!({ "totalWeight": 7.0 }));
    let (_, body, _) = app.call(Method::GET, "/api/packages/summary/nobody?year=2026&month=3", None).await;
    assert_eq!(body, json!({ "totalWeight": 0.0 }));
    let (status, body, _) = app.call(Method::GET, "/api/packages/summary/contoso?year=2026&month=13", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["month"].is_string());
}

#[tokio::test]
async fn health_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.call(Method::GET, "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/healthz/live", None).await.0, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/healthz/ready", None).await.0, StatusCode::OK);
    app.call(Method::GET, "/api/packages/x", None).await;
    let response = app.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("http_server_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/packages/{id}\""), "{text}");
}

#[tokio::test]
async fn unknown_method_is_405_problem() {
    let app = spawn_app().await;
    let (status, body, _) = app.call(Method::DELETE, "/api/packages/p1", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["status"], 405);
}
