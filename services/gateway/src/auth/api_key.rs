//! API keys for machine clients (`fdk_<keyId>_<secret>`), verified by the account service.
//!
//! A successful verification is cached for a short time (`--credential-cache-ms`) so a busy
//! client does not cost the account service a call per request; a revoked key therefore stops
//! working within that time. Failures are never cached. The cache is keyed by a SHA-256 of the
//! key, so the gateway's memory does not hold the secrets, and bounded in size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use platform::identity::Identity;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AuthError;

/// The prefix of every API key.
pub const PREFIX: &str = "fdk_";

/// What the account service says about a key (contract: `POST /internal/credentials/verify`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedKey {
    pub account_id: String,
    pub user_id: Option<String>,
    pub key_id: String,
    pub account_status: String,
}

impl VerifiedKey {
    pub fn identity(&self) -> Identity {
        Identity { account_id: self.account_id.clone(), user_id: self.user_id.clone() }
    }
}

/// Verifies keys with the account service, with a short positive cache.
pub struct ApiKeys {
    client: reqwest::Client,
    verify_url: String,
    ttl: Duration,
    capacity: usize,
    cache: Mutex<HashMap<[u8; 32], (VerifiedKey, Instant)>>,
}

impl ApiKeys {
    pub fn new(client: reqwest::Client, account_url: &str, ttl: Duration, capacity: usize) -> Self {
        Self {
            client,
            verify_url: format!("{}/internal/credentials/verify", account_url.trim_end_matches('/')),
            ttl,
            capacity: capacity.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The key's owner; 401 for a key the account service does not accept, 503 when it cannot
    /// be asked.
    pub async fn verify(&self, api_key: &str) -> Result<VerifiedKey, AuthError> {
        let digest: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let request = self.client.post(&self.verify_url).json(&serde_json::json!({ "apiKey": api_key }));
        let response = platform::client::send(request).await.map_err(|err| {
            tracing::warn!(error = %err, "the account service could not verify an API key");
            AuthError::Unavailable
        })?;
        match response.status() {
            StatusCode::OK => {
                let verified: VerifiedKey = response.json().await.map_err(|err| {
                    tracing::warn!(error = %err, "the account service's verification answer is not understood");
                    AuthError::Unavailable
                })?;
                self.remember(digest, verified.clone());
                Ok(verified)
            }
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => {
                Err(AuthError::invalid("the API key is not valid"))
            }
            other => {
                tracing::warn!(status = %other, "the account service failed to verify an API key");
                Err(AuthError::Unavailable)
            }
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<VerifiedKey> {
        let cache = self.cache.lock().expect("cache lock");
        cache.get(digest).filter(|(_, at)| at.elapsed() < self.ttl).map(|(key, _)| key.clone())
    }

    fn remember(&self, digest: [u8; 32], key: VerifiedKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= self.capacity {
            cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if cache.len() >= self.capacity {
                // Still full of live entries: start over rather than track recency; the cost
                // is one verification call per active key.
                cache.clear();
            }
        }
        cache.insert(digest, (key, Instant::now()));
    }
}
