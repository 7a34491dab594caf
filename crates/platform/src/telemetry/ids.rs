//! Trace and span ids without OpenTelemetry spans, for a process that exports none.
//!
//! Log lines carry the ids of their span and calls carry `traceparent` whether or not spans are
//! exported, so every span needs ids. `tracing-opentelemetry` gives them by building a whole
//! OpenTelemetry span per `tracing` span (its attributes copied, its events and timings kept,
//! all dropped at the end when nothing exports): measured at about a seventh of the embedded
//! system's CPU per delivery. When export is off, [`IdsLayer`] takes its place and keeps only
//! what is read: a [`SpanContext`] per span, a child of its parent's (or of the caller's, set by
//! [`set_remote_parent`]), or the root of a new trace.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};

/// A span's ids, kept in its extensions.
#[derive(Clone)]
pub(crate) struct Ids(pub(crate) SpanContext);

/// Gives every span it sees trace and span ids (see the module's documentation).
pub(crate) struct IdsLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for IdsLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Under this layer's filter these skip spans it does not see (libraries'), as the
        // OpenTelemetry layer's parent lookup does.
        let parent = match attrs.parent() {
            Some(parent) => ctx.span(parent),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let inherited = parent.and_then(|parent| parent.extensions().get::<Ids>().map(|ids| ids.0.clone()));
        let context = match inherited {
            Some(parent) => child_of(&parent),
            None => SpanContext::new(new_trace_id(), new_span_id(), TraceFlags::SAMPLED, false, TraceState::default()),
        };
        span.extensions_mut().insert(Ids(context));
    }
}

/// A new span in `parent`'s trace.
fn child_of(parent: &SpanContext) -> SpanContext {
    SpanContext::new(parent.trace_id(), new_span_id(), parent.trace_flags(), false, parent.trace_state().clone())
}

fn new_trace_id() -> TraceId {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return TraceId::from_bytes(id.to_be_bytes());
        }
    }
}

fn new_span_id() -> SpanId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return SpanId::from_bytes(id.to_be_bytes());
        }
    }
}

/// The ids [`IdsLayer`] gave the span `id`; `None` without that layer.
pub(crate) fn of(id: &Id, dispatch: &Dispatch) -> Option<SpanContext> {
    let registry = dispatch.downcast_ref::<Registry>()?;
    let span = registry.span(id)?;
    span.extensions().get::<Ids>().map(|ids| ids.0.clone())
}

/// The ids of `span`; `None` without [`IdsLayer`] (or outside any span).
pub(crate) fn of_span(span: &tracing::Span) -> Option<SpanContext> {
    span.with_subscriber(|(id, dispatch)| of(id, dispatch)).flatten()
}

/// Makes `span` a child of the remote span `parent`, keeping its own span id; `false` without
/// [`IdsLayer`]. Spans made inside it afterwards join the remote trace.
pub(crate) fn set_remote_parent(span: &tracing::Span, parent: &SpanContext) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let Some(data) = dispatch.downcast_ref::<Registry>().and_then(|registry| registry.span(id)) else {
            return false;
        };
        let mut extensions = data.extensions_mut();
        let Some(ids) = extensions.get_mut::<Ids>() else { return false };
        ids.0 = SpanContext::new(
            parent.trace_id(),
            ids.0.span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        );
        true
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn remote(trace: &str, span: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex(trace).unwrap(),
            SpanId::from_hex(span).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn a_child_span_shares_its_parents_trace_and_has_an_id_of_its_own() {
        tracing::subscriber::with_default(tracing_subscriber::registry().with(IdsLayer), || {
            let parent = tracing::info_span!("parent");
            let child = parent.in_scope(|| tracing::info_span!("child"));
            let explicit = tracing::info_span!(parent: &parent, "explicit");
            let (parent, child, explicit) =
                (of_span(&parent).unwrap(), of_span(&child).unwrap(), of_span(&explicit).unwrap());
            assert!(parent.is_valid() && parent.is_sampled());
            assert_eq!(child.trace_id(), parent.trace_id());
            assert_eq!(explicit.trace_id(), parent.trace_id());
            assert_ne!(child.span_id(), parent.span_id());
            assert_ne!(explicit.span_id(), child.span_id());
            let other_root = tracing::info_span!(parent: None, "root");
            assert_ne!(of_span(&other_root).unwrap().trace_id(), parent.trace_id(), "a root starts a trace");
        });
    }

    #[test]
    fn a_span_continues_a_remote_trace_and_its_children_follow() {
        tracing::subscriber::with_default(tracing_subscriber::registry().with(IdsLayer), || {
            let request = tracing::info_span!("request");
            let own = of_span(&request).unwrap().span_id();
            let caller = remote("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
            assert!(set_remote_parent(&request, &caller));
            let continued = of_span(&request).unwrap();
            assert_eq!(continued.trace_id(), caller.trace_id());
            assert_eq!(continued.span_id(), own, "the span keeps its own id");
            assert!(!continued.is_remote());
            let child = request.in_scope(|| tracing::info_span!("child"));
            assert_eq!(of_span(&child).unwrap().trace_id(), caller.trace_id());
        });
    }

    #[test]
    fn without_the_layer_there_are_no_ids() {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let span = tracing::info_span!("span");
            assert!(of_span(&span).is_none());
            assert!(!set_remote_parent(&span, &remote("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")));
        });
    }
}
