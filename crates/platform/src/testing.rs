//! Helpers for tests that drive a service's router in-process, without a socket.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Sends one request (a JSON body when given) and returns the status, the body parsed as JSON
/// (`Null` when empty or not JSON) and the headers.
pub async fn call(router: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, HeaderMap) {
    call_with(router, method, uri, body, &HeaderMap::new()).await
}

/// [`call`] with extra request headers (an identity, an idempotency key).
pub async fn call_with(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &HeaderMap,
) -> (StatusCode, Value, HeaderMap) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = router.clone().oneshot(request.body(body).expect("valid request")).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body reads").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
}

/// Headers carrying `account_id` as the gateway's identity, signed with `key` now.
pub fn identity_headers(key: &crate::identity::IdentityKey, account_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let identity = crate::identity::Identity::account(account_id);
    key.attach(&identity, &mut headers, chrono::Utc::now().timestamp()).expect("an id is a valid header value");
    headers
}

/// A log writer that keeps what it is given, for tests that read the log lines back: hand a
/// clone to the subscriber (`.with_writer(move || logs.clone())`) and read [`text`](Self::text).
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
            .expect("log lines are UTF-8")
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
