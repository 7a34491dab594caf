//! Every public route needs a credential: API keys (verified by the account service) and JWTs
//! (HS256, and ES256 from a JWKS file). What the services receive is the gateway's signed
//! identity of the caller, never one a client sent.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use common::{Accounts, Seen};
use gateway::{AuthOptions, GatewayOptions};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

const HS_SECRET: &str = "an HS256 secret that is long enough!";

async fn get(router: &Router, path: &str, headers: HeaderMap) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().uri(path).body(Body::empty()).unwrap();
    *request.headers_mut() = headers;
    let response = router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn assert_401(answer: &(StatusCode, HeaderMap, Value), detail_has: &str) {
    let (status, headers, problem) = answer;
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(detail_has), "{detail:?} should say {detail_has:?}");
}

struct Setup {
    router: Router,
    accounts: Accounts,
    seen: Seen,
}

async fn setup(auth: AuthOptions) -> Setup {
    let seen = Seen::default();
    let accounts = Accounts::default();
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let options = GatewayOptions { auth, ..GatewayOptions::default() };
    Setup { router: common::router(upstreams, &options), accounts, seen }
}

fn hs256_auth() -> AuthOptions {
    AuthOptions {
        jwt_hs256_secret: Some(HS_SECRET.to_owned()),
        jwt_issuer: Some("https://login.fabrikam.example".to_owned()),
        jwt_audience: Some("fabrikam-api".to_owned()),
        ..AuthOptions::default()
    }
}

fn claims(exp_offset: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": "user-9", "account_id": "acc-jwt", "exp": now + exp_offset,
        "iss": "https://login.fabrikam.example", "aud": "fabrikam-api",
    })
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(HS_SECRET.as_bytes()))
        .unwrap()
}

#[tokio::test]
async fn no_bad_or_revoked_credentials_get_401_and_never_reach_a_service() {
    let s = setup(AuthOptions { credential_cache_ms: 0, ..AuthOptions::default() }).await;
    let path = "/api/deliveries/d1";
    assert_401(&get(&s.router, path, HeaderMap::new()).await, "needs a credential");
    assert_401(&get(&s.router, path, common::bearer("fdk_nope_nope")).await, "API key is not valid");
    assert_401(&get(&s.router, path, common::bearer("not-a-jwt")).await, "not a valid API key");
    let mut basic = HeaderMap::new();
    basic.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
    assert_401(&get(&s.router, path, basic).await, "Bearer");

    let key = s.accounts.issue("k1", "acc-1", None);
    assert_eq!(get(&s.router, path, common::bearer(&key)).await.0, StatusCode::ACCEPTED);
    s.accounts.revoke(&key);
    assert_401(&get(&s.router, path, common::bearer(&key)).await, "API key is not valid");
    assert_eq!(s.seen.lock().unwrap().len(), 1, "only the authenticated call reached a service");
}

#[tokio::test]
async fn a_verified_key_is_cached_briefly_then_revocation_takes_effect() {
    let s = setup(AuthOptions { credential_cache_ms: 300, ..AuthOptions::default() }).await;
    let key = s.accounts.issue("k1", "acc-1", None);
    for _ in 0..5 {
        assert_eq!(get(&s.router, "/api/deliveries/d1", common::bearer(&key)).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(*s.accounts.calls.lock().unwrap(), 1, "one verification serves the cache's lifetime");
    s.accounts.revoke(&key);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_401(&get(&s.router, "/api/deliveries/d1", common::bearer(&key)).await, "not valid");
}

#[tokio::test]
async fn the_identity_a_client_sends_is_replaced_by_the_signed_caller() {
    let s = setup(AuthOptions::default()).await;
    let key = s.accounts.issue("k7", "acc-real", Some("user-real"));
    let mut headers = common::bearer(&key);
    headers.insert("x-fabrikam-account", "acc-victim".parse().unwrap());
    headers.insert("x-fabrikam-user", "someone-else".parse().unwrap());
    headers.insert("x-fabrikam-identity", "v1:0:00".parse().unwrap());
    let (status, _, seen) = get(&s.router, "/api/deliveryhistory?ownerId=o", headers).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(seen["account"], "acc-real");
    assert_eq!(seen["user"], "user-real");
    assert_eq!(seen["authorization"], Value::Null, "the credential itself stays at the gateway");

    let mut forwarded = HeaderMap::new();
    for name in ["account", "user", "signature"] {
        let header = match name {
            "account" => "x-fabrikam-account",
            "user" => "x-fabrikam-user",
            _ => "x-fabrikam-identity",
        };
        forwarded.insert(header, seen[name].as_str().unwrap().parse().unwrap());
    }
    let verified = common::identity_key().verify(&forwarded, chrono::Utc::now().timestamp()).unwrap();
    assert_eq!(verified.account_id, "acc-real");
    assert_eq!(verified.user_id.as_deref(), Some("user-real"));
}

#[tokio::test]
async fn the_account_service_down_is_a_503_not_a_401() {
    let seen = Seen::default();
    let upstreams = common::upstreams(&seen, common::dead_url()).await;
    let router = common::router(upstreams, &GatewayOptions::default());
    let (status, headers, problem) = get(&router, "/api/deliveries/d1", common::bearer("fdk_k1_secret")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn hs256_tokens_are_checked_for_expiry_signature_issuer_audience_and_account() {
    let s = setup(hs256_auth()).await;
    let path = "/api/deliveries/d1";
    let (status, _, seen) = get(&s.router, path, common::bearer(&hs256(&claims(600)))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(seen["account"], "acc-jwt");
    assert_eq!(seen["user"], "user-9");

    assert_401(&get(&s.router, path, common::bearer(&hs256(&claims(-600)))).await, "expired");
    let mut other_issuer = claims(600);
    other_issuer["iss"] = json!("https://evil.example");
    assert_401(&get(&s.router, path, common::bearer(&hs256(&other_issuer))).await, "issuer");
    let mut other_audience = claims(600);
    other_audience["aud"] = json!("another-api");
    assert_401(&get(&s.router, path, common::bearer(&hs256(&other_audience))).await, "audience");
    let mut no_account = claims(600);
    no_account.as_object_mut().unwrap().remove("account_id");
    assert_401(&get(&s.router, path, common::bearer(&hs256(&no_account))).await, "account_id");
    let mut no_exp = claims(600);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_401(&get(&s.router, path, common::bearer(&hs256(&no_exp))).await, "exp");
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(600),
        &EncodingKey::from_secret(b"somebody else's secret, also long enough"),
    )
    .unwrap();
    assert_401(&get(&s.router, path, common::bearer(&forged)).await, "signature");
    assert_eq!(s.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn es256_tokens_verify_against_the_jwks_file() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "key-1", "use": "sig", "alg": "ES256",
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
    }]});
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let s = setup(AuthOptions { jwt_jwks_file: Some(jwks_file), ..AuthOptions::default() }).await;

    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("key-1".to_owned());
    let token = jsonwebtoken::encode(&header, &claims(600), &encoding).unwrap();
    let (status, _, seen) = get(&s.router, "/api/deliveries/d1", common::bearer(&token)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(seen["account"], "acc-jwt");

    let expired = jsonwebtoken::encode(&header, &claims(-600), &encoding).unwrap();
    assert_401(&get(&s.router, "/api/deliveries/d1", common::bearer(&expired)).await, "expired");
    // An HS256 token is refused when no HS256 secret is configured, whatever it is signed with.
    assert_401(&get(&s.router, "/api/deliveries/d1", common::bearer(&hs256(&claims(600)))).await, "not signed by");
}

#[tokio::test]
async fn health_and_metrics_need_no_credential() {
    let s = setup(AuthOptions::default()).await;
    for path in ["/healthz", "/healthz/ready", "/metrics"] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        assert_eq!(s.router.clone().oneshot(request).await.unwrap().status(), StatusCode::OK, "{path}");
    }
}
