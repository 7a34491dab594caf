//! No secret reaches the logs. In its own test binary: a scoped tracing subscriber only sees
//! what its own thread logs once the callsites' interest is settled, and tests running beside it
//! in one process race with that.

use axum::http::Method;
use serde_json::json;

mod common;
use common::spawn_app;

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    // Log lines, collected for this test (the subscriber is this thread's only).
    let captured = platform::testing::CapturedLogs::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    let id = app.new_account("Contoso").await;
    let key = app.new_key(&id, json!({})).await;
    let key_id = key["keyId"].as_str().unwrap();
    let api_key = key["apiKey"].as_str().unwrap();
    app.verify(api_key).await;
    app.verify(&format!("{}0", &api_key[..api_key.len() - 1])).await;
    let (_, rotated, _) =
        app.admin(Method::POST, &format!("/api/admin/accounts/{id}/keys/{key_id}/rotate"), None).await;
    app.call_as(Some("fop_0123456789abcdef_nope"), Method::GET, "/api/admin/accounts", None).await;

    let logs = captured.text();
    assert!(logs.contains(key_id), "the log names keys by id, so this test sees the log: {logs}");
    for secret in [api_key, rotated["apiKey"].as_str().unwrap(), &app.operator] {
        let (_, secret_part) = secret.rsplit_once('_').unwrap();
        assert!(!logs.contains(secret_part), "a secret reached the log: {logs}");
    }
}
