//! The delivery history's HTTP API against a real SQLite store.

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::delivery::Delivery;
use contracts::events::FinishedDelivery;
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};
use deliveryhistory::HistoryStore;
use platform::config::CommonArgs;
use serde_json::{Value, json};

struct TestApp {
    router: Router,
    store: Arc<dyn HistoryStore>,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("deliveryhistory.db").display());
    let store = deliveryhistory::open_store(&url).await.unwrap();
    TestApp { router: deliveryhistory::router(store.clone(), &CommonArgs::default()), store, _dir: dir }
}

impl TestApp {
    async fn get(&self, uri: &str) -> (StatusCode, Value, axum::http::HeaderMap) {
        platform::testing::call(&self.router, Method::GET, uri, None).await
    }

    async fn record(&self, finished: &FinishedDelivery) {
        self.store.record(finished).await.unwrap();
    }
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn finished(id: &str, owner: &str, finished_at: DateTime<Utc>) -> FinishedDelivery {
    FinishedDelivery {
        delivery: Delivery {
            id: id.to_owned(),
            owner: UserAccount { user_id: owner.to_owned(), account_id: "acct".to_owned() },
            pickup: Location::new(47.61, -122.33, 0.0),
            dropoff: Location::new(47.62, -122.35, 0.0),
            deadline: String::new(),
            expedited: false,
            confirmation_required: ConfirmationType::None,
            drone_id: "drone-0001".to_owned(),
            stage: Some(DeliveryStage::Completed),
            pickup_time: None,
            package_id: None,
        },
        tracking: Vec::new(),
        confirmation: None,
        finished_at,
    }
}

fn item_ids(body: &Value) -> Vec<&str> {
    body["items"].as_array().expect("items").iter().map(|i| i["delivery"]["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_finished_delivery_reads_back_and_an_unknown_one_is_404() {
    let app = spawn_app().await;
    let done = finished("d1", "contoso", at(0));
    app.record(&done).await;
    let (status, body, _) = app.get("/api/deliveryhistory/d1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::to_value(&done).unwrap());
    assert_eq!(body["delivery"]["stage"], "Completed");
    assert_eq!(body["finishedAt"], "2026-03-15T12:00:00Z");
    let (status, body, headers) = app.get("/api/deliveryhistory/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn pages_follow_next_to_the_end() {
    let app = spawn_app().await;
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        app.record(&finished(id, "contoso", at(i as i64))).await;
    }
    app.record(&finished("other", "fabrikam", at(1))).await;
    let mut uri = "/api/deliveryhistory?ownerId=contoso&limit=2".to_owned();
    let mut pages = Vec::new();
    loop {
        let (status, body, _) = app.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages.push(item_ids(&body).into_iter().map(str::to_owned).collect::<Vec<_>>());
        match body["next"].as_str() {
            Some(next) => uri = format!("/api/deliveryhistory?ownerId=contoso&limit=2&after={next}"),
            None => {
                assert_eq!(body["next"], Value::Null, "the last page says so with null");
                break;
            }
        }
    }
    assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
}

#[tokio::test]
async fn from_and_to_bound_the_finish_times() {
    let app = spawn_app().await;
    for minute in 0..5 {
        app.record(&finished(&format!("d{minute}"), "contoso", at(minute))).await;
    }
    let (status, body, _) =
        app.get("/api/deliveryhistory?ownerId=contoso&from=2026-03-15T12:01:00Z&to=2026-03-15T13:03:00%2B01:00").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(item_ids(&body), ["d1", "d2"], "from inclusive, to exclusive");
    let (_, body, _) = app.get("/api/deliveryhistory?ownerId=nobody").await;
    assert_eq!(body, json!({ "items": [], "next": null }));
}

#[tokio::test]
async fn the_default_page_is_fifty() {
    let app = spawn_app().await;
    for i in 0..51 {
        app.record(&finished(&format!("d{i:02}"), "contoso", at(i))).await;
    }
    let (_, body, _) = app.get("/api/deliveryhistory?ownerId=contoso").await;
    assert_eq!(body["items"].as_array().unwrap().len(), 50);
    let next = body["next"].as_str().expect("a second page");
    let (_, body, _) = app.get(&format!("/api/deliveryhistory?ownerId=contoso&after={next}")).await;
    assert_eq!(item_ids(&body), ["d50"]);
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_naming_it() {
    let app = spawn_app().await;
    let cases = [
        ("", "ownerId"),
        ("ownerId=", "ownerId"),
        ("ownerId=o&from=yesterday", "from"),
        ("ownerId=o&to=2026-03-15", "to"),
        ("ownerId=o&from=2026-03-16T00:00:00Z&to=2026-03-15T00:00:00Z", "to"),
        ("ownerId=o&limit=0", "limit"),
        ("ownerId=o&limit=501", "limit"),
        ("ownerId=o&limit=many", "limit"),
        ("ownerId=o&after=not-a-cursor", "after"),
        ("ownerId=o&after=3132", "after"),
    ];
    for (query, parameter) in cases {
        let (status, body, headers) = app.get(&format!("/api/deliveryhistory?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json", "{query}");
        assert!(body["errors"][parameter].is_string(), "{query}: {body}");
    }
    let (_, body, _) = app.get("/api/deliveryhistory?from=x&limit=0").await;
    let named: Vec<&String> = body["errors"].as_object().unwrap().keys().collect();
    assert_eq!(named, ["from", "limit", "ownerId"], "all at once");
}

#[tokio::test]
async fn health_and_other_methods() {
    let app = spawn_app().await;
    let (status, body, _) = app.get("/healthz/ready").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (status, body, _) = platform::testing::call(&app.router, Method::DELETE, "/api/deliveryhistory/d1", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["status"], 405);
}
