//! Trace ids with nothing exported (the default): the whole system in-process, spans with ids
//! only, and a caller's trace still followed from the gateway through ingestion and the bus to
//! the workflow's log line. Its own test binary: the global subscriber installed here is this
//! file's alone (tests/tracing.rs covers the exported spans).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::Client;
use fabrikam::{System, SystemOptions};
use platform::clock::SystemClock;
use platform::telemetry::{LogFormat, Setup};
use platform::testing::CapturedLogs;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_reaches_the_workflows_log_line_through_the_bus() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let setup = Setup::new("fabrikam", LogFormat::Json).ids_only().writer(move || writer.clone());
    assert!(platform::telemetry::init_with(setup), "no other subscriber in this test binary");
    let dir = tempfile::tempdir().unwrap();
    let options = SystemOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
    let system = System::start(options, Arc::new(SystemClock)).await.expect("system starts");
    let gateway = Client::gateway(&system);

    let send = |traceparent: &'static str| {
        gateway
            .http
            .post(format!("{}/api/deliveryrequests", gateway.base))
            .header("traceparent", traceparent)
            .json(&contracts::requests::reference_validation_request())
            .send()
    };
    let caller = "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01";
    let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut ids = Vec::new();
    for traceparent in [caller, other] {
        let response = send(traceparent).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value = response.json().await.unwrap();
        ids.push(accepted["deliveryId"].as_str().unwrap().to_owned());
    }

    let scheduled_line = |id: &str| {
        logs.text()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|line| line["message"] == "delivery scheduled" && line["delivery_id"] == id)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines: Vec<Value> = ids.iter().filter_map(|id| scheduled_line(id)).collect();
        if lines.len() == ids.len() {
            break lines;
        }
        assert!(Instant::now() < deadline, "not scheduled in time:\n{}", logs.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines[0]["trace_id"], "5b8efff798038103d269b633813fc60c", "{}", lines[0]);
    assert_eq!(lines[1]["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{}", lines[1]);
    for line in &lines {
        let span_id = line["span_id"].as_str().expect("a span id");
        assert_eq!(span_id.len(), 16, "{line}");
        assert!(!["eee19b7ec3c1b174", "b7ad6b7169203331"].contains(&span_id), "the workflow's own span: {line}");
    }
    system.stop().await.unwrap();
}
