//! HTTP handlers of the delivery service.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use contracts::DeliveryStage;
use contracts::UserAccount;
use contracts::delivery::{
    Confirmation, DeliveriesSummary, Delivery, DeliveryClosure, DeliveryStatus, NotifyMeRequest, RescheduledDelivery,
};
use platform::Problem;
use platform::clock::SharedClock;
use platform::json::JsonBody;

use crate::domain;
use crate::store::{Changed, Closed, DeliveryStore, Upserted};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn DeliveryStore>,
    pub clock: SharedClock,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/deliveries/summary", get(summary))
        .route("/api/deliveries/public/{id}", get(fetch))
        .route("/api/deliveries/{id}", get(fetch).put(upsert).patch(reschedule).delete(cancel))
        .route("/api/deliveries/{id}/owner", get(owner))
        .route("/api/deliveries/{id}/status", get(status))
        .route("/api/deliveries/{id}/notifymerequests", post(notify_me))
        .route("/api/deliveries/{id}/confirmations", post(confirm))
        .route("/api/deliveries/{id}/closure", put(close))
        .with_state(state)
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no delivery {id}"))
}

fn traced(id: &str) {
    tracing::Span::current().record("delivery_id", id);
}

/// `PUT /api/deliveries/{id}`: 201 with the delivery when new, 204 when it existed.
async fn upsert(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(delivery): JsonBody<Delivery>,
) -> Result<Response, Problem> {
    traced(&id);
    let delivery = domain::validate_delivery(&id, delivery)?;
    match state.store.upsert(delivery, state.clock.now()).await? {
        Upserted::Created(delivery) => {
            metrics::counter!("deliveries_created_total", "service" => crate::SERVICE).increment(1);
            let location = format!("/api/deliveries/{id}");
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(*delivery)).into_response())
        }
        Upserted::Updated => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn fetch(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Delivery>, Problem> {
    state.store.get(&id).await?.map(Json).ok_or_else(|| not_found(&id))
}

async fn owner(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<UserAccount>, Problem> {
    state.store.get(&id).await?.map(|d| Json(d.owner)).ok_or_else(|| not_found(&id))
}

/// `GET /api/deliveries/{id}/status`: the stage, last known location and (for a closed
/// delivery) the reason, from the tracking events. ETAs stay `null` until the flight simulation
/// reports drone positions.
async fn status(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<DeliveryStatus>, Problem> {
    let events = state.store.tracking(&id).await?;
    let Some(latest) = events.last() else { return Err(not_found(&id)) };
    let last_known_location = events.iter().rev().find_map(|e| e.location);
    let reason = events.iter().rev().find_map(|e| e.reason.clone());
    Ok(Json(DeliveryStatus { stage: latest.stage, last_known_location, pickup_eta: None, delivery_eta: None, reason }))
}

/// `PATCH /api/deliveries/{id}`: reschedule.
async fn reschedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<RescheduledDelivery>,
) -> Result<Json<Delivery>, Problem> {
    traced(&id);
    domain::validate_reschedule(&change)?;
    changed(&id, state.store.reschedule(&id, &change, state.clock.now()).await?, DeliveryStage::Rescheduled)
}

/// `DELETE /api/deliveries/{id}`: cancel.
async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Delivery>, Problem> {
    traced(&id);
    changed(&id, state.store.cancel(&id, state.clock.now()).await?, DeliveryStage::Cancelled)
}

/// `POST /api/deliveries/{id}/confirmations`: the package was handed over. (Sending the
/// notify-me notifications and handing the delivery to history arrive with a later issue.)
async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(confirmation): JsonBody<Confirmation>,
) -> Result<Json<Delivery>, Problem> {
    traced(&id);
    domain::validate_confirmation(&confirmation)?;
    changed(&id, state.store.confirm(&id, &confirmation, state.clock.now()).await?, DeliveryStage::Completed)
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
    match state.store.close(delivery, stage, &reason, state.clock.now()).await? {
        Closed::Created(delivery) => {
            stage_changed();
            let location = format!("/api/deliveries/{id}");
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(*delivery)).into_response())
        }
        Closed::Done(delivery) => {
            stage_changed();
            Ok(Json(*delivery).into_response())
        }
        Closed::Refused(reason) => Err(Problem::conflict(reason)),
    }
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
    Path(id): Path<String>,
    JsonBody(request): JsonBody<NotifyMeRequest>,
) -> Result<StatusCode, Problem> {
    let request = domain::validate_notify(request)?;
    if state.store.add_notify_request(&id, &request, state.clock.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

/// `GET /api/deliveries/summary?ownerId=&year=&month=`.
async fn summary(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DeliveriesSummary>, Problem> {
    let owner_id = platform::query::required(&params, "ownerId")?;
    let month = platform::query::month(&params)?;
    Ok(Json(DeliveriesSummary { count: state.store.count(owner_id, month).await? }))
}
