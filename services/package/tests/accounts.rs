//! The package summary with the gateway's identity required: 401 without one, and only the
//! caller's account's packages count. The workflow's PUT keeps working without an identity.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use chrono::TimeZone;
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use platform::identity::IdentityKey;
use platform::testing::{call_with, identity_headers};
use serde_json::json;

const SECRET: &str = "the gateway and the services share this";

#[tokio::test]
async fn the_summary_counts_only_the_callers_account() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let url = format!("sqlite://{}", dir.path().join("package.db").display());
    let store = package::open_store(&url, Arc::new(clock)).await.unwrap();
    let common = CommonArgs { identity_secret: Some(SECRET.to_owned()), ..CommonArgs::default() };
    let router = package::router(store, &common);
    let key = IdentityKey::new(SECRET).unwrap();

    for (id, weight, account) in [("p1", 1.5, "acc-1"), ("p2", 2.0, "acc-2"), ("p3", 4.0, "acc-1")] {
        let body = json!({ "size": "Small", "weight": weight, "ownerId": "user-7", "accountId": account });
        let (status, problem, _) =
            call_with(&router, Method::PUT, &format!("/api/packages/{id}"), Some(body), &HeaderMap::new()).await;
        assert_eq!(status, StatusCode::CREATED, "{problem}");
    }
    let uri = "/api/packages/summary/user-7?year=2026&month=3";
    let (status, _, _) = call_with(&router, Method::GET, uri, None, &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, _) = call_with(&router, Method::GET, uri, None, &identity_headers(&key, "acc-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "totalWeight": 5.5 }));
    let (_, body, _) = call_with(&router, Method::GET, uri, None, &identity_headers(&key, "acc-3")).await;
    assert_eq!(body, json!({ "totalWeight": 0.0 }));
}
