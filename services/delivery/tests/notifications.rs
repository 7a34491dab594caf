//! The notifications dispatcher against an embedded `delivery-events` stream, the service's own
//! HTTP API (to ask for notifications, finish deliveries and read the outbox back) and a
//! webhook receiver run by the test, which de-duplicates by `Idempotency-Key` as receivers are
//! expected to.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use chrono::{DateTime, TimeZone, Utc};
use contracts::events::{DELIVERY_EVENTS_STREAM, EventEnvelope};
use delivery::DeliveryStore;
use delivery::notifications::{self, NotificationOptions, Notifiers, WebhookNotifier};
use platform::backoff::Backoff;
use platform::bus::stream::{EventStream, StartAt, Subscription, open_stream};
use platform::bus::{OutgoingMessage, QueueOptions};
use platform::clock::ManualClock;
use platform::config::CommonArgs;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

/// How the receiver answers one call.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Takes the call (it counts as processed) and never answers: the sender's process dies
    /// before it hears back.
    Hang,
}

/// A webhook receiver: remembers every call, answers from its script (then `then`), and counts
/// a key as processed once it took the call, so a repeat of a processed key is a duplicate.
struct Receiver {
    calls: Mutex<Vec<(String, Value)>>,
    processed: Mutex<HashSet<String>>,
    script: Mutex<VecDeque<Answer>>,
    then: Answer,
}

impl Receiver {
    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }

    fn processed(&self) -> usize {
        self.processed.lock().unwrap().len()
    }
}

async fn hook(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: axum::Json<Value>) -> StatusCode {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    receiver.calls.lock().unwrap().push((key.clone(), body.0));
    let answer = receiver.script.lock().unwrap().pop_front().unwrap_or(receiver.then);
    match answer {
        Answer::Hang => {
            receiver.processed.lock().unwrap().insert(key);
            std::future::pending::<()>().await;
            StatusCode::OK
        }
        Answer::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            if status.is_success() {
                // A repeat of a processed key is answered 200 and dropped.
                receiver.processed.lock().unwrap().insert(key);
            }
            status
        }
    }
}

/// Starts a receiver on a free port; returns it and its URL (with a token the records must hide).
async fn receiver(script: Vec<Answer>, then: Answer) -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver {
        calls: Mutex::default(),
        processed: Mutex::default(),
        script: Mutex::new(script.into()),
        then,
    });
    let app = axum::Router::new().route("/hook", post(hook)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=s3cret", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

const GROUP: &str = notifications::DEFAULT_GROUP;

/// The service's store, router and `delivery-events` stream in a temp dir, a webhook receiver,
/// and dispatchers started (and crashed) on demand.
struct Harness {
    store: Arc<dyn DeliveryStore>,
    stream: Arc<dyn EventStream>,
    router: axum::Router,
    clock: ManualClock,
    receiver: Arc<Receiver>,
    webhook_url: String,
    subscription: Option<Arc<dyn Subscription>>,
    dispatcher: Option<(CancellationToken, JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(script: Vec<Answer>, then: Answer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            delivery::open_store(&format!("sqlite://{}", dir.path().join("delivery.db").display())).await.unwrap();
        let bus = format!("sqlite://{}", dir.path().join("bus.db").display());
        let stream = open_stream(&bus, DELIVERY_EVENTS_STREAM, delivery::STREAM_DEDUP_WINDOW).await.unwrap();
        let clock = ManualClock::new(noon());
        let router = delivery::router(store.clone(), stream.clone(), Arc::new(clock.clone()), &CommonArgs::default());
        let (receiver, webhook_url) = receiver(script, then).await;
        Self { store, stream, router, clock, receiver, webhook_url, subscription: None, dispatcher: None, _dir: dir }
    }

    /// Joins the group (a redelivery comes 1 s after a crash, not 30) and runs a dispatcher.
    async fn start(&mut self) {
        let options = QueueOptions { ack_wait: Duration::from_secs(1), ..notifications::queue_options() };
        let subscription = self.stream.subscribe(GROUP, StartAt::Beginning, options).await.unwrap();
        let webhook = WebhookNotifier::new(&self.webhook_url, Duration::from_secs(5)).unwrap();
        let options = NotificationOptions {
            concurrency: 4,
            backoff: Backoff { base: Duration::from_millis(10), max: Duration::from_millis(40) },
            max_age: Duration::from_secs(24 * 3600),
            drain: Duration::from_secs(2),
        };
        let shutdown = CancellationToken::new();
        let dispatcher = tokio::spawn(notifications::run(
            subscription.clone(),
            self.store.clone(),
            Notifiers::new(Some(webhook)),
            Arc::new(self.clock.clone()),
            options,
            shutdown.clone(),
        ));
        self.subscription = Some(subscription);
        self.dispatcher = Some((shutdown, dispatcher));
    }

    /// Stops the dispatcher as a shutdown does.
    async fn stop(&mut self) {
        let (shutdown, dispatcher) = self.dispatcher.take().expect("started");
        shutdown.cancel();
        dispatcher.await.unwrap();
    }

    /// Kills the dispatcher where it is, in-flight events and calls included.
    async fn crash(&mut self) {
        let (_, dispatcher) = self.dispatcher.take().expect("started");
        dispatcher.abort();
        assert!(dispatcher.await.unwrap_err().is_cancelled());
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, body, _) = platform::testing::call(&self.router, method, uri, body).await;
        (status, body)
    }

    /// Creates delivery `id` and has `asks` notify-me requests registered for it.
    async fn create(&self, id: &str, asks: &[Value]) {
        let (status, body) = self.call(Method::PUT, &format!("/api/deliveries/{id}"), Some(delivery(id))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for ask in asks {
            let uri = format!("/api/deliveries/{id}/notifymerequests");
            let (status, body) = self.call(Method::POST, &uri, Some(ask.clone())).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }

    /// Completes delivery `id` through the API, which publishes `DeliveryCompleted`.
    async fn complete(&self, id: &str) {
        let uri = format!("/api/deliveries/{id}/confirmations");
        assert_eq!(self.call(Method::POST, &uri, Some(confirmation())).await.0, StatusCode::OK);
    }

    /// The delivery's notifications as the internal route lists them.
    async fn notifications(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.call(Method::GET, &format!("/api/deliveries/{id}/notifications"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().expect("a list").clone()
    }

    /// The notifications of `id` once there are `expected` and none is pending any more.
    async fn settled(&self, id: &str, expected: usize) -> Vec<Value> {
        eventually(&format!("{expected} notifications of {id} settled"), || async {
            let listed = self.notifications(id).await;
            listed.len() == expected && listed.iter().all(|n| n["status"] != "pending")
        })
        .await;
        self.notifications(id).await
    }

    /// Waits until the group has settled every event published so far.
    async fn drained(&self) {
        let subscription = self.subscription.as_deref().expect("started");
        eventually("every delivery event settled", || async { subscription.pending().await.unwrap() == 0 }).await;
    }

    /// Publishes `id`'s finished event again under another message id (as after the stream's
    /// de-duplication window), so the dispatcher really gets it twice.
    async fn publish_copy(&self, id: &str, copy: &str) {
        let delivery = self.store.get(id).await.unwrap().unwrap();
        let tracking = self.store.tracking(id).await.unwrap();
        let confirmation = self.store.confirmation(id).await.unwrap();
        let (event, finished_at) =
            delivery::events::finished_event(delivery, tracking, confirmation, noon()).expect("finished");
        let message_id = format!("{id}:{}{copy}", event.kind());
        let envelope = EventEnvelope {
            message_id: message_id.clone(),
            delivery_id: id.to_owned(),
            occurred_at: finished_at,
            traceparent: None,
            event,
        };
        let payload = serde_json::to_vec(&envelope).unwrap().into();
        self.stream.publish(OutgoingMessage { id: message_id, payload }).await.unwrap();
    }
}

fn delivery(id: &str) -> Value {
    json!({
        "id": id,
        "owner": { "userId": "contoso", "accountId": "contoso" },
        "pickup": { "altitude": 0, "latitude": 47.60, "longitude": -122.33 },
        "dropoff": { "altitude": 0, "latitude": 47.62, "longitude": -122.35 },
        "deadline": "",
        "expedited": true,
        "confirmationRequired": "Picture",
        "droneId": "drone-0007"
    })
}

fn confirmation() -> Value {
    json!({
        "dateTime": "2026-03-15T12:00:00Z",
        "geoCoordinates": { "altitude": 0, "latitude": 47.62, "longitude": -122.35 },
        "confirmationType": "Picture",
        "confirmationBlob": "aGVsbG8="
    })
}

fn email_and_sms() -> Vec<Value> {
    vec![json!({ "emailAddress": "pat@contoso.com" }), json!({ "sms": "+1 425-555-0100" })]
}

/// Polls `condition` until it holds, for up to 10 s.
async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The listed notification on `channel`.
fn on<'a>(listed: &'a [Value], channel: &str) -> &'a Value {
    listed.iter().find(|n| n["channel"] == channel).unwrap_or_else(|| panic!("no {channel} notification: {listed:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_delivery_notifies_each_recipient_once_however_often_its_event_comes() {
    let mut h = Harness::new(vec![], Answer::Status(200)).await;
    h.create("d1", &email_and_sms()).await;
    // Finished before the dispatcher first runs: the new group reads it all the same.
    h.complete("d1").await;
    h.start().await;
    let listed = h.settled("d1", 4).await;

    let ids: Vec<&str> = listed.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "d1:DeliveryCompleted:email:0",
            "d1:DeliveryCompleted:sms:0",
            "d1:DeliveryCompleted:webhook:0",
            "d1:DeliveryCompleted:log:0"
        ]
    );
    for n in &listed {
        assert_eq!((&n["status"], &n["attempts"], &n["deliveryId"]), (&json!("sent"), &json!(1), &json!("d1")), "{n}");
        assert_eq!(n["eventType"], "DeliveryCompleted");
        assert_eq!(n["text"], "Fabrikam: your delivery d1 has arrived.");
        assert!(n["sentAt"].is_string() && n["createdAt"].is_string() && n["lastError"].is_null(), "{n}");
    }
    // The two recorded notifications: what would have gone to the customer's inbox and phone.
    assert_eq!(on(&listed, "email")["recipient"], "pat@contoso.com");
    assert_eq!(on(&listed, "sms")["recipient"], "+14255550100");
    let webhook = on(&listed, "webhook")["recipient"].as_str().unwrap().to_owned();
    assert!(webhook.ends_with("/hook") && !webhook.contains("s3cret"), "the record hides the URL's token: {webhook}");

    // One webhook call, keyed by the notification id, naming the delivery, its end and everyone.
    let calls = h.receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (key, body) = &calls[0];
    assert_eq!(key, "d1:DeliveryCompleted:webhook:0");
    assert_eq!(body["notificationId"], *key);
    assert_eq!(
        (&body["deliveryId"], &body["eventType"], &body["stage"]),
        (&json!("d1"), &json!("DeliveryCompleted"), &json!("Completed"))
    );
    assert_eq!(body["reason"], Value::Null);
    assert_eq!(
        body["recipients"],
        json!([{ "channel": "email", "address": "pat@contoso.com" }, { "channel": "sms", "address": "+14255550100" }])
    );

    // Published twice: a retried confirmation (the stream drops the copy), and the same event
    // under another message id (which the dispatcher does get). Nothing is sent again.
    h.complete("d1").await;
    h.publish_copy("d1", "#copy").await;
    h.drained().await;
    assert_eq!(h.receiver.calls().len(), 1);
    assert_eq!(h.notifications("d1").await, listed, "no record changed");

    // Restarted: the new dispatcher, in the same group, sends nothing again either.
    h.stop().await;
    h.start().await;
    h.publish_copy("d1", "#copy-after-restart").await;
    h.drained().await;
    assert_eq!(h.receiver.calls().len(), 1);
    assert_eq!(h.notifications("d1").await, listed);
    assert!(h.subscription.as_ref().unwrap().dead_letters(10).await.unwrap().is_empty());

    let metrics = platform::metrics::render();
    assert!(
        metrics.lines().any(|l| l.starts_with("delivery_notifications_total")
            && l.contains(r#"channel="webhook""#)
            && l.contains(r#"outcome="sent""#)),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("delivery_notifications_total") && l.contains(r#"outcome="duplicate""#))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_sending_and_marking_resends_once_with_the_same_key() {
    // The receiver takes the first call and the dispatcher dies before it hears back.
    let mut h = Harness::new(vec![Answer::Hang], Answer::Status(200)).await;
    h.create("d1", &email_and_sms()).await;
    h.start().await;
    h.complete("d1").await;
    eventually("the webhook called", || async { h.receiver.calls().len() == 1 }).await;
    h.crash().await;

    let listed = h.notifications("d1").await;
    assert_eq!(on(&listed, "email")["status"], "sent", "settled before the webhook's turn");
    assert_eq!(on(&listed, "sms")["status"], "sent");
    let webhook = on(&listed, "webhook");
    assert_eq!((&webhook["status"], &webhook["attempts"]), (&json!("pending"), &json!(0)), "sent, never marked");

    // Restarted: the event comes back once its lease runs out, and the webhook is called again,
    // with the same key, which the receiver recognises.
    h.start().await;
    let listed = h.settled("d1", 4).await;
    let calls = h.receiver.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, "d1:DeliveryCompleted:webhook:0");
    assert_eq!(calls[1].0, calls[0].0, "the repeat carries the same Idempotency-Key");
    assert_eq!(calls[1].1, calls[0].1, "and says the same");
    assert_eq!(h.receiver.processed(), 1, "so the receiver processed it once");
    for channel in ["email", "sms", "webhook", "log"] {
        let n = on(&listed, channel);
        assert_eq!((&n["status"], &n["attempts"]), (&json!("sent"), &json!(1)), "{n}");
    }
    h.drained().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_503_is_retried_until_it_takes_the_notification() {
    let mut h = Harness::new(vec![Answer::Status(503), Answer::Status(503)], Answer::Status(200)).await;
    h.create("d1", &email_and_sms()).await;
    h.start().await;
    h.complete("d1").await;
    let listed = h.settled("d1", 4).await;

    let calls = h.receiver.calls();
    assert_eq!(calls.len(), 3, "two refusals, then taken: {calls:?}");
    assert!(calls.iter().all(|(key, _)| key == "d1:DeliveryCompleted:webhook:0"));
    let webhook = on(&listed, "webhook");
    assert_eq!((&webhook["status"], &webhook["attempts"]), (&json!("sent"), &json!(3)));
    let last_error = webhook["lastError"].as_str().unwrap();
    assert!(last_error.contains("503") && !last_error.contains("s3cret"), "{last_error}");
    // The event came back twice; what was already sent was not sent again.
    for channel in ["email", "sms", "log"] {
        assert_eq!(on(&listed, channel)["attempts"], 1, "{channel}");
    }
    assert_eq!(listed.iter().filter(|n| n["status"] == "sent").count(), 4);
    h.drained().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_refusing_with_400_is_marked_failed_and_not_retried() {
    let mut h = Harness::new(vec![], Answer::Status(400)).await;
    h.create("d1", &email_and_sms()).await;
    h.start().await;
    h.complete("d1").await;
    let listed = h.settled("d1", 4).await;

    let webhook = on(&listed, "webhook");
    assert_eq!(
        (&webhook["status"], &webhook["attempts"], &webhook["sentAt"]),
        (&json!("failed"), &json!(1), &Value::Null)
    );
    assert!(webhook["lastError"].as_str().unwrap().contains("400"), "{webhook}");
    for channel in ["email", "sms", "log"] {
        assert_eq!(on(&listed, channel)["status"], "sent", "{channel}: a refused webhook holds nothing up");
    }
    // Acked, not retried and not dead-lettered.
    h.drained().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.receiver.calls().len(), 1);
    assert!(h.subscription.as_ref().unwrap().dead_letters(10).await.unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_deliveries_someone_asked_about_are_notified_with_their_reason() {
    let mut h = Harness::new(vec![], Answer::Status(200)).await;
    h.start().await;
    // Nobody asked: nothing is sent, and the route lists nothing.
    h.create("quiet", &[]).await;
    h.complete("quiet").await;
    // A failed delivery: the webhook carries the stage and the reason.
    h.create("d2", &[json!({ "emailAddress": "sam@contoso.com", "sms": "+44 20 7946 0958" })]).await;
    let closure = json!({ "delivery": delivery("d2"), "stage": "Failed", "reason": "no drone could carry it" });
    assert_eq!(h.call(Method::PUT, "/api/deliveries/d2/closure", Some(closure)).await.0, StatusCode::OK);
    let listed = h.settled("d2", 4).await;
    h.drained().await;

    assert!(h.notifications("quiet").await.is_empty());
    let calls = h.receiver.calls();
    assert_eq!(calls.len(), 1, "only the delivery someone asked about: {calls:?}");
    let body = &calls[0].1;
    assert_eq!(
        (&body["deliveryId"], &body["eventType"], &body["stage"]),
        (&json!("d2"), &json!("DeliveryFailed"), &json!("Failed"))
    );
    assert_eq!(body["reason"], "no drone could carry it");
    assert_eq!(on(&listed, "email")["reason"], "no drone could carry it");
    assert_eq!(on(&listed, "sms")["recipient"], "+442079460958");
    assert_eq!(on(&listed, "email")["text"], "Fabrikam: sorry, your delivery d2 could not be made.");

    let (status, problem) = h.call(Method::GET, "/api/deliveries/nope/notifications", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_finished_too_long_ago_is_not_notified_late() {
    let mut h = Harness::new(vec![], Answer::Status(200)).await;
    h.create("old", &email_and_sms()).await;
    h.complete("old").await;
    // The dispatcher first runs a day and a bit later (a new group replaying the stream).
    h.clock.advance(chrono::Duration::hours(25));
    h.start().await;
    let listed = h.settled("old", 4).await;
    for n in &listed {
        assert_eq!((&n["status"], &n["attempts"]), (&json!("failed"), &json!(0)), "{n}");
        assert!(n["lastError"].as_str().unwrap().starts_with("not sent within 86400 s"), "{n}");
    }
    assert!(h.receiver.calls().is_empty());
    h.drained().await;
    h.stop().await;
}
