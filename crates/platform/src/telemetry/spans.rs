//! The spans every service opens the same way: one per HTTP request served, per HTTP call made,
//! per message published and per message processed. Names and fields follow the OpenTelemetry
//! semantic conventions (`http.*`, `messaging.*`), plus `delivery.id` and `owner.id`.
//! `otel.name`, `otel.kind` and `otel.status_code` are read by `tracing-opentelemetry`.

use axum::extract::MatchedPath;
use http::{Request, Response, header};
use tracing::Span;
use tracing::field::Empty;

use super::propagation;

/// Resources whose `{id}` is a delivery id.
const DELIVERY_RESOURCES: [&str; 5] =
    ["deliveries", "deliveryrequests", "deliveryhistory", "dronedeliveries", "workflows"];

/// The delivery id in `path` when `route` (its matched pattern) names one: a `{delivery_id}`
/// parameter, or `{id}` under a delivery resource (`/api/deliveries/{id}/status`).
pub fn delivery_id_in<'p>(route: &str, path: &'p str) -> Option<&'p str> {
    let route: Vec<&str> = route.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    if route.len() != path.len() {
        return None;
    }
    let resource = route.iter().position(|s| *s == "api").and_then(|i| route.get(i + 1)).copied().unwrap_or("");
    let under_delivery = DELIVERY_RESOURCES.contains(&resource);
    route
        .iter()
        .zip(&path)
        .find(|(pattern, _)| **pattern == "{delivery_id}" || (under_delivery && **pattern == "{id}"))
        .map(|(_, value)| *value)
        .filter(|value| !value.is_empty())
}

/// The span of one request served by `service`, a child of the caller's span when the request
/// carries a `traceparent`.
pub fn http_server<B>(service: &'static str, request: &Request<B>) -> Span {
    let method = request.method().as_str();
    let path = request.uri().path();
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    let server_address = host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name)).unwrap_or("");
    let span = tracing::info_span!(
        "http_request",
        otel.name = %format_args!("{method} {}", route.unwrap_or("")),
        otel.kind = "server",
        otel.status_code = Empty,
        service,
        http.request.method = method,
        http.route = Empty,
        url.path = path,
        server.address = server_address,
        http.response.status_code = Empty,
        request_id,
        delivery.id = Empty,
        owner.id = Empty,
    );
    if let Some(route) = route {
        span.record("http.route", route);
        if let Some(id) = delivery_id_in(route, path) {
            span.record("delivery.id", id);
        }
    }
    let parent = propagation::extract(request.headers());
    let caller = opentelemetry::trace::TraceContextExt::span(&parent).span_context().clone();
    if caller.is_valid() {
        let _ = propagation::set_remote_parent(&span, caller);
    }
    span
}

/// Records the response's status on the request's span; a 5xx marks the span as an error.
pub fn http_server_response<B>(response: &Response<B>, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// The span of one HTTP call made by this process (`reqwest`), before it is sent. The URL is
/// recorded without credentials, query or fragment: a webhook's may carry a token there.
pub fn http_client(method: &str, url: &reqwest::Url) -> Span {
    let host = url.host_str().unwrap_or("");
    let port = url.port_or_known_default().unwrap_or(0);
    tracing::info_span!(
        "http_call",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method,
        server.address = host,
        server.port = port,
        url.full = %format_args!("{}://{host}:{port}{}", url.scheme(), url.path()),
        http.response.status_code = Empty,
    )
}

/// Where a message came from, for its consumer span.
#[derive(Debug, Clone, Copy)]
pub struct MessageOrigin<'a> {
    /// The bus backend (`sqlite`, `nats`).
    pub system: &'a str,
    /// The queue or stream.
    pub destination: &'a str,
    /// The envelope's `traceparent`.
    pub traceparent: Option<&'a str>,
}

/// The span of processing one message: a child of the span that published it, so the consumer's
/// work is part of the publisher's trace.
pub fn message_process(
    service: &'static str,
    origin: MessageOrigin<'_>,
    message_id: &str,
    attempt: u32,
    delivery_id: &str,
) -> Span {
    let span = tracing::info_span!(
        "message_process",
        otel.name = %format_args!("process {}", origin.destination),
        otel.kind = "consumer",
        otel.status_code = Empty,
        service,
        messaging.system = origin.system,
        messaging.destination.name = origin.destination,
        messaging.operation = "process",
        messaging.message.id = message_id,
        messaging.message.delivery_attempt = attempt,
        delivery.id = delivery_id,
        owner.id = Empty,
    );
    propagation::continue_from(&span, origin.traceparent);
    span
}

/// The span of publishing one message; the envelope carries its `traceparent`
/// ([`propagation::current_traceparent`] inside it).
pub fn message_publish(
    service: &'static str,
    system: &str,
    destination: &str,
    message_id: &str,
    delivery_id: &str,
) -> Span {
    tracing::info_span!(
        "message_publish",
        otel.name = %format_args!("publish {destination}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        service,
        messaging.system = system,
        messaging.destination.name = destination,
        messaging.operation = "publish",
        messaging.message.id = message_id,
        delivery.id = delivery_id,
    )
}

/// Records the delivery a request or message is about on the current span.
pub fn record_delivery_id(id: &str) {
    Span::current().record("delivery.id", id);
}

/// Records the owner (user id, not personal data) a request or message is about on the current span.
pub fn record_owner_id(id: &str) {
    Span::current().record("owner.id", id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_delivery_id_of_delivery_routes_only() {
        assert_eq!(delivery_id_in("/api/deliveries/{id}/status", "/api/deliveries/d-1/status"), Some("d-1"));
        assert_eq!(delivery_id_in("/api/deliveries/public/{id}", "/api/deliveries/public/d-2"), Some("d-2"));
        assert_eq!(delivery_id_in("/api/dronedeliveries/{delivery_id}", "/api/dronedeliveries/d-3"), Some("d-3"));
        assert_eq!(
            delivery_id_in("/v0.1.0/api/deliveryrequests/{id}", "/v0.1.0/api/deliveryrequests/d-4"),
            Some("d-4")
        );
        assert_eq!(delivery_id_in("/api/drones/{drone_id}", "/api/drones/drone-1"), None);
        assert_eq!(delivery_id_in("/api/packages/{id}", "/api/packages/p-1"), None);
        assert_eq!(delivery_id_in("/api/deadletters/{id}", "/api/deadletters/m-1"), None);
        assert_eq!(delivery_id_in("/api/deliveries/summary", "/api/deliveries/summary"), None);
        assert_eq!(delivery_id_in("/api/deliveries/{id}", "/api/deliveries/a/b"), None, "not the route's path");
    }
}
