//! The account service's router on a fresh SQLite store, for the HTTP test files.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use account::bootstrap::{self, BootstrapArgs};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::TimeZone;
use http_body_util::BodyExt;
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub operator: String,
    pub store: Arc<dyn account::AccountStore>,
    pub clock: ManualClock,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let url = format!("sqlite://{}", dir.path().join("account.db").display());
    let store = account::open_store(&url).await.unwrap();
    let operator = bootstrap::operator(&*store, Arc::new(clock.clone()), &BootstrapArgs::default()).await.unwrap();
    let router = account::router(store.clone(), Arc::new(clock.clone()), &CommonArgs::default());
    TestApp { router, operator, store, clock, _dir: dir }
}

impl TestApp {
    /// One request with `Authorization: Bearer <token>` when a token is given.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
    }

    /// An admin call with the operator token.
    pub async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, HeaderMap) {
        self.call_as(Some(&self.operator.clone()), method, uri, body).await
    }

    pub async fn verify(&self, api_key: &str) -> (StatusCode, Value) {
        let (status, body, _) =
            self.call_as(None, Method::POST, "/internal/credentials/verify", Some(json!({ "apiKey": api_key }))).await;
        (status, body)
    }

    pub async fn new_account(&self, name: &str) -> String {
        let (status, body, _) = self.admin(Method::POST, "/api/admin/accounts", Some(json!({ "name": name }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn new_key(&self, account: &str, body: Value) -> Value {
        let (status, body, _) =
            self.admin(Method::POST, &format!("/api/admin/accounts/{account}/keys"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}
