//! What `/metrics` shows of the running system: every service's scrape is valid Prometheus text
//! with the documented families, and one delivery moves the business counters by exactly one.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::Client;
use fabrikam::{System, SystemOptions};
use platform::clock::SystemClock;
use platform::prom_text::{self, Scrape};
use reqwest::StatusCode;
use serde_json::json;

async fn scrape(addr: SocketAddr) -> Scrape {
    let response = reqwest::get(format!("http://{addr}/metrics")).await.expect("/metrics answers");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    prom_text::parse(&text).unwrap_or_else(|e| panic!("{addr}/metrics is not Prometheus text: {e}\n{text}"))
}

/// The families docs/metrics.md lists, and whether each must show before anything unusual
/// happened (those marked *on event* appear only once their event has).
fn documented() -> Vec<(String, bool)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let rows: Vec<(String, bool)> = doc
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("| `")?.split('`').next()?;
            Some((name.to_owned(), !line.contains("*on event*")))
        })
        .collect();
    assert!(rows.len() > 30, "docs/metrics.md lists {} families", rows.len());
    rows
}

fn addresses(system: &System) -> [(&'static str, SocketAddr); 8] {
    let a = system.addresses;
    [
        ("gateway", a.gateway),
        ("ingestion", a.ingestion),
        ("workflow", a.workflow),
        ("package", a.package),
        ("dronescheduler", a.dronescheduler),
        ("delivery", a.delivery),
        ("deliveryhistory", a.deliveryhistory),
        ("account", a.account),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_moves_the_business_counters_by_one_and_every_scrape_is_valid() {
    platform::telemetry::init("fabrikam", platform::telemetry::LogFormat::Pretty);
    let dir = tempfile::tempdir().unwrap();
    let mut options = SystemOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
    // A fast clock: the flight takes seconds.
    options.fleet.time_scale = 300.0;
    let system = System::start(options, Arc::new(SystemClock)).await.expect("system starts");
    let gateway = Client::gateway(&system);
    // Every service answers with valid text before any traffic.
    for (service, addr) in addresses(&system) {
        let scraped = scrape(addr).await;
        assert!(scraped.has_family("process_cpu_seconds_total"), "{service}");
    }
    let before = scrape(system.addresses.gateway).await;

    let (status, accepted) = gateway
        .send(reqwest::Method::POST, "/api/deliveryrequests", Some(contracts::requests::reference_validation_request()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["deliveryId"].as_str().unwrap().to_owned();
    gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(10), |_| true).await;
    let notify = json!({ "emailAddress": "pat@contoso.com" });
    let (status, _) =
        gateway.send(reqwest::Method::POST, &format!("/api/deliveries/{id}/notifymerequests"), Some(notify)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let status_path = format!("/api/deliveries/{id}/status");
    gateway.eventually(&status_path, Duration::from_secs(60), |s| s["stage"] == "Completed").await;
    gateway.eventually(&format!("/api/deliveryhistory/{id}"), Duration::from_secs(10), |_| true).await;

    // The e-mail is sent after completion, and the backlog gauges refresh on a timer: wait for both.
    // Generous: on a loaded machine the mail outbox and the gauges' timers lag behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = scrape(system.addresses.gateway).await;
        let sent = now.sum("delivery_notifications_total", &[("channel", "email")])
            - before.sum("delivery_notifications_total", &[("channel", "email")]);
        // Events are counted consumed when received and acked once handled: wait for the last ack.
        let settled = [("drone-events", "delivery"), ("delivery-events", "deliveryhistory")].iter().all(|(q, g)| {
            let labels = [("queue", *q), ("group", *g)];
            now.sum("bus_messages_acked_total", &labels) == now.sum("bus_messages_consumed_total", &labels)
        });
        if sent >= 1.0 && settled && now.has_family("bus_consumer_lag_messages") && now.has_family("drones") {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "the notification, the last acks or the gauges never showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let moved = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    // Business: exactly one of each, and nothing cancelled or failed.
    assert_eq!(moved("deliveries_accepted_total", &[]), 1.0);
    assert_eq!(moved("deliveries_scheduled_total", &[]), 1.0);
    assert_eq!(moved("delivery_accept_to_scheduled_seconds_count", &[]), 1.0);
    assert_eq!(moved("deliveries_completed_total", &[]), 1.0);
    assert_eq!(moved("deliveries_cancelled_total", &[]), 0.0);
    assert_eq!(moved("deliveries_failed_total", &[]), 0.0);
    assert_eq!(moved("delivery_notifications_total", &[("channel", "email")]), 1.0);
    let drones = after.sum("drones", &[("state", "idle")]) + after.sum("drones", &[("state", "busy")]);
    assert_eq!(drones, 300.0, "every drone is idle or busy");

    // The bus: the request went through the queue once and was acked; the events were consumed.
    let requests = [("queue", "delivery-requests")];
    assert_eq!(moved("bus_messages_published_total", &[("queue", "delivery-requests"), ("outcome", "stored")]), 1.0);
    assert_eq!(moved("bus_messages_consumed_total", &requests), 1.0);
    assert_eq!(moved("bus_messages_acked_total", &requests), 1.0);
    assert_eq!(moved("bus_message_lateness_seconds_count", &requests), 1.0);
    for (stream, group) in [("drone-events", "delivery"), ("delivery-events", "deliveryhistory")] {
        let labels = [("queue", stream), ("group", group)];
        assert!(moved("bus_messages_consumed_total", &labels) >= 1.0, "{stream}/{group}");
        assert_eq!(moved("bus_messages_acked_total", &labels), moved("bus_messages_consumed_total", &labels));
    }

    // RED: the POST counted under its route template, as a 2xx.
    let post =
        [("service", "gateway"), ("route", "/api/deliveryrequests"), ("method", "POST"), ("status_class", "2xx")];
    assert_eq!(moved("http_server_requests_total", &post), 1.0);
    assert!(moved("downstream_calls_total", &[("service", "workflow"), ("downstream", "dronescheduler")]) >= 1.0);
    assert!(moved("downstream_calls_total", &[("service", "gateway"), ("downstream", "ingestion")]) >= 1.0);
    assert!(
        after.samples.iter().all(|s| s.labels.get("route").is_none_or(|r| !r.contains(&id))),
        "a raw path became a label"
    );

    // Every documented family that needs no unusual event is in the scrape.
    let missing: BTreeSet<String> = documented()
        .into_iter()
        .filter(|(name, always)| *always && !after.has_family(name))
        .map(|(name, _)| name)
        .collect();
    assert!(missing.is_empty(), "documented in docs/metrics.md but not scraped: {missing:?}");
    system.stop().await.unwrap();
}
