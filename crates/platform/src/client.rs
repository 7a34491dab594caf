//! Calling other services over HTTP: one pooled client per downstream, and a single place that
//! decides which failures are worth retrying.

use std::time::Duration;

use http::{HeaderMap, StatusCode, header};
use tracing::Instrument;

/// A client with keep-alive, a connect timeout and an overall per-request timeout.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    http_client_keeping(timeout, 256)
}

/// As [`http_client`], keeping up to `idle` connections per downstream open between requests. A
/// caller that may have more requests in flight at once should keep as many: connections beyond
/// the pool are closed as their requests end and opened again by the next burst.
pub fn http_client_keeping(timeout: Duration, idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(idle)
        .tcp_nodelay(true)
        .build()
        .expect("reqwest client builds with static settings")
}

/// Sends `request` inside a client span, with the current trace context in its `traceparent`
/// and `tracestate` headers (replacing any the request had), so the callee's span joins the
/// caller's trace. Every call between services goes through here.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    let (client, request) = request.build_split();
    let mut request = request?;
    let span = crate::telemetry::spans::http_client(request.method().as_str(), request.url());
    crate::telemetry::propagation::inject_span(&span, request.headers_mut());
    let result = client.execute(request).instrument(span.clone()).await;
    match &result {
        Ok(response) => {
            span.record("http.response.status_code", response.status().as_u16());
            if response.status().is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        Err(_) => {
            span.record("otel.status_code", "error");
        }
    }
    result
}

/// Services that run in this process (the all-in-one), by the base URL callers know them by.
/// A call to one of these URLs goes straight into the router ([`call_in_process`]); any other
/// URL goes over HTTP.
#[derive(Clone, Default)]
pub struct InProcess(std::collections::HashMap<String, axum::Router>);

impl InProcess {
    /// Serves `base_url` (as in `--ingestion-url`) with `router` in this process.
    pub fn with(mut self, base_url: &str, router: axum::Router) -> Self {
        self.0.insert(base_url.trim_end_matches('/').to_owned(), router);
        self
    }

    /// The router serving `base_url`, if it runs here.
    pub fn get(&self, base_url: &str) -> Option<axum::Router> {
        self.0.get(base_url.trim_end_matches('/')).cloned()
    }
}

/// [`send`] for a callee in this process: the built request goes through [`call_in_process`]
/// and its answer comes back as a `reqwest::Response`, so the caller reads it as any other.
/// The error says why there is no answer (a timeout, or a request that cannot be built).
pub async fn send_in_process(
    router: &axum::Router,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, String> {
    let request = request.build().map_err(|err| err.to_string())?;
    let body = request.body().and_then(reqwest::Body::as_bytes).map(bytes::Bytes::copy_from_slice).unwrap_or_default();
    let incoming = in_process_request(request.url(), request.method().clone(), request.headers().clone(), body)?;
    let response = call_in_process(router, request.url(), incoming, timeout)
        .await
        .ok_or_else(|| format!("no answer within {} ms", timeout.as_millis()))?;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|err| err.to_string())?;
    Ok(reqwest::Response::from(http::Response::from_parts(parts, body)))
}

/// The request a router in this process receives for a call to `url`: its path and query as the
/// URI, as a server would see it.
pub fn in_process_request(
    url: &reqwest::Url,
    method: http::Method,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<http::Request<axum::body::Body>, String> {
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut request = http::Request::new(axum::body::Body::from(body));
    *request.method_mut() = method;
    *request.uri_mut() = target.parse().map_err(|_| format!("{target:?} is not a URI"))?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Calls a service whose router runs in this process as [`send`] calls one over the network:
/// inside a client span, with the trace context in `traceparent`, within `timeout`. It skips
/// the socket and the encoding and parsing of both messages, which is most of a loopback hop's
/// cost. `url` names the callee for the span; the request's URI is its path and query. `None`
/// when the timeout ran out.
pub async fn call_in_process(
    router: &axum::Router,
    url: &reqwest::Url,
    mut request: http::Request<axum::body::Body>,
    timeout: Duration,
) -> Option<axum::response::Response> {
    use tower::ServiceExt;
    // Over HTTP the callee would see a loopback peer; a handler that asks for it finds one here too.
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    let span = crate::telemetry::spans::http_client(request.method().as_str(), url);
    crate::telemetry::propagation::inject_span(&span, request.headers_mut());
    let call = router.clone().oneshot(request).instrument(span.clone());
    let Ok(Ok(response)) = tokio::time::timeout(timeout, call).await else {
        span.record("otel.status_code", "error");
        return None;
    };
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    Some(response)
}

/// Why a downstream call failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Connection refused or reset, timeout, 5xx, 429: may succeed later.
    #[error("{reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// The downstream rejected the request itself (4xx): retrying the same request cannot help.
    #[error("{reason}")]
    Permanent { status: u16, reason: String },
}

impl CallError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Transient { retry_after, .. } => *retry_after,
            CallError::Permanent { .. } => None,
        }
    }

    /// Classifies a transport error (no response at all): always transient.
    pub fn from_transport(service: &str, err: &reqwest::Error) -> Self {
        CallError::Transient { reason: format!("{service}: {err}"), retry_after: None }
    }

    /// Classifies an error response from `service`; `body` is kept (shortened) for the reason.
    pub fn from_response(service: &str, status: StatusCode, headers: &HeaderMap, body: &str) -> Self {
        let snippet: String = body.chars().take(300).collect();
        let reason = format!("{service} answered {status}: {snippet}");
        if is_transient_status(status) {
            CallError::Transient { reason, retry_after: retry_after(headers) }
        } else {
            CallError::Permanent { status: status.as_u16(), reason }
        }
    }
}

/// 408, 425, 429 and every 5xx except 501 (not implemented will not start working).
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429) || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// The `Retry-After` header in seconds (HTTP-date form is not used between our services).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Percent-encodes `id` so it stays one path segment (`a/b` → `a%2Fb`).
pub fn encode_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router that answers with what it received; `/slow` answers after 5 s.
    fn echo() -> axum::Router {
        axum::Router::new().fallback(|request: axum::extract::Request| async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let seen = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "contentType": parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                "peer": parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()),
                "body": String::from_utf8_lossy(&body),
            });
            (StatusCode::CREATED, [(header::LOCATION, "/made/1")], axum::Json(seen))
        })
    }

    #[tokio::test]
    async fn a_call_in_process_reads_as_one_over_http() {
        let routers = InProcess::default().with("http://127.0.0.1:1/", echo());
        let router = routers.get("http://127.0.0.1:1").expect("found without the trailing slash");
        let request = http_client(Duration::from_secs(1))
            .put("http://127.0.0.1:1/things/a%2Fb?x=1")
            .json(&serde_json::json!({ "n": 1 }));
        let response = send_in_process(&router, request, Duration::from_secs(1)).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/made/1");
        let seen: serde_json::Value = response.json().await.unwrap();
        assert_eq!(seen["method"], "PUT");
        assert_eq!(seen["uri"], "/things/a%2Fb?x=1");
        assert_eq!(seen["contentType"], "application/json");
        assert_eq!(seen["body"], r#"{"n":1}"#);
        assert_eq!(seen["peer"], "127.0.0.1", "a handler asking for its peer gets the loopback one");
        assert!(routers.get("http://127.0.0.1:2").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_process_gives_up_at_its_timeout() {
        let request = http_client(Duration::from_secs(1)).get("http://127.0.0.1:1/slow");
        let err = send_in_process(&echo(), request, Duration::from_millis(100)).await.unwrap_err();
        assert!(err.contains("100 ms"), "{err}");
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("pkg-1_x.y~"), "pkg-1_x.y~");
    }

    #[test]
    fn classifies_statuses() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        let busy = CallError::from_response("dronescheduler", StatusCode::SERVICE_UNAVAILABLE, &headers, "no drone");
        assert!(busy.is_transient());
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
        assert!(CallError::from_response("p", StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "").is_transient());
        assert!(!CallError::from_response("p", StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new(), "").is_transient());
        assert!(!CallError::from_response("p", StatusCode::NOT_IMPLEMENTED, &HeaderMap::new(), "").is_transient());
    }
}
