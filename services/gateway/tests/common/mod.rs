//! Stand-ins for what sits behind the gateway: upstreams that echo what they received, and an
//! account service implementing the credential-verification contract.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gateway::{GatewayOptions, UpstreamUrls};
use platform::config::CommonArgs;
use platform::identity::IdentityKey;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "the gateway test identity secret";

pub fn identity_key() -> IdentityKey {
    IdentityKey::new(SECRET).unwrap()
}

pub type Seen = Arc<Mutex<Vec<String>>>;

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// An upstream that answers 202 with its name, the method, path, query, body and the identity
/// and authorization headers it saw.
pub async fn echo_upstream(name: &'static str, seen: Seen) -> String {
    serve(echo_router(name, seen)).await
}

/// The echo upstream's router, for serving it in-process.
pub fn echo_router(name: &'static str, seen: Seen) -> Router {
    Router::new()
        .fallback(move |State(seen): State<Seen>, request: Request| async move {
            let uri = request.uri().clone();
            let (key, account, user, signature, authorization) = {
                let header = |h: &str| request.headers().get(h).map(|v| v.to_str().unwrap().to_owned());
                (
                    header("idempotency-key"),
                    header("x-fabrikam-account"),
                    header("x-fabrikam-user"),
                    header("x-fabrikam-identity"),
                    header("authorization"),
                )
            };
            let body =
                String::from_utf8(axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
            seen.lock().unwrap().push(format!("{name} {uri}"));
            let reply = json!({
                "upstream": name, "uri": uri.to_string(), "idempotencyKey": key, "body": body,
                "account": account, "user": user, "signature": signature, "authorization": authorization,
            });
            let response: Response = (
                StatusCode::ACCEPTED,
                [(header::LOCATION, "/api/deliveries/abc"), (header::RETRY_AFTER, "3")],
                axum::Json(reply),
            )
                .into_response();
            response
        })
        .with_state(seen)
}

/// The account service's verification endpoint, with keys that can be added and revoked.
#[derive(Clone, Default)]
pub struct Accounts {
    keys: Arc<Mutex<HashMap<String, Value>>>,
    revoked: Arc<Mutex<HashSet<String>>>,
    pub calls: Arc<Mutex<usize>>,
}

impl Accounts {
    /// Issues `fdk_<keyId>_secret` for `account` (and `user`).
    pub fn issue(&self, key_id: &str, account: &str, user: Option<&str>) -> String {
        let key = format!("fdk_{key_id}_s3cr3t{key_id}");
        let answer = json!({ "accountId": account, "userId": user, "keyId": key_id, "accountStatus": "active" });
        self.keys.lock().unwrap().insert(key.clone(), answer);
        key
    }

    pub fn revoke(&self, key: &str) {
        self.revoked.lock().unwrap().insert(key.to_owned());
    }

    pub async fn start(&self) -> String {
        let app = Router::new()
            .route(
                "/internal/credentials/verify",
                post(|State(accounts): State<Accounts>, body: axum::Json<Value>| async move {
                    *accounts.calls.lock().unwrap() += 1;
                    let key = body["apiKey"].as_str().unwrap_or_default().to_owned();
                    let known = accounts.keys.lock().unwrap().get(&key).cloned();
                    match known {
                        Some(answer) if !accounts.revoked.lock().unwrap().contains(&key) => {
                            axum::Json(answer).into_response()
                        }
                        _ => (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/problem+json")], "{}")
                            .into_response(),
                    }
                }),
            )
            .with_state(self.clone());
        serve(app).await
    }
}

/// Every upstream an echo server of its own, and the account service.
pub async fn upstreams(seen: &Seen, account_url: String) -> UpstreamUrls {
    UpstreamUrls {
        ingestion_url: echo_upstream("ingestion", seen.clone()).await,
        delivery_url: echo_upstream("delivery", seen.clone()).await,
        package_url: echo_upstream("package", seen.clone()).await,
        dronescheduler_url: echo_upstream("dronescheduler", seen.clone()).await,
        deliveryhistory_url: echo_upstream("deliveryhistory", seen.clone()).await,
        account_url,
    }
}

/// A URL nothing listens on.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// The gateway's router (in-process, no socket).
pub fn router(upstreams: UpstreamUrls, options: &GatewayOptions) -> Router {
    gateway::router(upstreams, options, &CommonArgs::default(), identity_key(), &CancellationToken::new()).unwrap()
}

/// The gateway's router with every upstream served in-process at an address nothing listens
/// on, so an answer proves the call never left the process.
pub fn in_process_router(seen: &Seen, account_url: String, options: &GatewayOptions) -> Router {
    let upstreams = UpstreamUrls {
        ingestion_url: dead_url(),
        delivery_url: dead_url(),
        package_url: dead_url(),
        dronescheduler_url: dead_url(),
        deliveryhistory_url: dead_url(),
        account_url,
    };
    let in_process = gateway::InProcess::default()
        .with(&upstreams.ingestion_url, echo_router("ingestion", seen.clone()))
        .with(&upstreams.delivery_url, echo_router("delivery", seen.clone()))
        .with(&upstreams.package_url, echo_router("package", seen.clone()))
        .with(&upstreams.dronescheduler_url, echo_router("dronescheduler", seen.clone()))
        .with(&upstreams.deliveryhistory_url, echo_router("deliveryhistory", seen.clone()));
    let shutdown = CancellationToken::new();
    gateway::build_with_in_process(upstreams, in_process, options, &CommonArgs::default(), identity_key(), &shutdown)
        .unwrap()
        .public
}

/// The gateway serving on a real socket (client addresses are known), until the token is cancelled.
pub async fn start_gateway(upstreams: UpstreamUrls, options: GatewayOptions) -> (SocketAddr, CancellationToken) {
    let common = CommonArgs { identity_secret: Some(SECRET.to_owned()), ..CommonArgs::default() };
    let config = gateway::Config { listen: "127.0.0.1:0".parse().unwrap(), upstreams, options, common };
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move { gateway::run(config, listener, stop).await.unwrap() });
    (addr, shutdown)
}

pub fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    headers
}
