//! W3C trace context (`traceparent`, `tracestate`) across process boundaries: HTTP headers in
//! and out, and the `traceparent` field of a bus message's envelope.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            // Replace, never append: a forwarded request must carry our span, not the caller's.
            self.0.insert(name, value);
        }
    }
}

/// A single `traceparent` value as a carrier.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The caller's context from request headers (an empty context when there is none or it is malformed).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Writes `cx` into `headers` (nothing when it holds no valid span).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

/// Writes the current span's context into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    inject_span(&tracing::Span::current(), headers);
}

/// Writes `span`'s context into `headers`, so the callee's spans join its trace.
pub fn inject_span(span: &tracing::Span, headers: &mut HeaderMap) {
    inject(&Context::new().with_remote_span_context(span_context(span)), headers);
}

/// `span`'s ids: from the ids-only layer when spans are not exported, else from its
/// OpenTelemetry span (invalid outside any traced span).
pub fn span_context(span: &tracing::Span) -> SpanContext {
    super::ids::of_span(span).unwrap_or_else(|| span.context().span().span_context().clone())
}

/// Makes `span` a child of the remote span `parent` (a caller's, from its `traceparent`);
/// `false` when no span layer holds `span`. Call before the span is first entered.
pub fn set_remote_parent(span: &tracing::Span, parent: SpanContext) -> bool {
    let ids = super::ids::set_remote_parent(span, &parent);
    ids | span.set_parent(Context::new().with_remote_span_context(parent)).is_ok()
}

/// The span a `traceparent` value names, when it is well formed (version 00, non-zero ids).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    // The SDK's parser takes ids shorter than the specification's lengths; a message carries
    // exactly what we wrote, so anything else is damage, not a context to continue.
    let lengths_ok = value.split('-').map(str::len).eq([2, 32, 16, 2]);
    if !lengths_ok {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&One(value));
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.clone())
}

/// The `traceparent` value naming `context`; `None` for an invalid one.
pub fn format_traceparent(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!("00-{:032x}-{:016x}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8())
    })
}

/// The current span's `traceparent`, for a message being published; `None` outside any traced span.
pub fn current_traceparent() -> Option<String> {
    format_traceparent(&span_context(&tracing::Span::current()))
}

/// Makes `span` a child of the remote span `traceparent` names; `false` (and no change) when
/// the value is missing or malformed. Call before the span is first entered.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    let Some(parent) = traceparent.and_then(parse_traceparent) else { return false };
    set_remote_parent(span, parent)
}

/// Links `span` to the span `traceparent` names, for work that follows from it without being part
/// of it; `false` when the value is missing or malformed.
pub fn link_to(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    let Some(linked) = traceparent.and_then(parse_traceparent) else { return false };
    span.add_link(linked);
    true
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_and_formats_a_traceparent_round_trip() {
        let context = parse_traceparent(GOOD).expect("well formed");
        assert_eq!(context.trace_id(), TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap());
        assert_eq!(context.span_id(), SpanId::from_hex("b7ad6b7169203331").unwrap());
        assert!(context.is_sampled());
        assert!(context.is_remote());
        assert_eq!(format_traceparent(&context).as_deref(), Some(GOOD));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
        assert_eq!(format_traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn headers_round_trip_and_injection_replaces_the_callers_value() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "x")]).unwrap(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        inject(&Context::new().with_remote_span_context(context.clone()), &mut headers);
        assert_eq!(headers.get_all(TRACEPARENT).iter().count(), 1);
        assert_eq!(headers[TRACEPARENT], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(headers["tracestate"], "vendor=x");
        let back = extract(&headers);
        let span = back.span();
        assert_eq!(span.span_context().trace_id(), context.trace_id());
        assert_eq!(span.span_context().span_id(), context.span_id());
        assert_eq!(span.span_context().trace_state().header(), "vendor=x");
    }

    #[test]
    fn nothing_is_injected_without_a_span() {
        let mut headers = HeaderMap::new();
        inject(&Context::new(), &mut headers);
        assert!(headers.is_empty());
        assert!(!extract(&headers).span().span_context().is_valid());
    }
}
