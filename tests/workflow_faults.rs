//! The workflow killed at each step boundary, against the real package, dronescheduler and
//! delivery services: after a restart every delivery is carried out exactly once (one package,
//! one drone, one delivery record).
//!
//! Each downstream sits behind a fault proxy that can hold a call forever, before or after
//! passing it on. The workflow runs on its own tokio runtime; "killing" it drops that runtime
//! with every task mid-flight, as a crashed process would leave things. The restarted
//! workflow opens the same queue and state files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use contracts::messages::{DELIVERY_REQUESTS_QUEUE, DeliveryCommand, DeliveryRequestEnvelope};
use contracts::requests::DeliveryRequest;
use platform::bus::{OutgoingMessage, Queue, QueueOptions, SqliteQueue};
use platform::clock::SystemClock;
use platform::config::CommonArgs;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use workflow::state::WorkflowStatus;

/// Where a proxied call is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The service never sees the call.
    BeforeForwarding,
    /// The service carries it out; its answer never reaches the workflow.
    AfterForwarding,
}

#[derive(Clone)]
struct Proxy {
    target: String,
    client: reqwest::Client,
    hold: Arc<Mutex<Option<(String, Hold)>>>,
    held: Arc<AtomicUsize>,
}

impl Proxy {
    fn hold(&self, route: &str, hold: Hold) {
        *self.hold.lock().unwrap() = Some((route.to_owned(), hold));
    }

    fn release(&self) {
        *self.hold.lock().unwrap() = None;
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let content_type = request.headers().get("content-type").cloned();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
    let key = format!("{method} {path}");
    let hold = proxy.hold.lock().unwrap().clone().filter(|(route, _)| key.starts_with(route.as_str())).map(|h| h.1);
    if hold == Some(Hold::BeforeForwarding) {
        proxy.held.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let mut outgoing = proxy.client.request(method, format!("{}{path}", proxy.target)).body(body);
    if let Some(content_type) = content_type {
        outgoing = outgoing.header("content-type", content_type);
    }
    let response = outgoing.send().await.expect("the real service answers");
    let status = response.status();
    let content_type = response.headers().get("content-type").cloned();
    let bytes = response.bytes().await.unwrap();
    if hold == Some(Hold::AfterForwarding) {
        proxy.held.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let mut answer = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        answer.headers_mut().insert("content-type", content_type);
    }
    answer
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn proxy_to(target: String) -> (Proxy, String) {
    let proxy = Proxy { target, client: reqwest::Client::new(), hold: Arc::default(), held: Arc::default() };
    let url = serve(axum::Router::new().fallback(forward).with_state(proxy.clone())).await;
    (proxy, url)
}

/// The three real services on SQLite, each behind its own proxy.
struct Services {
    package: (Proxy, String),
    drones: (Proxy, String),
    deliveries: (Proxy, String),
    direct: [String; 3],
}

async fn services(dir: &Path) -> Services {
    let url = |file: &str| format!("sqlite://{}", dir.join(file).display());
    let common = CommonArgs::default();
    let clock = Arc::new(SystemClock);
    let fleet = dronescheduler::FleetConfig::default();
    let package =
        serve(package::router(package::open_store(&url("package.db"), clock.clone()).await.unwrap(), &common)).await;
    let drones = serve(dronescheduler::router(
        dronescheduler::open_store(&url("dronescheduler.db"), &fleet).await.unwrap(),
        &fleet,
        clock.clone(),
        &common,
    ))
    .await;
    let events = platform::bus::stream::open_stream(
        &url("bus.db"),
        contracts::events::DELIVERY_EVENTS_STREAM,
        delivery::STREAM_DEDUP_WINDOW,
    )
    .await
    .unwrap();
    let deliveries =
        serve(delivery::router(delivery::open_store(&url("delivery.db")).await.unwrap(), events, clock, &common)).await;
    Services {
        package: proxy_to(package.clone()).await,
        drones: proxy_to(drones.clone()).await,
        deliveries: proxy_to(deliveries.clone()).await,
        direct: [package, drones, deliveries],
    }
}

fn queue_options() -> QueueOptions {
    QueueOptions {
        ack_wait: Duration::from_secs(1),
        poll_interval: Duration::from_millis(10),
        ..QueueOptions::default()
    }
}

/// A workflow "process": its own runtime, so killing it stops every task it started.
struct WorkflowProcess {
    runtime: Option<tokio::runtime::Runtime>,
}

impl WorkflowProcess {
    fn start(dir: PathBuf, endpoints: workflow::Endpoints) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.spawn(async move {
            let queue: Arc<dyn Queue> = Arc::new(
                SqliteQueue::open(&dir.join("bus.db"), DELIVERY_REQUESTS_QUEUE, queue_options()).await.unwrap(),
            );
            let store = workflow::open_store(&format!("sqlite://{}", dir.join("workflow.db").display())).await.unwrap();
            let settings =
                workflow::Settings { ack_wait_secs: 1, backoff_base_ms: 20, backoff_max_secs: 1, ..Default::default() };
            let processor = workflow::processor(&endpoints, &settings, store, Arc::new(SystemClock));
            let options = settings.consumer_options(Duration::from_secs(1));
            workflow::consumer::run(queue, processor, options, CancellationToken::new()).await;
        });
        Self { runtime: Some(runtime) }
    }

    /// As abrupt as a crash: every task is dropped wherever it is.
    fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for WorkflowProcess {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn request(package_id: &str) -> DeliveryRequest {
    serde_json::from_value(serde_json::json!({
        "ownerId": "contoso",
        "pickupLocation": "47.60,-122.33",
        "dropOffLocation": "47.62,-122.35",
        "pickupTime": "2026-11-27T10:00:00Z",
        "deadline": "",
        "expedited": false,
        "confirmationRequired": "None",
        "packageInfo": { "packageId": package_id, "size": "small", "weight": 2.0, "tag": "" }
    }))
    .unwrap()
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the workflow while the call matching `route` is held at `hold`, restarts it, and
/// checks that the delivery ends up scheduled exactly once.
async fn killed_while(route: &str, hold: Hold) {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let proxies = [&services.package.0, &services.drones.0, &services.deliveries.0];
    let endpoints = workflow::Endpoints {
        package: services.package.1.clone(),
        dronescheduler: services.drones.1.clone(),
        delivery: services.deliveries.1.clone(),
    };
    for proxy in proxies {
        proxy.hold(route, hold);
    }
    let queue = SqliteQueue::open(&dir.path().join("bus.db"), DELIVERY_REQUESTS_QUEUE, queue_options()).await.unwrap();
    let id = format!("d-{}", uuid::Uuid::new_v4());
    let envelope = DeliveryRequestEnvelope {
        message_id: format!("delivery:{id}"),
        delivery_id: id.clone(),
        occurred_at: Utc::now(),
        traceparent: None,
        account_id: None,
        command: DeliveryCommand::Delivery(request("pkg-1")),
    };
    queue
        .publish(OutgoingMessage {
            id: envelope.message_id.clone(),
            payload: serde_json::to_vec(&envelope).unwrap().into(),
        })
        .await
        .unwrap();

    let first = WorkflowProcess::start(dir.path().to_owned(), endpoints.clone());
    wait_for(&format!("the workflow to reach {route}"), Duration::from_secs(10), async || {
        proxies.iter().any(|p| p.held.load(Ordering::SeqCst) > 0)
    })
    .await;
    first.kill();
    for proxy in proxies {
        proxy.release();
    }
    let _second = WorkflowProcess::start(dir.path().to_owned(), endpoints);
    wait_for("the queue to drain after the restart", Duration::from_secs(20), async || {
        queue.depth().await.unwrap() == 0
    })
    .await;

    let [package_url, drones_url, deliveries_url] = &services.direct;
    let (status, delivery) = get(&format!("{deliveries_url}/api/deliveries/{id}")).await;
    assert_eq!(status, 200, "the delivery exists: {delivery}");
    let (_, fleet) = get(&format!("{drones_url}/api/drones")).await;
    let holding: Vec<&Value> =
        fleet.as_array().unwrap().iter().filter(|d| d["currentDeliveryId"] == id.as_str()).collect();
    assert_eq!(holding.len(), 1, "exactly one drone holds the delivery: {holding:?}");
    assert_eq!(delivery["droneId"], holding[0]["id"], "the delivery names that drone");
    let (status, _) = get(&format!("{package_url}/api/packages/pkg-1")).await;
    assert_eq!(status, 200, "the package is stored");
    let (_, summary) = get(&format!(
        "{deliveries_url}/api/deliveries/summary?ownerId=contoso&year={}&month={}",
        Utc::now().format("%Y"),
        Utc::now().format("%-m")
    ))
    .await;
    assert_eq!(summary["count"], 1, "one delivery record: {summary}");
    assert!(queue.dead_letters(10).await.unwrap().is_empty());
    let store = workflow::open_store(&format!("sqlite://{}", dir.path().join("workflow.db").display())).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().status, WorkflowStatus::Scheduled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_package_is_stored() {
    killed_while("PUT /api/packages/", Hold::BeforeForwarding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_package_is_stored() {
    killed_while("PUT /api/packages/", Hold::AfterForwarding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_drone_is_assigned() {
    killed_while("PUT /api/dronedeliveries/", Hold::AfterForwarding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_delivery_is_created() {
    killed_while("PUT /api/deliveries/", Hold::AfterForwarding).await;
}
