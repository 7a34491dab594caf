//! The consumer against a real embedded stream and a real SQLite store: what it records, what
//! it ignores, what it dead-letters, how it rides out store failures, and that a new consumer
//! group rebuilds the same history from the beginning.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use contracts::delivery::Delivery;
use contracts::events::{DELIVERY_EVENTS_STREAM, DeliveryEvent, EventEnvelope, FinishedDelivery};
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};
use deliveryhistory::store::{HistoryQuery, Page, Recorded, StoreError};
use deliveryhistory::{ConsumerOptions, HistoryStore, Settings};
use platform::backoff::Backoff;
use platform::bus::stream::{EventStream, Subscription};
use platform::bus::{OutgoingMessage, Published};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Bus {
    dir: tempfile::TempDir,
    stream: Arc<dyn EventStream>,
}

async fn open_bus() -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bus.db", dir.path().display());
    let stream = platform::bus::stream::open_stream(&url, DELIVERY_EVENTS_STREAM, Duration::from_secs(600))
        .await
        .expect("open the embedded stream");
    Bus { dir, stream }
}

impl Bus {
    async fn store(&self, name: &str) -> Arc<dyn HistoryStore> {
        let url = format!("sqlite://{}/{name}.db", self.dir.path().display());
        deliveryhistory::open_store(&url).await.unwrap()
    }

    async fn publish(&self, event: DeliveryEvent, delivery_id: &str) -> Published {
        let message_id = format!("{delivery_id}:{}", event.kind());
        self.publish_as(&message_id, event, delivery_id).await
    }

    async fn publish_as(&self, message_id: &str, event: DeliveryEvent, delivery_id: &str) -> Published {
        let envelope = EventEnvelope {
            message_id: message_id.to_owned(),
            delivery_id: delivery_id.to_owned(),
            occurred_at: at(0),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            event,
        };
        self.publish_raw(message_id, serde_json::to_vec(&envelope).unwrap()).await
    }

    async fn publish_raw(&self, message_id: &str, payload: impl Into<Bytes>) -> Published {
        let event = OutgoingMessage { id: message_id.to_owned(), payload: payload.into() };
        self.stream.publish(event).await.expect("publish")
    }

    /// Starts a consumer of `group` feeding `store`.
    async fn consume(&self, group: &str, store: Arc<dyn HistoryStore>) -> Consumer {
        let settings = Settings { group: group.to_owned(), ..Settings::default() };
        let subscription = deliveryhistory::subscribe(self.stream.as_ref(), &settings).await.expect("subscribe");
        let options = ConsumerOptions {
            concurrency: 4,
            backoff: Backoff { base: Duration::from_millis(5), max: Duration::from_millis(20) },
            drain: Duration::from_secs(5),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(deliveryhistory::consumer::run(subscription.clone(), store, options, shutdown.clone()));
        Consumer { subscription, shutdown, task }
    }
}

struct Consumer {
    subscription: Arc<dyn Subscription>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Consumer {
    /// Waits until the group has settled every event published so far.
    async fn settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pending = self.subscription.pending().await.unwrap();
            if pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{pending} events still pending");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop: must return within the drain period.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the consumer stops on shutdown")
            .expect("the consumer did not panic");
    }
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

fn delivery(id: &str, owner: &str, stage: Option<DeliveryStage>) -> Delivery {
    Delivery {
        id: id.to_owned(),
        owner: UserAccount { user_id: owner.to_owned(), account_id: "acct".to_owned() },
        pickup: Location::new(47.61, -122.33, 0.0),
        dropoff: Location::new(47.62, -122.35, 0.0),
        deadline: String::new(),
        expedited: true,
        confirmation_required: ConfirmationType::None,
        drone_id: "drone-0001".to_owned(),
        stage,
        pickup_time: None,
        package_id: Some(format!("package-{id}")),
    }
}

fn finished(id: &str, owner: &str, stage: DeliveryStage, minute: i64) -> FinishedDelivery {
    FinishedDelivery {
        delivery: delivery(id, owner, Some(stage)),
        tracking: Vec::new(),
        confirmation: None,
        finished_at: at(minute),
    }
}

fn history_of(owner: &str) -> HistoryQuery {
    HistoryQuery { owner_id: owner.to_owned(), account_id: None, from: None, to: None, after: None, limit: 100 }
}

fn stages(page: &Page) -> Vec<(&str, DeliveryStage)> {
    page.items.iter().map(|f| (f.delivery.id.as_str(), f.delivery.stage.expect("stage"))).collect()
}

/// The stream every consumer test reads: each kind of event the history must handle.
async fn publish_a_day(bus: &Bus) {
    use DeliveryEvent::*;
    use DeliveryStage::*;
    // d1: created, then completed; the completion published twice under its id (stored once)
    // and once more under another id (a republish the stream cannot tell apart).
    bus.publish(DeliveryCreated(delivery("d1", "contoso", Some(Created))), "d1").await;
    let d1_done = DeliveryCompleted(finished("d1", "contoso", Completed, 10));
    assert_eq!(bus.publish(d1_done.clone(), "d1").await, Published::Stored);
    assert_eq!(bus.publish(d1_done.clone(), "d1").await, Published::Duplicate);
    bus.publish_as("d1:DeliveryCompleted:again", d1_done, "d1").await;
    // d2: created, rescheduled, cancelled.
    bus.publish(DeliveryCreated(delivery("d2", "contoso", Some(Created))), "d2").await;
    bus.publish(DeliveryRescheduled(delivery("d2", "contoso", Some(Rescheduled))), "d2").await;
    bus.publish(DeliveryCancelled(finished("d2", "contoso", Cancelled, 20)), "d2").await;
    // d3: failed, reopened by a replay, completed later.
    bus.publish(DeliveryFailed(finished("d3", "contoso", Failed, 5)), "d3").await;
    bus.publish(DeliveryCompleted(finished("d3", "contoso", Completed, 30)), "d3").await;
    // d4: completed, and a stale failure arriving after it.
    bus.publish(DeliveryCompleted(finished("d4", "contoso", Completed, 40)), "d4").await;
    bus.publish_as("d4:DeliveryFailed:stale", DeliveryFailed(finished("d4", "contoso", Failed, 1)), "d4").await;
    // The stage left out: taken from the event type.
    let mut unstaged = finished("d5", "fabrikam", Cancelled, 50);
    unstaged.delivery.stage = None;
    bus.publish(DeliveryCancelled(unstaged), "d5").await;
    // What cannot be read or filed.
    bus.publish_raw("garbage", &b"not json at all"[..]).await;
    let unknown_type = r#"{"messageId":"x","deliveryId":"d9","occurredAt":"2026-03-15T12:00:00Z","type":"DeliveryExploded","body":{}}"#;
    bus.publish_raw("unknown-type", unknown_type.as_bytes().to_vec()).await;
    bus.publish_as("mismatch", DeliveryCompleted(finished("d6", "contoso", Completed, 60)), "d7").await;
}

fn expected_contoso() -> Vec<(&'static str, DeliveryStage)> {
    use DeliveryStage::*;
    vec![("d1", Completed), ("d2", Cancelled), ("d3", Completed), ("d4", Completed)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_are_recorded_once_and_everything_else_settled() {
    platform::metrics::handle();
    let bus = open_bus().await;
    publish_a_day(&bus).await;
    let store = bus.store("history").await;
    let consumer = bus.consume("deliveryhistory", store.clone()).await;
    consumer.settled().await;

    let contoso = store.list(&history_of("contoso")).await.unwrap();
    assert_eq!(stages(&contoso), expected_contoso());
    assert_eq!(contoso.next, None);
    assert_eq!(store.get("d1").await.unwrap(), Some(finished("d1", "contoso", DeliveryStage::Completed, 10)));
    assert_eq!(store.get("d3").await.unwrap().unwrap().finished_at, at(30), "the later finish won");
    assert_eq!(store.get("d4").await.unwrap().unwrap().finished_at, at(40), "the stale one did not");
    let d5 = store.get("d5").await.unwrap().expect("recorded");
    assert_eq!(d5.delivery.stage, Some(DeliveryStage::Cancelled));
    for never in ["d6", "d7", "d9"] {
        assert_eq!(store.get(never).await.unwrap(), None, "{never}");
    }

    let mut dead = consumer.subscription.dead_letters(10).await.unwrap();
    dead.sort_by(|a, b| a.id.cmp(&b.id));
    let reasons: Vec<(&str, &str)> = dead.iter().map(|d| (d.id.as_str(), d.last_error.as_str())).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].0 == "garbage" && reasons[0].1.starts_with("unreadable event"), "{reasons:?}");
    assert!(reasons[1].0 == "mismatch" && reasons[1].1.contains("\"d7\""), "{reasons:?}");
    assert!(reasons[2].0 == "unknown-type" && reasons[2].1.contains("DeliveryExploded"), "{reasons:?}");

    // A finish arriving while it runs is recorded too.
    bus.publish(DeliveryEvent::DeliveryCompleted(finished("d8", "contoso", DeliveryStage::Completed, 70)), "d8").await;
    consumer.settled().await;
    assert!(store.get("d8").await.unwrap().is_some());
    consumer.stop().await;

    let metrics = platform::metrics::render();
    // ("replaced" depends on the order concurrent handlers happen to take.)
    for outcome in ["recorded", "unchanged", "ignored", "dead_lettered"] {
        let series = format!("outcome=\"{outcome}\"");
        assert!(
            metrics.lines().any(|l| l.starts_with("deliveryhistory_events_total") && l.contains(&series)),
            "{outcome} missing from:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_on_a_fresh_store_rebuilds_the_same_history() {
    let bus = open_bus().await;
    publish_a_day(&bus).await;
    let first = bus.store("first").await;
    let consumer = bus.consume("deliveryhistory", first.clone()).await;
    consumer.settled().await;
    consumer.stop().await;

    let rebuilt = bus.store("rebuilt").await;
    let consumer = bus.consume("deliveryhistory-rebuild", rebuilt.clone()).await;
    consumer.settled().await;
    for owner in ["contoso", "fabrikam"] {
        let before = first.list(&history_of(owner)).await.unwrap();
        assert_eq!(rebuilt.list(&history_of(owner)).await.unwrap(), before, "{owner}");
    }
    assert_eq!(stages(&rebuilt.list(&history_of("contoso")).await.unwrap()), expected_contoso());
    assert_eq!(consumer.subscription.dead_letters(10).await.unwrap().len(), 3);
    consumer.stop().await;

    // The first group kept its place: restarted, it has nothing left to read.
    let again = bus.consume("deliveryhistory", first.clone()).await;
    assert_eq!(again.subscription.pending().await.unwrap(), 0);
    again.stop().await;
}

/// A store whose first `failures` records fail, as a database that is briefly away.
struct Flaky {
    inner: Arc<dyn HistoryStore>,
    failures: AtomicUsize,
    attempts: AtomicUsize,
}

#[async_trait]
impl HistoryStore for Flaky {
    async fn record(&self, finished: &FinishedDelivery) -> Result<Recorded, StoreError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(StoreError::PoolTimedOut);
        }
        self.inner.record(finished).await
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<FinishedDelivery>, StoreError> {
        self.inner.get(delivery_id).await
    }

    async fn list(&self, query: &HistoryQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_are_retried_until_the_finish_is_recorded() {
    let bus = open_bus().await;
    let flaky = Arc::new(Flaky {
        inner: bus.store("history").await,
        failures: AtomicUsize::new(3),
        attempts: AtomicUsize::new(0),
    });
    bus.publish(DeliveryEvent::DeliveryCompleted(finished("d1", "contoso", DeliveryStage::Completed, 10)), "d1").await;
    let consumer = bus.consume("deliveryhistory", flaky.clone()).await;
    consumer.settled().await;
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 4, "three failures, then the record");
    assert!(flaky.get("d1").await.unwrap().is_some());
    assert!(consumer.subscription.dead_letters(10).await.unwrap().is_empty());
    consumer.stop().await;
}

/// The status code of `GET path` on the server at `addr`, over a bare HTTP/1.1 connection.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    connection.read_to_string(&mut response).await.expect("read");
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_consumes_serves_and_stops_on_shutdown() {
    use clap::Parser;
    let bus = open_bus().await;
    let dir = bus.dir.path();
    let config = deliveryhistory::Config::try_parse_from([
        "fabrikam-deliveryhistory",
        "--bus-url",
        &format!("sqlite://{}/bus.db", dir.display()),
        "--database-url",
        &format!("sqlite://{}/service.db", dir.display()),
        "--group",
        "service-test",
    ])
    .expect("flags parse");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(deliveryhistory::run(config, listener, shutdown.clone()));
    bus.publish(DeliveryEvent::DeliveryCompleted(finished("d1", "contoso", DeliveryStage::Completed, 10)), "d1").await;

    let deadline = Instant::now() + Duration::from_secs(20);
    while status_of(addr, "/api/deliveryhistory/d1").await != 200 {
        assert!(!service.is_finished(), "the service stopped: {:?}", service.await);
        assert!(Instant::now() < deadline, "the service never recorded d1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_of(addr, "/healthz/ready").await, 200, "store and stream answer");

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), service).await.expect("stops on shutdown");
    stopped.expect("no panic").expect("a clean stop");
}
