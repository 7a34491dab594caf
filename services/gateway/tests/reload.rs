//! The route table as a file: moving a prefix to another upstream while requests flow (the
//! strangler move) fails no request, and a broken file keeps the table in use.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Accounts, Seen};
use gateway::GatewayOptions;
use serde_json::Value;

fn table(upstream_url: &str) -> String {
    format!(
        r#"
[upstreams]
orders = "{upstream_url}"

[[routes]]
methods = ["GET"]
path = "/orders/{{id}}"
upstream = "orders"
target = "/v2/orders/{{id}}"
timeout_ms = 2000
"#
    )
}

/// Replaces the file in one step, so the gateway never reads half of it.
fn write(path: &Path, text: &str) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(staging, path).unwrap();
}

#[tokio::test]
async fn a_reload_moves_a_route_to_another_upstream_without_failing_a_request() {
    let seen = Seen::default();
    let legacy = common::echo_upstream("legacy", seen.clone()).await;
    let modern = common::echo_upstream("modern", seen.clone()).await;
    let accounts = Accounts::default();
    let key = accounts.issue("k1", "acc-1", None);
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    write(&file, &table(&legacy));
    let mut options =
        GatewayOptions { routes_file: Some(file.clone()), reload_poll_ms: 50, ..GatewayOptions::default() };
    // Four clients in a loop outrun the default per-account rate limit on a fast machine, and
    // a 429 is not what this test is about.
    options.protection.rate_limit_per_credential = 0;
    options.protection.rate_limit_per_ip = 0;
    let (addr, shutdown) = common::start_gateway(upstreams, options).await;
    let url = format!("http://{addr}/api/orders/o-1");
    let client = reqwest::Client::new();

    // Requests flow from four clients for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flows = Vec::new();
    for _ in 0..4 {
        let (client, url, key, stop) = (client.clone(), url.clone(), key.clone(), stop.clone());
        flows.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = client.get(&url).bearer_auth(&key).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                answers.push((status, body["upstream"].as_str().unwrap_or("").to_owned()));
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A broken file is refused; the table in use stays.
    write(&file, "[[routes]]\nmethods = [\"GET\"]\npath = \"/orders/{id}\"\nupstream = \"nowhere\"\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&file, &table(&modern));
    let mut moved = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if seen.lock().unwrap().last().is_some_and(|s| s.starts_with("modern")) {
            moved = true;
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for flow in flows {
        answers.extend(flow.await.unwrap());
    }
    assert!(moved, "the route moved to the new upstream");
    assert!(answers.len() > 20, "requests kept flowing: {}", answers.len());
    let mut failed = std::collections::BTreeMap::<u16, usize>::new();
    for (status, _) in answers.iter().filter(|(status, _)| *status != 202) {
        *failed.entry(*status).or_default() += 1;
    }
    assert!(failed.is_empty(), "every request succeeded; of {}, failed by status: {failed:?}", answers.len());
    let first_modern = answers.iter().position(|(_, up)| up == "modern").unwrap();
    assert!(answers[..first_modern].iter().all(|(_, up)| up == "legacy"));
    assert!(seen.lock().unwrap().iter().all(|s| s.ends_with("/v2/orders/o-1")));
    shutdown.cancel();
}

#[tokio::test]
async fn a_broken_file_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, "[[routes]]\nmethods = [\"GET\"]\npath = \"/x\"\nupstream = \"nowhere\"\n").unwrap();
    let seen = Seen::default();
    let upstreams = common::upstreams(&seen, common::dead_url()).await;
    let options = GatewayOptions { routes_file: Some(file), ..GatewayOptions::default() };
    let err = gateway::router(
        upstreams,
        &options,
        &platform::config::CommonArgs::default(),
        common::identity_key(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("unknown upstream"), "{err}");

    let conflicting = "[[routes]]\nmethods=[\"GET\"]\npath=\"/a/{id}\"\nupstream=\"delivery\"\n\
                       [[routes]]\nmethods=[\"GET\"]\npath=\"/a/{name}\"\nupstream=\"delivery\"\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, conflicting).unwrap();
    let upstreams = common::upstreams(&seen, common::dead_url()).await;
    let options = GatewayOptions { routes_file: Some(file), ..GatewayOptions::default() };
    let err = gateway::router(
        upstreams,
        &options,
        &platform::config::CommonArgs::default(),
        common::identity_key(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("conflict"), "{err}");
}
