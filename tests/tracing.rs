//! Traces and logs of the whole system in-process: one delivery request is one trace across
//! every service and the bus, and the JSON log lines carry its ids. Its own test binary: the
//! global subscriber installed here (spans to an in-memory exporter, logs to a buffer) is this
//! file's alone.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod common;

use common::Client;
use fabrikam::{System, SystemOptions};
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use platform::clock::SystemClock;
use platform::telemetry::{LogFormat, Setup};
use platform::testing::CapturedLogs;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Telemetry {
    spans: InMemorySpanExporter,
    logs: CapturedLogs,
}

/// Installs the subscriber once for every test of this file.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let logs = CapturedLogs::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
        let writer = logs.clone();
        let setup = Setup::new("fabrikam", LogFormat::Json).provider(provider).writer(move || writer.clone());
        assert!(platform::telemetry::init_with(setup), "no other subscriber in this test binary");
        Telemetry { spans, logs }
    })
}

async fn start(data: &std::path::Path) -> System {
    let mut options = SystemOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), data);
    options.workflow.backoff_base_ms = 50;
    options.workflow.backoff_max_secs = 1;
    // A fast clock: a flight takes a second or two.
    options.fleet.time_scale = 3000.0;
    System::start(options, Arc::new(SystemClock)).await.expect("system starts")
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
}

/// Waits until the spans satisfy `done` (spans end as the work behind them finishes).
async fn spans_until(exporter: &InMemorySpanExporter, done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        if done(&spans) {
            return spans;
        }
        assert!(Instant::now() < deadline, "the spans never got there: {:#?}", summary(&spans));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} {} {:?} {:?}", s.span_context.trace_id(), s.name, s.span_kind, attribute(s, "service")))
        .collect()
}

/// The trace of the gateway's span for the POST that asked for delivery `id`.
fn request_trace(spans: &[SpanData], id: &str) -> Option<TraceId> {
    let ingestion = spans.iter().find(|s| {
        attribute(s, "service").as_deref() == Some("ingestion")
            && s.span_kind == SpanKind::Server
            && attribute(s, "delivery.id").as_deref() == Some(id)
            && attribute(s, "http.request.method").as_deref() == Some("POST")
    })?;
    Some(ingestion.span_context.trace_id())
}

const SERVICES: [&str; 6] = ["gateway", "ingestion", "workflow", "package", "dronescheduler", "delivery"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_request_is_one_trace_across_every_service_and_the_bus() {
    let telemetry = telemetry();
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let gateway = Client::gateway(&system);

    // A caller that traces too: its context is the root of the delivery's trace.
    let caller = "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01";
    let response = gateway
        .http
        .post(format!("{}/api/deliveryrequests", gateway.base))
        .header("traceparent", caller)
        .json(&contracts::requests::reference_validation_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["deliveryId"].as_str().unwrap().to_owned();
    gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(10), |_| true).await;

    let trace = TraceId::from_hex("5b8efff798038103d269b633813fc60c").unwrap();
    let spans = spans_until(&telemetry.spans, |spans| {
        let services: BTreeSet<String> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .filter_map(|s| attribute(s, "service"))
            .collect();
        SERVICES.iter().all(|s| services.contains(*s))
            && spans.iter().any(|s| s.span_kind == SpanKind::Consumer && s.span_context.trace_id() == trace)
    })
    .await;
    assert_eq!(request_trace(&spans, &id), Some(trace), "ingestion's span continues the caller's trace");
    let in_trace: Vec<&SpanData> = spans.iter().filter(|s| s.span_context.trace_id() == trace).collect();

    // Every service the request touched served it inside this trace, named by route.
    let gateway_span = in_trace
        .iter()
        .find(|s| attribute(s, "service").as_deref() == Some("gateway") && s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(gateway_span.parent_span_id.to_string(), "eee19b7ec3c1b174", "a child of the caller's span");
    assert_eq!(gateway_span.name, "POST /api/deliveryrequests");
    assert_eq!(attribute(gateway_span, "http.route").as_deref(), Some("/api/deliveryrequests"));
    assert_eq!(attribute(gateway_span, "http.response.status_code").as_deref(), Some("202"));
    let drones = in_trace
        .iter()
        .find(|s| attribute(s, "service").as_deref() == Some("dronescheduler") && s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(attribute(drones, "delivery.id").as_deref(), Some(id.as_str()), "{drones:?}");
    assert_eq!(drones.name, "PUT /api/dronedeliveries/{delivery_id}");

    // HTTP hops: each server span is the child of a client span of the same trace.
    let by_id: HashMap<_, _> = in_trace.iter().map(|s| (s.span_context.span_id(), *s)).collect();
    for server in in_trace.iter().filter(|s| s.span_kind == SpanKind::Server && s.name != gateway_span.name) {
        let parent = by_id.get(&server.parent_span_id).unwrap_or_else(|| panic!("{} has no parent", server.name));
        assert_eq!(parent.span_kind, SpanKind::Client, "{} is called by a client span", server.name);
    }

    // The bus hop: the workflow's consumer span is the child of ingestion's producer span.
    let producer = in_trace
        .iter()
        .find(|s| s.span_kind == SpanKind::Producer && attribute(s, "service").as_deref() == Some("ingestion"))
        .expect("ingestion publishes inside a producer span");
    let consumer = in_trace
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer && attribute(s, "service").as_deref() == Some("workflow"))
        .expect("the workflow consumes inside a consumer span");
    assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
    assert_eq!(attribute(producer, "messaging.destination.name").as_deref(), Some("delivery-requests"));
    assert_eq!(attribute(consumer, "messaging.destination.name").as_deref(), Some("delivery-requests"));
    assert_eq!(attribute(consumer, "messaging.operation").as_deref(), Some("process"));
    assert_eq!(attribute(consumer, "messaging.system").as_deref(), Some("sqlite"));
    assert_eq!(attribute(consumer, "delivery.id").as_deref(), Some(id.as_str()));
    assert_eq!(attribute(consumer, "owner.id").as_deref(), Some("myowner"));
    assert!(attribute(consumer, "messaging.message.id").is_some_and(|m| m.contains(&id)));
    // And the workflow's calls are children of its consumer span.
    let package = in_trace
        .iter()
        .find(|s| attribute(s, "service").as_deref() == Some("package") && s.span_kind == SpanKind::Server)
        .unwrap();
    let call = by_id[&package.parent_span_id];
    assert_eq!(by_id[&call.parent_span_id].span_context.span_id(), consumer.span_context.span_id());

    // The delivery's events reach their consumers with the trace context of their producer.
    let events = spans_until(&telemetry.spans, |spans| {
        spans.iter().any(|s| {
            s.span_kind == SpanKind::Consumer
                && attribute(s, "service").as_deref() == Some("deliveryhistory")
                && attribute(s, "delivery.id").as_deref() == Some(id.as_str())
        })
    })
    .await;
    let history = events
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer && attribute(s, "service").as_deref() == Some("deliveryhistory"))
        .unwrap();
    let publisher = events
        .iter()
        .find(|s| s.span_context.span_id() == history.parent_span_id)
        .expect("the history consumer's parent is a span of this process");
    assert_eq!(publisher.span_kind, SpanKind::Producer);
    assert_eq!(publisher.span_context.trace_id(), history.span_context.trace_id());

    // The flight clock publishes the drone's events later, outside the request, yet they
    // continue the request's trace: the assignment's context is kept with the flight.
    let is_drone_event = |s: &SpanData| {
        s.span_kind == SpanKind::Consumer
            && attribute(s, "messaging.destination.name").as_deref() == Some("drone-events")
            && attribute(s, "delivery.id").as_deref() == Some(id.as_str())
    };
    let flown = spans_until(&telemetry.spans, |spans| spans.iter().any(is_drone_event)).await;
    let tracked = flown.iter().find(|s| is_drone_event(s)).unwrap();
    assert_eq!(tracked.span_context.trace_id(), trace, "drone events join the request's trace: {tracked:?}");
    let clock = flown
        .iter()
        .find(|s| s.span_context.span_id() == tracked.parent_span_id)
        .expect("the tracking consumer's parent is the flight clock's publish span");
    assert_eq!(
        (clock.span_kind.clone(), attribute(clock, "service").as_deref()),
        (SpanKind::Producer, Some("dronescheduler"))
    );

    // The log lines are JSON, and those written inside the request's spans carry its ids.
    let logs = telemetry.logs.text();
    let lines: Vec<Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
    }
    let ours: Vec<&Value> = lines.iter().filter(|l| l["trace_id"] == trace.to_string()).collect();
    assert!(!ours.is_empty(), "no log line carries the request's trace id");
    for line in &ours {
        let span_id = line["span_id"].as_str().unwrap();
        assert!(in_trace.iter().any(|s| s.span_context.span_id().to_string() == span_id), "{line}");
        assert!(line["service"].as_str().is_some_and(|s| SERVICES.contains(&s)), "{line}");
    }
    assert!(
        ours.iter().any(|l| l["service"] == "workflow" && l["delivery_id"] == id.as_str()),
        "the workflow's lines name the delivery: {ours:#?}"
    );
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_with_an_email_and_a_phone_number_logs_neither() {
    let telemetry = telemetry();
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let gateway = Client::gateway(&system);
    let internal = Client::new(system.addresses.delivery);
    let (email, phone) = ("robin.private@contoso.com", "+1 425 555 0199");

    let (status, accepted) = gateway
        .send(reqwest::Method::POST, "/api/deliveryrequests", Some(contracts::requests::reference_validation_request()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["deliveryId"].as_str().unwrap().to_owned();
    gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(10), |_| true).await;
    let notify = json!({ "emailAddress": email, "sms": phone });
    let (status, _) =
        gateway.send(reqwest::Method::POST, &format!("/api/deliveries/{id}/notifymerequests"), Some(notify)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    gateway
        .eventually(&format!("/api/deliveries/{id}/status"), Duration::from_secs(60), |s| s["stage"] == "Completed")
        .await;
    // Both notifications went out (recorded), so the code that handles the addresses ran.
    internal
        .eventually(&format!("/api/deliveries/{id}/notifications"), Duration::from_secs(10), |n| {
            n.as_array().is_some_and(|all| {
                all.iter().filter(|x| x["status"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("sent"))).count() >= 2
            })
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = telemetry.logs.text();
    assert!(logs.contains(&id), "the delivery was logged at all");
    assert!(logs.contains("notification sent"), "the notifications were logged");
    for secret in [email, phone, "robin.private", "555 0199"] {
        assert!(!logs.contains(secret), "{secret:?} reached the logs");
    }
    system.stop().await.unwrap();
}
