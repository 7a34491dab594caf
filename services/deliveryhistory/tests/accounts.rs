//! The delivery history with the gateway's identity required: no identity is 401, another
//! account's finished delivery is 404, and a listing holds only the caller's account's.

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use chrono::{TimeZone, Utc};
use contracts::delivery::Delivery;
use contracts::events::FinishedDelivery;
use contracts::{ConfirmationType, DeliveryStage, Location, UserAccount};
use deliveryhistory::HistoryStore;
use platform::config::CommonArgs;
use platform::identity::IdentityKey;
use platform::testing::{call_with, identity_headers};
use serde_json::Value;
use std::sync::Arc;

const SECRET: &str = "the gateway and the services share this";

struct TestApp {
    router: Router,
    store: Arc<dyn HistoryStore>,
    key: IdentityKey,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("deliveryhistory.db").display());
    let store = deliveryhistory::open_store(&url).await.unwrap();
    let common = CommonArgs { identity_secret: Some(SECRET.to_owned()), ..CommonArgs::default() };
    let router = deliveryhistory::router(store.clone(), &common);
    TestApp { router, store, key: IdentityKey::new(SECRET).unwrap(), _dir: dir }
}

impl TestApp {
    async fn get(&self, uri: &str, headers: &HeaderMap) -> (StatusCode, Value) {
        let (status, body, _) = call_with(&self.router, Method::GET, uri, None, headers).await;
        (status, body)
    }

    fn as_account(&self, account: &str) -> HeaderMap {
        identity_headers(&self.key, account)
    }
}

fn finished(id: &str, user: &str, account: &str, minute: u32) -> FinishedDelivery {
    let finished_at = Utc.with_ymd_and_hms(2026, 3, 15, 12, minute, 0).unwrap();
    FinishedDelivery {
        delivery: Delivery {
            id: id.to_owned(),
            owner: UserAccount { user_id: user.to_owned(), account_id: account.to_owned() },
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
async fn without_an_identity_nothing_is_shown() {
    let app = spawn_app().await;
    app.store.record(&finished("d1", "user-7", "acc-1", 0)).await.unwrap();
    let (status, body) = app.get("/api/deliveryhistory/d1", &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = app.get("/api/deliveryhistory?ownerId=user-7", &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_caller_sees_only_its_own_accounts_history() {
    let app = spawn_app().await;
    // The same user id in two accounts: the account, not the user, draws the line.
    app.store.record(&finished("mine-1", "user-7", "acc-1", 0)).await.unwrap();
    app.store.record(&finished("theirs", "user-7", "acc-2", 1)).await.unwrap();
    app.store.record(&finished("mine-2", "user-7", "acc-1", 2)).await.unwrap();

    let (status, body) = app.get("/api/deliveryhistory/mine-1", &app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["delivery"]["owner"]["accountId"], "acc-1");
    let (status, _) = app.get("/api/deliveryhistory/theirs", &app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another account's id answers as an unknown one");

    let (status, body) = app.get("/api/deliveryhistory?ownerId=user-7", &app.as_account("acc-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(item_ids(&body), ["mine-1", "mine-2"]);
    let (_, body) = app.get("/api/deliveryhistory?ownerId=user-7", &app.as_account("acc-2")).await;
    assert_eq!(item_ids(&body), ["theirs"]);
}
