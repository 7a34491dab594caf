//! The all-in-one system's first start: a demo account with one API key and an operator token,
//! each in its own owner-only file; later starts create nothing.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

use account::bootstrap::{DEMO_KEY_FILE, FirstRun, OPERATOR_TOKEN_FILE};
use common::Client;
use fabrikam::{System, SystemOptions};
use platform::clock::SystemClock;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start(data: &Path) -> System {
    platform::telemetry::init("fabrikam", platform::telemetry::LogFormat::Pretty);
    let options = SystemOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), data);
    System::start(options, Arc::new(SystemClock)).await.expect("system starts")
}

fn read_secret(path: &Path) -> String {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} must be readable by its owner only", path.display());
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

async fn verify(account: &Client, api_key: &str) -> (StatusCode, Value) {
    account.send(reqwest::Method::POST, "/internal/credentials/verify", Some(json!({ "apiKey": api_key }))).await
}

async fn list_accounts(account: &Client, operator: &str) -> Vec<Value> {
    let response = account
        .http
        .get(format!("{}/api/admin/accounts", account.base))
        .bearer_auth(operator)
        .send()
        .await
        .expect("the account service answers");
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Vec<Value>>().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_writes_a_demo_key_and_an_operator_token_and_a_restart_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let (key_file, operator_file) = (dir.path().join(DEMO_KEY_FILE), dir.path().join(OPERATOR_TOKEN_FILE));
    let FirstRun::Seeded { api_key, .. } = &system.first_run else {
        panic!("an empty data directory is seeded: {:?}", system.first_run);
    };
    assert!(system.first_run.announcement().contains(api_key.as_str()), "the first start shows the key once");
    let demo_key = read_secret(&key_file);
    assert_eq!(&demo_key, api_key);
    let operator = read_secret(&operator_file);
    assert!(demo_key.starts_with("fdk_") && operator.starts_with("fop_"), "{demo_key} / {operator}");

    let account = Client::new(system.addresses.account);
    account.eventually("/healthz/ready", Duration::from_secs(5), |_| true).await;
    let (status, verified) = verify(&account, &demo_key).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["accountStatus"], "active");
    let (status, demo) = account.get(&format!("/internal/accounts/{}", verified["accountId"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(demo["name"], "Demo account");
    let accounts = list_accounts(&account, &operator).await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["name"], "Demo account");
    assert_eq!(accounts[0]["id"], verified["accountId"]);
    system.stop().await.unwrap();

    let again = start(dir.path()).await;
    assert!(matches!(again.first_run, FirstRun::Existing { .. }), "{:?}", again.first_run);
    assert!(!again.first_run.announcement().contains("fdk_"), "a restart never prints a key");
    assert_eq!(read_secret(&key_file), demo_key, "the files are left alone");
    assert_eq!(read_secret(&operator_file), operator);
    let account = Client::new(again.addresses.account);
    assert_eq!(verify(&account, &demo_key).await.0, StatusCode::OK);
    assert_eq!(list_accounts(&account, &operator).await.len(), 1, "no second demo account");
    again.stop().await.unwrap();
}
