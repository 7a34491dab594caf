//! JSON log lines: one object per event with `timestamp`, `level`, `target`, `service`,
//! `trace_id` and `span_id` (of the nearest traced span), `delivery_id`, `message` and the
//! event's own fields. `service`, `delivery_id`, `owner_id` and `request_id` come from the
//! enclosing spans, so a call site does not repeat them. Values of fields whose names mark
//! personal data (e-mail, phone, SMS) are replaced by `"[redacted]"` wherever they appear: a
//! safety net behind the call sites, which log recipients masked (`p***@contoso.com`).

use std::io::Write;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_opentelemetry::get_otel_context;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Span fields copied onto every log line inside the span, under the key on the right.
const INHERITED: [(&str, &str); 6] = [
    ("service", "service"),
    ("delivery.id", "delivery_id"),
    ("delivery_id", "delivery_id"),
    ("owner.id", "owner_id"),
    ("request_id", "request_id"),
    ("messaging.message.id", "message_id"),
];

/// Writes events as JSON lines to `W`.
pub struct JsonLayer<W> {
    writer: W,
    /// The subscriber this layer is part of, whose span layer holds the spans' OpenTelemetry
    /// contexts. Kept from registration: inside an event's dispatch, asking for the current
    /// dispatcher answers "none" whenever a scoped one is in use.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W) -> Self {
        Self { writer, dispatch: OnceLock::new() }
    }
}

/// The inherited fields a span holds, under their log-line keys. A span is opened for every
/// request and message but most never see a log line, so this keeps only those few fields and
/// allocates nothing for the rest.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, Value)>);

impl SpanFields {
    fn set(&mut self, key: &'static str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = value,
            None => self.0.push((key, value)),
        }
    }
}

/// Whether a field's value is personal data that must not be logged.
pub fn is_personal(field: &str) -> bool {
    ["email", "e_mail", "phone", "sms"]
        .iter()
        .any(|p| field.as_bytes().windows(p.len()).any(|w| w.eq_ignore_ascii_case(p.as_bytes())))
}

/// Records a span's inherited fields; every other field is skipped before its value is read.
struct Inherit<'a>(&'a mut SpanFields);

impl Inherit<'_> {
    fn put(&mut self, field: &Field, value: impl FnOnce() -> Value) {
        if let Some((_, key)) = INHERITED.iter().find(|(from, _)| *from == field.name()) {
            self.0.set(key, value());
        }
    }
}

impl Visit for Inherit<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, || Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, || Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, || Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, || Value::from(format!("{value:?}")));
    }
}

/// Records every field of an event, personal ones redacted.
struct Collect<'a> {
    into: &'a mut Map<String, Value>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let value = if is_personal(name) { Value::from("[redacted]") } else { value };
        self.into.insert(name.to_owned(), value);
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Inherit(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Inherit(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".to_owned(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(),
        );
        line.insert("level".to_owned(), meta.level().as_str().into());
        line.insert("target".to_owned(), meta.target().into());
        // The spans around the event, root first.
        let mut scope = Vec::new();
        if let Some(spans) = ctx.event_scope(event) {
            for span in spans.from_root() {
                // Root first, so the nearest span's value wins.
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
                }
                scope.push((span.name(), span.id()));
            }
        }
        if let Some((name, _)) = scope.last() {
            line.insert("span".to_owned(), (*name).into());
        }
        // The ids of the nearest span that is part of a trace (a library's span is not). Asked
        // of the span: contexts are not activated on entry (that cost every poll of every traced
        // future), so `Context::current()` would be empty.
        let dispatch = self.dispatch.get().and_then(WeakDispatch::upgrade);
        let traced = dispatch.and_then(|dispatch| {
            scope.iter().rev().find_map(|(_, id)| {
                let context = match super::ids::of(id, &dispatch) {
                    Some(context) => context,
                    None => get_otel_context(id, &dispatch)?.span().span_context().clone(),
                };
                context.is_valid().then(|| (context.trace_id(), context.span_id()))
            })
        });
        if let Some((trace_id, span_id)) = traced {
            line.insert("trace_id".to_owned(), format!("{trace_id:032x}").into());
            line.insert("span_id".to_owned(), format!("{span_id:016x}").into());
        }
        event.record(&mut Collect { into: &mut line });
        let mut buffer = serde_json::to_vec(&line).unwrap_or_default();
        buffer.push(b'\n');
        // A log line that cannot be written is dropped: logging must never fail a request.
        let _ = self.writer.make_writer_for(meta).write_all(&buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_personal_fields() {
        for name in ["email", "customer_email", "emailAddress", "Phone", "phone_number", "sms"] {
            assert!(is_personal(name), "{name}");
        }
        for name in ["delivery_id", "owner_id", "message", "channel", "error", "recipient"] {
            assert!(!is_personal(name), "{name}");
        }
    }
}
