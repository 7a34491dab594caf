//! The health endpoints every service router serves: liveness never depends on the probes,
//! readiness follows them both ways, startup is done once the router serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Method, StatusCode};
use platform::http::{ServiceRouter, probe};
use platform::testing::call;

#[tokio::test]
async fn readiness_follows_the_store_both_ways_while_liveness_stays_up() {
    let store_up = Arc::new(AtomicBool::new(true));
    let up = store_up.clone();
    let router = ServiceRouter::new("health-test", axum::Router::new())
        .readiness(probe("health-test-store", move || {
            let up = up.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("connection refused".to_owned()) } }
        }))
        .readiness(probe("bus", || async { Ok(()) }))
        .build();
    let get = |path: &'static str| {
        let router = router.clone();
        async move {
            let (status, body, _) = call(&router, Method::GET, path, None).await;
            (status, body)
        }
    };

    assert_eq!(get("/healthz/ready").await.0, StatusCode::OK);
    assert_eq!(get("/healthz/startup").await.0, StatusCode::OK);

    store_up.store(false, Ordering::SeqCst);
    let (status, body) = get("/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"]["health-test-store"], "connection refused", "{body}");
    assert!(body["failing"].get("bus").is_none(), "only the failing probe is named: {body}");
    assert_eq!(get("/healthz/live").await.0, StatusCode::OK, "liveness never depends on the store");
    assert_eq!(get("/healthz/startup").await.0, StatusCode::OK, "start-up, once done, stays done");

    store_up.store(true, Ordering::SeqCst);
    assert_eq!(get("/healthz/ready").await.0, StatusCode::OK);
    assert_eq!(get("/healthz/live").await.0, StatusCode::OK);
}
