//! The gateway's identity in a service's HTTP handlers.
//!
//! A public handler takes a [`Caller`] argument: the extractor applies the service's
//! [`IdentityPolicy`] (a 401 problem when one is required and missing or not valid) and hands
//! the handler the account to scope by. Internal routes (the workflow's PUTs, releases, cancels
//! and confirmations) simply do not take one, so they keep working without an identity.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::Problem;
use crate::config::CommonArgs;
use crate::identity::{Identity, IdentityPolicy};

/// Who calls a public route: `None` when the service runs with the policy off (nothing is
/// scoped), otherwise the identity the gateway signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller(pub Option<Identity>);

impl Caller {
    /// The caller's account, when the policy requires one.
    pub fn account(&self) -> Option<&str> {
        self.0.as_ref().map(|identity| identity.account_id.as_str())
    }

    /// Whether something owned by `owner_account` is visible to this caller. Everything is
    /// when the policy is off; otherwise only the caller's own account's. Callers answer 404
    /// (not 403) when it is not, so another account's ids cannot be probed.
    pub fn may_see(&self, owner_account: &str) -> bool {
        self.account().is_none_or(|account| account == owner_account)
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    IdentityPolicy: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let policy = IdentityPolicy::from_ref(state);
        Ok(Caller(policy.check(&parts.headers)?))
    }
}

/// The policy a router applies, from the common options. A binary checks the secret when it
/// starts (`CommonArgs::identity_policy()?` in its `run`), so this only fails for a caller that
/// built the options by hand with a short secret: that is a programming error, not input.
pub fn router_policy(common: &CommonArgs) -> IdentityPolicy {
    common.identity_policy().expect("--identity-secret must be at least 16 bytes")
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::routing::get;

    use super::*;
    use crate::identity::IdentityKey;

    async fn whoami(caller: Caller, State(_): State<IdentityPolicy>) -> String {
        caller.account().unwrap_or("anyone").to_owned()
    }

    fn app(policy: IdentityPolicy) -> Router {
        Router::new().route("/whoami", get(whoami)).with_state(policy)
    }

    #[tokio::test]
    async fn the_extractor_applies_the_policy() {
        let key = IdentityKey::new("a secret of enough length").unwrap();
        let required = app(IdentityPolicy::Required(key.clone()));
        let (status, body, headers) = crate::testing::call(&required, Method::GET, "/whoami", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["content-type"], crate::problem::PROBLEM_JSON);
        assert!(body["detail"].as_str().unwrap().contains("gateway"), "{body}");

        let mut signed = HeaderMap::new();
        key.attach(&Identity::account("acc-1"), &mut signed, chrono::Utc::now().timestamp()).unwrap();
        let (status, ..) = crate::testing::call_with(&required, Method::GET, "/whoami", None, &signed).await;
        assert_eq!(status, StatusCode::OK);

        let (status, ..) = crate::testing::call(&app(IdentityPolicy::Off), Method::GET, "/whoami", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn only_the_own_account_is_visible_unless_the_policy_is_off() {
        assert!(Caller(None).may_see("acc-2"));
        let caller = Caller(Some(Identity::account("acc-1")));
        assert!(caller.may_see("acc-1"));
        assert!(!caller.may_see("acc-2"));
    }
}
