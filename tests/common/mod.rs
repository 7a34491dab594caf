//! What the end-to-end tests share: a client that drives the system through an HTTP address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    #[allow(dead_code)] // Not every test binary calls a service without credentials.
    pub fn new(addr: SocketAddr) -> Self {
        Self { http: reqwest::Client::new(), base: format!("http://{addr}") }
    }

    /// A client that sends `Authorization: Bearer {token}` with every request.
    pub fn with_bearer(addr: SocketAddr, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder().default_headers(headers).build().expect("a client");
        Self { http, base: format!("http://{addr}") }
    }

    /// The all-in-one's gateway as its demo account calls it: with the API key its first start
    /// wrote to the data directory.
    #[allow(dead_code)] // Not every test binary drives an all-in-one system.
    pub fn gateway(system: &fabrikam::System) -> Self {
        let (account::bootstrap::FirstRun::Seeded { key_file, .. }
        | account::bootstrap::FirstRun::Existing { key_file, .. }) = &system.first_run;
        let key = std::fs::read_to_string(key_file).expect("the demo account's API key file");
        Self::with_bearer(system.addresses.gateway, key.trim())
    }

    #[allow(dead_code)] // Not every test binary reads responses through these.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the system answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    #[allow(dead_code)] // Not every test binary reads responses through these.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Polls `path` until `done` holds for a 200 body, or fails after `within`.
    #[allow(dead_code)] // Not every test binary reads responses through these.
    pub async fn eventually(&self, path: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(path).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{path} never got there; last answer {status} {body}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
