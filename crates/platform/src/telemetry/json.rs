//! JSON log lines: one object per event with `timestamp`, `level`, `target`, `service`,
//! `trace_id` and `span_id` (of the current OpenTelemetry span), `delivery_id`, `message` and the
//! event's own fields. `service`, `delivery_id`, `owner_id` and `request_id` come from the
//! enclosing spans, so a call site does not repeat them. Values of fields whose names mark
//! personal data (e-mail, phone, SMS) are replaced by `"[redacted]"` wherever they appear: a
//! safety net behind the call sites, which log recipients masked (`p***@contoso.com`).

use std::io::Write;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
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
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

/// The inherited fields a span holds.
#[derive(Default)]
struct SpanFields(Map<String, Value>);

/// Whether a field's value is personal data that must not be logged.
pub fn is_personal(field: &str) -> bool {
    let name = field.to_ascii_lowercase();
    ["email", "e_mail", "phone", "sms"].iter().any(|p| name.contains(p))
}

struct Collect<'a> {
    into: &'a mut Map<String, Value>,
    /// Keep only these keys (span fields), renamed; `None` keeps every field.
    only: Option<&'a [(&'a str, &'a str)]>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let key = match self.only {
            Some(keys) => match keys.iter().find(|(from, _)| *from == name) {
                Some((_, to)) => *to,
                None => return,
            },
            None => name,
        };
        let value = if is_personal(key) { Value::from("[redacted]") } else { value };
        self.into.insert(key.to_owned(), value);
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
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Collect { into: &mut fields.0, only: Some(&INHERITED) });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collect { into: &mut fields.0, only: Some(&INHERITED) });
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
        if let Some(scope) = ctx.event_scope(event) {
            let mut leaf = None;
            // Root first, so the nearest span's value wins.
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                leaf = Some(span.name());
            }
            if let Some(name) = leaf {
                line.insert("span".to_owned(), name.into());
            }
        }
        let otel = opentelemetry::Context::current();
        let current = otel.span();
        let context = current.span_context();
        if context.is_valid() {
            line.insert("trace_id".to_owned(), format!("{:032x}", context.trace_id()).into());
            line.insert("span_id".to_owned(), format!("{:016x}", context.span_id()).into());
        }
        event.record(&mut Collect { into: &mut line, only: None });
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
