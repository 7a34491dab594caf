//! Who is calling, as the gateway vouches for it.
//!
//! The gateway authenticates a request once (API key or JWT) and forwards the caller's account
//! and user to the service behind it in three headers: [`ACCOUNT_HEADER`], [`USER_HEADER`] and
//! [`SIGNATURE_HEADER`]. The signature is an HMAC-SHA256 over the two ids and a timestamp, with
//! a secret only the gateway and the services hold (`--identity-secret`). A service therefore
//! never trusts a bare header: one a client sent through the gateway is stripped there, and
//! one sent to a service directly has no valid signature. The timestamp bounds how long a
//! captured header set stays usable ([`MAX_SKEW_SECS`]).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Problem;

/// The caller's account id (the business customer).
pub const ACCOUNT_HEADER: &str = "x-fabrikam-account";
/// The caller's user within the account, when the credential names one.
pub const USER_HEADER: &str = "x-fabrikam-user";
/// `v1:<unix seconds>:<hex HMAC-SHA256>` over the account, the user and the timestamp.
pub const SIGNATURE_HEADER: &str = "x-fabrikam-identity";
/// Every header of the identity; the gateway strips all of them from incoming requests.
pub const HEADERS: [&str; 3] = [ACCOUNT_HEADER, USER_HEADER, SIGNATURE_HEADER];

/// How far a signature's timestamp may be from the verifier's clock, in seconds.
pub const MAX_SKEW_SECS: i64 = 300;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A caller the gateway has authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account_id: String,
    pub user_id: Option<String>,
}

impl Identity {
    pub fn account(account_id: impl Into<String>) -> Self {
        Self { account_id: account_id.into(), user_id: None }
    }
}

/// Why a set of identity headers was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no gateway identity on the request")]
    Missing,
    #[error("the gateway identity is malformed")]
    Malformed,
    #[error("the gateway identity's signature does not match")]
    BadSignature,
    #[error("the gateway identity is too old or from the future")]
    Stale,
}

/// The secret shared by the gateway (which signs) and the services (which verify).
#[derive(Clone)]
pub struct IdentityKey(Arc<[u8]>);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey([redacted])")
    }
}

impl IdentityKey {
    /// A key from a configured secret; at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, String> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("the identity secret must be at least {MIN_SECRET_LEN} bytes"));
        }
        Ok(Self(Arc::from(secret)))
    }

    /// A fresh random key, for a process that is both the gateway and the services (embedded).
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(Arc::from(&bytes[..]))
    }

    fn mac(&self, timestamp: i64, identity: &Identity) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        let user = identity.user_id.as_deref().unwrap_or("");
        // Lengths first, so no two (account, user) pairs share a message.
        mac.update(
            format!("v1\n{timestamp}\n{}:{}\n{}:{}", identity.account_id.len(), identity.account_id, user.len(), user)
                .as_bytes(),
        );
        mac
    }

    /// The signature header's value for `identity` at `now_unix`.
    pub fn sign(&self, identity: &Identity, now_unix: i64) -> String {
        let tag = self.mac(now_unix, identity).finalize().into_bytes();
        format!("v1:{now_unix}:{}", hex::encode(tag))
    }

    /// Replaces whatever identity headers `headers` carries with `identity`, signed.
    pub fn attach(&self, identity: &Identity, headers: &mut HeaderMap, now_unix: i64) -> Result<(), String> {
        strip(headers);
        let value = |s: &str| HeaderValue::from_str(s).map_err(|_| format!("{s:?} cannot be a header value"));
        headers.insert(ACCOUNT_HEADER, value(&identity.account_id)?);
        if let Some(user) = &identity.user_id {
            headers.insert(USER_HEADER, value(user)?);
        }
        headers.insert(SIGNATURE_HEADER, value(&self.sign(identity, now_unix))?);
        Ok(())
    }

    /// The identity `headers` carries, if its signature is this key's and fresh.
    pub fn verify(&self, headers: &HeaderMap, now_unix: i64) -> Result<Identity, IdentityError> {
        let text = |name: &str| match headers.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| IdentityError::Malformed),
        };
        let (Some(account_id), Some(signature)) = (text(ACCOUNT_HEADER)?, text(SIGNATURE_HEADER)?) else {
            return Err(IdentityError::Missing);
        };
        let identity = Identity { account_id, user_id: text(USER_HEADER)?.filter(|u| !u.is_empty()) };
        let mut parts = signature.splitn(3, ':');
        let (Some("v1"), Some(timestamp), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(IdentityError::Malformed);
        };
        let timestamp: i64 = timestamp.parse().map_err(|_| IdentityError::Malformed)?;
        let tag = hex::decode(tag).map_err(|_| IdentityError::Malformed)?;
        self.mac(timestamp, &identity).verify_slice(&tag).map_err(|_| IdentityError::BadSignature)?;
        if (now_unix - timestamp).abs() > MAX_SKEW_SECS {
            return Err(IdentityError::Stale);
        }
        Ok(identity)
    }
}

/// Removes every identity header, so a client cannot smuggle one through.
pub fn strip(headers: &mut HeaderMap) {
    for name in HEADERS {
        headers.remove(name);
    }
}

/// What a service does with the identity on a public request.
#[derive(Debug, Clone, Default)]
pub enum IdentityPolicy {
    /// No secret configured: identities are neither required nor read, and nothing is scoped
    /// to an account (a service run alone for tests or by hand).
    #[default]
    Off,
    /// Every public request must carry a valid identity signed with this key.
    Required(IdentityKey),
}

impl IdentityPolicy {
    /// The policy for an optional configured secret.
    pub fn from_secret(secret: Option<&str>) -> Result<Self, String> {
        secret.map_or(Ok(Self::Off), |s| IdentityKey::new(s).map(Self::Required))
    }

    /// The caller, when the policy requires one: `Ok(None)` when off, a 401 problem when the
    /// identity is missing or not valid.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Identity>, Problem> {
        match self {
            Self::Off => Ok(None),
            Self::Required(key) => key
                .verify(headers, chrono::Utc::now().timestamp())
                .map(Some)
                .map_err(|e| Problem::new(StatusCode::UNAUTHORIZED, format!("{e}; call through the gateway"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn key() -> IdentityKey {
        IdentityKey::new("a secret of enough length").unwrap()
    }

    fn signed(identity: &Identity, at: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        key().attach(identity, &mut headers, at).unwrap();
        headers
    }

    #[test]
    fn a_signed_identity_verifies_with_the_same_key() {
        let who = Identity { account_id: "acc-1".into(), user_id: Some("user-7".into()) };
        assert_eq!(key().verify(&signed(&who, NOW), NOW + 10), Ok(who));
        let account_only = Identity::account("acc-2");
        assert_eq!(key().verify(&signed(&account_only, NOW), NOW), Ok(account_only));
    }

    #[test]
    fn another_key_or_a_changed_id_is_refused() {
        let headers = signed(&Identity::account("acc-1"), NOW);
        let other = IdentityKey::new("another secret, also long").unwrap();
        assert_eq!(other.verify(&headers, NOW), Err(IdentityError::BadSignature));

        let mut forged = headers.clone();
        forged.insert(ACCOUNT_HEADER, HeaderValue::from_static("acc-2"));
        assert_eq!(key().verify(&forged, NOW), Err(IdentityError::BadSignature));

        let mut with_user = headers;
        with_user.insert(USER_HEADER, HeaderValue::from_static("someone"));
        assert_eq!(key().verify(&with_user, NOW), Err(IdentityError::BadSignature));
    }

    #[test]
    fn ids_cannot_be_shifted_between_account_and_user() {
        let a = key().sign(&Identity { account_id: "ab".into(), user_id: Some("c".into()) }, NOW);
        let b = key().sign(&Identity { account_id: "a".into(), user_id: Some("bc".into()) }, NOW);
        assert_ne!(a, b);
    }

    #[test]
    fn missing_malformed_and_stale_identities_are_refused() {
        assert_eq!(key().verify(&HeaderMap::new(), NOW), Err(IdentityError::Missing));
        let mut bare = HeaderMap::new();
        bare.insert(ACCOUNT_HEADER, HeaderValue::from_static("acc-1"));
        assert_eq!(key().verify(&bare, NOW), Err(IdentityError::Missing));
        bare.insert(SIGNATURE_HEADER, HeaderValue::from_static("v1:notanumber:00"));
        assert_eq!(key().verify(&bare, NOW), Err(IdentityError::Malformed));

        let headers = signed(&Identity::account("acc-1"), NOW);
        assert_eq!(key().verify(&headers, NOW + MAX_SKEW_SECS + 1), Err(IdentityError::Stale));
        assert_eq!(key().verify(&headers, NOW - MAX_SKEW_SECS - 1), Err(IdentityError::Stale));
    }

    #[test]
    fn attach_replaces_what_a_client_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(USER_HEADER, HeaderValue::from_static("smuggled"));
        key().attach(&Identity::account("acc-1"), &mut headers, NOW).unwrap();
        assert!(headers.get(USER_HEADER).is_none());
        strip(&mut headers);
        assert!(HEADERS.iter().all(|h| headers.get(*h).is_none()));
    }

    #[test]
    fn short_secrets_are_refused_and_the_policy_answers_401() {
        assert!(IdentityKey::new("short").is_err());
        assert!(matches!(IdentityPolicy::from_secret(None), Ok(IdentityPolicy::Off)));
        let policy = IdentityPolicy::Required(key());
        assert_eq!(policy.check(&HeaderMap::new()).unwrap_err().status, 401);
        assert_eq!(IdentityPolicy::Off.check(&HeaderMap::new()), Ok(None));
    }
}
