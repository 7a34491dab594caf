//! The gateway routes the public API to the right service and path, under both prefixes, and
//! nothing else (every caller here holds a valid API key; see auth.rs for the ones that do not).

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use common::{Accounts, Seen};
use gateway::{GatewayOptions, UpstreamUrls};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The gateway in front of echo upstreams, and an API key it accepts.
async fn gateway() -> (Router, Seen, String) {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let key = accounts.issue("k1", "acc-1", Some("user-1"));
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    (common::router(upstreams, &GatewayOptions::default()), seen, key)
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    call_as(router, "fdk_k1_s3cr3tk1", method, uri, body).await
}

async fn call_as(
    router: &Router,
    key: &str,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("idempotency-key", "k1")
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
}

/// Each public route: method, path under the prefix, upstream, and the path it reaches there.
fn public_routes() -> Vec<(Method, &'static str, &'static str, &'static str)> {
    vec![
        (Method::POST, "/deliveryrequests", "ingestion", "/api/deliveryrequests"),
        (Method::PATCH, "/deliveryrequests/d1", "ingestion", "/api/deliveryrequests/d1"),
        (Method::DELETE, "/deliveryrequests/d1", "ingestion", "/api/deliveryrequests/d1"),
        (Method::GET, "/deliveries/d1", "delivery", "/api/deliveries/public/d1"),
        (Method::GET, "/deliveries/d1/status", "delivery", "/api/deliveries/d1/status"),
        (Method::GET, "/deliveries/d1/owner", "delivery", "/api/deliveries/d1/owner"),
        (Method::POST, "/deliveries/d1/notifymerequests", "delivery", "/api/deliveries/d1/notifymerequests"),
        (
            Method::GET,
            "/deliveries/summary?ownerId=o&year=2026&month=1",
            "delivery",
            "/api/deliveries/summary?ownerId=o&year=2026&month=1",
        ),
        (
            Method::GET,
            "/dronedeliveries/utilization?ownerId=o&year=2026&month=1",
            "dronescheduler",
            "/api/dronedeliveries/utilization?ownerId=o&year=2026&month=1",
        ),
        (Method::GET, "/packages/summary/o?year=2026&month=1", "package", "/api/packages/summary/o?year=2026&month=1"),
        (Method::GET, "/deliveryhistory/d1", "deliveryhistory", "/api/deliveryhistory/d1"),
        (
            Method::GET,
            "/deliveryhistory?ownerId=o&limit=5",
            "deliveryhistory",
            "/api/deliveryhistory?ownerId=o&limit=5",
        ),
    ]
}

/// Every public route reaches its upstream's path under both prefixes, body and headers intact.
async fn assert_public_routes_reach_their_service(router: &Router) {
    for prefix in ["/api", "/v0.1.0/api"] {
        for (method, path, upstream, target) in &public_routes() {
            let body = (method == Method::POST || method == Method::PATCH).then_some("{\"a\":1}");
            let (status, reply, _) = call(router, method.clone(), &format!("{prefix}{path}"), body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{method} {prefix}{path}");
            assert_eq!(reply["upstream"], *upstream, "{method} {prefix}{path}");
            assert_eq!(reply["uri"], *target, "{method} {prefix}{path}");
            if let Some(body) = body {
                assert_eq!(reply["body"], body);
            }
            assert_eq!(reply["idempotencyKey"], "k1");
            assert_eq!(reply["account"], "acc-1", "the signed identity goes along");
            assert!(reply["signature"].is_string());
        }
    }
}

#[tokio::test]
async fn public_routes_reach_their_service_under_both_prefixes() {
    let (router, _, _) = gateway().await;
    assert_public_routes_reach_their_service(&router).await;
}

#[tokio::test]
async fn upstreams_served_in_process_answer_as_over_http() {
    let seen = Seen::default();
    let accounts = Accounts::default();
    accounts.issue("k1", "acc-1", Some("user-1"));
    let router = common::in_process_router(&seen, accounts.start().await, &GatewayOptions::default());
    assert_public_routes_reach_their_service(&router).await;
    let (_, _, headers) = call(&router, Method::POST, "/v0.1.0/api/deliveryrequests", Some("{}")).await;
    assert_eq!(headers[header::LOCATION], "/v0.1.0/api/deliveries/abc");
    assert_eq!(headers[header::RETRY_AFTER], "3");
    let expected = public_routes().len() * 2 + 1;
    assert_eq!(seen.lock().unwrap().len(), expected, "every call reached the in-process upstream");
}

#[tokio::test]
async fn internal_routes_are_not_reachable() {
    let (router, seen, _) = gateway().await;
    let internal = [
        (Method::PUT, "/api/deliveries/d1"),
        (Method::DELETE, "/api/deliveries/d1"),
        (Method::PATCH, "/api/deliveries/d1"),
        (Method::POST, "/api/deliveries/d1/confirmations"),
        (Method::GET, "/api/deliveries/public/d1"),
        (Method::PUT, "/api/packages/p1"),
        (Method::GET, "/api/packages/p1"),
        (Method::PUT, "/api/dronedeliveries/d1"),
        (Method::DELETE, "/api/dronedeliveries/d1"),
        (Method::GET, "/api/drones"),
        (Method::GET, "/v0.1.0/api/drones/drone-0001"),
        (Method::POST, "/api/internal/credentials/verify"),
        (Method::GET, "/api/internal/accounts/a1"),
    ];
    for (method, path) in internal {
        let (status, problem, headers) = call(&router, method.clone(), path, Some("{}")).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} gave {status}"
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json", "{method} {path}");
        assert_eq!(problem["status"], status.as_u16());
    }
    assert!(seen.lock().unwrap().is_empty(), "an internal route reached a service: {:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn answers_keep_their_headers_and_location_follows_the_prefix() {
    let (router, _, _) = gateway().await;
    let (_, _, headers) = call(&router, Method::POST, "/api/deliveryrequests", Some("{}")).await;
    assert_eq!(headers[header::LOCATION], "/api/deliveries/abc");
    assert_eq!(headers[header::RETRY_AFTER], "3");
    let (_, _, headers) = call(&router, Method::POST, "/v0.1.0/api/deliveryrequests", Some("{}")).await;
    assert_eq!(headers[header::LOCATION], "/v0.1.0/api/deliveries/abc");
}

#[tokio::test]
async fn an_unreachable_service_is_a_502_problem() {
    let dead = common::dead_url();
    let accounts = Accounts::default();
    accounts.issue("k1", "acc-1", None);
    let upstreams = UpstreamUrls {
        ingestion_url: dead.clone(),
        delivery_url: dead.clone(),
        package_url: dead.clone(),
        dronescheduler_url: dead.clone(),
        deliveryhistory_url: dead,
        account_url: accounts.start().await,
    };
    let options = GatewayOptions { timeout_ms: 2000, ..GatewayOptions::default() };
    let router = common::router(upstreams, &options);
    let (status, problem, headers) = call(&router, Method::GET, "/api/deliveries/d1", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(problem["detail"].as_str().unwrap().contains("delivery"));
}

#[tokio::test]
async fn oversized_bodies_stop_at_the_gateway() {
    let (router, seen, _) = gateway().await;
    let huge = format!("{{\"tag\":\"{}\"}}", "x".repeat(100 * 1024));
    let (status, problem, _) = call(&router, Method::POST, "/api/deliveryrequests", Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["status"], 413);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn over_capacity_requests_are_shed_with_retry_after() {
    let slow = Router::new().fallback(|| async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        StatusCode::ACCEPTED
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, slow).await.unwrap() });
    let accounts = Accounts::default();
    accounts.issue("k1", "acc-1", None);
    let upstreams = UpstreamUrls {
        ingestion_url: url.clone(),
        delivery_url: url.clone(),
        package_url: url.clone(),
        dronescheduler_url: url.clone(),
        deliveryhistory_url: url,
        account_url: accounts.start().await,
    };
    let options = GatewayOptions { max_in_flight: 1, queue_wait_ms: 50, ..GatewayOptions::default() };
    let router = common::router(upstreams, &options);
    let (first, second) = tokio::join!(
        call(&router, Method::GET, "/api/deliveries/a", None),
        call(&router, Method::GET, "/api/deliveries/b", None)
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::SERVICE_UNAVAILABLE]);
    let shed = if first.0 == StatusCode::SERVICE_UNAVAILABLE { first } else { second };
    assert_eq!(shed.2[header::RETRY_AFTER], "1");
    assert_eq!(shed.2[header::CONTENT_TYPE], "application/problem+json");
}

#[tokio::test]
async fn admin_routes_reach_the_account_service_with_the_operator_token_and_no_gateway_auth() {
    // The account upstream is an echo server here, to see what the admin call carried.
    let seen = Seen::default();
    let accounts = Accounts::default();
    let mut upstreams = common::upstreams(&seen, accounts.start().await).await;
    let admin = common::echo_upstream("account", seen.clone()).await;
    upstreams.account_url = admin;
    let router = common::router(upstreams, &GatewayOptions::default());
    for prefix in ["/api", "/v0.1.0/api"] {
        let (status, reply, _) =
            call_as(&router, "fop_op1_secret", Method::POST, &format!("{prefix}/admin/accounts/a1/keys"), Some("{}"))
                .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(reply["upstream"], "account");
        assert_eq!(reply["uri"], "/api/admin/accounts/a1/keys");
        assert_eq!(reply["authorization"], "Bearer fop_op1_secret");
        assert_eq!(reply["account"], Value::Null, "no identity is forwarded on unauthenticated routes");
    }
    assert_eq!(*accounts.calls.lock().unwrap(), 0, "admin routes are not authenticated by the gateway");
}
