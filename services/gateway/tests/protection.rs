//! Rate limits per account and per client IP, IP lists, header size, CORS, compression and the
//! internal port for health and metrics, on a gateway serving a real socket.

mod common;

use axum::http::StatusCode;
use common::{Accounts, Seen};
use gateway::{GatewayOptions, ProtectionOptions};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn a_burst_over_the_account_limit_gets_429_with_retry_after_and_others_are_unaffected() {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let greedy = accounts.issue("k1", "acc-greedy", None);
    let polite = accounts.issue("k2", "acc-polite", None);
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let protection = ProtectionOptions {
        rate_limit_per_credential: 1,
        rate_limit_credential_burst: 5,
        ..ProtectionOptions::default()
    };
    let (addr, shutdown) = common::start_gateway(upstreams, GatewayOptions { protection, ..Default::default() }).await;
    let url = format!("http://{addr}/api/deliveries/d1");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let response = client().get(&url).bearer_auth(&greedy).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(response.headers()["content-type"], "application/problem+json");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{statuses:?}");
    let retry_after: u64 = retry_after.expect("a Retry-After header").parse().unwrap();
    assert!((1..=2).contains(&retry_after));
    let other = client().get(&url).bearer_auth(&polite).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::ACCEPTED, "another account keeps its own budget");
    shutdown.cancel();
}

#[tokio::test]
async fn the_ip_limit_applies_before_authentication_and_per_client_address() {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let protection = ProtectionOptions {
        rate_limit_per_ip: 1,
        rate_limit_ip_burst: 3,
        trust_forwarded_for: true,
        ..ProtectionOptions::default()
    };
    let (addr, shutdown) = common::start_gateway(upstreams, GatewayOptions { protection, ..Default::default() }).await;
    let url = format!("http://{addr}/api/deliveries/d1");
    let from = |ip: &str| client().get(&url).header("x-forwarded-for", ip).bearer_auth("fdk_unknown_key");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(from("203.0.113.7").send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429, 429]);
    assert_eq!(*accounts.calls.lock().unwrap(), 3, "the limited requests never reached the account service");
    assert_eq!(from("203.0.113.8").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    shutdown.cancel();
}

#[tokio::test]
async fn denied_addresses_get_403_and_oversized_headers_get_431() {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let key = accounts.issue("k1", "acc-1", None);
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let protection = ProtectionOptions {
        deny_ips: vec!["127.0.0.0/8".parse().unwrap()],
        max_header_bytes: 2048,
        ..ProtectionOptions::default()
    };
    let (addr, shutdown) = common::start_gateway(upstreams, GatewayOptions { protection, ..Default::default() }).await;
    let response = client().get(format!("http://{addr}/api/deliveries/d1")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    shutdown.cancel();

    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let protection = ProtectionOptions {
        allow_ips: vec!["127.0.0.1/32".parse().unwrap()],
        max_header_bytes: 2048,
        ..ProtectionOptions::default()
    };
    let (addr, shutdown) = common::start_gateway(upstreams, GatewayOptions { protection, ..Default::default() }).await;
    let url = format!("http://{addr}/api/deliveries/d1");
    assert_eq!(client().get(&url).bearer_auth(&key).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let big = "x".repeat(4096);
    let response = client().get(&url).bearer_auth(&key).header("x-padding", big).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(seen.lock().unwrap().len() == 1, "only the allowed, small request was forwarded");
    shutdown.cancel();
}

#[tokio::test]
async fn cors_preflight_is_answered_for_configured_origins_and_answers_are_compressed() {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let key = accounts.issue("k1", "acc-1", None);
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let protection =
        ProtectionOptions { cors_origins: vec!["https://app.fabrikam.example".to_owned()], ..Default::default() };
    let (addr, shutdown) = common::start_gateway(upstreams, GatewayOptions { protection, ..Default::default() }).await;
    let url = format!("http://{addr}/api/deliveryrequests");
    let preflight = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.fabrikam.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.fabrikam.example");
    let other = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let padded = format!("{{\"note\":\"{}\"}}", "compressible ".repeat(200));
    let response = client()
        .post(&url)
        .bearer_auth(&key)
        .header("accept-encoding", "gzip")
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    shutdown.cancel();
}

#[tokio::test]
async fn with_an_internal_port_health_and_metrics_leave_the_public_one() {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let internal = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = GatewayOptions { internal_listen: Some(internal), ..Default::default() };
    let (addr, shutdown) = common::start_gateway(upstreams, options).await;
    let mut internal_up = false;
    for _ in 0..50 {
        if client().get(format!("http://{internal}/healthz/live")).send().await.is_ok() {
            internal_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(internal_up, "the internal listener answers");
    for path in ["/healthz", "/healthz/ready", "/metrics"] {
        let public = client().get(format!("http://{addr}{path}")).send().await.unwrap();
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "{path} on the public port");
        let private = client().get(format!("http://{internal}{path}")).send().await.unwrap();
        assert_eq!(private.status(), StatusCode::OK, "{path} on the internal port");
    }
    shutdown.cancel();
}
