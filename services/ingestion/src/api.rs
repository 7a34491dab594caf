//! HTTP handlers of the ingestion service: validate, queue durably, answer 202.

use std::sync::Arc;

use axum::extract::{FromRef, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Router, body::Bytes};
use chrono::Duration;
use contracts::messages::{CancelRequest, DeliveryCommand};
use platform::Problem;
use platform::bus::{OutgoingMessage, Queue};
use platform::clock::SharedClock;
use platform::identity::IdentityPolicy;
use platform::identity_http::Caller;
use platform::telemetry::spans;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::domain::{self, Limits};
use crate::store::{IngestionStore, SavedResponse};

/// The header a client sets to make a request safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn IngestionStore>,
    pub clock: SharedClock,
    pub limits: Limits,
    /// How long a saved idempotent response is replayed.
    pub idempotency_window: Duration,
    /// Whether callers must carry the gateway's identity, which scopes them to their account.
    pub identity: IdentityPolicy,
}

impl FromRef<AppState> for IdentityPolicy {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/deliveryrequests", post(schedule))
        .route("/api/deliveryrequests/{delivery_id}", patch(reschedule).delete(cancel))
        .with_state(state)
}

/// `POST /api/deliveryrequests`: schedule a delivery.
async fn schedule(State(state): State<AppState>, caller: Caller, request: Request) -> Result<Response, Problem> {
    let (headers, body) = read_body(request, &state).await?;
    let key = idempotency_key(&headers)?;
    let mut delivery = domain::validate_delivery_request(&body, state.limits)?;
    let keyed = Keyed::hashing(key, || serde_json::to_vec(&delivery))?;
    let scope = domain::idempotency_scope(caller.account(), &delivery.owner_id);
    if let Some(replay) = replay(&state, &scope, keyed.as_ref()).await? {
        return Ok(replay);
    }
    let key = keyed.as_ref().map(|k| k.key.as_str());
    let delivery_id = domain::new_delivery_id(key.map(|k| (scope.as_str(), k)));
    delivery.delivery_id = Some(delivery_id.clone());
    let owner_id = delivery.owner_id.clone();
    platform::telemetry::record_owner_id(&owner_id);
    let body = serde_json::to_string(&delivery).map_err(Problem::internal)?;

    state.store.record_accepted(&delivery_id, &owner_id, caller.account(), state.clock.now()).await?;
    let command = DeliveryCommand::Delivery(delivery);
    let published = enqueue(&state, &caller, &delivery_id, command, key, &headers).await;
    if let Err(problem) = published {
        // Nothing was queued: the id must not look known to a later reschedule or cancel.
        if let Err(err) = state.store.forget_accepted(&delivery_id).await {
            tracing::warn!(error = %err, delivery_id, "could not forget an id whose message was not queued");
        }
        return Err(problem);
    }
    metrics::counter!("deliveries_accepted_total", "service" => crate::SERVICE).increment(1);
    respond(&state, &scope, keyed, &delivery_id, body).await
}

/// `PATCH /api/deliveryrequests/{id}`: reschedule.
async fn reschedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(delivery_id): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    ensure_known(&state, &caller, &delivery_id).await?;
    let (headers, body) = read_body(request, &state).await?;
    let key = idempotency_key(&headers)?;
    let changes = domain::validate_reschedule(&body)?;
    let keyed = Keyed::hashing(key, || serde_json::to_vec(&changes))?;
    let scope = format!("PATCH {delivery_id}");
    if let Some(replay) = replay(&state, &scope, keyed.as_ref()).await? {
        return Ok(replay);
    }
    let mut answer = serde_json::to_value(&changes).map_err(Problem::internal)?;
    answer["deliveryId"] = json!(delivery_id);
    let key = keyed.as_ref().map(|k| k.key.as_str());
    enqueue(&state, &caller, &delivery_id, DeliveryCommand::Reschedule(changes), key, &headers).await?;
    metrics::counter!("delivery_reschedules_accepted_total", "service" => crate::SERVICE).increment(1);
    respond(&state, &scope, keyed, &delivery_id, answer.to_string()).await
}

/// `DELETE /api/deliveryrequests/{id}`: cancel.
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(delivery_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    ensure_known(&state, &caller, &delivery_id).await?;
    let key = idempotency_key(&headers)?;
    let scope = format!("DELETE {delivery_id}");
    let keyed = Keyed::hashing(key, || Ok::<_, Problem>(scope.clone().into_bytes()))?;
    if let Some(replay) = replay(&state, &scope, keyed.as_ref()).await? {
        return Ok(replay);
    }
    let command = DeliveryCommand::Cancel(CancelRequest {});
    let key = keyed.as_ref().map(|k| k.key.as_str());
    enqueue(&state, &caller, &delivery_id, command, key, &headers).await?;
    metrics::counter!("delivery_cancels_accepted_total", "service" => crate::SERVICE).increment(1);
    let body = json!({ "deliveryId": delivery_id }).to_string();
    respond(&state, &scope, keyed, &delivery_id, body).await
}

async fn read_body(request: Request, state: &AppState) -> Result<(HeaderMap, Value), Problem> {
    let headers = request.headers().clone();
    let bytes: Bytes = platform::json::read_json_bytes(request, state).await?;
    let body = serde_json::from_slice(&bytes).map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    Ok((headers, body))
}

/// A request made with an `Idempotency-Key`, and the hash of what it asked for, which a repeat
/// of the key must match.
struct Keyed {
    key: String,
    request_hash: String,
}

impl Keyed {
    /// `None` without a key; the request is encoded and hashed only when there is one, since
    /// only a repeated key compares it.
    fn hashing<E: std::fmt::Display>(
        key: Option<String>,
        request: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Option<Self>, Problem> {
        let Some(key) = key else { return Ok(None) };
        let request_hash = domain::hash(&request().map_err(Problem::internal)?);
        Ok(Some(Self { key, request_hash }))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    match value.to_str().map(str::trim) {
        Ok(key) if !key.is_empty() && key.len() <= 255 => Ok(Some(key.to_owned())),
        _ => Err(Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
            .with_type("https://fabrikam.example/problems/idempotency-key")),
    }
}

/// An id this service handed out to the caller's account; another account's id is as unknown
/// as one never handed out (404), so ids cannot be probed.
async fn ensure_known(state: &AppState, caller: &Caller, delivery_id: &str) -> Result<(), Problem> {
    platform::telemetry::record_delivery_id(delivery_id);
    match state.store.accepted_account(delivery_id).await? {
        Some(account) if caller.may_see(&account) => Ok(()),
        _ => Err(Problem::not_found(format!("no delivery request {delivery_id}"))),
    }
}

/// The saved response for a repeated idempotency key, or a 422 if the key now comes with a
/// different request.
async fn replay(state: &AppState, scope: &str, keyed: Option<&Keyed>) -> Result<Option<Response>, Problem> {
    let Some(keyed) = keyed else { return Ok(None) };
    let not_before = state.clock.now() - state.idempotency_window;
    let Some(saved) = state.store.saved_response(scope, &keyed.key, not_before).await? else { return Ok(None) };
    if saved.request_hash != keyed.request_hash {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used with a different request",
        )
        .with_type("https://fabrikam.example/problems/idempotency-key-reuse"));
    }
    Ok(Some(accepted(saved.location.as_deref(), saved.body)))
}

async fn enqueue(
    state: &AppState,
    caller: &Caller,
    delivery_id: &str,
    command: DeliveryCommand,
    key: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    platform::telemetry::record_delivery_id(delivery_id);
    let message_id = domain::message_id(delivery_id, &command, key);
    let span =
        spans::message_publish(crate::SERVICE, state.queue.system(), state.queue.name(), &message_id, delivery_id);
    async {
        // The message carries the publish span's context, so the workflow's work joins this
        // request's trace; without a tracer (tests) the caller's or a new one.
        let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok());
        let traceparent = platform::telemetry::current_traceparent().unwrap_or_else(|| domain::traceparent(incoming));
        let mut envelope =
            domain::envelope(delivery_id, command, message_id.clone(), state.clock.now(), Some(traceparent));
        envelope.account_id = caller.account().map(str::to_owned);
        let payload = serde_json::to_vec(&envelope).map_err(Problem::internal)?;
        state.queue.publish(OutgoingMessage { id: message_id, payload: payload.into() }).await.map_err(|err| {
            tracing::error!(error = %err, "queue refused the message; answering 503");
            Problem::unavailable("the request could not be queued; nothing was accepted, retry it", 1)
        })
    }
    .instrument(span)
    .await?;
    Ok(())
}

async fn respond(
    state: &AppState,
    scope: &str,
    keyed: Option<Keyed>,
    delivery_id: &str,
    body: String,
) -> Result<Response, Problem> {
    let location = format!("/api/deliveries/{delivery_id}");
    if let Some(Keyed { key, request_hash }) = keyed {
        let now = state.clock.now();
        let saved = SavedResponse { request_hash, status: 202, location: Some(location.clone()), body: body.clone() };
        // The message is queued either way; failing to save only weakens a later replay.
        if let Err(err) = state.store.save_response(scope, &key, &saved, now, now - state.idempotency_window).await {
            tracing::warn!(error = %err, delivery_id, "could not save the idempotent response");
        }
    }
    Ok(accepted(Some(&location), body))
}

fn accepted(location: Option<&str>, body: String) -> Response {
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}
