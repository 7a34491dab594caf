//! Gateway aggregation: one invoice from the delivery summary, the package summary and the
//! drone utilization, asked in parallel as the caller; a failing part is named.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Accounts, Seen};
use gateway::{GatewayOptions, UpstreamUrls};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

type Calls = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A service answering `path_start` with `answer` (status, body) after `delay`, recording the
/// URI and the identity account it was called with.
async fn figure(path_start: &'static str, status: u16, answer: Value, delay: Duration, calls: Calls) -> String {
    let app = Router::new().fallback(move |request: Request| {
        let (answer, calls) = (answer.clone(), calls.clone());
        async move {
            let account = request.headers().get("x-fabrikam-account").map(|v| v.to_str().unwrap().to_owned());
            calls.lock().unwrap().push((request.uri().to_string(), account));
            tokio::time::sleep(delay).await;
            assert!(request.uri().path().starts_with(path_start), "{}", request.uri());
            (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
        }
    });
    common::serve(app).await
}

async fn invoice(router: &Router, key: &str, query: &str) -> (StatusCode, HeaderMap, Value) {
    let request = Request::builder()
        .uri(format!("/v0.1.0/api/invoices?{query}"))
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

struct Parts {
    delivery: String,
    package: String,
    dronescheduler: String,
}

async fn gateway(parts: Parts) -> (Router, String) {
    let accounts = Accounts::default();
    let key = accounts.issue("k1", "acc-1", Some("owner-1"));
    let seen = Seen::default();
    let others = common::upstreams(&seen, accounts.start().await).await;
    let upstreams = UpstreamUrls {
        delivery_url: parts.delivery,
        package_url: parts.package,
        dronescheduler_url: parts.dronescheduler,
        ..others
    };
    (common::router(upstreams, &GatewayOptions { timeout_ms: 1000, ..Default::default() }), key)
}

#[tokio::test]
async fn an_invoice_prices_the_three_figures_asked_in_parallel_as_the_caller() {
    let calls = Calls::default();
    let slow = Duration::from_millis(300);
    let parts = Parts {
        delivery: figure("/api/deliveries/summary", 200, json!({"count": 4}), slow, calls.clone()).await,
        package: figure("/api/packages/summary/", 200, json!({"totalWeight": 10.5}), slow, calls.clone()).await,
        dronescheduler: figure(
            "/api/dronedeliveries/utilization",
            200,
            json!({"traveledMiles": 20.25, "assignedHours": 1.5}),
            slow,
            calls.clone(),
        )
        .await,
    };
    let (router, key) = gateway(parts).await;
    let started = std::time::Instant::now();
    let (status, _, invoice) = invoice(&router, &key, "ownerId=owner-1&year=2026&month=11").await;
    assert_eq!(status, StatusCode::OK, "{invoice}");
    assert!(started.elapsed() < Duration::from_millis(800), "the parts are asked in parallel");
    assert_eq!(invoice["deliveries"], 4);
    assert_eq!(invoice["totalPackageWeight"], 10.5);
    assert_eq!(invoice["traveledMiles"], 20.25);
    assert_eq!(invoice["assignedHours"], 1.5);
    // Default prices: 5.00 per delivery, 0.50 per kg, 1.20 per mile, 10.00 per drone hour.
    let amounts: Vec<f64> =
        invoice["lines"].as_array().unwrap().iter().map(|l| l["amount"].as_f64().unwrap()).collect();
    assert_eq!(amounts, vec![20.0, 5.25, 24.3, 15.0]);
    assert_eq!(invoice["total"], 64.55);
    assert_eq!(invoice["currency"], "USD");

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    let uris: Vec<&str> = calls.iter().map(|(uri, _)| uri.as_str()).collect();
    assert!(uris.contains(&"/api/deliveries/summary?ownerId=owner-1&year=2026&month=11"), "{uris:?}");
    assert!(uris.contains(&"/api/packages/summary/owner-1?year=2026&month=11"), "{uris:?}");
    assert!(uris.contains(&"/api/dronedeliveries/utilization?ownerId=owner-1&year=2026&month=11"), "{uris:?}");
    assert!(calls.iter().all(|(_, account)| account.as_deref() == Some("acc-1")), "every part is asked as the caller");
}

#[tokio::test]
async fn a_month_without_flights_bills_no_flying() {
    let calls = Calls::default();
    let parts = Parts {
        delivery: figure("/api/", 200, json!({"count": 0}), Duration::ZERO, calls.clone()).await,
        package: figure("/api/", 200, json!({"totalWeight": 0.0}), Duration::ZERO, calls.clone()).await,
        dronescheduler: figure("/api/", 404, json!({"status": 404}), Duration::ZERO, calls.clone()).await,
    };
    let (router, key) = gateway(parts).await;
    let (status, _, invoice) = invoice(&router, &key, "ownerId=o&year=2026&month=1").await;
    assert_eq!(status, StatusCode::OK, "{invoice}");
    assert_eq!(invoice["total"], 0.0);
}

#[tokio::test]
async fn a_part_that_is_down_is_a_503_and_a_bad_answer_a_502_naming_the_part() {
    let calls = Calls::default();
    let ok = |path| figure(path, 200, json!({"count": 1, "totalWeight": 1.0}), Duration::ZERO, calls.clone());
    let parts = Parts {
        delivery: ok("/api/").await,
        package: common::dead_url(),
        dronescheduler: figure(
            "/api/",
            200,
            json!({"traveledMiles": 1.0, "assignedHours": 1.0}),
            Duration::ZERO,
            calls.clone(),
        )
        .await,
    };
    let (router, key) = gateway(parts).await;
    let (status, headers, problem) = invoice(&router, &key, "ownerId=o&year=2026&month=1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(headers["retry-after"], "1");
    assert!(problem["detail"].as_str().unwrap().contains("packages"), "{problem}");
    assert!(problem["errors"]["packages"].as_str().unwrap().contains("package service"), "{problem}");

    let parts = Parts {
        delivery: figure("/api/", 500, json!({"status": 500}), Duration::ZERO, calls.clone()).await,
        package: ok("/api/").await,
        dronescheduler: figure(
            "/api/",
            200,
            json!({"traveledMiles": 1.0, "assignedHours": 1.0}),
            Duration::ZERO,
            calls.clone(),
        )
        .await,
    };
    let (router, key) = gateway(parts).await;
    let (status, _, problem) = invoice(&router, &key, "ownerId=o&year=2026&month=1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
    assert!(problem["errors"]["deliveries"].is_string(), "{problem}");
}

#[tokio::test]
async fn bad_invoice_queries_name_the_field_and_need_a_credential() {
    let calls = Calls::default();
    let any = |_: ()| figure("/api/", 200, json!({}), Duration::ZERO, calls.clone());
    let parts = Parts { delivery: any(()).await, package: any(()).await, dronescheduler: any(()).await };
    let (router, key) = gateway(parts).await;
    let (status, _, problem) = invoice(&router, &key, "ownerId=o&year=2026&month=13").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem.to_string().contains("month"));
    let (status, _, _) = invoice(&router, "fdk_nobody_x", "ownerId=o&year=2026&month=1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(calls.lock().unwrap().is_empty());
}
