//! HTTP handlers of the account service: the internal routes other services call, and the admin
//! API (every route behind an operator token).
//!
//! Secrets travel in request and response bodies only; logs and metrics name key ids.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use platform::Problem;
use platform::clock::SharedClock;
use platform::json::JsonBody;
use serde::{Deserialize, Serialize};

use crate::SERVICE;
use crate::domain::{
    self, API_KEY_PREFIX, Account, AccountCreate, AccountPatch, AccountStatus, KeyCreate, KeyInfo, NewKey,
    OPERATOR_TOKEN_PREFIX, User, UserCreate,
};
use crate::store::{AccountStore, Added, Rotated};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn AccountStore>,
    pub clock: SharedClock,
}

/// Where the gateway forwards the admin API: the plain prefix and the reference's versioned one.
pub const ADMIN_PREFIXES: &[&str] = &["/api/admin", "/v0.1.0/api/admin"];

pub fn routes(state: AppState) -> Router {
    let admin = Router::new()
        .route("/accounts", post(create_account).get(list_accounts))
        .route("/accounts/{id}", get(get_account).patch(update_account))
        .route("/accounts/{id}/users", post(create_user).get(list_users))
        .route("/accounts/{id}/keys", post(create_key).get(list_keys))
        .route("/accounts/{id}/keys/{key_id}", delete(revoke_key))
        .route("/accounts/{id}/keys/{key_id}/rotate", post(rotate_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_operator));
    let mut router = Router::new()
        .route("/internal/credentials/verify", post(verify))
        .route("/internal/accounts/{id}", get(internal_account));
    for prefix in ADMIN_PREFIXES {
        router = router.nest(prefix, admin.clone());
    }
    router.with_state(state)
}

/// 401 with the challenge naming the scheme.
fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail)
}

fn with_challenge(problem: Problem) -> Response {
    let mut response = problem.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Lets the request through when it carries `Authorization: Bearer fop_…` of an unrevoked
/// operator token; 401 otherwise (one answer whatever was wrong).
async fn require_operator(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let token = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(domain::bearer);
    let Some((id, secret)) = token.and_then(|t| domain::parse_token(t, OPERATOR_TOKEN_PREFIX)) else {
        count_operator_auth(if token.is_none() { "missing" } else { "refused" });
        return with_challenge(unauthorized("an operator token is required: Authorization: Bearer fop_…"));
    };
    match state.store.find_operator(id).await {
        Ok(Some(hash)) if domain::secret_matches(secret, &hash) => {
            count_operator_auth("ok");
            next.run(request).await
        }
        Ok(_) => {
            tracing::warn!(operator_id = id, "operator token refused");
            count_operator_auth("refused");
            with_challenge(unauthorized("the operator token is not valid"))
        }
        Err(err) => Problem::from(err).into_response(),
    }
}

fn count_operator_auth(outcome: &'static str) {
    metrics::counter!("operator_authentications_total", "service" => SERVICE, "outcome" => outcome).increment(1);
}

fn count_key_change(change: &'static str) {
    metrics::counter!("api_key_changes_total", "service" => SERVICE, "change" => change).increment(1);
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VerifyRequest {
    api_key: String,
}

/// What the gateway learns about a verified key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub account_id: String,
    pub user_id: Option<String>,
    pub key_id: String,
    pub account_status: AccountStatus,
}

/// `POST /internal/credentials/verify`: the key's account, or one 401 for every kind of failure.
async fn verify(State(state): State<AppState>, JsonBody(body): JsonBody<VerifyRequest>) -> Result<Response, Problem> {
    let refused = |outcome: &'static str| {
        metrics::counter!("credential_verifications_total", "service" => SERVICE, "outcome" => outcome).increment(1);
        Ok(unauthorized("the API key is not valid").into_response())
    };
    let Some((key_id, secret)) = domain::parse_token(body.api_key.trim(), API_KEY_PREFIX) else {
        return refused("malformed");
    };
    let Some(stored) = state.store.find_key(key_id).await? else {
        tracing::debug!(key_id, "unknown API key");
        return refused("unknown");
    };
    if !domain::secret_matches(secret, &stored.secret_sha256) {
        tracing::warn!(key_id, "API key with a wrong secret");
        return refused("wrong_secret");
    }
    if stored.info.revoked_at.is_some() {
        tracing::debug!(key_id, "revoked API key");
        return refused("revoked");
    }
    let outcome = match stored.account_status {
        AccountStatus::Active => "ok",
        AccountStatus::Suspended => "suspended",
    };
    metrics::counter!("credential_verifications_total", "service" => SERVICE, "outcome" => outcome).increment(1);
    Ok(Json(Verified {
        account_id: stored.info.account_id,
        user_id: stored.info.user_id,
        key_id: stored.info.key_id,
        account_status: stored.account_status,
    })
    .into_response())
}

fn no_account(id: &str) -> Problem {
    Problem::not_found(format!("no account {id}"))
}

/// `GET /internal/accounts/{id}`.
async fn internal_account(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Account>, Problem> {
    state.store.get_account(&id).await?.map(Json).ok_or_else(|| no_account(&id))
}

fn created<T: Serialize>(location: String, body: T) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response()
}

/// `POST /api/admin/accounts`.
async fn create_account(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AccountCreate>,
) -> Result<Response, Problem> {
    let name = domain::validate_account(body)?;
    let account = new_account(name, state.clock.now());
    state.store.create_account(&account).await?;
    tracing::info!(account_id = %account.id, "account created");
    Ok(created(format!("/api/admin/accounts/{}", account.id), account))
}

/// A fresh, active account named `name`.
pub fn new_account(name: String, now: chrono::DateTime<chrono::Utc>) -> Account {
    Account { id: uuid::Uuid::new_v4().to_string(), name, status: AccountStatus::Active, created_at: now }
}

async fn list_accounts(State(state): State<AppState>) -> Result<Json<Vec<Account>>, Problem> {
    Ok(Json(state.store.list_accounts().await?))
}

async fn get_account(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Account>, Problem> {
    internal_account(State(state), Path(id)).await
}

/// `PATCH /api/admin/accounts/{id}`: 200 with the account as changed.
async fn update_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AccountPatch>,
) -> Result<Json<Account>, Problem> {
    let changes = domain::validate_account_patch(body)?;
    let account = state.store.update_account(&id, &changes).await?.ok_or_else(|| no_account(&id))?;
    tracing::info!(account_id = %id, status = account.status.as_str(), "account updated");
    Ok(Json(account))
}

/// `POST /api/admin/accounts/{id}/users`.
async fn create_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UserCreate>,
) -> Result<Response, Problem> {
    let (name, email) = domain::validate_user(body)?;
    let user =
        User { id: uuid::Uuid::new_v4().to_string(), account_id: id, name, email, created_at: state.clock.now() };
    match state.store.create_user(&user).await? {
        Added::Done => {
            tracing::info!(account_id = %user.account_id, user_id = %user.id, "user created");
            Ok(created(format!("/api/admin/accounts/{}/users", user.account_id), user))
        }
        Added::NoSuchAccount | Added::NoSuchUser => Err(no_account(&user.account_id)),
    }
}

async fn list_users(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<User>>, Problem> {
    require_account(&state, &id).await?;
    Ok(Json(state.store.list_users(&id).await?))
}

async fn require_account(state: &AppState, id: &str) -> Result<Account, Problem> {
    state.store.get_account(id).await?.ok_or_else(|| no_account(id))
}

/// A key just issued: the only answer that ever carries its secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    pub key_id: String,
    pub api_key: String,
    pub account_id: String,
    pub user_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A fresh key of `account_id` (for `user_id`), ready to store, and its one-time answer.
pub fn issue_key(
    account_id: &str,
    user_id: Option<String>,
    name: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> (NewKey, IssuedKey) {
    let issued = domain::issue(API_KEY_PREFIX);
    let info = KeyInfo {
        key_id: issued.id.clone(),
        account_id: account_id.to_owned(),
        user_id,
        name,
        created_at: now,
        revoked_at: None,
    };
    let answer = IssuedKey {
        key_id: issued.id,
        api_key: issued.token,
        account_id: info.account_id.clone(),
        user_id: info.user_id.clone(),
        created_at: info.created_at,
    };
    (NewKey { info, secret_sha256: issued.secret_sha256 }, answer)
}

fn key_location(key: &IssuedKey) -> String {
    format!("/api/admin/accounts/{}/keys/{}", key.account_id, key.key_id)
}

/// `POST /api/admin/accounts/{id}/keys`: 201 with the key's secret, shown this once.
async fn create_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<KeyCreate>,
) -> Result<Response, Problem> {
    let (user_id, name) = domain::validate_key(body)?;
    let (key, answer) = issue_key(&id, user_id, name, state.clock.now());
    match state.store.create_key(&key).await? {
        Added::Done => {
            count_key_change("issued");
            tracing::info!(account_id = %id, key_id = %answer.key_id, "API key issued");
            Ok(created(key_location(&answer), answer))
        }
        Added::NoSuchAccount => Err(no_account(&id)),
        Added::NoSuchUser => Err(Problem::invalid_field("/userId", "no such user in this account")),
    }
}

async fn list_keys(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<KeyInfo>>, Problem> {
    require_account(&state, &id).await?;
    Ok(Json(state.store.list_keys(&id).await?))
}

/// `POST /api/admin/accounts/{id}/keys/{keyId}/rotate`: 201 with a new key for the same user and
/// name; the old one is revoked in the same transaction.
async fn rotate_key(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let no_key = || Problem::not_found(format!("account {id} has no key {key_id}"));
    let old = state.store.find_key(&key_id).await?.filter(|k| k.info.account_id == id).ok_or_else(no_key)?;
    let (key, answer) = issue_key(&id, old.info.user_id, old.info.name, state.clock.now());
    match state.store.rotate_key(&key_id, &key).await? {
        Rotated::Done => {
            count_key_change("rotated");
            tracing::info!(account_id = %id, old_key_id = %key_id, key_id = %answer.key_id, "API key rotated");
            Ok(created(key_location(&answer), answer))
        }
        Rotated::NotFound => Err(no_key()),
        Rotated::AlreadyRevoked => Err(Problem::conflict(format!("key {key_id} is revoked; issue a new key instead"))),
    }
}

/// `DELETE /api/admin/accounts/{id}/keys/{keyId}`: 204; the key stops verifying at once.
async fn revoke_key(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    if state.store.revoke_key(&id, &key_id, state.clock.now()).await? {
        count_key_change("revoked");
        tracing::info!(account_id = %id, key_id = %key_id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("account {id} has no key {key_id}")))
    }
}
