//! HTTP handlers of the drone scheduler.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use contracts::drone::{Drone, DroneAssignment, DroneDeliveryRequest, DroneReroute, DroneUtilization};
use contracts::events::Flight;
use platform::Problem;
use platform::clock::SharedClock;
use platform::identity::IdentityPolicy;
use platform::identity_http::Caller;
use platform::json::JsonBody;

use crate::domain::{self, DroneRecord, FleetConfig};
use crate::flight::{Phase, location as location_of};
use crate::store::{Assigned, DroneStore, Rerouted};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn DroneStore>,
    pub fleet: Arc<FleetConfig>,
    pub clock: SharedClock,
    /// Whether the public route (utilization) requires the gateway's identity, which scopes it
    /// to the caller's account.
    pub identity: IdentityPolicy,
}

impl FromRef<AppState> for IdentityPolicy {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/dronedeliveries/utilization", get(utilization))
        .route("/api/dronedeliveries/{delivery_id}", put(assign).patch(reroute).delete(release))
        .route("/api/drones", get(list_drones))
        .route("/api/drones/{drone_id}", get(get_drone))
        .with_state(state)
}

/// `PUT /api/dronedeliveries/{deliveryId}`: the drone for this delivery (the same one every time).
async fn assign(
    State(state): State<AppState>,
    Path(delivery_id): Path<String>,
    JsonBody(body): JsonBody<DroneDeliveryRequest>,
) -> Result<Json<DroneAssignment>, Problem> {
    platform::telemetry::record_delivery_id(delivery_id.as_str());
    platform::telemetry::record_owner_id(&body.owner_id);
    let mut request = domain::validate(&delivery_id, body, &state.fleet)?;
    request.traceparent = platform::telemetry::current_traceparent();
    match state.store.assign(&request, state.clock.now(), &state.fleet).await? {
        Assigned::Drone(assignment) => {
            metrics::counter!("drone_assignments_total", "service" => crate::SERVICE).increment(1);
            Ok(Json(assignment))
        }
        Assigned::Released => Err(Problem::conflict(format!(
            "delivery {delivery_id} was cancelled and its drone released; it will not be assigned again"
        ))),
        Assigned::TooHeavy(max) => Err(Problem::invalid_field(
            "/packageDetail/weight",
            format!("no drone of the fleet carries more than {max} kg"),
        )),
        Assigned::NoneFree => {
            metrics::counter!("drone_assignments_deferred_total", "service" => crate::SERVICE).increment(1);
            Err(Problem::unavailable(
                format!("no free drone can carry {} kg right now; try again later", request.weight),
                state.fleet.retry_after_secs,
            ))
        }
    }
}

/// `PATCH /api/dronedeliveries/{deliveryId}`: the delivery was rescheduled to new places; the
/// drone's flight is re-planned from where it is. 200 with the flight it now flies (also when
/// nothing changed), 404 without an assignment, 409 when it is too late (with the reason), 503
/// while the flight's due events are still going out.
async fn reroute(
    State(state): State<AppState>,
    Path(delivery_id): Path<String>,
    JsonBody(body): JsonBody<DroneReroute>,
) -> Result<Json<Flight>, Problem> {
    platform::telemetry::record_delivery_id(delivery_id.as_str());
    let (pickup, dropoff) = domain::validate_reroute(&body)?;
    match state.store.reroute(&delivery_id, pickup, dropoff, state.clock.now()).await? {
        Rerouted::Flying { flight, changed } => {
            if changed {
                metrics::counter!("drone_reroutes_total", "service" => crate::SERVICE).increment(1);
            }
            Ok(Json(flight.contract()))
        }
        Rerouted::NotAssigned => Err(Problem::not_found(format!("no drone is assigned to delivery {delivery_id}"))),
        Rerouted::Refused(reason) => {
            Err(Problem::conflict(format!("delivery {delivery_id} cannot be re-routed: {reason}")))
        }
        Rerouted::Pending => Err(Problem::unavailable("the flight's latest events are still being published", 1)),
    }
}

/// `DELETE /api/dronedeliveries/{deliveryId}`: releases the drone; idempotent.
async fn release(State(state): State<AppState>, Path(delivery_id): Path<String>) -> Result<StatusCode, Problem> {
    platform::telemetry::record_delivery_id(delivery_id.as_str());
    state.store.release(&delivery_id, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/dronedeliveries/utilization?ownerId=&year=&month=`: with an identity, only the
/// caller's account's flights count.
async fn utilization(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DroneUtilization>, Problem> {
    let owner_id = platform::query::required(&params, "ownerId")?;
    let month = platform::query::month(&params)?;
    match state.store.utilization(owner_id, caller.account(), month).await? {
        Some((traveled_miles, assigned_hours)) => Ok(Json(DroneUtilization { traveled_miles, assigned_hours })),
        None => {
            Err(Problem::not_found(format!("no flights for owner {owner_id} in {}-{:02}", month.year, month.month)))
        }
    }
}

async fn list_drones(State(state): State<AppState>) -> Result<Json<Vec<Drone>>, Problem> {
    let now = state.clock.now();
    Ok(Json(state.store.drones().await?.iter().map(|d| view(d, now)).collect()))
}

async fn get_drone(State(state): State<AppState>, Path(drone_id): Path<String>) -> Result<Json<Drone>, Problem> {
    let now = state.clock.now();
    let drone =
        state.store.drone(&drone_id).await?.ok_or_else(|| Problem::not_found(format!("no drone {drone_id}")))?;
    Ok(Json(view(&drone, now)))
}

/// A drone as the API shows it at `now`: while busy, where its flight has it and what it is
/// doing; between flights, idle at its depot.
fn view(d: &DroneRecord, now: chrono::DateTime<chrono::Utc>) -> Drone {
    let busy = d.busy_until > now;
    let (phase, location) = match (&d.flight, busy) {
        // The store keeps busy_until and the flight's return together; should they ever part,
        // a drone that is not free yet is still on its way home.
        (Some(flight), true) => match flight.phase_at(now) {
            Phase::Done => (Phase::Returning, flight.position_at(now)),
            phase => (phase, flight.position_at(now)),
        },
        // Assigned before flights were recorded: where it is is unknown, its depot is the guess.
        (None, true) => (Phase::ToPickup, d.location),
        (_, false) => (Phase::Done, d.location),
    };
    Drone {
        id: d.id.clone(),
        depot_id: d.depot_id.clone(),
        location: location_of(location),
        max_payload: d.max_payload,
        speed_mph: d.speed_mph,
        status: phase.status().to_owned(),
        current_delivery_id: if busy { d.current_delivery_id.clone() } else { None },
        busy_until: busy.then_some(d.busy_until),
    }
}
