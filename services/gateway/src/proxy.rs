//! Forwarding one request to an upstream and its answer back, with only the headers that
//! mean something across the hop.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::Problem;

/// Request headers passed to the upstream.
/// (`traceparent`/`tracestate` are not copied: [`platform::client::send`] writes the gateway's
/// own span there, a child of the caller's.)
static FORWARDED_REQUEST_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-request-id"),
];

/// Response headers passed back to the client.
static FORWARDED_RESPONSE_HEADERS: [HeaderName; 5] =
    [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER, header::ALLOW, header::CACHE_CONTROL];

/// One forwarded call.
pub struct Hop<'a> {
    pub upstream_name: &'a str,
    pub url: String,
    pub timeout: Duration,
    pub body_limit: usize,
    /// The prefix the client used; a `Location` starting `/api/` is re-rooted under it so
    /// clients of the versioned prefix stay on it.
    pub public_prefix: &'a str,
    /// Whether the client's `Authorization` goes along (routes the gateway does not
    /// authenticate, whose upstream checks it itself).
    pub pass_authorization: bool,
    /// The upstream's router when it runs in this process (the all-in-one): called directly
    /// instead of over a loopback connection.
    pub in_process: Option<&'a Router>,
}

/// Sends `request` along `hop`, with the gateway's identity headers when the request carries
/// them (the caller stripped any the client sent).
pub async fn forward(client: &reqwest::Client, hop: Hop<'_>, request: Request) -> Result<Response, Problem> {
    let Hop { upstream_name, url, timeout, body_limit, public_prefix, pass_authorization, in_process } = hop;
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, body_limit)
        .await
        .map_err(|_| Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than the limit"))?;
    let mut headers = HeaderMap::new();
    let identity = platform::identity::HEADERS.into_iter().map(HeaderName::from_static);
    let authorization = pass_authorization.then_some(header::AUTHORIZATION);
    for name in FORWARDED_REQUEST_HEADERS.iter().cloned().chain(identity).chain(authorization) {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    let (status, upstream_headers, body) = match in_process {
        Some(router) => call_in_process(router, upstream_name, parts.method, &url, headers, bytes, timeout).await?,
        None => call_over_http(client, upstream_name, parts.method, url, headers, bytes, timeout).await?,
    };
    let mut response = (status, Body::from(body)).into_response();
    for name in &FORWARDED_RESPONSE_HEADERS {
        if let Some(value) = upstream_headers.get(name) {
            response.headers_mut().insert(name.clone(), rewrite_location(name, value, public_prefix));
        }
    }
    Ok(response)
}

/// An upstream's answer: status, headers and the whole body.
type Answer = (StatusCode, HeaderMap, Bytes);

async fn call_over_http(
    client: &reqwest::Client,
    upstream_name: &str,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, Problem> {
    let mut outgoing = client.request(method, url).timeout(timeout).headers(headers);
    if !body.is_empty() {
        outgoing = outgoing.body(body);
    }
    let upstream = platform::client::send(outgoing).await.map_err(|err| upstream_failure(upstream_name, &err))?;
    let (status, headers) = (upstream.status(), upstream.headers().clone());
    let body = upstream.bytes().await.map_err(|err| upstream_failure(upstream_name, &err))?;
    Ok((status, headers, body))
}

async fn call_in_process(
    router: &Router,
    upstream_name: &str,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, Problem> {
    let unreachable = |why: &str| {
        tracing::warn!(upstream = upstream_name, error = why, "in-process upstream call failed");
        Problem::new(StatusCode::BAD_GATEWAY, format!("the {upstream_name} service is unreachable")).with_retry_after(1)
    };
    let url = reqwest::Url::parse(url).map_err(|_| unreachable("the upstream URL does not parse"))?;
    let request = platform::client::in_process_request(&url, method, headers, body).map_err(|why| unreachable(&why))?;
    let Some(response) = platform::client::call_in_process(router, &url, request, timeout).await else {
        tracing::warn!(upstream = upstream_name, "in-process upstream call timed out");
        return Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the {upstream_name} service did not answer in time"),
        ));
    };
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.map_err(|err| unreachable(&err.to_string()))?;
    Ok((parts.status, parts.headers, body))
}

fn rewrite_location(name: &HeaderName, value: &HeaderValue, public_prefix: &str) -> HeaderValue {
    if name != header::LOCATION || public_prefix == "/api" {
        return value.clone();
    }
    match value.to_str().ok().and_then(|v| v.strip_prefix("/api")) {
        Some(rest) => HeaderValue::from_str(&format!("{public_prefix}{rest}")).unwrap_or_else(|_| value.clone()),
        None => value.clone(),
    }
}

fn upstream_failure(upstream: &str, err: &reqwest::Error) -> Problem {
    tracing::warn!(upstream, error = %err, "upstream call failed");
    if err.is_timeout() {
        Problem::new(StatusCode::GATEWAY_TIMEOUT, format!("the {upstream} service did not answer in time"))
    } else {
        Problem::new(StatusCode::BAD_GATEWAY, format!("the {upstream} service is unreachable")).with_retry_after(1)
    }
}
