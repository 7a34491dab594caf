//! HTTP handlers of the delivery service.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use contracts::DeliveryStage;
use contracts::UserAccount;
use contracts::delivery::{
    Confirmation, DeliveriesSummary, Delivery, DeliveryClosure, DeliveryRefusal, DeliveryStatus, NotifyMeRequest,
    RescheduledDelivery,
};
use platform::Problem;
use platform::bus::stream::EventStream;
use platform::clock::SharedClock;
use platform::identity::IdentityPolicy;
use platform::identity_http::Caller;
use platform::json::JsonBody;

use crate::domain::{self, Action};
use crate::events;
use crate::notifications::{Channel, NotificationRecord, NotificationStatus};
use crate::store::{Changed, Closed, DeliveryStore, Upserted};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn DeliveryStore>,
    /// `delivery-events`: every change is published there before the call answers.
    pub events: Arc<dyn EventStream>,
    pub clock: SharedClock,
    /// Whether the public routes require the gateway's identity, which scopes them to the
    /// caller's account.
    pub identity: IdentityPolicy,
}

impl FromRef<AppState> for IdentityPolicy {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/deliveries/summary", get(summary))
        .route("/api/deliveries/public/{id}", get(fetch_public))
        .route("/api/deliveries/{id}", get(fetch).put(upsert).patch(reschedule).delete(cancel))
        .route("/api/deliveries/{id}/owner", get(owner))
        .route("/api/deliveries/{id}/status", get(status))
        .route("/api/deliveries/{id}/notifymerequests", post(notify_me))
        .route("/api/deliveries/{id}/notifications", get(notifications))
        .route("/api/deliveries/{id}/confirmations", post(confirm))
        .route("/api/deliveries/{id}/closure", put(close))
        .route("/api/deliveries/{id}/refusals", post(refused))
        .with_state(state)
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no delivery {id}"))
}

fn traced(id: &str) {
    platform::telemetry::record_delivery_id(id);
}

/// `PUT /api/deliveries/{id}`: 201 with the delivery when new, 204 when it existed. Either way
/// `DeliveryCreated` is published (again, for a retried PUT whose first publish may have failed;
/// the stream keeps one).
async fn upsert(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(delivery): JsonBody<Delivery>,
) -> Result<Response, Problem> {
    traced(&id);
    let delivery = domain::validate_delivery(&id, delivery)?;
    platform::telemetry::record_owner_id(&delivery.owner.user_id);
    let now = state.clock.now();
    match state.store.upsert(delivery, now).await? {
        Upserted::Created(delivery) => {
            metrics::counter!("deliveries_created_total", "service" => crate::SERVICE).increment(1);
            events::created(&*state.events, &delivery, 0, now).await?;
            let location = format!("/api/deliveries/{id}");
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(*delivery)).into_response())
        }
        Upserted::Updated => {
            // A reopened delivery is created again: its own DeliveryCreated, by its incarnation.
            let incarnation = events::incarnation(&state.store.tracking(&id).await?);
            if let Some(stored) = state.store.get(&id).await? {
                events::created(&*state.events, &stored, incarnation, now).await?;
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

async fn fetch(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Delivery>, Problem> {
    state.store.get(&id).await?.map(Json).ok_or_else(|| not_found(&id))
}

/// The delivery when the caller may see it: another account's delivery is as unknown as one
/// that does not exist (404), so ids cannot be probed.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Delivery, Problem> {
    match state.store.get(id).await? {
        Some(delivery) if caller.may_see(&delivery.owner.account_id) => Ok(delivery),
        _ => Err(not_found(id)),
    }
}

/// Public routes about one delivery first make sure the caller may see it; with the identity
/// policy off there is nothing to check (and no extra read).
async fn ensure_visible(state: &AppState, caller: &Caller, id: &str) -> Result<(), Problem> {
    if caller.account().is_some() {
        visible(state, caller, id).await?;
    }
    Ok(())
}

/// `GET /api/deliveries/public/{id}` (the gateway's `GET /api/deliveries/{id}`).
async fn fetch_public(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, Problem> {
    visible(&state, &caller, &id).await.map(Json)
}

async fn owner(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserAccount>, Problem> {
    visible(&state, &caller, &id).await.map(|d| Json(d.owner))
}

/// `GET /api/deliveries/{id}/status`: the stage, where the delivery is and when the drone is
/// expected at the pickup and the drop-off (from its flight, see [`domain::status`]), and the
/// reason of a closure or of a refused cancel.
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryStatus>, Problem> {
    ensure_visible(&state, &caller, &id).await?;
    let events = state.store.tracking(&id).await?;
    if events.is_empty() {
        return Err(not_found(&id));
    }
    let (flight, position) = tokio::join!(state.store.flight(&id), state.store.position(&id));
    let (flight, position) = (flight?, position?);
    domain::status(&events, flight.as_ref(), position.as_ref(), state.clock.now())
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// `PATCH /api/deliveries/{id}`: reschedule, then `DeliveryRescheduled`.
async fn reschedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<RescheduledDelivery>,
) -> Result<Json<Delivery>, Problem> {
    traced(&id);
    domain::validate_reschedule(&change)?;
    let now = state.clock.now();
    let delivery = changed(&id, state.store.reschedule(&id, &change, now).await?, DeliveryStage::Rescheduled)?;
    events::rescheduled(&*state.events, &*state.store, &id, now).await?;
    Ok(delivery)
}

/// `DELETE /api/deliveries/{id}`: cancel, then `DeliveryCancelled` (again for a retried cancel).
/// A cancel refused because the drone has the package is recorded on the delivery, so its
/// status says so.
async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Delivery>, Problem> {
    traced(&id);
    let now = state.clock.now();
    let outcome = state.store.cancel(&id, now).await?;
    if matches!(outcome, Changed::Refused(_)) {
        state.store.record_refusal(&id, Action::Cancel, None, now).await?;
    }
    let delivery = changed(&id, outcome, DeliveryStage::Cancelled)?;
    events::finished(&*state.events, &*state.store, &id, now).await?;
    Ok(delivery)
}

/// `POST /api/deliveries/{id}/refusals` (internal, for the workflow): a reschedule the drone
/// scheduler could not fly is recorded on the delivery, once, so its status says why. 204, or
/// 404 for an unknown delivery.
async fn refused(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(refusal): JsonBody<DeliveryRefusal>,
) -> Result<StatusCode, Problem> {
    traced(&id);
    let reason = domain::validate_refusal(&refusal)?;
    if state.store.get(&id).await?.is_none() {
        return Err(not_found(&id));
    }
    state.store.record_refusal(&id, Action::Reschedule, Some(&reason), state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/deliveries/{id}/confirmations`: the package was handed over; `DeliveryCompleted`
/// (with the tracking and the confirmation) hands the delivery to history and has the notify-me
/// notifications sent ([`crate::notifications`]).
async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(confirmation): JsonBody<Confirmation>,
) -> Result<Json<Delivery>, Problem> {
    traced(&id);
    domain::validate_confirmation(&confirmation)?;
    let now = state.clock.now();
    let delivery = changed(&id, state.store.confirm(&id, &confirmation, now).await?, DeliveryStage::Completed)?;
    events::finished(&*state.events, &*state.store, &id, now).await?;
    Ok(delivery)
}

/// `PUT /api/deliveries/{id}/closure` (internal, for the workflow): the delivery will never fly.
/// 201 with the delivery when it was unknown (created in the closing stage), 200 when it is now
/// (or already was) in that stage, 409 when the stage rules refuse.
async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(closure): JsonBody<DeliveryClosure>,
) -> Result<Response, Problem> {
    traced(&id);
    let DeliveryClosure { delivery, stage, reason } = domain::validate_closure(&id, closure)?;
    let stage_changed = || {
        metrics::counter!("delivery_stage_changes_total", "service" => crate::SERVICE, "stage" => stage.as_str())
            .increment(1);
    };
    let now = state.clock.now();
    let response = match state.store.close(delivery, stage, &reason, now).await? {
        Closed::Created(delivery) => {
            stage_changed();
            let location = format!("/api/deliveries/{id}");
            (StatusCode::CREATED, [(header::LOCATION, location)], Json(*delivery)).into_response()
        }
        Closed::Done(delivery) => {
            stage_changed();
            Json(*delivery).into_response()
        }
        Closed::Refused(refusal) => {
            // A closing cancel is refused, and shown, like a DELETE.
            let action = if stage == DeliveryStage::Failed { Action::Fail } else { Action::Cancel };
            state.store.record_refusal(&id, action, None, now).await?;
            return Err(Problem::conflict(refusal));
        }
    };
    events::finished(&*state.events, &*state.store, &id, now).await?;
    Ok(response)
}

fn changed(id: &str, outcome: Changed, stage: DeliveryStage) -> Result<Json<Delivery>, Problem> {
    match outcome {
        Changed::Done(delivery) => {
            metrics::counter!("delivery_stage_changes_total", "service" => crate::SERVICE, "stage" => stage.as_str())
                .increment(1);
            Ok(Json(*delivery))
        }
        Changed::NotFound => Err(not_found(id)),
        Changed::Refused(reason) => Err(Problem::conflict(reason)),
    }
}

/// `POST /api/deliveries/{id}/notifymerequests`: 204 once stored.
async fn notify_me(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<NotifyMeRequest>,
) -> Result<StatusCode, Problem> {
    ensure_visible(&state, &caller, &id).await?;
    let request = domain::validate_notify(request)?;
    if state.store.add_notify_request(&id, &request, state.clock.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

/// One notification as `GET /api/deliveries/{id}/notifications` lists it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationView {
    id: String,
    delivery_id: String,
    event_type: &'static str,
    reason: Option<String>,
    channel: Channel,
    recipient: String,
    text: String,
    status: NotificationStatus,
    attempts: u32,
    last_error: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<NotificationRecord> for NotificationView {
    fn from(record: NotificationRecord) -> Self {
        let n = record.notification;
        Self {
            event_type: n.event.event_type(),
            reason: n.event.reason().map(str::to_owned),
            id: n.id,
            delivery_id: n.delivery_id,
            channel: n.channel,
            recipient: n.recipient,
            text: n.text,
            status: record.status,
            attempts: record.attempts,
            last_error: record.last_error,
            created_at: record.created_at,
            sent_at: record.sent_at,
        }
    }
}

/// `GET /api/deliveries/{id}/notifications` (internal): every notification of the delivery,
/// oldest first, whatever its status; email and SMS ones are the record of what would have been
/// sent (no mail or SMS server exists here). 404 when the delivery is unknown.
async fn notifications(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<NotificationView>>, Problem> {
    let records = state.store.notifications(&id).await?;
    if records.is_empty() && state.store.get(&id).await?.is_none() {
        return Err(not_found(&id));
    }
    Ok(Json(records.into_iter().map(NotificationView::from).collect()))
}

/// `GET /api/deliveries/summary?ownerId=&year=&month=`: how many deliveries of the owner were
/// created that month. With an identity only the caller's account's deliveries count, so an
/// owner id another account also uses counts nothing of theirs; with the policy off, every
/// account's do.
async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DeliveriesSummary>, Problem> {
    let owner_id = platform::query::required(&params, "ownerId")?;
    let month = platform::query::month(&params)?;
    Ok(Json(DeliveriesSummary { count: state.store.count(caller.account(), owner_id, month).await? }))
}
