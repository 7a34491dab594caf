//! The account service's HTTP API, route by route, against a real SQLite store.

use std::sync::Arc;

use account::bootstrap::{self, BootstrapArgs};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

mod common;
use common::spawn_app;

#[tokio::test]
async fn admin_routes_need_a_valid_operator_token() {
    let app = spawn_app().await;
    let other = bootstrap::operator(&*app.store, Arc::new(app.clock.clone()), &BootstrapArgs::default()).await;
    assert!(other.is_err(), "a second bootstrap without --force is refused");
    let (id, secret) = account::domain::parse_token(&app.operator, "fop").unwrap();
    let wrong_secret = format!("fop_{id}_{}", "0".repeat(secret.len()));
    let api_key_shape = format!("fdk_{id}_{secret}");
    for token in [None, Some("nonsense"), Some(wrong_secret.as_str()), Some(api_key_shape.as_str())] {
        for (method, uri) in [
            (Method::GET, "/api/admin/accounts"),
            (Method::POST, "/api/admin/accounts"),
            (Method::GET, "/api/admin/accounts/a1/keys"),
            (Method::DELETE, "/api/admin/accounts/a1/keys/k1"),
            (Method::GET, "/v0.1.0/api/admin/accounts"),
        ] {
            let (status, body, headers) = app.call_as(token, method.clone(), uri, Some(json!({"name": "x"}))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}: {body}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    assert_eq!(app.admin(Method::GET, "/api/admin/accounts", None).await.0, StatusCode::OK);
    assert_eq!(app.admin(Method::GET, "/v0.1.0/api/admin/accounts", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_forced_bootstrap_replaces_the_operator_token() {
    let app = spawn_app().await;
    let forced = BootstrapArgs { force: true };
    let new = bootstrap::operator(&*app.store, Arc::new(app.clock.clone()), &forced).await.unwrap();
    assert_eq!(app.admin(Method::GET, "/api/admin/accounts", None).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, _) = app.call_as(Some(&new), Method::GET, "/api/admin/accounts", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn accounts_users_and_keys_are_created_and_listed() {
    let app = spawn_app().await;
    let (status, body, headers) =
        app.admin(Method::POST, "/api/admin/accounts", Some(json!({ "name": " Contoso " }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body, json!({ "id": id, "name": "Contoso", "status": "active", "createdAt": "2026-03-15T12:00:00Z" }));
    assert_eq!(headers[header::LOCATION], format!("/api/admin/accounts/{id}"));
    assert_eq!(app.admin(Method::GET, &format!("/api/admin/accounts/{id}"), None).await.1, body);
    assert_eq!(app.admin(Method::GET, "/api/admin/accounts", None).await.1, json!([body]));

    let users = format!("/api/admin/accounts/{id}/users");
    let (status, user, _) =
        app.admin(Method::POST, &users, Some(json!({ "name": "Ann", "email": "ann@contoso.com" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["accountId"], id.as_str());
    assert_eq!(user["email"], "ann@contoso.com");
    assert_eq!(app.admin(Method::GET, &users, None).await.1, json!([user]));

    let key = app.new_key(&id, json!({ "userId": user["id"], "name": "shop" })).await;
    let key_id = key["keyId"].as_str().unwrap();
    assert!(key["apiKey"].as_str().unwrap().starts_with(&format!("fdk_{key_id}_")), "{key}");
    assert_eq!(key["userId"], user["id"]);
    let (status, listed, _) = app.admin(Method::GET, &format!("/api/admin/accounts/{id}/keys"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed,
        json!([{ "keyId": key_id, "accountId": id, "userId": user["id"], "name": "shop",
                 "createdAt": "2026-03-15T12:00:00Z", "revokedAt": null }])
    );
    assert!(!listed.to_string().contains(key["apiKey"].as_str().unwrap()), "a listing never shows the secret");
}

#[tokio::test]
async fn bad_input_names_the_field_and_unknown_accounts_are_404() {
    let app = spawn_app().await;
    let (status, body, _) = app.admin(Method::POST, "/api/admin/accounts", Some(json!({ "name": "" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["/name"].is_string(), "{body}");
    let id = app.new_account("Contoso").await;
    let (status, body, _) =
        app.admin(Method::PATCH, &format!("/api/admin/accounts/{id}"), Some(json!({ "status": "closed" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["/status"].is_string(), "{body}");
    let (status, body, _) = app
        .admin(Method::POST, &format!("/api/admin/accounts/{id}/users"), Some(json!({ "name": "A", "email": "a@" })))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["/email"].is_string(), "{body}");
    let (status, body, _) =
        app.admin(Method::POST, &format!("/api/admin/accounts/{id}/keys"), Some(json!({ "userId": "nobody" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["/userId"].is_string(), "{body}");

    for (method, uri, body) in [
        (Method::GET, "/api/admin/accounts/nobody".to_owned(), None),
        (Method::PATCH, "/api/admin/accounts/nobody".to_owned(), Some(json!({ "status": "suspended" }))),
        (Method::POST, "/api/admin/accounts/nobody/users".to_owned(), Some(json!({ "name": "A" }))),
        (Method::GET, "/api/admin/accounts/nobody/users".to_owned(), None),
        (Method::POST, "/api/admin/accounts/nobody/keys".to_owned(), Some(json!({}))),
        (Method::GET, "/api/admin/accounts/nobody/keys".to_owned(), None),
        (Method::DELETE, format!("/api/admin/accounts/{id}/keys/nokey"), None),
        (Method::POST, format!("/api/admin/accounts/{id}/keys/nokey/rotate"), None),
    ] {
        let (status, problem, headers) = app.admin(method.clone(), &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {problem}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    }
    let (status, _, _) = app.call_as(None, Method::GET, "/internal/accounts/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_key_verifies_to_its_account_and_user() {
    let app = spawn_app().await;
    let id = app.new_account("Contoso").await;
    let key = app.new_key(&id, json!({})).await;
    let (status, body) = app.verify(key["apiKey"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "accountId": id, "userId": null, "keyId": key["keyId"], "accountStatus": "active" }));
    let (status, account, _) = app.call_as(None, Method::GET, &format!("/internal/accounts/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((account["name"].as_str(), account["status"].as_str()), (Some("Contoso"), Some("active")));
}

#[tokio::test]
async fn unknown_malformed_and_wrong_keys_get_one_401() {
    let app = spawn_app().await;
    let id = app.new_account("Contoso").await;
    let key = app.new_key(&id, json!({})).await;
    let real = key["apiKey"].as_str().unwrap();
    let wrong_secret = format!("{}{}", &real[..real.len() - 1], if real.ends_with('0') { '1' } else { '0' });
    let unknown = format!("fdk_{}_{}", "0".repeat(16), "0".repeat(64));
    let mut answers = Vec::new();
    for bad in ["", "fdk_", "Bearer x", &app.operator, &wrong_secret, &unknown] {
        let (status, body) = app.verify(bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}: {body}");
        answers.push(body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "one answer for every failure: {answers:?}");
}

#[tokio::test]
async fn a_revoked_key_stops_verifying_at_once() {
    let app = spawn_app().await;
    let id = app.new_account("Contoso").await;
    let key = app.new_key(&id, json!({})).await;
    let api_key = key["apiKey"].as_str().unwrap();
    assert_eq!(app.verify(api_key).await.0, StatusCode::OK);
    let uri = format!("/api/admin/accounts/{id}/keys/{}", key["keyId"].as_str().unwrap());
    app.clock.advance(chrono::Duration::minutes(5));
    let (status, body, _) = app.admin(Method::DELETE, &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(app.verify(api_key).await.0, StatusCode::UNAUTHORIZED);
    let (_, listed, _) = app.admin(Method::GET, &format!("/api/admin/accounts/{id}/keys"), None).await;
    assert_eq!(listed[0]["revokedAt"], "2026-03-15T12:05:00Z");
    // Another account cannot revoke it, and revoking twice is still 204.
    let other = app.new_account("Fabrikam").await;
    let foreign = format!("/api/admin/accounts/{other}/keys/{}", key["keyId"].as_str().unwrap());
    assert_eq!(app.admin(Method::DELETE, &foreign, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.admin(Method::DELETE, &uri, None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn rotation_hands_out_a_new_key_and_revokes_the_old() {
    let app = spawn_app().await;
    let id = app.new_account("Contoso").await;
    let (_, user, _) =
        app.admin(Method::POST, &format!("/api/admin/accounts/{id}/users"), Some(json!({"name": "Ann"}))).await;
    let old = app.new_key(&id, json!({ "userId": user["id"] })).await;
    let rotate = format!("/api/admin/accounts/{id}/keys/{}/rotate", old["keyId"].as_str().unwrap());
    let (status, new, headers) = app.admin(Method::POST, &rotate, None).await;
    assert_eq!(status, StatusCode::CREATED, "{new}");
    assert_ne!(new["keyId"], old["keyId"]);
    assert_eq!(new["userId"], user["id"], "the new key acts for the same user");
    assert_eq!(headers[header::LOCATION], format!("/api/admin/accounts/{id}/keys/{}", new["keyId"].as_str().unwrap()));
    assert_eq!(app.verify(old["apiKey"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);
    let (status, verified) = app.verify(new["apiKey"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["userId"], user["id"]);
    assert_eq!(app.admin(Method::POST, &rotate, None).await.0, StatusCode::CONFLICT, "the old key is spent");
}

#[tokio::test]
async fn a_suspended_accounts_key_still_verifies_with_its_status() {
    let app = spawn_app().await;
    let id = app.new_account("Contoso").await;
    let key = app.new_key(&id, json!({})).await;
    let (status, account, _) =
        app.admin(Method::PATCH, &format!("/api/admin/accounts/{id}"), Some(json!({ "status": "suspended" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(account["status"], "suspended");
    let (status, body) = app.verify(key["apiKey"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accountStatus"], "suspended");
    let (_, internal, _) = app.call_as(None, Method::GET, &format!("/internal/accounts/{id}"), None).await;
    assert_eq!(internal["status"], "suspended");
    app.admin(Method::PATCH, &format!("/api/admin/accounts/{id}"), Some(json!({ "status": "active" }))).await;
    assert_eq!(app.verify(key["apiKey"].as_str().unwrap()).await.1["accountStatus"], "active");
}

#[tokio::test]
async fn health_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.call_as(None, Method::GET, "/healthz/ready", None).await.0, StatusCode::OK);
    app.verify("nonsense").await;
    let response = app.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("credential_verifications_total{service=\"account\",outcome=\"malformed\"}"), "{text}");
}
