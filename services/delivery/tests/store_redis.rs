//! The delivery store's behaviour suite against Redis, plus what only Redis does: expiry of
//! finished deliveries, key prefixes, several processes on one server.
//!
//! Runs when `FABRIKAM_TEST_REDIS_URL` is set (e.g. `redis://127.0.0.1:6379`); skipped with a
//! note otherwise. Each test uses its own key prefix and deletes its keys when it ends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use contracts::delivery::{Confirmation, Delivery, NotifyMeRequest};
use contracts::events::Flight;
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};
use delivery::notifications::{Channel, Finish, Notification, Outcome};
use delivery::store::conformance::DeliveryStoreHarness;
use delivery::store::{Changed, Closed, DEFAULT_COMPLETED_TTL, Upserted};
use delivery::{DeliveryStore, RedisDeliveryStore};
use platform::query::Month;
use platform::testenv::{self, REDIS_URL};
use redis::aio::MultiplexedConnection;

const SUITE: &str = "delivery store on Redis";

/// Opens stores on the server at `url`, each under a fresh prefix whose keys are deleted when
/// the harness is dropped, when the test ends, whether it passed or not.
struct RedisHarness {
    url: String,
    cleanup: testenv::Cleanup,
}

impl RedisHarness {
    fn new(url: String) -> Self {
        Self { url, cleanup: testenv::Cleanup::new() }
    }

    /// `None` (after a SKIPPED note) when the variable is unset.
    fn from_env() -> Option<Self> {
        testenv::server_url(REDIS_URL, SUITE).map(Self::new)
    }

    fn fresh_prefix(&self) -> String {
        let prefix = testenv::unique_name("t");
        self.cleanup.redis_keys(&self.url, &prefix);
        prefix
    }

    async fn store(&self, prefix: &str, completed_ttl: Duration) -> RedisDeliveryStore {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}prefix={prefix}", self.url);
        RedisDeliveryStore::open(&url, completed_ttl).await.expect("open redis delivery store")
    }

    /// A plain connection to look at the keys the store wrote.
    async fn raw(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url.as_str()).expect("a valid Redis URL");
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {} did not answer ({e}); unset {REDIS_URL} to skip", self.url))
    }
}

#[async_trait]
impl DeliveryStoreHarness for RedisHarness {
    async fn open(&self) -> Arc<dyn DeliveryStore> {
        // A fresh prefix is a fresh, empty store on the shared server.
        let prefix = self.fresh_prefix();
        let store = self.store(&prefix, DEFAULT_COMPLETED_TTL).await;
        // Fail here, naming the server, rather than in the middle of a case.
        store
            .ping()
            .await
            .unwrap_or_else(|e| panic!("Redis at {} did not answer ({e}); unset {REDIS_URL} to skip", self.url));
        Arc::new(store)
    }
}

delivery::delivery_store_conformance_tests!(optional: RedisHarness::from_env());

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

fn delivery(id: &str) -> Delivery {
    Delivery {
        id: id.to_owned(),
        owner: UserAccount { user_id: "u1".to_owned(), account_id: "a1".to_owned() },
        pickup: Location::new(47.60, -122.33, 0.0),
        dropoff: Location::new(47.62, -122.35, 0.0),
        deadline: String::new(),
        expedited: false,
        confirmation_required: ConfirmationType::None,
        drone_id: "drone-0001".to_owned(),
        stage: None,
        pickup_time: None,
        package_id: None,
    }
}

fn confirmation() -> Confirmation {
    Confirmation {
        date_time: at(15, 13),
        geo_coordinates: Location::new(47.62, -122.35, 0.0),
        confirmation_type: ConfirmationType::Picture,
        confirmation_blob: "aGVsbG8=".to_owned(),
    }
}

fn notify() -> NotifyMeRequest {
    NotifyMeRequest { email_address: Some("pat@contoso.com".to_owned()), sms: None }
}

async fn pttl(raw: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(raw).await.unwrap()
}

async fn key_type(raw: &mut MultiplexedConnection, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query_async(raw).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_the_documented_layout_and_expire_once_finished() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let p = h.fresh_prefix();
    let hour = Duration::from_secs(3600);
    let store = h.store(&p, hour).await;
    let mut raw = h.raw().await;

    store.upsert(delivery("d1"), at(15, 12)).await.unwrap();
    assert!(store.add_notify_request("d1", &notify(), at(15, 12)).await.unwrap());
    let (record, tracking, notify_key, confirmation_key) = (
        format!("{p}:delivery:{{d1}}"),
        format!("{p}:delivery:{{d1}}:tracking"),
        format!("{p}:delivery:{{d1}}:notify"),
        format!("{p}:delivery:{{d1}}:confirmation"),
    );
    let monthly = format!("{p}:monthly:2026-03:u1");
    let monthly_of_account = format!("{p}:monthly-account:2026-03:2:a1:u1");
    assert_eq!(key_type(&mut raw, &record).await, "hash");
    assert_eq!(key_type(&mut raw, &tracking).await, "list");
    assert_eq!(key_type(&mut raw, &notify_key).await, "list");
    assert_eq!(key_type(&mut raw, &monthly).await, "set");
    assert_eq!(key_type(&mut raw, &monthly_of_account).await, "set");
    for key in [&record, &tracking, &notify_key] {
        assert_eq!(pttl(&mut raw, key).await, -1, "{key} must not expire while the delivery is live");
    }
    for key in [&monthly, &monthly_of_account] {
        let month_ttl = pttl(&mut raw, key).await;
        assert!(month_ttl > 399 * 24 * 3_600_000, "{key} outlives finished deliveries: {month_ttl} ms");
    }

    store.confirm("d1", &confirmation(), at(15, 13)).await.unwrap();
    assert_eq!(key_type(&mut raw, &confirmation_key).await, "string");
    for key in [&record, &tracking, &notify_key, &confirmation_key] {
        let ttl = pttl(&mut raw, key).await;
        assert!(ttl > 0 && ttl <= 3_600_000, "{key} expires within the completed TTL once completed: {ttl} ms");
    }

    // Finished before anyone asked to be notified: the list made afterwards expires with the rest.
    store.upsert(delivery("d2"), at(15, 12)).await.unwrap();
    store.cancel("d2", at(15, 13)).await.unwrap();
    assert!(store.add_notify_request("d2", &notify(), at(15, 14)).await.unwrap());
    let ttl = pttl(&mut raw, &format!("{p}:delivery:{{d2}}:notify")).await;
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
    // A PUT of a finished delivery keeps its expiry.
    assert_eq!(store.upsert(delivery("d2"), at(15, 15)).await.unwrap(), Upserted::Updated);
    assert!(pttl(&mut raw, &format!("{p}:delivery:{{d2}}")).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_expires_like_a_finished_one() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let p = h.fresh_prefix();
    let hour = Duration::from_secs(3600);
    let store = h.store(&p, hour).await;
    let mut raw = h.raw().await;
    let expires_within_the_ttl = async |raw: &mut MultiplexedConnection, key: &str| {
        let ttl = pttl(raw, key).await;
        assert!(ttl > 0 && ttl <= 3_600_000, "{key} expires within the completed TTL once failed: {ttl} ms");
    };

    // Created directly as Failed by a closure: finished from the start.
    let created = store.close(delivery("new"), DeliveryStage::Failed, "rejected", at(15, 12)).await.unwrap();
    assert!(matches!(created, Closed::Created(_)), "{created:?}");
    expires_within_the_ttl(&mut raw, &format!("{p}:delivery:{{new}}")).await;
    expires_within_the_ttl(&mut raw, &format!("{p}:delivery:{{new}}:tracking")).await;
    assert!(store.add_notify_request("new", &notify(), at(15, 13)).await.unwrap());
    expires_within_the_ttl(&mut raw, &format!("{p}:delivery:{{new}}:notify")).await;
    for key in [format!("{p}:monthly:2026-03:u1"), format!("{p}:monthly-account:2026-03:2:a1:u1")] {
        let month_ttl = pttl(&mut raw, &key).await;
        assert!(month_ttl > 399 * 24 * 3_600_000, "{key} keeps its own TTL: {month_ttl} ms");
    }

    // A live delivery that fails.
    store.upsert(delivery("live"), at(15, 12)).await.unwrap();
    assert!(store.add_notify_request("live", &notify(), at(15, 12)).await.unwrap());
    assert_eq!(pttl(&mut raw, &format!("{p}:delivery:{{live}}")).await, -1);
    let failed = store.close(delivery("live"), DeliveryStage::Failed, "deadline passed", at(15, 13)).await.unwrap();
    assert!(matches!(failed, Closed::Done(_)), "{failed:?}");
    for suffix in ["", ":tracking", ":notify"] {
        expires_within_the_ttl(&mut raw, &format!("{p}:delivery:{{live}}{suffix}")).await;
    }

    // Reopened by a PUT (a replayed request): live again, so it no longer expires.
    store.upsert(delivery("live"), at(15, 14)).await.unwrap();
    for suffix in ["", ":tracking", ":notify"] {
        assert_eq!(pttl(&mut raw, &format!("{p}:delivery:{{live}}{suffix}")).await, -1, "{suffix}");
    }

    // A PUT creating a live delivery still never expires.
    store.upsert(delivery("other"), at(15, 12)).await.unwrap();
    assert_eq!(pttl(&mut raw, &format!("{p}:delivery:{{other}}")).await, -1);
    assert_eq!(pttl(&mut raw, &format!("{p}:delivery:{{other}}:tracking")).await, -1);
}

fn flight(departed_at: DateTime<Utc>) -> Flight {
    let minutes = |m| departed_at + chrono::Duration::minutes(m);
    Flight {
        drone_id: "drone-0001".to_owned(),
        depot: Location::new(47.55, -122.30, 0.0),
        origin: None,
        carrying: false,
        pickup: Location::new(47.60, -122.33, 0.0),
        dropoff: Location::new(47.62, -122.35, 0.0),
        speed_mph: 40.0,
        time_scale: 60.0,
        departed_at,
        pickup_at: minutes(2),
        dropoff_at: minutes(4),
        back_at: minutes(6),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_expires_with_its_delivery_or_without_one() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let p = h.fresh_prefix();
    let hour = Duration::from_secs(3600);
    let store = h.store(&p, hour).await;
    let mut raw = h.raw().await;
    let within_the_ttl = |ttl: i64| ttl > 0 && ttl <= 3_600_000;
    let key = |id: &str| format!("{p}:delivery:{{{id}}}:flight");

    // Recorded before the delivery exists: it expires unless the delivery comes.
    assert!(store.record_flight("d1", &flight(at(15, 12)), at(15, 12)).await.unwrap());
    assert_eq!(key_type(&mut raw, &key("d1")).await, "hash");
    assert!(within_the_ttl(pttl(&mut raw, &key("d1")).await));
    // The delivery is created live: the flight is kept as long as it is.
    store.upsert(delivery("d1"), at(15, 12)).await.unwrap();
    assert_eq!(pttl(&mut raw, &key("d1")).await, -1);
    // Re-planned while live: still kept.
    assert!(store.record_flight("d1", &flight(at(15, 13)), at(15, 13)).await.unwrap());
    assert_eq!(pttl(&mut raw, &key("d1")).await, -1);
    // Finished: it expires with the delivery.
    store.confirm("d1", &confirmation(), at(15, 14)).await.unwrap();
    assert!(within_the_ttl(pttl(&mut raw, &key("d1")).await));
    // A late re-plan of a finished delivery takes the delivery's remaining time.
    assert!(store.record_flight("d1", &flight(at(15, 15)), at(15, 15)).await.unwrap());
    assert!(within_the_ttl(pttl(&mut raw, &key("d1")).await));

    // Failed, then reopened by a PUT: kept again.
    assert!(store.record_flight("d2", &flight(at(15, 12)), at(15, 12)).await.unwrap());
    store.upsert(delivery("d2"), at(15, 12)).await.unwrap();
    store.close(delivery("d2"), DeliveryStage::Failed, "gave up", at(15, 13)).await.unwrap();
    assert!(within_the_ttl(pttl(&mut raw, &key("d2")).await));
    store.upsert(delivery("d2"), at(15, 14)).await.unwrap();
    assert_eq!(pttl(&mut raw, &key("d2")).await, -1);

    // A closure creating the delivery directly in a final stage: the flight expires with it.
    assert!(store.record_flight("d3", &flight(at(15, 12)), at(15, 12)).await.unwrap());
    let created = store.close(delivery("d3"), DeliveryStage::Failed, "gave up", at(15, 13)).await.unwrap();
    assert!(matches!(created, Closed::Created(_)), "{created:?}");
    assert!(within_the_ttl(pttl(&mut raw, &key("d3")).await));
    assert_eq!(store.flight("d3").await.unwrap(), Some(flight(at(15, 12))), "still readable meanwhile");
}

fn notification(id: &str) -> Notification {
    Notification {
        id: format!("{id}:DeliveryCompleted:email:0"),
        delivery_id: id.to_owned(),
        event: Finish::Completed,
        finished_at: at(15, 13),
        channel: Channel::Email,
        recipient: "pat@contoso.com".to_owned(),
        text: format!("Fabrikam: your delivery {id} has arrived."),
        recipients: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_follow_the_documented_layout_and_expire_with_their_delivery() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let p = h.fresh_prefix();
    let hour = Duration::from_secs(3600);
    let store = h.store(&p, hour).await;
    let mut raw = h.raw().await;
    let within_the_ttl = |ttl: i64| ttl > 0 && ttl <= 3_600_000;

    store.upsert(delivery("d1"), at(15, 12)).await.unwrap();
    store.confirm("d1", &confirmation(), at(15, 13)).await.unwrap();
    let record_ttl = pttl(&mut raw, &format!("{p}:delivery:{{d1}}")).await;
    store.record_notification(&notification("d1"), at(15, 14)).await.unwrap();
    let (list, record) = (
        format!("{p}:delivery:{{d1}}:notifications"),
        format!("{p}:delivery:{{d1}}:notification:d1:DeliveryCompleted:email:0"),
    );
    assert_eq!(key_type(&mut raw, &list).await, "list");
    assert_eq!(key_type(&mut raw, &record).await, "hash");
    for key in [&list, &record] {
        let ttl = pttl(&mut raw, key).await;
        assert!(within_the_ttl(ttl) && ttl <= record_ttl, "{key} expires with the finished delivery: {ttl} ms");
    }
    // Marking keeps the expiry.
    assert!(store.mark_notification("d1", "d1:DeliveryCompleted:email:0", &Outcome::Sent, at(15, 15)).await.unwrap());
    assert!(within_the_ttl(pttl(&mut raw, &record).await));

    // A delivery live again (reopened) or gone: the records still expire, after the completed TTL.
    store.upsert(delivery("d2"), at(15, 12)).await.unwrap();
    store.record_notification(&notification("d2"), at(15, 14)).await.unwrap();
    store.record_notification(&notification("gone"), at(15, 14)).await.unwrap();
    for id in ["d2", "gone"] {
        for suffix in [":notifications".to_owned(), format!(":notification:{id}:DeliveryCompleted:email:0")] {
            let key = format!("{p}:delivery:{{{id}}}{suffix}");
            assert!(within_the_ttl(pttl(&mut raw, &key).await), "{key}");
        }
    }
    assert_eq!(pttl(&mut raw, &format!("{p}:delivery:{{d2}}")).await, -1, "the live delivery itself does not expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_count_outlives_an_expired_delivery() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let store = h.store(&h.fresh_prefix(), Duration::from_millis(50)).await;
    store.upsert(delivery("d1"), at(15, 12)).await.unwrap();
    store.upsert(delivery("d2"), at(16, 12)).await.unwrap();
    assert!(matches!(store.cancel("d1", at(15, 13)).await.unwrap(), Changed::Done(_)));

    // The one test that waits: for Redis to expire the finished delivery.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.get("d1").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "d1 did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.tracking("d1").await.unwrap().is_empty());
    assert_eq!(store.cancel("d1", at(15, 14)).await.unwrap(), Changed::NotFound);
    let march = Month { year: 2026, month: 3 };
    assert_eq!(store.count(None, "u1", march).await.unwrap(), 2, "the count keeps the expired delivery");
    assert_eq!(store.count(Some("a1"), "u1", march).await.unwrap(), 2, "so does the account's");
    assert!(store.get("d2").await.unwrap().is_some(), "a live delivery does not expire");

    // The id is free again; counting it twice in one month would be wrong.
    assert!(matches!(store.upsert(delivery("d1"), at(20, 12)).await.unwrap(), Upserted::Created(_)));
    assert_eq!(store.count(None, "u1", march).await.unwrap(), 2);
    assert_eq!(store.count(Some("a1"), "u1", march).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_prefix_see_one_store() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let prefix = h.fresh_prefix();
    let stores: Vec<Arc<dyn DeliveryStore>> = vec![
        Arc::new(h.store(&prefix, DEFAULT_COMPLETED_TTL).await),
        Arc::new(h.store(&prefix, DEFAULT_COMPLETED_TTL).await),
    ];
    stores[0].upsert(delivery("d1"), at(15, 12)).await.unwrap();
    assert_eq!(stores[1].upsert(delivery("d1"), at(15, 12)).await.unwrap(), Upserted::Updated);

    // Cancels and confirmations from both "processes" at once: one wins, once.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                if i % 3 == 0 {
                    store.confirm("d1", &confirmation(), at(15, 13)).await.unwrap()
                } else {
                    store.cancel("d1", at(15, 13)).await.unwrap()
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = stores[1].tracking("d1").await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    let final_stage = stores[0].get("d1").await.unwrap().unwrap().stage.unwrap();
    assert!(matches!(final_stage, DeliveryStage::Cancelled | DeliveryStage::Completed));
    assert_eq!(events[1].stage, final_stage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_stores_apart() {
    let url = platform::require_server!(REDIS_URL, SUITE);
    let h = RedisHarness::new(url);
    let a = h.store(&h.fresh_prefix(), DEFAULT_COMPLETED_TTL).await;
    let b = h.store(&h.fresh_prefix(), DEFAULT_COMPLETED_TTL).await;
    a.upsert(delivery("d1"), at(15, 12)).await.unwrap();
    assert_eq!(b.get("d1").await.unwrap(), None);
    assert!(!b.add_notify_request("d1", &notify(), at(15, 12)).await.unwrap());
    assert_eq!(b.count(None, "u1", Month { year: 2026, month: 3 }).await.unwrap(), 0);
    assert!(matches!(b.upsert(delivery("d1"), at(15, 12)).await.unwrap(), Upserted::Created(_)));
}

/// Needs no server: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_redis_is_a_503_not_a_hang() {
    let store = RedisDeliveryStore::open("redis://127.0.0.1:1/0?prefix=nowhere", DEFAULT_COMPLETED_TTL)
        .await
        .expect("the connection is made on first use, so opening succeeds");
    let started = std::time::Instant::now();
    let err = store.get("d1").await.expect_err("nothing listens on port 1");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(err.is_unavailable(), "{err}");
    let problem = platform::Problem::from(err);
    assert_eq!(problem.status, 503);
    assert!(store.ping().await.is_err());
}
