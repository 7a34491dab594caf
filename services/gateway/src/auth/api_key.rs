//! API keys for machine clients (`fdk_<keyId>_<secret>`), verified by the account service.
//!
//! A successful verification is cached for a short time (`--credential-cache-ms`) so a busy
//! client does not cost the account service a call per request; a revoked key therefore stops
//! working within that time. Failures are never cached. The cache is keyed by a SHA-256 of the
//! key, so the gateway's memory does not hold the secrets, and bounded in size.

use std::time::Duration;

use axum::http::StatusCode;
use platform::identity::Identity;
use platform::ttl_cache::TtlCache;
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
    cache: TtlCache<[u8; 32], VerifiedKey>,
}

impl ApiKeys {
    pub fn new(client: reqwest::Client, account_url: &str, ttl: Duration, capacity: usize) -> Self {
        Self {
            client,
            verify_url: format!("{}/internal/credentials/verify", account_url.trim_end_matches('/')),
            cache: TtlCache::new(ttl, capacity),
        }
    }

    /// The key's owner; 401 for a key the account service does not accept, 503 when it cannot
    /// be asked.
    pub async fn verify(&self, api_key: &str) -> Result<VerifiedKey, AuthError> {
        let digest: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        if let Some(hit) = self.cache.get(&digest) {
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
                self.cache.insert(digest, verified.clone());
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
}
